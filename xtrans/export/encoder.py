"""ONNX export of the streaming encoder: one chunk per call, every cache an explicit input.

The graphs are the encoder's own streaming modules (``extract_chunk`` and ``encode_chunk`` of
:class:`xtrans.models.encoder.Encoder`) traced at fixed shapes; nothing here recomputes the
model. A stream of samples ``s`` runs as (``C`` chunk frames, ``P = 80`` prime samples)::

    state = encoder_start(s[0:80])                                # the CNN's carries after 80 samples
    frames_k, n_k, state = encoder(s[80 + 320 C k : 80 + 320 C (k+1)], 320 C, state)   # k = 0, 1, ...
    frames, n, state = encoder(last r samples zero-padded, r, state)   # only when r >= 320

Why the prime call: frame ``k`` reads samples ``[320k, 320k + 400)``, so chunk ``k`` is complete
after ``320 C (k + 1) + 80`` samples. Once the first 80 samples are in, every further ``320 C``
samples complete exactly one chunk and every carried tensor keeps its shape (the CNN's carries
are periodic in 320 samples), which is what a fixed-shape graph needs. ``encoder_start`` is the
same front end run on those 80 samples from the initial state. The rule, with the encoder's own
stride and receptive field, is :class:`xtrans.frames.StreamGeometry`; graphs are written by
:func:`xtrans.export.trace.trace`.

Inputs and outputs (batch axis ``B`` dynamic)::

    encoder_start.onnx  samples (B, 80) float32 -> new_state.<name> ...
    encoder.onnx        samples (B, 320 C) float32, num_samples (B,) int64, state.<name> ...
                        -> frames (B, C, D) float32, num_frames (B,) int64, new_state.<name> ...

``state.<name>`` are :func:`xtrans.streaming.flatten_state`'s names of an :class:`ExportState`
(``state.frontend.wave.count``, ``state.frontend.conv.0.carry``, ``state.positional.history``,
``state.layers.0.left_keys``, ..., ``state.frames``, ``state.samples``). A call's valid frames
are the first ``num_frames``; past a stream's end they are zero. The attention caches have
fixed slots (``S`` sinks, ``L`` window frames), so the left context must be bounded.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from xtrans.export.trace import trace
from xtrans.frames import StreamGeometry
from xtrans.masks import StreamingConfig
from xtrans.models.attention import AttentionCache
from xtrans.models.encoder import Encoder
from xtrans.models.wav2vec2.states import FrontendState, PositionalConvState
from xtrans.streaming.state import flatten_state, unflatten_state

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ExportState:
    """Everything the exported encoder carries between calls.

    Attributes:
        frontend: waveform-normalisation sums and the CNN layers' carries.
        positional: the positional convolution's history.
        layers: one key/value cache per transformer layer (fixed ``S`` + ``L`` slots).
        frames: (B,) int64, frames emitted so far (the next chunk's first frame).
        samples: (B,) int64, valid samples received so far.
    """

    frontend: FrontendState
    positional: PositionalConvState
    layers: Tuple[AttentionCache, ...]
    frames: torch.Tensor
    samples: torch.Tensor


def check_exportable(encoder: Encoder, streaming: StreamingConfig) -> None:
    """Raises ValueError/StreamingNotSupportedError when ``encoder`` cannot export under ``streaming``."""
    if not isinstance(streaming, StreamingConfig) or streaming.is_full:
        raise ValueError("streaming: expected a chunk size (--chunk-ms) for a streaming export, found full attention")
    if streaming.left_context is None:
        raise ValueError("streaming.left_context: expected a bounded left context (--left-ms) for an export "
                         "with fixed-size caches, found None (unlimited)")
    encoder.check_streaming(streaming)
    fe = encoder.feature_extractor
    if fe.receptive_field <= fe.stride:
        raise ValueError(f"encoder: expected a CNN receptive field larger than its stride, found "
                         f"{fe.receptive_field} <= {fe.stride}")


class _Start(nn.Module):
    """``encoder_start``: the first ``prime`` samples -> the state before the first chunk call."""

    def __init__(self, encoder: Encoder, streaming: StreamingConfig):
        super().__init__()
        self.encoder, self.streaming = encoder, streaming

    def forward(self, samples: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        B, m = samples.shape
        state = initial_state(self.encoder, self.streaming, B, samples.device)
        _, frontend = self.encoder.extract_chunk(samples, state.frontend)  # no frame: m < receptive field
        counts = torch.zeros_like(samples[:, 0], dtype=torch.long)
        new = dataclasses.replace(state, frontend=frontend, samples=counts + m)
        return tuple(t for _, t in flatten_state(new, "new_state"))


class _Chunk(nn.Module):
    """``encoder``: one call of ``C * stride`` samples -> one chunk's frames and the new state."""

    def __init__(self, encoder: Encoder, streaming: StreamingConfig, template: ExportState):
        super().__init__()
        self.encoder, self.streaming, self.template = encoder, streaming, template

    def forward(self, samples: torch.Tensor, num_samples: torch.Tensor, *flat: torch.Tensor
                ) -> Tuple[torch.Tensor, ...]:
        enc, C = self.encoder, self.streaming.chunk_size
        state: ExportState = unflatten_state(self.template, flat)
        valid = torch.arange(samples.shape[1], device=samples.device)[None, :] < num_samples[:, None]
        h, frontend = enc.extract_chunk(samples.masked_fill(~valid, 0.0), state.frontend)  # (B, C, D)
        total = state.samples + num_samples
        limits = enc.output_lengths(total)  # valid frames of each stream so far
        start = state.frames
        pad = start[:, None] + torch.arange(C, device=h.device)[None, :] >= limits[:, None]  # (B, C)
        y, positional, layers = enc.encode_chunk(h.masked_fill(pad[:, :, None], 0.0), state.positional,
                                                 state.layers, start, limits, self.streaming)
        new = ExportState(frontend=frontend, positional=positional, layers=layers, frames=start + C, samples=total)
        return (y, (limits - start).clamp(min=0, max=C), *(t for _, t in flatten_state(new, "new_state")))


def initial_state(encoder: Encoder, streaming: StreamingConfig, batch_size: int, device=None
                  ) -> ExportState:
    """The :class:`ExportState` before the first sample (float32 caches)."""
    positional, layers = encoder.init_chunk_state(batch_size, streaming, device, torch.float32)
    zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
    return ExportState(frontend=encoder.init_frontend_state(batch_size, device, torch.float32),
                       positional=positional, layers=layers, frames=zeros, samples=zeros.clone())


def prime_samples(encoder: Encoder) -> int:
    """Samples before the first chunk call: receptive field - stride (80 for XLSR; :class:`StreamGeometry`)."""
    return StreamGeometry.of_frontend(encoder.feature_extractor, 1).prime_samples


def _frozen_copy(encoder: Encoder) -> Encoder:
    """An evaluation copy whose weight-normed positional conv is a plain conv (one weight in the graph).

    The conv is replaced rather than un-parametrized: a deep copy shares the parametrized class
    with the original, and removing the parametrization from one would break the other.
    """
    enc = copy.deepcopy(encoder).eval().float()
    if enc.pos_conv.norm != "weight":  # data2vec's stack: plain convolutions already
        return enc
    old = enc.pos_conv.conv
    conv = nn.Conv1d(old.in_channels, old.out_channels, old.kernel_size[0], groups=old.groups)
    with torch.no_grad():
        conv.weight.copy_(old.weight)
        conv.bias.copy_(old.bias)
    enc.pos_conv.conv = conv
    return enc


EXTERNAL_DATA_BYTES = 1_000_000_000
"""Weights above this size go to a ``.data`` file beside the graph (protobuf refuses files over 2 GB,
and a graph holds its weights plus constants folded from them)."""


def export_encoder(encoder: Encoder, streaming: StreamingConfig, outdir: PathLike,
                   opset: int = 17, external_data: Optional[bool] = None) -> Dict[str, Any]:
    """Writes ``encoder_start.onnx`` and ``encoder.onnx`` to ``outdir``.

    ``external_data`` (default: when the weights exceed :data:`EXTERNAL_DATA_BYTES`, e.g.
    XLS-R 1B) stores ``encoder.onnx``'s weights in ``encoder.onnx.data`` beside it.

    Returns:
        the encoder's part of ``config.json``: chunk/left/sinks, frame stride, samples per call
        and prime samples (its :class:`~xtrans.frames.StreamGeometry`), encoder dim, and the
        state names, shapes (``"B"`` for the batch axis) and dtypes.

    Raises:
        ValueError: (before anything is written) when the encoder cannot stream under ``streaming``
            or the left context is unbounded.
    """
    check_exportable(encoder, streaming)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    enc = _frozen_copy(encoder)
    geometry = StreamGeometry.of_frontend(enc.feature_extractor, streaming.chunk_size)
    C, prime, per_call = geometry.chunk_frames, geometry.prime_samples, geometry.samples_per_call
    B = 2  # traced with two streams; the batch axis is dynamic
    start = _Start(enc, streaming)
    with torch.no_grad():
        primed = start(torch.randn(B, prime) * 0.1)
    names = [name for name, _ in flatten_state(initial_state(enc, streaming, 1))]
    new_names = ["new_" + name for name in names]
    if external_data is None:
        external_data = sum(p.numel() * p.element_size() for p in enc.parameters()) > EXTERNAL_DATA_BYTES
    trace(start, (torch.randn(B, prime) * 0.1,), outdir / "encoder_start.onnx", ["samples"], new_names, opset=opset,
          batch_axis="B")  # the front end only: small
    template = initial_state(enc, streaming, 1)
    chunk = _Chunk(enc, streaming, template)
    args = (torch.randn(B, per_call) * 0.1, torch.full((B,), per_call, dtype=torch.long), *primed)
    trace(chunk, args, outdir / "encoder.onnx", ["samples", "num_samples", *names],
          ["frames", "num_frames", *new_names], opset=opset, batch_axis="B", external_data=external_data)
    logger.info("exported the streaming encoder to %s (C=%d, %d samples per call)", outdir, C, per_call)
    return dict(chunk_frames=C, left_frames=streaming.left_context, sinks=streaming.num_sinks,
                frame_stride=geometry.stride, samples_per_call=per_call, prime_samples=prime, encoder_dim=enc.embed_dim,
                state_names=names, state_shapes=[["B", *t.shape[1:]] for t in primed],
                state_dtypes=[str(t.dtype).replace("torch.", "") for t in primed], external_data=bool(external_data))
