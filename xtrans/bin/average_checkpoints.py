"""Average the weights of several checkpoints (e.g. the best k of a stage) into one file.

    python -m xtrans.bin.average_checkpoints --outdir exp/stage2/2a --best 5 --out exp/stage2/2a/average.pt
    python -m xtrans.bin.average_checkpoints --outdir exp/stage2/2a --last 3 --out avg_last3.pt
    python -m xtrans.bin.average_checkpoints --out avg.pt exp/a/ckpt_step1000.pt exp/a/ckpt_step2000.pt

``--best k`` takes the k best by dev score recorded in the run's newest checkpoint;
``--last k`` the k newest ``ckpt_step*.pt``. The output holds ``model``, ``arch`` and
``config`` and can be decoded or passed to ``--init`` of the next stage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from xtrans.train.checkpoint import CheckpointError, average_checkpoints, find_latest, load_checkpoint, step_of


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (instead of --outdir with --best/--last)")
    p.add_argument("--outdir", help="a training run directory")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--best", type=int, help="average the k best checkpoints of --outdir")
    group.add_argument("--last", type=int, help="average the k newest checkpoints of --outdir")
    p.add_argument("--out", required=True, help="output file")
    return p


def select(outdir: Path, best: Optional[int], last: Optional[int]) -> List[Path]:
    """The checkpoint files of a run directory to average.

    Raises:
        CheckpointError: when the run has no (or too few) checkpoints.
    """
    if last is not None:
        steps = sorted((step_of(p.name), p) for p in outdir.glob("ckpt_step*.pt") if step_of(p.name) is not None)
        if not steps:
            raise CheckpointError(outdir, "no ckpt_step*.pt checkpoints")
        return [p for _, p in steps[-last:]]
    latest = find_latest(outdir)
    if latest is None:
        raise CheckpointError(outdir, "no checkpoint to read the best list from")
    ranked = load_checkpoint(latest)["train_state"]["best"]
    paths = [outdir / name for _, name in ranked[:best] if (outdir / name).is_file()]
    if not paths:
        raise CheckpointError(outdir, "no best checkpoint recorded (was there a dev set?)")
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.checkpoints:
        paths = [Path(p) for p in args.checkpoints]
    elif args.outdir and (args.best or args.last):
        paths = select(Path(args.outdir), args.best, args.last)
    else:
        print("error: give checkpoint files, or --outdir with --best K or --last K", file=sys.stderr)
        return 2
    try:
        average_checkpoints(paths, args.out)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"averaged {len(paths)} checkpoints into {args.out}: {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
