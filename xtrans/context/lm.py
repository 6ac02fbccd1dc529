"""Shallow fusion of a token-level n-gram LM into modified beam search: the LM as a scorer.

Shallow fusion (Gulcehre et al., 2015; for transducers Kannan et al., ICASSP 2018) ranks the
hypotheses of the beam by

    log P(a | x) + lambda * log P_LM(y),      log P_LM(y) = sum_u log P_LM(y_u | y_<u) + log P_LM(</s> | y),

with ``lambda`` the LM scale: :class:`LMScorer` is a :class:`~xtrans.search_core.scorer.Scorer`
whose per-token score is ``lambda * ln P_LM(v | history)`` and whose final score is
``lambda * ln P_LM(</s> | history)``. The LM is an ARPA back-off model over the tokenizer's
pieces (:mod:`xtrans.context.arpa`, trained by ``python -m xtrans.bin.train_lm``); its words are
mapped to the model's token ids through the piece table. A token the LM does not list gets the
LM's ``<unk>`` probability.

The state is the history truncated to the longest suffix the LM lists (at most ``N - 1``
tokens): a longer history that is not listed has no back-off weight of its own, so the
probabilities of every next token are the same (KenLM's state minimisation). The scores of all
``V`` tokens after a state are computed once per state, from the state's listed successors and
the scores after the state's own suffix, and cached.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from xtrans.context.arpa import BOS, EOS, UNK, NgramLM, read_arpa

LN10 = math.log(10.0)
DEFAULT_LM_SCALE = 0.3


class LMScorer:
    """An n-gram LM over the model's tokens, scaled, as a beam-search scorer (module docstring).

    Internally the LM's words are numbered (its unigrams, in order); a state is a tuple of word
    numbers and every model token maps to its word (or to ``<unk>``).

    Args:
        lm: an :class:`~xtrans.context.arpa.NgramLM` or the path of an ARPA file.
        pieces: the piece of every token id (id 0 is the blank, never scored).
        scale: ``lambda`` >= 0 (0 adds nothing).

    Raises:
        ValueError: for a negative or non-finite scale, an LM that shares fewer than half of
            the model's pieces (trained on another tokenizer's pieces, or on words), or one
            without ``<s>``/``</s>``, or without ``<unk>`` for the pieces it lacks.
        FileNotFoundError, ArpaError: when reading the file fails.
    """

    def __init__(self, lm: Union[NgramLM, str, os.PathLike], pieces: Sequence[str], scale: float = DEFAULT_LM_SCALE):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"lm_scale: expected a finite number >= 0, found {scale!r}")
        self.lm = lm if isinstance(lm, NgramLM) else read_arpa(lm)
        self.scale = float(scale)
        self.vocab_size = len(pieces)
        words = self.lm.vocabulary
        index: Dict[str, int] = {w: i for i, w in enumerate(words)}
        for special in (BOS, EOS):
            if special not in index:
                raise ValueError(f"lm: expected the sentence marks {BOS} and {EOS} among the LM's unigrams, "
                                 f"found no {special}")
        known = [i for i in range(1, len(pieces)) if pieces[i] in index]
        if 2 * len(known) < len(pieces) - 1:
            raise ValueError(f"lm: the LM lists {len(known)} of the model's {len(pieces) - 1} tokens; expected a "
                             "token-level LM over this model's pieces (python -m xtrans.bin.train_lm with its "
                             "tokenizer)")
        missing = [pieces[i] for i in range(1, len(pieces)) if pieces[i] not in index]
        if missing and UNK not in index:
            raise ValueError(f"lm: tokens {missing[:5]} are not in the LM and it has no {UNK} for them")
        self._eos = index[EOS]
        self._bos = index[BOS]
        self._word_of = np.array([index.get(p, index.get(UNK, 0)) for p in pieces], dtype=np.int64)
        # per listed context (word numbers): its successors and back-off weight
        successors: Dict[Tuple[int, ...], Tuple[List[int], List[float]]] = {}
        unigram = np.empty(len(words), dtype=np.float64)
        self._listed = set()
        for gram, logp in self.lm.probs.items():
            ids = tuple(index[w] for w in gram)  # read_arpa's models list every word as a unigram
            if len(gram) == 1:
                unigram[ids[0]] = logp
            else:
                tokens, probs = successors.setdefault(ids[:-1], ([], []))
                tokens.append(ids[-1])
                probs.append(logp)
            if len(gram) < self.lm.order:
                self._listed.add(ids)
        self._backoff = {tuple(index[w] for w in gram): bow for gram, bow in self.lm.backoffs.items()}
        self._successors = {h: (np.array(t, dtype=np.int64), np.array(p, dtype=np.float64))
                            for h, (t, p) in successors.items()}
        self._log10: Dict[Tuple[int, ...], np.ndarray] = {(): unigram}
        self._scores: Dict[Tuple[int, ...], np.ndarray] = {}

    def _log10_all(self, state: Tuple[int, ...]) -> np.ndarray:
        """log10 P_LM(w | state) of every LM word w (in word numbers)."""
        cached = self._log10.get(state)
        if cached is None:
            cached = self._log10_all(state[1:]) + self._backoff.get(state, 0.0)
            listed = self._successors.get(state)
            if listed is not None:
                cached[listed[0]] = listed[1]
            self._log10[state] = cached
        return cached

    def _minimal(self, history: Tuple[int, ...]) -> Tuple[int, ...]:
        """The longest suffix of ``history`` (at most N - 1 words) that the LM lists."""
        history = history[max(0, len(history) - self.lm.order + 1):] if self.lm.order > 1 else ()
        while history and history not in self._listed:
            history = history[1:]
        return history

    # ---------------------------------------------------------------- the Scorer protocol
    def start(self) -> Tuple[int, ...]:
        """The history ``<s>``."""
        return self._minimal((self._bos,))

    def scores(self, state: Tuple[int, ...]) -> np.ndarray:
        """(V,) ``scale * ln P_LM(v | state)`` of every token ``v`` (0 for the blank)."""
        cached = self._scores.get(state)
        if cached is None:
            cached = self.scale * LN10 * self._log10_all(state)[self._word_of]
            cached[0] = 0.0
            self._scores[state] = cached
        return cached

    def advance(self, state: Tuple[int, ...], token: int) -> Tuple[int, ...]:
        return self._minimal(state + (int(self._word_of[token]),))

    def final(self, state: Tuple[int, ...]) -> float:
        """``scale * ln P_LM(</s> | state)``."""
        return float(self.scale * LN10 * self._log10_all(state)[self._eos])
