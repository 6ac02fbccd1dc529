"""Export a trained transducer to ONNX for streaming outside Python (onnxruntime, sherpa-style runtimes).

Usage::

    python -m xtrans.bin.export_onnx --model exp/stage5/best.pt --outdir exp/onnx \\
        --chunk-ms 640 --left-ms 640 --sinks 4 [--int8] [--opset 17] [--tokenizer bpe.model]

Writes to ``--outdir`` (with :func:`xtrans.export.directory.export`):

- ``encoder_start.onnx`` and ``encoder.onnx``: the streaming encoder, one chunk per call with
  every cache an explicit input/output (:mod:`xtrans.export.encoder`);
- ``predictor.onnx``, ``joiner.onnx``: the stateless prediction network and the joiner
  (:mod:`xtrans.export.onnx_export`);
- ``tokens.txt`` and ``config.json`` (sample rate, frame ms, chunk/left/sinks, samples per call,
  blank id, predictor context, vocabulary size, state names/shapes/dtypes); the same keys go into
  every ONNX file's ``metadata_props``;
- with ``--int8``: ``encoder.int8.onnx`` too, the encoder with its MatMul/Gemm weights quantised
  to int8 by onnxruntime's dynamic quantiser (the CNN stays float), and ``config.json`` names
  it as the encoder to load.

Decode an export with ``python -m xtrans.bin.transcribe --onnx DIR FILE...`` or
:class:`xtrans.onnx.OnnxSpeech2Text`. Every request is checked before anything is written: the
chunk must be a multiple of 20 ms, the left context bounded, the encoder streamable (no
group-norm CNN, no utterance normalisation, no ``pos_conv: full``), the predictor stateless,
the checkpoint a model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

from xtrans.checkpoint import CheckpointError
from xtrans.export.directory import INT8_ENCODER, export, quantize_int8  # noqa: F401 (re-exported)
from xtrans.export.trace import DEFAULT_OPSET
from xtrans.masks import StreamingConfig

logger = logging.getLogger("xtrans.bin.export_onnx")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m xtrans.bin.export_onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint (best.pt, average.pt, ckpt_step<N>.pt)")
    p.add_argument("--outdir", required=True, help="directory for the ONNX files, tokens.txt and config.json")
    p.add_argument("--chunk-ms", "--chunk_ms", dest="chunk_ms", type=float, required=True,
                   help="chunk size in ms (a multiple of 20)")
    p.add_argument("--left-ms", "--left_ms", dest="left_ms", type=float, required=True,
                   help="left context in ms (a multiple of 20; bounded: the caches have fixed sizes)")
    p.add_argument("--sinks", type=int, default=0, help="attention sink frames")
    p.add_argument("--int8", action="store_true", help="also write an int8 (dynamic quantisation) encoder")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--tokenizer", default=None, help="bpe.model or tokens.txt (default: found from the checkpoint)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        streaming = StreamingConfig.from_ms(args.chunk_ms, args.left_ms, args.sinks)
    except ValueError as err:
        print(f"export_onnx: --chunk-ms/--left-ms/--sinks: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        config = export(args.model, args.outdir, streaming, int8=args.int8, opset=args.opset,
                        tokenizer=args.tokenizer)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"export_onnx: {err}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(Path(args.outdir).glob("*.onnx*")))
    print(f"exported {args.model} to {args.outdir} in {time.perf_counter() - start:.1f} s "
          f"({streaming.describe()}, {config['samples_per_call']} samples per call): {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
