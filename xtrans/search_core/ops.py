"""What a search runs on: one runtime's prediction network and joiner, behind a few array ops.

The searches of :mod:`xtrans.search_core` are written once. What differs between the PyTorch
runtime (:mod:`xtrans.search`) and the onnxruntime + numpy one (:mod:`xtrans.onnx.search`) is
how the prediction network is stepped, how the joiner is called and where their arrays live; a
runtime provides them as a :class:`TransducerOps`. Everything else — token sequences, scores,
beams, merging, the scorer hook (:mod:`xtrans.search_core.scorer`) — is numpy and Python, the
same code for both, so both give the same tokens on the same encoder frames.

The prediction network's state for ``N`` hypotheses, together with its output (projected into
the joiner space where the runtime does that once per step), is one :class:`Prediction` value.
Its rows are taken with :meth:`Prediction.take` and values of several batches are joined with
:meth:`Prediction.concat`, so search states stack and split per stream without knowing the
runtime (:mod:`xtrans.search_core.batch`).

This module, like the whole package, imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Protocol, Sequence

import numpy as np

from xtrans.frames import FRAME_MS


@dataclass
class Hypothesis:
    """One decoding result.

    Attributes:
        tokens: emitted token ids, blank excluded, in order.
        timestamps: the encoder frame (20 ms) at which each token was emitted, same length
            as ``tokens``; frames count from the start of the utterance / stream.
        score: natural-log score of the result: the log-probability of its path(s) under the
            model (see the search that produced it for the precise definition), plus what the
            stream's scorer added (:mod:`xtrans.search_core.scorer`), if it has one.
    """

    tokens: List[int] = field(default_factory=list)
    timestamps: List[int] = field(default_factory=list)
    score: float = 0.0

    def times_s(self, frame_ms: int = FRAME_MS) -> List[float]:
        """Token emission times in seconds (frame index x ``frame_ms``)."""
        return [t * frame_ms / 1000.0 for t in self.timestamps]


class Prediction(Protocol):
    """The prediction network's state and output for ``N`` hypotheses (one runtime's arrays)."""

    def __len__(self) -> int:
        """``N``."""

    def take(self, rows: np.ndarray) -> "Prediction":
        """The hypotheses ``rows`` (n,) int64, in that order (rows may repeat)."""

    @classmethod
    def concat(cls, parts: Sequence["Prediction"]) -> "Prediction":
        """The hypotheses of ``parts`` one after the other."""


class TransducerOps(Protocol):
    """A runtime's prediction network and joiner, as the searches call them.

    Attributes:
        blank: the blank id.
    """

    blank: int

    def start(self, n: int, device: Any = None) -> Prediction:
        """The prediction of ``n`` empty histories (nothing emitted yet); ``device``: where the
        runtime keeps it (PyTorch; None = the model's device; numpy ignores it)."""

    def frames(self, enc: Any) -> Any:
        """A chunk of encoder frames (B, T, D) as :meth:`log_probs` reads them (PyTorch projects
        them into the joiner space once per chunk)."""

    def log_probs(self, frames: Any, t: int, streams: np.ndarray, prediction: Prediction,
                  rows: np.ndarray, size: Optional[int] = None) -> np.ndarray:
        """``log_softmax(joiner(frames[streams[i], t], prediction[rows[i]]))`` for each ``i``.

        Args:
            frames: what :meth:`frames` returned for the chunk.
            t: the frame within the chunk.
            streams: (n,) int64, the stream of each row.
            prediction: the predictions of all hypotheses.
            rows: (n,) int64, the hypotheses to score.
            size: rows of the joiner call (None = one per hypothesis of ``prediction``). A runtime
                whose kernels round a row by the number of rows in the call (PyTorch's CPU BLAS)
                computes exactly ``max(size, n)``, the rest copies, so that a row's result does not
                depend on the other rows; one that does not (onnxruntime on one thread) may ignore it.

        Returns:
            (n, V) float32 log-probabilities, computed in float32 (numpy, on the host).
        """

    def extend(self, prediction: Prediction, rows: np.ndarray, tokens: np.ndarray,
               size: Optional[int] = None) -> Prediction:
        """``prediction`` with hypotheses ``rows`` (n,) advanced by ``tokens`` (n,) int64 (no
        blank); the other hypotheses unchanged. ``prediction`` itself is not modified. ``size``:
        rows of the prediction network's call, as in :meth:`log_probs`."""

    def to_numpy(self, values: Any) -> np.ndarray:
        """A runtime array (e.g. the valid lengths of a chunk) as a numpy array."""


def check_chunk(enc: Any, lengths: Optional[np.ndarray], batch_size: int) -> np.ndarray:
    """Validates an encoder chunk (B, T, D) and its lengths (B,); returns the lengths (default T).

    Args:
        enc: the chunk, any array with a ``shape``.
        lengths: (B,) valid frames per stream, as numpy (None = all ``T``).
        batch_size: the streams of the search state.

    Returns:
        (B,) int64 lengths.

    Raises:
        ValueError: on a wrong rank, batch size or length.
    """
    shape = tuple(enc.shape)
    if len(shape) != 3:
        raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {shape}")
    if shape[0] != batch_size:
        raise ValueError(f"enc: expected a batch of {batch_size} streams (as the state), found {shape[0]}")
    if lengths is None:
        return np.full(batch_size, shape[1], dtype=np.int64)
    lengths = np.asarray(lengths).astype(np.int64, copy=False)
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths: expected shape ({batch_size},), found {lengths.shape}")
    if batch_size and (lengths.max() > shape[1] or lengths.min() < 0):
        raise ValueError(f"lengths: expected values in [0, {shape[1]}], found {lengths.tolist()}")
    return lengths


def chunk_lengths(ops: TransducerOps, enc: Any, lengths: Any, batch_size: int) -> np.ndarray:
    """:func:`check_chunk` of a runtime's chunk and lengths (converted with ``ops.to_numpy``)."""
    return check_chunk(enc, None if lengths is None else ops.to_numpy(lengths), batch_size)
