"""Training a back-off n-gram LM from token sequences: interpolated Witten-Bell smoothing.

Each sentence ``w_1 .. w_n`` is counted as ``<s> w_1 .. w_n </s>``: every k-gram (k = 1 .. N)
that does not predict ``<s>``. The model predicts the words ``W`` = the given vocabulary plus
``</s>`` (``M = |W|``; a word outside the vocabulary counts as ``<unk>``, which must then be in
it). With ``c(h w)`` the count of ``h w``, ``c(h) = sum_w c(h w)`` and ``T(h)`` the number of
distinct words seen after ``h``, interpolated Witten-Bell (Witten & Bell 1991; Chen & Goodman
1998, section 2.4) is

    P(w | h) = (c(h w) + T(h) P(w | h')) / (c(h) + T(h))     for a history h seen as a context,
    P(w | h) = P(w | h')                                      for an unseen one,
    P(w)     = (c(w) + T / M) / (c + T)                        (the uniform distribution below it),

with ``h'`` the history without its oldest word. For ``w`` unseen after ``h`` the first line is
``T(h) / (c(h) + T(h)) * P(w | h')``, a back-off with the weight ``bow(h) = T(h) / (c(h) + T(h))``,
so the model is exactly an ARPA back-off model (:mod:`xtrans.context.arpa`): the listed k-grams
are the seen ones with their interpolated probabilities, each seen context carries its weight,
and every unigram of ``W`` is listed. Every conditional distribution sums to 1 over ``W``:
``(c(h) + T(h) * 1) / (c(h) + T(h))``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Sequence, Set, Tuple

from xtrans.context.arpa import BOS, EOS, NO_PROB, UNK, Ngram, NgramLM


def count_ngrams(sentences: Iterable[Sequence[str]], order: int, vocabulary: Set[str]) -> Dict[Ngram, int]:
    """Counts of every k-gram (k <= ``order``) of ``<s> sentence </s>`` that does not end in ``<s>``;
    words outside ``vocabulary`` count as ``<unk>``."""
    counts: Counter = Counter()
    for sentence in sentences:
        words = [BOS] + [w if w in vocabulary else UNK for w in sentence] + [EOS]
        for end in range(1, len(words)):
            for k in range(1, order + 1):
                if end - k + 1 < 0:
                    break
                counts[tuple(words[end - k + 1:end + 1])] += 1
    return counts


def train_ngram(sentences: Iterable[Sequence[str]], order: int, vocabulary: Sequence[str]) -> NgramLM:
    """An interpolated Witten-Bell n-gram model of ``sentences`` (module docstring).

    Args:
        sentences: word (token piece) sequences, without ``<s>``/``</s>``.
        order: ``N`` >= 1.
        vocabulary: the words the model predicts besides ``</s>`` (every one gets a unigram,
            seen or not); ``<unk>`` among them catches words outside it.

    Raises:
        ValueError: for an order < 1, an empty vocabulary or one holding ``<s>``/``</s>``, no
            sentence, or a word outside the vocabulary without ``<unk>`` in it.
    """
    if order < 1:
        raise ValueError(f"order: expected >= 1, found {order}")
    words = list(dict.fromkeys(vocabulary))
    if not words or BOS in words or EOS in words:
        raise ValueError(f"vocabulary: expected words other than {BOS} and {EOS}, found {len(words)} word(s)")
    known = set(words)
    sentences = [list(s) for s in sentences]
    if not sentences:
        raise ValueError("sentences: expected at least one sentence, found none")
    outside = sorted({w for s in sentences for w in s if w not in known})
    if outside and UNK not in known:
        raise ValueError(f"sentences: words outside the vocabulary ({outside[:5]}) and no {UNK} to count them as")
    counts = count_ngrams(sentences, order, known)
    predicted = words + [EOS]
    M = len(predicted)

    # per context h (length k-1): c(h) and T(h) over the k-grams h w
    total: Dict[Ngram, int] = defaultdict(int)
    types: Dict[Ngram, int] = defaultdict(int)
    for gram, c in counts.items():
        total[gram[:-1]] += c
        types[gram[:-1]] += 1

    lm = NgramLM(order=order)
    c0, t0 = total[()], types[()]
    unigram: Dict[str, float] = {w: (counts.get((w,), 0) + t0 / M) / (c0 + t0) for w in predicted}
    lm.probs[(BOS,)] = NO_PROB
    for w in predicted:
        lm.probs[(w,)] = math.log10(unigram[w])

    def prob(word: str, history: Tuple[str, ...]) -> float:
        """P(word | history) of the model so far (natural probability, lower orders only)."""
        return 10.0 ** lm.log10_prob(word, history)

    for k in range(2, order + 1):
        grams = sorted(g for g in counts if len(g) == k)
        new: List[Tuple[Ngram, float]] = []
        for g in grams:
            h = g[:-1]
            p = (counts[g] + types[h] * prob(g[-1], h[1:])) / (total[h] + types[h])
            new.append((g, math.log10(p)))
        for h in {g[:-1] for g in grams}:
            lm.backoffs[h] = math.log10(types[h] / (total[h] + types[h]))
        lm.probs.update(new)  # after the loop: the k-grams' lower orders are complete
    return lm
