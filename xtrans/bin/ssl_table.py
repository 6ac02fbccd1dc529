"""``RESULTS.md`` of the pretraining recipe (egs/mini_synth/ssl1 stage 8): pretrained vs random
encoder at two label-set sizes, streaming stages from one model, learning curves.

    python -m xtrans.bin.ssl_table --pretrain_dir exp/ssl \\
        --finetune "pretrained 10%" exp/stage1/pretrained_10pct --finetune "random 10%" exp/stage1/random_10pct \\
        --finetune "pretrained 100%" exp/stage1/pretrained_100pct --finetune "random 100%" exp/stage1/random_100pct \\
        --streaming 2b exp/stage2/2b --streaming 3a exp/stage3/3a --streaming 3b exp/stage3/3b \\
        --streaming 5a exp/stage5/5a --streaming 5b exp/stage5/5b \\
        --times exp/run_times.tsv --plots_dir exp/plots --out RESULTS.md

``--finetune "<encoder> <labels>" DIR``: a stage-1 run; ``<encoder>`` is ``pretrained`` or ``random``,
``<labels>`` names its label set (``10%``). ``--streaming TAG DIR``: a streaming run; the first is
the model the others started from (the reference row). Each DIR is a run directory of
``xtrans.bin.train`` with its decoding in ``DIR/<decode_name>`` (``xtrans.bin.decode``). The
tables are :mod:`xtrans.scoring.ssl_story`'s; the document is printed as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from xtrans.scoring.ssl_story import (RunMissingError, curves_figure, finetune_section, pretraining_section,
                                      read_run, results_markdown, streaming_section, wall_time_section)
from xtrans.scoring.stage_times import read_stage_times

ENCODERS = ("pretrained", "random")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.ssl_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--finetune", nargs=2, action="append", default=[], metavar=("'ENCODER LABELS'", "DIR"),
                   help="a stage-1 run: 'pretrained 10%%' exp/stage1/pretrained_10pct (repeat)")
    p.add_argument("--streaming", nargs=2, action="append", default=[], metavar=("TAG", "DIR"),
                   help="a streaming run (repeat); the first is the model the others started from")
    p.add_argument("--pretrain_dir", default=None, help="the pretraining run (xtrans.bin.pretrain_ssl --outdir)")
    p.add_argument("--decode_name", default="decode_test", help="the decoding folder inside each run")
    p.add_argument("--label_percent", type=int, default=None, help="the small label set's percentage (for the title)")
    p.add_argument("--times", default=None, help="run.sh's stage times (<stage>\\t<seconds>\\t<what> lines)")
    p.add_argument("--plots_dir", default="exp/plots", help="where the learning curves are written")
    p.add_argument("--out", required=True, help="the Markdown file to write")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    out = Path(args.out)
    try:
        finetune = []
        for name, path in args.finetune:
            init, _, labels = name.partition(" ")
            if init not in ENCODERS or not labels.strip():
                raise ValueError(f"--finetune: expected '<{'|'.join(ENCODERS)}> <labels>' (e.g. 'pretrained 10%'), "
                                 f"found {name!r}")
            finetune.append((labels.strip(), init, read_run(name, path, args.decode_name)))
        streaming = [read_run(tag, path, args.decode_name) for tag, path in args.streaming]
        times = read_stage_times(args.times) if args.times and Path(args.times).exists() else []
    except (ValueError, RunMissingError) as err:
        print(f"ssl_table: {err}", file=sys.stderr)
        return 2
    sections = []
    if args.pretrain_dir:
        loss_png = Path(args.pretrain_dir) / "loss.png"
        sections.append(pretraining_section(args.pretrain_dir, _relative(loss_png, out) if loss_png.exists() else None))
    fig = curves_figure(finetune, streaming[1:])
    plot_ref = None
    if fig is not None:
        plot = Path(args.plots_dir) / "ssl_curves.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=100)
        plot_ref = _relative(plot, out)
    if finetune:
        sections.append(finetune_section(finetune, plot_ref))
    if streaming:
        sections.append(streaming_section(streaming[0], streaming[1:]))
    if times:
        sections.append(wall_time_section(times))
    title = "Results: self-supervised pretraining and the streaming stages at small scale"
    if args.label_percent:
        title += f" ({args.label_percent}% and 100% of the labels)"
    text = results_markdown(sections, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


def _relative(path: Path, doc: Path) -> str:
    """``path`` as a link from the folder of the document ``doc`` (absolute when it lies elsewhere)."""
    try:
        return str(path.resolve().relative_to(doc.resolve().parent))
    except ValueError:
        return str(path.resolve())


if __name__ == "__main__":
    sys.exit(main())
