"""What an encoder must provide: the contract between an encoder and the code that trains, streams and exports it.

The transducer (:class:`~xtrans.models.transducer.Transducer`), the streaming encoder
(:class:`~xtrans.streaming.StreamingEncoder`) and the ONNX export (:mod:`xtrans.export.encoder`)
use an encoder only through :class:`Encoder`; :class:`~xtrans.models.wav2vec2.Wav2Vec2Encoder`
(every family xtrans has) implements it, and :func:`xtrans.models.config.build_model` is the one
place that names the class. Shape legend: ``B`` batch, ``S`` waveform samples at 16 kHz, ``T``
encoder frames (20 ms), ``D`` model dim, ``n`` frames of one chunk (``C``, or fewer at the end).

A full pass and a stream compute the same frames::

    frames, frame_lengths = encoder(waveform, lengths, streaming)          # (B, S) -> (B, T, D), (B,)

    frontend = encoder.init_frontend_state(B)                              # before the first sample
    positional, layers = encoder.init_chunk_state(B, streaming)            # before the first chunk
    h, frontend = encoder.extract_chunk(samples, frontend)                 # (B, m) -> completed frames (B, n', D)
    y, positional, layers = encoder.encode_chunk(h[:, :n], positional, layers, start, frame_lengths, streaming)

Streaming states are trees of frozen dataclasses and tuples whose leaves are tensors with the
batch axis first; :func:`xtrans.streaming.flatten_state`, ``stack_states`` and ``split_states``
handle any such tree, so the contract does not fix their classes (the wav2vec 2.0 family's are
in :mod:`xtrans.models.wav2vec2.states` and :class:`~xtrans.models.attention.AttentionCache`).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, runtime_checkable

import torch

from xtrans.masks import StreamingConfig

__all__ = ["Encoder", "FrameGeometry", "State", "check_encoder"]

State = Any
"""A streaming state: a frozen dataclass (or tuple) of states and tensors, batch axis first."""


@runtime_checkable
class FrameGeometry(Protocol):
    """How the front end cuts samples into frames: frame ``k`` reads samples
    ``[stride k, stride k + receptive_field)`` (320 and 400 for the wav2vec 2.0 CNN)."""

    @property
    def stride(self) -> int:
        """Samples between frames."""
        ...

    @property
    def receptive_field(self) -> int:
        """Samples one frame reads."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """A speech encoder that trains under a streaming mask and streams chunk by chunk with the same result.

    A :class:`typing.Protocol`, not an abstract base class: an encoder is an ``nn.Module`` of its
    own family and need not inherit from anything of ours to satisfy the contract, a type checker
    verifies the signatures statically, and ``runtime_checkable`` lets a public boundary refuse
    an object that lacks a member (:func:`check_encoder`; ``isinstance`` checks that the members
    exist, not their signatures).

    The full pass (:meth:`forward`, through ``__call__``) and the chunk path
    (:meth:`extract_chunk` then :meth:`encode_chunk`) must give the same frames under the same
    rule, and no frame may depend on audio past its chunk (docs/streaming.md).

    Attributes:
        embed_dim: ``D``, the size of an output frame.
        feature_extractor: the front end's :class:`FrameGeometry` (``stride``, ``receptive_field``
            in samples).
        training: as :attr:`torch.nn.Module.training` (streaming refuses training mode).
    """

    embed_dim: int
    feature_extractor: FrameGeometry
    training: bool

    @property
    def pos_conv_mode(self) -> str:
        """How position enters: ``full | chunk | causal | none`` (only ``full`` looks past a chunk)."""
        ...

    def __call__(self, waveform: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                 streaming: Optional[StreamingConfig] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward`, through ``nn.Module.__call__`` (hooks included)."""
        ...

    def forward(self, waveform: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                streaming: Optional[StreamingConfig] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The masked full pass: waveform (B, S) float at 16 kHz, zero-padded, ``lengths`` (B,) samples
        (None = all) -> frames (B, T, D), zero past each length, and frame lengths (B,).

        Raises ``ValueError`` (:class:`~xtrans.masks.StreamingNotSupportedError`) for a rule it cannot obey.
        """
        ...

    def check_streaming(self, streaming: Optional[StreamingConfig]) -> None:
        """Raises :class:`~xtrans.masks.StreamingNotSupportedError`, naming the option to change,
        when a part of the encoder cannot obey ``streaming``; None and full attention always pass."""
        ...

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames (B,) for ``lengths`` (B,) samples: the front end's own length rule."""
        ...

    def parameters(self, recurse: bool = True):
        """As :meth:`torch.nn.Module.parameters` (the streaming state takes their device and dtype)."""
        ...

    def extract(self, waveform: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The front end of :meth:`forward`: (B, S), (B,) -> frames (B, T, D) before anything
        mixes them in time, zero past each length, and frame lengths (B,)."""
        ...

    def init_frontend_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None) -> State:
        """The front end's state before the first sample of ``batch_size`` streams."""
        ...

    def extract_chunk(self, samples: torch.Tensor, state: State) -> Tuple[torch.Tensor, State]:
        """:meth:`extract` piece by piece: the next samples (B, m) -> the frames they complete (B, n', D), new state.

        Samples past a stream's end must be zero; frames that read them are the caller's to discard.
        """
        ...

    def init_chunk_state(self, batch_size: int, streaming: StreamingConfig, device=None,
                         dtype: Optional[torch.dtype] = None) -> Tuple[State, Tuple[State, ...]]:
        """The state of what mixes frames before the first chunk: the positional part's, and one per layer."""
        ...

    def encode_chunk(self, h: torch.Tensor, positional: State, layers: Tuple[State, ...], start: torch.Tensor,
                     lengths: torch.Tensor, streaming: StreamingConfig
                     ) -> Tuple[torch.Tensor, State, Tuple[State, ...]]:
        """The rest of :meth:`forward` for one chunk: frames ``h`` (B, n, D) of :meth:`extract_chunk`,
        frames ``start`` (B,) .. ``start + n - 1`` of each stream, ``lengths`` (B,) valid frames
        (frames at or past it zero in ``h``) -> encoded frames (B, n, D), zero past each length,
        and the new positional and layer states."""
        ...


def check_encoder(encoder: object, name: str = "encoder") -> None:
    """Raises TypeError, naming ``name`` and the missing members, unless ``encoder`` satisfies :class:`Encoder`."""
    if isinstance(encoder, Encoder):
        return
    missing = [m for m in _MEMBERS if not hasattr(encoder, m)]
    raise TypeError(f"{name}: expected an encoder (xtrans.models.encoder.Encoder, e.g. a Wav2Vec2Encoder), "
                    f"found {type(encoder).__name__} without {', '.join(missing)}")


_MEMBERS = sorted({*Encoder.__annotations__, *(k for k in vars(Encoder) if not k.startswith("_"))}
                  | {"__call__"})
"""The members :class:`Encoder` asks for, for messages."""
