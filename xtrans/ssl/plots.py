"""The loss curve of a pretraining run (PNG, Agg canvas, no pyplot state)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Union

from xtrans.scoring.plots import new_figure, read_steps

__all__ = ["plot_pretraining_curve"]


def plot_pretraining_curve(outdir: Union[str, os.PathLike], out: Union[str, os.PathLike],
                           num_clusters: Optional[int] = None) -> Optional[Path]:
    """Masked prediction loss per update (``outdir/steps.jsonl``) and the dev loss at each checkpoint
    (``outdir/metrics.jsonl``, when there is dev data), with ``ln K`` (uniform guessing over
    ``num_clusters``) for reference; None when no update logged a loss."""
    outdir = Path(outdir)
    points = read_steps(outdir / "steps.jsonl")
    if not points:
        return None
    dev = []
    metrics = outdir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("dev_loss") is not None:
                dev.append((entry["step"], entry["dev_loss"]))
    fig = new_figure(6.5, 3.8)
    ax = fig.subplots()
    ax.plot([s for s, _ in points], [v for _, v in points], linewidth=1.0, label="training batches (masked frames)")
    if dev:
        ax.plot([s for s, _ in dev], [v for _, v in dev], "o-", color="C3", label="dev (fixed masks)")
    if num_clusters:
        ax.axhline(math.log(num_clusters), color="grey", linestyle=":", linewidth=1.0,
                   label=f"ln K = ln {num_clusters} (uniform)")
    ax.set_xlabel("update")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("HuBERT-style masked prediction")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
