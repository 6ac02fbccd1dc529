"""What decode-time context buys (issue 22): hotword lists and LM fusion, measured on a test set.

``python -m xtrans.bin.context_table`` decodes a test set with modified beam search four ways —
no context; each utterance with a list of :data:`LIST_SIZE` phrases that contains its own
(``right``); with a list of as many phrases that does not (``distractors``); with the n-gram LM
fused (``lm``) — on three sets of utterances: the **commands** (utterances whose transcript is
one of the phrases, e.g. the demo's spoken commands) mixed with held-out noise at an SNR, and the
**whole set** in that noise and clean (there only ``none``, ``distractors`` and ``lm``: a digit
string has no right list). Lists are drawn per utterance from the phrase inventory with a
generator seeded by ``(seed, utterance index)``, so every model hears the same lists.

This module holds the lists, the report (JSON: :data:`CONTEXT_JSON`) and its ``RESULTS.md``
section; decoding is the tool's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

CONTEXT_JSON = "context.json"
"""The report's file name under a recipe's ``exp/`` (read by ``python -m xtrans.bin.score``)."""

LIST_SIZE = 10
"""Phrases per hotword list (the issue's 10-phrase lists)."""

CONTEXTS = ("none", "right", "distractors", "lm")
"""The ways each set is decoded, in the table's column order."""

SETS = ("commands_noisy", "all_noisy", "all_clean")
"""The sets of utterances measured, in the table's row order."""

_COLUMN = {"none": "no context", "right": "right list", "distractors": "distractors", "lm": "LM"}


def normalise(text: str) -> str:
    """A transcript or phrase compared as words: upper case, single spaces."""
    return " ".join(text.upper().split())


def read_phrases(path: Union[str, Path], list_size: int = LIST_SIZE) -> List[str]:
    """The phrase inventory: one phrase per line (blank lines and ``#`` comments skipped), in
    file order, each once (:func:`normalise`).

    Raises:
        ValueError: naming the file, with fewer than ``list_size + 1`` distinct phrases (a
            distractor list of ``list_size`` needs one more than the utterance's own).
        OSError: when it cannot be read.
    """
    phrases: List[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        phrase = normalise(line.split("#", 1)[0])
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if len(phrases) < list_size + 1:
        raise ValueError(f"{path}: expected at least {list_size + 1} distinct phrases for lists of {list_size}, "
                         f"found {len(phrases)}")
    return phrases


def hotword_lists(utts: Sequence[str], refs: Mapping[str, str], phrases: Sequence[str], *, seed: int,
                  list_size: int = LIST_SIZE, draw: int = 0) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """Each utterance's lists: ``right`` (only utterances whose transcript is a phrase: that phrase
    and ``list_size - 1`` others, in random order) and ``distractors`` (every utterance:
    ``list_size`` phrases, none its transcript). The draws of the utterance at position ``k`` of
    ``utts`` come from ``numpy.random.default_rng([seed, k])`` (draw 0) or ``([seed, k, draw])``:
    independent lists for the same utterances, to average a measurement over.

    Raises:
        ValueError: when the inventory is too small for the lists.
    """
    phrases = [normalise(p) for p in phrases]
    if len(set(phrases)) < list_size + 1:
        raise ValueError(f"phrases: expected at least {list_size + 1} distinct phrases, found {len(set(phrases))}")
    right: Dict[str, List[str]] = {}
    distractors: Dict[str, List[str]] = {}
    for k, utt in enumerate(utts):
        rng = np.random.default_rng([seed, k] if draw == 0 else [seed, k, draw])
        ref = normalise(refs[utt])
        others = [p for p in phrases if p != ref]
        picked = [others[i] for i in rng.permutation(len(others))[:list_size]]
        distractors[utt] = picked
        if ref in phrases:
            mixed = picked[:list_size - 1] + [ref]
            right[utt] = [mixed[i] for i in rng.permutation(list_size)]
    return right, distractors


def command_utts(utts: Sequence[str], refs: Mapping[str, str], phrases: Sequence[str]) -> List[str]:
    """The utterances whose transcript is one of the phrases, in ``utts``' order."""
    inventory = {normalise(p) for p in phrases}
    return [u for u in utts if normalise(refs[u]) in inventory]


# ---------------------------------------------------------------------------- the report

def check_report(report: Any, source: str = "<report>") -> Dict[str, Any]:
    """Checks the shape of a report read from JSON (``models`` with ``tag``, ``streaming`` and
    ``wer``: set -> context -> entry with ``wer``).

    Raises:
        ValueError: naming ``source`` and what is missing.
    """
    if not isinstance(report, dict) or not isinstance(report.get("models"), list) or "snr_db" not in report:
        raise ValueError(f"{source}: expected a context report with 'snr_db' and 'models', found "
                         f"{type(report).__name__}")
    for n, m in enumerate(report["models"]):
        if not isinstance(m, dict) or not {"tag", "streaming", "wer"} <= set(m) or not isinstance(m["wer"], dict):
            raise ValueError(f"{source}: models[{n}]: expected 'tag', 'streaming' and 'wer'")
        for name, cells in m["wer"].items():
            if name not in SETS or not isinstance(cells, dict) or any(
                    c not in CONTEXTS or not isinstance(v, dict) or "wer" not in v for c, v in cells.items()):
                raise ValueError(f"{source}: models[{n}].wer.{name}: expected a set of {', '.join(SETS)} "
                                 f"with entries of {', '.join(CONTEXTS)}")
    return report


def _set_label(report: Mapping[str, Any], name: str) -> str:
    snr = f"{report['snr_db']:g} dB SNR"
    return {"commands_noisy": f"commands, {snr} ({report['num_commands']})",
            "all_noisy": f"all, {snr} ({report['num_utts']})",
            "all_clean": f"all, clean ({report['num_utts']})"}[name]


def _cell(cells: Mapping[str, Any], context: str) -> str:
    entry = cells.get(context)
    if entry is None:
        return "-"
    text = f"{entry['wer']:.2f}"
    base = cells.get("none")
    if context != "none" and base is not None:
        delta = entry["wer"] - base["wer"]
        rel = f", {100 * delta / base['wer']:+.0f}%" if base["wer"] > 0 else ""
        text += f" ({delta:+.2f}{rel})"
    return text


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table: one row per model and set, WER (%) per context."""
    head = f"{'model':<10} {'set':<28} " + " ".join(f"{_COLUMN[c]:>22}" for c in CONTEXTS)
    lines = [head, "-" * len(head)]
    for m in report["models"]:
        for name in SETS:
            if name in m["wer"]:
                lines.append(f"{m['tag']:<10} {_set_label(report, name):<28} "
                             + " ".join(f"{_cell(m['wer'][name], c):>22}" for c in CONTEXTS))
    return "\n".join(lines) + "\n"


def _draws_text(report: Mapping[str, Any]) -> str:
    draws = int(report.get("draws", 1))
    return "" if draws == 1 else f"; {draws} lists per utterance, their errors pooled"


def results_section(report: Mapping[str, Any], plot: Optional[str] = None) -> str:
    """The ``RESULTS.md`` section of a report (``plot``: the PNG's path relative to the file)."""
    lm = report.get("lm")
    lm_text = "no LM was given" if lm is None else (
        f"the token n-gram LM `{lm['path']}` fused with scale {lm['scale']:g}"
        + (f", the best of {', '.join(f'{s:g}' for s in lm['scales'])} on `{lm['tuned_on']}` "
           f"(dev WER {', '.join(f'{w:.2f}' for w in lm['dev_wer'])}; no LM {lm['dev_wer_without']:.2f})"
           if lm.get("tuned_on") else ""))
    left_out = report.get("unspelled") or []
    unspelled = f" ({len(left_out)} more left out: the model's tokens cannot spell them)" if left_out else ""
    lines = [
        "## Decode-time context",
        "",
        f"WER (%) on `{report['data']}` with modified beam search (beam {report['beam']}), each model under its "
        f"streaming rule (`python -m xtrans.bin.context_table`). **commands**: the {report['num_commands']} "
        f"utterances whose transcript is one of the {report['num_phrases']} phrases of `{report['phrases']}`"
        f"{unspelled}; "
        f"**{report['snr_db']:g} dB SNR**: {report['noise']}. **right list**: {report['list_size']} phrases per "
        f"utterance, its own among them; **distractors**: {report['list_size']} phrases, none its own (drawn per "
        f"utterance, seed {report['seed']}{_draws_text(report)}); per-token boost {report['hotwords_score']:g}. "
        f"**LM**: {lm_text}. In "
        "brackets: the change against no context (points, relative).",
        "",
        "| model | streaming | utterances | " + " | ".join(_COLUMN[c] for c in CONTEXTS) + " |",
        "|---|---|---|" + "---|" * len(CONTEXTS),
    ]
    for m in report["models"]:
        for name in SETS:
            if name in m["wer"]:
                lines.append(f"| {m['tag']} | {m['streaming']['description']} | {_set_label(report, name)} | "
                             + " | ".join(_cell(m["wer"][name], c) for c in CONTEXTS) + " |")
    if plot:
        lines += ["", f"![decode-time context]({plot})"]
    return "\n".join(lines) + "\n"
