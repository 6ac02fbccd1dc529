"""Feature masking of wav2vec 2.0 fine-tuning: time spans replaced by a learned embedding, channels zeroed.

Baevski et al. (2020), "wav2vec 2.0", fine-tuning (their modified SpecAugment): during training,
spans of the projected CNN features (B, T, D) are replaced by a learned vector ``mask_emb`` (D,)
before the positional convolution, and spans of feature channels are zeroed for every frame of
an utterance. Options and meanings are
fairseq's (``compute_mask_indices`` with ``mask_selection=static``), the implementation is ours:

``mask_prob`` ``p``, ``mask_length`` ``L``, per utterance of ``n`` valid frames (``u`` uniform in [0, 1)):

    spans  = max(min_masks, floor(p n / L + u))        (random rounding: E[spans] = p n / L)
    starts = ``spans`` distinct frames drawn uniformly from 0 .. n - L; each masks L frames

So ``p`` is (start frames x ``L``) / frames, not the masked fraction: spans overlap, and about
``1 - (1 - p/L)^L`` ~ ``1 - exp(-p)`` of the frames end up masked (0.48 at fairseq's
fine-tuning ``p = 0.65``). Channels are the same draw over the ``D`` channels of each utterance
(``mask_channel_prob``, ``mask_channel_length``, no minimum).

Where this differs from fairseq: spans never cross an utterance's end, so padding is never
masked and an utterance shorter than ``L`` frames gets no span (fairseq shortens the span
instead; Hugging Face does as here); the spans drawn are capped at the number of possible
starts; no ``require_same_masks`` (fairseq can trim every row of a batch to the smallest masked
count; here utterances are drawn independently).

Masks here are boolean, **True = masked** (replaced or zeroed), the polarity of fairseq's and
Hugging Face's feature masks; they are not attention masks (whose True = may attend). A time
mask of 2 spans of ``L = 3`` in an utterance of 9 valid frames padded to 11::

    frame   0 1 2 3 4 5 6 7 8 | 9 10
    mask    . X X X . X X X . | .  .      (X = replaced by mask_emb; padding never)

Random draws come from torch's default generator of the features' device (or ``generator``),
like layer drop's, so a trainer that saves and restores the RNG state resumes exactly.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["MIN_TIME_MASKS", "check_span_options", "draw_span_starts", "mask_features", "span_mask"]

MIN_TIME_MASKS = 2
"""Time spans drawn at least per utterance (fairseq's ``apply_mask`` passes ``min_masks=2``;
Hugging Face's ``mask_time_min_masks`` defaults to 2); channel spans have no minimum."""


def check_span_options(prob_name: str, prob: float, length_name: str, length: int) -> None:
    """Raises ValueError naming the option when ``prob`` is outside [0, 1] or ``length`` < 1."""
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"{prob_name}: expected a probability in [0, 1], found {prob!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{length_name}: expected an int >= 1 (frames or channels per span), found {length!r}")


def draw_span_starts(lengths: torch.Tensor, size: int, mask_prob: float, mask_length: int, min_masks: int = 0,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The first positions of the spans of each row: (B,) valid lengths -> (B, size) bool, True = a span starts.

    Row ``b`` gets ``max(min_masks, floor(mask_prob * lengths[b] / mask_length + u_b))`` starts
    (``u_b`` uniform in [0, 1)), at most the ``lengths[b] - mask_length + 1`` positions where a
    span fits, drawn uniformly without replacement among them. Vectorised on ``lengths``' device
    (no host synchronisation): random keys, invalid positions pushed last, the ``k`` smallest kept.

    Args:
        lengths: (B,) int, valid positions per row (frames, or channels), each <= ``size``.
        size: ``T`` (or ``D``), the padded row length.
        mask_prob, mask_length: see the module docstring.
        min_masks: spans per row at least (where they fit).
        generator: the random source; ``None`` = torch's default one of ``lengths``' device.
    """
    check_span_options("mask_prob", mask_prob, "mask_length", mask_length)
    device = lengths.device
    fits = (lengths - mask_length + 1).clamp(min=0)  # (B,) positions where a whole span lies inside
    rounding = torch.rand(lengths.shape, generator=generator, device=device)
    num_spans = torch.floor(mask_prob * lengths.float() / mask_length + rounding).long()
    num_spans = torch.minimum(num_spans.clamp(min=min_masks), fits)  # (B,)
    keys = torch.rand((lengths.shape[0], size), generator=generator, device=device)  # (B, size) in [0, 1)
    position = torch.arange(size, device=device)
    keys = keys.masked_fill(position[None, :] >= fits[:, None], 2.0)  # spans that would not fit: never drawn
    order = keys.argsort(dim=1)  # (B, size): positions by key, those that fit first, in random order
    chosen = position[None, :] < num_spans[:, None]  # (B, size): the first num_spans of that order
    return torch.zeros_like(chosen).scatter_(1, order, chosen)


def span_mask(lengths: torch.Tensor, size: int, mask_prob: float, mask_length: int, min_masks: int = 0,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random spans inside each row's valid positions: (B,) lengths -> (B, size) bool, True = masked.

    Spans of ``mask_length`` from :func:`draw_span_starts`; position ``t`` is masked when a span
    starts in ``t - mask_length + 1 .. t``. Nothing at or past ``lengths[b]`` is ever masked.
    """
    starts = draw_span_starts(lengths, size, mask_prob, mask_length, min_masks, generator)
    count = nn.functional.pad(starts.long().cumsum(dim=1), (mask_length, 0))  # (B, L + size): starts up to t
    return count[:, mask_length:] > count[:, :-mask_length]  # a start in (t - L, t]


def mask_features(x: torch.Tensor, lengths: torch.Tensor, mask_emb: Optional[torch.Tensor], *, mask_prob: float,
                  mask_length: int, mask_channel_prob: float, mask_channel_length: int,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """wav2vec 2.0's training-time masking of projected features (B, T, D) -> (B, T, D).

    First time spans inside each utterance's ``lengths`` (B,) valid frames (at least
    :data:`MIN_TIME_MASKS` where they fit) become ``mask_emb`` (D,); then channel spans, drawn
    per utterance, are zeroed for all its frames (the mask embedding's channels included, as in
    fairseq and Hugging Face). A probability of 0 draws nothing and leaves ``x`` as is.

    Raises:
        ValueError: an option out of range (named), or ``mask_prob > 0`` without ``mask_emb``.
    """
    check_span_options("mask_channel_prob", mask_channel_prob, "mask_channel_length", mask_channel_length)
    B, T, D = x.shape
    if mask_prob > 0:
        if mask_emb is None:
            raise ValueError("mask_emb: expected a (D,) mask embedding with mask_prob > 0, found None")
        time = span_mask(lengths, T, mask_prob, mask_length, MIN_TIME_MASKS, generator)  # (B, T)
        x = torch.where(time[:, :, None], mask_emb.to(x.dtype), x)
    else:
        check_span_options("mask_prob", mask_prob, "mask_length", mask_length)
    if mask_channel_prob > 0:
        channels = span_mask(torch.full((B,), D, device=x.device), D, mask_channel_prob, mask_channel_length,
                             0, generator)  # (B, D)
        x = x.masked_fill(channels[:, None, :], 0.0)
    return x
