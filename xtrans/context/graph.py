"""Hotwords as an Aho-Corasick automaton over token ids: the context graph, a beam-search scorer.

The phrases (each a token-id sequence with a per-token boost ``w``) are the keywords of an
Aho-Corasick automaton (Aho & Corasick, "Efficient string matching", CACM 1975): a trie of
the phrases, with failure links from each node to the node of its longest proper suffix that is
also a trie prefix. Two numbers per node ``n``:

- ``held(n)``: the sum of the boosts along the path root -> ``n`` — the boost a partial match
  holds while it can still complete (where phrases share a prefix, a node's boost is the
  largest of theirs);
- ``matched(n)``: the sum of ``reward(e)`` over the phrase ends ``e`` among ``n`` and its suffix
  nodes (the output links): the reward of the phrases that end here (``reward(e) = held(e)``
  unless capped, see below).

A hypothesis' state is the node of the longest suffix of its tokens that can still grow into a
phrase (a trie node with children; the root when there is none). Emitting token ``v`` in state
``n`` reaches ``m = goto(n, v)``, the automaton's transition, moves to ``n' = live(m)``, the first
node with children on ``m``'s suffix chain, and adds

    score(n, v) = matched(m) + held(n') - held(n),

and ending in state ``n`` adds ``final(n) = -held(n)``. Summed over a hypothesis, the held boosts
telescope: while a phrase is being matched every token on the path gains its boost, when the
match fails (the next token leaves the phrase) or the hypothesis ends mid-phrase the accumulated
boost is taken back, and every complete occurrence of a phrase keeps its boost ``held(e)``
(occurrences may overlap; a phrase inside another counts too). A hypothesis that leaves a
phrase halfway scores exactly what it would without hotwords. This is the rule of icefall's and
sherpa-onnx's context graph (icefall PR #1038), written as the node sums above; where a phrase
completes and cannot grow further, the boost it held turns into its reward at once (icefall
holds both until the next token).

:class:`ContextGraph` is a :class:`~xtrans.search_core.scorer.Scorer`: the state is a node id;
:meth:`ContextGraph.scores` gives ``score(n, v)`` for all ``V`` tokens (the tokens that continue
a match from ``n`` are few: they are cached per node, every other token gets ``-held(n)``).

**A complete phrase's reward.** By default (the rule above) a complete phrase keeps the sum of
its per-token boosts. Given ``word_reward`` ``k``, it keeps at most ``k`` times its per-token
boost per word: ``reward(e) = min(held(e), k * w * words(e))``, while a partial match still holds
(and gives back) the full per-token boosts. The two roles of the boost then come apart: spelled
in letters, a phrase's per-token boost adds up to several boosts per word, which is what keeps a
spelling the model doubts in the beam (the lookahead), but as a reward it lets any listed phrase
the acoustics half support win outright. With a cap the lookahead stays and the prize is per
word. With word pieces of one token per word, a cap of ``k >= 1`` changes nothing.

**Whole words.** Given ``word_starts`` (the tokens that begin a word: sentencepiece's pieces
starting with ``▁``), a phrase matches only as whole words: the automaton reads a boundary symbol
``B`` (an id past the vocabulary, boost 0) before every word-start token and at the end of the
hypothesis, and each phrase is keyed as ``B t1 ... B tj ... tk B`` (a ``B`` before each of its
word-start tokens and after its last). With word pieces of a few letters each this changes
little; with letters it is what keeps the phrase ``ON`` from being rewarded inside ``ONE`` and
``GO`` inside ``GOOD``: the match of ``ON`` is still held (boosted) through ``▁ O N``, and taken
back when ``E`` follows instead of a new word or the end.
"""

from __future__ import annotations

from collections import deque
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = 0


class ContextGraph:
    """An Aho-Corasick automaton of boosted phrases (module docstring).

    Args:
        phrases: ``(token ids, per-token boost)`` pairs; ids in ``1 .. vocab_size - 1``.
        vocab_size: ``V`` of the model (the blank included).
        word_starts: the token ids that begin a word; given, phrases match as whole words only
            (module docstring), and each phrase must begin with one of them.
        word_reward: ``k`` > 0: a complete phrase keeps at most ``k`` per-token boosts per word
            (module docstring; its words are counted by ``word_starts``, or one per phrase
            without them); None: the sum of its per-token boosts.

    Raises:
        ValueError: for an empty phrase, a token id out of range, a boost that is not a finite
            positive number, (with ``word_starts``) a phrase that does not begin a word, or a
            ``word_reward`` that is not a finite positive number.
    """

    def __init__(self, phrases: Sequence[Tuple[Sequence[int], float]], vocab_size: int,
                 word_starts: Optional[Sequence[int]] = None, word_reward: Optional[float] = None):
        if word_reward is not None and not (np.isfinite(word_reward) and word_reward > 0):
            raise ValueError(f"word_reward: expected a finite positive number of boosts per word, found {word_reward}")
        self.vocab_size = vocab_size
        self.boundary: Optional[int] = None  # the symbol B of whole-word matching (module docstring)
        self.word_start = np.zeros(vocab_size, dtype=bool)
        if word_starts is not None:
            starts = [int(v) for v in word_starts]
            if not all(0 < v < vocab_size for v in starts):
                raise ValueError(f"word_starts: expected token ids in 1 .. {vocab_size - 1}, found {starts}")
            self.word_start[starts] = True
            self.boundary = vocab_size
        self.children: List[Dict[int, int]] = [{}]
        boost: List[float] = [0.0]
        end: List[bool] = [False]
        cap: Dict[int, float] = {}  # phrase end -> the most its reward may be (word_reward)
        for tokens, score in phrases:
            tokens = [int(v) for v in tokens]
            if not tokens:
                raise ValueError("phrases: expected token sequences of at least one token, found an empty one")
            if not all(0 < v < vocab_size for v in tokens):
                raise ValueError(f"phrases: expected token ids in 1 .. {vocab_size - 1}, found {tokens}")
            if not (np.isfinite(score) and score > 0):
                raise ValueError(f"phrases: expected a finite positive boost per token, found {score}")
            if self.boundary is not None:
                if not self.word_start[tokens[0]]:
                    raise ValueError(f"phrases: expected whole words, beginning with a word-start token, found "
                                     f"{tokens}")
                keyed = [self.boundary]
                for v in tokens:
                    keyed += [self.boundary, v] if self.word_start[v] and len(keyed) > 1 else [v]
                tokens = keyed + [self.boundary]
            # B before each word and one at the end
            words = tokens.count(self.boundary) - 1 if self.boundary is not None else 1
            node = ROOT
            for v in tokens:
                w = 0.0 if v == self.boundary else float(score)
                child = self.children[node].get(v)
                if child is None:
                    child = len(self.children)
                    self.children[node][v] = child
                    self.children.append({})
                    boost.append(w)
                    end.append(False)
                else:
                    boost[child] = max(boost[child], w)
                node = child
            end[node] = True
            if word_reward is not None:
                cap[node] = max(cap.get(node, 0.0), word_reward * float(score) * max(1, words))
        n = len(self.children)
        self.num_phrases = sum(end)
        self.fail = [ROOT] * n
        self.held = np.zeros(n, dtype=np.float64)
        self.matched = np.zeros(n, dtype=np.float64)
        self.order: List[int] = []  # breadth first: a node's fail target comes before it
        queue = deque([ROOT])
        while queue:
            node = queue.popleft()
            self.order.append(node)
            for v, child in self.children[node].items():
                self.held[child] = self.held[node] + boost[child]
                if node != ROOT:
                    self.fail[child] = self.goto(self.fail[node], v)
                queue.append(child)
        self.live = list(range(n))  # the first node with children on each node's suffix chain
        for node in self.order[1:]:
            reward = min(self.held[node], cap.get(node, np.inf)) if end[node] else 0.0
            self.matched[node] = reward + self.matched[self.fail[node]]
            if not self.children[node]:
                self.live[node] = self.live[self.fail[node]]
        self._continuations: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._scores: Dict[int, np.ndarray] = {}

    @property
    def num_nodes(self) -> int:
        """Trie nodes, the root included."""
        return len(self.children)

    def goto(self, node: int, token: int) -> int:
        """The node after ``token`` in state ``node`` (the automaton's transition)."""
        while token not in self.children[node] and node != ROOT:
            node = self.fail[node]
        return self.children[node].get(token, ROOT)

    def _continuation(self, node: int) -> Tuple[np.ndarray, np.ndarray]:
        """The tokens whose transition from ``node`` is not the root, and the scores they add."""
        cached = self._continuations.get(node)
        if cached is None:
            tokens, scores, seen = [], [], set()
            m = node
            while True:  # the first node on the suffix chain with a child v is where v goes
                for v, child in self.children[m].items():
                    if v not in seen:
                        seen.add(v)
                        tokens.append(v)
                        scores.append(self.matched[child] + self.held[self.live[child]] - self.held[node])
                if m == ROOT:
                    break
                m = self.fail[m]
            cached = (np.array(tokens, dtype=np.int64), np.array(scores, dtype=np.float64))
            self._continuations[node] = cached
        return cached

    # ---------------------------------------------------------------- the Scorer protocol
    def start(self) -> int:
        """The root: nothing matched."""
        return ROOT

    def _step_scores(self, state: int) -> np.ndarray:
        """``score(state, v)`` of one automaton step for every symbol ``v`` (``B`` included)."""
        out = np.full(self.vocab_size + (self.boundary is not None), -self.held[state], dtype=np.float64)
        tokens, scores = self._continuation(state)
        out[tokens] = scores
        return out

    def _step(self, state: int, symbol: int) -> int:
        return self.live[self.goto(state, symbol)]

    def scores(self, state: int) -> np.ndarray:
        """(V,) float64: ``score(state, v)`` for every token ``v`` (module docstring); with whole
        words, a word-start token's score is that of ``B`` and then the token."""
        out = self._scores.get(state)
        if out is None:
            out = self._step_scores(state)
            if self.boundary is not None:
                after = self._step(state, self.boundary)
                out = np.where(self.word_start, out[self.boundary] + self._step_scores(after)[:-1], out[:-1])
            self._scores[state] = out
        return out.copy()

    def boosts(self, state: int) -> np.ndarray:
        """All of :meth:`scores` is boost: modified beam search also keeps the hypotheses that rank
        best without it (:mod:`xtrans.search_core.scorer`)."""
        return self.scores(state)

    def advance(self, state: int, token: int) -> int:
        token = int(token)
        if self.boundary is not None and self.word_start[token]:
            state = self._step(state, self.boundary)
        return self._step(state, token)

    def final(self, state: int) -> float:
        """``-held(state)``: a match left unfinished gives its boost back (with whole words, after
        the boundary that ends the hypothesis, which completes a phrase ending there)."""
        if self.boundary is None:
            return float(-self.held[state])
        return float(self._step_scores(state)[self.boundary] - self.held[self._step(state, self.boundary)])
