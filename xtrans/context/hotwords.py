"""Hotword lists: the line format, reading a file, and turning phrases into a context graph.

The format is sherpa-onnx's: one phrase per line, in the words of the model's transcripts,
optionally followed by `` :SCORE``, the per-token boost of that phrase (without it, the
stream's ``hotwords_score`` applies)::

    TURN ON THE RADIO
    XLSR TRANSDUCER :2.5

Empty lines are skipped. The same syntax serves everywhere a phrase is given as a string
(``Speech2Text.stream(hotwords=[...])``, the server's ``start`` message).

Phrases become token ids with the model's tokenizer (``encode``): the sentencepiece model where
there is one, else the ``tokens.txt`` pieces (:class:`~xtrans.context.pieces.PieceEncoder`). A
phrase the tokenizer cannot spell (a character outside the vocabulary, the unknown token) is an
error, not a silent ``<unk>``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Union

from xtrans.context.graph import ContextGraph

DEFAULT_HOTWORDS_SCORE = 1.5
"""The per-token boost of a phrase without its own (sherpa-onnx's and icefall's default)."""

WORD_REWARD = 2.0
"""Where phrases match as whole words: a complete phrase keeps at most this many of its per-token
boosts per word (:class:`~xtrans.context.graph.ContextGraph`'s ``word_reward``; docs/decoding.md)."""


@dataclass(frozen=True)
class Hotword:
    """One phrase of a hotword list.

    Attributes:
        phrase: the words, single-spaced.
        score: its per-token boost; None = the list's default (``hotwords_score``).
    """

    phrase: str
    score: Optional[float] = None


def check_score(score, name: str = "hotwords_score") -> float:
    """A per-token boost: a finite number > 0 (bools refused).

    Raises:
        ValueError: naming ``name`` otherwise.
    """
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, found {score!r}")
    return float(score)


def parse_hotword(line: str) -> Hotword:
    """One line (or string) of a hotword list: ``PHRASE`` or ``PHRASE :SCORE``.

    Raises:
        ValueError: for an empty phrase, or a ``:SCORE`` that is not a finite number > 0.
    """
    words = line.split()
    score = None
    if words and words[-1].startswith(":"):
        try:
            value = float(words[-1][1:])
        except ValueError:
            raise ValueError(f"hotword {line.strip()!r}: expected a number after ':' (PHRASE :SCORE), "
                             f"found {words[-1]!r}") from None
        score = check_score(value, f"hotword {line.strip()!r}: score")
        words = words[:-1]
    if not words:
        raise ValueError(f"hotword {line.strip()!r}: expected a phrase (PHRASE or PHRASE :SCORE), found none")
    return Hotword(" ".join(words), score)


def parse_hotwords(lines: Iterable[str]) -> List[Hotword]:
    """The phrases of a list of lines (empty lines skipped).

    Raises:
        ValueError: as :func:`parse_hotword`.
    """
    return [parse_hotword(line) for line in lines if line.strip()]


def read_hotwords(path: Union[str, os.PathLike]) -> List[str]:
    """The non-empty lines of a hotwords file (UTF-8), each checked by :func:`parse_hotword`.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: naming the file and line of a malformed entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hotwords: {path} does not exist (expected a file of one phrase per line)")
    lines = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            parse_hotword(line)
        except ValueError as err:
            raise ValueError(f"{path}:{n}: {err}") from None
        lines.append(line.strip())
    return lines


def build_context_graph(hotwords: Sequence[Union[str, Hotword]], encode: Callable[[str], List[int]],
                        vocab_size: int, hotwords_score: float = DEFAULT_HOTWORDS_SCORE,
                        unk_id: Optional[int] = None, word_starts: Optional[Sequence[int]] = None,
                        word_reward: Optional[float] = None) -> ContextGraph:
    """The context graph of a hotword list.

    Args:
        hotwords: lines (``PHRASE`` or ``PHRASE :SCORE``) or :class:`Hotword` values.
        encode: text -> token ids, the model's tokenizer.
        vocab_size: ``V`` of the model.
        hotwords_score: the per-token boost of phrases without their own.
        unk_id: the tokenizer's unknown token, refused in a phrase.
        word_starts: the tokens that begin a word (pieces starting with ``▁``): phrases then
            match as whole words only (:class:`~xtrans.context.graph.ContextGraph`).
        word_reward: a complete phrase keeps at most this many per-token boosts per word
            (None: all of them; :class:`~xtrans.context.graph.ContextGraph`).

    Raises:
        ValueError: for a malformed line, a bad score, or a phrase the tokenizer cannot spell.
    """
    default = check_score(hotwords_score)
    phrases = []
    for item in hotwords:
        hotword = item if isinstance(item, Hotword) else parse_hotword(str(item))
        try:
            tokens = list(encode(hotword.phrase))
        except ValueError as err:
            raise ValueError(f"hotwords: {hotword.phrase!r}: {err}") from None
        if not tokens:
            raise ValueError(f"hotwords: {hotword.phrase!r} encodes to no tokens; write it in the words of the "
                             "model's transcripts")
        if unk_id is not None and unk_id in tokens:
            raise ValueError(f"hotwords: {hotword.phrase!r} has characters the model's tokenizer does not know "
                             "(it encodes to the unknown token); write it as the model's transcripts are "
                             "written (e.g. in their case)")
        phrases.append((tokens, default if hotword.score is None else hotword.score))
    return ContextGraph(phrases, vocab_size, word_starts, word_reward)
