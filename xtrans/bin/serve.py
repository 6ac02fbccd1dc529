"""The live streaming recognition server: websockets, batching across connections, endpointing.

Usage::

    python -m xtrans.bin.serve --model exp/stage5/best.pt [--tokenizer bpe.model] \\
        [--chunk-ms 640 --left-ms 640 --sinks 4] [--search greedy|beam --beam 4] \\
        [--host 127.0.0.1 --port 6006] [--max-connections 100 --max-batch 32] \\
        [--endpoint-silence-ms 800 --max-segment-s 20] [--num-threads 2] \\
        [--search beam --hotwords hotwords.txt --hotwords-score 1.5 --lm lm.arpa --lm-scale 0.3]
    python -m xtrans.bin.serve --onnx exp/onnx ...

Clients stream audio to ``ws://HOST:PORT/ws`` (the protocol: :mod:`xtrans.serve.protocol`);
``http://HOST:PORT/`` is a page that transcribes the browser's microphone. ``--port 0`` takes
any free port; the address is logged (and printed as the first line on stdout,
``listening on ws://...``). Stop with Ctrl-C. Options that take a limit or an endpointing rule
accept ``none`` (no limit / rule off).

With ``--search beam``, ``--hotwords FILE`` and ``--lm FILE`` steer every connection's search
(``docs/decoding.md``); a client's ``start`` message may bring its own ``hotwords`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import List, Optional

from xtrans.context import DEFAULT_HOTWORDS_SCORE, DEFAULT_LM_SCALE
from xtrans.decoding.load import RecognizerSpec
from xtrans.serve import backend_for
from xtrans.serve.engine import EndpointConfig
from xtrans.serve.geometry import DEFAULT_BATCH_ROWS
from xtrans.serve.server import ServerOptions, StreamingServer

logger = logging.getLogger("xtrans.bin.serve")


def _optional(kind):
    """An argparse type: ``none`` -> None, else ``kind(value)``."""
    def parse(text: str):
        return None if text.lower() in ("none", "off") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint (best.pt, average.pt, ckpt_step<N>.pt)")
    source.add_argument("--onnx", metavar="DIR", help="ONNX export directory (python -m xtrans.bin.export_onnx)")
    p.add_argument("--tokenizer", default=None,
                   help="--model: sentencepiece .model or tokens.txt (default: from the checkpoint or next to it)")
    p.add_argument("--device", default="cpu", help="--model: where to run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6006, help="0 = any free port")
    p.add_argument("--chunk-ms", type=float, default=640.0, help="--model: chunk size (ms, multiple of 20)")
    p.add_argument("--left-ms", type=_optional(float), default=640.0,
                   help="--model: left context (ms) or none (unlimited; streams then batch only with streams "
                        "at the same point of their segment)")
    p.add_argument("--sinks", type=int, default=0, help="--model: attention-sink frames")
    p.add_argument("--search", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--beam", type=int, default=4, help="beam size of modified beam search")
    p.add_argument("--max-symbols", type=int, default=3, help="greedy: most tokens per frame")
    p.add_argument("--hotwords", metavar="FILE", default=None,
                   help="beam: phrases boosted in every connection that sends none of its own (one per line, "
                        "optionally 'PHRASE :SCORE')")
    p.add_argument("--hotwords-score", type=float, default=DEFAULT_HOTWORDS_SCORE,
                   help="beam: per-token boost of hotwords without their own score")
    p.add_argument("--lm", metavar="FILE", default=None,
                   help="beam: an ARPA n-gram LM over the tokenizer's pieces (python -m xtrans.bin.train_lm)")
    p.add_argument("--lm-scale", type=float, default=DEFAULT_LM_SCALE, help="beam: the LM's weight")
    p.add_argument("--max-connections", type=_optional(int), default=100, help="open connections at most")
    p.add_argument("--max-batch", type=int, default=32, help="streams per batched decoding call at most")
    p.add_argument("--max-message-bytes", type=int, default=1 << 20, help="largest client message")
    p.add_argument("--idle-timeout-s", type=_optional(float), default=30.0,
                   help="close a client that sends nothing for this long")
    p.add_argument("--endpoint-silence-ms", type=_optional(float), default=800.0,
                   help="end a segment after this much trailing blank (after its first token)")
    p.add_argument("--max-segment-s", type=_optional(float), default=20.0, help="longest segment")
    p.add_argument("--num-threads", type=int, default=None,
                   help="--onnx: decoding threads, each computing its own batches on one onnxruntime thread "
                        "(default: one per CPU); --model: torch's CPU threads of the one decoding thread (default 1: "
                        "the demo's model keeps up with 32 streams on 1, 16 on 2; more decoding threads do not pay "
                        "there: they contend for Python's lock)")
    p.add_argument("--batch-rows", type=int, default=None,
                   help="--model: streams per model call (smaller batches are filled up, larger ones split, so "
                        f"that a stream's results do not depend on its batch; default {DEFAULT_BATCH_ROWS})")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def build_backend(args: argparse.Namespace):
    """The server backend of the recognizer of ``--model`` or ``--onnx`` (:func:`xtrans.serve.backend_for`).

    Raises:
        ValueError: for options that do not fit (see the messages).
    """
    context = dict(hotwords=args.hotwords, hotwords_score=args.hotwords_score, lm=args.lm, lm_scale=args.lm_scale)
    if args.onnx is not None:
        refused = [name for name, given in (("--tokenizer", args.tokenizer is not None),
                                            ("--device", args.device != "cpu")) if given]
        if refused:
            raise ValueError(f"{', '.join(refused)}: not used with --onnx (the export has its own tokens.txt "
                             "and runs on onnxruntime's CPU provider)")
        spec = RecognizerSpec(onnx=args.onnx, search=args.search, beam=args.beam, max_symbols=args.max_symbols,
                              num_threads=1, **context)  # the export's rule; one thread a batch; no torch here
        return backend_for(spec.load())
    recognizer = RecognizerSpec(model=args.model, tokenizer=args.tokenizer, device=args.device, chunk_ms=args.chunk_ms,
                                left_ms=args.left_ms, sinks=args.sinks, search=args.search, beam=args.beam,
                                max_symbols=args.max_symbols, **context).load()  # ImportError without torch, saying so
    import torch

    torch.set_num_threads(args.num_threads or 1)  # see --num-threads
    return backend_for(recognizer, batch_rows=args.batch_rows)


def available_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def options_from(args: argparse.Namespace) -> ServerOptions:
    """The :class:`ServerOptions` of the command line (raises ValueError for bad values)."""
    if args.onnx is not None and args.batch_rows is not None:
        raise ValueError("--batch-rows: not used with --onnx (an export computes a batch on one thread, which "
                         "keeps every stream exact at any batch size)")
    workers = 1 if args.onnx is None else (args.num_threads or available_cpus())
    return ServerOptions(host=args.host, port=args.port, max_connections=args.max_connections,
                         max_batch=args.max_batch, max_message_bytes=args.max_message_bytes,
                         idle_timeout_s=args.idle_timeout_s, workers=workers,
                         endpoint=EndpointConfig(silence_ms=args.endpoint_silence_ms,
                                                 max_segment_s=args.max_segment_s))


async def run(backend, options: ServerOptions) -> None:
    """Serves until SIGINT/SIGTERM."""
    server = StreamingServer(backend, options)
    await server.start()
    print(f"listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    await stop.wait()
    logger.info("stopping: closing %d connection(s)", server.num_connections)
    await server.stop()


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(max(logging.WARNING, getattr(logging, args.log_level)))
    try:
        options = options_from(args)
        backend = build_backend(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # e.g. CheckpointError
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(backend, options))
    except OSError as err:  # e.g. the port is in use
        print(f"error: cannot listen on {options.host}:{options.port}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
