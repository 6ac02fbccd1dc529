"""Log-mel filterbank features framed like the wav2vec 2.0 CNN (the front-end pretraining target).

The CNN's output frame ``t`` reads samples ``[t * hop, t * hop + window)`` with ``window`` its
receptive field and ``hop`` its stride (400 and 320 samples, 25 ms and 20 ms, for XLSR-53: the
defaults, from :mod:`xtrans.frames`).
:func:`log_mel` frames the waveform the same way (no centring, no padding), so frame ``t`` of the
features and frame ``t`` of the CNN see the same samples:

    X_t(k)   = sum_n w(n) x(t * hop + n) exp(-2 pi i k n / N)       (Hann window w, N = window)
    M_t(m)   = log(sum_k |X_t(k)|^2 F(k, m) + floor)                 (F: triangular mel filters)

The mel scale is HTK's, ``mel(f) = 2595 log10(1 + f / 700)``.
"""

from __future__ import annotations

import math

import torch

from xtrans.frames import FRAME_STRIDE, RECEPTIVE_FIELD, SAMPLE_RATE


def hz_to_mel(f: float) -> float:
    """HTK mel scale."""
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m: float) -> float:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 20.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular mel filters over the ``n_fft // 2 + 1`` DFT bins: (n_fft // 2 + 1, n_mels), float32.

    Filter ``m`` rises linearly from centre ``m - 1`` to 1 at centre ``m`` and falls to 0 at centre
    ``m + 1``; the ``n_mels + 2`` centres are equally spaced in mel from ``f_min`` to ``f_max``
    (default: Nyquist).

    Raises:
        ValueError: for ``n_mels < 1``, ``n_fft < 2`` or a frequency range outside ``[0, Nyquist]``.
    """
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"n_mels and n_fft: expected >= 1 and >= 2, found {n_mels} and {n_fft}")
    if not 0 <= f_min < f_max <= nyquist:
        raise ValueError(f"f_min, f_max: expected 0 <= f_min < f_max <= {nyquist} Hz, found {f_min}, {f_max}")
    lo, hi = hz_to_mel(f_min), hz_to_mel(f_max)
    centres = torch.tensor([mel_to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)],
                           dtype=torch.float64)
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # Hz of each DFT bin
    left, centre, right = centres[:-2], centres[1:-1], centres[2:]                  # (n_mels,)
    rising = (bins[:, None] - left) / (centre - left)
    falling = (right - bins[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def log_mel(waveform: torch.Tensor, *, n_mels: int = 80, window: int = RECEPTIVE_FIELD,
            hop: int = FRAME_STRIDE, sample_rate: int = SAMPLE_RATE, f_max: float | None = None, floor: float = 1e-6) -> torch.Tensor:
    """Log-mel energies of every complete ``window`` of samples, ``hop`` apart.

    Args:
        waveform: (B, S) float samples.
        n_mels: mel filters.
        window: samples per frame (the DFT size; Hann window).
        hop: samples between frames.
        sample_rate: Hz.
        f_max: top of the highest filter (default: Nyquist), e.g. 4000 for audio upsampled from 8 kHz.
        floor: added to the filter energies before the log.

    Returns:
        (B, T, n_mels) with ``T = (S - window) // hop + 1`` (0 when ``S < window``).

    Raises:
        ValueError: for a waveform that is not 2-D.
    """
    if waveform.dim() != 2:
        raise ValueError(f"waveform: expected (B, S), found shape {tuple(waveform.shape)}")
    if waveform.shape[1] < window:
        return waveform.new_zeros(waveform.shape[0], 0, n_mels)
    spec = torch.stft(waveform, n_fft=window, hop_length=hop, window=torch.hann_window(window, device=waveform.device),
                      center=False, return_complex=True)                       # (B, N/2+1, T)
    power = spec.abs().square().transpose(1, 2)                                # (B, T, N/2+1)
    fb = mel_filterbank(n_mels, window, sample_rate, f_max=f_max).to(waveform.device)
    return torch.log(power @ fb + floor)                                       # (B, T, n_mels)
