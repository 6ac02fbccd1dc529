"""The streaming encoder's state, as named tensor lists, and batches of streams joined and split.

Every streaming state is a tree of frozen dataclasses and tuples whose leaves are tensors with
the stream (batch) axis first, plus a few Python counters. :func:`flatten_state` lists the
tensors under stable dotted names (what an exported graph takes as inputs, e.g.
``state.layers.0.left_keys``); :func:`unflatten_state` puts a list back into a template's tree.
:func:`stack_states` joins the states of streams into one batch and :func:`split_states` takes
a batch apart, so that a server can add and drop streams between chunks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch

from xtrans.models.attention import AttentionCache
from xtrans.models.wav2vec2.states import FrontendState, PositionalConvState


@dataclass(frozen=True)
class EncoderState:
    """Everything the streaming encoder carries between calls (created by ``init_state``).

    Attributes:
        frontend: waveform-normalisation sums and the CNN layers' carry-over
            (:class:`~xtrans.models.wav2vec2.states.FrontendState`).
        pending: (B, T', D) projected CNN frames not yet emitted (``T' < C`` while a stream is open).
        positional: the positional convolution's history, the ``P = pos_conv.history`` projected
            frames before ``pending`` (zeros before the stream starts).
        layers: one :class:`~xtrans.models.attention.AttentionCache` per transformer layer.
        frames: (B,) long, frames emitted so far per stream, i.e. the first frame of its next chunk.
        samples: (B,) long, samples received so far per stream.
        stream_ends: per stream, ``None`` while it is open, its total samples once it has ended.

    Streams run in a batch need not have started together (:func:`~xtrans.streaming.stack_states`):
    every counter is per stream; only the shapes (pending frames, CNN carries) must agree.
    """

    frontend: FrontendState
    pending: torch.Tensor
    positional: PositionalConvState
    layers: Tuple[AttentionCache, ...]
    frames: torch.Tensor
    samples: torch.Tensor
    stream_ends: Tuple[Optional[int], ...]

    @property
    def batch_size(self) -> int:
        return self.pending.shape[0]

    @property
    def pos_history(self) -> torch.Tensor:
        """(B, P, D) the positional convolution's history."""
        return self.positional.history

    @property
    def num_frames(self) -> int:
        """Frames emitted so far by the stream furthest along (all of a lockstep batch)."""
        return int(self.frames.max())

    @property
    def num_samples(self) -> int:
        """Samples received by the stream furthest along (every open stream of a lockstep batch)."""
        return int(self.samples.max())

    @property
    def cnn_frames(self) -> torch.Tensor:
        """(B,) long: frames the CNN has produced so far per stream (emitted + pending)."""
        return self.frames + self.pending.shape[1]

    @property
    def finished(self) -> bool:
        """True when every stream has ended (after ``finalize``, nothing is left to emit)."""
        return all(end is not None for end in self.stream_ends)

    def tensors(self) -> List[torch.Tensor]:
        """Every tensor of the state (for sizes and device moves), in :func:`flatten_state` order."""
        return [t for _, t in flatten_state(self)]

    def num_bytes(self) -> int:
        """Memory held by the state's tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors())



def _children(value: Any) -> Iterator[Tuple[str, Any]]:
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield f.name, getattr(value, f.name)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield str(i), item


def flatten_state(state: Any, prefix: str = "state") -> List[Tuple[str, torch.Tensor]]:
    """Every tensor of a state tree with its dotted name, depth first in field order.

    Non-tensor leaves (counters, ``None``) are left out: they are the same for every call of
    a fixed-shape export and live in the template given to :func:`unflatten_state`.
    """
    if isinstance(state, torch.Tensor):
        return [(prefix, state)]
    out: List[Tuple[str, torch.Tensor]] = []
    for name, child in _children(state):
        out += flatten_state(child, f"{prefix}.{name}")
    return out


def _rebuild(template: Any, leaf: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The tree of ``template`` with every tensor ``t`` replaced by ``leaf(t)`` (in flatten order)."""
    if isinstance(template, torch.Tensor):
        return leaf(template)
    if dataclasses.is_dataclass(template):
        return dataclasses.replace(template, **{name: _rebuild(child, leaf) for name, child in _children(template)})
    if isinstance(template, tuple) and not hasattr(template, "_fields"):
        return tuple(_rebuild(child, leaf) for child in template)
    return template


def unflatten_state(template: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """The tree of ``template`` with its tensors replaced, in :func:`flatten_state` order, by ``tensors``.

    Raises:
        ValueError: when the number of tensors differs from the template's.
    """
    expected = len(flatten_state(template))
    if len(tensors) != expected:
        raise ValueError(f"tensors: expected {expected} tensors for this state, found {len(tensors)}")
    it = iter(tensors)
    return _rebuild(template, lambda _: next(it))


def split_states(state: EncoderState) -> List[EncoderState]:
    """One state per stream of a batched :class:`EncoderState` (each with batch size 1)."""
    out = []
    for b in range(state.batch_size):
        one = _rebuild(state, lambda t, b=b: t[b:b + 1])
        out.append(dataclasses.replace(one, stream_ends=(state.stream_ends[b],)))
    return out


def stack_states(states: Sequence[EncoderState]) -> EncoderState:
    """Joins the states of streams (each any batch size) into one batch, in order.

    Streams may be at different points (every counter is per stream), but their tensors must
    have the same shapes: the same number of pending frames and of carried CNN positions, and,
    with an unbounded left context, the same number of cached frames. Feeding every stream
    ``320 C`` samples per call after its first 80 keeps them so.

    Raises:
        ValueError: on an empty list, or states whose tensors differ in shape (naming the tensor).
    """
    if not states:
        raise ValueError("states: expected at least one state, found none")
    first = flatten_state(states[0])
    for i, other in enumerate(states[1:], 1):
        for (name, t), (_, u) in zip(first, flatten_state(other)):
            if t.shape[1:] != u.shape[1:]:
                raise ValueError(f"states[{i}]: {name}: expected shape (B, {', '.join(map(str, t.shape[1:]))}) "
                                 f"like states[0], found {tuple(u.shape)}; streams of one batch need equal "
                                 "pending frames and CNN carries (feed whole chunks of 320 C samples)")
    columns = list(zip(*(flatten_state(s) for s in states)))
    it = iter([torch.cat([t for _, t in column], dim=0) for column in columns])
    stacked = _rebuild(states[0], lambda _: next(it))
    return dataclasses.replace(stacked, stream_ends=tuple(e for s in states for e in s.stream_ends))
