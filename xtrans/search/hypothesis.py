"""Search results and the batch bookkeeping of prediction-network states.

A :class:`Hypothesis` is what every search returns: the emitted tokens (no blanks), the
encoder frame at which each was emitted and the log-probability the search assigns to it
(each search documents exactly which path probability that is).

Searches keep the prediction network's state for a whole batch of hypotheses in one value
(:class:`~xtrans.models.predictor.StatelessState` or
:class:`~xtrans.models.predictor.LSTMState`); :func:`select_state` and :func:`where_state`
reorder and blend those states along their batch dimension. :func:`check_chunk` validates the
chunk of encoder frames that both searches' ``step`` consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple, Union

import torch

from xtrans.frames import FRAME_MS
from xtrans.models.predictor import LSTMState, StatelessState

PredictorState = Union[StatelessState, LSTMState]


@dataclass
class Hypothesis:
    """One decoding result.

    Attributes:
        tokens: emitted token ids, blank excluded, in order.
        timestamps: the encoder frame (20 ms) at which each token was emitted, same length
            as ``tokens``; frames count from the start of the utterance / stream.
        score: natural-log probability of the result's path(s) under the model; see the
            search that produced it for the precise definition.
    """

    tokens: List[int] = field(default_factory=list)
    timestamps: List[int] = field(default_factory=list)
    score: float = 0.0

    def times_s(self) -> List[float]:
        """Token emission times in seconds (frame index x 20 ms)."""
        return [t * FRAME_MS / 1000.0 for t in self.timestamps]


def initial_prediction(model, batch_size: int, device) -> Tuple[PredictorState, torch.Tensor]:
    """The prediction network's start state for ``batch_size`` hypotheses and its joiner
    projection (B, J): what every search begins from (nothing emitted yet)."""
    state = model.predictor.init_state(batch_size, device)
    return state, model.joiner.predictor_proj(model.predictor.output(state))


def check_chunk(enc: torch.Tensor, lengths: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
    """Validates an encoder chunk (B, T, D) and its lengths (B,); returns the lengths (default T).

    Raises:
        ValueError: on a wrong rank, batch size or length.
    """
    if enc.dim() != 3:
        raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {tuple(enc.shape)}")
    if enc.shape[0] != batch_size:
        raise ValueError(f"enc: expected a batch of {batch_size} streams (as the state), found {enc.shape[0]}")
    if lengths is None:
        return torch.full((batch_size,), enc.shape[1], dtype=torch.long, device=enc.device)
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths: expected shape ({batch_size},), found {tuple(lengths.shape)}")
    if batch_size and (int(lengths.max()) > enc.shape[1] or int(lengths.min()) < 0):
        raise ValueError(f"lengths: expected values in [0, {enc.shape[1]}], found {lengths.tolist()}")
    return lengths.to(device=enc.device, dtype=torch.long)


def _batch_dim(state: NamedTuple) -> int:
    """Batch dimension of a predictor state's tensors: 0 for stateless (B, context), 1 for LSTM (L, B, H)."""
    if isinstance(state, LSTMState):
        return 1
    if isinstance(state, StatelessState):
        return 0
    raise TypeError(f"predictor state: expected StatelessState or LSTMState, found {type(state).__name__}")


def select_state(state: PredictorState, index: torch.Tensor) -> PredictorState:
    """The states of batch entries ``index`` (N,) long, in that order (entries may repeat)."""
    dim = _batch_dim(state)
    return type(state)(*(t.index_select(dim, index) for t in state))


def where_state(mask: torch.Tensor, new: PredictorState, old: PredictorState) -> PredictorState:
    """Entry ``b`` of ``new`` where ``mask[b]`` (B,) bool is True, else of ``old``."""
    dim = _batch_dim(new)
    out = []
    for n, o in zip(new, old):
        shape = [1] * n.dim()
        shape[dim] = -1
        out.append(torch.where(mask.view(shape), n, o))
    return type(new)(*out)
