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

**Boosts.** A scorer may also have a method ``boosts(state)``: the part of ``scores(state)`` that
is a *boost* (hotwords; an LM's scores are not). A boost is provisional — a partial match holds
it and gives it back when the match fails — and while it is held it can push out of the beam the
very hypotheses that would win once it is given back. So for a stream whose scorer boosts, the
search without the boosts (``scores - boosts``) runs inside the search: each hypothesis also
carries its score in that search (``-inf`` where that search's beam does not hold it), and at
every frame the ``beam`` best extensions by score and that search's own ``beam`` best are kept.
That search evolves exactly as it would alone, so its hypotheses are always in the beam; results
are still ranked by the full score.

A scorer is called from numpy and Python only: it needs no torch.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

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


def boosts_of(scorer: Any, state: Any) -> Optional[np.ndarray]:
    """(V,) the boost part of ``scorer.scores(state)`` (module docstring), or None when the scorer
    does not boost (it has no ``boosts`` method, or that method returns None)."""
    method = getattr(scorer, "boosts", None)
    return None if method is None else method(state)
