"""PNG plots of an experiment: WER against chunk size, WER against input gain, and training curves.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``, so library code neither needs a display nor changes the global backend.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xtrans.scoring.level import gain_key
from xtrans.scoring.results import ResultRow, stage_variant

logger = logging.getLogger(__name__)


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """A figure with an Agg canvas attached (``fig.savefig`` works, no pyplot state)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_wer_vs_chunk(rows: Sequence[ResultRow], out: Union[str, os.PathLike]) -> Optional[Path]:
    """WER (%) against chunk size (ms), one line per test set, mode and search.

    Full attention (no chunk) is drawn at a separate ``full`` position at the right. Rows with
    several values for one point (e.g. other stages or left contexts) keep the best WER.

    Returns:
        the PNG path, or None when no row has a WER.
    """
    rows = [r for r in rows if r.wer is not None and not math.isinf(r.wer)]
    if not rows:
        return None
    chunks = sorted({r.chunk_ms for r in rows if r.chunk_ms is not None})
    positions = {c: k for k, c in enumerate(chunks)}
    positions[None] = len(chunks)
    lines: Dict[Tuple[str, str, str], Dict[Optional[int], float]] = {}
    for r in rows:
        points = lines.setdefault((r.data, r.mode, r.search), {})
        points[r.chunk_ms] = min(points.get(r.chunk_ms, math.inf), r.wer)
    fig = new_figure()
    ax = fig.add_subplot()
    for (data, mode, search), points in sorted(lines.items()):
        keys = sorted(points, key=lambda c: positions[c])
        ax.plot([positions[c] for c in keys], [points[c] for c in keys], marker="o",
                linestyle="--" if mode == "simulated" else "-", label=f"{data}: {mode}, {search}")
    labels = [str(c) for c in chunks] + (["full"] if any(r.chunk_ms is None for r in rows) else [])
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("chunk size (ms)")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER against chunk size")
    return _finish(fig, ax, out)


def plot_level_robustness(report: Mapping[str, Any], out: Union[str, os.PathLike]) -> Optional[Path]:
    """WER (%) against input gain (dB), one line per model of a level-robustness report
    (:mod:`xtrans.scoring.level`); 0 dB, the recording as it is, is marked by a vertical line.

    Returns:
        the PNG path, or None when no model has a finite WER.
    """
    lines = []
    for m in report["models"]:
        points = [(float(g), m["wer"][gain_key(g)]["wer"]) for g in report["gains"] if gain_key(g) in m["wer"]]
        points = [(g, w) for g, w in sorted(points) if math.isfinite(w)]
        if points:
            lines.append((f"{m['tag']} ({m['streaming']['description']})", points))
    if not lines:
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    for label, points in lines:
        ax.plot([g for g, _ in points], [w for _, w in points], marker="o", label=label)
    ax.axvline(0.0, color="gray", linewidth=0.8, linestyle=":")
    ax.set_xticks(sorted({float(g) for g in report["gains"]}))
    ax.set_xlabel("input gain (dB, 0 = as recorded)")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER against input level")
    return _finish(fig, ax, out)


def _finish(fig, ax, out: Union[str, os.PathLike]) -> Path:
    """Grid, legend and layout of a plot, then the PNG at ``out`` (folders made as needed)."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def read_steps(path: Union[str, os.PathLike]) -> List[Tuple[int, float]]:
    """``(step, loss)`` of every update in a trainer's ``steps.jsonl``; skipped updates, records
    without a loss and malformed lines (e.g. a line cut by a crash) are left out."""
    points = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        logger.warning("%s: unreadable (%s)", path, err)
        return points
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            step, loss = int(entry["step"]), float(entry["loss"])
        except (ValueError, KeyError, TypeError):
            logger.debug("%s:%d: no step/loss, skipped", path, n)
            continue
        if math.isfinite(loss):
            points.append((step, loss))
    return points


def plot_training_curves(exp_dir: Union[str, os.PathLike], out: Union[str, os.PathLike],
                         smooth: int = 1) -> Optional[Path]:
    """Training loss against update for every ``exp_dir/stage*/**/steps.jsonl``, one line per run.

    Args:
        smooth: moving-average window in updates (1 = raw values).

    Returns:
        the PNG path, or None when no run has a logged loss.
    """
    runs = []
    for path in sorted(Path(exp_dir).glob("stage*/**/steps.jsonl")):
        points = read_steps(path)
        if points:
            stage, variant = stage_variant(path)
            label = f"stage {stage}{variant or ''}" if stage is not None else str(path.parent)
            runs.append((label, points))
    if not runs:
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    for label, points in runs:
        steps = [s for s, _ in points]
        losses = [v for _, v in points]
        if smooth > 1:
            losses = [sum(losses[max(0, k - smooth + 1):k + 1]) / (k + 1 - max(0, k - smooth + 1))
                      for k in range(len(losses))]
        ax.plot(steps, losses, label=label)
    ax.set_xlabel("update")
    ax.set_ylabel("training loss")
    ax.set_title("Training curves")
    return _finish(fig, ax, out)
