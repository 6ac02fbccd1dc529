"""ONNX export of the transducer's prediction network and joiner, and the export directory's
``tokens.txt``, ``config.json`` and model metadata.

The layout these files follow (and :mod:`xtrans.onnx` reads) is in :mod:`xtrans.onnx.config`::

    predictor.onnx   context (N, K) int64 -> predictor_out (N, D_pred) float32
                     = predictor.output(StatelessState(context)): the prediction after the last
                     K tokens, oldest first, blank-padded at the start
    joiner.onnx      encoder_out (N, D), predictor_out (N, D_pred) -> logits (N, V)
                     = joiner(encoder_out, predictor_out) = W_out tanh(W_enc e + W_pred p)

``N`` (hypotheses) is a dynamic axis. Only the stateless prediction network is exported: its
state is the token context itself, so the search needs no recurrent state tensors.

The graphs are traced by :func:`xtrans.export.trace.trace` (PyTorch's TorchScript-based
exporter): the two graphs are small, static and control-flow free, and it exports them in about
a second.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch
from torch import nn

from xtrans.export.trace import DEFAULT_OPSET, trace
from xtrans.models.predictor import LSTMPredictor, StatelessPredictor, StatelessState
from xtrans.onnx.config import CONFIG_FILE, check_config, encode_metadata
from xtrans.tokenizer import Tokenizer
from xtrans.transcription import TokenTable

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class PredictorOutput(nn.Module):
    """``context (N, K) -> predictor_out (N, D_pred)``: the stateless predictor's output for a context."""

    def __init__(self, predictor: StatelessPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.predictor.output(StatelessState(context))


class JoinerLogits(nn.Module):
    """``encoder_out (N, D), predictor_out (N, D_pred) -> logits (N, V)``: the unprojected joiner."""

    def __init__(self, joiner: nn.Module):
        super().__init__()
        self.joiner = joiner

    def forward(self, encoder_out: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        return self.joiner(encoder_out, predictor_out)


def stateless_predictor(model) -> StatelessPredictor:
    """The model's prediction network, when it is stateless.

    Raises:
        ValueError: for an LSTM (or other) prediction network.
    """
    predictor = getattr(model, "predictor", None)
    if isinstance(predictor, StatelessPredictor):
        return predictor
    found = "lstm" if isinstance(predictor, LSTMPredictor) else type(predictor).__name__
    raise ValueError(f"model.predictor: expected a stateless predictor, found {found}; the ONNX export "
                     "supports the stateless prediction network only (predictor kind: stateless)")


def decoder_config(model) -> Dict[str, Any]:
    """The ``config.json`` keys of the prediction network and joiner: ``blank_id``, ``vocab_size``,
    ``context_size``, ``encoder_dim``, ``predictor_dim``, ``joiner_dim``.

    Raises:
        ValueError: for a prediction network that is not stateless.
    """
    predictor = stateless_predictor(model)
    joiner = model.joiner
    return {"blank_id": int(model.blank), "vocab_size": int(model.vocab_size),
            "context_size": int(predictor.context_size), "encoder_dim": int(joiner.encoder_proj.in_features),
            "predictor_dim": int(predictor.output_dim), "joiner_dim": int(joiner.encoder_proj.out_features)}


def export_predictor(model, path: PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Writes ``predictor.onnx``: ``context (N, K) int64 -> predictor_out (N, D_pred) float32``.

    Args:
        model: a :class:`~xtrans.models.transducer.Transducer` with a stateless predictor.
        path: the file to write.
        opset: ONNX opset.

    Returns:
        ``path``.

    Raises:
        ValueError: for an LSTM prediction network ("expected a stateless predictor, found lstm").
    """
    predictor = stateless_predictor(model)
    K = predictor.context_size
    device = next(predictor.parameters()).device
    context = torch.full((2, K), int(model.blank), dtype=torch.long, device=device)  # (N, K)
    context[1] = torch.arange(K, device=device) % int(model.vocab_size)
    return trace(PredictorOutput(predictor), (context,), path, ["context"], ["predictor_out"], opset=opset)


def export_joiner(model, path: PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Writes ``joiner.onnx``: ``encoder_out (N, D), predictor_out (N, D_pred) -> logits (N, V)``.

    Args:
        model: a :class:`~xtrans.models.transducer.Transducer`.
        path: the file to write.
        opset: ONNX opset.

    Returns:
        ``path``.
    """
    joiner = model.joiner
    weight = joiner.encoder_proj.weight
    enc = torch.zeros(2, joiner.encoder_proj.in_features, dtype=weight.dtype, device=weight.device)
    pred = torch.zeros(2, joiner.predictor_proj.in_features, dtype=weight.dtype, device=weight.device)
    return trace(JoinerLogits(joiner), (enc, pred), path, ["encoder_out", "predictor_out"], ["logits"], opset=opset)


def write_tokens(tokenizer, path: PathLike) -> Path:
    """Writes ``tokens.txt`` (``<token> <id>`` per line, id 0 = blank), the format of
    :class:`~xtrans.transcription.TokenTable`.

    Args:
        tokenizer: a :class:`~xtrans.tokenizer.Tokenizer`, a :class:`TokenTable` (anything with
            ``vocab_size`` and ``id_to_token``), or the path of a sentencepiece ``.model`` or a
            ``tokens.txt``.
        path: the file to write.

    Returns:
        ``path``.

    Raises:
        ValueError: for a token that is empty or has white space at either end (the table would
            not read back).
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = TokenTable(tokenizer) if Path(tokenizer).suffix == ".txt" else Tokenizer(tokenizer)
    lines = []
    for i in range(tokenizer.vocab_size):
        token = tokenizer.id_to_token(i)
        if not token or token != token.strip() or "\n" in token:
            raise ValueError(f"tokenizer: token {i}: expected a non-empty string without white space at "
                             f"its ends, found {token!r}")
        lines.append(f"{token} {i}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_config(directory: PathLike, config: Mapping[str, Any]) -> Path:
    """Writes ``DIR/config.json`` after checking it has every key the runtime needs.

    Raises:
        ValueError: for a missing or malformed key (:func:`xtrans.onnx.config.check_config`).
    """
    check_config(config, "config")
    path = Path(directory) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(config), indent=2) + "\n", encoding="utf-8")
    return path


def add_metadata(onnx_path: PathLike, metadata: Mapping[str, Any]) -> None:
    """Stores ``metadata`` in an ONNX file's ``metadata_props``, each value JSON-encoded as a
    string (keys already there are replaced; read back with :func:`xtrans.onnx.read_metadata`).

    Tensors stored as external data stay where they are.
    """
    import onnx

    path = str(onnx_path)
    proto = onnx.load(path, load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(encode_metadata(metadata))
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)
