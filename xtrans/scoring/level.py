"""Level robustness: word error rate of a model at several input gains (issue 10).

A model should recognise speech at any microphone level. The test set is decoded again at each
gain ``g`` (dB) with every waveform scaled by ``10 ** (g / 20)`` and clipped at full scale
(:func:`xtrans.data.augment.apply_gain`, the same scaled copies as gain perturbation in training),
and the robustness of a model is summarised by the largest change against the recording as it is::

    max_g |WER(g) - WER(0 dB)|      (percentage points)

``python -m xtrans.bin.level_robustness`` writes the report as JSON::

    {"gains": [-30, -20, -10, 0, 6], "data": "dump/test",
     "models": [{"tag": "stage5a", "checkpoint": "exp/stage5/5a/best.pt",
                 "streaming": {"chunk_ms": 640, "left_ms": 640, "sinks": 4, "source": "training config",
                               "description": "chunk 640 ms, left 640 ms, sinks 4"},
                 "search": "greedy", "beam": null,
                 "wer": {"-30": {"wer": 12.5, "errors": 5, "words": 40, "sub": 3, "del": 1, "ins": 1,
                                 "failed": 0}, ...}}]}

(gain keys are :func:`gain_key` strings), and recipe stage 12 adds :func:`results_section` to
``RESULTS.md``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from xtrans.frames import frames_to_ms
from xtrans.masks import StreamingConfig
from xtrans.scoring.results import stage_variant
from xtrans.scoring.wer import ErrorCounts

logger = logging.getLogger(__name__)

DEFAULT_GAINS = (-30.0, -20.0, -10.0, 0.0, 6.0)
"""Gains (dB) of the recipe's table: a quiet far microphone to a hot, slightly clipping one."""

LEVEL_JSON = "level_robustness.json"
"""The report's name under ``exp/`` (recipe stage 12)."""

MAX_CHANGE_HEADER = "max |WER(g) - WER(0 dB)|"


# ---------------------------------------------------------------------------- options

def parse_levels(text: str, option: str, noun: str, unit: str, example: str,
                 positive: bool = False) -> Tuple[float, ...]:
    """Comma-separated levels of an option, e.g. ``"20,10,5,0"`` -> ``(20.0, 10.0, 5.0, 0.0)``
    (in the order given).

    Args:
        option: the option, for messages (``"--snrs"``).
        noun: what one level is (``"SNR"``); messages say ``"<noun>s in <unit>"``.
        unit: ``"dB"``, ``"seconds"``.
        example: a valid value, for messages (``"20,10,5,0"``).
        positive: refuse levels ``<= 0``.

    Raises:
        ValueError: naming ``option`` for an empty list, a value that is not a finite number
            (or not positive with ``positive``) or a level given twice.
    """
    words = [w.strip() for w in str(text).split(",")]
    what = f"{noun}s in {unit}"
    if not any(words):
        raise ValueError(f"{option}: expected comma-separated {what} such as {example}, found {text!r}")
    levels: List[float] = []
    for w in words:
        try:
            x = float(w)
        except ValueError:
            x = math.nan
        if not math.isfinite(x):
            raise ValueError(f"{option}: expected comma-separated finite {what} such as {example}, "
                             f"found {w!r} in {text!r}")
        if positive and x <= 0:
            raise ValueError(f"{option}: expected {what} > 0 such as {example}, found {w!r} in {text!r}")
        if x in levels:
            raise ValueError(f"{option}: expected each {noun} once, found {w} twice in {text!r}")
        levels.append(x)
    return tuple(levels)


def parse_gains(text: str) -> Tuple[float, ...]:
    """``"-30,-20,-10,0,6"`` -> ``(-30.0, -20.0, -10.0, 0.0, 6.0)`` (dB, in the order given).

    Raises:
        ValueError: naming ``--gains`` for an empty list, a value that is not a finite number
            or a gain given twice.
    """
    return parse_levels(text, "--gains", "gain", "dB", "-30,-20,-10,0,6")


def gain_key(gain_db: float) -> str:
    """The JSON key of a gain: ``-30.0`` -> ``"-30"``, ``2.5`` -> ``"2.5"``, ``-0.0`` -> ``"0"``."""
    return f"{gain_db + 0.0:g}"


def gain_value(gain_db: float) -> Union[int, float]:
    """A gain for JSON: integral gains as ``int`` (``-30``), others as ``float``."""
    return int(gain_db) if float(gain_db).is_integer() else float(gain_db)


def parse_model(text: str) -> Tuple[Optional[str], str]:
    """``--model`` value -> ``(tag, checkpoint)``: ``TAG=CKPT`` names the row, a plain ``CKPT``
    gets ``tag=None`` (see :func:`default_tag`).

    Raises:
        ValueError: for an empty tag or checkpoint.
    """
    tag, sep, path = str(text).partition("=")
    if not sep or "/" in tag or os.sep in tag:
        return None, str(text)
    if not tag or not path:
        raise ValueError(f"--model: expected CKPT or TAG=CKPT, found {text!r}")
    return tag, path


def default_tag(checkpoint: Union[str, os.PathLike]) -> str:
    """A row name for a checkpoint: ``exp/stage5/5a/best.pt`` -> ``stage5a``,
    ``exp/stage1/best.pt`` -> ``stage1``; the path itself outside ``stage<N>`` folders."""
    stage, variant = stage_variant(checkpoint)
    if stage is None:
        return str(checkpoint)
    return f"stage{stage}{variant or ''}"


def streaming_dict(config: Optional[StreamingConfig], source: str) -> Dict[str, Any]:
    """A streaming rule for JSON: ``chunk_ms`` / ``left_ms`` (``None`` = full / unlimited), ``sinks``,
    ``source`` and a human ``description``."""
    if config is None:
        return {"chunk_ms": None, "left_ms": None, "sinks": 0, "source": source, "description": "full attention"}
    return {"chunk_ms": frames_to_ms(config.chunk_size), "left_ms": frames_to_ms(config.left_context),
            "sinks": config.num_sinks, "source": source, "description": config.describe()}


# ---------------------------------------------------------------------------- scores

def gain_score(counts: ErrorCounts, failed: int = 0) -> Dict[str, Any]:
    """The JSON entry of one gain: ``wer`` (%), ``errors``, ``words`` (N), ``sub``, ``del``,
    ``ins`` and ``failed`` (utterances that could not be decoded, scored as deletions)."""
    return {"wer": counts.wer, "errors": counts.errors, "words": counts.ref_words, "sub": counts.sub,
            "del": counts.dele, "ins": counts.ins, "failed": failed}


def max_wer_change(wer: Mapping[str, Mapping[str, Any]]) -> Optional[float]:
    """``max_g |WER(g) - WER(0 dB)|`` in percentage points over a model's ``wer`` entries
    (keyed by :func:`gain_key`); ``None`` without a 0 dB entry or other gains."""
    ref = wer.get(gain_key(0.0))
    others = [v["wer"] for k, v in wer.items() if k != gain_key(0.0)]
    if ref is None or not others:
        return None
    return max(abs(w - ref["wer"]) for w in others)


# ---------------------------------------------------------------------------- tables

def _pct(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def format_table(report: Mapping[str, Any], markdown: bool = True) -> str:
    """The table of a report: one row per model, WER (%) per gain, and the largest change against
    0 dB (percentage points, :data:`MAX_CHANGE_HEADER`).

    Args:
        markdown: a Markdown table (``|`` in the header escaped); else plain text in aligned columns.
    """
    keys = [gain_key(g) for g in report["gains"]]
    rows = [["model", "streaming", *(f"{k} dB" for k in keys), MAX_CHANGE_HEADER]]
    for m in report["models"]:
        wer = m["wer"]
        rows.append([m["tag"], m["streaming"]["description"],
                     *(_pct(wer[k]["wer"]) if k in wer else "-" for k in keys), _pct(max_wer_change(wer))])
    return render_table(rows, markdown)


def render_table(rows: Sequence[Sequence[str]], markdown: bool = True, left: int = 2) -> str:
    """Rows of cells (the first is the header) as a Markdown table (``|`` in cells escaped), or as
    plain text in columns two spaces apart, the first ``left`` columns left-aligned and the others
    (numbers) right-aligned."""
    if markdown:
        lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines) + "\n"
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(w) if c < left else cell.rjust(w)
                             for c, (cell, w) in enumerate(zip(r, widths))).rstrip() + "\n" for r in rows)


def results_section(report: Mapping[str, Any], plot: Optional[str] = None) -> str:
    """The ``## Level robustness`` section of ``RESULTS.md``: what was measured, the table and,
    when given, a link to the plot (a path relative to the Markdown file)."""
    search = {f"{m['search']}" + (f" {m['beam']}" if m.get("beam") else "") for m in report["models"]}
    text = ["## Level robustness\n",
            f"WER (%) on `{Path(str(report.get('data', '?'))).name}` with every waveform scaled by the "
            "gain (dB) and clipped at full scale (`xtrans.data.augment.apply_gain`), simulated "
            f"decoding, {', '.join(sorted(search))} search (`python -m xtrans.bin.level_robustness`). "
            f"The last column is the largest change against 0 dB in percentage points.\n",
            format_table(report)]
    if plot:
        text.append(f"![level robustness]({plot})\n")
    return "\n".join(text)


def check_report(report: Any, source: str = "<report>") -> Dict[str, Any]:
    """Checks the shape of a report read from JSON (``gains`` and ``models`` with ``tag``,
    ``streaming`` and ``wer``).

    Raises:
        ValueError: naming ``source`` and what is missing.
    """
    if not isinstance(report, dict) or not isinstance(report.get("gains"), list) \
            or not isinstance(report.get("models"), list):
        raise ValueError(f"{source}: expected a level-robustness report with 'gains' and 'models', "
                         f"found {type(report).__name__}")
    for n, m in enumerate(report["models"]):
        if not isinstance(m, dict) or not {"tag", "streaming", "wer"} <= set(m):
            raise ValueError(f"{source}: models[{n}]: expected 'tag', 'streaming' and 'wer'")
    return report
