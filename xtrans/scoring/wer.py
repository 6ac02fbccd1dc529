"""Word error rate with per-utterance alignments (as sclite / Kaldi ``compute-wer`` / ESPnet ``result.txt``).

An alignment of a reference and a hypothesis word sequence is a minimum-cost edit script,
every step one of ``C`` (correct), ``S`` (substitution), ``D`` (deletion: a reference word the
hypothesis lacks) or ``I`` (insertion: a hypothesis word the reference lacks), each error
costing 1. The dynamic program is the Levenshtein recursion::

    d[i][0] = i,  d[0][j] = j
    d[i][j] = min(d[i-1][j-1] + [ref[i-1] != hyp[j-1]],  d[i-1][j] + 1 (D),  d[i][j-1] + 1 (I))

and the word error rate is ``WER = 100 * (S + D + I) / N`` with ``N`` reference words. Among
alignments of equal cost, the backtrace prefers a diagonal step (C or S), then a deletion, then
an insertion, so the result is deterministic.

Example::

    >>> a = align("A B C D".split(), "A X C D E".split())
    >>> a.ops
    ['C', 'S', 'C', 'C', 'I']
    >>> (a.counts.sub, a.counts.ins)
    (1, 1)
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

GAP = "***"
"""The filler shown opposite an inserted or deleted word in ``result.txt``."""


@dataclass
class ErrorCounts:
    """Word and sentence counts of one utterance or a whole set.

    Attributes:
        ref_words: ``N``, reference words.
        cor, sub, dele, ins: correct words, substitutions, deletions, insertions.
        sentences: utterances scored.
        sentence_errors: utterances with at least one error.
    """

    ref_words: int = 0
    cor: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        """Word error rate in percent; 0 with no reference words and no errors, ``inf`` with errors."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else math.inf
        return 100.0 * self.errors / self.ref_words

    @property
    def ser(self) -> float:
        """Sentence error rate in percent."""
        return 100.0 * self.sentence_errors / self.sentences if self.sentences else 0.0

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(*(a + b for a, b in zip(self._values(), other._values())))

    def _values(self) -> Tuple[int, ...]:
        return (self.ref_words, self.cor, self.sub, self.dele, self.ins, self.sentences, self.sentence_errors)

    def to_dict(self) -> Dict[str, float]:
        """Plain values for ``wer.json``: N, C, S, D, I, WER (%), sentences, SER (%)."""
        return {"N": self.ref_words, "C": self.cor, "S": self.sub, "D": self.dele, "I": self.ins,
                "WER": self.wer, "sentences": self.sentences, "sentence_errors": self.sentence_errors,
                "SER": self.ser}


@dataclass
class Alignment:
    """The alignment of one utterance.

    Attributes:
        ref: reference words.
        hyp: hypothesis words.
        ops: one of ``C S D I`` per step.
        pairs: per step ``(ref word or None, hyp word or None)`` (None opposite I / D).
    """

    ref: List[str]
    hyp: List[str]
    ops: List[str]
    pairs: List[Tuple[Optional[str], Optional[str]]]

    @property
    def counts(self) -> ErrorCounts:
        c = ErrorCounts(ref_words=len(self.ref), cor=self.ops.count("C"), sub=self.ops.count("S"),
                        dele=self.ops.count("D"), ins=self.ops.count("I"), sentences=1)
        c.sentence_errors = int(c.errors > 0)
        return c


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """A minimum edit-distance alignment of two word sequences (see the module docstring)."""
    ref, hyp = list(ref), list(hyp)
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        row, prev, r = d[i], d[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (r != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    ops: List[str] = []
    pairs: List[Tuple[Optional[str], Optional[str]]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append("C" if ref[i - 1] == hyp[j - 1] else "S")
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append("D")
            pairs.append((ref[i - 1], None))
            i -= 1
        else:
            ops.append("I")
            pairs.append((None, hyp[j - 1]))
            j -= 1
    ops.reverse()
    pairs.reverse()
    return Alignment(ref, hyp, ops, pairs)


@dataclass
class ScoreResult:
    """Alignments of a set of utterances and their totals.

    Attributes:
        alignments: utterance id -> :class:`Alignment`, sorted by id.
        missing: reference utterances without a hypothesis (scored as all deletions).
    """

    alignments: Dict[str, Alignment]
    missing: List[str] = field(default_factory=list)

    @property
    def counts(self) -> ErrorCounts:
        total = ErrorCounts()
        for a in self.alignments.values():
            total = total + a.counts
        return total

    def summary(self) -> Dict[str, float]:
        """:meth:`ErrorCounts.to_dict` of the totals, plus the number of missing hypotheses."""
        return {**self.counts.to_dict(), "missing": len(self.missing)}


def score(refs: Mapping[str, str], hyps: Mapping[str, str], ignore_case: bool = False) -> ScoreResult:
    """Aligns every reference with its hypothesis (words split on whitespace).

    Args:
        refs: utterance id -> reference text.
        hyps: utterance id -> hypothesis text; a reference without one is scored against an
            empty hypothesis and listed in :attr:`ScoreResult.missing`.
        ignore_case: compare words case-insensitively (shown upper-cased).

    Raises:
        ValueError: when a hypothesis has no reference (the wrong ``ref`` file?).
    """
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(f"hyps: {len(extra)} utterance(s) have no reference, e.g. {extra[0]!r}; "
                         "score against the reference of the decoded data directory")
    missing = sorted(set(refs) - set(hyps))
    if missing:
        logger.warning("%d of %d utterances have no hypothesis (scored as deletions), e.g. %s",
                       len(missing), len(refs), missing[0])

    def words(text: str) -> List[str]:
        return (text.upper() if ignore_case else text).split()

    alignments = {utt: align(words(refs[utt]), words(hyps.get(utt, ""))) for utt in sorted(refs)}
    return ScoreResult(alignments, missing)


def _aligned_rows(a: Alignment) -> Tuple[str, str, str]:
    """REF / HYP / Eval lines with columns padded to the wider word (sclite style)."""
    refs, hyps, evals = [], [], []
    for op, (r, h) in zip(a.ops, a.pairs):
        r, h = r if r is not None else GAP, h if h is not None else GAP
        width = max(len(r), len(h))
        refs.append(r.ljust(width))
        hyps.append(h.ljust(width))
        evals.append(("" if op == "C" else op).ljust(width))
    return " ".join(refs).rstrip(), " ".join(hyps).rstrip(), " ".join(evals).rstrip()


def format_summary(counts: ErrorCounts, missing: int = 0) -> str:
    """Kaldi ``compute-wer`` style totals: ``%WER``, ``%SER`` and the number scored."""
    wer = "inf" if math.isinf(counts.wer) else f"{counts.wer:.2f}"
    return (f"%WER {wer} [ {counts.errors} / {counts.ref_words}, {counts.ins} ins, {counts.dele} del, "
            f"{counts.sub} sub ]\n"
            f"%SER {counts.ser:.2f} [ {counts.sentence_errors} / {counts.sentences} ]\n"
            f"Scored {counts.sentences} sentences, {missing} not present in hyp.\n")


def format_result(result: ScoreResult) -> str:
    """The text of ``result.txt``: the summary, then per utterance its counts and aligned lines::

        id: (utt1)
        Scores: (#C #S #D #I) 3 1 0 1
        REF:  A B C D ***
        HYP:  A X C D E
        Eval:   S       I
    """
    total = result.counts
    lines = [format_summary(total, len(result.missing)),
             f"N={total.ref_words} C={total.cor} S={total.sub} D={total.dele} I={total.ins}\n"]
    for utt, a in result.alignments.items():
        c = a.counts
        ref, hyp, ev = _aligned_rows(a)
        lines.append(f"id: ({utt})\nScores: (#C #S #D #I) {c.cor} {c.sub} {c.dele} {c.ins}\n"
                     f"REF:  {ref}\nHYP:  {hyp}\nEval: {ev}\n".replace(" \n", "\n"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- files

def read_text(path: Union[str, os.PathLike]) -> Dict[str, str]:
    """A Kaldi ``text`` file (``<utt> <words...>``, empty text allowed) or an sclite ``.trn``
    file (``<words...> (<utt>)``), chosen by the file name's ``.trn`` suffix.

    Raises:
        ValueError: on a duplicate utterance id or a ``.trn`` line without ``(<utt>)``.
    """
    path = Path(path)
    trn = path.suffix == ".trn"
    out: Dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if trn:
            if not line.endswith(")") or "(" not in line:
                raise ValueError(f"{path}:{n}: expected '<words> (<utt>)', found {line!r}")
            words, _, utt = line[:-1].rpartition("(")
            utt, words = utt.strip(), words.strip()
        else:
            utt, _, words = line.partition(" ")
            words = words.strip()
        if utt in out:
            raise ValueError(f"{path}:{n}: utterance {utt!r} appears twice")
        out[utt] = words
    return out


def write_text(items: Iterable[Tuple[str, str]], path: Union[str, os.PathLike]) -> None:
    """Writes a Kaldi ``text`` file, sorted by utterance id."""
    Path(path).write_text("".join(f"{u} {t}".rstrip() + "\n" for u, t in sorted(items)), encoding="utf-8")


def write_trn(items: Iterable[Tuple[str, str]], path: Union[str, os.PathLike]) -> None:
    """Writes an sclite ``.trn`` file (``<words> (<utt>)``), sorted by utterance id."""
    Path(path).write_text("".join(f"{t} ({u})".lstrip() + "\n" for u, t in sorted(items)), encoding="utf-8")
