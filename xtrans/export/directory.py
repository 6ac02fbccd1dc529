"""An export directory from a checkpoint: every graph, ``tokens.txt``, ``config.json`` and metadata.

::

    config = export("exp/stage5/best.pt", "exp/onnx", StreamingConfig.from_ms(640, 640, 4), int8=True)

writes (the layout of :mod:`xtrans.onnx.config`, read by :class:`xtrans.onnx.OnnxSpeech2Text`):

- ``encoder_start.onnx`` and ``encoder.onnx``: the streaming encoder, one chunk per call with
  every cache an explicit input/output (:mod:`xtrans.export.encoder`);
- ``predictor.onnx``, ``joiner.onnx``: the stateless prediction network and the joiner
  (:mod:`xtrans.export.onnx_export`);
- ``tokens.txt`` and ``config.json`` (sample rate, frame ms, chunk/left/sinks, samples per call,
  blank id, predictor context, vocabulary size, state names/shapes/dtypes); the same keys go into
  every ONNX file's ``metadata_props``;
- with ``int8``: ``encoder.int8.onnx`` too (:func:`quantize_int8`), and ``config.json`` names it
  as the encoder to load.

Every request is checked before anything is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from xtrans.checkpoint import load_model
from xtrans.export.encoder import check_exportable, export_encoder
from xtrans.export.onnx_export import (add_metadata, decoder_config, export_joiner, export_predictor,
                                       stateless_predictor, write_config, write_tokens)
from xtrans.export.trace import DEFAULT_OPSET
from xtrans.frames import FRAME_MS, FRAME_STRIDE, SAMPLE_RATE
from xtrans.masks import StreamingConfig
from xtrans.onnx.config import FORMAT
from xtrans.tokenizer import find_tokenizer, load_tokenizer

INT8_ENCODER = "encoder.int8.onnx"
"""The file name of the int8 encoder."""


def quantize_int8(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], external_data: bool = False) -> None:
    """Dynamic int8 quantisation of the MatMul/Gemm weights (onnxruntime's quantiser); convolutions stay float.

    ``external_data``: the source keeps its weights in a ``.data`` file, and so will ``dst``.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.INFO)  # the quantiser logs a line per tensor through the root logger
    try:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                         use_external_data_format=external_data)
    finally:
        logging.disable(logging.NOTSET)


def export(model_path: Union[str, os.PathLike], outdir: Union[str, os.PathLike], streaming: StreamingConfig, *,
           int8: bool = False, opset: int = DEFAULT_OPSET, tokenizer: Optional[str] = None) -> Dict[str, Any]:
    """Checks the request, then writes the export directory; returns its config.

    Args:
        model_path: the checkpoint.
        outdir: the export directory (created).
        streaming: the streaming rule, fixed at export time (a chunk and a bounded left context).
        int8: also write the int8 encoder and name it in ``config.json``.
        opset: the ONNX opset.
        tokenizer: a sentencepiece ``.model`` or ``tokens.txt`` (default: found from the checkpoint).

    Raises:
        CheckpointError: the checkpoint is not a transducer model.
        ValueError: the encoder cannot stream under ``streaming`` (or the left context is
            unbounded), or the prediction network is not stateless.
        FileNotFoundError: no tokenizer was found.
    """
    model, ckpt = load_model(model_path)
    model.eval()
    check_exportable(model.encoder, streaming)
    stateless_predictor(model)  # before anything is written
    table = load_tokenizer(tokenizer or find_tokenizer(model_path, ckpt))
    out = Path(outdir)
    config: Dict[str, Any] = dict(format=FORMAT, sample_rate=SAMPLE_RATE, frame_ms=FRAME_MS,
                                  frame_stride=FRAME_STRIDE, chunk_ms=streaming.chunk_size * FRAME_MS,
                                  left_ms=streaming.left_context * FRAME_MS)
    config.update(export_encoder(model.encoder, streaming, out, opset=opset))  # the encoder's own frame_stride
    export_predictor(model, out / "predictor.onnx", opset=opset)
    export_joiner(model, out / "joiner.onnx", opset=opset)
    write_tokens(table, out / "tokens.txt")
    config.update(decoder_config(model))
    config.update(encoder_file="encoder.onnx", encoder_start_file="encoder_start.onnx", int8=False, opset=opset)
    files = ["encoder_start.onnx", "encoder.onnx", "predictor.onnx", "joiner.onnx"]
    if int8:
        quantize_int8(out / "encoder.onnx", out / INT8_ENCODER, external_data=config["external_data"])
        config.update(encoder_file=INT8_ENCODER, int8=True)
        files.append(INT8_ENCODER)
    write_config(out, config)
    for name in files:
        add_metadata(out / name, config)
    return config
