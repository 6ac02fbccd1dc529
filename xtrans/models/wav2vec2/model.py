"""The wav2vec 2.0 family of encoders, written to obey the streaming rule of ``xtrans.masks``.

Data flow (shape legend: B batch, S samples at 16 kHz, T frames of 20 ms, D model dim, H heads)::

    waveform (B, S) -> waveform normalisation -> CNN feature extractor (7 convs, stride 320)
    -> (B, T, 512) -> LayerNorm + Linear -> (B, T, D) -> + positional convolution
    -> N transformer layers under the streaming mask -> (final LayerNorm) -> (B, T, D)

Two layouts of Baevski et al. (2020) are covered: XLSR-53 / XLS-R ("layer_norm" extractor,
pre-LN transformer with a final norm) and wav2vec2-base ("group_norm" extractor, post-LN
transformer with a norm after the positional convolution). The self-supervised models built on
them are options of the same modules: HuBERT (Hsu et al., 2021) is this layout; WavLM (Chen et
al., 2022) adds a gated relative position bias to the attention scores
(:class:`~xtrans.models.attention.RelativePositionBias`, :meth:`SelfAttention.bias_gate`);
data2vec-audio (Baevski et al., 2022) replaces the positional convolution by a stack of five
(:class:`PositionalConv`); XLS-R and MMS are XLSR-53 at other sizes. Every one streams exactly.

Streaming (Kumar et al., 2025): every part that mixes frames in time obeys the chunk rule:
attention through :func:`xtrans.models.attention.streaming_attention` (the rule of
:func:`xtrans.masks.chunk_attention_mask`, at a cost linear in T for bounded left context);
the positional convolution through ``pos_conv`` (``full | chunk | causal | none``); waveform
normalisation through ``waveform_norm`` (``cumulative`` is streaming-safe). The per-frame CNN
in "layer_norm" mode is streamable as is; "group_norm" normalises over the whole utterance and refuses streaming;
"cumulative_norm" is its causal version (running per-channel statistics of the first conv, see
:mod:`xtrans.models.wav2vec2.frontend_norm`): streamable, and it keeps the energy contour;
"batch_norm" normalises the first conv per channel with batch statistics in training and fixed
(running) statistics at inference: stateless, streamable, and the cheapest per training update.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import StreamingConfig, key_padding_mask
from xtrans.models.arch import encoder_arch
from xtrans.models.attention import (AttentionCache, RelativePositionBias, biased_scores_mask, dense_attention_mask,
                                     streaming_attention)
from xtrans.models.wav2vec2.frontend_norm import CUMULATIVE_EPS, CumulativeChannelNorm, MaskedBatchNorm
from xtrans.models.wav2vec2.states import (ConvLayerState, FrontendState, PositionalConvState,
                                          WaveformNormState)

logger = logging.getLogger(__name__)

EXTRACTOR_MODES = ("layer_norm", "group_norm", "cumulative_norm", "batch_norm")
POS_CONV_MODES = ("full", "chunk", "causal", "none")
POS_CONV_NORMS = ("weight", "layer")
WAVEFORM_NORMS = ("none", "utterance", "cumulative")

XLSR_CONV_LAYERS: Tuple[Tuple[int, int, int], ...] = (
    (512, 10, 5), (512, 3, 2), (512, 3, 2), (512, 3, 2), (512, 3, 2), (512, 2, 2), (512, 2, 2))
"""(channels, kernel, stride) of the 7 convolutions: stride 320 samples, receptive field 400."""


class StreamingNotSupportedError(ValueError):
    """The encoder configuration cannot obey the streaming rule (e.g. a group-norm extractor)."""


def conv_output_lengths(lengths: torch.Tensor, conv_layers: Sequence[Tuple[int, int, int]]) -> torch.Tensor:
    """Frames produced by the CNN for ``lengths`` samples: ``floor((L - k) / s) + 1`` per conv.

    For XLSR's stack this is ``(S - 400) // 320 + 1`` (0 for fewer than 400 samples).
    """
    out = lengths.clone()
    for _, kernel, stride in conv_layers:
        out = torch.div(out - kernel, stride, rounding_mode="floor") + 1
    return out.clamp(min=0)


def cumulative_normalize(x: torch.Tensor, count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor,
                         eps: float = CUMULATIVE_EPS
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``cumulative`` waveform normalisation of the next samples, given the sums of all earlier ones.

    Sample ``n`` is normalised with the mean and variance of samples ``0..n`` of its utterance::

        m_n = (1/(n+1)) sum_{k<=n} x_k,    v_n = (1/(n+1)) sum_{k<=n} x_k^2 - m_n^2
        y_n = (x_n - m_n) / sqrt(v_n + eps)

    Nothing after ``n`` is read, so the full pass (all sums zero, all samples at once) and the
    streaming pass (sums carried from chunk to chunk) are the same computation. Scaling the input
    by any gain ``g`` leaves ``y`` unchanged (up to ``eps``): the level of the microphone is
    divided out while the energy contour (speech against the silence before it) is kept, as a
    ratio to the running level. Sums are accumulated in float64.

    Args:
        x: (B, m) new samples, zero where a stream has no sample.
        count: (B,) or a scalar: samples before these (float64).
        total: (B,) float64 sum of those samples.
        total_sq: (B,) float64 sum of their squares.
        eps: variance floor (:data:`CUMULATIVE_EPS`).

    Returns:
        ``y`` (B, m) in ``x.dtype``, and the count, sum and sum of squares after the ``m`` samples.
    """
    x64 = x.double()
    sums = total[:, None] + x64.cumsum(1)
    sums_sq = total_sq[:, None] + (x64 * x64).cumsum(1)
    counts = count.reshape(-1, 1) + torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float64)
    mean = sums / counts
    var = (sums_sq / counts - mean * mean).clamp(min=0.0)
    y = ((x64 - mean) / torch.sqrt(var + eps)).to(x.dtype)
    if x.shape[1] == 0:
        return y, count, total, total_sq
    return y, counts[:, -1], sums[:, -1], sums_sq[:, -1]


def normalize_waveform(waveform: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """Waveform normalisation, (B, S) -> (B, S); samples past ``lengths`` become zero.

    Modes:
        ``none``: unchanged (padding zeroed).
        ``utterance``: ``(x - mean) / sqrt(var + 1e-7)`` over each utterance's valid samples, as
            the published XLSR models expect; reads the whole utterance, so not streamable.
        ``cumulative``: sample ``n`` is normalised with the mean and variance of samples
            ``0..n`` (:func:`cumulative_normalize`): causal, hence exactly streamable with three
            running sums carried between chunks, and invariant to the input level.
    """
    valid = key_padding_mask(lengths, waveform.shape[1])
    x = waveform.masked_fill(~valid, 0.0)
    if mode == "none":
        return x
    if mode == "utterance":
        n = lengths.clamp(min=1).to(x.dtype)[:, None]
        mean = x.sum(1, keepdim=True) / n
        var = ((x - mean).masked_fill(~valid, 0.0) ** 2).sum(1, keepdim=True) / n
        return ((x - mean) / torch.sqrt(var + 1e-7)).masked_fill(~valid, 0.0)
    if mode == "cumulative":
        zeros = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        y, _, _, _ = cumulative_normalize(x, zeros, zeros, zeros)
        return y.masked_fill(~valid, 0.0)
    raise ValueError(f"waveform_norm: expected one of {WAVEFORM_NORMS}, found {mode!r}")


class WaveformNorm(nn.Module):
    """Waveform normalisation as a module (no parameters): :func:`normalize_waveform` and its chunk form.

    Only ``none`` and ``cumulative`` stream: ``forward_chunk`` normalises the next samples with
    the running sums of all earlier ones (:func:`cumulative_normalize`, the full pass's own
    computation).
    """

    def __init__(self, mode: str):
        super().__init__()
        if mode not in WAVEFORM_NORMS:
            raise ValueError(f"waveform_norm: expected one of {WAVEFORM_NORMS}, found {mode!r}")
        self.mode = mode

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S), (B,) -> (B, S), padding zero (:func:`normalize_waveform`)."""
        return normalize_waveform(waveform, lengths, self.mode)

    def init_state(self, batch_size: int, device=None) -> WaveformNormState:
        """Zero sums: the state before the first sample."""
        zeros = torch.zeros(batch_size, dtype=torch.float64, device=device)
        return WaveformNormState(count=zeros, total=zeros.clone(), total_sq=zeros.clone())

    def forward_chunk(self, x: torch.Tensor, state: WaveformNormState
                      ) -> Tuple[torch.Tensor, WaveformNormState]:
        """The next samples (B, m) -> normalised (B, m) and the sums after them."""
        if self.mode == "none":
            return x, state
        if self.mode != "cumulative":
            raise StreamingNotSupportedError(f"waveform_norm={self.mode!r} cannot stream; expected 'cumulative' or 'none'")
        y, count, total, total_sq = cumulative_normalize(x, state.count, state.total, state.total_sq)
        if x.shape[1] == 0:
            return y, state
        return y, WaveformNormState(count=count, total=total, total_sq=total_sq)


class ConvLayer(nn.Module):
    """One CNN layer: Conv1d, optional norm (per-frame LayerNorm, utterance GroupNorm or causal
    per-channel :class:`CumulativeChannelNorm`), GELU."""

    def __init__(self, *, in_channels: int, out_channels: int, kernel: int, stride: int,
                 bias: bool, norm: str):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        # fairseq's initialisation of the wav2vec 2.0 CNN. PyTorch's default shrinks the signal
        # about 3x per layer, so that the layers without a norm run GELU in its linear range.
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_kind = norm
        if norm == "layer":
            self.norm = nn.LayerNorm(out_channels)
        elif norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, affine=True)
        elif norm == "cumulative":
            self.norm = CumulativeChannelNorm(out_channels)
        elif norm == "batch":
            self.norm = MaskedBatchNorm(out_channels)
        elif norm == "none":
            self.norm = None
        else:
            raise ValueError(f"norm: expected 'layer', 'group', 'cumulative', 'batch' or 'none', found {norm!r}")

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C_in, S') -> (B, C_out, S''); ``lengths`` (positions after this conv) for group/batch norm."""
        x = self.conv(x)
        if self.norm_kind == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.norm_kind == "group":
            x = self._masked_group_norm(x, lengths)
        elif self.norm_kind == "batch":
            x = self.norm(x, lengths)  # statistics of valid positions in training, fixed in evaluation
        elif self.norm_kind == "cumulative":
            x = self.norm(x)  # causal: padding after an utterance never reaches its valid positions
        return F.gelu(x)

    def init_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None) -> ConvLayerState:
        """Nothing carried yet; zero running statistics for a ``cumulative`` norm."""
        carry = torch.zeros(batch_size, self.conv.in_channels, 0, device=device, dtype=dtype)
        norm = self.norm.init_state(batch_size, device) if self.norm_kind == "cumulative" else None
        return ConvLayerState(carry=carry, norm=norm)

    def forward_chunk(self, x: torch.Tensor, state: ConvLayerState) -> Tuple[torch.Tensor, ConvLayerState]:
        """The next input positions (B, C_in, m) -> every output they complete (B, C_out, n), new state.

        The input positions not consumed by an output are carried to the next call, so each
        position is computed once. Per-position norms (``layer``, ``batch`` in evaluation, none)
        need nothing else; a ``cumulative`` norm carries its running statistics; ``group``
        reads the whole utterance and cannot stream.
        """
        if self.norm_kind == "group":
            raise StreamingNotSupportedError("a group-norm CNN layer normalises over the whole utterance and cannot stream")
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        x = torch.cat([state.carry, x], dim=2)
        n = (x.shape[2] - kernel) // stride + 1 if x.shape[2] >= kernel else 0
        carry = x[:, :, stride * n:]
        if n == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0), ConvLayerState(carry=carry, norm=state.norm)
        h = self.conv(x[:, :, :stride * (n - 1) + kernel])
        if self.norm_kind == "cumulative":
            h, norm = self.norm.forward_chunk(h, state.norm)
            return F.gelu(h), ConvLayerState(carry=carry, norm=norm)
        if self.norm_kind == "layer":
            h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        elif self.norm_kind == "batch":
            h = self.norm(h, None)
        return F.gelu(h), ConvLayerState(carry=carry, norm=None)

    def _masked_group_norm(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """GroupNorm(C, C) over each utterance's valid frames only, so padding changes nothing."""
        if lengths is None:
            return self.norm(x)
        valid = key_padding_mask(lengths, x.shape[2])[:, None, :].to(x.dtype)  # (B, 1, S'')
        n = lengths.clamp(min=1).to(x.dtype)[:, None, None]
        mean = (x * valid).sum(2, keepdim=True) / n
        var = (((x - mean) * valid) ** 2).sum(2, keepdim=True) / n
        y = (x - mean) / torch.sqrt(var + self.norm.eps)
        return y * self.norm.weight[None, :, None] + self.norm.bias[None, :, None]


class FeatureExtractor(nn.Module):
    """The CNN front end: raw samples (B, S) -> frames (B, T, C_last), 20 ms per frame."""

    def __init__(self, *, conv_layers: Sequence[Tuple[int, int, int]], mode: str, conv_bias: bool):
        super().__init__()
        if mode not in EXTRACTOR_MODES:
            raise ValueError(f"extractor_mode: expected one of {EXTRACTOR_MODES}, found {mode!r}")
        self.mode = mode
        self.conv_layers_spec = tuple(tuple(c) for c in conv_layers)
        layers, in_ch = [], 1
        for i, (ch, kernel, stride) in enumerate(self.conv_layers_spec):
            first = {"group_norm": "group", "cumulative_norm": "cumulative", "batch_norm": "batch"}.get(mode, "layer")
            norm = "layer" if mode == "layer_norm" else (first if i == 0 else "none")
            layers.append(ConvLayer(in_channels=in_ch, out_channels=ch, kernel=kernel, stride=stride,
                                    bias=conv_bias, norm=norm))
            in_ch = ch
        self.conv_layers = nn.ModuleList(layers)

    @property
    def receptive_field(self) -> int:
        """Samples one output frame reads (400 for XLSR)."""
        field = 1
        for _, kernel, stride in reversed(self.conv_layers_spec):
            field = (field - 1) * stride + kernel
        return field

    @property
    def stride(self) -> int:
        """Samples between consecutive frames (320 for XLSR)."""
        return math.prod(s for _, _, s in self.conv_layers_spec)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, S), (B,) -> frames (B, T, C), frame lengths (B,)."""
        x = waveform[:, None, :]
        cur = lengths
        for spec, layer in zip(self.conv_layers_spec, self.conv_layers):
            cur = conv_output_lengths(cur, [spec])
            x = layer(x, cur if layer.norm_kind in ("group", "batch") else None)
        return x.transpose(1, 2), cur

    def init_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None
                   ) -> Tuple[ConvLayerState, ...]:
        """Every layer's initial state."""
        return tuple(layer.init_state(batch_size, device, dtype) for layer in self.conv_layers)

    def forward_chunk(self, x: torch.Tensor, state: Tuple[ConvLayerState, ...]
                      ) -> Tuple[torch.Tensor, Tuple[ConvLayerState, ...]]:
        """The next (normalised) samples (B, m) -> the frames they complete (B, n, C), new state.

        After ``S`` samples in total the stack has produced ``(S - 400) // 320 + 1`` frames, as
        :meth:`forward` does for an utterance of ``S`` samples.
        """
        h = x[:, None, :]  # (B, m) -> (B, 1, m)
        new = []
        for layer, layer_state in zip(self.conv_layers, state):
            h, layer_state = layer.forward_chunk(h, layer_state)
            new.append(layer_state)
        return h.transpose(1, 2), tuple(new)  # (B, C, n) -> (B, n, C)


class FeatureProjection(nn.Module):
    """LayerNorm over CNN channels (optional: Hugging Face's ``feat_proj_layer_norm``), then Linear
    to the model dimension."""

    def __init__(self, *, in_dim: int, embed_dim: int, dropout: float, layer_norm: bool = True):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim) if layer_norm else None
        self.projection = nn.Linear(in_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, D)."""
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.dropout(self.projection(x))


class PositionalConv(nn.Module):
    """Convolutional relative positional embedding: one grouped convolution, or a stack of them.

    Two layouts: wav2vec 2.0, HuBERT and WavLM use one weight-normed convolution (kernel
    ``K = 128``, 16 groups) and GELU (``norm="weight"``); data2vec-audio a stack of
    ``num_layers = 5`` plain convolutions (``K = 19``), each followed by a LayerNorm without
    affine parameters and GELU (``norm="layer"``). Output frame ``t`` of one (``full``)
    convolution reads input frames ``t - K//2 .. t + (K-1)//2`` (zeros outside the utterance).
    Every layer of a stack obeys the mode on its own input, so the stack does too. Modes:

    - ``full``: the original; looks ``(K-1)//2`` frames (1.26 s for K=128) ahead per layer.
    - ``chunk``: for a frame in chunk ``c``, every input frame at or after the end of chunk
      ``c`` reads as zero — exactly what the convolution sees at the end of an utterance — so
      no future chunk leaks in, at any layer. Needs ``K//2`` frames of history per layer.
    - ``causal``: the same kernel shifted onto the past: frame ``t`` reads ``t-K+1 .. t``.
    - ``none``: no positional embedding (the module returns zeros).

    The input of layers 2..n is zeroed past each utterance's length (``lengths``), so that
    padding a batch changes nothing (the original stack reads its own outputs over the padding).
    """

    def __init__(self, *, embed_dim: int, kernel: int = 128, groups: int = 16, mode: str = "full",
                 num_layers: int = 1, norm: str = "weight"):
        super().__init__()
        if mode not in POS_CONV_MODES:
            raise ValueError(f"pos_conv: expected one of {POS_CONV_MODES}, found {mode!r}")
        if norm not in POS_CONV_NORMS:
            raise ValueError(f"pos_conv_norm: expected one of {POS_CONV_NORMS}, found {norm!r}")
        if num_layers < 1 or (norm == "weight" and num_layers != 1):
            raise ValueError(f"pos_conv_layers: expected 1 for pos_conv_norm='weight' (one weight-normed "
                             f"convolution) or >= 1 for 'layer', found {num_layers}")
        if kernel < 1:
            raise ValueError(f"pos_conv_kernel: expected >= 1, found {kernel}")
        self.mode = mode
        self.kernel = kernel
        self.norm = norm
        self.num_layers = num_layers
        if norm == "weight":
            conv = nn.Conv1d(embed_dim, embed_dim, kernel, padding=0, groups=groups)
            self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        else:
            self.convs = nn.ModuleList(nn.Conv1d(embed_dim, embed_dim, kernel, padding=0, groups=groups)
                                       for _ in range(num_layers))

    @property
    def history(self) -> int:
        """Input frames before the current chunk that streaming must keep, per layer (0 when unused)."""
        return {"full": self.kernel // 2, "chunk": self.kernel // 2, "causal": self.kernel - 1,
                "none": 0}[self.mode]

    def _layer(self, i: int, window: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` on padded input (B, D, n + K - 1) -> (B, D, n): conv, [LayerNorm], GELU."""
        if self.norm == "weight":
            return F.gelu(self.conv(window))
        conv = self.convs[i]
        y = conv(window).transpose(1, 2)  # (B, D, n) -> (B, n, D)
        return F.gelu(F.layer_norm(y, (conv.out_channels,), eps=1e-5)).transpose(1, 2)

    def forward(self, x: torch.Tensor, chunk_size: Optional[int] = None,
                lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, D) -> positional embedding (B, T, D); padded frames of ``x`` must be zero.

        Args:
            x: frames, zero past each utterance's end.
            chunk_size: ``C`` for ``chunk`` mode; ``None`` makes ``chunk`` equal to ``full``.
            lengths: (B,) valid frames, for a stack (the input of its inner layers is zeroed past
                them); ``None`` = all.
        """
        if self.mode == "none":
            return torch.zeros_like(x)
        h = x.transpose(1, 2)  # (B, T, D) -> (B, D, T)
        T = h.shape[2]
        valid = None if lengths is None else key_padding_mask(lengths, T)[:, None, :]  # (B, 1, T)
        for i in range(self.num_layers):
            if i and valid is not None:
                h = h.masked_fill(~valid, 0.0)
            if self.mode == "causal":
                h = self._convolve(i, F.pad(h, (self.kernel - 1, 0)))
            elif self.mode == "full" or chunk_size is None or chunk_size >= T:
                h = self._layer(i, F.pad(h, (self.kernel // 2, (self.kernel - 1) // 2)))
            else:
                h = self._chunked(i, h, chunk_size)
        return h.transpose(1, 2)

    def _convolve(self, i: int, window: torch.Tensor) -> torch.Tensor:
        """``causal``/``chunk``: layer ``i`` on (B, D, P + n) history and frames -> (B, D, n).

        In ``chunk`` mode the ``(K-1)//2`` frames after the window read as zero.
        """
        if self.mode == "chunk":
            window = F.pad(window, (0, (self.kernel - 1) // 2))
        return self._layer(i, window)

    def init_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None) -> PositionalConvState:
        """Zero history at every layer: what the full pass sees before the first frame."""
        embed_dim = (self.conv if self.norm == "weight" else self.convs[0]).in_channels

        def zeros() -> torch.Tensor:
            return torch.zeros(batch_size, self.history, embed_dim, device=device, dtype=dtype)

        return PositionalConvState(zeros(), tuple(zeros() for _ in range(self.num_layers - 1)))

    def forward_chunk(self, x: torch.Tensor, state: PositionalConvState, valid: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, PositionalConvState]:
        """The embedding (B, n, D) of one whole chunk's frames ``x`` (B, n, D), and the new history.

        ``chunk`` mode reads zeros after the chunk, ``causal`` nothing after it, as :meth:`forward`.
        ``valid`` (B, n) marks the frames before each stream's end (the inner layers' input is
        zeroed after it, as :meth:`forward` does past ``lengths``); ``None`` = all.
        """
        if self.mode == "full":
            raise StreamingNotSupportedError("pos_conv='full' looks ahead across chunk borders and cannot stream")
        h, histories = x, []
        for i, history in enumerate((state.history, *state.inner)):
            if i and valid is not None:
                h = h.masked_fill(~valid[:, :, None], 0.0)
            window = torch.cat([history, h], dim=1)  # (B, P + n, D)
            histories.append(window[:, window.shape[1] - self.history:])
            if self.mode != "none":
                h = self._convolve(i, window.transpose(1, 2)).transpose(1, 2)  # (B, D, n) -> (B, n, D)
        new = PositionalConvState(histories[0], tuple(histories[1:]))
        return (torch.zeros_like(x) if self.mode == "none" else h), new

    def _chunked(self, i: int, h: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Chunk mode, layer ``i``: each chunk convolved with its ``K//2`` frames of history and zeros after it."""
        B, D, T = h.shape
        half, C = self.kernel // 2, chunk_size
        n = -(-T // C)
        padded = F.pad(h, (half, n * C - T))  # history of chunk 0 is zeros
        # window of chunk c: input frames c*C - half .. (c+1)*C - 1, then zeros for the future
        windows = padded.unfold(2, C + half, C)  # (B, D, n, C + half)
        windows = windows.permute(0, 2, 1, 3).reshape(B * n, D, C + half)
        y = self._convolve(i, windows)  # (B*n, D, C)
        return y.reshape(B, n, D, C).permute(0, 2, 1, 3).reshape(B, D, n * C)[:, :, :T]


class SelfAttention(nn.Module):
    """Multi-head self-attention under the streaming rule (:func:`~xtrans.models.attention.streaming_attention`).

    :meth:`forward` attends a whole padded batch under the rule, at a cost linear in ``T`` for
    bounded left context; :meth:`attend` takes explicit keys/values and a boolean mask (True = may
    attend), for the streaming encoder's cached keys.

    With a relative position bias (WavLM, :class:`~xtrans.models.attention.RelativePositionBias`,
    shared by all layers and passed in), ``gated=True`` scales it per query and head by WavLM's
    gate (:meth:`bias_gate`); its weights keep WavLM's names ``gru_rel_pos_linear`` and
    ``gru_rel_pos_const``.
    """

    def __init__(self, *, embed_dim: int, num_heads: int, dropout: float, gated: bool = False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide embed_dim {embed_dim}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.gated = gated
        if gated:
            self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def bias_gate(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """WavLM's gate of the position bias from the attention input (B, T, D) -> (B, H, T), or None.

        Per head, the query frame's slice ``x_h`` (D/H values) gives two gates
        ``a, b = sigmoid(sum over 4 of W x_h + w)`` and the bias is scaled by
        ``a (b c_h - 1) + 2`` (``c_h`` learned; with ``c_h = 1`` the scale lies in (1, 2)).
        """
        if not self.gated:
            return None
        h = self.split_heads(x)  # (B, H, T, D/H)
        gates = torch.sigmoid(self.gru_rel_pos_linear(h).unflatten(-1, (2, 4)).sum(-1))  # (B, H, T, 2)
        gate_a, gate_b = gates[..., 0], gates[..., 1]
        return gate_a * (gate_b * self.gru_rel_pos_const[..., 0] - 1.0) + 2.0  # (B, H, T)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of frames ``x`` (B, T, D) -> two (B, H, T, D/H) (cached when streaming)."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Queries from ``x`` (B, Tq, D) over keys/values (B, H, Tk, D/H) -> (B, Tq, D).

        ``mask`` broadcasts to (B, H, Tq, Tk), True = may attend; ``None`` = attend to all; or a
        float mask added to the scores (``-inf`` = may not attend).
        """
        q = self.split_heads(self.q_proj(x))
        return self.merge_heads(F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0))

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Heads (B, H, Tq, D/H) -> output projection (B, Tq, D)."""
        B, H, Tq, Dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, Tq, H * Dh))  # (B, H, Tq, D/H) -> (B, Tq, D)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, streaming: Optional[StreamingConfig],
                position_bias: Optional[RelativePositionBias] = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), frames past ``lengths`` (B,) never attended, under ``streaming``.

        Rows of padded frames hold finite values of no meaning. ``position_bias`` (WavLM) is added
        to the scores, gated by :meth:`bias_gate`.
        """
        q = self.split_heads(self.q_proj(x))
        k, v = self.project_kv(x)
        bias = {} if position_bias is None else dict(position_bias=position_bias, bias_gate=self.bias_gate(x))
        return self.merge_heads(streaming_attention(q, k, v, lengths, streaming,
                                                    dropout_p=self.dropout if self.training else 0.0, **bias))


class FeedForward(nn.Module):
    """Linear(D, F) -> GELU -> dropout -> Linear(F, D) -> dropout."""

    def __init__(self, *, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.output_dense(self.activation_dropout(F.gelu(self.intermediate_dense(x)))))


class TransformerLayer(nn.Module):
    """One transformer layer, pre-LN (XLSR-53) or post-LN (wav2vec2-base)."""

    def __init__(self, *, embed_dim: int, num_heads: int, ffn_dim: int, layer_norm_first: bool,
                 dropout: float, attention_dropout: float, activation_dropout: float, gated_bias: bool = False):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(embed_dim=embed_dim, num_heads=num_heads, dropout=attention_dropout,
                                       gated=gated_bias)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.feed_forward = FeedForward(embed_dim=embed_dim, ffn_dim=ffn_dim,
                                        activation_dropout=activation_dropout, dropout=dropout)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def attention_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the attention's keys/values are computed from (normed input for pre-LN)."""
        return self.layer_norm(x) if self.layer_norm_first else x

    def around(self, x: torch.Tensor, attention: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The layer around ``attention`` (its input (B, Tq, D) -> (B, Tq, D)): (B, Tq, D) -> (B, Tq, D)."""
        if self.layer_norm_first:
            x = x + self.dropout(attention(self.layer_norm(x)))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(attention(x)))
        return self.final_layer_norm(x + self.feed_forward(x))

    def forward_with_kv(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The layer with the attention's keys/values given (B, H, Tk, D/H): (B, Tq, D) -> (B, Tq, D)."""
        return self.around(x, lambda h: self.attention.attend(h, k, v, mask))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, streaming: Optional[StreamingConfig],
                position_bias: Optional[RelativePositionBias] = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), attending under ``streaming`` to the ``lengths`` (B,) valid frames
        (with the encoder's relative ``position_bias``, WavLM)."""
        return self.around(x, lambda h: self.attention(h, lengths, streaming, position_bias))

    def init_state(self, batch_size: int, streaming: StreamingConfig, device=None,
                   dtype: Optional[torch.dtype] = None) -> AttentionCache:
        """The empty key/value cache of this layer's attention under ``streaming``."""
        attn = self.attention
        return AttentionCache.zeros(batch_size, attn.num_heads, attn.head_dim, streaming.num_sinks,
                                    streaming.left_context, device, dtype)

    def forward_chunk(self, x: torch.Tensor, state: AttentionCache, start: torch.Tensor, lengths: torch.Tensor,
                      left_context: Optional[int], position_bias: Optional[RelativePositionBias] = None
                      ) -> Tuple[torch.Tensor, AttentionCache]:
        """One chunk (B, n, D) at frames ``start`` (B,) .. ``start + n - 1`` -> (B, n, D), new cache.

        Each query attends the cached sinks and window and the whole chunk (the rule's key set,
        :func:`~xtrans.models.attention.chunk_key_mask`), never a key at or past ``lengths`` (B,);
        the cache then keeps the last ``left_context`` frames (all when None). A relative
        ``position_bias`` sees every cached key at its absolute frame (sink slot ``i`` = frame
        ``i``, window slot ``w`` = frame ``start - L + w``), as the full pass does.
        """
        n = x.shape[1]
        k, v = self.attention.project_kv(self.attention_input(x))  # (B, H, n, D/H)
        keys, values = state.keys_values(k, v)
        mask = state.mask(start, n, lengths)  # (B, 1, n, K)

        def attention(h: torch.Tensor) -> torch.Tensor:
            scores_mask = mask
            if position_bias is not None:
                query_pos = start[:, None] + torch.arange(n, device=x.device)  # (B, n)
                scores_mask = biased_scores_mask(position_bias, query_pos, state.key_positions(start, n),
                                                 self.attention.bias_gate(h), mask)  # (B, H, n, K)
            return self.attention.attend(h, keys, values, scores_mask)

        y = self.around(x, attention)
        return y, state.append(k, v, start, bounded=left_context is not None)


class Wav2Vec2Encoder(nn.Module):
    """wav2vec 2.0 / XLSR encoder with streaming masks.

    Args:
        conv_layers: (channels, kernel, stride) per CNN layer.
        extractor_mode: ``layer_norm`` (XLSR-53, per-frame, streamable), ``group_norm``
            (wav2vec2-base, per-utterance, not streamable) or ``cumulative_norm`` (conv 1
            normalised per channel with running statistics over time; causal, streamable; see
            :class:`~xtrans.models.wav2vec2.frontend_norm.CumulativeChannelNorm`) or
            ``batch_norm`` (conv 1 normalised per channel over the batch's valid positions in
            training, with fixed running statistics in evaluation; stateless and streamable in
            evaluation; see :class:`~xtrans.models.wav2vec2.frontend_norm.MaskedBatchNorm`).
        conv_bias: bias in the CNN convolutions.
        embed_dim: ``D``.
        num_layers: transformer layers.
        num_heads: ``H``.
        ffn_dim: feed-forward inner size.
        layer_norm_first: pre-LN (XLSR) when True, post-LN (base) when False.
        pos_conv_kernel: positional convolution kernel (128).
        pos_conv_groups: its groups (16).
        pos_conv: ``full | chunk | causal | none`` (see :class:`PositionalConv`).
        waveform_norm: ``none | utterance | cumulative`` (see :func:`normalize_waveform`).
        dropout: after the positional embedding and inside layers.
        attention_dropout: on attention weights.
        activation_dropout: inside the feed-forward block.
        layer_drop: probability of skipping a whole layer per training batch.
        freeze_feature_extractor: no gradient into the CNN (run under ``no_grad``), and the CNN
            stays in evaluation mode, so a ``batch_norm`` front end keeps its running statistics.
        layer_norm_eps: epsilon of every layer norm after the CNN (Hugging Face's ``layer_norm_eps``;
            the CNN's keep 1e-5, as there).
        feat_proj_layer_norm: a LayerNorm over the CNN channels before the projection (False in
            some Hugging Face HuBERT conversions, ``feat_proj_layer_norm``).
        pos_conv_layers: convolutions in the positional embedding's stack (5 in data2vec-audio).
        pos_conv_norm: ``weight`` (one weight-normed convolution: wav2vec 2.0, HuBERT, WavLM) or
            ``layer`` (each convolution followed by a LayerNorm without affine: data2vec-audio);
            see :class:`PositionalConv`.
        rel_pos_buckets: buckets of WavLM's relative position bias; 0 = no bias (wav2vec 2.0,
            HuBERT, data2vec). See :class:`~xtrans.models.attention.RelativePositionBias`.
        rel_pos_max_distance: the distance (frames) from which relative positions share the last bucket.
        rel_pos_gated: scale the bias per query by WavLM's gate (``gru_rel_pos``).

    The model families differ only in these options (presets and ``load_pretrained`` set them):
    HuBERT is wav2vec 2.0's layout; WavLM adds ``rel_pos_*``; data2vec-audio sets
    ``pos_conv_layers=5, pos_conv_norm="layer"``; XLS-R and MMS are wav2vec 2.0 at other sizes.
    """

    def __init__(self, *, conv_layers: Sequence[Tuple[int, int, int]] = XLSR_CONV_LAYERS,
                 extractor_mode: str = "layer_norm", conv_bias: bool = True, embed_dim: int = 1024,
                 num_layers: int = 24, num_heads: int = 16, ffn_dim: int = 4096,
                 layer_norm_first: bool = True, pos_conv_kernel: int = 128, pos_conv_groups: int = 16,
                 pos_conv: str = "full", waveform_norm: str = "utterance", dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 layer_drop: float = 0.0, freeze_feature_extractor: bool = False, layer_norm_eps: float = 1e-5,
                 feat_proj_layer_norm: bool = True, pos_conv_layers: int = 1, pos_conv_norm: str = "weight",
                 rel_pos_buckets: int = 0, rel_pos_max_distance: int = 800, rel_pos_gated: bool = False):
        super().__init__()
        self.arch = encoder_arch(dict(  # the keyword arguments that rebuild this encoder, type-checked
            conv_layers=conv_layers, extractor_mode=extractor_mode,
            conv_bias=conv_bias, embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads,
            ffn_dim=ffn_dim, layer_norm_first=layer_norm_first, pos_conv_kernel=pos_conv_kernel,
            pos_conv_groups=pos_conv_groups, pos_conv=pos_conv, waveform_norm=waveform_norm,
            dropout=dropout, attention_dropout=attention_dropout, activation_dropout=activation_dropout,
            layer_drop=layer_drop, freeze_feature_extractor=freeze_feature_extractor,
            layer_norm_eps=layer_norm_eps, feat_proj_layer_norm=feat_proj_layer_norm,
            pos_conv_layers=pos_conv_layers, pos_conv_norm=pos_conv_norm, rel_pos_buckets=rel_pos_buckets,
            rel_pos_max_distance=rel_pos_max_distance, rel_pos_gated=rel_pos_gated), "Wav2Vec2Encoder")
        if waveform_norm not in WAVEFORM_NORMS:
            raise ValueError(f"waveform_norm: expected one of {WAVEFORM_NORMS}, found {waveform_norm!r}")
        if not 0.0 <= layer_drop < 1.0:
            raise ValueError(f"layer_drop: expected in [0, 1), found {layer_drop}")
        if rel_pos_buckets < 0:
            raise ValueError(f"rel_pos_buckets: expected >= 0 (0 = no relative position bias), found {rel_pos_buckets}")
        if rel_pos_gated and not rel_pos_buckets:
            raise ValueError("rel_pos_gated: expected False without a relative position bias (rel_pos_buckets=0), "
                             "found True")
        self.embed_dim = embed_dim
        self.layer_norm_first = layer_norm_first
        self.waveform_norm = waveform_norm
        self.layer_drop = layer_drop
        self.freeze_feature_extractor = freeze_feature_extractor
        self.wave_norm = WaveformNorm(waveform_norm)
        self.feature_extractor = FeatureExtractor(conv_layers=conv_layers, mode=extractor_mode,
                                                  conv_bias=conv_bias)
        self.feature_projection = FeatureProjection(in_dim=conv_layers[-1][0], embed_dim=embed_dim,
                                                    dropout=dropout, layer_norm=feat_proj_layer_norm)
        self.pos_conv = PositionalConv(embed_dim=embed_dim, kernel=pos_conv_kernel, groups=pos_conv_groups,
                                       mode=pos_conv, num_layers=pos_conv_layers, norm=pos_conv_norm)
        # WavLM: one relative position bias, shared by every layer (each gates it by its queries)
        self.rel_pos_bias = (RelativePositionBias(num_heads=num_heads, num_buckets=rel_pos_buckets,
                                                  max_distance=rel_pos_max_distance) if rel_pos_buckets else None)
        # post-LN (base) normalises right after adding the positional embedding;
        # pre-LN (XLSR) normalises after the last layer.
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim=embed_dim, num_heads=num_heads, ffn_dim=ffn_dim,
                             layer_norm_first=layer_norm_first, dropout=dropout,
                             attention_dropout=attention_dropout, activation_dropout=activation_dropout,
                             gated_bias=rel_pos_gated)
            for _ in range(num_layers))
        if freeze_feature_extractor:
            self.feature_extractor.requires_grad_(False)
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm) and not name.startswith("feature_extractor."):
                module.eps = layer_norm_eps

    def train(self, mode: bool = True) -> "Wav2Vec2Encoder":
        """As :meth:`torch.nn.Module.train`, except that a frozen CNN stays in evaluation mode."""
        super().train(mode)
        if self.freeze_feature_extractor:
            self.feature_extractor.eval()
        return self

    @property
    def pos_conv_mode(self) -> str:
        return self.pos_conv.mode

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames for ``lengths`` samples (B,) -> (B,)."""
        return conv_output_lengths(lengths, self.feature_extractor.conv_layers_spec)

    def check_streaming(self, streaming: Optional[StreamingConfig]) -> None:
        """Raises :class:`StreamingNotSupportedError` when this encoder cannot obey ``streaming``."""
        if streaming is None or streaming.is_full:
            return
        if self.feature_extractor.mode == "group_norm":
            raise StreamingNotSupportedError(
                "extractor_mode='group_norm' normalises each CNN channel over the whole utterance "
                "(wav2vec2-base layout) and cannot stream; use a 'layer_norm' extractor (XLSR-53 layout)")
        if self.waveform_norm == "utterance":
            raise StreamingNotSupportedError(
                "waveform_norm='utterance' reads the whole utterance before the first frame; set "
                "waveform_norm to 'cumulative' (or 'none') for a streaming configuration")
        if self.pos_conv.mode == "full":
            raise StreamingNotSupportedError(
                "pos_conv='full' looks 64 frames (1.28 s) ahead across chunk borders; set pos_conv to "
                "'chunk', 'causal' or 'none' for a streaming configuration")

    def extract(self, waveform: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Waveform normalisation + CNN + projection: (B, S) -> (B, T, D), (B,), padding zeroed."""
        x = self.wave_norm(waveform, lengths)
        if self.freeze_feature_extractor:
            with torch.no_grad():
                feats, frame_lengths = self.feature_extractor(x, lengths)
        else:
            feats, frame_lengths = self.feature_extractor(x, lengths)
        h = self.feature_projection(feats)
        valid = key_padding_mask(frame_lengths, h.shape[1])
        return h.masked_fill(~valid[:, :, None], 0.0), frame_lengths

    def init_frontend_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None
                            ) -> FrontendState:
        """The waveform normalisation's and the CNN's state before the first sample."""
        return FrontendState(wave=self.wave_norm.init_state(batch_size, device),
                             conv=self.feature_extractor.init_state(batch_size, device, dtype))

    def extract_chunk(self, samples: torch.Tensor, state: FrontendState) -> Tuple[torch.Tensor, FrontendState]:
        """:meth:`extract` piece by piece: the next raw samples (B, m) -> the frames they complete (B, n, D).

        Samples past a stream's end must be zero; frames that read them are the caller's to
        discard (as :meth:`extract` zeroes frames past each length).
        """
        x, wave = self.wave_norm.forward_chunk(samples, state.wave)
        feats, conv = self.feature_extractor.forward_chunk(x, state.conv)
        return self.feature_projection(feats), FrontendState(wave=wave, conv=conv)

    def attention_mask(self, lengths: torch.Tensor, num_frames: int,
                       streaming: Optional[StreamingConfig]) -> Optional[torch.Tensor]:
        """The dense mask the layers' attention obeys, True = may attend (for inspection and tests).

        :meth:`forward` does not build it: the layers call
        :func:`~xtrans.models.attention.streaming_attention`, which gathers each chunk's keys
        when the left context is bounded. Returns ``None`` when every frame may see every frame,
        (B, 1, 1, T) key padding for full attention, else (B, 1, T, T) (the streaming rule
        combined with key padding; query rows of padded frames see every key, so that no row
        is empty). See :func:`~xtrans.models.attention.dense_attention_mask`.
        """
        return dense_attention_mask(lengths, num_frames, streaming)

    def forward(self, waveform: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                streaming: Optional[StreamingConfig] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encodes a padded batch under a streaming configuration (the masked full pass).

        Args:
            waveform: (B, S) float, 16 kHz, zero-padded.
            lengths: (B,) valid samples; ``None`` = all ``S``.
            streaming: the chunk rule to obey; ``None`` = full attention.

        Returns:
            features (B, T, D), zero past each length, and frame lengths (B,).

        Raises:
            ValueError: on a badly shaped input or a streaming configuration this encoder cannot obey.
        """
        if waveform.dim() != 2:
            raise ValueError(f"waveform: expected (B, S), found shape {tuple(waveform.shape)}")
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long,
                                 device=waveform.device)
        elif lengths.shape != (waveform.shape[0],):
            raise ValueError(f"lengths: expected shape ({waveform.shape[0]},), found {tuple(lengths.shape)}")
        elif int(lengths.max()) > waveform.shape[1]:
            raise ValueError(f"lengths: max {int(lengths.max())} exceeds {waveform.shape[1]} samples")
        self.check_streaming(streaming)
        x, frame_lengths = self.extract(waveform, lengths)
        T = x.shape[1]
        chunk = None if streaming is None else streaming.chunk_size
        bias = self.rel_pos_bias
        x = self._contextualize(x, self.pos_conv(x, chunk, frame_lengths),
                                lambda layer, h: layer(h, frame_lengths, streaming, bias))
        valid = key_padding_mask(frame_lengths, T)
        return x.masked_fill(~valid[:, :, None], 0.0), frame_lengths

    def _contextualize(self, x: torch.Tensor, pos: torch.Tensor,
                       run_layer: Callable[[TransformerLayer, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Frames (B, T, D) + positional embedding -> the transformer stack, pre-LN or post-LN.

        ``run_layer(layer, x)`` runs one layer (over the whole utterance, or over a chunk with
        its cache); in training, layer drop skips whole layers.
        """
        x = x + pos
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            if self.training and self.layer_drop > 0 and torch.rand(()) < self.layer_drop:
                continue
            x = run_layer(layer, x)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x

    def init_chunk_state(self, batch_size: int, streaming: StreamingConfig, device=None,
                         dtype: Optional[torch.dtype] = None) -> Tuple[PositionalConvState, Tuple[AttentionCache, ...]]:
        """The positional convolution's history and every layer's key/value cache before the first chunk."""
        return (self.pos_conv.init_state(batch_size, device, dtype),
                tuple(layer.init_state(batch_size, streaming, device, dtype) for layer in self.layers))

    def encode_chunk(self, h: torch.Tensor, positional: PositionalConvState, caches: Tuple[AttentionCache, ...],
                     start: torch.Tensor, lengths: torch.Tensor, streaming: StreamingConfig
                     ) -> Tuple[torch.Tensor, PositionalConvState, Tuple[AttentionCache, ...]]:
        """One chunk of projected CNN frames (B, n, D) through the positional conv and the layers.

        The chunk form of :meth:`forward` after :meth:`extract`: frames ``start`` (B,) ..
        ``start + n - 1`` of each stream, ``lengths`` (B,) its valid frames (frames at or past
        it must be zero in ``h``; they come out zero). Returns the frames (B, n, D) and the new
        states.
        """
        valid = start[:, None] + torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]  # (B, n)
        pos, positional = self.pos_conv.forward_chunk(h, positional, valid)
        new_caches = []

        def run_layer(layer: TransformerLayer, x: torch.Tensor) -> torch.Tensor:
            y, cache = layer.forward_chunk(x, caches[len(new_caches)], start, lengths, streaming.left_context,
                                           self.rel_pos_bias)
            new_caches.append(cache)
            return y

        x = self._contextualize(h, pos, run_layer)
        return x.masked_fill(~valid[:, :, None], 0.0), positional, tuple(new_caches)
