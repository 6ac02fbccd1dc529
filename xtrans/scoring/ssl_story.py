"""``RESULTS.md`` of the pretraining recipe (``egs/mini_synth/ssl1``): what pretraining buys, and what
left context and attention sinks buy, each from runs that differ in one thing only.

Two tables and a figure, from run directories as ``python -m xtrans.bin.train`` and
``python -m xtrans.bin.decode`` leave them:

- **pretrained vs random**: training stage 1 (full attention) fine-tuned from the self-supervised
  encoder and from a random one, on a small and on the whole label set, the same updates each:
  the dev loss of every run (``metrics.jsonl``: last and best) and the test WER of its decoding;
- **streaming stages**: stage-3/5 variants all started from one stage-2 model with the same
  number of updates: WER, and the compute time per chunk of real chunk-by-chunk decoding
  (``decode.json``'s ``latency_ms``);
- **learning curves**: training loss (a moving average) and dev loss against update, per run.

A run directory holds ``steps.jsonl``, ``metrics.jsonl``, ``config.yaml`` and
``<decode_name>/`` (``decode.json``, ``wer.json``; :func:`xtrans.scoring.results.score_decode_dir`
writes the latter when it is missing).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from matplotlib.ticker import FuncFormatter

from xtrans.scoring.plots import new_figure, read_steps
from xtrans.scoring.results import DECODE_JSON, WER_JSON, score_decode_dir
from xtrans.scoring.stage_times import StageTime, cpu_description

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "RunMissingError", "read_run", "pretraining_section", "finetune_section",
           "streaming_section", "wall_time_section", "curves_figure", "results_markdown"]

PathLike = Union[str, os.PathLike]


class RunMissingError(FileNotFoundError):
    """A run directory the tables need does not exist (or never trained).

    Attributes:
        tag: the run's name in the table (``"pretrained 10%"``, ``"3a"``).
        path: the directory looked for.
    """

    def __init__(self, tag: str, path: PathLike, reason: str):
        self.tag, self.path = tag, Path(path)
        super().__init__(f"run {tag!r}: {path}: {reason}; run the recipe stage that trains it first")


@dataclass
class RunResult:
    """One trained and decoded run, as the tables show it.

    Attributes:
        tag: its name in the tables.
        path: the run directory.
        updates: updates trained (the last one logged in ``steps.jsonl``).
        train_utts: utterances of its training set (``data.train_dir`` of its ``config.yaml``), or None.
        dev: ``(update, dev loss)`` at every validation, in order.
        steps: ``(update, training loss)`` of every update.
        wer: ``wer.json`` of its decoding (``N S D I WER`` ...), or None when not decoded.
        decode: ``decode.json`` of its decoding, or None.
    """

    tag: str
    path: Path
    updates: int
    train_utts: Optional[int]
    dev: List[Tuple[int, float]] = field(default_factory=list)
    steps: List[Tuple[int, float]] = field(default_factory=list)
    wer: Optional[Dict[str, Any]] = None
    decode: Optional[Dict[str, Any]] = None

    @property
    def last_dev_loss(self) -> Optional[float]:
        return self.dev[-1][1] if self.dev else None

    @property
    def best_dev_loss(self) -> Optional[float]:
        return min(v for _, v in self.dev) if self.dev else None


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            logger.warning("%s: a line that is not JSON skipped", path)
    return out


def _train_utts(run_dir: Path) -> Optional[int]:
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        wav_scp = Path(cfg["data"]["train_dir"]) / "wav.scp"
        return sum(1 for line in wav_scp.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None


def read_run(tag: str, path: PathLike, decode_name: str = "decode_test") -> RunResult:
    """The results of run ``path`` (its decoding in ``path/decode_name``, scored here if needed).

    Raises:
        RunMissingError: ``path`` does not exist or logged no update.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunMissingError(tag, run_dir, "no such directory")
    steps = read_steps(run_dir / "steps.jsonl") if (run_dir / "steps.jsonl").exists() else []
    if not steps:
        raise RunMissingError(tag, run_dir, "no update logged in steps.jsonl")
    dev = [(int(m["step"]), float(m["dev_loss"])) for m in _read_jsonl(run_dir / "metrics.jsonl")
           if isinstance(m.get("dev_loss"), (int, float)) and math.isfinite(m["dev_loss"])]
    result = RunResult(tag=tag, path=run_dir, updates=max(s for s, _ in steps), train_utts=_train_utts(run_dir),
                       dev=dev, steps=steps)
    decode_dir = run_dir / decode_name
    if (decode_dir / DECODE_JSON).exists():
        result.decode = json.loads((decode_dir / DECODE_JSON).read_text(encoding="utf-8"))
        wer_file, hyp_file = decode_dir / WER_JSON, decode_dir / "text"
        if not wer_file.exists() or (hyp_file.exists() and hyp_file.stat().st_mtime > wer_file.stat().st_mtime):
            score_decode_dir(decode_dir)  # not scored yet, or decoded again since
        if (decode_dir / WER_JSON).exists():
            result.wer = json.loads((decode_dir / WER_JSON).read_text(encoding="utf-8"))
    else:
        logger.warning("run %r: no decoding in %s", tag, decode_dir)
    return result


def _num(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _wer(run: RunResult) -> str:
    return "not decoded" if run.wer is None else f"{run.wer['WER']:.2f}"


def _errors(run: RunResult) -> str:
    if run.wer is None:
        return "-"
    return f"{run.wer['S']} / {run.wer['D']} / {run.wer['I']} of {run.wer['N']}"


def pretraining_section(pretrain_dir: PathLike, plot_ref: Optional[str] = None) -> str:
    """``## Pretraining``: updates, targets, final masked-prediction loss and accuracy, dev loss, the
    Hugging Face directory (from ``pretrain_summary.json``, ``metrics.jsonl``); empty without a summary."""
    pretrain_dir = Path(pretrain_dir)
    summary_file = pretrain_dir / "pretrain_summary.json"
    if not summary_file.exists():
        return ""
    s = json.loads(summary_file.read_text(encoding="utf-8"))
    cfg = s.get("config", {})
    k = cfg.get("num_clusters")
    dev = [m for m in _read_jsonl(pretrain_dir / "metrics.jsonl") if "dev_loss" in m]
    lines = ["## Pretraining (no labels)", "",
             f"HuBERT-style masked prediction (`python -m xtrans.bin.pretrain_ssl`) on the training audio: "
             f"{s['updates']} updates of {cfg.get('max_seconds')} s batches, targets: {k} k-means clusters of "
             f"{cfg.get('n_mels')} log-mel filters, masks {cfg.get('mask_prob')} x {cfg.get('mask_length')} frames. "
             f"Over the last 20 updates the masked-prediction loss was {s['train_loss_last20']:.3f} "
             f"(ln K = {math.log(k):.3f} for a uniform guess) and {100 * s['masked_accuracy_last20']:.1f}% of the "
             f"masked frames got their cluster" + (f"; the dev loss was {dev[-1]['dev_loss']:.3f} at update "
                                                    f"{dev[-1]['step']}" if dev else "") + "."]
    if s.get("hf_dir"):
        overrides = s.get("load_pretrained_overrides") or {}
        listed = ", ".join(f"{key}={value!r}" for key, value in overrides.items()) or "none"
        lines += ["", f"Fine-tuning starts from the Hugging Face directory `{s['hf_dir']}` (config.json, "
                      "model.safetensors), imported through `conf/train_stage1.yaml` by `xtrans.bin.import_encoder` "
                      "as the LibriSpeech recipe imports XLSR-53 (the streaming options and the feature masking of "
                      "the conf apply, the pretrained mask embedding comes along; the `load_pretrained` overrides "
                      f"that rebuild the pretrained encoder exactly: {listed})."]
    else:
        lines += ["", f"No Hugging Face directory: {s.get('not_exportable')}; fine-tuning starts from "
                      f"`{s['encoder']}`."]
    if plot_ref:
        lines += ["", f"![pretraining loss]({plot_ref})"]
    return "\n".join(lines) + "\n"


def finetune_section(runs: Sequence[Tuple[str, str, RunResult]], plot_ref: Optional[str] = None) -> str:
    """``## Pretrained vs random encoder``: one row per ``(labels, encoder, run)``, and the
    difference in WER per label set."""
    lines = ["## Pretrained vs random encoder (training stage 1, full attention)", "",
             "The same model and conf (`conf/train_stage1.yaml`), the same labels and the same number of updates; "
             "only the encoder's starting weights differ. Test set: held-out voices, clean; greedy search, the "
             "last checkpoint of each run. Dev loss: the RNN-T negative log-likelihood per utterance on the dev set "
             "(`metrics.jsonl`; at every validation, the last and the lowest).", "",
             "| labels | encoder | training utterances | updates | dev loss (last) | dev loss (best) | "
             "test WER % | sub / del / ins of words |", "|---|---|---|---|---|---|---|---|"]
    by_labels: Dict[str, Dict[str, RunResult]] = {}
    for labels, init, run in runs:
        by_labels.setdefault(labels, {})[init] = run
        lines.append(f"| {labels} | {init} | {run.train_utts if run.train_utts is not None else '-'} | {run.updates} | "
                     f"{_num(run.last_dev_loss, 3)} | {_num(run.best_dev_loss, 3)} | {_wer(run)} | {_errors(run)} |")
    notes = []
    for labels, pair in by_labels.items():
        pre, rnd = pair.get("pretrained"), pair.get("random")
        if pre is not None and rnd is not None and pre.wer is not None and rnd.wer is not None:
            delta = pre.wer["WER"] - rnd.wer["WER"]
            notes.append(f"{labels} of the labels: pretrained {pre.wer['WER']:.2f}% against random "
                         f"{rnd.wer['WER']:.2f}% ({delta:+.2f} points)")
    if notes:
        lines += ["", "Test WER, pretrained minus random: " + "; ".join(notes) + "."]
    if plot_ref:
        lines += ["", f"![learning curves]({plot_ref})"]
    return "\n".join(lines) + "\n"


def _rule(decode: Optional[Dict[str, Any]]) -> Tuple[str, str, str]:
    if decode is None:
        return "-", "-", "-"
    left = decode.get("left_ms")
    return (str(decode.get("chunk_ms") or "full"), "unlimited" if left is None else str(left),
            str(decode.get("sinks", 0)))


def streaming_section(start: Optional[RunResult], runs: Sequence[RunResult]) -> str:
    """``## Streaming stages from one model``: WER and chunk latency of each variant (and of the
    model they all started from, as a reference row)."""
    mode = {r.decode.get("mode") for r in [*runs, *([start] if start else [])] if r.decode}
    how = ("real chunk-by-chunk streaming (`xtrans.bin.decode --mode streaming`, one chunk per call; the "
           "masked full pass gives the same hypotheses)" if mode == {"streaming"}
           else f"decoding mode(s) {', '.join(sorted(m or '?' for m in mode))}")
    lines = ["## Streaming stages from one model (controlled comparison)", "",
             "Every variant starts from the same stage-2b model"
             + (f" (`{start.path}`, {start.updates} updates)" if start else "")
             + " and trains the same number of updates; only the attention mask differs. WER: test set, greedy "
             f"search, {how}. Latency: compute time per chunk (encoder and search) on one torch thread per decoding "
             f"process, {cpu_description()}. Dev loss: RNN-T negative log-likelihood per utterance under the "
             "run's own mask.", "",
             "| stage | chunk ms | left context ms | sinks | updates | dev loss (last) | test WER % | "
             "latency mean / p95 / max ms | RTF |", "|---|---|---|---|---|---|---|---|---|"]
    for run in ([start] if start else []) + list(runs):
        chunk, left, sinks = _rule(run.decode)
        lat = (run.decode or {}).get("latency_ms") or {}
        latency = ("-" if lat.get("mean") is None else
                   f"{lat['mean']:.1f} / {lat['p95']:.1f} / {lat['max']:.1f}")
        rtf = (run.decode or {}).get("rtf")
        name = f"{run.tag} (the start)" if run is start else run.tag
        lines.append(f"| {name} | {chunk} | {left} | {sinks} | {run.updates} | {_num(run.last_dev_loss, 3)} | "
                     f"{_wer(run)} | {latency} | {_num(rtf, 3)} |")
    return "\n".join(lines) + "\n"


def wall_time_section(rows: Sequence[StageTime]) -> str:
    """``## Wall time``: each recipe stage's seconds (``exp/run_times.tsv``) and the total."""
    def fmt(seconds: int) -> str:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    lines = ["## Wall time", "", f"Each stage of `run.sh` as it measured it (`exp/run_times.tsv`), on "
             f"{cpu_description()}; the tables above are written after these.", "",
             "| stage | what | wall time | seconds |", "|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.what} | {fmt(r.seconds)} | {r.seconds} |" for r in rows]
    total = sum(r.seconds for r in rows)
    lines.append(f"| all | stages {', '.join(str(r.stage) for r in rows)} | {fmt(total)} | {total} |")
    return "\n".join(lines) + "\n"


def _moving_average(values: List[float], window: int) -> List[float]:
    out, total = [], 0.0
    for k, v in enumerate(values):
        total += v
        if k >= window:
            total -= values[k - window]
        out.append(total / min(k + 1, window))
    return out


def curves_figure(finetune: Sequence[Tuple[str, str, RunResult]], streaming: Sequence[RunResult],
                  smooth: int = 20):
    """Learning curves: stage-1 training objective and dev loss against update (colour = label set,
    solid = pretrained, dashed = random), and the streaming variants' training objective (markers:
    dev loss). The training objective is what ``steps.jsonl`` logs (the pruned RNN-T loss with its
    simple-loss and CTC terms), the dev loss the RNN-T negative log-likelihood alone, so the two
    differ in scale. Returns a matplotlib Figure, or None when no run logged a loss."""
    if not finetune and not streaming:
        return None
    ncols = 3 if streaming else 2
    fig = new_figure(5.0 * ncols, 4.2)
    axes = fig.subplots(1, ncols, squeeze=False).ravel()
    colours = {}
    for labels, init, run in finetune:
        colour = colours.setdefault(labels, f"C{len(colours)}")
        style = "-" if init == "pretrained" else "--"
        name = f"{init}, {labels}"
        axes[0].plot([s for s, _ in run.steps], _moving_average([v for _, v in run.steps], smooth), style,
                     color=colour, linewidth=1.0, label=name)
        if run.dev:
            axes[1].plot([s for s, _ in run.dev], [v for _, v in run.dev], style, marker="o", markersize=3,
                         color=colour, linewidth=1.0, label=name)
    axes[0].set_title(f"stage 1: training objective ({smooth}-update average)", fontsize="medium")
    axes[1].set_title("stage 1: dev loss", fontsize="medium")
    if streaming:
        for k, run in enumerate(streaming):
            colour = f"C{k + 2}"
            axes[2].plot([s for s, _ in run.steps], _moving_average([v for _, v in run.steps], smooth // 2 or 1),
                         color=colour, linewidth=1.0, label=run.tag)
            if run.dev:
                axes[2].plot([s for s, _ in run.dev], [v for _, v in run.dev], "o", color=colour, markersize=4)
        axes[2].set_title("from one 2b model: training objective (dots: dev loss)", fontsize="medium")
    for ax in axes:
        ax.set_xlabel("update")
        ax.set_ylabel("loss")
        if ax.lines:
            positive = all(min(line.get_ydata()) > 0 for line in ax.lines)
            if positive:
                ax.set_yscale("log")
                plain = FuncFormatter(lambda v, _: f"{v:g}")
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(plain)
            ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def results_markdown(sections: Sequence[str], title: str) -> str:
    """The document: a title and the non-empty sections."""
    return f"# {title}\n\n" + "\n".join(s for s in sections if s)
