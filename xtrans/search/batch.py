"""Search states of separate streams joined into one batch and split back.

A server decodes many streams with one batched search step: between steps, streams join and
leave, so their :class:`~xtrans.search.greedy.GreedyState` / :class:`~xtrans.search.beam.BeamState`
values are stacked before a step and split after it, like the encoder's states
(:func:`xtrans.streaming.stack_states`)::

    state = stack_search_states([s0, s1, s2])          # 3 streams, each a batch of any size
    state = search.step(frames (3, T, D), state, counts)
    s0, s1, s2 = split_search_states(state)

Both searches treat the streams of a batch independently (greedy search per stream; modified
beam search keeps and merges hypotheses per stream), so a stream's result does not depend on
the batch it ran in. Stacking and splitting are exact inverses.
"""

from __future__ import annotations

from typing import List, Sequence, TypeVar, Union

import torch

from xtrans.models.predictor import LSTMState
from xtrans.search.beam import BeamState
from xtrans.search.greedy import GreedyState
from xtrans.search.hypothesis import PredictorState

SearchState = TypeVar("SearchState", GreedyState, BeamState)


def _predictor_dim(state: PredictorState) -> int:
    """Batch axis of a prediction-network state: 1 for an LSTM's (L, B, H), else 0."""
    return 1 if isinstance(state, LSTMState) else 0


def _cat_predictor(states: Sequence[PredictorState]) -> PredictorState:
    dim = _predictor_dim(states[0])
    return type(states[0])(*(torch.cat(column, dim=dim) for column in zip(*states)))


def _slice_predictor(state: PredictorState, rows: slice) -> PredictorState:
    dim = _predictor_dim(state)
    return type(state)(*(t.narrow(dim, rows.start, rows.stop - rows.start) for t in state))


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
        return GreedyState(
            predictor_state=_cat_predictor([s.predictor_state for s in states]),
            predictor_proj=torch.cat([s.predictor_proj for s in states]),
            tokens=[list(t) for s in states for t in s.tokens],
            timestamps=[list(t) for s in states for t in s.timestamps],
            scores=torch.cat([s.scores for s in states]),
            num_frames=torch.cat([s.num_frames for s in states]))
    offsets, total = [], 0
    for s in states:
        offsets.append(total)
        total += s.batch_size
    return BeamState(
        stream=torch.cat([s.stream + offset for s, offset in zip(states, offsets)]),
        tokens=[t for s in states for t in s.tokens],
        timestamps=[t for s in states for t in s.timestamps],
        scores=torch.cat([s.scores for s in states]),
        predictor_state=_cat_predictor([s.predictor_state for s in states]),
        predictor_proj=torch.cat([s.predictor_proj for s in states]),
        num_frames=torch.cat([s.num_frames for s in states]))


def split_search_states(state: Union[GreedyState, BeamState]) -> List[Union[GreedyState, BeamState]]:
    """One state per stream of a batched search state (each with batch size 1).

    Raises:
        TypeError: when ``state`` is not a :class:`GreedyState` or :class:`BeamState`.
    """
    if isinstance(state, GreedyState):
        return [GreedyState(predictor_state=_slice_predictor(state.predictor_state, slice(b, b + 1)),
                            predictor_proj=state.predictor_proj[b:b + 1], tokens=[list(state.tokens[b])],
                            timestamps=[list(state.timestamps[b])], scores=state.scores[b:b + 1],
                            num_frames=state.num_frames[b:b + 1])
                for b in range(state.batch_size)]
    if not isinstance(state, BeamState):
        raise TypeError(f"state: expected a GreedyState or BeamState, found {type(state).__name__}")
    streams = state.stream.tolist()
    assert streams == sorted(streams), "BeamState rows are grouped by stream"
    out: List[Union[GreedyState, BeamState]] = []
    start = 0
    for b in range(state.batch_size):
        end = start
        while end < len(streams) and streams[end] == b:
            end += 1
        rows = slice(start, end)
        out.append(BeamState(stream=torch.zeros(end - start, dtype=torch.long, device=state.stream.device),
                             tokens=state.tokens[rows], timestamps=state.timestamps[rows],
                             scores=state.scores[rows],
                             predictor_state=_slice_predictor(state.predictor_state, rows),
                             predictor_proj=state.predictor_proj[rows], num_frames=state.num_frames[b:b + 1]))
        start = end
    return out
