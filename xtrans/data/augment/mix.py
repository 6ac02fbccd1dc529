"""Adding noise to speech at a signal-to-noise ratio.

The SNR of a mix is the power of the speech over its *active* (non-silent) samples against the
power of the noise segment that was added::

    SNR = 10 log10( P_active(speech) / P(noise) )      (dB)
    P_active(x) = mean of x[n]^2 over the 20 ms frames whose energy is within
                  ACTIVE_RANGE_DB of the loudest frame

Measuring speech over its active frames only (as ITU-T P.56's active speech level does, more
simply) keeps the SNR of a short command with long pauses comparable to that of dense speech:
a pause would otherwise lower the speech power and make the same noise count as louder.

Every function takes and returns 1-D float numpy arrays (``S`` samples); the pipeline
(:mod:`xtrans.data.augment.pipeline`) converts at its boundary.
"""

from __future__ import annotations

import math

import numpy as np

from xtrans.frames import SAMPLE_RATE

ACTIVE_RANGE_DB = 40.0
"""Frames quieter than the loudest by more than this are silence for :func:`active_power`."""

FRAME_MS = 20.0


def active_power(x: np.ndarray, sample_rate: int = SAMPLE_RATE, range_db: float = ACTIVE_RANGE_DB) -> float:
    """Mean power ``x[n]^2`` over the active frames of ``x`` (see the module docstring).

    Args:
        x: ``(S,)`` float samples.
        sample_rate: Hz; frames are 20 ms.
        range_db: frames more than this below the loudest frame's energy are left out.

    Returns:
        the power (0.0 for an all-zero or empty signal).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0.0
    frame = max(1, round(sample_rate * FRAME_MS / 1000.0))
    num = -(-x.size // frame)
    padded = np.zeros(num * frame)
    padded[:x.size] = x
    counts = np.full(num, frame, dtype=np.float64)
    counts[-1] = x.size - (num - 1) * frame
    energy = (padded.reshape(num, frame) ** 2).sum(axis=1)
    peak = (energy / counts).max()
    if peak <= 0.0:
        return 0.0
    active = energy / counts >= peak * 10.0 ** (-range_db / 10.0)
    return float(energy[active].sum() / counts[active].sum())


def fit_length(noise: np.ndarray, num_samples: int, generator: np.random.Generator) -> np.ndarray:
    """A segment of ``num_samples`` from ``noise``: a random crop of a longer noise, a shorter one
    repeated from a random offset (so a short recording still covers the whole utterance).

    Raises:
        ValueError: for an empty noise.
    """
    noise = np.asarray(noise)
    if noise.size == 0:
        raise ValueError("noise: expected at least one sample, found an empty signal")
    if noise.size >= num_samples:
        start = int(generator.integers(0, noise.size - num_samples + 1))
        return noise[start:start + num_samples]
    start = int(generator.integers(0, noise.size))
    reps = -(-(num_samples + start) // noise.size)
    return np.tile(noise, reps)[start:start + num_samples]


def scale_to_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``noise`` scaled so that ``speech`` stands ``snr_db`` above it (see the module docstring).

    Args:
        speech: ``(S,)`` samples.
        noise: ``(S,)`` samples of the same length.
        snr_db: the target SNR in dB (finite).

    Returns:
        the scaled noise (all zeros when the speech or the noise is silent).

    Raises:
        ValueError: for different lengths or a non-finite SNR.
    """
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db: expected a finite number of dB, found {snr_db}")
    if np.shape(speech) != np.shape(noise):
        raise ValueError(f"noise: expected the speech's shape {np.shape(speech)}, found {np.shape(noise)}")
    p_speech = active_power(speech, sample_rate)
    p_noise = float(np.mean(np.asarray(noise, dtype=np.float64) ** 2)) if np.size(noise) else 0.0
    if p_speech <= 0.0 or p_noise <= 0.0:
        return np.zeros_like(noise)
    gain = math.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (np.asarray(noise) * gain).astype(np.asarray(speech).dtype, copy=False)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``speech + noise'`` with ``noise'`` scaled to ``snr_db`` (:func:`scale_to_snr`).

    The mix is not normalised: a caller that needs it within full scale uses :func:`limit_peak`
    (scaling the mix scales speech and noise alike, so the SNR stays).
    """
    return np.asarray(speech) + scale_to_snr(speech, noise, snr_db, sample_rate)


def measured_snr(speech: np.ndarray, noise: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """The SNR (dB) of ``speech`` over ``noise`` as :func:`scale_to_snr` defines it."""
    p_noise = float(np.mean(np.asarray(noise, dtype=np.float64) ** 2))
    return 10.0 * math.log10(active_power(speech, sample_rate) / p_noise)


def limit_peak(x: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """``x`` scaled down so that its largest magnitude is at most ``peak`` (unchanged below it)."""
    top = float(np.max(np.abs(x))) if np.size(x) else 0.0
    return x * (peak / top) if top > peak else x
