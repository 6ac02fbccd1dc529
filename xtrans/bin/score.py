"""Word error rate with per-utterance alignments, and the experiment's ``RESULTS.md``.

Usage::

    # one decoding: <dir>/ref against <dir>/text -> <dir>/result.txt, <dir>/wer.json
    python -m xtrans.bin.score --decode_dir exp/stage2/2a/decode_test_clean_simulated_chunk640_greedy

    # any two files (Kaldi text, or sclite .trn by suffix)
    python -m xtrans.bin.score --ref data/test/text --hyp hyp.txt [--result result.txt] [--ignore_case]

    # every exp/**/decode_*/ (scored where needed) -> RESULTS.md, plots/wer_vs_chunk.png,
    # plots/training_curves.png (from exp/stage*/**/steps.jsonl); with exp/level_robustness.json
    # (xtrans.bin.level_robustness) a "Level robustness" section and plots/level_robustness.png,
    # with exp/robustness.json (xtrans.bin.robustness) a "Robustness" section and plots/robustness.png,
    # with exp/context.json (xtrans.bin.context_table) a "Decode-time context" section and plots/context.png,
    # with exp/stage_times.tsv (asr.sh) a "Wall time" section
    python -m xtrans.bin.score --results exp --out RESULTS.md [--plots_dir plots] [--rescore]

Prints the ``%WER`` summary (``N``, ``S``, ``D``, ``I``) or the results table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from xtrans.scoring import context, robustness
from xtrans.scoring.level import LEVEL_JSON, check_report, results_section
from xtrans.scoring.plots import (plot_context, plot_level_robustness, plot_robustness, plot_training_curves,
                                  plot_wer_vs_chunk)
from xtrans.scoring.results import collect_results, format_table, score_decode_dir, write_results_md
from xtrans.scoring.stage_times import STAGE_TIMES_TSV, read_stage_times, stage_times_section
from xtrans.scoring.wer import format_result, format_summary, read_text, score


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.score", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--decode_dir", "--decode-dir", help="a folder written by xtrans.bin.decode")
    what.add_argument("--ref", help="reference text (Kaldi text, or .trn)")
    what.add_argument("--results", metavar="EXP", help="experiment folder to summarise into --out")
    p.add_argument("--hyp", help="with --ref: hypothesis text (Kaldi text, or .trn)")
    p.add_argument("--result", help="with --ref: write the alignments here (result.txt)")
    p.add_argument("--ignore_case", "--ignore-case", action="store_true", help="with --ref: compare case-insensitively")
    p.add_argument("--out", default="RESULTS.md", help="with --results: the Markdown file")
    p.add_argument("--plots_dir", "--plots-dir", default=None,
                   help="with --results: folder for PNG plots (default: 'plots' beside --out)")
    p.add_argument("--rescore", action="store_true", help="with --results: rescore folders that have wer.json")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.decode_dir:
            summary = score_decode_dir(args.decode_dir)
            if summary is None:
                print(f"error: {args.decode_dir}: no 'ref' file to score against", file=sys.stderr)
                return 2
            print(Path(args.decode_dir, "result.txt").read_text(encoding="utf-8").split("\n\n")[0])
            return 0
        if args.ref:
            if not args.hyp:
                print("error: --ref needs --hyp", file=sys.stderr)
                return 2
            result = score(read_text(args.ref), read_text(args.hyp), ignore_case=args.ignore_case)
            if args.result:
                Path(args.result).write_text(format_result(result), encoding="utf-8")
            print(format_summary(result.counts, len(result.missing)), end="")
            print(json.dumps(result.summary()))
            return 0
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    exp = Path(args.results)
    if not exp.is_dir():
        print(f"error: --results: {exp} is not a directory", file=sys.stderr)
        return 2
    out = Path(args.out)
    plots_dir = Path(args.plots_dir) if args.plots_dir else out.parent / "plots"
    rows = collect_results(exp, rescore=args.rescore)
    plots = [p for p in (plot_wer_vs_chunk(rows, plots_dir / "wer_vs_chunk.png"),
                         plot_training_curves(exp, plots_dir / "training_curves.png")) if p is not None]
    sections, written = [], list(plots)
    # reports of recipe stage 12: xtrans.bin.level_robustness, xtrans.bin.robustness, xtrans.bin.context_table
    for name, check, plot, section in ((LEVEL_JSON, check_report, plot_level_robustness, results_section),
                                       (robustness.ROBUSTNESS_JSON, robustness.check_report, plot_robustness,
                                        robustness.results_section),
                                       (context.CONTEXT_JSON, context.check_report, plot_context,
                                        context.results_section)):
        path = exp / name
        if not path.is_file():
            continue
        try:
            report = check(json.loads(path.read_text(encoding="utf-8")), str(path))
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            print(f"warning: {path} left out of {out}: {err}", file=sys.stderr)
            continue
        png = plot(report, plots_dir / f"{Path(name).stem}.png")
        written += [png] if png is not None else []
        sections.append(section(report, png and os.path.relpath(png, out.parent)))
    times = exp / STAGE_TIMES_TSV  # written by asr.sh at the end of each stage
    if times.is_file():
        try:
            sections.append(stage_times_section(read_stage_times(times)))
        except (OSError, ValueError) as err:
            print(f"warning: {times} left out of {out}: {err}", file=sys.stderr)
    write_results_md(rows, out, plots, sections=sections)
    print(format_table(rows), end="")
    print(f"wrote {out}" + "".join(f", {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
