"""The first augmentations: speed perturbation, time masking and gain.

All are pure functions of their inputs and a ``numpy.random.Generator``, so an augmented
utterance is reproducible from the seed that made the generator (see
:mod:`xtrans.data.augment.pipeline`, which seeds one per ``(seed, epoch, index)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xtrans.data.resample import resample
from xtrans.frames import SAMPLE_RATE


def speed_perturb(waveform: torch.Tensor, factor: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Play the waveform ``factor`` times faster (pitch and tempo together, like ``sox speed``).

    Implemented as resampling from ``round(factor * sample_rate)`` Hz to ``sample_rate`` Hz:
    the samples are reinterpreted at the faster rate and brought back to the model's rate,
    so the output has ``ceil(S / factor)`` samples. For 16 kHz and factors 0.9/1.1 the ratios
    are 9/10 and 11/10, cheap polyphase filters.

    Args:
        waveform: ``(S,)`` or ``(B, S)`` float samples at ``sample_rate``.
        factor: speed factor, e.g. 0.9, 1.0 or 1.1 (> 0).
        sample_rate: rate of ``waveform`` in Hz.

    Returns:
        the perturbed waveform, same leading shape, ``ceil(S / factor)`` samples.

    Raises:
        ValueError: when ``factor`` is not positive.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, found {factor}")
    if factor == 1.0:
        return waveform
    return resample(waveform, round(factor * sample_rate), sample_rate)


def time_mask(
    waveform: torch.Tensor,
    generator: np.random.Generator,
    *,
    num_masks: int = 2,
    max_width: int = 800,
) -> torch.Tensor:
    """Zero ``num_masks`` random spans of up to ``max_width`` samples each (SpecAugment in time).

    Args:
        waveform: ``(S,)`` float samples; not modified.
        generator: source of the span widths and starts.
        num_masks: spans to zero (they may overlap).
        max_width: longest span in samples (800 = 50 ms at 16 kHz); widths are uniform in
            ``[0, min(max_width, S)]``.

    Returns:
        a masked copy of ``waveform``.

    Raises:
        ValueError: for negative ``num_masks`` or ``max_width``.
    """
    if num_masks < 0:
        raise ValueError(f"num_masks must be >= 0, found {num_masks}")
    if max_width < 0:
        raise ValueError(f"max_width: expected >= 0 samples, found {max_width}")
    out = waveform.clone()
    length = out.shape[-1]
    for _ in range(num_masks):
        width = int(generator.integers(0, min(max_width, length) + 1))
        start = int(generator.integers(0, length - width + 1))
        out[..., start:start + width] = 0.0
    return out


def apply_gain(waveform: torch.Tensor, gain_db: float) -> torch.Tensor:
    """Scale the waveform by ``gain_db`` decibels, saturating at full scale like a real input.

    ``y = clamp(x * 10 ** (gain_db / 20), -1, 1)``: a gain above 0 dB clips the samples it
    pushes past full scale (+-1.0), as a microphone preamplifier or an ADC would, instead of
    producing values no recording can hold. Used for gain perturbation in training
    (:class:`xtrans.data.dataset.AsrDataset`, ``data.gain_db``) and for the level-robustness
    table (``python -m xtrans.bin.level_robustness``), so both see the same scaled copies.

    Args:
        waveform: float samples in ``[-1, 1]``, any shape; not modified.
        gain_db: gain in dB (``-20`` = 10x quieter in amplitude, ``+6`` = about 2x louder).

    Returns:
        the scaled (and, above full scale, clipped) copy, same shape and dtype.

    Raises:
        ValueError: when ``gain_db`` is not a finite number.
    """
    if not math.isfinite(gain_db):
        raise ValueError(f"gain_db: expected a finite number of dB, found {gain_db}")
    return (waveform * 10.0 ** (gain_db / 20.0)).clamp(-1.0, 1.0)
