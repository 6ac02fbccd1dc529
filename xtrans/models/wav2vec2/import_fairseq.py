"""Import of fairseq checkpoints: wav2vec 2.0 (XLSR, XLS-R, MMS), HuBERT and data2vec-audio.

A ``.pt`` checkpoint (pretrained, or fine-tuned with a ``w2v_encoder.w2v_model.`` prefix), read
without fairseq or omegaconf and without running code from the file (the restricted unpickler of
:mod:`xtrans.models.wav2vec2.safe_pickle`). The architecture comes from ``args`` (an
``argparse.Namespace``) or ``cfg["model"]``; for fine-tuned files from their ``w2v_args``. The
model's ``_name`` (``wav2vec2``, ``hubert``, ``data2vec_audio``) names the family; data2vec's
stack of positional convolutions is fairseq's ``pos_conv_depth > 1`` (kernel
``max(3, conv_pos // depth)``), which any of them may use.

Waveform normalisation: the task's ``normalize`` (True -> ``utterance``; missing -> ``none``,
fairseq's default). fairseq normalises with ``F.layer_norm`` (eps 1e-5) where Hugging Face uses
eps 1e-7: both are within float tolerance of ``utterance`` for any real signal.
"""

from __future__ import annotations

import ast
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from xtrans.models.wav2vec2.names import FAIRSEQ_NAMES, HEADS, PRETRAINING_ONLY, rename
from xtrans.models.wav2vec2.safe_pickle import to_plain

FAIRSEQ_FAMILIES = ("wav2vec2", "hubert", "data2vec_audio")
"""fairseq model ``_name`` prefixes this encoder represents (fine-tuned ``*_ctc`` wrappers included)."""

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


def read_fairseq(ckpt: Mapping[str, Any], path: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], str]:
    """(encoder kwargs, fairseq state dict, family) of a loaded fairseq checkpoint ``{"model", "cfg" | "args"}``."""
    cfg = to_plain(ckpt.get("cfg")) if ckpt.get("cfg") is not None else None
    args = to_plain(ckpt.get("args")) if ckpt.get("args") is not None else None
    model_cfg, task_cfg = fairseq_model_task(cfg, args, path)
    return encoder_kwargs_from_fairseq(model_cfg, task_cfg), dict(ckpt["model"]), fairseq_family(model_cfg)


def fairseq_model_task(cfg: Optional[Dict[str, Any]], args: Optional[Dict[str, Any]],
                       path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(model config, task config) of the *pretrained* model inside the checkpoint."""
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


def fairseq_family(model: Mapping[str, Any]) -> str:
    """``wav2vec2``, ``hubert`` or ``data2vec_audio`` from the model's ``_name`` (or ``arch``).

    Raises:
        ValueError: any other model.
    """
    name = str(model.get("_name") or model.get("arch") or "wav2vec2")
    if name.startswith("wav2vec"):
        return "wav2vec2"
    for family in FAIRSEQ_FAMILIES:
        if name.startswith(family):
            return family
    raise ValueError(f"fairseq model {name!r} is not supported; expected a wav2vec2, hubert or "
                     "data2vec_audio model")


def shared_encoder_kwargs(get, extractor_mode: str) -> Dict[str, Any]:
    """The encoder arguments that fairseq configs and unilm's WavLM ``cfg`` (which keeps fairseq's
    names) spell the same way; ``get(name)`` reads one config value, ``extractor_mode`` is fairseq's
    (``default`` = group norm, ``layer_norm``)."""
    return dict(
        conv_layers=parse_conv_feature_layers(str(get("conv_feature_layers"))),
        extractor_mode="layer_norm" if extractor_mode == "layer_norm" else "group_norm",
        conv_bias=bool(get("conv_bias")),
        embed_dim=int(get("encoder_embed_dim")),
        num_layers=int(get("encoder_layers")),
        num_heads=int(get("encoder_attention_heads")),
        ffn_dim=int(get("encoder_ffn_embed_dim")),
        layer_norm_first=bool(get("layer_norm_first")),
    )


def encoder_kwargs_from_fairseq(model: Mapping[str, Any], task: Mapping[str, Any]) -> Dict[str, Any]:
    """Encoder keyword arguments from a fairseq model config (``cfg.model`` or ``args``).

    Raises:
        ValueError: a model or option this encoder does not implement.
    """
    get = lambda key: model[key] if model.get(key) is not None else _FAIRSEQ_DEFAULTS[key]  # noqa: E731
    fairseq_family(model)
    mode = get("extractor_mode")
    if mode not in ("default", "layer_norm"):
        raise ValueError(f"fairseq extractor_mode={mode!r}; expected 'default' or 'layer_norm'")
    if get("activation_fn") != "gelu":
        raise ValueError(f"fairseq activation_fn={get('activation_fn')!r} is not supported; expected 'gelu'")
    if model.get("conv_pos_batch_norm"):
        raise ValueError("fairseq conv_pos_batch_norm=True is not supported; expected False")
    if model.get("layer_type", "transformer") != "transformer":
        raise ValueError(f"fairseq layer_type={model['layer_type']!r} is not supported; expected 'transformer'")
    depth = int(get("pos_conv_depth"))
    if depth < 1:
        raise ValueError(f"fairseq pos_conv_depth={depth}; expected >= 1")
    normalize = task.get("normalize", model.get("normalize"))
    return dict(
        **shared_encoder_kwargs(get, mode),
        # fairseq's make_conv_block: depth layers of kernel max(3, conv_pos // depth), LayerNorm, GELU
        pos_conv_kernel=int(get("conv_pos")) if depth == 1 else max(3, int(get("conv_pos")) // depth),
        pos_conv_groups=int(get("conv_pos_groups")),
        pos_conv_layers=depth,
        pos_conv_norm="weight" if depth == 1 else "layer",
        waveform_norm="utterance" if normalize else "none",
    )


def fairseq_to_xtrans_state_dict(state_dict: Mapping[str, torch.Tensor], kwargs: Mapping[str, Any],
                                 family: str = "wav2vec2"
                                 ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Renames a fairseq state dict (pretrained or fine-tuned) of ``family`` onto the encoder's names.

    ``family`` is a key of :data:`~xtrans.models.wav2vec2.names.FAIRSEQ_NAMES` (``wavlm`` for
    unilm's WavLM, which keeps fairseq's names). Without ``post_extract_proj`` (fairseq omits it
    when the CNN's channels equal the model dimension) the projection becomes the identity.

    Returns:
        (mapped state dict, dropped head weights, unexpected weights).
    """
    table = FAIRSEQ_NAMES[family]
    prefix = "w2v_encoder.w2v_model."
    fine_tuned = any(k.startswith(prefix) for k in state_dict)
    mapped: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unexpected: List[str] = []
    for key, value in state_dict.items():
        if fine_tuned:
            if not key.startswith(prefix):
                name = key[len("w2v_encoder."):] if key.startswith("w2v_encoder.") else key
                (dropped if HEADS.match(name) or PRETRAINING_ONLY.match(name) else unexpected).append(key)
                continue
            name = key[len(prefix):]
        else:
            name = key
        if PRETRAINING_ONLY.match(name):
            continue
        new = rename(name, table)
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
