"""The ``config.json`` of an ONNX export directory, and the metadata copied into every model.

An export directory (written by ``python -m xtrans.bin.export_onnx``) holds::

    encoder_start.onnx  samples (B, prime_samples) -> new_state.*   (``encoder_start_file`` names it)
    encoder.onnx      samples (B, samples_per_call), num_samples (B,), state.* -> frames (B, C, D),
                      num_frames (B,), new_state.*   (``encoder_file`` names it; int8 or float)
    predictor.onnx    context (N, K) int64 -> predictor_out (N, D_pred)
    joiner.onnx       encoder_out (N, D), predictor_out (N, D_pred) -> logits (N, V)
    tokens.txt        ``<token> <id>`` per line, id 0 = blank
    config.json       the keys of :data:`REQUIRED_KEYS` (and more), below

Every key of ``config.json`` is also stored in each ONNX file's ``metadata_props`` as a string
holding its JSON-encoded value (:func:`read_metadata` decodes them), so a model file says which
export it belongs to.

Streaming arithmetic (16 kHz, 20 ms frames): a frame reads 400 samples and frames advance by
``frame_stride = 320`` samples, so the first ``prime_samples = 80`` samples of a stream
prime the encoder and every further 320 samples complete one frame; an encoder call takes
``samples_per_call = 320 C`` new samples and returns the chunk's ``C`` frames. A stream ``s``
runs as::

    state = encoder_start(s[0:80])            # the CNN's carries after the first 80 samples
    frames, num_frames, state = encoder(s[80 + 320 C k : 80 + 320 C (k + 1)], 320 C, state)  # k = 0, 1, ...
    frames, num_frames, state = encoder(the last r samples zero-padded, r, state)   # when r >= 320

and the first ``num_frames`` of each call's frames are valid: the rule of
:class:`xtrans.frames.StreamGeometry`, which :func:`stream_geometry` reads from a config.

This module imports neither torch nor onnx (the standard library and :mod:`xtrans.frames`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Union

from xtrans.frames import StreamGeometry

FORMAT = "xtrans-onnx-1"
"""The ``format`` value of the export layout this runtime reads."""

CONFIG_FILE = "config.json"
TOKENS_FILE = "tokens.txt"
PREDICTOR_FILE = "predictor.onnx"
JOINER_FILE = "joiner.onnx"
DEFAULT_ENCODER_FILE = "encoder.onnx"

REQUIRED_KEYS: Dict[str, type] = {
    "format": str,
    "sample_rate": int,
    "frame_ms": int,
    "frame_stride": int,
    "chunk_frames": int,
    "samples_per_call": int,
    "prime_samples": int,
    "encoder_start_file": str,
    "blank_id": int,
    "vocab_size": int,
    "context_size": int,
    "encoder_dim": int,
    "predictor_dim": int,
    "state_names": list,
    "state_shapes": list,
    "state_dtypes": list,
}
"""The ``config.json`` keys the runtime needs, with their JSON types."""

CONSISTENT_KEYS = ("format", "sample_rate", "frame_stride", "chunk_frames", "left_frames", "sinks",
                   "samples_per_call", "prime_samples", "blank_id", "vocab_size", "context_size",
                   "encoder_dim", "predictor_dim", "joiner_dim")
"""Keys that a model file's metadata, when it has them, must give the same as ``config.json``
(a file copied in from another export is refused)."""

STATE_DTYPES = ("float32", "float64", "int64", "int32", "bool")


def check_config(config: Mapping[str, Any], where: str = "config") -> None:
    """Checks that a config has every key of :data:`REQUIRED_KEYS` with a sane value.

    Args:
        config: the decoded ``config.json``.
        where: what to call it in error messages (e.g. its path).

    Raises:
        ValueError: naming the first missing or wrong key, what was expected and what was found.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: expected a JSON object, found {type(config).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"{where}: expected the keys {missing} of an xtrans ONNX export, found only "
                         f"{sorted(config)}; re-export with python -m xtrans.bin.export_onnx")
    if config["format"] != FORMAT:
        raise ValueError(f"{where}: format: expected {FORMAT!r}, found {config['format']!r}; "
                         "re-export with this version of xtrans")
    for key, kind in REQUIRED_KEYS.items():
        value = config[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{where}: {key}: expected a JSON {kind.__name__}, found {value!r}")
    for key in ("sample_rate", "frame_ms", "frame_stride", "chunk_frames", "samples_per_call",
                "vocab_size", "context_size", "encoder_dim", "predictor_dim"):
        if config[key] <= 0:
            raise ValueError(f"{where}: {key}: expected a positive integer, found {config[key]}")
    if config["samples_per_call"] != config["frame_stride"] * config["chunk_frames"]:
        raise ValueError(f"{where}: samples_per_call: expected frame_stride x chunk_frames = "
                         f"{config['frame_stride'] * config['chunk_frames']}, found {config['samples_per_call']}")
    if config["prime_samples"] < 0:
        raise ValueError(f"{where}: prime_samples: expected >= 0, found {config['prime_samples']}")
    if not 0 <= config["blank_id"] < config["vocab_size"]:
        raise ValueError(f"{where}: blank_id: expected in [0, {config['vocab_size']}), found {config['blank_id']}")
    names, shapes, dtypes = config["state_names"], config["state_shapes"], config["state_dtypes"]
    if not len(names) == len(shapes) == len(dtypes):
        raise ValueError(f"{where}: state_names/state_shapes/state_dtypes: expected lists of equal length, "
                         f"found {len(names)}, {len(shapes)}, {len(dtypes)}")
    for name, shape, dtype in zip(names, shapes, dtypes):
        if not isinstance(name, str) or not name.startswith("state."):
            raise ValueError(f"{where}: state_names: expected names 'state.<x>', found {name!r}")
        if not isinstance(shape, list) or not all(
                d == "B" or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape):
            raise ValueError(f"{where}: state_shapes: {name}: expected a list of 'B' and sizes >= 0, "
                             f"found {shape!r}")
        if dtype not in STATE_DTYPES:
            raise ValueError(f"{where}: state_dtypes: {name}: expected one of {STATE_DTYPES}, found {dtype!r}")
    for key in ("encoder_file", "encoder_start_file"):
        if config.get(key) is not None and not (isinstance(config[key], str) and config[key]
                                                and "/" not in config[key] and "\\" not in config[key]):
            raise ValueError(f"{where}: {key}: expected a file name in the export directory, found {config[key]!r}")


def stream_geometry(config: Mapping[str, Any]) -> StreamGeometry:
    """How a stream is fed to the export's encoder (``chunk_frames``, ``frame_stride``, ``prime_samples``).

    The config should have passed :func:`check_config` (so ``samples_per_call`` agrees).
    """
    stride = int(config["frame_stride"])
    return StreamGeometry(int(config["chunk_frames"]), stride, stride + int(config["prime_samples"]))


def load_config(directory: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Reads and checks ``DIR/config.json`` of an export directory.

    Raises:
        FileNotFoundError: when the directory or its ``config.json`` does not exist.
        ValueError: when the path is not a directory, or the config is not valid JSON or lacks
            a key (:func:`check_config`).
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"ONNX export directory {directory} does not exist; write one with "
                                "python -m xtrans.bin.export_onnx --outdir DIR")
    if not directory.is_dir():
        raise ValueError(f"ONNX export directory: expected a directory (with {CONFIG_FILE}, *.onnx and "
                         f"{TOKENS_FILE}), found the file {directory}")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {directory} is not an xtrans ONNX export "
                                "(python -m xtrans.bin.export_onnx writes one)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: expected JSON, found a syntax error ({err})") from None
    check_config(config, str(path))
    return config


def encode_metadata(config: Mapping[str, Any]) -> Dict[str, str]:
    """Config -> ONNX ``metadata_props`` entries: each value JSON-encoded as a string."""
    return {str(k): json.dumps(v) for k, v in config.items()}


def decode_metadata(props: Mapping[str, str]) -> Dict[str, Any]:
    """ONNX ``metadata_props`` entries -> values (inverse of :func:`encode_metadata`); an entry
    that is not JSON (written by another tool) is kept as the string it is."""
    out: Dict[str, Any] = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


def read_metadata(onnx_path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The decoded ``metadata_props`` of an ONNX file (read with onnxruntime; no torch, no onnx).

    Raises:
        FileNotFoundError: when the file does not exist.
    """
    import onnxruntime as ort

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return decode_metadata(session.get_modelmeta().custom_metadata_map)


def check_metadata(config: Mapping[str, Any], metadata: Mapping[str, Any], where: str) -> None:
    """Checks that a model file's metadata agrees with ``config.json`` on :data:`CONSISTENT_KEYS`
    (keys the metadata lacks are not checked).

    Raises:
        ValueError: naming the file and the first key that differs.
    """
    for key in CONSISTENT_KEYS:
        if key in metadata and key in config and metadata[key] != config[key]:
            raise ValueError(f"{where}: metadata {key}: expected {config[key]!r} (as in {CONFIG_FILE}), "
                             f"found {metadata[key]!r}; the file comes from another export")
