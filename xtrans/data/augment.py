"""Waveform augmentation for training: speed perturbation and time masking.

Both are pure functions of their inputs and a ``numpy.random.Generator``, so an augmented
utterance is reproducible from the seed that made the generator (see
:class:`xtrans.data.dataset.AsrDataset`, which seeds one per ``(seed, epoch, index)``).
"""

from __future__ import annotations

import numpy as np
import torch

from xtrans.data.resample import resample


def speed_perturb(waveform: torch.Tensor, factor: float, sample_rate: int = 16000) -> torch.Tensor:
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
        raise ValueError(f"factor must be positive, got {factor}")
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
        raise ValueError(f"num_masks must be >= 0, got {num_masks}")
    if max_width < 0:
        raise ValueError(f"max_width must be >= 0 samples, got {max_width}")
    out = waveform.clone()
    length = out.shape[-1]
    for _ in range(num_masks):
        width = int(generator.integers(0, min(max_width, length) + 1))
        start = int(generator.integers(0, length - width + 1))
        out[..., start:start + width] = 0.0
    return out
