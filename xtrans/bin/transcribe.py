"""Transcribe audio files with a trained xtrans transducer.

Usage::

    python -m xtrans.bin.transcribe --model exp/stage5/best.pt [--tokenizer bpe.model] \\
        [--streaming --chunk-ms 640 --left-ms 640 --sinks 4] [--search greedy|beam --beam 4] \\
        [--timestamps] [--jsonl] [--raw-sample-rate 8000 --raw-format s16le] \\
        [--search beam --hotwords hotwords.txt --hotwords-score 1.5 --lm lm.arpa --lm-scale 0.3] FILE...
    python -m xtrans.bin.transcribe --onnx exp/onnx [--search greedy|beam --beam 4] FILE...

Reads WAV/FLAC/... at any sample rate, mono or multi-channel. Headerless ``*.raw`` / ``*.pcm``
files are read when ``--raw-sample-rate`` and ``--raw-format`` say how (and refused with that
hint otherwise). Prints one line per file to stdout: ``<file>\\t<text>`` (with ``--timestamps``
a third column ``piece@seconds ...``), or one JSON object per line with ``--jsonl``. A file that
cannot be decoded (unreadable, empty, shorter than 25 ms, or any other failure) gets a one-line
error on stderr and the others carry on; the exit status is 1 when any file failed. A file whose
peak is below -50 dBFS gets a warning on stderr naming its peak level (a muted or far too quiet
microphone?); it is still decoded and the exit status does not change. Digital silence (every
sample zero) is such a file and is valid input, as in a live stream: it transcribes to empty text
(the model is not run on it; there is nothing to hear, and a model can hallucinate on an input it
never saw in training).

``--streaming`` decodes under the streaming rule: by default as a masked full pass (what the
model computes in streaming, in one go); ``--real-streaming`` feeds the audio chunk by chunk
through the streaming encoder instead (same result, for checking and latency work).

With ``--search beam``, ``--hotwords FILE`` boosts the phrases of a file (one per line, optionally
``PHRASE :SCORE``; ``--hotwords-score`` is the per-token boost of the others) and ``--lm FILE``
fuses an ARPA n-gram LM over the tokenizer's pieces (``python -m xtrans.bin.train_lm``) with
weight ``--lm-scale`` (``docs/decoding.md``); greedy search refuses both.

``--onnx DIR`` decodes with an ONNX export (``python -m xtrans.bin.export_onnx``) on onnxruntime
(:mod:`xtrans.onnx`) instead of a checkpoint: always chunk by chunk under the streaming rule the
export was made with and its own ``tokens.txt``: ``--tokenizer``, ``--device`` (other than cpu),
``--streaming`` and ``--real-streaming`` are refused, ``--chunk-ms``, ``--left-ms``, ``--sinks`` and
``--piece-ms`` do not apply. Both recognizers implement :class:`xtrans.transcription.Recognizer`
and decode through the same code here; audio at other rates is resampled to 16 kHz as it streams.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from tqdm import tqdm

from xtrans.context import DEFAULT_HOTWORDS_SCORE, DEFAULT_LM_SCALE
from xtrans.data.audio import RAW_FORMATS, BadAudioError, RawFormat, peak_dbfs, read_audio
from xtrans.decoding.data_dir import check_audio
from xtrans.decoding.load import RecognizerSpec
from xtrans.transcription import Recognizer, Transcription

QUIET_PEAK_DBFS = -50.0
"""A file whose peak level is below this (dBFS) gets a warning."""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.transcribe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, ...)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint (best.pt, average.pt, ckpt_step<N>.pt)")
    source.add_argument("--onnx", metavar="DIR", default=None,
                        help="ONNX export directory (python -m xtrans.bin.export_onnx): decode with "
                             "onnxruntime, chunk by chunk under the export's streaming rule")
    p.add_argument("--tokenizer", default=None,
                   help="sentencepiece .model or tokens.txt (default: from the checkpoint, or "
                        "bpe.model / tokens.txt next to it)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--streaming", action="store_true", help="decode under the streaming rule below")
    p.add_argument("--real-streaming", action="store_true",
                   help="with --streaming: feed the audio chunk by chunk through the streaming encoder")
    p.add_argument("--chunk-ms", type=float, default=640.0, help="chunk size (ms, multiple of 20)")
    p.add_argument("--left-ms", type=float, default=None, help="left context (ms); default unlimited")
    p.add_argument("--sinks", type=int, default=0, help="attention-sink frames")
    p.add_argument("--search", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--beam", type=int, default=4, help="beam size of modified beam search")
    p.add_argument("--max-symbols", type=int, default=3, help="greedy: most tokens per frame")
    p.add_argument("--nbest", type=int, default=None, help="beam: hypotheses in the JSON output")
    p.add_argument("--hotwords", metavar="FILE", default=None,
                   help="beam: boost the phrases of FILE (one per line, optionally 'PHRASE :SCORE')")
    p.add_argument("--hotwords-score", type=float, default=DEFAULT_HOTWORDS_SCORE,
                   help="beam: per-token boost of hotwords without their own score")
    p.add_argument("--lm", metavar="FILE", default=None,
                   help="beam: an ARPA n-gram LM over the tokenizer's pieces (python -m xtrans.bin.train_lm), "
                        "fused by shallow fusion")
    p.add_argument("--lm-scale", type=float, default=DEFAULT_LM_SCALE, help="beam: the LM's weight")
    p.add_argument("--timestamps", action="store_true", help="add token start times (s)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per file")
    p.add_argument("--num-threads", type=int, default=None, help="torch (or onnxruntime) CPU threads")
    p.add_argument("--piece-ms", type=float, default=100.0, help="--real-streaming: audio per call (ms)")
    p.add_argument("--raw-sample-rate", type=int, default=None,
                   help="headerless *.raw / *.pcm files: their sample rate (Hz); needs --raw-format")
    p.add_argument("--raw-format", choices=tuple(RAW_FORMATS), default=None,
                   help="headerless *.raw / *.pcm files: their sample format (s16le = signed 16-bit "
                        "little endian); needs --raw-sample-rate")
    p.add_argument("--raw-channels", type=int, default=1,
                   help="headerless *.raw / *.pcm files: interleaved channels")
    return p


def raw_format(args: argparse.Namespace) -> Optional[RawFormat]:
    """The :class:`RawFormat` of the ``--raw-*`` options, or None when none is given.

    Raises:
        ValueError: when only one of ``--raw-sample-rate`` / ``--raw-format`` is given, or a value
            is out of range.
    """
    if args.raw_sample_rate is None and args.raw_format is None:
        return None
    if args.raw_sample_rate is None or args.raw_format is None:
        raise ValueError("--raw-sample-rate and --raw-format: expected both (a headerless file says "
                         "neither), found only "
                         + ("--raw-sample-rate" if args.raw_format is None else "--raw-format")
                         + "; e.g. --raw-sample-rate 8000 --raw-format s16le")
    if args.raw_sample_rate <= 0:
        raise ValueError(f"--raw-sample-rate: expected a positive rate (Hz), found {args.raw_sample_rate}")
    if args.raw_channels <= 0:
        raise ValueError(f"--raw-channels: expected a positive count, found {args.raw_channels}")
    return RawFormat(args.raw_sample_rate, args.raw_format, args.raw_channels)


def format_line(path: str, result: Transcription, timestamps: bool, jsonl: bool) -> str:
    """One output line for ``path``."""
    if jsonl:
        record = {"file": path, **result.to_dict()}
        if not result.nbest:
            record.pop("nbest")
        if not timestamps:
            record.pop("timestamps")
            for alt in record.get("nbest", []):
                alt.pop("timestamps")
        return json.dumps(record, ensure_ascii=False)
    line = f"{path}\t{result.text}"
    if timestamps:
        line += "\t" + " ".join(f"{p}@{t:.2f}" for p, t in zip(result.pieces, result.timestamps))
    return line


def quiet_warning(path: str, samples, threshold_dbfs: float = QUIET_PEAK_DBFS) -> Optional[str]:
    """The warning for a file whose peak level is below ``threshold_dbfs`` (digital silence
    included), else None; None also for a file without samples (that is an error instead)."""
    if samples.size == 0:
        return None
    peak = peak_dbfs(samples)
    if not peak < threshold_dbfs:  # NaN samples are an error, not a level
        return None
    what = "digital silence" if peak == float("-inf") else "very quiet input"
    return (f"warning: {path}: peak level {peak:.1f} dBFS is below {threshold_dbfs:g} dBFS ({what}); "
            "check the microphone or recording level")


def silence_result() -> Transcription:
    """The transcription of digital silence: no tokens, empty text."""
    return Transcription(text="", tokens=[], pieces=[], timestamps=[], score=0.0)


def stream_file(s2t: Recognizer, path: str, piece_ms: float, audio=None) -> Transcription:
    """Decodes a file through a real streaming session, ``piece_ms`` of audio per call.

    ``audio``: the file's ``(samples, rate)`` when already read (see :func:`read_audio`).
    """
    samples, rate = audio if audio is not None else read_audio(path)
    session = s2t.stream()
    step = max(1, int(rate * piece_ms / 1000))
    for start in range(0, samples.shape[0], step):
        session.accept_waveform(samples[start:start + step], rate)
    return session.finalize()


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.real_streaming and not args.streaming:
        print("error: --real-streaming needs --streaming", file=sys.stderr)
        return 2
    try:
        raw = raw_format(args)
        if args.onnx is not None:
            refused = [name for name, given in (("--tokenizer", args.tokenizer is not None),
                                                ("--streaming", args.streaming),
                                                ("--real-streaming", args.real_streaming),
                                                ("--device", args.device != "cpu")) if given]
            if refused:
                raise ValueError(f"{', '.join(refused)}: not used with --onnx (the export has its own "
                                 "tokens.txt and streaming rule and runs on onnxruntime); drop them")
        s2t = RecognizerSpec(
            model=args.model, onnx=args.onnx, tokenizer=args.tokenizer, device=args.device,
            chunk_ms=args.chunk_ms if args.streaming else None, left_ms=args.left_ms if args.streaming else None,
            sinks=args.sinks if args.streaming else 0, search=args.search, beam=args.beam,
            max_symbols=args.max_symbols, nbest=args.nbest, num_threads=args.num_threads, hotwords=args.hotwords,
            hotwords_score=args.hotwords_score, lm=args.lm, lm_scale=args.lm_scale).load()
        if args.num_threads and args.model is not None:  # an export's threads are onnxruntime's (no torch there)
            import torch

            torch.set_num_threads(args.num_threads)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    bar = tqdm(args.files, desc="transcribe", unit="file", file=sys.stderr, disable=len(args.files) < 2)
    for path in bar:
        try:
            samples, rate = read_audio(path, raw=raw)
            warning = quiet_warning(path, samples)
            if warning:
                tqdm.write(warning, file=sys.stderr)
            check_audio(samples, rate)  # empty, not finite, too short: the checks of Speech2Text.transcribe
            if not samples.any():  # digital silence
                result = silence_result()
            elif args.real_streaming:
                result = stream_file(s2t, path, args.piece_ms, (samples, rate))
            else:
                result = s2t.transcribe(samples, rate)
        except BadAudioError as err:
            failed += 1
            tqdm.write(f"error: {path}: {err.reason}", file=sys.stderr)
            continue
        except Exception as err:  # one bad file never stops the batch
            failed += 1
            tqdm.write(f"error: {path}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        tqdm.write(format_line(path, result, args.timestamps, args.jsonl), file=sys.stdout)
    bar.close()
    if failed:
        print(f"{failed} of {len(args.files)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
