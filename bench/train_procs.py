"""Training processes against threads on a CPU: the same stage-1 updates in several layouts, side by side.

A layout ``PxT`` trains with ``python -m xtrans.bin.train`` in P processes (gloo DDP, ``--nproc P``)
of T torch threads each (``OMP_NUM_THREADS``), with ``data.max_seconds`` = ``--seconds`` / P per
process, so that an update holds the same padded audio in every layout (the batches differ in how
they are cut, not in size). Each layout runs ``--updates`` updates of the config from the same
start; per layout the table gives the steady time per update (from the timestamps of the trainer's
log lines, updates ``--skip`` to the last, which leaves out start-up and the first batches), the
whole command's wall time, the audio trained, the dev loss at the end and the ratio of the time per
update to the first layout's. A table on stdout, JSON in ``--out``.

The demo trains in 2 processes of 1 thread (``asr.sh --train_nproc 2 --train_threads 1``) because
of what this script measures: its model's operations (D = 192, ~10 utterances per batch) are too
small for two threads to share well. On a 2-core machine run it alone; layouts run one after the
other, each in fresh processes.

Data as ``bench/profile_update.py`` takes it (``--recipe DIR``, or ``--data/--dev/--tokenizer/--init``,
or a synthesised eSpeak corpus); ``--dry-run``: a tiny model and corpus, a few updates.

    python bench/train_procs.py --recipe egs/mini_synth/asr1 --layouts 1x2,2x1 --updates 300
    python bench/train_procs.py --dry-run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_update import add_data_options, data_overrides, write_results  # noqa: E402  (the same data options)

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \[[^\]]*\] INFO step (\d+) epoch \d+ loss ")


def parse_layouts(text: str) -> list[tuple[int, int]]:
    """``"1x2,2x1"`` -> ``[(1, 2), (2, 1)]`` (processes, threads).

    Raises:
        ValueError: for an entry that is not ``PxT`` with positive integers.
    """
    layouts = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", item)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise ValueError(f"--layouts: expected PROCSxTHREADS entries such as 2x1, found {item!r}")
        layouts.append((int(m.group(1)), int(m.group(2))))
    return layouts


def steady_seconds_per_update(log: str, skip: int) -> float | None:
    """Seconds per update between the first logged update >= ``skip`` and the last one (None: too few)."""
    points = [(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp(), int(m.group(2)))
              for m in map(LOG_LINE.match, log.splitlines()) if m]
    points = [p for p in points if p[1] >= skip]
    if len(points) < 2 or points[-1][1] == points[0][1]:
        return None
    return (points[-1][0] - points[0][0]) / (points[-1][1] - points[0][1])


def run_layout(procs: int, threads: int, args, overrides: dict, init: str | None, outdir: Path) -> dict:
    """Trains one layout in fresh processes; its measurements."""
    sets = {**overrides, "data.max_seconds": args.seconds / procs, "training.max_updates": args.updates,
            "logging.log_interval": args.log_interval, "logging.tensorboard": False,
            "checkpoint.save_interval_updates": 10 ** 9}
    cmd = [sys.executable, "-m", "xtrans.bin.train", "--config", str(Path(args.config).resolve()),
           "--outdir", str(outdir), "--no_progress", "--init", init or "none"]
    if procs > 1:
        cmd += ["--nproc", str(procs)]
    cmd += ["--set"] + [f"{k}={json.dumps(v)}" for k, v in sets.items() if v is not None]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    label = f"{procs}x{threads}"
    if proc.returncode != 0:
        return dict(layout=label, procs=procs, threads=threads,
                    error=f"exit status {proc.returncode}: {proc.stderr[-2000:]}")
    log = (outdir / "train.log").read_text()
    steps = [json.loads(line) for line in (outdir / "steps.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (outdir / "metrics.jsonl").read_text().splitlines()] \
        if (outdir / "metrics.jsonl").exists() else []
    dev = [m["dev_loss"] for m in metrics if m.get("dev_loss") is not None]
    hours = re.findall(r"finished at update \d+, epoch \d+; ([\d.]+) h of audio", log)
    return dict(layout=label, procs=procs, threads=threads, max_seconds_per_process=args.seconds / procs,
                updates=len(steps), s_per_update=steady_seconds_per_update(log, args.skip), wall_s=wall,
                audio_h=float(hours[-1]) if hours else None, dev_loss=dev[-1] if dev else None,
                utterances=sum(s["utts"] for s in steps))


def table(results: list[dict]) -> list[str]:
    head = f"{'layout (procs x threads)':<26}{'s/update':>10}{'ratio':>8}{'wall s':>9}{'audio h':>9}" \
           f"{'utts':>7}{'dev loss':>10}"
    lines = [head, "-" * len(head)]
    first = results[0].get("s_per_update") if results else None  # the ratio's base: the first layout
    for r in results:
        if "error" in r:
            lines.append(f"{r['layout']:<26}error: {r['error'].splitlines()[-1] if r['error'] else ''}")
            continue
        spu = r["s_per_update"]
        ratio = f"{spu / first:.2f}" if spu is not None and first else "-"
        lines.append(f"{r['layout']:<26}{spu if spu is not None else float('nan'):>10.3f}{ratio:>8}"
                     f"{r['wall_s']:>9.1f}{r['audio_h'] if r['audio_h'] is not None else float('nan'):>9.3f}"
                     f"{r['utterances']:>7}{r['dev_loss'] if r['dev_loss'] is not None else float('nan'):>10.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(parser)
    parser.add_argument("--layouts", default="1x2,2x1", help="PROCSxTHREADS, comma-separated (first = the ratio's base)")
    parser.add_argument("--seconds", type=float, default=15.0, help="padded seconds per update, split over the processes")
    parser.add_argument("--updates", type=int, default=300, help="updates per layout")
    parser.add_argument("--skip", type=int, default=20, help="updates before the steady timing starts")
    parser.add_argument("--log-interval", type=int, default=10, help="the trainer's log interval (timing points)")
    parser.add_argument("--dry-run", action="store_true", help="tiny model and corpus, 6 updates")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_procs.json"))
    args = parser.parse_args()
    layouts = parse_layouts(args.layouts)
    if args.dry_run:
        args.updates, args.skip, args.log_interval = min(args.updates, 6), 1, 1
    scratch = Path(tempfile.mkdtemp(prefix="train_procs_"))
    try:
        overrides, init, data = data_overrides(args, scratch / "data")
        results = [run_layout(p, t, args, overrides, init, scratch / f"run_{p}x{t}") for p, t in layouts]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [f"{args.updates} training updates of {os.path.relpath(args.config, REPO)} ({args.seconds:g} s padded "
             f"per update) on {data}: CPU, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
             *table(results)]
    print("\n".join(lines))
    write_results(args.out, lines, dict(
        benchmark="the same training updates in P processes x T threads (s per update, steady)",
        config=os.path.relpath(args.config, REPO), data=data, init=init, seconds_per_update=args.seconds,
        updates=args.updates, skip=args.skip, dry_run=args.dry_run, cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(), load_avg=os.getloadavg(), python=platform.python_version(),
        time=time.strftime("%Y-%m-%dT%H:%M:%S"), layouts=results), results)


if __name__ == "__main__":
    main()
