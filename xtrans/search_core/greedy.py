"""Frame-synchronous greedy search for the transducer, written once for every runtime.

At every encoder frame ``t`` the search takes the most probable symbol of the joiner,
``k = argmax_v log p(v | e_t, p_u)``. A non-blank ``k`` is emitted (timestamp ``t``), the
prediction network advances to ``p_{u+1}`` and the search stays on frame ``t``; blank moves on
to frame ``t + 1``. At most ``max_symbols`` tokens are emitted per frame: after the last one the
search moves on without a blank (icefall's ``max_sym_per_frame``; 1 is the usual streaming
choice and makes the search the one-symbol-per-frame topology of modified beam search).

Score: the sum of ``log p`` of every decision taken — each emitted token and each blank that
ended a frame; a frame left because ``max_symbols`` was reached adds nothing for leaving it.
With ``max_symbols=1`` this is exactly the log-probability of the path in the
one-symbol-per-frame topology (see :mod:`xtrans.search_core.beam`). ``log p`` is computed in
float32 (``log_softmax`` of the joiner's logits) and summed in float64.

The search is a streaming state machine: :meth:`GreedySearch.init_state` makes a
:class:`GreedyState`, :meth:`GreedySearch.step` consumes any number of encoder frames (a chunk)
and returns the new state, :meth:`GreedySearch.results` reads the hypotheses. Feeding the frames
chunk by chunk gives exactly what one call with all the frames gives.

Greedy search takes no scorer (:mod:`xtrans.search_core.scorer`): one symbol at a time, there is
no beam for context to reorder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import numpy as np

from xtrans.search_core.ops import Hypothesis, Prediction, TransducerOps, chunk_lengths


@dataclass
class GreedyState:
    """Greedy search over ``B`` streams, carried from chunk to chunk.

    Attributes:
        prediction: the prediction network's state and output after each stream's tokens (B rows).
        tokens: per stream, the emitted token ids.
        timestamps: per stream, the frame of each emitted token.
        scores: (B,) float64, the log-probability of the decisions so far (module docstring).
        num_frames: (B,) int64, encoder frames consumed per stream (the next frame's index).
    """

    prediction: Prediction
    tokens: List[List[int]]
    timestamps: List[List[int]]
    scores: np.ndarray
    num_frames: np.ndarray

    @property
    def batch_size(self) -> int:
        return len(self.tokens)


class GreedySearch:
    """Greedy search on a runtime's :class:`~xtrans.search_core.ops.TransducerOps` (streaming or offline).

    Args:
        ops: the prediction network and joiner.
        max_symbols: most tokens emitted per frame (>= 1).
    """

    def __init__(self, ops: TransducerOps, max_symbols: int = 3):
        if max_symbols < 1:
            raise ValueError(f"max_symbols: expected >= 1, found {max_symbols}")
        self.ops = ops
        self.max_symbols = max_symbols

    def init_state(self, batch_size: int = 1, device: Any = None) -> GreedyState:
        """The state of ``batch_size`` empty streams (nothing emitted, frame 0); ``device`` as
        :meth:`TransducerOps.start <xtrans.search_core.ops.TransducerOps.start>`."""
        return GreedyState(prediction=self.ops.start(batch_size, device),
                           tokens=[[] for _ in range(batch_size)], timestamps=[[] for _ in range(batch_size)],
                           scores=np.zeros(batch_size, dtype=np.float64),
                           num_frames=np.zeros(batch_size, dtype=np.int64))

    def step(self, enc: Any, state: GreedyState, lengths: Any = None) -> GreedyState:
        """Consumes a chunk of encoder frames.

        Args:
            enc: (B, T, D) encoder frames (the runtime's arrays), the next ``T`` frames of each stream.
            state: the state after the previous chunk.
            lengths: (B,) valid frames of each stream in this chunk (default all ``T``).

        Returns:
            the new state (``state`` itself is not modified).
        """
        lengths = chunk_lengths(self.ops, enc, lengths, state.batch_size)
        ops, blank = self.ops, self.ops.blank
        frames = ops.frames(enc)
        prediction, scores = state.prediction, state.scores.copy()
        tokens = [list(t) for t in state.tokens]
        times = [list(t) for t in state.timestamps]
        offsets = state.num_frames.tolist()
        for t in range(int(lengths.max(initial=0))):
            active = np.flatnonzero(lengths > t)  # streams still on a frame
            for _ in range(self.max_symbols):
                logp = ops.log_probs(frames, t, active, prediction, active)  # (n, V) float32
                best = logp.argmax(axis=-1)
                scores[active] += logp[np.arange(active.size), best].astype(np.float64)
                emit = best != blank
                if not emit.any():
                    break
                active, best = active[emit], best[emit]
                for b, k in zip(active.tolist(), best.tolist()):
                    tokens[b].append(k)
                    times[b].append(offsets[b] + t)
                prediction = ops.extend(prediction, active, best)
        return GreedyState(prediction=prediction, tokens=tokens, timestamps=times, scores=scores,
                           num_frames=state.num_frames + lengths)

    def results(self, state: GreedyState) -> List[Hypothesis]:
        """The hypothesis of every stream so far (B entries)."""
        return [Hypothesis(tokens=list(tok), timestamps=list(tim), score=float(s))
                for tok, tim, s in zip(state.tokens, state.timestamps, state.scores.tolist())]

    def __call__(self, enc: Any, lengths: Any = None) -> List[Hypothesis]:
        """Offline search of a padded batch: (B, T, D), (B,) -> B hypotheses."""
        if len(enc.shape) != 3:
            raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {tuple(enc.shape)}")
        state = self.init_state(enc.shape[0], getattr(enc, "device", None))
        return self.results(self.step(enc, state, lengths))
