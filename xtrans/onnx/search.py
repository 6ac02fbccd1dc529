"""Greedy and modified beam search on an exported prediction network and joiner (numpy, no torch).

The searches are the search core's (:mod:`xtrans.search_core`: the rules, the scores, the
scorer hook for hotwords and LMs, the stacking of states across streams), the very code the
PyTorch recognizer runs (:mod:`xtrans.search`); this module gives them an export's
``predictor.onnx`` and ``joiner.onnx`` as :class:`OnnxTransducerOps`. On the same encoder frames
both runtimes return the same tokens, timestamps and (to float tolerance) scores.

::

    search = GreedySearch(decoder, max_symbols=3)        # or ModifiedBeamSearch(decoder, beam=4)
    state = search.init_state(batch_size)                 # beam: init_state(B, scorer=...)
    state = search.step(enc (B, T, D), state, lengths (B,))   # per chunk
    hyps = search.results(state)

``decoder`` is anything with ``blank``, ``context_size``, ``predict(context (N, K) int64) ->
(N, D_pred)`` and ``join(encoder_out (N, D), predictor_out (N, D_pred)) -> logits (N, V)``
(:class:`xtrans.onnx.recognizer.OnnxDecoder` runs ``predictor.onnx`` and ``joiner.onnx``).
Only the stateless prediction network is supported: its state is the last ``K`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from xtrans.search_core import beam as core_beam
from xtrans.search_core import greedy as core_greedy
from xtrans.search_core.beam import BeamState
from xtrans.search_core.greedy import GreedyState
from xtrans.search_core.ops import Hypothesis

__all__ = ["BeamState", "Decoder", "GreedySearch", "GreedyState", "Hypothesis", "ModifiedBeamSearch",
           "OnnxPrediction", "OnnxTransducerOps", "log_softmax", "push_tokens"]


class Decoder(Protocol):
    """The prediction network and joiner a search runs on."""

    blank: int
    context_size: int

    def predict(self, context: np.ndarray) -> np.ndarray:
        """(N, K) int64 last tokens (blank-padded at the start) -> (N, D_pred) float32."""

    def join(self, encoder_out: np.ndarray, predictor_out: np.ndarray) -> np.ndarray:
        """(N, D) float32, (N, D_pred) float32 -> logits (N, V) float32."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log_softmax`` over the last axis in float32 (as the PyTorch runtime computes it)."""
    x = logits.astype(np.float32, copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def push_tokens(context: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Appends ``tokens`` (N,) to the stateless predictor's contexts (N, K), dropping the oldest."""
    return np.concatenate([context[:, 1:], tokens[:, None].astype(context.dtype)], axis=1)


@dataclass(frozen=True)
class OnnxPrediction:
    """The prediction of ``N`` hypotheses (a :class:`~xtrans.search_core.ops.Prediction`).

    Attributes:
        context: (N, K) int64, each hypothesis' last ``K`` tokens (the stateless predictor's state).
        out: (N, D_pred) float32, the prediction for that context.
    """

    context: np.ndarray
    out: np.ndarray

    def __len__(self) -> int:
        return self.context.shape[0]

    def take(self, rows: np.ndarray) -> "OnnxPrediction":
        return OnnxPrediction(self.context[rows], self.out[rows])

    @classmethod
    def concat(cls, parts: Sequence["OnnxPrediction"]) -> "OnnxPrediction":
        return cls(np.concatenate([p.context for p in parts]), np.concatenate([p.out for p in parts]))


class OnnxTransducerOps:
    """A :class:`Decoder` as the :class:`~xtrans.search_core.ops.TransducerOps` of the search core."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        self.blank: int = decoder.blank

    def start(self, n: int, device: Any = None) -> OnnxPrediction:
        context = np.full((n, self.decoder.context_size), self.blank, dtype=np.int64)
        return OnnxPrediction(context, self.decoder.predict(context))

    def frames(self, enc: np.ndarray) -> np.ndarray:
        return np.asarray(enc)

    # `size` is ignored: on the one intra-op thread that exact serving needs, onnxruntime computes a
    # row alike whatever the other rows of the call (xtrans.serve.onnx_backend)
    def log_probs(self, frames: np.ndarray, t: int, streams: np.ndarray, prediction: OnnxPrediction,
                  rows: np.ndarray, size: Optional[int] = None) -> np.ndarray:
        return log_softmax(self.decoder.join(frames[streams, t], prediction.out[rows]))

    def extend(self, prediction: OnnxPrediction, rows: np.ndarray, tokens: np.ndarray,
               size: Optional[int] = None) -> OnnxPrediction:
        context, out = prediction.context.copy(), prediction.out.copy()
        context[rows] = push_tokens(context[rows], tokens)
        out[rows] = self.decoder.predict(context[rows])
        return OnnxPrediction(context, out)

    def to_numpy(self, values: Any) -> np.ndarray:
        return np.asarray(values)


class GreedySearch(core_greedy.GreedySearch):
    """Greedy search (:class:`xtrans.search_core.greedy.GreedySearch`) on a :class:`Decoder`.

    Args:
        decoder: the prediction network and joiner.
        max_symbols: most tokens per frame (>= 1).
    """

    def __init__(self, decoder: Decoder, max_symbols: int = 3):
        super().__init__(OnnxTransducerOps(decoder), max_symbols)
        self.decoder = decoder


class ModifiedBeamSearch(core_beam.ModifiedBeamSearch):
    """Modified beam search (:class:`xtrans.search_core.beam.ModifiedBeamSearch`) on a :class:`Decoder`.

    Args:
        decoder: the prediction network and joiner.
        beam: hypotheses kept per frame (>= 1).
        merge: merge hypotheses with equal tokens by log-add.
    """

    def __init__(self, decoder: Decoder, beam: int = 4, merge: bool = True):
        super().__init__(OnnxTransducerOps(decoder), beam, merge)
        self.decoder = decoder
