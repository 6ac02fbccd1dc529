"""Decode-time context for modified beam search: hotwords and n-gram LM fusion, without torch.

Both steer the search through its scorer hook (:mod:`xtrans.search_core.scorer`), in the
PyTorch and the onnxruntime recognizer alike:

- hotwords (:mod:`xtrans.context.hotwords`, :mod:`xtrans.context.graph`): phrases spelled in the
  model's tokens (:mod:`xtrans.context.pieces` where only ``tokens.txt`` is at hand) form an
  Aho-Corasick automaton whose tokens are boosted while a phrase is matched, the boost taken
  back when the match fails;
- an n-gram LM (:mod:`xtrans.context.arpa`, trained by :mod:`xtrans.context.ngram`) over the
  tokenizer's pieces, added by shallow fusion (:mod:`xtrans.context.lm`);
- :class:`SearchContext` (:mod:`xtrans.context.scorers`) is what a recognizer holds: the LM, its
  default hotwords, and each stream's scorer.

``docs/decoding.md`` describes the file formats, the command-line flags and the server fields.
"""

from xtrans.context.arpa import ArpaError, NgramLM, read_arpa, write_arpa
from xtrans.context.graph import ContextGraph
from xtrans.context.hotwords import (DEFAULT_HOTWORDS_SCORE, Hotword, build_context_graph, parse_hotword,
                                     parse_hotwords, read_hotwords)
from xtrans.context.lm import DEFAULT_LM_SCALE, LMScorer
from xtrans.context.ngram import train_ngram
from xtrans.context.pieces import PieceEncoder
from xtrans.context.scorers import ScorerSum, SearchContext, combine

__all__ = ["ArpaError", "ContextGraph", "DEFAULT_HOTWORDS_SCORE", "DEFAULT_LM_SCALE", "Hotword", "LMScorer",
           "NgramLM", "PieceEncoder", "ScorerSum", "SearchContext", "build_context_graph", "combine",
           "parse_hotword", "parse_hotwords", "read_arpa", "read_hotwords", "train_ngram", "write_arpa"]
