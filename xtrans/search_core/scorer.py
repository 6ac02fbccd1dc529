"""The scorer hook of modified beam search: context that adds a score for each emitted token.

A :class:`Scorer` steers the search of one stream at decode time — hotwords
(:class:`xtrans.context.ContextGraph`), a language model by shallow fusion
(:class:`xtrans.context.LMScorer`), or their sum (:class:`xtrans.context.ScorerSum`). Each
hypothesis of the beam carries its own scorer state; when the search extends a hypothesis whose
state is ``s`` by token ``v`` its score gains ``scores(s)[v]`` and its state becomes
``advance(s, v)``; a blank adds nothing and keeps the state. With the scorer's per-token scores
``c``, a hypothesis ``y`` of the one-symbol-per-frame topology (:mod:`xtrans.search_core.beam`)
is ranked by

    score(y) = log P(a | x) + sum_u c(y_u | s_u) + final(s_U),

where ``s_u`` is the state after ``y_1 .. y_u``: the scores enter the top-``beam`` selection of
every frame (they are added before it), and ``final`` (e.g. the LM's end of sentence, or taking
back the boost of a phrase left unfinished) is added when results are read. A scorer's state
depends only on the tokens, so the alignments that merge into one hypothesis (same tokens) carry
equal states and scores; the merged hypothesis keeps the state of the best of them.

A scorer is called from numpy and Python only: it needs no torch.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Scorer(Protocol):
    """Per-hypothesis context for modified beam search (module docstring).

    Attributes:
        vocab_size: ``V``, the length of :meth:`scores`.
    """

    vocab_size: int

    def start(self) -> Any:
        """The state of an empty hypothesis."""

    def scores(self, state: Any) -> np.ndarray:
        """(V,) float64: what emitting each token next adds to the score (natural log units;
        the blank's entry is ignored). The caller does not modify the array."""

    def advance(self, state: Any, token: int) -> Any:
        """The state after emitting ``token`` (not the blank); it must agree with :meth:`scores`."""

    def final(self, state: Any) -> float:
        """What ending the hypothesis in ``state`` adds (0 when nothing)."""
