"""Back-off n-gram language models in the ARPA format: reading, writing, querying.

An ARPA file (the format of SRILM and KenLM) lists every n-gram the model stores with its
log10 probability and, for n-grams that are contexts of longer ones, a log10 back-off weight::

    \\data\\
    ngram 1=5
    ngram 2=7

    \\1-grams:
    -99       <s>   -0.30103
    -0.69897  </s>
    -0.52288  A     -0.17609
    ...

    \\2-grams:
    -0.17609  <s> A
    ...

    \\end\\

The probability of word ``w`` after the history ``h = (h_1 .. h_k)`` (truncated to the model's
order minus one) is the stored one when ``h w`` is listed, else the back-off

    log P(w | h) = bow(h) + log P(w | h_2 .. h_k),        bow(h) = 0 when h is not listed,

down to the unigram. ``<s>`` starts every sentence (it is a context, never predicted: its
probability is -99), ``</s>`` ends it. Words are whitespace-free strings; for the token-level
LMs of xtrans they are the tokenizer's pieces (``▁THE``), see :mod:`xtrans.context.ngram`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
NO_PROB = -99.0
"""The log10 probability written for ``<s>`` (never predicted)."""

Ngram = Tuple[str, ...]


class ArpaError(ValueError):
    """A malformed ARPA file.

    Attributes:
        path: the file.
        line: the 1-based line number (0 when the problem is not on one line).
        reason: what is wrong.
    """

    def __init__(self, path, line: int, reason: str):
        super().__init__(f"{path}{f':{line}' if line else ''}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass
class NgramLM:
    """A back-off n-gram model (module docstring): log10 probabilities and back-off weights.

    Attributes:
        order: ``N``, the longest n-gram.
        probs: n-gram -> log10 probability, for every listed n-gram (all orders).
        backoffs: n-gram -> log10 back-off weight, for the listed n-grams that have one.
    """

    order: int
    probs: Dict[Ngram, float] = field(default_factory=dict)
    backoffs: Dict[Ngram, float] = field(default_factory=dict)

    @property
    def vocabulary(self) -> List[str]:
        """The unigrams, in the order they are listed."""
        return [g[0] for g in self.probs if len(g) == 1]

    def counts(self) -> List[int]:
        """Listed n-grams per order, 1 .. N."""
        out = [0] * self.order
        for g in self.probs:
            out[len(g) - 1] += 1
        return out

    def log10_prob(self, word: str, history: Sequence[str] = ()) -> float:
        """log10 P(word | history) by back-off (module docstring); history oldest first, any
        length (its last ``N - 1`` words count). A word that is not a unigram falls back to
        ``<unk>`` when the model has it.

        Raises:
            KeyError: for a word that is neither a unigram nor covered by ``<unk>``.
        """
        if (word,) not in self.probs:
            if (UNK,) not in self.probs:
                raise KeyError(f"word {word!r} is not in the LM's vocabulary (and it has no {UNK})")
            word = UNK
        h = tuple(history)[max(0, len(history) - self.order + 1):] if self.order > 1 else ()
        total = 0.0
        while True:
            p = self.probs.get(h + (word,))
            if p is not None:
                return total + p
            total += self.backoffs.get(h, 0.0)
            h = h[1:]


def _number(text: str, path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArpaError(path, line, f"expected a number, found {text!r}") from None
    if math.isnan(value):
        raise ArpaError(path, line, "expected a number, found nan")
    return value


def read_arpa(path: Union[str, os.PathLike]) -> NgramLM:
    """Reads an ARPA file (plain text, UTF-8).

    Raises:
        FileNotFoundError: when it does not exist.
        ArpaError: for a malformed file (the message names the line), or counts that disagree
            with the listed n-grams.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lm: {path} does not exist (expected an ARPA file, e.g. from "
                                "python -m xtrans.bin.train_lm)")
    declared: Dict[int, int] = {}
    lm = NgramLM(order=0)
    section = None  # None before \data\, 0 in \data\, n in \n-grams:, -1 after \end\
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if section is None:
                if line == "\\data\\":
                    section = 0
                continue  # anything before \data\ is a comment
            if line == "\\end\\":
                section = -1
                break
            if line.startswith("\\") and line.endswith("-grams:"):
                try:
                    section = int(line[1:-len("-grams:")])
                except ValueError:
                    raise ArpaError(path, number, f"expected a section header \\N-grams:, found {line!r}") from None
                if section not in declared:
                    raise ArpaError(path, number, f"section {line} without 'ngram {section}=' in \\data\\")
                continue
            if section == 0:
                if not line.startswith("ngram ") or "=" not in line:
                    raise ArpaError(path, number, f"expected 'ngram N=COUNT' in \\data\\, found {line!r}")
                n, count = line[len("ngram "):].split("=", 1)
                try:
                    declared[int(n)] = int(count)
                except ValueError:
                    raise ArpaError(path, number, f"expected 'ngram N=COUNT', found {line!r}") from None
                continue
            fields = line.split()
            if len(fields) not in (section + 1, section + 2):
                raise ArpaError(path, number, f"expected 'logprob' + {section} word(s) [+ backoff], found {line!r}")
            gram = tuple(fields[1:section + 1])
            lm.probs[gram] = _number(fields[0], path, number)
            if len(fields) == section + 2:
                lm.backoffs[gram] = _number(fields[-1], path, number)
    if section is None:
        raise ArpaError(path, 0, "no \\data\\ section: not an ARPA file")
    if section != -1:
        raise ArpaError(path, 0, "no \\end\\: the file is truncated")
    lm.order = max(declared) if declared else 0
    found = lm.counts()
    for n, count in declared.items():
        if found[n - 1] != count:
            raise ArpaError(path, 0, f"\\data\\ declares ngram {n}={count}, found {found[n - 1]} {n}-grams")
    if lm.order < 1 or not found[0]:
        raise ArpaError(path, 0, "expected at least one unigram")
    unigrams = {g[0] for g in lm.probs if len(g) == 1}
    for g in lm.probs:
        if len(g) > 1 and not unigrams.issuperset(g):
            raise ArpaError(path, 0, f"the {len(g)}-gram {' '.join(g)!r} has words that are not unigrams")
    return lm


def _format(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".") if value != NO_PROB else "-99"


def write_arpa(lm: NgramLM, path: Union[str, os.PathLike]) -> None:
    """Writes ``lm`` as an ARPA file (n-grams by order, in the model's order; 8 decimals)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    by_order: List[List[Ngram]] = [[] for _ in range(lm.order)]
    for g in lm.probs:
        by_order[len(g) - 1].append(g)
    lines = ["", "\\data\\"] + [f"ngram {n + 1}={len(grams)}" for n, grams in enumerate(by_order)] + [""]
    for n, grams in enumerate(by_order):
        lines.append(f"\\{n + 1}-grams:")
        for g in grams:
            line = f"{_format(lm.probs[g])}\t{' '.join(g)}"
            if g in lm.backoffs:
                line += f"\t{_format(lm.backoffs[g])}"
            lines.append(line)
        lines.append("")
    lines.append("\\end\\")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
