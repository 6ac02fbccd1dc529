"""Streamable per-channel normalisations of the first CNN layer (``cumulative_norm`` and
``batch_norm`` extractors).

wav2vec2-base normalises each channel of the first convolution over the whole utterance
(``GroupNorm(512, 512)``, fairseq's ``extractor_mode="default"``; Baevski et al., "wav2vec 2.0",
NeurIPS 2020): it keeps the energy contour over time, but it reads the future. XLSR-53 (Conneau
et al., "Unsupervised Cross-lingual Representation Learning for Speech Recognition", 2020)
normalises each 25 ms frame on its own (per-frame LayerNorm after every conv,
``extractor_mode="layer_norm"``): streamable, but it discards loudness, so noise looks like
speech. In this project's first from-scratch trials on CPU the contour-keeping normalisation
learned and the per-frame one did not; ``bench/frontend_study.py`` repeats the comparison on the
demo corpus (``--extractors layer_norm,group_norm,cumulative_norm,batch_norm``).

:class:`CumulativeChannelNorm` is the causal version of the first: position ``n`` of channel
``c`` (conv-1 output, 5 samples apart) is normalised with the mean and variance of positions
``0..n`` of that channel::

    m_n = (1/(n+1)) sum_{k<=n} h_k,     v_n = (1/(n+1)) sum_{k<=n} h_k^2 - m_n^2
    y_n = gamma * (h_n - m_n) / sqrt(v_n + eps) + beta

The sums are running sums (``cumsum`` in float64), so nothing after ``n`` is read: padding a
batch changes no valid position, and streaming reproduces the full pass exactly by carrying
three quantities per stream: the count and, per channel, the sum and the sum of squares
(:class:`CumulativeNormState`, :meth:`CumulativeChannelNorm.forward_chunk`).

:class:`MaskedBatchNorm` takes the other way out: batch statistics in training, fixed running
statistics at inference, so it reads no other position and carries no state when streaming.
Measured from scratch on the mini_synth corpus (1 CPU thread, same batches): it trains at 1.7x
the updates per second of ``cumulative_norm`` (54 against 32 audio-seconds per second), whose
float64 running sums over every conv-1 position dominate the CNN's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from xtrans.masks import key_padding_mask

CUMULATIVE_EPS = 1e-12
"""Variance floor of the running (cumulative) normalisations: far below the signal of the quietest
real recording (16-bit quantisation noise is about -101 dBFS, a variance of 8e-11), so that they
divide out the input level at any gain instead of flattening quiet inputs towards zero."""


@dataclass(frozen=True)
class CumulativeNormState:
    """What :class:`CumulativeChannelNorm` carries from chunk to chunk (all float64).

    Attributes:
        count: (B, 1, 1) positions seen so far.
        total: (B, C, 1) per-channel sum of those positions.
        total_sq: (B, C, 1) per-channel sum of their squares.
    """

    count: torch.Tensor
    total: torch.Tensor
    total_sq: torch.Tensor


class CumulativeChannelNorm(nn.Module):
    """Causal per-channel normalisation over time with running statistics, (B, C, N) -> (B, C, N).

    The statistics are treated as constants by autograd (no gradient through the running
    sums, as in streaming normalisers such as PCEN's automatic gain control): with gradients
    through the ``cumsum`` chain the layer cost ~7x more than without (0.88 vs 0.13 CPU-s for
    a 25 x 64 x 4000 batch, forward + backward), more than the rest of the CNN, and each
    running statistic depends on a position only with weight ``1/(n+1)`` anyway.

    Args:
        num_channels: ``C``.
        eps: added to the variance.
        affine: learn a per-channel scale ``gamma`` (init 1) and shift ``beta`` (init 0).
    """

    def __init__(self, num_channels: int, *, eps: float = CUMULATIVE_EPS, affine: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def init_state(self, batch_size: int, device=None) -> CumulativeNormState:
        """The state before the first position: zero count and sums."""
        zeros = lambda c: torch.zeros(batch_size, c, 1, dtype=torch.float64, device=device)  # noqa: E731
        return CumulativeNormState(count=zeros(1), total=zeros(self.num_channels),
                                   total_sq=zeros(self.num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises positions ``0..N-1`` of each utterance: (B, C, N) -> (B, C, N).

        Causal, so positions past an utterance's end (padding) never affect earlier ones.
        """
        y, _ = self.forward_chunk(x, self.init_state(x.shape[0], x.device))
        return y

    def forward_chunk(self, x: torch.Tensor, state: CumulativeNormState
                      ) -> Tuple[torch.Tensor, CumulativeNormState]:
        """Normalises the next ``N`` positions (B, C, N) given the statistics of all earlier ones.

        Feeding an utterance in pieces gives what one :meth:`forward` call over it gives (up to
        float64 summation order).

        Returns:
            the normalised positions (B, C, N) in ``x.dtype``, and the state after them.
        """
        if x.dim() != 3 or x.shape[1] != self.num_channels:
            raise ValueError(f"x: expected (B, {self.num_channels}, N), found shape {tuple(x.shape)}")
        n = x.shape[2]
        with torch.no_grad():  # statistics are constants for the gradient (see the class docstring)
            x64 = x.detach().double()
            count = state.count + torch.arange(1, n + 1, device=x.device, dtype=torch.float64)  # (B, 1, N)
            sums = torch.stack([x64, x64 * x64]).cumsum(3)  # (2, B, C, N): running sum, sum of squares
            total = state.total + sums[0]
            total_sq = state.total_sq + sums[1]
            mean64 = total / count
            # float64 sums, so that chunks reproduce the full pass; the normalisation itself
            # runs in the input's dtype
            mean = mean64.to(x.dtype)
            inv_std = torch.rsqrt((total_sq / count - mean64 * mean64).clamp(min=0.0) + self.eps).to(x.dtype)
        y = (x - mean) * inv_std
        if self.weight is not None:
            y = y * self.weight[None, :, None] + self.bias[None, :, None]
        if n == 0:
            return y, state
        return y, CumulativeNormState(count=count[:, :, -1:], total=total[:, :, -1:],
                                      total_sq=total_sq[:, :, -1:])

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


def cumulative_norm_state_size(num_channels: int) -> int:
    """float64 numbers carried per stream: 1 count + ``C`` sums + ``C`` sums of squares."""
    return 1 + 2 * num_channels


class MaskedBatchNorm(nn.BatchNorm1d):
    """Per-channel normalisation with fixed statistics at inference (``batch_norm`` extractor).

    In training, each channel of the first convolution is normalised with the mean and variance
    over the batch's *valid* positions (padding excluded), and running estimates of those
    statistics are kept (exponential average, ``momentum``), as in Ioffe & Szegedy (2015). In
    evaluation the running estimates are used, so the layer is a fixed per-channel affine map::

        y = gamma * (h - running_mean) / sqrt(running_var + eps) + beta

    It reads no other position, hence it streams exactly with no state at all, and it keeps the
    energy contour over time (a loud and a quiet frame stay apart) that a per-frame LayerNorm
    throws away. Streaming equals the masked full pass in evaluation mode, which is where
    streaming runs; training never streams.

    Args:
        num_channels: ``C``.
        eps: added to the variance.
        momentum: weight of the newest batch in the running estimates.
    """

    def __init__(self, num_channels: int, *, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C, N) -> (B, C, N); ``lengths`` (B,) valid positions (``None`` = all ``N``)."""
        if x.dim() != 3 or x.shape[1] != self.num_features:
            raise ValueError(f"x: expected (B, {self.num_features}, N), found shape {tuple(x.shape)}")
        if not self.training or lengths is None:
            return super().forward(x)
        valid = key_padding_mask(lengths, x.shape[2])[:, None, :]  # (B, 1, N)
        n = valid.sum().clamp(min=1)
        mean = (x * valid).sum((0, 2)) / n
        var = (((x - mean[None, :, None]) * valid) ** 2).sum((0, 2)) / n
        with torch.no_grad():
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
            self.num_batches_tracked += 1
        y = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        return y * self.weight[None, :, None] + self.bias[None, :, None]


__all__ = ["CUMULATIVE_EPS", "CumulativeChannelNorm", "CumulativeNormState", "MaskedBatchNorm", "cumulative_norm_state_size"]
