"""The encoder's front end: waveform normalisation, the CNN feature extractor and its projection.

Data flow (shape legend: B batch, S samples at 16 kHz, T frames of 20 ms, D model dim)::

    waveform (B, S) -> WaveformNorm -> FeatureExtractor (7 convs, stride 320) -> (B, T, C)
    -> FeatureProjection (LayerNorm + Linear) -> (B, T, D)

Each module streams itself (``init_state`` / ``forward_chunk`` beside ``forward``): the
``cumulative`` waveform normalisation carries three running sums, every CNN layer the input
positions it has not consumed yet (and a ``cumulative`` channel norm its statistics). The
per-frame CNN of the ``layer_norm`` extractor (XLSR-53) streams as is; ``group_norm``
(wav2vec2-base) normalises over the whole utterance and cannot stream; ``cumulative_norm`` is its
causal version (:mod:`xtrans.models.wav2vec2.frontend_norm`), and ``batch_norm`` normalises the
first conv with batch statistics in training and fixed ones at inference.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import StreamingNotSupportedError, key_padding_mask
from xtrans.models.wav2vec2.frontend_norm import CUMULATIVE_EPS, CumulativeChannelNorm, MaskedBatchNorm
from xtrans.models.wav2vec2.states import ConvLayerState, WaveformNormState

EXTRACTOR_MODES = ("layer_norm", "group_norm", "cumulative_norm", "batch_norm")
WAVEFORM_NORMS = ("none", "utterance", "cumulative")

XLSR_CONV_LAYERS: Tuple[Tuple[int, int, int], ...] = (
    (512, 10, 5), (512, 3, 2), (512, 3, 2), (512, 3, 2), (512, 3, 2), (512, 2, 2), (512, 2, 2))
"""(channels, kernel, stride) of the 7 convolutions: stride 320 samples, receptive field 400."""


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
