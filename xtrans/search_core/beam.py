"""Modified beam search (one symbol per frame, hypothesis merging, a scorer hook), written once.

The search of icefall's ``modified_beam_search`` (Kang et al., "Fast and parallel decoding
for transducer", ICASSP 2023): the transducer is read in the *one-symbol-per-frame* topology,
where every encoder frame emits exactly one symbol ``s_t`` — blank or a token — and moves on.
An alignment ``a = (s_0, ..., s_{T-1})`` has the probability

    P(a | x) = prod_t p(s_t | e_t, p_{u(t)}),     u(t) = tokens emitted before frame t,

with ``p(. | e_t, p_u) = softmax(joiner(e_t, p_u))``. Its tokens are the non-blank ``s_t``;
a token's timestamp is its frame ``t`` (x 20 ms).

At each frame every hypothesis of the beam is extended by all ``V`` symbols, the ``beam``
best extensions (by score) are kept, and then kept extensions with the same token sequence
are merged into one hypothesis whose score is the log-sum-exp of theirs (so icefall's beam may
hold fewer than ``beam`` distinct hypotheses after merging, and so does this one). Exactly tied
extension scores are ranked by their flat index (hypothesis-major, then symbol).

Score (what a returned :class:`~xtrans.search_core.ops.Hypothesis` holds), without a scorer:

- ``merge=False``: ``log P(a | x)`` of the single alignment ``a`` whose tokens and timestamps
  are returned.
- ``merge=True`` (default): ``log sum_a P(a | x)`` over the alignments the beam kept and merged
  into the hypothesis; they all have its tokens. Its timestamps are those of the highest-scoring
  alignment at each merge. With a beam wide enough that nothing is pruned this is the total
  ``log P(y | x)`` of the token sequence ``y`` in the one-symbol-per-frame topology.

``log p`` is computed in float32 (``log_softmax`` of the joiner's logits) and scores in float64.

A stream may have a :class:`~xtrans.search_core.scorer.Scorer` (hotwords, an LM): its per-token
scores are added to the extensions' scores before the top-``beam`` selection, and its final score
when results are read (the scorer module gives the formula). Where the scorer boosts (hotwords),
the search without the boosts runs inside the search with them: each hypothesis also carries its
score in that search (``-inf`` when that search's beam does not hold it), that search's ``beam``
best extensions are kept beside the ``beam`` best by score (so up to ``2 * beam`` extensions
before merging), and it evolves exactly as it would alone (:mod:`xtrans.search_core.scorer`).
The scorer is per stream, its state per hypothesis; both travel in :class:`BeamState`, so streams
with different hotwords share a batch.

In a batch of several streams, every call of the joiner
(:meth:`~xtrans.search_core.ops.TransducerOps.log_probs`) and of the prediction network
(:meth:`~xtrans.search_core.ops.TransducerOps.extend`) has ``2 * beam`` rows per stream
(``size``; the most a stream can hold), whatever the beams hold: BLAS kernels round a row's
result by the number of rows in the call (MKL's sgemm on an AMD EPYC: 1, 2-3 and 4 or more rows
give three different roundings), so otherwise a stream's scores would depend by ~1e-7 on how
many hypotheses the other streams of its batch hold, and a server's results on who else is
connected. A single stream's calls have one row per hypothesis.

The search is a streaming state machine, like :class:`~xtrans.search_core.greedy.GreedySearch`:
:meth:`ModifiedBeamSearch.init_state`, :meth:`ModifiedBeamSearch.step` per chunk of encoder
frames, :meth:`ModifiedBeamSearch.results`; chunked and whole-utterance calls agree exactly.
With ``beam=1`` and no scorer it is greedy search with ``max_symbols=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from xtrans.search_core.ops import Hypothesis, Prediction, TransducerOps, chunk_lengths
from xtrans.search_core.scorer import Scorer, boosts_of


@dataclass
class BeamState:
    """The beams of ``B`` streams, carried from chunk to chunk.

    The hypotheses of all streams are stored flat (``N`` in total), grouped by stream in
    stream order.

    Attributes:
        stream: (N,) int64, the stream of each hypothesis (non-decreasing).
        tokens: N token sequences (no blank).
        timestamps: N frame sequences, one frame per token.
        scores: (N,) float64 scores (module docstring), the scorer's per-token scores included.
        prediction: the prediction network's state and output of each hypothesis (N rows).
        scorers: B entries, each stream's scorer (None: no scorer).
        scorer_states: N entries, each hypothesis' scorer state (None for a stream without scorer).
        num_frames: (B,) int64, encoder frames consumed per stream.
        plain: (N,) float64, for a stream whose scorer boosts: each hypothesis' score in the search
            without the boosts (:func:`~xtrans.search_core.scorer.boosts_of`) — that search runs
            inside this one, its beam a part of this beam — or -inf where the hypothesis is not in
            its beam; for other streams the same as ``scores``. None = ``scores``.
    """

    stream: np.ndarray
    tokens: List[Tuple[int, ...]]
    timestamps: List[Tuple[int, ...]]
    scores: np.ndarray
    prediction: Prediction
    scorers: List[Optional[Scorer]]
    scorer_states: List[Any]
    num_frames: np.ndarray
    plain: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.plain is None:
            self.plain = self.scores.copy()

    @property
    def batch_size(self) -> int:
        return self.num_frames.shape[0]


class _Extension(NamedTuple):
    """A hypothesis of the next frame's beam, before the batched prediction-network step."""

    stream: int  # its stream b
    parent: int  # its row in the previous state
    symbol: int  # the symbol it appended (blank or a token)
    score: float
    tokens: Tuple[int, ...]
    timestamps: Tuple[int, ...]
    plain: float  # its score in the search without the boosts (BeamState.plain)


def log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow."""
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a)) if b > -math.inf else a


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of ``scores`` (S,), best first; ties by lower index."""
    if k < scores.size:  # only the values >= the k-th largest take part in the sort
        kth = np.partition(scores, scores.size - k)[scores.size - k]
        index = np.flatnonzero(scores >= kth)
        return index[np.argsort(-scores[index], kind="stable")][:k]
    return np.argsort(-scores, kind="stable")


class ModifiedBeamSearch:
    """Modified beam search on a runtime's :class:`~xtrans.search_core.ops.TransducerOps`.

    Args:
        ops: the prediction network and joiner.
        beam: hypotheses kept per frame (>= 1).
        merge: merge hypotheses with equal tokens by log-add (module docstring).
    """

    def __init__(self, ops: TransducerOps, beam: int = 4, merge: bool = True):
        if beam < 1:
            raise ValueError(f"beam: expected >= 1, found {beam}")
        self.ops = ops
        self.beam = beam
        self.merge = merge

    def init_state(self, batch_size: int = 1, device: Any = None,
                   scorer: Union[None, Scorer, Sequence[Optional[Scorer]]] = None) -> BeamState:
        """``batch_size`` streams, each with one empty hypothesis of score 0 at frame 0.

        Args:
            batch_size: streams.
            device: as :meth:`TransducerOps.start <xtrans.search_core.ops.TransducerOps.start>`.
            scorer: the streams' scorer: one for all, or one (or None) per stream.

        Raises:
            ValueError: for a list of scorers of another length than ``batch_size``.
            TypeError: for something that is not a :class:`~xtrans.search_core.scorer.Scorer`.
        """
        scorers = list(scorer) if isinstance(scorer, (list, tuple)) else [scorer] * batch_size
        if len(scorers) != batch_size:
            raise ValueError(f"scorer: expected one scorer per stream ({batch_size}), found {len(scorers)}")
        for s in scorers:
            if s is not None and not isinstance(s, Scorer):
                raise TypeError(f"scorer: expected a Scorer (start, scores, advance, final) or None, "
                                f"found {type(s).__name__}")
        return BeamState(stream=np.arange(batch_size, dtype=np.int64), tokens=[()] * batch_size,
                         timestamps=[()] * batch_size, scores=np.zeros(batch_size, dtype=np.float64),
                         prediction=self.ops.start(batch_size, device), scorers=scorers,
                         scorer_states=[None if s is None else s.start() for s in scorers],
                         num_frames=np.zeros(batch_size, dtype=np.int64))

    def step(self, enc: Any, state: BeamState, lengths: Any = None) -> BeamState:
        """Consumes a chunk of encoder frames.

        Args:
            enc: (B, T, D) encoder frames (the runtime's arrays), the next ``T`` frames of each stream.
            state: the state after the previous chunk.
            lengths: (B,) valid frames of each stream in this chunk (default all ``T``).

        Returns:
            the new state (``state`` itself is not modified).
        """
        lengths = chunk_lengths(self.ops, enc, lengths, state.batch_size)
        frames = self.ops.frames(enc)
        offsets = state.num_frames
        for t in range(int(lengths.max(initial=0))):
            state = self._frame(frames, t, state, lengths > t, offsets + t)
        return replace(state, num_frames=state.num_frames + lengths)

    def _context_scores(self, state: BeamState, rows: np.ndarray) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(n, V) float64 scorer scores of hypotheses ``rows`` (0 for the blank and for streams
        without a scorer; None when none has one) and the boost part of them (rows of NaN where
        the scorer does not boost, 0 for the blank; None when no scorer boosts)."""
        if all(state.scorers[b] is None for b in state.stream[rows].tolist()):
            return None, None
        out: Optional[np.ndarray] = None
        boost: Optional[np.ndarray] = None
        for i, r in enumerate(rows.tolist()):
            scorer = state.scorers[state.stream[r]]
            if scorer is None:
                continue
            scores = scorer.scores(state.scorer_states[r])
            if out is None:
                out = np.zeros((rows.size, scores.shape[0]), dtype=np.float64)
            out[i] = scores
            part = boosts_of(scorer, state.scorer_states[r])
            if part is not None:  # a scorer that boosts gives an array for every state
                if boost is None:
                    boost = np.full_like(out, np.nan)  # NaN rows: no boosts
                boost[i] = part
        out[:, self.ops.blank] = 0.0
        if boost is not None:
            boost[:, self.ops.blank] = 0.0
        return out, boost

    def _frame(self, frames: Any, t: int, state: BeamState, active: np.ndarray, frame: np.ndarray) -> BeamState:
        """One frame: frame ``t`` of the chunk; ``active`` (B,) bool streams advance, ``frame`` (B,)
        their frame indices in the stream."""
        ops, blank = self.ops, self.ops.blank
        streams = state.stream.tolist()
        rows = np.flatnonzero(active[state.stream])
        # rows of every joiner and prediction call (module docstring); one stream has no neighbours
        size = 2 * self.beam * state.batch_size if state.batch_size > 1 else None
        logp = ops.log_probs(frames, t, state.stream[rows], state.prediction, rows, size).astype(np.float64)  # (n, V)
        cand = state.scores[rows, None] + logp
        context, boost = self._context_scores(state, rows)
        if context is not None:
            cand += context
        if boost is not None:  # the extensions' scores in the search without the boosts (-inf: not in it)
            plain_cand = state.plain[rows, None] + logp + (context - np.nan_to_num(boost))
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
                new += [_Extension(b, r, blank, float(state.scores[r]), state.tokens[r], state.timestamps[r],
                                   float(state.plain[r])) for r in range(start, end)]
                start = end
                continue
            lo, hi = position[start], position[start] + (end - start)
            flat = cand[lo:hi].reshape(-1)
            order = top_k(flat, min(self.beam, flat.size)).tolist()
            boosted = boost is not None and not np.isnan(boost[lo]).any()
            if boosted:  # and the beam of the search without the boosts (scorer module docstring)
                without = plain_cand[lo:hi].reshape(-1)
                plain_beam = [i for i in top_k(without, min(self.beam, without.size)).tolist()
                              if without[i] > -math.inf]
                in_order = set(order)
                order += [i for i in plain_beam if i not in in_order]
                in_plain = set(plain_beam)
            merged: Dict[Tuple[int, ...], int] = {}
            for index in order:
                score = float(flat[index])
                plain = (float(without[index]) if index in in_plain else -math.inf) if boosted else score
                parent, symbol = start + index // V, index % V
                tokens, times = state.tokens[parent], state.timestamps[parent]
                if symbol != blank:
                    tokens, times = tokens + (symbol,), times + (int(frame[b]),)
                if self.merge and tokens in merged:  # an earlier (better) alignment holds it
                    k = merged[tokens]
                    new[k] = new[k]._replace(score=log_add(new[k].score, score), plain=log_add(new[k].plain, plain))
                    continue
                merged[tokens] = len(new)
                new.append(_Extension(b, parent, symbol, score, tokens, times, plain))
            start = end

        parent = np.array([h.parent for h in new], dtype=np.int64)
        symbol = np.array([h.symbol for h in new], dtype=np.int64)
        prediction = state.prediction.take(parent)
        emit = np.flatnonzero(symbol != blank)
        if emit.size:
            prediction = ops.extend(prediction, emit, symbol[emit], size)
        scorer_states = [state.scorer_states[h.parent] if h.symbol == blank or state.scorers[h.stream] is None
                         else state.scorers[h.stream].advance(state.scorer_states[h.parent], h.symbol)
                         for h in new]
        return BeamState(stream=np.array([h.stream for h in new], dtype=np.int64),
                         tokens=[h.tokens for h in new], timestamps=[h.timestamps for h in new],
                         scores=np.array([h.score for h in new], dtype=np.float64), prediction=prediction,
                         scorers=state.scorers, scorer_states=scorer_states, num_frames=state.num_frames,
                         plain=np.array([h.plain for h in new], dtype=np.float64))

    def results(self, state: BeamState, nbest: Optional[int] = None) -> List[List[Hypothesis]]:
        """Per stream, its hypotheses best first (at most ``nbest``, default all in the beam).

        A stream's scorer's final score (:meth:`Scorer.final <xtrans.search_core.scorer.Scorer.final>`)
        is added to each of its hypotheses here, as if the stream ended now.
        """
        out: List[List[Hypothesis]] = [[] for _ in range(state.batch_size)]
        for b, tokens, times, score, context in zip(state.stream.tolist(), state.tokens, state.timestamps,
                                                    state.scores.tolist(), state.scorer_states):
            if state.scorers[b] is not None:
                score += state.scorers[b].final(context)
            out[b].append(Hypothesis(tokens=list(tokens), timestamps=list(times), score=score))
        for hyps in out:
            hyps.sort(key=lambda h: -h.score)
            del hyps[nbest if nbest is not None else len(hyps):]
        return out

    def __call__(self, enc: Any, lengths: Any = None, nbest: Optional[int] = None,
                 scorer: Union[None, Scorer, Sequence[Optional[Scorer]]] = None) -> List[List[Hypothesis]]:
        """Offline search of a padded batch: (B, T, D), (B,) -> per utterance, its n-best list."""
        if len(enc.shape) != 3:
            raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {tuple(enc.shape)}")
        state = self.init_state(enc.shape[0], getattr(enc, "device", None), scorer)
        return self.results(self.step(enc, state, lengths), nbest)
