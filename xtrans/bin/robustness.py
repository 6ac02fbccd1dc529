"""Measure the WER of trained models under noise, babble, rooms and channels (issue 19).

Usage::

    python -m xtrans.bin.robustness --model exp/stage1/best.pt --model 5a=exp/stage5/5a/best.pt \\
        --data dump/test [--conditions clean,gain,noise,babble,reverb,telephone] \\
        [--gains -30,-20,-10,0,6] [--snrs 20,10,5,0] [--noise_scp data/noise.scp] \\
        [--babble_snrs 20,10,5] [--rt60s 0.3,0.6,0.9] [--rooms 8] [--rir_scp data/real_rirs.scp] [--seed 12345] \\
        [--tokenizer data/lang_bpe/bpe.model] [--chunk_ms 640 --left_ms 640 --sinks 4] \\
        [--search greedy|beam --beam 4] [--nj 2] [--out exp/robustness.json] \\
        [--plot exp/plots/robustness.png] [--markdown robustness.md]

Every utterance of ``--data`` is decoded once per model, condition and level, changed on the fly
as :mod:`xtrans.scoring.robustness` describes (clean; gain as ``python -m xtrans.bin.level_robustness``;
noise at ``--snrs`` from ``--noise_scp``, a Kaldi-style ``<id> <wav entry>`` list such as
``python -m xtrans.bin.make_noise`` writes, or without it generated noise of the families training
never draws; babble of other test utterances at ``--babble_snrs``; simulated rooms at ``--rt60s``;
measured rooms, an impulse response of ``--rir_scp`` per utterance (condition ``rir``); telephone),
each utterance's draws seeded by ``(--seed, condition, level, utterance index)``. The decoder is
that of ``python -m xtrans.bin.decode`` in simulated mode (the masked full pass, which the
streaming decoder reproduces). ``--model TAG=CKPT`` names a row (default: ``stage5a`` for
``exp/stage5/5a/...``); without ``--chunk_ms`` each model is decoded under the mask it was
trained with, with it every model under the rule given.

Prints one row per model: WER (%) per condition and level. ``--out`` writes the JSON report
described in :mod:`xtrans.scoring.robustness`, ``--plot`` a PNG of WER against level (one panel per
condition), ``--markdown`` the ``RESULTS.md`` section. The exit status is 2 for bad options, 1 when
an utterance could not be decoded (it is scored as deletions).
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
from xtrans.scoring.plots import plot_robustness
from xtrans.scoring.robustness import (BABBLE_TALKERS, CONDITIONS, DEFAULT_CONDITIONS, DEFAULT_LEVELS, DEFAULT_SEED,
                                       LEVELS, ROOMS_PER_RT60, Setup, cell_label, format_table, level_key,
                                       parse_condition_levels, parse_conditions, results_section)

LEVEL_OPTIONS = ("--gains", "--snrs", "--babble_snrs", "--babble-snrs", "--rt60s")
"""Options whose values may start with ``-`` (see :func:`~xtrans.decoding.measure.join_values`)."""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.robustness", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(p, plot_help="write a PNG of WER against level, one panel per condition, here")
    p.add_argument("--conditions", default=None,
                   help=f"comma-separated conditions of {', '.join(CONDITIONS)}; default: "
                        f"{','.join(DEFAULT_CONDITIONS)}, and rir with --rir_scp")
    levels = {c: ",".join(f"{v:g}" for v in DEFAULT_LEVELS[c]) for c in LEVELS}
    p.add_argument("--gains", default=levels["gain"], help="gain: input gains in dB")
    p.add_argument("--snrs", default=levels["noise"], help="noise: SNRs in dB")
    p.add_argument("--noise_scp", "--noise-scp", default=None,
                   help="noise: '<id> <wav entry>' list of noises; default: generated noise of the held-out families")
    p.add_argument("--babble_snrs", "--babble-snrs", default=levels["babble"], help="babble: SNRs in dB")
    p.add_argument("--talkers", type=int, default=BABBLE_TALKERS, help="babble: other talkers per utterance")
    p.add_argument("--rt60s", default=levels["reverb"], help="reverb: reverberation times in seconds")
    p.add_argument("--rooms", type=int, default=ROOMS_PER_RT60, help="reverb: simulated rooms per RT60")
    p.add_argument("--rir_scp", "--rir-scp", default=None,
                   help="rir: '<id> <wav entry>' list of measured room impulse responses (e.g. RIRS_NOISES' real "
                        "rooms), one drawn per utterance")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of every condition's draws")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = join_values(sys.argv[1:] if argv is None else list(argv), LEVEL_OPTIONS)
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.num_threads)
    try:
        if args.conditions is None:
            args.conditions = ",".join(DEFAULT_CONDITIONS + (("rir",) if args.rir_scp is not None else ()))
        conditions = parse_conditions(args.conditions)
        levels = parse_condition_levels(conditions, {"gain": args.gains, "noise": args.snrs,
                                                     "babble": args.babble_snrs, "reverb": args.rt60s})
        setup = Setup(data_dir=str(args.data), seed=args.seed, noise_scp=args.noise_scp, rooms=args.rooms,
                      talkers=args.talkers, rir_scp=args.rir_scp)
        jobs = model_jobs(args)
        data = read_data_dir(args.data)
        if data.text is None:
            raise ValueError(f"--data: {args.data} has no text file; nothing to score against")
        setup.check(conditions, levels, len(data.utt_ids))  # simulates the rooms once, here
        models = [load(job) for job in jobs]  # every model is checked before decoding starts
    except (ValueError, FileNotFoundError, DataDirError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    refs = {u: data.text[u] for u in data.utt_ids if u in data.text}
    cells = [(c, v) for c in conditions for v in levels[c]]
    report: Dict[str, Any] = {"data": str(args.data), "num_utts": len(data.utt_ids), "seed": args.seed,
                              "conditions": [setup.describe(c, levels[c]) for c in conditions], "models": []}
    failed = False
    pool = worker_pool(args.nj) if args.nj > 1 else None
    bar = tqdm(total=len(jobs) * len(cells), desc="robustness", unit="decoding", file=sys.stderr)
    try:
        for job, s2t in zip(jobs, models):
            wer: Dict[str, Dict[str, Any]] = {c: {} for c in conditions}
            for c, v in cells:
                label = cell_label(c, v)
                bar.set_postfix_str(f"{job['tag']}: {label}")
                wer[c][level_key(v)], errors = decode_and_score(job, s2t, data, refs, pool, f"({label})",
                                                                **setup.options(c, v))
                failed |= bool(errors)
                bar.update()
            report["models"].append(model_entry(job, wer))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    print(format_table(report), end="", flush=True)
    noise = next((c for c in report["conditions"] if c["name"] == "noise"), None)
    if noise is not None:
        print(f"noise: {noise['description']}")
    written = write_outputs(args, report, plot_robustness, results_section)
    if written:
        print(f"wrote {', '.join(written)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
