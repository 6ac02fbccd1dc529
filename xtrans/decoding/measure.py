"""What ``python -m xtrans.bin.level_robustness`` and ``python -m xtrans.bin.robustness`` share:
their model options, one job per model, decoding a data directory under a condition and scoring
it, and writing the report.

Each model is decoded in simulated mode (the masked full pass, which the streaming decoder
reproduces) by the loop of :mod:`xtrans.decoding.data_dir`, under the rule given on the command
line or, without one, the mask it was trained with. A job is a dict: ``tag`` (the row's name),
``checkpoint``, ``source`` (where its streaming rule comes from), ``decode`` (the decode options,
an ``argparse.Namespace`` as ``python -m xtrans.bin.decode`` takes them) and, once loaded,
``streaming`` (the rule as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from xtrans.data.kaldi_dir import DataDir
from xtrans.decoding.data_dir import run as decode_records
from xtrans.decoding.load import RecognizerSpec
from xtrans.frames import frames_to_ms
from xtrans.scoring.level import default_tag, gain_score, parse_model, streaming_dict
from xtrans.scoring.wer import score
from xtrans.train.checkpoint import training_streaming


def add_model_options(p: argparse.ArgumentParser, plot_help: str) -> None:
    """The options of both tools: the models, the data, how they are decoded, and the outputs
    (``plot_help`` says what ``--plot`` draws)."""
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
    from) and ``decode``, the options of ``python -m xtrans.bin.decode`` (simulated mode) that decode it.

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


def load(job: Dict[str, Any]):
    """The model of a job (a :class:`~xtrans.inference.Speech2Text`), as ``xtrans.bin.decode``
    loads it (which checks that the streaming rule fits the encoder); sets the job's
    ``streaming`` (JSON) from the rule it got."""
    s2t = RecognizerSpec.from_options(job["decode"]).load()
    job["streaming"] = streaming_dict(s2t.streaming, job["source"])
    return s2t


def decode_and_score(job: Dict[str, Any], s2t, data: DataDir, refs: Dict[str, str],
                     pool: Optional[ProcessPoolExecutor], label: str, **options: Any) -> Tuple[Dict[str, Any], int]:
    """Decodes ``data`` with a job's model under ``options`` of :func:`xtrans.decoding.data_dir.run`
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
