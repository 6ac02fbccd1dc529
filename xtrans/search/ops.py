"""A PyTorch transducer's prediction network and joiner as the array ops of the search core.

:mod:`xtrans.search_core` holds the greedy and modified beam searches, written once in numpy;
this module gives them a :class:`~xtrans.models.transducer.Transducer` as a
:class:`~xtrans.search_core.ops.TransducerOps`:

- the prediction network's state for ``N`` hypotheses (:class:`~xtrans.models.predictor.StatelessState`
  or :class:`~xtrans.models.predictor.LSTMState`) and its output projected by the joiner
  (``p_u`` in the joiner space) are one :class:`TorchPrediction`, on the model's device;
- the encoder frames of a chunk are projected by the joiner once (``joiner.encoder_proj``);
- ``log_softmax`` of the joiner's logits is computed in float32 on the device and handed to the
  search on the host.

:func:`select_state` and :func:`where_state` reorder and blend prediction-network states along
their batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from xtrans.models.predictor import LSTMState, StatelessState

PredictorState = Union[StatelessState, LSTMState]


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


def initial_prediction(model, batch_size: int, device) -> Tuple[PredictorState, torch.Tensor]:
    """The prediction network's start state for ``batch_size`` hypotheses and its joiner
    projection (B, J): what every search begins from (nothing emitted yet)."""
    state = model.predictor.init_state(batch_size, device)
    return state, model.joiner.predictor_proj(model.predictor.output(state))


@dataclass(frozen=True)
class TorchPrediction:
    """The prediction of ``N`` hypotheses (a :class:`~xtrans.search_core.ops.Prediction`).

    Attributes:
        state: the prediction network's state (batch ``N``).
        proj: (N, J) its output projected by the joiner.
    """

    state: PredictorState
    proj: torch.Tensor

    def __len__(self) -> int:
        return self.proj.shape[0]

    def take(self, rows: np.ndarray) -> "TorchPrediction":
        index = torch.as_tensor(rows, dtype=torch.long, device=self.proj.device)
        return TorchPrediction(select_state(self.state, index), self.proj.index_select(0, index))

    def head(self, n: int) -> "TorchPrediction":
        """The first ``n`` hypotheses (views, no copy)."""
        dim = _batch_dim(self.state)
        return TorchPrediction(type(self.state)(*(t.narrow(dim, 0, n) for t in self.state)), self.proj[:n])

    @classmethod
    def concat(cls, parts: Sequence["TorchPrediction"]) -> "TorchPrediction":
        dim = _batch_dim(parts[0].state)
        state = type(parts[0].state)(*(torch.cat(column, dim=dim) for column in zip(*(p.state for p in parts))))
        return cls(state, torch.cat([p.proj for p in parts]))


class TorchTransducerOps:
    """A :class:`~xtrans.models.transducer.Transducer`'s prediction network and joiner as
    :class:`~xtrans.search_core.ops.TransducerOps` (module docstring).

    Args:
        model: the transducer (``.predictor``, ``.joiner``, ``.blank``).
    """

    def __init__(self, model):
        self.model = model
        self.blank: int = model.blank

    @torch.no_grad()
    def start(self, n: int, device: Any = None) -> TorchPrediction:
        if device is None:
            device = next(self.model.parameters()).device
        return TorchPrediction(*initial_prediction(self.model, n, device))

    @torch.no_grad()
    def frames(self, enc: torch.Tensor) -> torch.Tensor:
        return self.model.joiner.encoder_proj(enc)  # (B, T, J)

    @torch.no_grad()
    def log_probs(self, frames: torch.Tensor, t: int, streams: np.ndarray, prediction: TorchPrediction,
                  rows: np.ndarray, size: Optional[int] = None) -> np.ndarray:
        # the joiner runs on `size` rows (default: one per hypothesis) whichever of them are scored
        # (the rest repeat the first): a row's result then depends only on that number, not on the
        # other rows (PyTorch's CPU kernels round by the shape; search_core.beam's docstring)
        device = frames.device
        n = len(streams)
        pad = max((len(prediction) if size is None else size) - n, 0) if n else 0
        if pad:
            streams = np.concatenate([streams, np.full(pad, streams[0])])
            rows = np.concatenate([rows, np.full(pad, rows[0])])
        enc = frames[:, t].index_select(0, torch.as_tensor(streams, dtype=torch.long, device=device))
        pred = prediction.proj.index_select(0, torch.as_tensor(rows, dtype=torch.long, device=device))
        logits = self.model.joiner(enc, pred, projected=True)[:n]  # (n, V)
        return F.log_softmax(logits.float(), dim=-1).cpu().numpy()

    @torch.no_grad()
    def extend(self, prediction: TorchPrediction, rows: np.ndarray, tokens: np.ndarray,
               size: Optional[int] = None) -> TorchPrediction:
        # every hypothesis steps (blank where none is emitted) and the others keep their state:
        # one batch of the same size at every call (`size` rows, filled with copies of the first),
        # whichever hypotheses emit
        n = len(prediction)
        if size is not None and size > n:
            filled = prediction.take(np.concatenate([np.arange(n), np.zeros(size - n, dtype=np.int64)]))
            return self.extend(filled, rows, tokens).head(n)
        device = prediction.proj.device
        index = torch.as_tensor(rows, dtype=torch.long, device=device)
        symbols = torch.full((len(prediction),), self.blank, dtype=torch.long, device=device)
        symbols[index] = torch.as_tensor(tokens, dtype=torch.long, device=device)
        emit = torch.zeros(len(prediction), dtype=torch.bool, device=device)
        emit[index] = True
        out, stepped = self.model.predictor.step(symbols, prediction.state)
        return TorchPrediction(where_state(emit, stepped, prediction.state),
                               torch.where(emit[:, None], self.model.joiner.predictor_proj(out), prediction.proj))

    def to_numpy(self, values: Any) -> np.ndarray:
        return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
