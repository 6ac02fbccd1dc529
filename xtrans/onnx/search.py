"""Greedy and modified beam search in numpy, on an exported prediction network and joiner.

The same searches as :mod:`xtrans.search.greedy` and :mod:`xtrans.search.beam` (read those
for the math and the score definitions), written without torch so that :mod:`xtrans.onnx`
runs on onnxruntime + numpy alone. They follow the PyTorch searches step for step — the
``max_symbols`` rule of greedy search, the top-``beam`` selection over all ``(hypothesis,
symbol)`` extensions of modified beam search, the merging of equal token sequences by
log-add in that order, the float32 ``log_softmax`` widened to float64 scores — so on the
same encoder frames they return the same tokens, timestamps and (to float tolerance) scores.
Exactly tied extension scores are ranked by their flat index (hypothesis-major, then symbol);
``torch.topk`` leaves that order unspecified.

Both are streaming state machines over encoder frames::

    search = GreedySearch(decoder, max_symbols=3)        # or ModifiedBeamSearch(decoder, beam=4)
    state = search.init_state(batch_size)
    state = search.step(enc (B, T, D), state, lengths (B,))   # per chunk
    hyps = search.results(state)

``decoder`` is anything with ``blank``, ``context_size``, ``predict(context (N, K) int64) ->
(N, D_pred)`` and ``join(encoder_out (N, D), predictor_out (N, D_pred)) -> logits (N, V)``
(:class:`xtrans.onnx.recognizer.OnnxDecoder` runs ``predictor.onnx`` and ``joiner.onnx``).
Only the stateless prediction network is supported: its state is the last ``K`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, NamedTuple, Optional, Protocol, Tuple

import numpy as np

FRAME_MS = 20


class Decoder(Protocol):
    """The prediction network and joiner a search runs on."""

    blank: int
    context_size: int

    def predict(self, context: np.ndarray) -> np.ndarray:
        """(N, K) int64 last tokens (blank-padded at the start) -> (N, D_pred) float32."""

    def join(self, encoder_out: np.ndarray, predictor_out: np.ndarray) -> np.ndarray:
        """(N, D) float32, (N, D_pred) float32 -> logits (N, V) float32."""


@dataclass
class Hypothesis:
    """One decoding result (as :class:`xtrans.search.Hypothesis`).

    Attributes:
        tokens: emitted token ids, blank excluded, in order.
        timestamps: the encoder frame (20 ms) at which each token was emitted.
        score: natural-log probability as defined by the search.
    """

    tokens: List[int] = field(default_factory=list)
    timestamps: List[int] = field(default_factory=list)
    score: float = 0.0

    def times_s(self, frame_ms: int = FRAME_MS) -> List[float]:
        """Token emission times in seconds (frame index x ``frame_ms``)."""
        return [t * frame_ms / 1000.0 for t in self.timestamps]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log_softmax`` over the last axis in float32 (as the PyTorch searches compute it)."""
    x = logits.astype(np.float32, copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def push_tokens(context: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Appends ``tokens`` (N,) to the stateless predictor's contexts (N, K), dropping the oldest."""
    return np.concatenate([context[:, 1:], tokens[:, None].astype(context.dtype)], axis=1)


def initial_context(decoder: Decoder, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """The empty history of ``n`` hypotheses: all-blank contexts (n, K) and their prediction."""
    context = np.full((n, decoder.context_size), decoder.blank, dtype=np.int64)
    return context, decoder.predict(context)


def check_chunk(enc: np.ndarray, lengths: Optional[np.ndarray], batch_size: int) -> np.ndarray:
    """Validates an encoder chunk (B, T, D) and its lengths (B,); returns the lengths (default T).

    Raises:
        ValueError: on a wrong rank, batch size or length.
    """
    if enc.ndim != 3:
        raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {enc.shape}")
    if enc.shape[0] != batch_size:
        raise ValueError(f"enc: expected a batch of {batch_size} streams (as the state), found {enc.shape[0]}")
    if lengths is None:
        return np.full(batch_size, enc.shape[1], dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths: expected shape ({batch_size},), found {lengths.shape}")
    if batch_size and (lengths.max() > enc.shape[1] or lengths.min() < 0):
        raise ValueError(f"lengths: expected values in [0, {enc.shape[1]}], found {lengths.tolist()}")
    return lengths


# ---------------------------------------------------------------------------------------- greedy
@dataclass
class GreedyState:
    """Greedy search over ``B`` streams, carried from chunk to chunk.

    Attributes:
        context: (B, K) int64, each stream's last ``K`` tokens (the predictor state).
        predictor_out: (B, D_pred) float32, the prediction for that context.
        tokens: per stream, the emitted token ids.
        timestamps: per stream, the frame of each emitted token.
        scores: (B,) float64 log-probability of the decisions so far.
        num_frames: (B,) int64 encoder frames consumed per stream.
    """

    context: np.ndarray
    predictor_out: np.ndarray
    tokens: List[List[int]]
    timestamps: List[List[int]]
    scores: np.ndarray
    num_frames: np.ndarray

    @property
    def batch_size(self) -> int:
        return len(self.tokens)


class GreedySearch:
    """Greedy search (:class:`xtrans.search.GreedySearch`) on a :class:`Decoder`.

    Args:
        decoder: the prediction network and joiner.
        max_symbols: most tokens per frame (>= 1).
    """

    def __init__(self, decoder: Decoder, max_symbols: int = 3):
        if max_symbols < 1:
            raise ValueError(f"max_symbols: expected >= 1, found {max_symbols}")
        self.decoder = decoder
        self.max_symbols = max_symbols

    def init_state(self, batch_size: int = 1) -> GreedyState:
        """The state of ``batch_size`` empty streams (nothing emitted, frame 0)."""
        context, out = initial_context(self.decoder, batch_size)
        return GreedyState(context=context, predictor_out=out, tokens=[[] for _ in range(batch_size)],
                           timestamps=[[] for _ in range(batch_size)],
                           scores=np.zeros(batch_size, dtype=np.float64),
                           num_frames=np.zeros(batch_size, dtype=np.int64))

    def step(self, enc: np.ndarray, state: GreedyState, lengths: Optional[np.ndarray] = None) -> GreedyState:
        """Consumes a chunk: ``enc`` (B, T, D), ``lengths`` (B,) valid frames -> the new state
        (``state`` itself is not modified)."""
        lengths = check_chunk(enc, lengths, state.batch_size)
        decoder, blank = self.decoder, self.decoder.blank
        context, out = state.context.copy(), state.predictor_out.copy()
        scores = state.scores.copy()
        tokens = [list(t) for t in state.tokens]
        times = [list(t) for t in state.timestamps]
        offsets = state.num_frames.tolist()
        for t in range(enc.shape[1]):
            active = np.flatnonzero(lengths > t)  # streams still on a frame
            if active.size == 0:
                break
            for _ in range(self.max_symbols):
                logp = log_softmax(decoder.join(enc[active, t], out[active]))  # (n, V)
                best = logp.argmax(axis=-1)
                scores[active] += logp[np.arange(active.size), best].astype(np.float64)
                emit = best != blank
                if not emit.any():
                    break
                active, best = active[emit], best[emit]
                for b, k in zip(active.tolist(), best.tolist()):
                    tokens[b].append(k)
                    times[b].append(offsets[b] + t)
                context[active] = push_tokens(context[active], best)
                out[active] = decoder.predict(context[active])
        return GreedyState(context=context, predictor_out=out, tokens=tokens, timestamps=times,
                           scores=scores, num_frames=state.num_frames + lengths)

    def results(self, state: GreedyState) -> List[Hypothesis]:
        """The hypothesis of every stream so far (B entries)."""
        return [Hypothesis(tokens=list(tok), timestamps=list(tim), score=float(s))
                for tok, tim, s in zip(state.tokens, state.timestamps, state.scores.tolist())]

    def __call__(self, enc: np.ndarray, lengths: Optional[np.ndarray] = None) -> List[Hypothesis]:
        """Offline search of a padded batch: (B, T, D), (B,) -> B hypotheses."""
        if enc.ndim != 3:
            raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {enc.shape}")
        return self.results(self.step(enc, self.init_state(enc.shape[0]), lengths))


# ------------------------------------------------------------------------------------------ beam
@dataclass
class BeamState:
    """The beams of ``B`` streams, stored flat (``N`` hypotheses grouped by stream in order).

    Attributes:
        stream: (N,) int64, the stream of each hypothesis (non-decreasing).
        tokens: N token sequences (no blank).
        timestamps: N frame sequences, one frame per token.
        scores: (N,) float64 log-probabilities (:mod:`xtrans.search.beam`).
        context: (N, K) int64, each hypothesis' last ``K`` tokens.
        predictor_out: (N, D_pred) float32, the prediction for that context.
        num_frames: (B,) int64 encoder frames consumed per stream.
    """

    stream: np.ndarray
    tokens: List[Tuple[int, ...]]
    timestamps: List[Tuple[int, ...]]
    scores: np.ndarray
    context: np.ndarray
    predictor_out: np.ndarray
    num_frames: np.ndarray

    @property
    def batch_size(self) -> int:
        return self.num_frames.shape[0]


class _Extension(NamedTuple):
    """A hypothesis of the next frame's beam, before the batched prediction-network step."""

    stream: int
    parent: int  # its row in the previous state
    symbol: int  # the symbol it appended (blank or a token)
    score: float
    tokens: Tuple[int, ...]
    timestamps: Tuple[int, ...]


def _log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow."""
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a)) if b > -math.inf else a


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of ``scores`` (S,), best first; ties by lower index."""
    return np.argsort(-scores, kind="stable")[:k]


class ModifiedBeamSearch:
    """Modified beam search (:class:`xtrans.search.ModifiedBeamSearch`) on a :class:`Decoder`.

    Args:
        decoder: the prediction network and joiner.
        beam: hypotheses kept per frame (>= 1).
        merge: merge hypotheses with equal tokens by log-add.
    """

    def __init__(self, decoder: Decoder, beam: int = 4, merge: bool = True):
        if beam < 1:
            raise ValueError(f"beam: expected >= 1, found {beam}")
        self.decoder = decoder
        self.beam = beam
        self.merge = merge

    def init_state(self, batch_size: int = 1) -> BeamState:
        """``batch_size`` streams, each with one empty hypothesis of score 0 at frame 0."""
        context, out = initial_context(self.decoder, batch_size)
        return BeamState(stream=np.arange(batch_size, dtype=np.int64), tokens=[()] * batch_size,
                         timestamps=[()] * batch_size, scores=np.zeros(batch_size, dtype=np.float64),
                         context=context, predictor_out=out, num_frames=np.zeros(batch_size, dtype=np.int64))

    def step(self, enc: np.ndarray, state: BeamState, lengths: Optional[np.ndarray] = None) -> BeamState:
        """Consumes a chunk: ``enc`` (B, T, D), ``lengths`` (B,) valid frames -> the new state."""
        lengths = check_chunk(enc, lengths, state.batch_size)
        offsets = state.num_frames.tolist()
        lengths_list = lengths.tolist()
        for t in range(enc.shape[1]):
            if not any(n > t for n in lengths_list):
                break
            state = self._frame(enc[:, t], state, [n > t for n in lengths_list], [o + t for o in offsets])
        return replace(state, num_frames=state.num_frames + lengths)

    def _frame(self, enc: np.ndarray, state: BeamState, active: List[bool], frame: List[int]) -> BeamState:
        """One frame: enc (B, D) of the streams' current frames; ``active`` streams advance."""
        decoder, blank = self.decoder, self.decoder.blank
        streams = state.stream.tolist()
        rows = np.array([i for i, b in enumerate(streams) if active[b]], dtype=np.int64)
        logp = log_softmax(decoder.join(enc[state.stream[rows]], state.predictor_out[rows]))  # (n, V)
        cand = state.scores[rows, None] + logp.astype(np.float64)  # (n, V)
        V = cand.shape[1]
        position = {r: i for i, r in enumerate(rows.tolist())}  # row -> index in cand

        new: List[_Extension] = []
        start = 0
        while start < len(streams):
            b = streams[start]
            end = start
            while end < len(streams) and streams[end] == b:
                end += 1
            if not active[b]:  # stream already ended in this chunk: keep its beam as is
                new += [_Extension(b, r, blank, float(state.scores[r]), state.tokens[r], state.timestamps[r])
                        for r in range(start, end)]
            else:
                flat = cand[position[start]:position[start] + (end - start)].reshape(-1)
                merged: Dict[Tuple[int, ...], int] = {}
                for index in top_k(flat, min(self.beam, flat.size)).tolist():
                    score = float(flat[index])
                    parent, symbol = start + index // V, index % V
                    tokens, times = state.tokens[parent], state.timestamps[parent]
                    if symbol != blank:
                        tokens, times = tokens + (symbol,), times + (frame[b],)
                    if self.merge and tokens in merged:  # an earlier (better) alignment holds it
                        k = merged[tokens]
                        new[k] = new[k]._replace(score=_log_add(new[k].score, score))
                        continue
                    merged[tokens] = len(new)
                    new.append(_Extension(b, parent, symbol, score, tokens, times))
            start = end

        parent = np.array([h.parent for h in new], dtype=np.int64)
        symbol = np.array([h.symbol for h in new], dtype=np.int64)
        context, out = state.context[parent], state.predictor_out[parent]
        emit = np.flatnonzero(symbol != blank)
        if emit.size:
            context[emit] = push_tokens(context[emit], symbol[emit])
            out[emit] = decoder.predict(context[emit])
        return BeamState(stream=np.array([h.stream for h in new], dtype=np.int64),
                         tokens=[h.tokens for h in new], timestamps=[h.timestamps for h in new],
                         scores=np.array([h.score for h in new], dtype=np.float64),
                         context=context, predictor_out=out, num_frames=state.num_frames)

    def results(self, state: BeamState, nbest: Optional[int] = None) -> List[List[Hypothesis]]:
        """Per stream, its hypotheses best first (at most ``nbest``, default all in the beam)."""
        out: List[List[Hypothesis]] = [[] for _ in range(state.batch_size)]
        for b, tokens, times, score in zip(state.stream.tolist(), state.tokens, state.timestamps,
                                           state.scores.tolist()):
            out[b].append(Hypothesis(tokens=list(tokens), timestamps=list(times), score=score))
        for hyps in out:
            hyps.sort(key=lambda h: -h.score)
            del hyps[nbest if nbest is not None else len(hyps):]
        return out

    def __call__(self, enc: np.ndarray, lengths: Optional[np.ndarray] = None,
                 nbest: Optional[int] = None) -> List[List[Hypothesis]]:
        """Offline search of a padded batch: (B, T, D), (B,) -> per utterance, its n-best list."""
        if enc.ndim != 3:
            raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {enc.shape}")
        return self.results(self.step(enc, self.init_state(enc.shape[0]), lengths), nbest)
