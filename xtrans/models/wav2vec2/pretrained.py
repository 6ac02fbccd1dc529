"""Import of published wav2vec 2.0 / XLSR weights: Hugging Face directories and fairseq checkpoints.

:func:`load_pretrained` reads the architecture from the checkpoint, builds a
:class:`~xtrans.models.wav2vec2.model.Wav2Vec2Encoder` and loads the weights, renamed onto
ours. With ``pos_conv="full"`` and no streaming the encoder computes what the original
model computes (tested against ``transformers.Wav2Vec2Model``).

Formats:
    Hugging Face: a directory with ``config.json`` and ``model.safetensors`` (also sharded,
    ``model.safetensors.index.json``) or ``pytorch_model.bin``; or the path of such a weights
    file with ``config.json`` beside it. Keys may carry the ``wav2vec2.`` prefix of
    ``Wav2Vec2ForCTC`` / ``Wav2Vec2ForPreTraining``; the positional convolution may be stored
    as ``parametrizations.weight.original0/1`` or as the older ``weight_g/weight_v``.
    A name like ``facebook/wav2vec2-large-xlsr-53`` that is not a local path is fetched with
    ``huggingface_hub.snapshot_download`` when that package is installed and online.

    fairseq: a ``.pt`` checkpoint (pretrained, or fine-tuned with a ``w2v_encoder.w2v_model.``
    prefix), read without fairseq or omegaconf and without running code from the file (see
    :mod:`xtrans.models.wav2vec2.safe_pickle`). The architecture comes from ``args`` (an
    ``argparse.Namespace``) or ``cfg["model"]``; for fine-tuned files from their ``w2v_args``.

Weight matching policy:
    Pretraining-only weights (quantizer, ``project_q``, ``project_hid``, ``final_proj``,
    ``mask_emb``, ``masked_spec_embed``, ``target_glu``) are dropped quietly; heads of
    fine-tuned models (``lm_head``, ``w2v_encoder.proj``, classifier heads) are dropped with an
    INFO log. Any other missing **or** unexpected weight raises :class:`CheckpointMismatchError`
    listing every name: an unknown weight means an architecture this encoder does not
    represent, and loading it partially would compute something else. ``strict=False`` turns
    unexpected weights into a WARNING log (missing weights always raise).

Waveform normalisation (``waveform_norm``):
    Hugging Face: ``preprocessor_config.json``'s ``do_normalize`` (True -> ``utterance``,
    False -> ``none``); without that file, ``utterance`` for layer-norm extractors (XLSR-53,
    large models) and ``none`` for group-norm ones (wav2vec2-base). fairseq: the task's
    ``normalize`` (same mapping; missing -> ``none``, fairseq's default). fairseq normalises
    with ``F.layer_norm`` (eps 1e-5) where Hugging Face uses eps 1e-7: both are within float
    tolerance of ``utterance`` for any real signal.

Dropout and layer drop are not imported from the checkpoint (they are fine-tuning choices):
pass them as overrides, e.g. ``load_pretrained(path, dropout=0.1, layer_drop=0.05)``.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from xtrans.frames import SAMPLE_RATE
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.models.wav2vec2.safe_pickle import UnsafeCheckpointError, load_checkpoint, to_plain

logger = logging.getLogger(__name__)

__all__ = ["load_pretrained", "CheckpointMismatchError", "UnsafeCheckpointError",
           "encoder_kwargs_from_hf_config", "encoder_kwargs_from_fairseq",
           "hf_to_xtrans_state_dict", "fairseq_to_xtrans_state_dict", "parse_conv_feature_layers"]

PathLike = Union[str, os.PathLike]

ARCHITECTURE_KEYS = ("conv_layers", "extractor_mode", "conv_bias", "embed_dim", "num_heads", "ffn_dim",
                     "layer_norm_first", "pos_conv_kernel", "pos_conv_groups")
"""Encoder options fixed by the checkpoint's weights (``num_layers`` may be lowered)."""

_PRETRAINING_ONLY = re.compile(
    r"^(quantizer\.|project_q\.|project_hid\.|final_proj\.|target_glu\.|project_inp\.|mask_emb$|"
    r"masked_spec_embed$|label_embs_concat$)")
_HEADS = re.compile(
    r"^(lm_head\.|proj\.|projector\.|classifier\.|layer_weights$|dropout\.|"
    r"final_dropout\.|adapter\.|objective\.)")


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
            f"checkpoint {path} does not fit a wav2vec2 encoder: {'; '.join(parts)}. Check that it is a "
            "wav2vec 2.0 / XLSR model (not HuBERT, data2vec or a conformer variant) and that it is complete")


# --------------------------------------------------------------------------------------------
# public entry point

def load_pretrained(path: PathLike, *, strict: bool = True, **overrides: Any) -> Wav2Vec2Encoder:
    """Builds the encoder of a pretrained wav2vec 2.0 / XLSR checkpoint, weights loaded, in eval mode.

    Args:
        path: a Hugging Face model directory, the ``.safetensors``/``.bin`` file of one, a fairseq
            ``.pt`` checkpoint, or a hub name ``org/name`` (downloaded when not a local path).
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
        kwargs, state_dict, source = _read_hf(resolved)
        mapped, dropped, unexpected = hf_to_xtrans_state_dict(state_dict)
    else:
        kwargs, state_dict, source = _read_fairseq(resolved)
        mapped, dropped, unexpected = fairseq_to_xtrans_state_dict(state_dict, kwargs)
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
# Hugging Face

def _read_json(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_hf(path: Path) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], str]:
    if path.suffix == ".json":  # config.json (or an index) given: use its directory
        path = path.parent
    directory = path if path.is_dir() else path.parent
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"path: {path} has no config.json beside the weights (a Hugging Face "
                                "model directory needs both)")
    config = _read_json(config_path)
    pre_path = directory / "preprocessor_config.json"
    preprocessor = _read_json(pre_path) if pre_path.is_file() else None
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
    return kwargs, _read_hf_weights(weights), str(weights)


def _read_hf_weights(weights: Path) -> Dict[str, torch.Tensor]:
    if weights.name.endswith(".index.json"):
        shards = sorted(set(_read_json(weights)["weight_map"].values()))
        state: Dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_read_hf_weights(weights.parent / shard))
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

    Raises:
        ValueError: a model type or option this encoder does not implement.
    """
    model_type = config.get("model_type", "wav2vec2")
    if model_type != "wav2vec2":
        raise ValueError(f"config.json: model_type {model_type!r} is not supported; expected 'wav2vec2'")
    for key in ("feat_extract_activation", "hidden_act"):
        if config.get(key, "gelu") != "gelu":
            raise ValueError(f"config.json: {key}={config[key]!r} is not supported; expected 'gelu'")
    if config.get("add_adapter"):
        raise ValueError("config.json: add_adapter=true is not supported (adapter layers after the encoder)")
    if config.get("position_embeddings_type") not in (None, "conv"):  # conformer-style configs
        raise ValueError(f"config.json: position_embeddings_type={config['position_embeddings_type']!r}"
                         " is not supported")

    dims = list(config.get("conv_dim", [512] * 7))
    kernels = list(config.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]))
    strides = list(config.get("conv_stride", [5, 2, 2, 2, 2, 2, 2]))
    if not len(dims) == len(kernels) == len(strides):
        raise ValueError(f"config.json: conv_dim, conv_kernel, conv_stride differ in length "
                         f"({len(dims)}, {len(kernels)}, {len(strides)})")
    norm = config.get("feat_extract_norm", "group")
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

    return dict(
        conv_layers=tuple((int(c), int(k), int(s)) for c, k, s in zip(dims, kernels, strides)),
        extractor_mode=extractor_mode,
        conv_bias=bool(config.get("conv_bias", False)),
        embed_dim=int(config.get("hidden_size", 768)),
        num_layers=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        ffn_dim=int(config.get("intermediate_size", 3072)),
        layer_norm_first=bool(config.get("do_stable_layer_norm", False)),
        pos_conv_kernel=int(config.get("num_conv_pos_embeddings", 128)),
        pos_conv_groups=int(config.get("num_conv_pos_embedding_groups", 16)),
        waveform_norm=waveform_norm,
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
    )


def hf_to_xtrans_state_dict(state_dict: Mapping[str, torch.Tensor]
                            ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Renames a Hugging Face wav2vec2 state dict onto the encoder's names.

    Returns:
        (mapped state dict, dropped head weights, unexpected weights). Pretraining-only
        weights are dropped silently and appear in neither list.
    """
    has_prefix = any(k.startswith("wav2vec2.") for k in state_dict)
    mapped: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unexpected: List[str] = []
    for key, value in state_dict.items():
        name = key[len("wav2vec2."):] if has_prefix and key.startswith("wav2vec2.") else key
        if has_prefix and not key.startswith("wav2vec2."):
            # heads of Wav2Vec2ForCTC / ForPreTraining / ForSequenceClassification
            if _PRETRAINING_ONLY.match(name):
                continue
            (dropped if _HEADS.match(name) else unexpected).append(key)
            continue
        if _PRETRAINING_ONLY.match(name):
            continue
        new = _hf_name(name)
        if new is None:
            (dropped if _HEADS.match(name) else unexpected).append(key)
        else:
            mapped[new] = value
    return mapped, dropped, unexpected


def _hf_name(name: str) -> Optional[str]:
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)", name)
    if m:
        part = "conv" if m.group(2) == "conv" else "norm"
        return f"feature_extractor.conv_layers.{m.group(1)}.{part}.{m.group(3)}"
    if re.fullmatch(r"feature_projection\.(layer_norm|projection)\.(weight|bias)", name):
        return name
    pos = {
        "encoder.pos_conv_embed.conv.bias": "pos_conv.conv.bias",
        "encoder.pos_conv_embed.conv.weight_g": "pos_conv.conv.parametrizations.weight.original0",
        "encoder.pos_conv_embed.conv.weight_v": "pos_conv.conv.parametrizations.weight.original1",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0":
            "pos_conv.conv.parametrizations.weight.original0",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1":
            "pos_conv.conv.parametrizations.weight.original1",
        "encoder.layer_norm.weight": "layer_norm.weight",
        "encoder.layer_norm.bias": "layer_norm.bias",
    }
    if name in pos:
        return pos[name]
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(attention\.(q|k|v|out)_proj|layer_norm|final_layer_norm|"
                     r"feed_forward\.(intermediate|output)_dense)\.(weight|bias)", name)
    if m:
        return name[len("encoder."):]
    return None


# --------------------------------------------------------------------------------------------
# fairseq

_FAIRSEQ_DEFAULTS = dict(
    extractor_mode="default", conv_feature_layers="[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
    conv_bias=False, encoder_embed_dim=768, encoder_layers=12, encoder_attention_heads=12,
    encoder_ffn_embed_dim=3072, layer_norm_first=False, conv_pos=128, conv_pos_groups=16,
    activation_fn="gelu", pos_conv_depth=1)
"""fairseq ``Wav2Vec2Config`` defaults, for keys an old ``args`` namespace does not hold."""


def parse_conv_feature_layers(spec: str) -> Tuple[Tuple[int, int, int], ...]:
    """fairseq's ``conv_feature_layers`` string -> ((channels, kernel, stride), ...), without ``eval``.

    Accepts list literals of 3-tuples of ints joined by ``+`` and repeated by ``* n``, e.g.
    ``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"``.

    Raises:
        ValueError: anything else (names, calls, attributes, ...).
    """
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"conv_feature_layers: cannot parse {spec!r} ({err.msg})") from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = ev(node.left), ev(node.right)
            if isinstance(left, list) and isinstance(right, list):
                return left + right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = ev(node.left), ev(node.right)
            if isinstance(left, list) and isinstance(right, int) and 0 <= right <= 64:
                return left * right
        raise ValueError(f"conv_feature_layers: unsupported expression {ast.dump(node)[:80]} in {spec!r}; "
                         "expected lists of (channels, kernel, stride) tuples joined by + and * n")

    layers = ev(tree.body)
    if not isinstance(layers, list) or not layers or not all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in layers):
        raise ValueError(f"conv_feature_layers: expected a non-empty list of (channels, kernel, stride), "
                         f"found {spec!r}")
    return tuple(layers)


def _read_fairseq(path: Path) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], str]:
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
    cfg = to_plain(ckpt.get("cfg")) if ckpt.get("cfg") is not None else None
    args = to_plain(ckpt.get("args")) if ckpt.get("args") is not None else None
    model_cfg, task_cfg = _fairseq_model_task(cfg, args, path)
    kwargs = encoder_kwargs_from_fairseq(model_cfg, task_cfg)
    return kwargs, dict(ckpt["model"]), str(path)


def _fairseq_model_task(cfg: Optional[Dict[str, Any]], args: Optional[Dict[str, Any]],
                        path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(model config, task config) of the *pretrained* wav2vec2 model inside the checkpoint."""
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        model, task = dict(cfg["model"]), dict(cfg.get("task") or {})
    elif isinstance(args, Mapping):
        model, task = dict(args), dict(args)
    else:
        raise ValueError(f"path: {path} has neither cfg['model'] nor args; cannot tell its architecture")
    w2v = model.get("w2v_args")
    if w2v:  # fine-tuned: the encoder's architecture is that of the pretrained model
        w2v = to_plain(w2v)
        if isinstance(w2v, Mapping) and isinstance(w2v.get("model"), Mapping):
            inner_model, inner_task = dict(w2v["model"]), dict(w2v.get("task") or {})
        else:
            inner_model, inner_task = dict(w2v), dict(w2v)
        if "normalize" in task:
            inner_task["normalize"] = task["normalize"]
        model, task = inner_model, inner_task
    return model, task


def encoder_kwargs_from_fairseq(model: Mapping[str, Any], task: Mapping[str, Any]) -> Dict[str, Any]:
    """Encoder keyword arguments from a fairseq wav2vec2 model config (``cfg.model`` or ``args``).

    Raises:
        ValueError: an option this encoder does not implement.
    """
    get = lambda key: model[key] if model.get(key) is not None else _FAIRSEQ_DEFAULTS[key]  # noqa: E731
    name = model.get("_name") or model.get("arch")
    if name is not None and not str(name).startswith("wav2vec"):
        raise ValueError(f"fairseq model {name!r} is not supported; expected a wav2vec2 model")
    mode = get("extractor_mode")
    if mode not in ("default", "layer_norm"):
        raise ValueError(f"fairseq extractor_mode={mode!r}; expected 'default' or 'layer_norm'")
    if get("activation_fn") != "gelu":
        raise ValueError(f"fairseq activation_fn={get('activation_fn')!r} is not supported; expected 'gelu'")
    if int(get("pos_conv_depth")) != 1:
        raise ValueError(f"fairseq pos_conv_depth={get('pos_conv_depth')} is not supported; expected 1")
    normalize = task.get("normalize", model.get("normalize"))
    return dict(
        conv_layers=parse_conv_feature_layers(str(get("conv_feature_layers"))),
        extractor_mode="layer_norm" if mode == "layer_norm" else "group_norm",
        conv_bias=bool(get("conv_bias")),
        embed_dim=int(get("encoder_embed_dim")),
        num_layers=int(get("encoder_layers")),
        num_heads=int(get("encoder_attention_heads")),
        ffn_dim=int(get("encoder_ffn_embed_dim")),
        layer_norm_first=bool(get("layer_norm_first")),
        pos_conv_kernel=int(get("conv_pos")),
        pos_conv_groups=int(get("conv_pos_groups")),
        waveform_norm="utterance" if normalize else "none",
    )


def fairseq_to_xtrans_state_dict(state_dict: Mapping[str, torch.Tensor], kwargs: Mapping[str, Any]
                                 ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Renames a fairseq wav2vec2 state dict (pretrained or fine-tuned) onto the encoder's names.

    Without ``post_extract_proj`` (fairseq omits it when the CNN's channels equal the model
    dimension) the projection becomes the identity.

    Returns:
        (mapped state dict, dropped head weights, unexpected weights).
    """
    prefix = "w2v_encoder.w2v_model."
    fine_tuned = any(k.startswith(prefix) for k in state_dict)
    mapped: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unexpected: List[str] = []
    for key, value in state_dict.items():
        if fine_tuned:
            if not key.startswith(prefix):
                name = key[len("w2v_encoder."):] if key.startswith("w2v_encoder.") else key
                (dropped if _HEADS.match(name) or _PRETRAINING_ONLY.match(name) else unexpected).append(key)
                continue
            name = key[len(prefix):]
        else:
            name = key
        if _PRETRAINING_ONLY.match(name):
            continue
        new = _fairseq_name(name)
        if new is None:
            unexpected.append(key)
        else:
            mapped[new] = value
    if "feature_projection.projection.weight" not in mapped:
        in_dim, dim = kwargs["conv_layers"][-1][0], kwargs["embed_dim"]
        if in_dim == dim:
            mapped["feature_projection.projection.weight"] = torch.eye(dim)
            mapped["feature_projection.projection.bias"] = torch.zeros(dim)
    return mapped, dropped, unexpected


def _fairseq_name(name: str) -> Optional[str]:
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", name)
    if m:
        return f"feature_extractor.conv_layers.{m.group(1)}.conv.{m.group(2)}"
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)", name)
    if m:  # 2.1 = LayerNorm inside (TransposeLast, LayerNorm, TransposeLast); 2 = GroupNorm
        return f"feature_extractor.conv_layers.{m.group(1)}.norm.{m.group(2)}"
    simple = {
        "layer_norm.weight": "feature_projection.layer_norm.weight",
        "layer_norm.bias": "feature_projection.layer_norm.bias",
        "post_extract_proj.weight": "feature_projection.projection.weight",
        "post_extract_proj.bias": "feature_projection.projection.bias",
        "encoder.pos_conv.0.bias": "pos_conv.conv.bias",
        "encoder.pos_conv.0.weight_g": "pos_conv.conv.parametrizations.weight.original0",
        "encoder.pos_conv.0.weight_v": "pos_conv.conv.parametrizations.weight.original1",
        "encoder.pos_conv.0.parametrizations.weight.original0":
            "pos_conv.conv.parametrizations.weight.original0",
        "encoder.pos_conv.0.parametrizations.weight.original1":
            "pos_conv.conv.parametrizations.weight.original1",
        "encoder.layer_norm.weight": "layer_norm.weight",
        "encoder.layer_norm.bias": "layer_norm.bias",
    }
    if name in simple:
        return simple[name]
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if m:
        i, part, wb = m.groups()
        layer = {"self_attn.q_proj": "attention.q_proj", "self_attn.k_proj": "attention.k_proj",
                 "self_attn.v_proj": "attention.v_proj", "self_attn.out_proj": "attention.out_proj",
                 "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
                 "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm"}.get(part)
        if layer is not None:
            return f"layers.{i}.{layer}.{wb}"
    return None


# --------------------------------------------------------------------------------------------
# building

def _apply_overrides(kwargs: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    known = set(inspect.signature(Wav2Vec2Encoder.__init__).parameters) - {"self"}
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"load_pretrained: override {key!r} is no encoder option; "
                             f"known options: {sorted(known)}")
        if key in ARCHITECTURE_KEYS and value != kwargs[key]:
            raise ValueError(f"load_pretrained: override {key}={value!r} changes the architecture fixed by "
                             f"the checkpoint ({key}={kwargs[key]!r}); leave it out")
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
                                        "pos_conv", "waveform_norm") if k in kwargs})
    return encoder.eval()
