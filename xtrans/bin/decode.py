"""Decode a Kaldi data directory with a trained transducer (recipe stage 11).

Usage::

    python -m xtrans.bin.decode --model exp/stage5/5a/best.pt --data dump/test_clean \\
        --outdir exp/stage5/5a/decode_test_clean_streaming_chunk640_left640_sinks4_greedy \\
        [--tokenizer data/lang_bpe/bpe.model] --mode simulated|streaming \\
        [--chunk_ms 640 --left_ms 640 --sinks 4] [--search greedy|beam --beam 4] \\
        [--nj 1 --num_threads 1] [--piece_ms 640] [--device cpu] \\
        [--search beam --hotwords hotwords.txt --hotwords-score 1.5 --lm lm.arpa --lm-scale 0.3]
    python -m xtrans.bin.decode --onnx exp/onnx [--onnx_encoder encoder.int8.onnx] --data dump/test \\
        --outdir exp/onnx/decode_test --mode streaming [--search beam] [--num_threads 2]

Modes:
    simulated   the masked full-utterance pass under the streaming rule (``Speech2Text.transcribe``);
                without ``--chunk_ms`` it is plain full attention.
    streaming   real chunk-by-chunk decoding (``Speech2Text.stream``): the audio is fed in pieces of
                ``--piece_ms`` (default: one chunk) and every piece's processing time is measured.

Writes into ``--outdir``:
    text        hypotheses, Kaldi format (``<utt> <words>``); ``hyp.trn`` the same in sclite format
    ref         the data directory's ``text`` for the decoded utterances; ``ref.trn``
    decode.json the configuration (model, stage/variant, chunk/left ms, sinks, pos_conv, mode,
                search), total audio and processing seconds, RTF = processing time / audio duration,
                for ``streaming`` the per-chunk compute latency (mean, p95, max in ms), and per
                utterance its duration, processing time and RTF.

``--onnx DIR`` decodes with an ONNX export (``python -m xtrans.bin.export_onnx``) on onnxruntime
(:class:`xtrans.onnx.OnnxSpeech2Text`) instead of a checkpoint: ``--mode streaming`` only, under the
streaming rule of the export (``--chunk_ms``/``--left_ms``/``--sinks``/``--tokenizer``/``--device``
do not apply); ``--onnx_encoder`` picks the encoder file of the export (e.g. ``encoder.onnx`` for the
float encoder of an ``--int8`` export, whose default is ``encoder.int8.onnx``). Both recognizers
implement :class:`xtrans.transcription.Recognizer` and are decoded by the same loop
(:mod:`xtrans.decoding.data_dir`); audio at other rates is resampled to 16 kHz as it streams.

With ``--search beam``, ``--hotwords FILE`` (one phrase per line, optionally ``PHRASE :SCORE``;
``--hotwords-score``: the per-token boost of the others) and ``--lm FILE`` (an ARPA n-gram LM over the
tokenizer's pieces, ``python -m xtrans.bin.train_lm``; ``--lm-scale``: its weight) steer every
utterance's search (``docs/decoding.md``); ``decode.json`` records them (``hotwords_file``,
``hotwords_score``, ``lm``, ``lm_scale``, and ``hotwords``: the number of phrases).

Score with ``python -m xtrans.bin.score --decode_dir OUTDIR``. A failed utterance (unreadable,
too short, or any other failure) is reported on stderr, gets an empty hypothesis and is listed
under ``failed``; the others are decoded. Digital silence is decoded like any audio.

Several configurations in one process: recipe stage 11 decodes a model with every configuration
that :func:`xtrans.recipes.decode_plan.plan` gives for its training config and ``conf/decode.yaml``::

    python -m xtrans.bin.decode --model exp/stage4/best.pt --data dump/test --outdir exp/stage4 \
        --train_config conf/train_stage4.yaml --decode_config conf/decode.yaml [--nj 2]

The plan sets ``--mode --search --chunk_ms --left_ms --sinks`` of each configuration and ``--beam``
(``beam`` of ``conf/decode.yaml``) of the beam-search ones, and refuses them on the command line; the
other options given (``--nj``, ``--piece_ms``, ``--max_symbols``, ...) apply to all. A plan of
one's own is a file of lines ``<tag> <options>`` (``python -m xtrans.bin.decode_plan`` prints the
recipe's in that form), given as ``--plan FILE``; options on the command line apply to every line
and override the line's. Each configuration's output goes to ``<outdir>/decode_<data name>_<tag>``
and is scored there (``wer.json``, ``result.txt``) when the data has a ``text``. Python, the model
and the ``--nj`` worker processes start once, not once per configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from xtrans.context import DEFAULT_HOTWORDS_SCORE, DEFAULT_LM_SCALE
from xtrans.data.kaldi_dir import DataDir, DataDirError, read_data_dir
from xtrans.decoding.data_dir import (MODES, Transform, decode_simulated, decode_streaming,  # noqa: F401 (re-exported)
                                      decode_utterance, mono_16k, run, worker_pool)
from xtrans.decoding.load import RecognizerSpec
from xtrans.scoring.results import DECODE_JSON, score_decode_dir, stage_variant
from xtrans.scoring.wer import write_text, write_trn
from xtrans.transcription import Recognizer

logger = logging.getLogger(__name__)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.decode", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint (best.pt, average.pt, ckpt_step<N>.pt)")
    source.add_argument("--onnx", metavar="DIR", default=None,
                        help="an ONNX export directory (python -m xtrans.bin.export_onnx) instead of --model")
    p.add_argument("--onnx_encoder", "--onnx-encoder", default=None,
                   help="with --onnx: the encoder file of the export (default: its config.json's encoder_file)")
    p.add_argument("--data", required=True, help="Kaldi data directory (wav.scp, text)")
    p.add_argument("--outdir", required=True, help="output folder (decode_<tag>)")
    p.add_argument("--tokenizer", default=None,
                   help="sentencepiece .model or tokens.txt (default: from the checkpoint)")
    p.add_argument("--mode", choices=MODES, default="simulated")
    p.add_argument("--chunk_ms", "--chunk-ms", type=float, default=None,
                   help="chunk size (ms, multiple of 20); default full attention")
    p.add_argument("--left_ms", "--left-ms", type=float, default=None, help="left context (ms); default unlimited")
    p.add_argument("--sinks", type=int, default=0, help="attention-sink frames")
    p.add_argument("--search", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--beam", type=int, default=4, help="beam size of modified beam search")
    p.add_argument("--max_symbols", "--max-symbols", type=int, default=3, help="greedy: most tokens per frame")
    p.add_argument("--hotwords", metavar="FILE", default=None,
                   help="beam: boost the phrases of FILE (one per line, optionally 'PHRASE :SCORE')")
    p.add_argument("--hotwords-score", "--hotwords_score", dest="hotwords_score", type=float,
                   default=DEFAULT_HOTWORDS_SCORE, help="beam: per-token boost of hotwords without their own score")
    p.add_argument("--lm", metavar="FILE", default=None,
                   help="beam: an ARPA n-gram LM over the tokenizer's pieces (python -m xtrans.bin.train_lm)")
    p.add_argument("--lm-scale", "--lm_scale", dest="lm_scale", type=float, default=DEFAULT_LM_SCALE,
                   help="beam: the LM's weight (shallow fusion)")
    p.add_argument("--piece_ms", "--piece-ms", type=float, default=None,
                   help="streaming: audio per call (ms); default one chunk")
    p.add_argument("--nj", type=int, default=1, help="parallel decoding processes")
    p.add_argument("--num_threads", "--num-threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--plan", default=None,
                   help="file of '<tag> <options>' lines: decode (and score) every configuration into "
                        "<outdir>/decode_<data name>_<tag>")
    p.add_argument("--train_config", "--train-config", default=None,
                   help="with --decode_config: decode (and score) every configuration that recipe stage 11 "
                        "plans for the model trained with this config (xtrans.recipes.decode_plan)")
    p.add_argument("--decode_config", "--decode-config", default=None, help="conf/decode.yaml of the plan")
    return p


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as ``numpy.percentile``."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def load_recognizer(args: argparse.Namespace) -> Recognizer:
    """The recognizer of a job: :class:`~xtrans.inference.Speech2Text` of ``--model``, or
    :class:`~xtrans.onnx.OnnxSpeech2Text` of ``--onnx`` (:class:`~xtrans.decoding.load.RecognizerSpec`;
    an export's ``--num_threads`` are onnxruntime's, and ``--onnx`` imports no torch)."""
    recognizer = RecognizerSpec.from_options(args).load()
    if args.model is not None:
        import torch

        torch.set_num_threads(args.num_threads)
    return recognizer


def summarise(args: argparse.Namespace, s2t: Recognizer, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The contents of ``decode.json``: the recognizer's :meth:`~xtrans.transcription.Recognizer.settings`
    (device, streaming rule, and for an export its directory and encoder file), the options, and
    the timing."""
    ok = [r for r in records if "error" not in r]
    audio = sum(r["duration"] for r in ok)
    seconds = sum(r["seconds"] for r in ok)
    stage, variant = (None, None) if args.model is None else stage_variant(args.model)
    info: Dict[str, Any] = {
        "model": None if args.model is None else str(args.model), **s2t.settings(),
        "data": str(args.data), "tokenizer": args.tokenizer,
        "stage": stage, "variant": variant, "mode": args.mode,
        "search": args.search, "beam": args.beam if args.search == "beam" else None,
        "hotwords_file": args.hotwords, "hotwords_score": args.hotwords_score if args.hotwords else None,
        "num_threads": args.num_threads, "nj": args.nj,
        "num_utts": len(records), "failed": {r["utt"]: r["error"] for r in records if "error" in r},
        "audio_seconds": audio, "processing_seconds": seconds,
        "rtf": seconds / audio if audio > 0 else None, "latency_ms": None,
    }
    if args.mode == "streaming":
        lat = [x for r in ok for x in r["chunk_ms"]]
        info["piece_ms"] = args.piece_ms or info["chunk_ms"]
        info["latency_ms"] = {"mean": sum(lat) / len(lat) if lat else None, "p95": percentile(lat, 95) if lat else None,
                              "max": max(lat) if lat else None, "num_chunks": len(lat)}
    info["utterances"] = {r["utt"]: {"duration": r["duration"], "seconds": r["seconds"],
                                     "rtf": r["seconds"] / r["duration"] if r["duration"] else None}
                          for r in ok}
    return info


def check_args(args: argparse.Namespace) -> Optional[str]:
    """The error message for inconsistent options, or None."""
    if args.nj < 1 or args.num_threads < 1:
        return "--nj and --num_threads: expected >= 1"
    if args.onnx is not None:
        if args.mode != "streaming":
            return "--onnx: expected --mode streaming (an ONNX export decodes chunk by chunk), found --mode simulated"
        given = [f"--{name}" for name in ("chunk_ms", "left_ms", "tokenizer") if getattr(args, name) is not None]
        if given or args.sinks or args.device != "cpu":
            return (f"--onnx: the export fixes the streaming rule, tokens and device; found "
                    f"{' '.join(given + (['--sinks'] if args.sinks else []) + (['--device'] if args.device != 'cpu' else []))}")
        return None
    if args.onnx_encoder is not None:
        return "--onnx_encoder: expected --onnx with it"
    if args.mode == "streaming" and args.chunk_ms is None:
        return "--mode streaming needs --chunk_ms (full attention cannot stream)"
    if args.piece_ms is not None and args.piece_ms <= 0:
        return f"--piece_ms: expected > 0, found {args.piece_ms}"
    return None


def decode_dir(args: argparse.Namespace, data: DataDir, s2t: Recognizer,
               pool: Optional[ProcessPoolExecutor] = None) -> Dict[str, Any]:
    """Decodes ``data`` with one configuration and writes ``args.outdir``; returns ``decode.json``'s contents."""
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    records = run(args, data, s2t, pool)
    for r in records:
        if "error" in r:
            tqdm.write(f"error: {r['utt']}: {r['error']}", file=sys.stderr)
    hyps = [(r["utt"], r["text"]) for r in records]
    write_text(hyps, outdir / "text")
    write_trn(hyps, outdir / "hyp.trn")
    if data.text is not None:
        refs = [(u, data.text[u]) for u, _ in hyps if u in data.text]
        write_text(refs, outdir / "ref")
        write_trn(refs, outdir / "ref.trn")
    else:
        logger.warning("%s has no text: no ref written, nothing to score", args.data)
    info = summarise(args, s2t, records)
    (outdir / DECODE_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    lat = info["latency_ms"]
    print(f"decoded {len(records)} utterances ({info['audio_seconds']:.1f} s of audio) into {outdir}: "
          f"RTF {info['rtf'] if info['rtf'] is not None else float('nan'):.3f}"
          + (f", chunk latency mean {lat['mean']:.1f} ms p95 {lat['p95']:.1f} ms" if lat and lat["mean"] else ""),
          flush=True)
    return info


def read_plan(path: str | Path) -> List[Tuple[str, List[str]]]:
    """``<tag> <options>`` lines (blank lines and ``#`` comments skipped) -> [(tag, option words)].

    Raises:
        ValueError: for a tag that is not a plain folder-name word, or a repeated tag.
    """
    plan: List[Tuple[str, List[str]]] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        tag = words[0]
        if tag.startswith("-") or "/" in tag or tag in {t for t, _ in plan}:
            raise ValueError(f"{path}:{n}: expected a new '<tag> <options>' line, found {line.strip()!r}")
        plan.append((tag, words[1:]))
    return plan


def planned_jobs(args: argparse.Namespace, parser: argparse.ArgumentParser
                 ) -> List[Tuple[str, argparse.Namespace]]:
    """The configurations that :func:`xtrans.recipes.decode_plan.plan` gives for
    ``args.train_config`` and ``args.decode_config``: per job, its tag and ``args`` with the job's
    options set and ``outdir`` its ``<outdir>/decode_<data name>_<tag>``.

    Raises:
        ValueError: when only one of the two configs is given, or with ``--plan``, or when an option
            that the plan sets is given on the command line.
        ConfigError, OSError: for a config file that does not load.
    """
    if args.train_config is None or args.decode_config is None:
        given, missing = (("--train_config", "--decode_config") if args.decode_config is None
                          else ("--decode_config", "--train_config"))
        raise ValueError(f"{given}: expected {missing} with it, found none")
    if args.plan is not None:
        raise ValueError("--plan: expected either a plan file or --train_config/--decode_config, found both")
    from xtrans.recipes import decode_plan  # reads training configs (the training install)

    jobs = decode_plan.plan(args.train_config, args.decode_config)
    fixed = list(dict.fromkeys(name for job in jobs for name in job.options()))
    clash = [f"--{name} {getattr(args, name)}" for name in fixed if getattr(args, name) != parser.get_default(name)]
    if clash:
        raise ValueError(f"--train_config: expected the plan of {args.train_config} and {args.decode_config} to set "
                         f"--{', --'.join(fixed)}, found {' '.join(clash)} on the command line")
    out = []
    for job in jobs:
        options = {k: float(v) if k in ("chunk_ms", "left_ms") and v is not None else v
                   for k, v in job.options().items()}  # as the command line gives them
        outdir = str(Path(args.outdir) / f"decode_{Path(args.data).name}_{job.tag}")
        out.append((job.tag, argparse.Namespace(**{**vars(args), **options, "outdir": outdir})))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    jobs = [(None, args)]
    try:
        if args.train_config is not None or args.decode_config is not None:
            jobs = planned_jobs(args, parser)
            print(f"{args.model}: {len(jobs)} configurations of {args.train_config} and {args.decode_config}",
                  flush=True)
        elif args.plan:
            jobs = []
            for tag, words in read_plan(args.plan):
                job = parser.parse_args(words + argv)  # the command line's options override the line's
                job.outdir = str(Path(args.outdir) / f"decode_{Path(args.data).name}_{tag}")
                jobs.append((tag, job))
        for tag, job in jobs:
            error = check_args(job)
            if error:
                print(f"error: {f'plan line {tag}: ' if tag else ''}{error}", file=sys.stderr)
                return 2
        data = read_data_dir(args.data)
        models = [load_recognizer(job) for _, job in jobs]  # every configuration is checked before decoding starts
    except (ValueError, OSError, DataDirError, ImportError) as err:  # CheckpointError, ConfigError: ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = False
    pool = worker_pool(args.nj) if args.nj > 1 else None
    try:
        for (tag, job), s2t in zip(jobs, models):
            if tag is not None:
                print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} decoding {args.data}: {tag}", flush=True)
            info = decode_dir(job, data, s2t, pool)
            failed |= bool(info["failed"])
            if tag is not None and data.text is not None and score_decode_dir(job.outdir) is not None:
                print(Path(job.outdir, "result.txt").read_text(encoding="utf-8").split("\n\n")[0], flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
