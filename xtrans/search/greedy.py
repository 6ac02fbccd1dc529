"""Frame-synchronous greedy search for the transducer, offline (batched) and streaming.

At every encoder frame ``t`` the search takes the most probable symbol of the joiner,
``k = argmax_v log p(v | e_t, p_u)``. A non-blank ``k`` is emitted (timestamp ``t``), the
prediction network advances to ``p_{u+1}`` and the search stays on frame ``t``; blank moves on
to frame ``t + 1``. At most ``max_symbols`` tokens are emitted per frame: after the last one the
search moves on without a blank (icefall's ``max_sym_per_frame``; 1 is the usual streaming
choice and makes the search the one-symbol-per-frame topology of modified beam search).

Score: the sum of ``log p`` of every decision taken — each emitted token and each blank that
ended a frame; a frame left because ``max_symbols`` was reached adds nothing for leaving it.
With ``max_symbols=1`` this is exactly the log-probability of the path in the
one-symbol-per-frame topology (see :mod:`xtrans.search.beam`).

The search is a streaming state machine: :meth:`GreedySearch.init_state` makes a
:class:`GreedyState`, :meth:`GreedySearch.step` consumes any number of encoder frames (a chunk)
and returns the new state, :meth:`GreedySearch.results` reads the hypotheses. Feeding the frames
chunk by chunk gives exactly what one call with all the frames gives; the offline
:func:`greedy_search` is that single call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F

from xtrans.search.hypothesis import Hypothesis, PredictorState, check_chunk, initial_prediction, where_state


@dataclass
class GreedyState:
    """Greedy search over ``B`` streams, carried from chunk to chunk.

    Attributes:
        predictor_state: the prediction network's state after each stream's tokens.
        predictor_proj: (B, J) its output projected by the joiner (``p_u`` in the joiner space).
        tokens: per stream, the emitted token ids.
        timestamps: per stream, the frame of each emitted token.
        scores: (B,) float64, the log-probability of the decisions so far (module docstring).
        num_frames: (B,) long, encoder frames consumed per stream (the next frame's index).
    """

    predictor_state: PredictorState
    predictor_proj: torch.Tensor
    tokens: List[List[int]]
    timestamps: List[List[int]]
    scores: torch.Tensor
    num_frames: torch.Tensor

    @property
    def batch_size(self) -> int:
        return len(self.tokens)


class GreedySearch:
    """Greedy search with a model's prediction network and joiner (streaming or offline).

    Args:
        model: a :class:`~xtrans.models.transducer.Transducer` (``.predictor``, ``.joiner``, ``.blank``).
        max_symbols: most tokens emitted per frame (>= 1).
    """

    def __init__(self, model, max_symbols: int = 3):
        if max_symbols < 1:
            raise ValueError(f"max_symbols: expected >= 1, found {max_symbols}")
        self.model = model
        self.max_symbols = max_symbols

    @torch.no_grad()
    def init_state(self, batch_size: int = 1, device=None) -> GreedyState:
        """The state of ``batch_size`` empty streams (nothing emitted, frame 0)."""
        if device is None:
            device = next(self.model.parameters()).device
        state, proj = initial_prediction(self.model, batch_size, device)
        return GreedyState(
            predictor_state=state, predictor_proj=proj,
            tokens=[[] for _ in range(batch_size)], timestamps=[[] for _ in range(batch_size)],
            scores=torch.zeros(batch_size, dtype=torch.float64, device=device),
            num_frames=torch.zeros(batch_size, dtype=torch.long, device=device))

    @torch.no_grad()
    def step(self, enc: torch.Tensor, state: GreedyState,
             lengths: Optional[torch.Tensor] = None) -> GreedyState:
        """Consumes a chunk of encoder frames.

        Args:
            enc: (B, T, D) encoder frames, the next ``T`` frames of each stream.
            state: the state after the previous chunk.
            lengths: (B,) valid frames of each stream in this chunk (default all ``T``).

        Returns:
            the new state (``state`` itself is not modified).
        """
        lengths = check_chunk(enc, lengths, state.batch_size)
        predictor, joiner, blank = self.model.predictor, self.model.joiner, self.model.blank
        enc_proj = joiner.encoder_proj(enc)  # (B, T, J)
        pstate, pproj, scores = state.predictor_state, state.predictor_proj, state.scores
        tokens = [list(t) for t in state.tokens]
        times = [list(t) for t in state.timestamps]
        offsets = state.num_frames.tolist()
        for t in range(enc.shape[1]):
            active = lengths > t  # (B,) streams still on a frame
            if not bool(active.any()):
                break
            for _ in range(self.max_symbols):
                logits = joiner(enc_proj[:, t], pproj, projected=True)  # (B, V)
                best_logp, best = F.log_softmax(logits.float(), dim=-1).max(dim=-1)
                scores = scores + torch.where(active, best_logp.double(), torch.zeros_like(scores))
                emit = active & (best != blank)
                if not bool(emit.any()):
                    break
                for b in emit.nonzero()[:, 0].tolist():
                    tokens[b].append(int(best[b]))
                    times[b].append(offsets[b] + t)
                out, stepped = predictor.step(best, pstate)
                pstate = where_state(emit, stepped, pstate)
                pproj = torch.where(emit[:, None], joiner.predictor_proj(out), pproj)
                active = emit
        return GreedyState(predictor_state=pstate, predictor_proj=pproj, tokens=tokens, timestamps=times,
                           scores=scores, num_frames=state.num_frames + lengths.to(state.num_frames.device))

    def results(self, state: GreedyState) -> List[Hypothesis]:
        """The hypothesis of every stream so far (B entries)."""
        return [Hypothesis(tokens=list(tok), timestamps=list(tim), score=float(s))
                for tok, tim, s in zip(state.tokens, state.timestamps, state.scores.tolist())]

    def __call__(self, enc: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> List[Hypothesis]:
        """Offline search of a padded batch: (B, T, D), (B,) -> B hypotheses."""
        if enc.dim() != 3:
            raise ValueError(f"enc: expected encoder frames (B, T, D), found shape {tuple(enc.shape)}")
        state = self.init_state(enc.shape[0], enc.device)
        return self.results(self.step(enc, state, lengths))


def greedy_search(model, enc: torch.Tensor, enc_lengths: Optional[torch.Tensor] = None,
                  max_symbols: int = 3) -> List[Hypothesis]:
    """Offline greedy search of a batch of encoder outputs.

    Args:
        model: the transducer.
        enc: (B, T, D) encoder frames, padded.
        enc_lengths: (B,) valid frames (default all ``T``).
        max_symbols: most tokens per frame.

    Returns:
        one :class:`Hypothesis` per utterance (score as in the module docstring).
    """
    return GreedySearch(model, max_symbols)(enc, enc_lengths)
