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
babble, rooms and telephone) and shares the options and the decoding loop defined here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from xtrans.bin.decode import run as decode_records
from xtrans.bin.decode import worker_pool
from xtrans.data.kaldi_dir import DataDir, DataDirError, read_data_dir
from xtrans.frames import frames_to_ms
from xtrans.inference import Speech2Text
from xtrans.scoring.level import (DEFAULT_GAINS, default_tag, format_table, gain_key, gain_score, gain_value,
                                  parse_gains, parse_model, results_section, streaming_dict)
from xtrans.scoring.plots import plot_level_robustness
from xtrans.scoring.wer import score
from xtrans.train.checkpoint import training_streaming


def add_model_options(p: argparse.ArgumentParser, plot_help: str) -> None:
    """The options shared with ``python -m xtrans.bin.robustness``: the models, the data, how they
    are decoded, and the outputs (``plot_help`` says what ``--plot`` draws)."""
    p.add_argument("--model", action="append", required=True, metavar="[TAG=]CKPT",
                   help="checkpoint to measure (repeatable); TAG=CKPT names its row")
    p.add_argument("--data", required=True, help="Kaldi data directory (wav.scp, text)")
    p.add_argument("--tokenizer", default=None,
                   help="sentencepiece .model or tokens.txt (default: from the checkpoint)")
    p.add_argument("--chunk_ms", "--chunk-ms", type=float, default=None,
                   help="chunk size (ms, multiple of 20) for every model; default: each model's training mask")
    p.add_argument("--left_ms", "--left-ms", type=float, default=None,
                   help="with --chunk_ms: left context (ms); default unlimited")
    p.add_argument("--sinks", type=int, default=None, help="with --chunk_ms: attention-sink frames (default 0)")
    p.add_argument("--search", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--beam", type=int, default=4, help="beam size of modified beam search")
    p.add_argument("--max_symbols", "--max-symbols", type=int, default=3, help="greedy: most tokens per frame")
    p.add_argument("--nj", type=int, default=1, help="parallel decoding processes")
    p.add_argument("--num_threads", "--num-threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--plot", default=None, help=plot_help)
    p.add_argument("--markdown", default=None, help="write the table as a Markdown section here")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.level_robustness", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(p, plot_help="write a PNG of WER against gain here")
    p.add_argument("--gains", default=",".join(f"{g:g}" for g in DEFAULT_GAINS),
                   help="comma-separated input gains in dB")
    return p


def join_values(argv: Sequence[str], options: Sequence[str] = ("--gains",)) -> List[str]:
    """``--gains -30,-20`` -> ``--gains=-30,-20`` for each of ``options``: argparse takes a value
    that starts with ``-`` (and is not a single number) for an option and would refuse it."""
    out: List[str] = []
    k = 0
    while k < len(argv):
        if argv[k] in options and k + 1 < len(argv) and not argv[k + 1].startswith("--"):
            out.append(f"{argv[k]}={argv[k + 1]}")
            k += 2
        else:
            out.append(argv[k])
            k += 1
    return out


def model_jobs(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """One entry per ``--model``: ``tag``, ``checkpoint``, ``source`` (where its streaming rule comes
    from) and ``decode``, the options of :mod:`xtrans.bin.decode` (simulated mode) that decode it.

    Raises:
        ValueError: for bad options, a tag given twice or an unreadable checkpoint/mask.
    """
    if args.chunk_ms is None and (args.left_ms is not None or args.sinks is not None):
        raise ValueError("--left_ms/--sinks: expected together with --chunk_ms (without it each model "
                         "is decoded under its training mask)")
    if args.nj < 1 or args.num_threads < 1:
        raise ValueError(f"--nj/--num_threads: expected >= 1, found {args.nj}/{args.num_threads}")
    jobs: List[Dict[str, Any]] = []
    for value in args.model:
        tag, checkpoint = parse_model(value)
        tag = tag or default_tag(checkpoint)
        if tag in {j["tag"] for j in jobs}:
            raise ValueError(f"--model: expected a distinct name per model, found {tag!r} twice; "
                             "name the rows with TAG=CKPT")
        if args.chunk_ms is not None:
            chunk_ms, left_ms, sinks, source = args.chunk_ms, args.left_ms, args.sinks or 0, "command line"
        else:
            config, source = training_streaming(checkpoint)
            chunk_ms, left_ms, sinks = (None, None, 0) if config is None else (
                frames_to_ms(config.chunk_size), frames_to_ms(config.left_context), config.num_sinks)
        decode = argparse.Namespace(
            model=checkpoint, onnx=None, onnx_encoder=None, data=args.data, tokenizer=args.tokenizer,
            device=args.device, mode="simulated",
            chunk_ms=chunk_ms, left_ms=left_ms, sinks=sinks, search=args.search, beam=args.beam,
            max_symbols=args.max_symbols, piece_ms=None, nj=args.nj, num_threads=args.num_threads)
        jobs.append({"tag": tag, "checkpoint": checkpoint, "source": source, "decode": decode})
    return jobs


def load(job: Dict[str, Any]) -> Speech2Text:
    """The model of a job, as ``xtrans.bin.decode`` loads it (which checks that the streaming rule
    fits the encoder); sets the job's ``streaming`` (JSON) from the rule it got."""
    d = job["decode"]
    s2t = Speech2Text.from_checkpoint(d.model, d.tokenizer, d.device, chunk_ms=d.chunk_ms, left_ms=d.left_ms,
                                      sinks=d.sinks, search=d.search, beam=d.beam, max_symbols=d.max_symbols)
    job["streaming"] = streaming_dict(s2t.streaming, job["source"])
    return s2t


def decode_and_score(job: Dict[str, Any], s2t: Speech2Text, data: DataDir, refs: Dict[str, str],
                     pool: Optional[ProcessPoolExecutor], label: str, **options: Any) -> Tuple[Dict[str, Any], int]:
    """Decodes ``data`` with a job's model under ``options`` of :func:`xtrans.bin.decode.run`
    (``gain_db``, ``transform``); returns its :func:`~xtrans.scoring.level.gain_score` entry against
    ``refs`` and the number of utterances that failed (reported on stderr, ``label`` saying where)."""
    records = decode_records(job["decode"], data, s2t, pool, progress=False, **options)
    errors = [r for r in records if "error" in r]
    for r in errors:
        tqdm.write(f"error: {r['utt']} {label}: {r['error']}", file=sys.stderr)
    hyps = {r["utt"]: r["text"] for r in records if r["utt"] in refs}
    return gain_score(score(refs, hyps).counts, failed=len(errors)), len(errors)


def model_entry(job: Dict[str, Any], wer: Dict[str, Any]) -> Dict[str, Any]:
    """A model's entry of a report: ``tag``, ``checkpoint``, ``streaming``, ``search``, ``beam``, ``wer``."""
    d = job["decode"]
    return {"tag": job["tag"], "checkpoint": str(job["checkpoint"]), "streaming": job["streaming"],
            "search": d.search, "beam": d.beam if d.search == "beam" else None, "wer": wer}


def write_outputs(args: argparse.Namespace, report: Dict[str, Any],
                  plot: Callable[[Dict[str, Any], str], Optional[Path]],
                  section: Callable[[Dict[str, Any], Optional[str]], str]) -> List[str]:
    """Writes ``--out`` (the JSON report), ``--plot`` (``plot(report, path)``) and ``--markdown``
    (``section(report, plot path relative to it)``) where given; returns the paths written."""
    written = []
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        written.append(str(out))
    if args.plot and plot(report, args.plot) is not None:
        written.append(str(args.plot))
    if args.markdown:
        md = Path(args.markdown)
        md.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(args.plot, md.parent) if args.plot and Path(args.plot).is_file() else None
        md.write_text(section(report, rel), encoding="utf-8")
        written.append(str(md))
    return written


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
