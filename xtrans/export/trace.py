"""Tracing a module to an ONNX file: the one wrapper of ``torch.onnx.export`` in xtrans.

Every graph of an export (``encoder_start``, ``encoder``, ``predictor``, ``joiner``) is written
by :func:`trace`, with PyTorch's TorchScript-based exporter (``dynamo=False``): the graphs are
traced at fixed shapes, static and control-flow free, and it exports them directly. The first
axis of every input and output is dynamic (streams, or hypotheses).
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Sequence, Union

import torch
from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
"""ONNX opset of the exported graphs unless told otherwise."""


def trace(module: nn.Module, args: tuple, path: Union[str, os.PathLike], inputs: Sequence[str],
          outputs: Sequence[str], *, opset: int = DEFAULT_OPSET, batch_axis: str = "N",
          external_data: bool = False) -> Path:
    """Traces ``module`` on ``args`` (in eval mode, without gradients) to the ONNX file ``path``.

    Args:
        module: what to trace; its training mode is restored afterwards.
        args: example inputs, in the order of ``inputs``.
        path: the file to write (its folder is created).
        inputs, outputs: the graph's input and output names.
        opset: the ONNX opset.
        batch_axis: the name of the dynamic first axis of every input and output.
        external_data: store the weights in ``<name>.data`` beside the graph (for graphs over
            2 GB, which protobuf refuses). The exporter writes such a graph as one file per
            weight, so it is traced into a temporary folder and saved again with every weight in
            the one ``.data`` file.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: Dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter traces the fixed-shape graph directly
    training = module.training
    module.eval()
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            target = Path(tmp) / path.name if external_data else path
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecation of the TorchScript exporter, tracer notes on shapes
                torch.onnx.export(module, args, str(target), input_names=list(inputs), output_names=list(outputs),
                                  dynamic_axes={name: {0: batch_axis} for name in (*inputs, *outputs)},
                                  opset_version=opset, do_constant_folding=True, **kwargs)
            if external_data:
                import onnx

                proto = onnx.load(str(target))  # with the weights, wherever the exporter put them
                onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=path.name + ".data", size_threshold=1024)
    finally:
        module.train(training)
    logger.info("wrote %s (opset %d)", path, opset)
    return path
