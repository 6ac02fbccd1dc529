"""PNG plots of an experiment: WER against chunk size, WER against input gain and under test
conditions, and training curves.

Each plot has a ``*_figure`` function that builds the figure (what the tests inspect: axes,
lines and their labels) and a ``plot_*`` function that saves it as a PNG.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``, so library code neither needs a display nor changes the global backend.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from xtrans.scoring.level import gain_key
from xtrans.scoring.results import ResultRow, stage_variant
from xtrans.scoring.robustness import LEVELS, level_key

logger = logging.getLogger(__name__)


def new_figure(width: float = 7.0, height: float = 4.5, layout: Optional[str] = None) -> Figure:
    """A figure with an Agg canvas attached (``fig.savefig`` works, no pyplot state)."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


@dataclass
class WerSeries:
    """What one legend entry of the WER-against-chunk plot draws in one panel.

    Attributes:
        panel: ``(test set, search, mode)`` of the panel it belongs to.
        stage: the training stage (None when the path names none).
        label: the legend text, e.g. ``"stage 3a (left 640 ms)"``.
        kind: ``"line"`` (a stage over chunk sizes), ``"points"`` (variants of a stage at the
            same chunk size, each its own entry) or ``"reference"`` (full attention: a
            horizontal line).
        points: ``(chunk_ms, WER %, variant)`` sorted by chunk (``chunk_ms`` None for a reference).
    """

    panel: Tuple[str, str, str]
    stage: Optional[int]
    label: str
    kind: str
    points: List[Tuple[Optional[int], float, Optional[str]]]


def _config(left_ms: Optional[int], sinks: int) -> str:
    text = "unlimited left" if left_ms is None else f"left {left_ms} ms"
    return text + (f", {sinks} sinks" if sinks else "")


def wer_series(rows: Sequence[ResultRow]) -> List[WerSeries]:
    """Groups decoding results into the series of :func:`plot_wer_vs_chunk`, never mixing stages.

    One panel per test set, search and mode (simulated / real streaming). Within a panel:

    * full-attention rows (no chunk, stage 1) become a horizontal ``reference``;
    * a stage whose models differ in chunk size only (same left context and sinks, at most one
      result per chunk size) is one ``line`` over chunk size: stage 2 (variant a-d each trained
      and decoded at its own chunk) and stage 4 (one multi-chunk model decoded at several chunks);
    * a stage with several models at one chunk size (stage 3: left contexts at 640 ms, stage 5:
      attention sinks) gets one entry per model (``points``, or a line if a model has several
      chunk sizes), labelled with its variant and streaming configuration.

    Rows without a WER (or an infinite one) are left out. When one configuration was decoded
    twice, the first row (in :meth:`ResultRow.sort_key` order) is kept and the others logged.
    """
    rows = sorted((r for r in rows if r.wer is not None and math.isfinite(r.wer)), key=ResultRow.sort_key)
    by_stage: Dict[Tuple[Tuple[str, str, str], Optional[int]], Dict[Tuple, Dict[Optional[int], ResultRow]]] = {}
    for r in rows:
        panel = (r.data, r.search, r.mode)
        models = by_stage.setdefault((panel, r.stage), {})
        config = (r.variant, r.left_ms if r.chunk_ms is not None else None, r.sinks)
        points = models.setdefault(config, {})
        if r.chunk_ms in points:
            logger.warning("%s: same configuration as %s, left out of the plot", r.decode_dir,
                           points[r.chunk_ms].decode_dir)
            continue
        points[r.chunk_ms] = r
    chunks_of: Dict[Tuple, set] = {}  # per model, over every panel: labels agree between panels
    for r in rows:
        if r.chunk_ms is not None:
            chunks_of.setdefault((r.stage, r.variant, r.left_ms, r.sinks), set()).add(r.chunk_ms)
    series: List[WerSeries] = []
    for (panel, stage), models in by_stage.items():
        name = "?" if stage is None else str(stage)
        streaming = {}
        for config, points in models.items():
            for chunk, r in points.items():
                if chunk is None:
                    series.append(WerSeries(panel, stage, f"stage {name}{r.variant or ''} (full attention)",
                                            "reference", [(None, r.wer, r.variant)]))
                else:
                    streaming.setdefault(config, {})[chunk] = r
        if not streaming:
            continue
        chunks = [c for points in streaming.values() for c in points]
        configs = {(left, sinks) for _, left, sinks in streaming}
        if len(chunks) == len(set(chunks)) and len(configs) == 1:  # models differ in chunk only: one line
            (left, sinks), = configs
            merged = sorted(((c, r) for points in streaming.values() for c, r in points.items()),
                            key=lambda e: e[0])
            variants = sorted({r.variant or "" for _, r in merged})
            if len(streaming) == 1:
                (variant, _, _), = streaming
                one = "one model at several chunks, " if len(chunks_of[(stage, variant, left, sinks)]) > 1 else ""
                label = f"stage {name}{variant or ''} ({one}{_config(left, sinks)})"
            else:
                label = (f"stage {name} ({name}{variants[0]}-{name}{variants[-1]}, one model per chunk, "
                         f"{_config(left, sinks)})")
            series.append(WerSeries(panel, stage, label, "line", [(c, r.wer, r.variant) for c, r in merged]))
            continue
        for (variant, left, sinks), points in streaming.items():
            label = f"stage {name}{variant or ''} ({_config(left, sinks)})"
            kind = "line" if len(points) > 1 else "points"
            series.append(WerSeries(panel, stage, label, kind,
                                    [(c, points[c].wer, variant) for c in sorted(points)]))
    series.sort(key=lambda e: (e.panel, e.kind != "reference", math.inf if e.stage is None else e.stage, e.label))
    return series


STAGE_COLORS = {1: "black", 2: "tab:blue", 3: "tab:orange", 4: "tab:green", 5: "tab:red"}
"""Colour of each training stage's series (others: the colour cycle)."""

_POINT_MARKERS = "sD^vP*Xh"


def wer_vs_chunk_figure(rows: Sequence[ResultRow]) -> Optional[Figure]:
    """The figure of :func:`plot_wer_vs_chunk` (not saved), or None when no row has a WER.

    One axes per panel of :func:`wer_series`, titled ``<test set>: <search> search, <mode>``;
    chunk sizes are evenly spaced categories. Each line or point carries the label of its series
    (``Line2D.get_label()``); variants of a stage drawn at one chunk size are set slightly apart
    and marked with their name (e.g. ``3a``) so that none hides another.
    """
    series = wer_series(rows)
    if not series:
        return None
    order = {"greedy": 0, "beam": 1, "simulated": 0, "streaming": 1}
    panels = sorted({s.panel for s in series}, key=lambda p: (p[0], order.get(p[1], 2), p[1], order.get(p[2], 2), p[2]))
    chunks = sorted({c for s in series for c, _, _ in s.points if c is not None})
    position = {c: k for k, c in enumerate(chunks)}
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    # one panel: the legend at its right; several: below them all
    fig = new_figure(6.4 * ncols + (3.6 if ncols == 1 else 0), 3.8 * nrows + (1.2 if ncols > 1 else 0.4),
                     layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = dict(STAGE_COLORS)
    cycle = itertools.cycle(["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"])
    for ax, panel in zip(axes, panels):
        markers: Dict[Optional[int], int] = {}  # per stage: the next marker of its variants
        beside: Dict[int, int] = {}  # per chunk: points already set to the right of it
        for s in (s for s in series if s.panel == panel):
            if s.stage not in colors:
                colors[s.stage] = next(cycle)
            color = colors[s.stage]
            if s.kind == "reference":
                ax.axhline(s.points[0][1], color=color, linestyle=":", linewidth=1.5, label=s.label)
                continue
            if s.kind == "line":
                xs = [position[c] for c, _, _ in s.points]
                ax.plot(xs, [w for _, w, _ in s.points], color=color, marker="o", label=s.label)
                if len({v for _, _, v in s.points}) > 1:  # one model per point: name each
                    for x, (_, w, v) in zip(xs, s.points):
                        ax.annotate(f"{s.stage}{v}", (x, w), textcoords="offset points", xytext=(4, 4),
                                    fontsize="x-small", color=color)
                continue
            k = markers[s.stage] = markers.get(s.stage, -1) + 1
            xs = []
            for c, _, _ in s.points:  # right of the lines' points, each variant its own place
                beside[c] = beside.get(c, 0) + 1
                xs.append(position[c] + 0.11 * beside[c])
            ax.plot(xs, [w for _, w, _ in s.points], color=color, linestyle="none",
                    marker=_POINT_MARKERS[k % len(_POINT_MARKERS)], markersize=7, label=s.label)
            for x, (_, w, v) in zip(xs, s.points):
                ax.annotate(f"{s.stage}{v or ''}", (x, w), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize="x-small", color=color)
        data, search, mode = panel
        ax.set_title(f"{data}: {search} search, {'real streaming' if mode == 'streaming' else mode}",
                     fontsize="medium")
        ax.set_xticks(range(len(chunks)), [str(c) for c in chunks])
        ax.set_xlim(-0.5, max(len(chunks), 1) - 0.5)
        ax.set_xlabel("chunk size (ms)")
        ax.set_ylabel("WER (%)")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles: Dict[str, Any] = {}
    for ax in axes[:len(panels)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    labels = sorted(handles, key=lambda label: label.replace("(full attention)", ""))
    fig.suptitle("WER against chunk size, by training stage")
    fig.legend([handles[k] for k in labels], labels,
               loc="outside lower center" if ncols > 1 else "outside right center",
               ncol=min(2, len(labels)) if ncols > 1 else 1, fontsize="small", frameon=False)
    return fig


def plot_wer_vs_chunk(rows: Sequence[ResultRow], out: Union[str, os.PathLike]) -> Optional[Path]:
    """WER (%) against chunk size (ms): one panel per test set, search and mode, one line per
    training stage (see :func:`wer_series` and :func:`wer_vs_chunk_figure`), stage 1 (full
    attention) as a horizontal reference.

    Returns:
        the PNG path, or None when no row has a WER.
    """
    fig = wer_vs_chunk_figure(rows)
    return None if fig is None else _save(fig, out)


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
    ax.set_ylim(bottom=0.0)  # from 0, so that a flat line of a robust model reads as flat
    ax.set_ylabel("WER (%)")
    ax.set_title("WER against input level")
    return _finish(fig, ax, out)


def robustness_figure(report: Mapping[str, Any]) -> Optional[Figure]:
    """The figure of :func:`plot_robustness` (not saved), or None when no model has a finite WER.

    One axes per condition with levels (gain, noise, babble, reverb; see
    :mod:`xtrans.scoring.robustness`), titled with the condition, WER against level with one line
    per model (labelled ``<tag> (<streaming>)``, one colour per model in every axes) and the model's
    clean WER as a dotted horizontal line of its colour; the conditions without levels (measured
    rooms, telephone) share one more axes, one point per model and condition.
    """
    def wer(m, name, level):
        entry = m["wer"].get(name, {}).get(level_key(level))
        return entry["wer"] if entry is not None and math.isfinite(entry["wer"]) else None

    conditions = [(c["name"], c["levels"]) for c in report["conditions"]]
    leveled = [(n, levels) for n, levels in conditions if n in LEVELS]
    single = [n for n, _ in conditions if n not in LEVELS and n != "clean"]
    panels: List[Tuple[str, Any]] = leveled + ([("other", single)] if single else [])
    if not panels:
        panels = [("other", ["clean"])]  # only clean speech was measured
    models = report["models"]
    if not any(wer(m, n, v) is not None for m in models for n, levels in conditions for v in levels):
        return None
    colors = [f"C{k % 10}" for k in range(len(models))]  # a model's colour in every axes
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = new_figure(5.2 * ncols, 3.6 * nrows + 0.9, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    titles = {c["name"]: c.get("source") for c in report["conditions"]}
    for ax, (name, levels) in zip(axes, panels):
        for k, m in enumerate(models):
            label = f"{m['tag']} ({m['streaming']['description']})"
            clean = wer(m, "clean", None)
            if clean is not None and not (name == "other" and levels == ["clean"]):
                ax.axhline(clean, color=colors[k], linestyle=":", linewidth=1.2)
            if name == "other":
                points = [(x, wer(m, n, None)) for x, n in enumerate(levels)]
                points = [(x, w) for x, w in points if w is not None]
                ax.plot([x for x, _ in points], [w for _, w in points], color=colors[k], linestyle="none",
                        marker="o", label=label)
                continue
            points = sorted((float(v), wer(m, name, v)) for v in levels)
            points = [(v, w) for v, w in points if w is not None]
            ax.plot([v for v, _ in points], [w for _, w in points], color=colors[k], marker="o", label=label)
        if name == "other":
            ax.set_xticks(range(len(levels)), list(levels))
            ax.set_xlim(-0.5, len(levels) - 0.5)
            names = {"rir": "measured rooms", "telephone": "channels"}
            ax.set_title(", ".join(names.get(n, n) for n in levels), fontsize="medium")
        else:
            ax.set_xticks(sorted({float(v) for v in levels}))
            ax.set_xlabel(LEVELS[name].axis)
            source = f" ({titles[name]})" if titles.get(name) else ""
            ax.set_title(f"{name}{source}", fontsize="medium")
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel("WER (%)")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles: Dict[str, Any] = {}
    for ax in axes[:len(panels)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.suptitle("WER under test conditions (dotted: clean)")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(2, len(handles)),
               fontsize="small", frameon=False)
    return fig


def plot_robustness(report: Mapping[str, Any], out: Union[str, os.PathLike]) -> Optional[Path]:
    """WER (%) against level for each condition of a robustness report (see :func:`robustness_figure`).

    Returns:
        the PNG path, or None when no model has a finite WER.
    """
    fig = robustness_figure(report)
    return None if fig is None else _save(fig, out)


def plot_context(report: Mapping[str, Any], out: Union[str, os.PathLike]) -> Optional[Path]:
    """WER (%) bars of a decode-time context report (:mod:`xtrans.scoring.context`): one group per
    model and set of utterances, one bar per context (no context, right list, distractors, LM).

    Returns:
        the PNG path, or None when the report has no finite WER.
    """
    from xtrans.scoring.context import CONTEXTS, SETS

    groups = [(f"{m['tag']}\n{name.replace('_', ', ')}", m["wer"][name])
              for m in report.get("models", []) for name in SETS if name in m["wer"]]
    if not any(math.isfinite(v["wer"]) for _, cells in groups for v in cells.values()):
        return None
    fig = new_figure(max(6.0, 1.6 * len(groups) + 2.0), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(CONTEXTS)
    for k, context in enumerate(CONTEXTS):
        xs = [g + (k - (len(CONTEXTS) - 1) / 2) * width for g, (_, cells) in enumerate(groups) if context in cells]
        ys = [cells[context]["wer"] for _, cells in groups if context in cells]
        if xs:
            ax.bar(xs, ys, width, label=context)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([label for label, _ in groups], fontsize="small")
    ax.set_ylabel("WER (%)")
    ax.set_title(f"Decode-time context ({report.get('snr_db', 0):g} dB SNR for the noisy sets)")
    return _finish(fig, ax, out)


def _finish(fig, ax, out: Union[str, os.PathLike]) -> Path:
    """Grid, legend and layout of a plot, then the PNG at ``out`` (folders made as needed)."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out)


def _save(fig: Figure, out: Union[str, os.PathLike]) -> Path:
    """The PNG of ``fig`` at ``out`` (folders made as needed)."""
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


def _smoothed(losses: List[float], window: int) -> List[float]:
    if window <= 1:
        return losses
    return [sum(losses[max(0, k - window + 1):k + 1]) / (k + 1 - max(0, k - window + 1))
            for k in range(len(losses))]


def training_curves_figure(exp_dir: Union[str, os.PathLike], smooth: int = 1) -> Optional[Figure]:
    """The figure of :func:`plot_training_curves` (not saved), or None when no run logged a loss.

    One axes per training stage (runs without ``stage<N>`` in their path share a last one), each
    with its own update axis and a logarithmic loss axis (linear when a loss is not positive),
    one line per run labelled ``stage <N><variant>``.
    """
    runs: Dict[Optional[int], List[Tuple[str, List[Tuple[int, float]]]]] = {}
    for path in sorted(Path(exp_dir).glob("stage*/**/steps.jsonl")):
        points = read_steps(path)
        if points:
            stage, variant = stage_variant(path)
            label = f"stage {stage}{variant or ''}" if stage is not None else str(path.parent)
            runs.setdefault(stage, []).append((label, points))
    if not runs:
        return None
    stages = sorted(runs, key=lambda st: math.inf if st is None else st)
    ncols = 2 if len(stages) > 1 else 1
    nrows = -(-len(stages) // ncols)
    fig = new_figure(6.0 * ncols, 3.4 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, stage in zip(axes, stages):
        positive = True
        for label, points in runs[stage]:
            losses = _smoothed([v for _, v in points], smooth)
            positive &= min(losses) > 0
            ax.plot([st for st, _ in points], losses, label=label, linewidth=1.0)
        if positive:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            low, high = ax.get_ylim()
            if high / low < 10:  # less than a decade: label the minor ticks too (plain numbers)
                ax.yaxis.set_minor_formatter(plain)
            else:
                ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title("other runs" if stage is None else f"stage {stage}", fontsize="medium")
        ax.set_xlabel("update")
        ax.set_ylabel("training loss" + (" (log)" if positive else ""))
        ax.grid(True, which="both" if positive else "major", alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(stages):]:
        ax.set_visible(False)
    fig.suptitle("Training curves" + (f" ({smooth}-update moving average)" if smooth > 1 else ""))
    fig.tight_layout()
    return fig


def plot_training_curves(exp_dir: Union[str, os.PathLike], out: Union[str, os.PathLike],
                         smooth: int = 1) -> Optional[Path]:
    """Training loss against update for every ``exp_dir/stage*/**/steps.jsonl``: one panel per
    stage (so that stage 1's first, very large losses do not flatten later stages), log scale,
    one line per run (see :func:`training_curves_figure`).

    Args:
        smooth: moving-average window in updates (1 = raw values).

    Returns:
        the PNG path, or None when no run has a logged loss.
    """
    fig = training_curves_figure(exp_dir, smooth)
    return None if fig is None else _save(fig, out)
