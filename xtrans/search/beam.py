"""Modified beam search (one symbol per frame, hypothesis merging), offline and streaming.

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
hold fewer than ``beam`` distinct hypotheses after merging, and so does this one).

Score (what a returned :class:`~xtrans.search.hypothesis.Hypothesis` holds):

- ``merge=False``: ``log P(a | x)`` of the single alignment ``a`` whose tokens and timestamps
  are returned.
- ``merge=True`` (default): ``log sum_a P(a | x)`` over the alignments the beam kept and merged
  into the hypothesis; they all have its tokens. Its timestamps are those of the highest-scoring
  alignment at each merge. With a beam wide enough that nothing is pruned this is the total
  ``log P(y | x)`` of the token sequence ``y`` in the one-symbol-per-frame topology.

The search is a streaming state machine, like :class:`~xtrans.search.greedy.GreedySearch`:
:meth:`ModifiedBeamSearch.init_state`, :meth:`ModifiedBeamSearch.step` per chunk of encoder
frames, :meth:`ModifiedBeamSearch.results`; chunked and whole-utterance calls agree exactly.
With ``beam=1`` it is greedy search with ``max_symbols=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from xtrans.search.hypothesis import (Hypothesis, PredictorState, check_chunk, initial_prediction, select_state,
                                      where_state)


@dataclass
class BeamState:
    """The beams of ``B`` streams, carried from chunk to chunk.

    The hypotheses of all streams are stored flat (``N`` in total), grouped by stream in
    stream order.

    Attributes:
        stream: (N,) long, the stream of each hypothesis (non-decreasing).
        tokens: N token sequences (no blank).
        timestamps: N frame sequences, one frame per token.
        scores: (N,) float64 log-probabilities (module docstring).
        predictor_state: the prediction network's state of each hypothesis (batch N).
        predictor_proj: (N, J) its output projected by the joiner.
        num_frames: (B,) long, encoder frames consumed per stream.
    """

    stream: torch.Tensor
    tokens: List[Tuple[int, ...]]
    timestamps: List[Tuple[int, ...]]
    scores: torch.Tensor
    predictor_state: PredictorState
    predictor_proj: torch.Tensor
    num_frames: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.num_frames.shape[0]


class _Extension(NamedTuple):
    """A hypothesis of the next frame's beam, before the batched prediction-network step."""

    stream: int  # its stream b
    parent: int  # its row in the previous state
    symbol: int  # the symbol it appended (blank or a token)
    score: float  # log-probability (module docstring)
    tokens: Tuple[int, ...]
    timestamps: Tuple[int, ...]


def _log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow."""
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a)) if b > -math.inf else a


class ModifiedBeamSearch:
    """Modified beam search with a model's prediction network and joiner (streaming or offline).

    Args:
        model: a :class:`~xtrans.models.transducer.Transducer`.
        beam: hypotheses kept per frame (>= 1).
        merge: merge hypotheses with equal tokens by log-add (module docstring).
    """

    def __init__(self, model, beam: int = 4, merge: bool = True):
        if beam < 1:
            raise ValueError(f"beam: expected >= 1, found {beam}")
        self.model = model
        self.beam = beam
        self.merge = merge

    @torch.no_grad()
    def init_state(self, batch_size: int = 1, device=None) -> BeamState:
        """``batch_size`` streams, each with one empty hypothesis of score 0 at frame 0."""
        if device is None:
            device = next(self.model.parameters()).device
        state, proj = initial_prediction(self.model, batch_size, device)
        return BeamState(
            stream=torch.arange(batch_size, device=device), tokens=[()] * batch_size,
            timestamps=[()] * batch_size, scores=torch.zeros(batch_size, dtype=torch.float64, device=device),
            predictor_state=state, predictor_proj=proj,
            num_frames=torch.zeros(batch_size, dtype=torch.long, device=device))

    @torch.no_grad()
    def step(self, enc: torch.Tensor, state: BeamState,
             lengths: Optional[torch.Tensor] = None) -> BeamState:
        """Consumes a chunk of encoder frames.

        Args:
            enc: (B, T, D) encoder frames, the next ``T`` frames of each stream.
            state: the state after the previous chunk.
            lengths: (B,) valid frames of each stream in this chunk (default all ``T``).

        Returns:
            the new state (``state`` itself is not modified).
        """
        lengths = check_chunk(enc, lengths, state.batch_size)
        enc_proj = self.model.joiner.encoder_proj(enc)  # (B, T, J)
        offsets = state.num_frames.tolist()
        lengths_list = lengths.tolist()
        for t in range(enc.shape[1]):
            if not any(n > t for n in lengths_list):
                break
            state = self._frame(enc_proj[:, t], state, [n > t for n in lengths_list],
                                [o + t for o in offsets])
        return replace(state, num_frames=state.num_frames + lengths.to(state.num_frames.device))

    def _frame(self, enc_proj: torch.Tensor, state: BeamState, active: List[bool],
               frame: List[int]) -> BeamState:
        """One frame: enc_proj (B, J) of the streams' current frames; ``active`` streams advance."""
        joiner, predictor, blank = self.model.joiner, self.model.predictor, self.model.blank
        streams = state.stream.tolist()
        rows = [i for i, b in enumerate(streams) if active[b]]
        row_index = torch.tensor(rows, dtype=torch.long, device=enc_proj.device)
        logits = joiner(enc_proj[state.stream[row_index]], state.predictor_proj[row_index], projected=True)
        logp = F.log_softmax(logits.float(), dim=-1).double()  # (n, V)
        cand = state.scores[row_index, None] + logp  # (n, V)
        V = cand.shape[1]
        position = {r: i for i, r in enumerate(rows)}  # row -> index in cand

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
                top_scores, top_index = flat.topk(min(self.beam, flat.numel()))  # sorted, best first
                merged = {}
                for score, index in zip(top_scores.tolist(), top_index.tolist()):
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

        device = state.scores.device
        parent = torch.tensor([h.parent for h in new], dtype=torch.long, device=device)
        symbol = torch.tensor([h.symbol for h in new], dtype=torch.long, device=device)
        pstate = select_state(state.predictor_state, parent)
        pproj = state.predictor_proj[parent]
        emit = symbol != blank
        if bool(emit.any()):
            out, stepped = predictor.step(symbol, pstate)
            pstate = where_state(emit, stepped, pstate)
            pproj = torch.where(emit[:, None], joiner.predictor_proj(out), pproj)
        return BeamState(
            stream=torch.tensor([h.stream for h in new], dtype=torch.long, device=device),
            tokens=[h.tokens for h in new], timestamps=[h.timestamps for h in new],
            scores=torch.tensor([h.score for h in new], dtype=torch.float64, device=device),
            predictor_state=pstate, predictor_proj=pproj, num_frames=state.num_frames)

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

    def __call__(self, enc: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                 nbest: Optional[int] = None) -> List[List[Hypothesis]]:
        """Offline search of a padded batch: (B, T, D), (B,) -> per utterance, its n-best list."""
        if enc.dim() != 3:
            raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {tuple(enc.shape)}")
        state = self.init_state(enc.shape[0], enc.device)
        return self.results(self.step(enc, state, lengths), nbest)


def modified_beam_search(model, enc: torch.Tensor, enc_lengths: Optional[torch.Tensor] = None,
                         beam: int = 4, nbest: Optional[int] = None, merge: bool = True
                         ) -> List[List[Hypothesis]]:
    """Offline modified beam search of a batch of encoder outputs.

    Args:
        model: the transducer.
        enc: (B, T, D) encoder frames, padded.
        enc_lengths: (B,) valid frames (default all ``T``).
        beam: hypotheses kept per frame.
        nbest: hypotheses returned per utterance (default all that the beam holds, <= ``beam``).
        merge: merge equal token sequences by log-add.

    Returns:
        per utterance, its hypotheses best first (scores as in the module docstring).
    """
    if nbest is not None and nbest < 1:
        raise ValueError(f"nbest: expected >= 1 or None, found {nbest}")
    return ModifiedBeamSearch(model, beam, merge)(enc, enc_lengths, nbest)
