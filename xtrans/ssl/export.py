"""An encoder written as a Hugging Face model directory, the way published checkpoints are laid out.

:func:`save_hf_encoder` writes ``config.json`` (``model_type`` ``hubert`` by default, or
``wav2vec2``; ``wavlm`` and ``data2vec-audio`` for encoders of those families),
``model.safetensors`` with Hugging Face's parameter names (the mask embedding as
``masked_spec_embed``) and ``preprocessor_config.json`` (``do_normalize``), so that
:func:`xtrans.models.wav2vec2.load_pretrained` reads it back like a published model, and
``transformers``' ``HubertModel.from_pretrained`` loads it too.

The names are those of :data:`xtrans.models.wav2vec2.names.HF_NAMES` read backwards
(:data:`XTRANS_TO_HF`); every name written is checked to map back onto the encoder's own through
the importer's table (:func:`~xtrans.models.wav2vec2.import_hf.hf_to_xtrans_state_dict`), and
the configuration through the importer's reading of it
(:func:`~xtrans.models.wav2vec2.import_hf.encoder_kwargs_from_hf_config`).

What ``config.json`` can express, as the importer reads it:

- **the architecture** (:data:`~xtrans.models.wav2vec2.pretrained.ARCHITECTURE_KEYS`, the layer
  count and ``layer_norm_eps``): CNN layers and bias, ``extractor_mode`` ``layer_norm`` or
  ``group_norm`` (``feat_extract_norm``), sizes, pre-/post-LN (``do_stable_layer_norm``), the
  positional convolution, HuBERT's ``feat_proj_layer_norm``, WavLM's bias, data2vec's stack.
  An encoder outside it is refused (:class:`NotExportableError`): the ``cumulative_norm`` and
  ``batch_norm`` front ends have no Hugging Face counterpart, and ``load_pretrained`` refuses to
  change ``extractor_mode`` by an override (``batch_norm``'s running statistics have no name in
  the table either). Such an encoder travels as an encoder-only file
  (:func:`xtrans.ssl.checkpoint.save_encoder_file`).
- **waveform normalisation** ``utterance`` or ``none``: ``preprocessor_config.json``'s
  ``do_normalize``. ``cumulative`` is not expressible; ``do_normalize`` is then ``true`` (the
  nearest thing a Hugging Face feature extractor does) and the option is an override.
- **everything else** (``pos_conv`` modes other than ``full``, ``waveform_norm="cumulative"``,
  dropouts, layer drop, frozen CNN, and the feature masking ``mask_prob``/``mask_length``/
  ``mask_channel_*``) the importer takes as keyword overrides, not from ``config.json`` (masking
  and dropout are fine-tuning choices there). :func:`save_hf_encoder` returns exactly the
  overrides that rebuild this encoder: ``load_pretrained(directory, **overrides)`` has the same
  ``arch`` and every tensor equal, ``mask_emb`` included. Without ``mask_prob`` the importer builds
  an encoder without masking and drops the mask embedding quietly. ``config.json`` also carries
  Hugging Face's own ``mask_time_prob``/``mask_time_length``/``mask_feature_*`` (so that
  ``transformers`` creates and loads ``masked_spec_embed``) and dropouts; the importer ignores them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from xtrans.checkpoint import atomic_write_text, fsync_dir
from xtrans.models.arch import EncoderArch
from xtrans.models.config import encoder_defaults
from xtrans.models.wav2vec2.import_hf import HF_MODEL_TYPES, encoder_kwargs_from_hf_config
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.models.wav2vec2.names import HF_NAMES, rename
from xtrans.models.wav2vec2.pretrained import ARCHITECTURE_KEYS

logger = logging.getLogger(__name__)

__all__ = ["FIXED_BY_CONFIG", "NotExportableError", "XTRANS_TO_HF", "hf_config", "hf_model_type",
           "hf_state_dict", "save_hf_encoder"]

PathLike = Union[str, os.PathLike]

XTRANS_TO_HF: List[Tuple[str, str]] = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.norm\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_projection\.(layer_norm|projection)\.(weight|bias)", r"feature_projection.\1.\2"),
    (r"pos_conv\.conv\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (r"pos_conv\.conv\.parametrizations\.weight\.(original0|original1)",
     r"encoder.pos_conv_embed.conv.parametrizations.weight.\1"),
    (r"pos_conv\.convs\.(\d+)\.(weight|bias)", r"encoder.pos_conv_embed.layers.\1.conv.\2"),
    (r"rel_pos_bias\.embedding\.weight", r"encoder.layers.0.attention.rel_attn_embed.weight"),
    (r"layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"layers\.(\d+)\.(.+)", r"encoder.layers.\1.\2"),
    (r"mask_emb", r"masked_spec_embed"),
]
"""Our names -> Hugging Face's: :data:`xtrans.models.wav2vec2.names.HF_NAMES` read backwards
(the newer ``parametrizations.weight.original0/1`` of the positional convolution, not
``weight_g/weight_v``). :func:`hf_state_dict` checks each against the importer's table."""

FIXED_BY_CONFIG = (*ARCHITECTURE_KEYS, "num_layers", "layer_norm_eps")
"""Encoder options that ``config.json`` must express (the importer reads them, no override may
change them); the others are :func:`save_hf_encoder`'s overrides."""

_ARCHITECTURES = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel",
                  "data2vec-audio": "Data2VecAudioModel"}


class NotExportableError(ValueError):
    """An encoder that a Hugging Face directory of ``model_type`` cannot describe.

    Attributes:
        model_type: the family tried.
        problems: ``{option or weight: what is wrong with it (a phrase that names it)}``.
    """

    def __init__(self, model_type: str, problems: Dict[str, str], hint: str):
        self.model_type, self.problems = model_type, dict(problems)
        listed = "; ".join(self.problems.values())
        super().__init__(f"encoder: cannot be written as a Hugging Face {model_type} model"
                         + (f" ({listed})" if listed else "") + f". {hint}")


def hf_model_type(arch: EncoderArch, prefer: str = "hubert") -> str:
    """The family whose ``config.json`` describes ``arch``: ``wavlm`` with a relative position
    bias, ``data2vec-audio`` with a positional conv stack, else ``prefer`` (``hubert`` or ``wav2vec2``)."""
    if prefer not in ("hubert", "wav2vec2"):
        raise ValueError(f"prefer: expected 'hubert' or 'wav2vec2', found {prefer!r}")
    if arch.rel_pos_buckets > 0:
        return "wavlm"
    if arch.pos_conv_norm == "layer":
        return "data2vec-audio"
    return prefer


def hf_config(arch: EncoderArch, model_type: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(``config.json``, ``preprocessor_config.json``) of an encoder of ``arch`` as ``model_type``.

    Not checked here: :func:`save_hf_encoder` checks what the importer reads back.
    """
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"model_type: expected one of {list(HF_MODEL_TYPES)}, found {model_type!r}")
    channels, kernels, strides = (list(x) for x in zip(*arch.conv_layers))
    mask = arch.mask_prob > 0 or arch.mask_channel_prob > 0
    config: Dict[str, Any] = {
        "model_type": model_type,
        "architectures": [_ARCHITECTURES[model_type]],
        "conv_dim": channels, "conv_kernel": kernels, "conv_stride": strides,
        "num_feat_extract_layers": len(channels),
        "conv_bias": arch.conv_bias,
        "feat_extract_norm": "layer" if arch.extractor_mode == "layer_norm" else "group",
        "feat_extract_activation": "gelu",
        "hidden_size": arch.embed_dim, "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads, "intermediate_size": arch.ffn_dim,
        "hidden_act": "gelu",
        "do_stable_layer_norm": arch.layer_norm_first,
        "num_conv_pos_embeddings": arch.pos_conv_kernel,
        "num_conv_pos_embedding_groups": arch.pos_conv_groups,
        "layer_norm_eps": arch.layer_norm_eps,
        "hidden_dropout": arch.dropout, "feat_proj_dropout": arch.dropout,
        "attention_dropout": arch.attention_dropout, "activation_dropout": arch.activation_dropout,
        "layerdrop": arch.layer_drop,
        # Hugging Face's SpecAugment: with a probability > 0 its models hold masked_spec_embed
        "apply_spec_augment": mask,
        "mask_time_prob": arch.mask_prob, "mask_time_length": arch.mask_length, "mask_time_min_masks": 2,
        "mask_feature_prob": arch.mask_channel_prob, "mask_feature_length": arch.mask_channel_length,
        "mask_feature_min_masks": 0,
        "torch_dtype": "float32",
    }
    if model_type == "hubert":
        config.update(feat_proj_layer_norm=arch.feat_proj_layer_norm, conv_pos_batch_norm=False)
    elif model_type == "wavlm":
        config.update(num_buckets=arch.rel_pos_buckets, max_bucket_distance=arch.rel_pos_max_distance)
    elif model_type == "data2vec-audio":
        for key in ("feat_extract_norm", "do_stable_layer_norm"):  # fixed in the family: layer norm, post-LN
            del config[key]
        config.update(num_conv_pos_embeddings=arch.pos_conv_layers, conv_pos_kernel_size=arch.pos_conv_kernel)
    preprocessor = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                    "sampling_rate": 16000, "padding_value": 0.0,
                    "do_normalize": arch.waveform_norm != "none", "return_attention_mask": True}
    return config, preprocessor


def _check_config(arch: EncoderArch, model_type: str, config: Dict[str, Any],
                  preprocessor: Dict[str, Any]) -> Dict[str, Any]:
    """The overrides that rebuild ``arch`` from what the importer reads of ``config``.

    Raises:
        NotExportableError: an option of :data:`FIXED_BY_CONFIG` that the config cannot carry.
    """
    try:
        read = encoder_kwargs_from_hf_config(config, preprocessor)
    except ValueError as err:
        raise NotExportableError(model_type, {}, f"The importer refuses its config.json: {err}") from None
    built = {**encoder_defaults(), **read}
    ours = arch.kwargs()
    fixed = {k: f"{k}={ours[k]!r} (a {model_type} config.json gives {built[k]!r})"
             for k in FIXED_BY_CONFIG if _norm(ours[k]) != _norm(built[k])}
    if fixed:
        hint = "load_pretrained cannot override these options; keep the encoder-only file (encoder.pt) for it"
        if "extractor_mode" in fixed:
            hint = ("A Hugging Face CNN normalises per frame ('layer_norm') or over the utterance ('group_norm'); "
                    "the streamable 'cumulative_norm' and 'batch_norm' front ends have no counterpart there, and "
                    "load_pretrained cannot override extractor_mode. Keep the encoder-only file (encoder.pt) for it")
        raise NotExportableError(model_type, fixed, hint)
    return {k: v for k, v in ours.items() if _norm(v) != _norm(built[k])}


def _norm(value: Any) -> Any:
    """Tuples and lists compare alike (``conv_layers``)."""
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return value


def _to_hf_name(name: str) -> Optional[str]:
    for pattern, template in XTRANS_TO_HF:
        m = re.fullmatch(pattern, name)
        if m:
            return m.expand(template)
    return None


def hf_state_dict(encoder: Wav2Vec2Encoder, model_type: str) -> Dict[str, torch.Tensor]:
    """The encoder's weights under Hugging Face names of ``model_type`` (contiguous CPU copies).

    Raises:
        NotExportableError: a weight without a Hugging Face name, or whose name the importer's
            table of ``model_type`` would not map back onto it (each named).
    """
    table = HF_NAMES[model_type]
    out: Dict[str, torch.Tensor] = {}
    unnamed: Dict[str, str] = {}
    for name, value in encoder.state_dict().items():
        hf = _to_hf_name(name)
        if hf is None or rename(hf, table) != name:
            unnamed[name] = (f"{name} has no Hugging Face name" if hf is None
                             else f"{name} would be {hf}, which the importer reads as {rename(hf, table)}")
            continue
        out[hf] = value.detach().to("cpu", copy=True).contiguous()
    if unnamed:
        raise NotExportableError(model_type, unnamed, "Its weights have no place in such a model")
    return out


def save_hf_encoder(encoder: Wav2Vec2Encoder, directory: PathLike, model_type: Optional[str] = None
                    ) -> Dict[str, Any]:
    """Writes ``encoder`` as a Hugging Face model directory that ``load_pretrained`` reads back exactly.

    Args:
        encoder: the encoder (its weights as they are; ``mask_emb`` becomes ``masked_spec_embed``).
        directory: created if needed; ``config.json``, ``model.safetensors`` and
            ``preprocessor_config.json`` are replaced (each written atomically).
        model_type: ``hubert`` or ``wav2vec2`` (default ``hubert``); WavLM and data2vec-audio
            encoders always get their own family.

    Returns:
        The keyword overrides of ``load_pretrained(directory, **overrides)`` that rebuild this
        encoder exactly (same ``arch``, every tensor equal; see the module docstring).

    Raises:
        NotExportableError: an encoder that such a directory cannot describe (named options).
        ImportError: ``safetensors`` is not installed.
    """
    arch = encoder.arch
    model_type = hf_model_type(arch, model_type or "hubert")
    config, preprocessor = hf_config(arch, model_type)
    overrides = _check_config(arch, model_type, config, preprocessor)
    tensors = hf_state_dict(encoder, model_type)
    try:
        from safetensors.torch import save_file
    except ImportError as err:
        raise ImportError("safetensors: needed to write model.safetensors (pip install safetensors)") from err
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "model.safetensors.tmp"
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / "model.safetensors")
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(directory)
    atomic_write_text(json.dumps(config, indent=2) + "\n", directory / "config.json")
    atomic_write_text(json.dumps(preprocessor, indent=2) + "\n", directory / "preprocessor_config.json")
    logger.info("wrote %s: %s, %d tensors; load_pretrained overrides %s", directory, model_type, len(tensors),
                overrides)
    return overrides
