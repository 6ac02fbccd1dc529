"""Import of published self-supervised encoders: wav2vec 2.0 / XLSR / XLS-R / MMS, HuBERT, WavLM, data2vec-audio.

:func:`load_pretrained` reads the architecture from the checkpoint, builds a
:class:`~xtrans.models.wav2vec2.model.Wav2Vec2Encoder` with the family's options and loads the
weights, renamed onto ours. With ``pos_conv="full"`` and no streaming the encoder computes what
the original model computes (tested against ``transformers``' ``Wav2Vec2Model``, ``HubertModel``,
``WavLMModel`` and ``Data2VecAudioModel``).

Formats, one importer each (like torchaudio's ``import_huggingface`` / ``import_fairseq``), and one
name table per family (:mod:`xtrans.models.wav2vec2.names`):

- Hugging Face (:mod:`~xtrans.models.wav2vec2.import_hf`): a directory with ``config.json``,
  whose ``model_type`` (``wav2vec2``, ``hubert``, ``wavlm``, ``data2vec-audio``) names the family.
  A name like ``microsoft/wavlm-large`` that is not a local path is fetched with
  ``huggingface_hub.snapshot_download`` when that package is installed and online.
- fairseq (:mod:`~xtrans.models.wav2vec2.import_fairseq`): a ``.pt`` of wav2vec 2.0, HuBERT or
  data2vec-audio, pretrained or fine-tuned; the model config's ``_name`` names the family.
- unilm (:mod:`~xtrans.models.wav2vec2.import_unilm`): WavLM's ``{"cfg", "model"}`` files, told
  from fairseq's by their flat ``cfg`` with WavLM's keys (or layer 0's bias table among the weights).

``.pt`` files are read without fairseq, omegaconf or unilm and without running code from the file
(see :mod:`xtrans.models.wav2vec2.safe_pickle`).

Weight matching policy:
    Pretraining-only weights (quantizer, ``project_q``, ``project_hid``, ``final_proj``,
    ``target_glu``, HuBERT's ``label_embs_concat``, data2vec's ``_ema``) are dropped quietly.
    The mask embedding (fairseq's ``mask_emb``, Hugging Face's ``masked_spec_embed``) is
    imported as ``mask_emb`` when the encoder masks features (``mask_prob > 0``, an override)
    and dropped quietly otherwise; a file without one leaves the encoder's random one (an INFO
    log). Heads of fine-tuned models (``lm_head``, ``w2v_encoder.proj``, classifier heads) are
    dropped with an INFO log. Any other missing **or** unexpected weight raises
    :class:`CheckpointMismatchError` listing every name: an unknown weight means an architecture
    this encoder does not represent, and loading it partially would compute something else.
    ``strict=False`` turns unexpected weights into a WARNING log (missing weights always raise).

Waveform normalisation (``waveform_norm``) follows what the model was trained with: Hugging Face's
``preprocessor_config.json`` ``do_normalize``, fairseq's task ``normalize``, unilm's ``normalize``
(True -> ``utterance``, False -> ``none``).

Dropout, layer drop and feature masking are not imported from the checkpoint (they are
fine-tuning choices): pass them as overrides, e.g. ``load_pretrained(path, dropout=0.1,
layer_drop=0.05, mask_prob=0.5, mask_channel_prob=0.25)``.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import torch

from xtrans.models.wav2vec2.import_fairseq import (encoder_kwargs_from_fairseq, fairseq_to_xtrans_state_dict,
                                                   parse_conv_feature_layers, read_fairseq)
from xtrans.models.wav2vec2.import_hf import encoder_kwargs_from_hf_config, hf_to_xtrans_state_dict, read_hf
from xtrans.models.wav2vec2.import_unilm import encoder_kwargs_from_unilm, is_unilm_checkpoint, read_unilm
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.models.wav2vec2.names import fit_optional_weights
from xtrans.models.wav2vec2.safe_pickle import UnsafeCheckpointError, load_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["load_pretrained", "CheckpointMismatchError", "UnsafeCheckpointError",
           "encoder_kwargs_from_hf_config", "encoder_kwargs_from_fairseq", "encoder_kwargs_from_unilm",
           "hf_to_xtrans_state_dict", "fairseq_to_xtrans_state_dict", "parse_conv_feature_layers"]

PathLike = Union[str, os.PathLike]

ARCHITECTURE_KEYS = ("conv_layers", "extractor_mode", "conv_bias", "embed_dim", "num_heads", "ffn_dim",
                     "layer_norm_first", "pos_conv_kernel", "pos_conv_groups", "feat_proj_layer_norm",
                     "pos_conv_layers", "pos_conv_norm", "rel_pos_buckets", "rel_pos_max_distance", "rel_pos_gated")
"""Encoder options fixed by the checkpoint's weights (``num_layers`` may be lowered)."""


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the encoder built from its configuration.

    Attributes:
        path: the checkpoint.
        missing: encoder weights (our names) the checkpoint lacks.
        unexpected: checkpoint weights (their names) the encoder has no place for.
    """

    def __init__(self, path: str, missing: Sequence[str], unexpected: Sequence[str]):
        self.path = path
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        parts = []
        if self.missing:
            parts.append(f"missing weights {self.missing}")
        if self.unexpected:
            parts.append(f"unexpected weights {self.unexpected}")
        super().__init__(
            f"checkpoint {path} does not fit the encoder built from its configuration: {'; '.join(parts)}. "
            "Check that it is a wav2vec 2.0 / XLS-R / MMS, HuBERT, WavLM or data2vec-audio model (not a "
            "conformer variant) and that it is complete")


# --------------------------------------------------------------------------------------------
# public entry point

def load_pretrained(path: PathLike, *, strict: bool = True, **overrides: Any) -> Wav2Vec2Encoder:
    """Builds the encoder of a pretrained checkpoint (any family and format above), weights loaded, in eval mode.

    Args:
        path: a Hugging Face model directory, the ``.safetensors``/``.bin`` file of one, a fairseq
            or unilm ``.pt`` checkpoint, or a hub name ``org/name`` (downloaded when not a local path).
        strict: raise on unexpected (unknown) checkpoint weights; ``False`` logs them instead.
        **overrides: encoder options applied on top of the checkpoint's architecture, e.g.
            ``pos_conv="chunk"``, ``waveform_norm="cumulative"``, ``layer_drop=0.1``,
            ``dropout=0.1``, ``freeze_feature_extractor=True``; ``num_layers`` may be lowered to
            keep only the first layers. Architecture options (:data:`ARCHITECTURE_KEYS`) are
            fixed by the weights.

    Returns:
        The encoder, ``eval()`` mode, float32, on CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist (and is no hub name that could be fetched).
        ValueError: an unknown or architecture-changing override; an unsupported configuration.
        CheckpointMismatchError: weights missing or unexpected (all named).
        UnsafeCheckpointError: a ``.pt`` file whose pickle names code outside the allowlist.
    """
    resolved = _resolve_path(path)
    if resolved.is_dir() or resolved.suffix in (".safetensors", ".bin", ".json"):
        kwargs, state_dict, source, model_type = read_hf(resolved)
        mapped, dropped, unexpected = hf_to_xtrans_state_dict(state_dict, model_type)
    else:
        ckpt, source = _read_pt(resolved), str(resolved)
        read = read_unilm if is_unilm_checkpoint(ckpt) else read_fairseq
        kwargs, state_dict, family = read(ckpt, source)
        mapped, dropped, unexpected = fairseq_to_xtrans_state_dict(state_dict, kwargs, family)
    if dropped:
        logger.info("%s: dropped %d fine-tuning head weights: %s", source, len(dropped), dropped)
    kwargs = _apply_overrides(kwargs, overrides)
    if "num_layers" in overrides and kwargs["num_layers"] < _count_layers(mapped):
        mapped = {k: v for k, v in mapped.items()
                  if not (k.startswith("layers.") and int(k.split(".")[1]) >= kwargs["num_layers"])}
    return _build(kwargs, mapped, unexpected, source, strict)


# --------------------------------------------------------------------------------------------
# paths

def _resolve_path(path: PathLike) -> Path:
    p = Path(path).expanduser()
    if p.exists():
        return p
    name = str(path)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) and not name.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise FileNotFoundError(
                f"path: {name!r} is no local file or directory, and huggingface_hub is not installed to "
                "fetch it from the hub; download the model and pass its directory") from None
        try:
            local = snapshot_download(name, allow_patterns=[
                "config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json",
                "pytorch_model.bin"])
        except Exception as err:  # offline, unknown repository, ...
            raise FileNotFoundError(
                f"path: {name!r} is no local file or directory, and fetching it from the Hugging Face hub "
                f"failed ({type(err).__name__}: {err}); when offline, download the model elsewhere and "
                "pass its directory") from err
        return Path(local)
    raise FileNotFoundError(f"path: {name!r} does not exist (expected a Hugging Face model directory, "
                            "its .safetensors/.bin file, or a fairseq .pt checkpoint)")


# --------------------------------------------------------------------------------------------
# .pt files (fairseq, unilm)

def _read_pt(path: Path) -> Mapping[str, Any]:
    """A ``.pt`` checkpoint through the restricted unpickler: a dict with ``model`` weights."""
    try:
        ckpt = load_checkpoint(str(path))
    except UnsafeCheckpointError:
        raise
    except Exception as err:
        raise ValueError(f"path: {path} is not a readable torch/fairseq checkpoint "
                         f"({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        found = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"path: {path} is no fairseq checkpoint (expected a dict with 'model' and 'cfg' "
                         f"or 'args', found {found})")
    return ckpt


# --------------------------------------------------------------------------------------------
# building

def _apply_overrides(kwargs: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    params = inspect.signature(Wav2Vec2Encoder.__init__).parameters
    known = set(params) - {"self"}
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"load_pretrained: override {key!r} is no encoder option; "
                             f"known options: {sorted(known)}")
        fixed = kwargs.get(key, params[key].default)  # a family's option the importer left at its default
        if key in ARCHITECTURE_KEYS and value != fixed:
            raise ValueError(f"load_pretrained: override {key}={value!r} changes the architecture fixed by "
                             f"the checkpoint ({key}={fixed!r}); leave it out")
        if key == "num_layers" and not 1 <= int(value) <= kwargs["num_layers"]:
            raise ValueError(f"load_pretrained: override num_layers={value} must be in "
                             f"[1, {kwargs['num_layers']}] (the checkpoint's layers)")
    out = dict(kwargs)
    out.update(overrides)
    return out


def _count_layers(state_dict: Mapping[str, torch.Tensor]) -> int:
    ids = {int(k.split(".")[1]) for k in state_dict if k.startswith("layers.")}
    return max(ids) + 1 if ids else 0


def _build(kwargs: Dict[str, Any], state_dict: Dict[str, torch.Tensor], unexpected: List[str],
           source: str, strict: bool) -> Wav2Vec2Encoder:
    encoder = Wav2Vec2Encoder(**kwargs)
    own = encoder.state_dict()
    state_dict = fit_optional_weights(own, state_dict, source)  # the mask embedding, with feature masking only
    missing = sorted(k for k in own if k not in state_dict)
    # names that map onto ours but are surplus (e.g. more layers than the config says)
    unexpected = sorted(unexpected + [k for k in state_dict if k not in own])
    if missing or (unexpected and strict):
        raise CheckpointMismatchError(source, missing, unexpected)
    if unexpected:
        logger.warning("%s: ignoring %d unexpected weights: %s", source, len(unexpected), unexpected)
    bad_shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)}, encoder {tuple(v.shape)}"
                  for k, v in own.items() if tuple(state_dict[k].shape) != tuple(v.shape)]
    if bad_shapes:
        raise ValueError(f"checkpoint {source}: weight shapes disagree with its configuration: {bad_shapes}")
    encoder.load_state_dict({k: state_dict[k] for k in own}, strict=True)
    logger.info("loaded %s: %d weights, %s", source, len(own),
                {k: kwargs[k] for k in ("extractor_mode", "embed_dim", "num_layers", "layer_norm_first",
                                        "pos_conv", "pos_conv_layers", "rel_pos_buckets", "waveform_norm")
                 if k in kwargs})
    return encoder.eval()
