"""What steers a recognizer's search: its LM and hotwords, combined into one scorer per stream.

A recognizer (:class:`xtrans.inference.Speech2Text`, :class:`xtrans.onnx.OnnxSpeech2Text`)
holds one :class:`SearchContext`: the LM for shallow fusion (:class:`~xtrans.context.lm.LMScorer`,
shared by all streams), the recognizer's default hotwords, and how to spell phrases in the
model's tokens. :meth:`SearchContext.scorer` gives a stream its scorer — the LM plus the stream's
own hotwords where it has some, else the defaults — as a :class:`ScorerSum` when both are there.
Both need modified beam search: greedy search takes the best symbol at once and has no beam for
context to reorder, so asking greedy search for them is an error.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from xtrans.context.graph import ContextGraph
from xtrans.context.hotwords import DEFAULT_HOTWORDS_SCORE, WORD_REWARD, build_context_graph, check_score
from xtrans.context.lm import DEFAULT_LM_SCALE, LMScorer
from xtrans.context.pieces import WORD_MARK


class ScorerSum:
    """Several scorers as one: their scores add up; the state is the tuple of their states.

    Args:
        scorers: two or more :class:`~xtrans.search_core.scorer.Scorer` of one vocabulary size.
    """

    def __init__(self, scorers: Sequence[Any]):
        sizes = {s.vocab_size for s in scorers}
        if len(sizes) != 1:
            raise ValueError(f"scorers: expected one vocabulary size, found {sorted(sizes)}")
        self.scorers = list(scorers)
        self.vocab_size = sizes.pop()

    def start(self) -> Tuple[Any, ...]:
        return tuple(s.start() for s in self.scorers)

    def scores(self, state: Tuple[Any, ...]) -> np.ndarray:
        return sum(s.scores(x) for s, x in zip(self.scorers, state))

    def advance(self, state: Tuple[Any, ...], token: int) -> Tuple[Any, ...]:
        return tuple(s.advance(x, token) for s, x in zip(self.scorers, state))

    def final(self, state: Tuple[Any, ...]) -> float:
        return float(sum(s.final(x) for s, x in zip(self.scorers, state)))

    def boosts(self, state: Tuple[Any, ...]) -> Optional[np.ndarray]:
        """The part of :meth:`scores` that its boosting scorers (hotwords) give; None when none boosts."""
        parts = [s.boosts(x) for s, x in zip(self.scorers, state) if hasattr(s, "boosts")]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None


def combine(scorers: Sequence[Optional[Any]]) -> Optional[Any]:
    """The scorers that are not None as one: None, the only one, or a :class:`ScorerSum`."""
    present = [s for s in scorers if s is not None]
    return None if not present else present[0] if len(present) == 1 else ScorerSum(present)


class SearchContext:
    """A recognizer's decode-time context: LM and hotwords (module docstring).

    Args:
        search: the recognizer's search, ``"greedy"`` or ``"beam"``.
        pieces: the piece of every token id (``tokens.txt``), for the LM's words.
        encode: text -> token ids, for hotwords.
        unk_id: the unknown token, refused in a hotword (None: none).
        lm: an ARPA file (or :class:`~xtrans.context.arpa.NgramLM`) over the pieces; None = no LM.
        lm_scale: the LM's weight ``lambda``.
        hotwords: the default hotwords of every stream (lines ``PHRASE`` or ``PHRASE :SCORE``).
        hotwords_score: the default per-token boost.

    Raises:
        ValueError: for an LM or hotwords with greedy search, a bad scale or score, or a phrase
            the tokenizer cannot spell (and as :class:`~xtrans.context.lm.LMScorer`).
    """

    def __init__(self, *, search: str, pieces: Sequence[str], encode: Callable[[str], List[int]],
                 unk_id: Optional[int] = None, lm: Union[None, str, os.PathLike, Any] = None,
                 lm_scale: float = DEFAULT_LM_SCALE, hotwords: Optional[Sequence[str]] = None,
                 hotwords_score: float = DEFAULT_HOTWORDS_SCORE):
        self.search = search
        self.vocab_size = len(pieces)
        # hotwords match as whole words where the pieces mark word starts (sentencepiece's "▁")
        starts = [i for i, piece in enumerate(pieces) if i > 0 and piece.startswith(WORD_MARK)]
        self.word_starts: Optional[List[int]] = starts or None
        self.encode = encode
        self.unk_id = unk_id
        self.hotwords_score = check_score(hotwords_score)
        if lm is not None:
            self._check_beam("lm")
        self.lm: Optional[LMScorer] = None if lm is None else LMScorer(lm, pieces, lm_scale)
        self.lm_path: Optional[str] = str(lm) if isinstance(lm, (str, os.PathLike)) else None
        self.hotwords: Optional[ContextGraph] = self.graph(hotwords) if hotwords else None

    def _check_beam(self, what: str) -> None:
        if self.search != "beam":
            raise ValueError(f"{what}: expected modified beam search (search='beam', --search beam) with it, found "
                             f"{self.search} search, which takes the best symbol at once and cannot be steered")

    def graph(self, hotwords: Sequence[str], hotwords_score: Optional[float] = None) -> ContextGraph:
        """The context graph of a hotword list (default boost: the recognizer's ``hotwords_score``).

        Raises:
            ValueError: with greedy search, or as :func:`~xtrans.context.hotwords.build_context_graph`.
        """
        self._check_beam("hotwords")
        if isinstance(hotwords, (str, bytes)):
            raise TypeError(f"hotwords: expected a list of phrases, found a single {type(hotwords).__name__}")
        score = self.hotwords_score if hotwords_score is None else hotwords_score
        return build_context_graph(list(hotwords), self.encode, self.vocab_size, score, self.unk_id,
                                   self.word_starts, WORD_REWARD if self.word_starts else None)

    def scorer(self, hotwords: Optional[Sequence[str]] = None, hotwords_score: Optional[float] = None) -> Optional[Any]:
        """A stream's scorer: the LM plus its hotwords (default: the recognizer's), or None.

        Args:
            hotwords: the stream's phrases; None = the recognizer's defaults (an empty list: none).
            hotwords_score: their default per-token boost (None: the recognizer's).

        Raises:
            ValueError: as :meth:`graph`; for ``hotwords_score`` without hotwords.
        """
        if hotwords is None:
            if hotwords_score is not None:
                raise ValueError("hotwords_score: given without hotwords; give the stream's hotwords with it")
            graph = self.hotwords
        else:
            graph = self.graph(hotwords, hotwords_score) if len(hotwords) else None
        return combine([self.lm, graph])

    def describe(self) -> dict:
        """The context as JSON values (for a recognizer's ``settings()``): ``lm`` (the file, or
        ``"<in memory>"``; None without an LM), ``lm_scale`` and ``hotwords`` (the default
        phrases' count)."""
        return {"lm": None if self.lm is None else self.lm_path or "<in memory>",
                "lm_scale": None if self.lm is None else self.lm.scale,
                "hotwords": 0 if self.hotwords is None else self.hotwords.num_phrases}
