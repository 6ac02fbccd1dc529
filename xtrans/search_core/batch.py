"""Search states of separate streams joined into one batch and split back — for every runtime.

A server decodes many streams with one batched search step: between steps, streams join and
leave, so their :class:`~xtrans.search_core.greedy.GreedyState` /
:class:`~xtrans.search_core.beam.BeamState` values are stacked before a step and split after it,
like the encoder's states::

    state = stack_search_states([s0, s1, s2])          # 3 streams, each a batch of any size
    state = search.step(frames (3, T, D), state, counts)
    s0, s1, s2 = split_search_states(state)

Both searches treat the streams of a batch independently (greedy search per stream; modified
beam search keeps, merges and scores hypotheses per stream, each stream with its own scorer), so
a stream's result does not depend on the batch it ran in. Stacking and splitting are exact
inverses. The prediction network's part is joined and split by the runtime's
:class:`~xtrans.search_core.ops.Prediction` (``concat``, ``take``), so these functions serve the
PyTorch and the onnxruntime searches alike.
"""

from __future__ import annotations

from typing import List, Sequence, TypeVar, Union

import numpy as np

from xtrans.search_core.beam import BeamState
from xtrans.search_core.greedy import GreedyState

SearchState = TypeVar("SearchState", GreedyState, BeamState)


def _concat(predictions):
    return type(predictions[0]).concat(predictions)


def stack_search_states(states: Sequence[SearchState]) -> SearchState:
    """Joins the search states of streams (each any batch size) into one batch, in order.

    Args:
        states: all :class:`GreedyState` or all :class:`BeamState`, of the same search.

    Raises:
        ValueError: on an empty list.
        TypeError: on a mix of state types, or a type that is not a search state.
    """
    if not states:
        raise ValueError("states: expected at least one search state, found none")
    kind = type(states[0])
    if kind not in (GreedyState, BeamState):
        raise TypeError(f"states: expected GreedyState or BeamState values, found {kind.__name__}")
    if any(type(s) is not kind for s in states):
        found = sorted({type(s).__name__ for s in states})
        raise TypeError(f"states: expected states of one search, found a mix of {', '.join(found)}")
    if kind is GreedyState:
        return GreedyState(prediction=_concat([s.prediction for s in states]),
                           tokens=[list(t) for s in states for t in s.tokens],
                           timestamps=[list(t) for s in states for t in s.timestamps],
                           scores=np.concatenate([s.scores for s in states]),
                           num_frames=np.concatenate([s.num_frames for s in states]))
    offsets = np.cumsum([0] + [s.batch_size for s in states[:-1]])
    return BeamState(stream=np.concatenate([s.stream + offset for s, offset in zip(states, offsets)]),
                     tokens=[t for s in states for t in s.tokens],
                     timestamps=[t for s in states for t in s.timestamps],
                     scores=np.concatenate([s.scores for s in states]),
                     prediction=_concat([s.prediction for s in states]),
                     scorers=[x for s in states for x in s.scorers],
                     scorer_states=[x for s in states for x in s.scorer_states],
                     num_frames=np.concatenate([s.num_frames for s in states]),
                     plain=np.concatenate([s.plain for s in states]))


def split_search_states(state: Union[GreedyState, BeamState]) -> List[Union[GreedyState, BeamState]]:
    """One state per stream of a batched search state (each with batch size 1).

    Raises:
        TypeError: when ``state`` is not a :class:`GreedyState` or :class:`BeamState`.
    """
    if isinstance(state, GreedyState):
        return [GreedyState(prediction=state.prediction.take(np.array([b], dtype=np.int64)),
                            tokens=[list(state.tokens[b])], timestamps=[list(state.timestamps[b])],
                            scores=state.scores[b:b + 1], num_frames=state.num_frames[b:b + 1])
                for b in range(state.batch_size)]
    if not isinstance(state, BeamState):
        raise TypeError(f"state: expected a GreedyState or BeamState, found {type(state).__name__}")
    assert (np.diff(state.stream) >= 0).all(), "BeamState rows are grouped by stream"
    bounds = np.searchsorted(state.stream, np.arange(state.batch_size + 1))
    out: List[Union[GreedyState, BeamState]] = []
    for b in range(state.batch_size):
        start, end = int(bounds[b]), int(bounds[b + 1])
        out.append(BeamState(stream=np.zeros(end - start, dtype=np.int64), tokens=state.tokens[start:end],
                             timestamps=state.timestamps[start:end], scores=state.scores[start:end],
                             prediction=state.prediction.take(np.arange(start, end, dtype=np.int64)),
                             scorers=state.scorers[b:b + 1], scorer_states=state.scorer_states[start:end],
                             num_frames=state.num_frames[b:b + 1], plain=state.plain[start:end]))
    return out
