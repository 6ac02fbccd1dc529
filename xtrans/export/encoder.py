"""ONNX export of the streaming encoder: one chunk per call, every cache an explicit input.

The graphs are the encoder's own streaming modules (:meth:`Wav2Vec2Encoder.extract_chunk`,
:meth:`Wav2Vec2Encoder.encode_chunk`) traced at fixed shapes; nothing here recomputes the
model. A stream of samples ``s`` runs as (``C`` chunk frames, ``P = 80`` prime samples)::

    state = encoder_start(s[0:80])                                # the CNN's carries after 80 samples
    frames_k, n_k, state = encoder(s[80 + 320 C k : 80 + 320 C (k+1)], 320 C, state)   # k = 0, 1, ...
    frames, n, state = encoder(last r samples zero-padded, r, state)   # only when r >= 320

Why the prime call: frame ``k`` reads samples ``[320k, 320k + 400)``, so chunk ``k`` is complete
after ``320 C (k + 1) + 80`` samples. Once the first 80 samples are in, every further ``320 C``
samples complete exactly one chunk and every carried tensor keeps its shape (the CNN's carries
are periodic in 320 samples), which is what a fixed-shape graph needs. ``encoder_start`` is the
same front end run on those 80 samples from the initial state.

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
import inspect
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from xtrans.masks import StreamingConfig
from xtrans.models.attention import AttentionCache
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
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


def check_exportable(encoder: Wav2Vec2Encoder, streaming: StreamingConfig) -> None:
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

    def __init__(self, encoder: Wav2Vec2Encoder, streaming: StreamingConfig):
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

    def __init__(self, encoder: Wav2Vec2Encoder, streaming: StreamingConfig, template: ExportState):
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


def initial_state(encoder: Wav2Vec2Encoder, streaming: StreamingConfig, batch_size: int, device=None
                  ) -> ExportState:
    """The :class:`ExportState` before the first sample (float32 caches)."""
    positional, layers = encoder.init_chunk_state(batch_size, streaming, device, torch.float32)
    zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
    return ExportState(frontend=encoder.init_frontend_state(batch_size, device, torch.float32),
                       positional=positional, layers=layers, frames=zeros, samples=zeros.clone())


def prime_samples(encoder: Wav2Vec2Encoder) -> int:
    """Samples before the first chunk call: receptive field - stride (80 for XLSR)."""
    fe = encoder.feature_extractor
    return fe.receptive_field - fe.stride


def _frozen_copy(encoder: Wav2Vec2Encoder) -> Wav2Vec2Encoder:
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


def _torch_export(module: nn.Module, args: tuple, path: Path, inputs: Sequence[str], outputs: Sequence[str],
                  opset: int, external_data: bool) -> None:
    """Traces ``module`` to ``path``; with ``external_data`` its weights go to ``<name>.data`` beside it.

    A graph over 2 GB is written by the exporter as one file per weight; it is traced into a
    temporary folder and saved again with every weight in the one ``.data`` file.
    """
    kwargs: Dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter traces the fixed-shape graph directly
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        target = Path(tmp) / path.name if external_data else path
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation of the TorchScript exporter, tracer notes on shapes
            torch.onnx.export(module, args, str(target), input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes={name: {0: "B"} for name in (*inputs, *outputs)},
                              opset_version=opset, do_constant_folding=True, **kwargs)
        if external_data:
            import onnx

            proto = onnx.load(str(target))  # with the weights, wherever the exporter put them
            onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)


def export_encoder(encoder: Wav2Vec2Encoder, streaming: StreamingConfig, outdir: PathLike,
                   opset: int = 17, external_data: Optional[bool] = None) -> Dict[str, Any]:
    """Writes ``encoder_start.onnx`` and ``encoder.onnx`` to ``outdir``.

    ``external_data`` (default: when the weights exceed :data:`EXTERNAL_DATA_BYTES`, e.g.
    XLS-R 1B) stores ``encoder.onnx``'s weights in ``encoder.onnx.data`` beside it.

    Returns:
        the encoder's part of ``config.json``: chunk/left/sinks, samples per call, prime
        samples, encoder dim, and the state names, shapes (``"B"`` for the batch axis) and dtypes.

    Raises:
        ValueError: (before anything is written) when the encoder cannot stream under ``streaming``
            or the left context is unbounded.
    """
    check_exportable(encoder, streaming)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    enc = _frozen_copy(encoder)
    C, prime = streaming.chunk_size, prime_samples(enc)
    per_call = C * enc.feature_extractor.stride
    B = 2  # traced with two streams; the batch axis is dynamic
    start = _Start(enc, streaming)
    with torch.no_grad():
        primed = start(torch.randn(B, prime) * 0.1)
    names = [name for name, _ in flatten_state(initial_state(enc, streaming, 1))]
    new_names = ["new_" + name for name in names]
    if external_data is None:
        external_data = sum(p.numel() * p.element_size() for p in enc.parameters()) > EXTERNAL_DATA_BYTES
    _torch_export(start, (torch.randn(B, prime) * 0.1,), outdir / "encoder_start.onnx", ["samples"], new_names, opset,
                  external_data=False)  # the front end only: small
    template = initial_state(enc, streaming, 1)
    chunk = _Chunk(enc, streaming, template)
    args = (torch.randn(B, per_call) * 0.1, torch.full((B,), per_call, dtype=torch.long), *primed)
    _torch_export(chunk, args, outdir / "encoder.onnx", ["samples", "num_samples", *names],
                  ["frames", "num_frames", *new_names], opset, external_data)
    logger.info("exported the streaming encoder to %s (C=%d, %d samples per call)", outdir, C, per_call)
    return dict(chunk_frames=C, left_frames=streaming.left_context, sinks=streaming.num_sinks,
                samples_per_call=per_call, prime_samples=prime, encoder_dim=enc.embed_dim,
                state_names=names, state_shapes=[["B", *t.shape[1:]] for t in primed],
                state_dtypes=[str(t.dtype).replace("torch.", "") for t in primed], external_data=bool(external_data))
