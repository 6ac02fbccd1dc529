"""Measure how the WER of trained models depends on the input level (issue 10).

Usage::

    python -m xtrans.bin.level_robustness --model exp/stage1/best.pt --model 5a=exp/stage5/5a/best.pt \\
        --data dump/test --gains -30,-20,-10,0,6 [--tokenizer data/lang_bpe/bpe.model] \\
        [--chunk_ms 640 --left_ms 640 --sinks 4] [--search greedy|beam --beam 4] [--nj 2] \\
        [--out exp/level_robustness.json] [--plot exp/plots/level_robustness.png] [--markdown level.md]

Every utterance of ``--data`` is decoded once per model and gain, its samples scaled by
``10 ** (gain / 20)`` and clipped at full scale (:func:`xtrans.data.augment.apply_gain`) on the
fly, by the decoder of ``python -m xtrans.bin.decode`` in simulated mode (the masked full pass,
which the streaming decoder reproduces). ``--model TAG=CKPT`` names a row (default: ``stage5a``
for ``exp/stage5/5a/...``, else the path). Without ``--chunk_ms`` each model is decoded under the
mask it was trained with (the ``mask`` section of the training config its checkpoint stores;
full attention when it stores none); with it, every model under the rule given.

Prints one row per model: WER (%) at each gain and ``max |WER(g) - WER(0 dB)|`` (percentage
points). ``--out`` writes the JSON report described in :mod:`xtrans.scoring.level`, ``--plot``
a PNG of WER against gain, ``--markdown`` the table as the ``RESULTS.md`` section. The exit status
is 2 for bad options, 1 when an utterance could not be decoded (it is scored as deletions).

``python -m xtrans.bin.robustness`` measures the same gains as one of its conditions (beside noise,
babble, rooms and telephone); the two share their options, jobs and decoding loop
(:mod:`xtrans.decoding.measure`, :mod:`xtrans.decoding.data_dir`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Dict, List, Optional

import torch
from tqdm import tqdm

from xtrans.data.kaldi_dir import DataDirError, read_data_dir
from xtrans.decoding.data_dir import worker_pool
from xtrans.decoding.measure import (add_model_options, decode_and_score, join_values, load, model_entry,
                                     model_jobs, write_outputs)
from xtrans.scoring.level import DEFAULT_GAINS, format_table, gain_key, gain_value, parse_gains, results_section
from xtrans.scoring.plots import plot_level_robustness


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.level_robustness", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(p, plot_help="write a PNG of WER against gain here")
    p.add_argument("--gains", default=",".join(f"{g:g}" for g in DEFAULT_GAINS),
                   help="comma-separated input gains in dB")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = join_values(sys.argv[1:] if argv is None else list(argv))
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.num_threads)
    try:
        gains = parse_gains(args.gains)
        jobs = model_jobs(args)
        data = read_data_dir(args.data)
        if data.text is None:
            raise ValueError(f"--data: {args.data} has no text file; nothing to score against")
        models = [load(job) for job in jobs]  # every model is checked before decoding starts
    except (ValueError, FileNotFoundError, DataDirError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    refs = {u: data.text[u] for u in data.utt_ids if u in data.text}
    report: Dict[str, Any] = {"data": str(args.data), "num_utts": len(data.utt_ids),
                              "gains": [gain_value(g) for g in gains], "models": []}
    failed = False
    pool = worker_pool(args.nj) if args.nj > 1 else None
    bar = tqdm(total=len(jobs) * len(gains), desc="level robustness", unit="decoding", file=sys.stderr)
    try:
        for job, s2t in zip(jobs, models):
            wer: Dict[str, Dict[str, Any]] = {}
            for g in gains:
                bar.set_postfix_str(f"{job['tag']} at {g:+g} dB")
                wer[gain_key(g)], errors = decode_and_score(job, s2t, data, refs, pool, f"at {g:+g} dB", gain_db=g)
                failed |= bool(errors)
                bar.update()
            report["models"].append(model_entry(job, wer))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    print(format_table(report, markdown=False), end="", flush=True)
    written = write_outputs(args, report, plot_level_robustness, results_section)
    if written:
        print(f"wrote {', '.join(written)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
