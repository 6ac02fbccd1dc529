"""Import of Hugging Face checkpoints: wav2vec2 (XLSR, XLS-R, MMS), HuBERT, WavLM and data2vec-audio.

A directory with ``config.json`` and ``model.safetensors`` (also sharded,
``model.safetensors.index.json``) or ``pytorch_model.bin``; or the path of such a weights file
with ``config.json`` beside it. ``config.json``'s ``model_type`` names the family; keys may carry
the prefix of a task wrapper (``wav2vec2.`` / ``hubert.`` / ``wavlm.`` / ``data2vec_audio.`` of
``*ForCTC``, ``*ForPreTraining``, ...); the positional convolution may be stored as
``parametrizations.weight.original0/1`` or as the older ``weight_g/weight_v``.

Waveform normalisation: ``preprocessor_config.json``'s ``do_normalize`` (True -> ``utterance``,
False -> ``none``); without that file, ``utterance`` for layer-norm extractors (large models) and
``none`` for group-norm ones (base models).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from xtrans.frames import SAMPLE_RATE
from xtrans.models.wav2vec2.names import HEADS, HF_NAMES, PRETRAINING_ONLY, rename

logger = logging.getLogger(__name__)

HF_MODEL_TYPES = tuple(HF_NAMES)
"""``config.json`` ``model_type`` values this encoder represents."""

_PREFIXES = {"wav2vec2": "wav2vec2.", "hubert": "hubert.", "wavlm": "wavlm.", "data2vec-audio": "data2vec_audio."}
"""The attribute under which a task wrapper (``*ForCTC``) holds the bare model."""


def read_json(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_hf(path: Path) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], str, str]:
    """(encoder kwargs, state dict, weights file, model_type) of a Hugging Face directory or weights file."""
    if path.suffix == ".json":  # config.json (or an index) given: use its directory
        path = path.parent
    directory = path if path.is_dir() else path.parent
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"path: {path} has no config.json beside the weights (a Hugging Face "
                                "model directory needs both)")
    config = read_json(config_path)
    pre_path = directory / "preprocessor_config.json"
    preprocessor = read_json(pre_path) if pre_path.is_file() else None
    kwargs = encoder_kwargs_from_hf_config(config, preprocessor)

    if path.is_dir():
        candidates = [directory / "model.safetensors", directory / "model.safetensors.index.json",
                      directory / "pytorch_model.bin"]
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise FileNotFoundError(
                f"path: {directory} has config.json but none of model.safetensors, "
                "model.safetensors.index.json, pytorch_model.bin")
    else:
        weights = path
    return kwargs, _read_weights(weights), str(weights), config.get("model_type", "wav2vec2")


def _read_weights(weights: Path) -> Dict[str, torch.Tensor]:
    if weights.name.endswith(".index.json"):
        shards = sorted(set(read_json(weights)["weight_map"].values()))
        state: Dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_read_weights(weights.parent / shard))
        return state
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(weights), device="cpu")
    try:
        obj = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"path: {weights} is not a loadable torch state dict ({err})") from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"path: {weights} holds a {type(obj).__name__}, expected a state dict")
    return dict(obj)


def encoder_kwargs_from_hf_config(config: Mapping[str, Any],
                                  preprocessor: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Encoder keyword arguments from a Hugging Face ``config.json`` (and ``preprocessor_config.json``).

    The family (``model_type``) decides the options beyond wav2vec 2.0's: HuBERT's
    ``feat_proj_layer_norm``, WavLM's relative position bias (``num_buckets``,
    ``max_bucket_distance``, always gated), data2vec-audio's positional conv stack
    (``num_conv_pos_embeddings`` layers of ``conv_pos_kernel_size``, post-LN, layer-norm CNN).

    Raises:
        ValueError: a model type or option this encoder does not implement.
    """
    model_type = config.get("model_type", "wav2vec2")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"config.json: model_type {model_type!r} is not supported; expected one of "
                         f"{list(HF_MODEL_TYPES)}")
    for key in ("feat_extract_activation", "hidden_act"):
        if config.get(key, "gelu") != "gelu":
            raise ValueError(f"config.json: {key}={config[key]!r} is not supported; expected 'gelu'")
    if config.get("add_adapter"):
        raise ValueError("config.json: add_adapter=true is not supported (adapter layers after the encoder)")
    if config.get("position_embeddings_type") not in (None, "conv"):  # conformer-style configs
        raise ValueError(f"config.json: position_embeddings_type={config['position_embeddings_type']!r}"
                         " is not supported")
    if config.get("conv_pos_batch_norm"):
        raise ValueError("config.json: conv_pos_batch_norm=true is not supported (a batch norm before the "
                         "positional convolution); expected false")

    dims = list(config.get("conv_dim", [512] * 7))
    kernels = list(config.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]))
    strides = list(config.get("conv_stride", [5, 2, 2, 2, 2, 2, 2]))
    if not len(dims) == len(kernels) == len(strides):
        raise ValueError(f"config.json: conv_dim, conv_kernel, conv_stride differ in length "
                         f"({len(dims)}, {len(kernels)}, {len(strides)})")
    data2vec = model_type == "data2vec-audio"
    norm = "layer" if data2vec else config.get("feat_extract_norm", "group")  # data2vec: always layer norm
    if norm not in ("group", "layer"):
        raise ValueError(f"config.json: feat_extract_norm={norm!r}; expected 'group' or 'layer'")
    extractor_mode = "layer_norm" if norm == "layer" else "group_norm"

    do_normalize = None if preprocessor is None else preprocessor.get("do_normalize")
    if do_normalize is None:
        waveform_norm = "utterance" if extractor_mode == "layer_norm" else "none"
    else:
        waveform_norm = "utterance" if do_normalize else "none"
    if preprocessor is not None and preprocessor.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
        logger.warning("preprocessor_config.json: sampling_rate %s, expected %d",
                       preprocessor["sampling_rate"], SAMPLE_RATE)

    kwargs = dict(
        conv_layers=tuple((int(c), int(k), int(s)) for c, k, s in zip(dims, kernels, strides)),
        extractor_mode=extractor_mode,
        conv_bias=bool(config.get("conv_bias", False)),
        embed_dim=int(config.get("hidden_size", 768)),
        num_layers=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        ffn_dim=int(config.get("intermediate_size", 3072)),
        layer_norm_first=False if data2vec else bool(config.get("do_stable_layer_norm", False)),
        pos_conv_kernel=int(config.get("num_conv_pos_embeddings", 128)),
        pos_conv_groups=int(config.get("num_conv_pos_embedding_groups", 16)),
        waveform_norm=waveform_norm,
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
    )
    if model_type == "hubert":
        kwargs["feat_proj_layer_norm"] = bool(config.get("feat_proj_layer_norm", True))
    elif model_type == "wavlm":
        kwargs.update(rel_pos_buckets=int(config.get("num_buckets", 320)),
                      rel_pos_max_distance=int(config.get("max_bucket_distance", 800)), rel_pos_gated=True)
    elif data2vec:
        kwargs.update(pos_conv_kernel=int(config.get("conv_pos_kernel_size", 19)),
                      pos_conv_layers=int(config.get("num_conv_pos_embeddings", 5)), pos_conv_norm="layer")
    return kwargs


def hf_to_xtrans_state_dict(state_dict: Mapping[str, torch.Tensor], model_type: str = "wav2vec2"
                            ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Renames a Hugging Face state dict of family ``model_type`` onto the encoder's names.

    Returns:
        (mapped state dict, dropped head weights, unexpected weights). Pretraining-only
        weights are dropped silently and appear in neither list.
    """
    if model_type not in HF_NAMES:
        raise ValueError(f"model_type: expected one of {list(HF_NAMES)}, found {model_type!r}")
    table, prefix = HF_NAMES[model_type], _PREFIXES[model_type]
    has_prefix = any(k.startswith(prefix) for k in state_dict)
    mapped: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unexpected: List[str] = []
    for key, value in state_dict.items():
        name = key[len(prefix):] if has_prefix and key.startswith(prefix) else key
        if has_prefix and not key.startswith(prefix):
            # heads of *ForCTC / ForPreTraining / ForSequenceClassification
            if PRETRAINING_ONLY.match(name):
                continue
            (dropped if HEADS.match(name) else unexpected).append(key)
            continue
        if PRETRAINING_ONLY.match(name):
            continue
        new = rename(name, table)
        if new is None:
            (dropped if HEADS.match(name) else unexpected).append(key)
        else:
            mapped[new] = value
    return mapped, dropped, unexpected
