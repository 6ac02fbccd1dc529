"""Scoring: word error rate with per-utterance alignments, ``RESULTS.md`` tables and plots.

Modules:
    wer: edit-distance alignment (C/S/D/I), totals, ``result.txt`` (sclite / Kaldi style).
    results: collects ``exp/**/decode_*/decode.json`` into rows and writes ``RESULTS.md``.
    plots: WER against chunk size, training curves from ``steps.jsonl`` (PNG).
"""

from xtrans.scoring.wer import Alignment, ErrorCounts, ScoreResult, align, format_result, read_text, score

__all__ = ["Alignment", "ErrorCounts", "ScoreResult", "align", "format_result", "read_text", "score"]
