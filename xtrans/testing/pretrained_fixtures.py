"""Tiny pretrained-model fixtures: random Hugging Face models and fake fairseq / unilm checkpoints.

Everything is built offline from random weights, so tests can check checkpoint import against
``transformers`` (``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``, ``Data2VecAudioModel``)
without downloads, and without fairseq, unilm or omegaconf installed:

- :func:`tiny_hf_config` / :func:`random_hf_model`: XLSR-shaped (layer-norm CNN with bias,
  pre-LN) or base-shaped (group-norm CNN without bias, post-LN) models of a family (wav2vec2,
  hubert, wavlm, data2vec-audio: one layout, layer-norm CNN and post-LN), a few thousand weights;
- :func:`save_hf_dir`: a Hugging Face directory (safetensors or ``pytorch_model.bin``);
- :func:`hf_to_fairseq_state_dict`, :func:`fairseq_model_cfg`, :func:`save_fairseq_checkpoint`:
  the same weights laid out as fairseq saves wav2vec2 (parameter names, pretraining-only
  weights, ``cfg`` as a dict, ``args`` as an ``argparse.Namespace``, or ``cfg`` as a pickled
  omegaconf ``DictConfig`` fabricated by :func:`fake_omegaconf`), pretrained or fine-tuned;
- :func:`save_unilm_checkpoint`: a WavLM model as unilm's ``WavLM-*.pt`` (``{"cfg", "model"}``);
- :func:`save_malicious_checkpoint`: a torch file whose pickle runs a command when loaded
  with plain pickle.

``transformers`` is imported lazily: it is a test dependency, not a library one.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import enum
import json
import os
import pickle
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch

TINY_CONV = ((32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2))
"""XLSR strides and kernels (stride 320, receptive field 400) with 32 channels."""


HF_FAMILIES = {"wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"), "hubert": ("HubertConfig", "HubertModel"),
               "wavlm": ("WavLMConfig", "WavLMModel"), "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel")}
"""``model_type`` -> (config class, bare model class) of ``transformers``."""


def tiny_hf_config(layout: str = "xlsr", family: str = "wav2vec2", **overrides: Any):
    """A tiny ``transformers`` config of ``family`` (a key of :data:`HF_FAMILIES`); ``layout``
    ``xlsr`` (layer norm, pre-LN, conv bias) or ``base`` (group norm, post-LN, no conv bias).
    Dropout and layer drop are off. WavLM gets 32 buckets up to distance 64 (frames 27 apart use
    the logarithmic buckets); data2vec-audio (always layer norm, post-LN) a stack of 3
    positional convolutions of kernel 5."""
    import transformers

    if layout not in ("xlsr", "base"):
        raise ValueError(f"layout: expected 'xlsr' or 'base', found {layout!r}")
    if family not in HF_FAMILIES:
        raise ValueError(f"family: expected one of {sorted(HF_FAMILIES)}, found {family!r}")
    xlsr = layout == "xlsr"
    kwargs = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=tuple(c for c, _, _ in TINY_CONV), conv_kernel=tuple(k for _, k, _ in TINY_CONV),
        conv_stride=tuple(s for _, _, s in TINY_CONV), feat_extract_norm="layer" if xlsr else "group",
        conv_bias=xlsr, do_stable_layer_norm=xlsr, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
        mask_time_prob=0.0, vocab_size=12)
    if family == "wavlm":
        kwargs.update(num_buckets=32, max_bucket_distance=64)
    elif family == "data2vec-audio":
        for key in ("feat_extract_norm", "do_stable_layer_norm"):
            del kwargs[key]
        kwargs.update(num_conv_pos_embeddings=3, conv_pos_kernel_size=5)
    kwargs.update(overrides)
    return getattr(transformers, HF_FAMILIES[family][0])(**kwargs)


def random_hf_model(layout: str = "xlsr", seed: int = 0, model_class: Optional[str] = None,
                    family: str = "wav2vec2", **config_overrides: Any):
    """A randomly initialised HF model in eval mode (``model_class`` default: the family's bare
    model); every weight is perturbed (norm scales and biases included) so that a mis-mapped
    weight cannot go unnoticed."""
    import transformers

    config = tiny_hf_config(layout, family, **config_overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, model_class or HF_FAMILIES[family][1])(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    return model.eval()


def save_hf_dir(model, directory: os.PathLike, *, weights: str = "safetensors",
                do_normalize: Optional[bool] = None) -> Path:
    """Writes ``model`` as a Hugging Face directory.

    Args:
        weights: ``safetensors`` (``save_pretrained``) or ``bin`` (``pytorch_model.bin`` from
            ``torch.save`` of the state dict, as transformers < 5 wrote without safe serialization).
        do_normalize: write a ``preprocessor_config.json`` with this flag; ``None`` writes none.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if weights == "safetensors":
        model.save_pretrained(directory)
    elif weights == "bin":
        model.config.save_pretrained(directory)
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, directory / "pytorch_model.bin")
    else:
        raise ValueError(f"weights: expected 'safetensors' or 'bin', found {weights!r}")
    if do_normalize is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps(dict(
            feature_extractor_type="Wav2Vec2FeatureExtractor", feature_size=1, sampling_rate=16000,
            padding_value=0.0, do_normalize=do_normalize, return_attention_mask=True)))
    return directory


# --------------------------------------------------------------------------------------------
# fairseq layout

def _conv_spec_string(conv: Sequence[Tuple[int, int, int]]) -> str:
    """(c, k, s) list -> fairseq's ``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + ..."`` string."""
    groups: list = []
    for layer in conv:
        if groups and groups[-1][0] == tuple(layer):
            groups[-1][1] += 1
        else:
            groups.append([tuple(layer), 1])
    return " + ".join(f"[{layer}]" + (f" * {n}" if n > 1 else "") for layer, n in groups)


def _layer_norm_cnn(config) -> bool:
    return config.model_type == "data2vec-audio" or config.feat_extract_norm == "layer"


def fairseq_model_cfg(config) -> Dict[str, Any]:
    """fairseq model config fields (as ``cfg["model"]``) for a HF config: ``Wav2Vec2Config``
    (``_name`` wav2vec2), ``HubertConfig`` (hubert) or ``Data2VecAudioConfig`` (data2vec_audio:
    ``pos_conv_depth`` layers of kernel ``conv_pos // pos_conv_depth``)."""
    conv = list(zip(config.conv_dim, config.conv_kernel, config.conv_stride))
    data2vec = config.model_type == "data2vec-audio"
    depth = config.num_conv_pos_embeddings if data2vec else 1
    cfg = {
        "_name": {"wav2vec2": "wav2vec2", "hubert": "hubert", "data2vec-audio": "data2vec_audio"}[config.model_type],
        "extractor_mode": "layer_norm" if _layer_norm_cnn(config) else "default",
        "encoder_layers": config.num_hidden_layers, "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size,
        "encoder_attention_heads": config.num_attention_heads, "activation_fn": "gelu",
        "layer_type": "transformer", "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
        "encoder_layerdrop": 0.05, "dropout_input": 0.1, "dropout_features": 0.1, "final_dim": 24,
        "layer_norm_first": False if data2vec else bool(config.do_stable_layer_norm),
        "conv_feature_layers": _conv_spec_string(conv), "conv_bias": bool(config.conv_bias),
        "logit_temp": 0.1, "quantize_targets": True, "quantize_input": False, "same_quantizer": False,
        "target_glu": False, "feature_grad_mult": 1.0, "quantizer_depth": 1, "quantizer_factor": 3,
        "latent_vars": 8, "latent_groups": 2, "latent_dim": 0, "mask_length": 10, "mask_prob": 0.65,
        "mask_selection": "static", "mask_other": 0.0, "no_mask_overlap": False, "mask_min_space": 1,
        "mask_channel_length": 10, "mask_channel_prob": 0.0, "num_negatives": 100,
        "negatives_from_everywhere": False, "cross_sample_negatives": 0, "codebook_negatives": 0,
        "conv_pos": config.conv_pos_kernel_size * depth if data2vec else config.num_conv_pos_embeddings,
        "conv_pos_groups": config.num_conv_pos_embedding_groups,
        "pos_conv_depth": depth, "latent_temp": [2.0, 0.5, 0.999995], "max_positions": 100000,
        "checkpoint_activations": False, "required_seq_len_multiple": 1, "crop_seq_to_multiple": 1,
        "depthwise_conv_kernel_size": 31, "attn_type": "", "pos_enc_type": "abs", "fp16": True,
    }
    if config.model_type == "hubert":  # HubertConfig: label targets instead of a quantizer
        cfg.update(label_rate=50.0, skip_masked=False, skip_nomask=False, untie_final_proj=False,
                   conv_pos_batch_norm=False)
    elif data2vec:  # Data2VecAudioConfig: an EMA teacher's targets
        cfg.update(average_top_k_layers=8, layer_norm_target_layer=False, instance_norm_target_layer=True,
                   ema_decay=0.999, ema_end_decay=0.9999, loss_beta=0.0)
    return cfg


_FAIRSEQ_LAYER_PARTS = {
    "attention.q_proj": "self_attn.q_proj", "attention.k_proj": "self_attn.k_proj",
    "attention.v_proj": "self_attn.v_proj", "attention.out_proj": "self_attn.out_proj",
    "layer_norm": "self_attn_layer_norm", "feed_forward.intermediate_dense": "fc1",
    "feed_forward.output_dense": "fc2", "final_layer_norm": "final_layer_norm",
    # WavLM, as unilm's WavLM.py names them
    "attention.gru_rel_pos_linear": "self_attn.grep_linear", "attention.rel_attn_embed": "self_attn.relative_attention_bias",
}


def hf_to_fairseq_state_dict(hf_state: Mapping[str, torch.Tensor], config,
                             pretraining_extras: bool = True) -> Dict[str, torch.Tensor]:
    """A HF state dict (wav2vec2, HuBERT, data2vec-audio; WavLM as unilm names it) renamed to
    fairseq's parameter names, with the pretraining-only weights fairseq stores: wav2vec2's
    quantizer, project_q, final_proj, mask_emb; HuBERT's final_proj and label_embs_concat;
    data2vec's final_proj and the EMA teacher ``_ema``; WavLM's mask_emb."""
    layer_norm_mode = _layer_norm_cnn(config)
    family = config.model_type
    prefix = {"wav2vec2": "wav2vec2.", "hubert": "hubert.", "wavlm": "wavlm.",
              "data2vec-audio": "data2vec_audio."}[family]
    out: Dict[str, torch.Tensor] = {}
    for key, value in hf_state.items():
        key = key[len(prefix):] if key.startswith(prefix) else key
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)", key)
        if m:
            i, part, wb = m.groups()
            norm = "2.1" if layer_norm_mode else "2"
            out[f"feature_extractor.conv_layers.{i}.{'0' if part == 'conv' else norm}.{wb}"] = value
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m:
            i, part, wb = m.groups()
            out[f"encoder.layers.{i}.{_FAIRSEQ_LAYER_PARTS[part]}.{wb}"] = value
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const", key)
        if m:
            out[f"encoder.layers.{m.group(1)}.self_attn.grep_a"] = value
            continue
        m = re.fullmatch(r"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.(weight|bias)", key)
        if m:  # data2vec: Sequential(Sequential(conv, SamePad, TransposeLast, LayerNorm, ...), ...)
            out[f"encoder.pos_conv.{m.group(1)}.0.{m.group(2)}"] = value
            continue
        simple = {
            "feature_projection.layer_norm.weight": "layer_norm.weight",
            "feature_projection.layer_norm.bias": "layer_norm.bias",
            "feature_projection.projection.weight": "post_extract_proj.weight",
            "feature_projection.projection.bias": "post_extract_proj.bias",
            "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv.0.bias",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v",
            "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv.0.weight_v",
            "encoder.layer_norm.weight": "encoder.layer_norm.weight",
            "encoder.layer_norm.bias": "encoder.layer_norm.bias",
            "masked_spec_embed": "mask_emb",
        }
        if key in simple:
            out[simple[key]] = value
        elif not key.startswith(("lm_head.", "quantizer.", "project_")):
            raise KeyError(f"no fairseq name for {key}")
    if pretraining_extras:
        gen = torch.Generator().manual_seed(123)
        conv_dim, dim = config.conv_dim[-1], config.hidden_size
        groups, num_vars, var_dim, final_dim = 2, 8, 16, 24
        out.setdefault("mask_emb", torch.rand(dim, generator=gen))
        if family == "hubert":
            out.update({"final_proj.weight": torch.randn(final_dim, dim, generator=gen),
                        "final_proj.bias": torch.randn(final_dim, generator=gen),
                        "label_embs_concat": torch.randn(504, final_dim, generator=gen)})
            return out
        if family == "data2vec-audio":
            out.update({"final_proj.weight": torch.randn(dim, dim, generator=gen),
                        "final_proj.bias": torch.randn(dim, generator=gen),
                        "_ema": collections.OrderedDict(
                            (k, v.clone()) for k, v in out.items() if k.startswith("encoder.layers.0."))})
            return out
        if family == "wavlm":
            return out
        out.update({
            "quantizer.vars": torch.randn(1, groups * num_vars, var_dim // groups, generator=gen),
            "quantizer.weight_proj.weight": torch.randn(groups * num_vars, conv_dim, generator=gen),
            "quantizer.weight_proj.bias": torch.randn(groups * num_vars, generator=gen),
            "project_q.weight": torch.randn(final_dim, var_dim, generator=gen),
            "project_q.bias": torch.randn(final_dim, generator=gen),
            "final_proj.weight": torch.randn(final_dim, dim, generator=gen),
            "final_proj.bias": torch.randn(final_dim, generator=gen),
        })
    return out


def _fairseq_cfg(model_cfg: Mapping[str, Any], normalize: bool) -> Dict[str, Any]:
    return {
        "_name": None,
        "common": {"_name": None, "fp16": True, "log_interval": 200, "seed": 1},
        "distributed_training": {"_name": None, "distributed_world_size": 128},
        "dataset": {"_name": None, "max_tokens": 1400000, "num_workers": 6},
        "optimization": {"_name": None, "max_update": 400000, "lr": [0.005], "update_freq": [1]},
        "checkpoint": {"_name": None, "save_dir": "checkpoints", "save_interval_updates": 10000},
        "model": dict(model_cfg),
        "task": {"_name": "audio_pretraining", "data": "/data/manifest", "labels": None,
                 "sample_rate": 16000, "normalize": normalize, "enable_padding": False,
                 "max_sample_size": 250000, "min_sample_size": 32000},
        "criterion": {"_name": "wav2vec", "infonce": True, "loss_weights": [0.1, 0.0]},
        "optimizer": {"_name": "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06},
        "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": 32000},
    }


def _fine_tuned(state: Mapping[str, torch.Tensor], cfg: Dict[str, Any], vocab: int = 12
                ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A fine-tuned (wav2vec_ctc) layout: weights under ``w2v_encoder.w2v_model.``, a CTC projection."""
    dim = cfg["model"]["encoder_embed_dim"]
    gen = torch.Generator().manual_seed(7)
    new_state = {f"w2v_encoder.w2v_model.{k}": v for k, v in state.items()
                 if not k.startswith(("quantizer.", "project_q.", "final_proj."))}
    new_state["w2v_encoder.proj.weight"] = torch.randn(vocab, dim, generator=gen)
    new_state["w2v_encoder.proj.bias"] = torch.randn(vocab, generator=gen)
    task = dict(cfg["task"], _name="audio_finetuning", labels="ltr")
    name = "hubert_ctc" if cfg["model"]["_name"] == "hubert" else "wav2vec_ctc"
    model = {"_name": name, "w2v_path": "/models/xlsr_53_56k.pt", "apply_mask": True,
             "mask_prob": 0.5, "layerdrop": 0.1, "final_dropout": 0.0, "freeze_finetune_updates": 10000,
             "normalize": "${task.normalize}", "w2v_args": {"model": cfg["model"], "task": cfg["task"]}}
    return new_state, dict(cfg, model=model, task=task)


def save_fairseq_checkpoint(path: os.PathLike, state: Mapping[str, torch.Tensor],
                            model_cfg: Mapping[str, Any], *, normalize: bool, style: str = "dict",
                            fine_tuned: bool = False, legacy_format: bool = False) -> Path:
    """Writes a fairseq-style wav2vec2 checkpoint.

    Args:
        state: fairseq-named weights (:func:`hf_to_fairseq_state_dict`).
        model_cfg: ``cfg["model"]`` (:func:`fairseq_model_cfg`).
        normalize: the task's ``normalize``.
        style: ``dict`` (hydra era, ``cfg`` a plain dict), ``namespace`` (older, ``args`` an
            ``argparse.Namespace``, numpy scalars in ``extra_state``), or ``dictconfig``
            (``cfg`` a pickled omegaconf ``DictConfig``, with enum and dataclass-type metadata).
        fine_tuned: wrap as a ``wav2vec_ctc`` fine-tuned model (prefix, CTC head, ``w2v_args``).
        legacy_format: torch's pre-1.6 (non-zip) serialization.
    """
    import numpy as np

    cfg = _fairseq_cfg(model_cfg, normalize)
    state = dict(state)
    if fine_tuned:
        state, cfg = _fine_tuned(state, cfg)
    ckpt: Dict[str, Any] = {
        "model": collections.OrderedDict(state),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": 2.25}, "num_updates": 400000}],
        "task_state": {},
        "extra_state": {"epoch": 57, "train_iterator": {"epoch": 57, "iterations_in_epoch": 0,
                                                        "shuffle": True},
                        "previous_training_time": 123456.7, "best": 2.25},
        "last_optimizer_state": None,
    }
    save_kwargs = {} if not legacy_format else {"_use_new_zipfile_serialization": False}
    if style == "dict":
        ckpt["args"], ckpt["cfg"] = None, cfg
        torch.save(ckpt, path, **save_kwargs)
    elif style == "namespace":
        model = cfg["model"]
        flat = {k: v for k, v in model.items() if k not in ("_name", "w2v_args")}
        flat.update({k: v for k, v in cfg["task"].items() if k != "_name"})
        flat.update(arch=model["_name"], task=cfg["task"]["_name"], criterion="wav2vec", seed=1)
        if fine_tuned:
            inner = model["w2v_args"]
            w2v = {k: v for k, v in inner["model"].items() if k != "_name"}
            w2v.update({k: v for k, v in inner["task"].items() if k != "_name"})
            w2v.update(arch=inner["model"]["_name"], task=inner["task"]["_name"])
            flat["w2v_args"] = argparse.Namespace(**w2v)
            flat["normalize"] = normalize
        ckpt["args"] = argparse.Namespace(**flat)
        ckpt["extra_state"]["val_loss"] = np.float64(2.25)
        ckpt["extra_state"]["best"] = np.float32(2.25)
        torch.save(ckpt, path, **save_kwargs)
    elif style == "dictconfig":
        with fake_omegaconf() as oc:
            ckpt["args"], ckpt["cfg"] = None, oc.create(cfg)
            torch.save(ckpt, path, **save_kwargs)
    else:
        raise ValueError(f"style: expected 'dict', 'namespace' or 'dictconfig', found {style!r}")
    return Path(path)


# --------------------------------------------------------------------------------------------
# unilm's WavLM layout

def unilm_wavlm_cfg(config, normalize: bool) -> Dict[str, Any]:
    """unilm's flat ``WavLMConfig`` dict (``checkpoint["cfg"]``) for a HF ``WavLMConfig``."""
    conv = list(zip(config.conv_dim, config.conv_kernel, config.conv_stride))
    return {
        "extractor_mode": "layer_norm" if config.feat_extract_norm == "layer" else "default",
        "encoder_layers": config.num_hidden_layers, "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size, "encoder_attention_heads": config.num_attention_heads,
        "activation_fn": "gelu", "layer_norm_first": bool(config.do_stable_layer_norm),
        "conv_feature_layers": _conv_spec_string(conv), "conv_bias": bool(config.conv_bias),
        "feature_grad_mult": 1.0, "normalize": normalize, "dropout": 0.1, "attention_dropout": 0.1,
        "activation_dropout": 0.0, "encoder_layerdrop": 0.05, "dropout_input": 0.1, "dropout_features": 0.1,
        "mask_length": 10, "mask_prob": 0.8, "mask_selection": "static", "mask_other": 0.0,
        "no_mask_overlap": False, "mask_min_space": 1, "mask_channel_length": 10, "mask_channel_prob": 0.0,
        "mask_channel_selection": "static", "mask_channel_other": 0.0, "no_mask_channel_overlap": False,
        "mask_channel_min_space": 1, "conv_pos": config.num_conv_pos_embeddings,
        "conv_pos_groups": config.num_conv_pos_embedding_groups, "relative_position_embedding": True,
        "num_buckets": config.num_buckets, "max_distance": config.max_bucket_distance, "gru_rel_pos": True,
    }


def save_unilm_checkpoint(path: os.PathLike, model, *, normalize: bool = False) -> Path:
    """Writes a HF ``WavLMModel`` as unilm's ``WavLM-*.pt``: ``{"cfg": flat dict, "model": weights}``
    with fairseq's names (``self_attn.grep_linear``, ``self_attn.grep_a``, layer 0's
    ``self_attn.relative_attention_bias``) and ``mask_emb``."""
    state = hf_to_fairseq_state_dict(model.state_dict(), model.config)
    torch.save({"cfg": unilm_wavlm_cfg(model.config, normalize), "model": collections.OrderedDict(state)}, path)
    return Path(path)


# --------------------------------------------------------------------------------------------
# a pickled omegaconf DictConfig, without omegaconf

_FAKE_MODULES = ("omegaconf", "omegaconf.base", "omegaconf.dictconfig", "omegaconf.listconfig",
                 "omegaconf.nodes", "fairseq", "fairseq.dataclass", "fairseq.dataclass.configs",
                 "fairseq.models", "fairseq.models.wav2vec", "fairseq.models.wav2vec.wav2vec2")


@contextlib.contextmanager
def fake_omegaconf() -> Iterator[types.SimpleNamespace]:
    """Registers stand-in ``omegaconf`` (and ``fairseq`` config) modules while the block runs.

    Their classes pickle the way omegaconf 2.x's do: a ``DictConfig``/``ListConfig``/value node
    is a plain object whose ``__getstate__`` returns its ``__dict__``: ``_metadata`` (a
    ``ContainerMetadata``/``Metadata`` dataclass holding ``ref_type``, ``object_type``, ``key``,
    ``flags``, ``resolver_cache`` ...), ``_parent``, ``_content`` (containers) or ``_val``
    (nodes), and ``_flags_cache``. ``object_type`` refers to the fairseq dataclass the config
    was made from; choice fields hold enum members. The modules are removed afterwards, so a
    loader under test cannot import them.

    Yields:
        a namespace with ``create(obj)`` building a DictConfig tree from dicts and lists.
    """
    present = [m for m in _FAKE_MODULES if m in sys.modules]
    if present:
        raise RuntimeError(f"fake_omegaconf: real modules {present} are imported; cannot fake them")
    mods = {name: types.ModuleType(name) for name in _FAKE_MODULES}

    def make(module: str, name: str, bases: tuple = (object,), body: Optional[dict] = None) -> type:
        cls = type(name, bases, dict(body or {}, __module__=module, __qualname__=name))
        setattr(mods[module], name, cls)
        return cls

    def getstate(self):
        state = dict(self.__dict__)
        state["_flags_cache"] = None
        return state

    Metadata = make("omegaconf.base", "Metadata")
    ContainerMetadata = make("omegaconf.base", "ContainerMetadata", (Metadata,))
    node_body = {"__getstate__": getstate}
    DictConfig = make("omegaconf.dictconfig", "DictConfig", body=node_body)
    ListConfig = make("omegaconf.listconfig", "ListConfig", body=node_body)
    nodes = {n: make("omegaconf.nodes", n, body=node_body) for n in
             ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode")}
    fairseq_config = make("fairseq.dataclass.configs", "FairseqConfig")
    w2v_config = make("fairseq.models.wav2vec.wav2vec2", "Wav2Vec2Config")
    ExtractorMode = enum.Enum("ExtractorMode", {"default": "default", "layer_norm": "layer_norm"},
                              module="fairseq.models.wav2vec.wav2vec2",
                              qualname="ExtractorMode")
    mods["fairseq.models.wav2vec.wav2vec2"].ExtractorMode = ExtractorMode

    def metadata(cls, key, object_type=None):
        md = cls.__new__(cls)
        md.__dict__.update(ref_type=typing.Any, object_type=object_type, optional=True, key=key,
                           flags={}, flags_root=False, resolver_cache=collections.defaultdict(dict))
        if cls is ContainerMetadata:
            md.__dict__.update(key_type=typing.Any, element_type=typing.Any)
        return md

    def create(obj, key=None, parent=None):
        if isinstance(obj, dict):
            object_type = {None: fairseq_config, "model": w2v_config}.get(key, dict)
            node = DictConfig.__new__(DictConfig)
            node.__dict__.update(_metadata=metadata(ContainerMetadata, key, object_type), _parent=parent)
            node.__dict__["_content"] = {k: create(v, k, node) for k, v in obj.items()}
            return node
        if isinstance(obj, (list, tuple)):
            node = ListConfig.__new__(ListConfig)
            node.__dict__.update(_metadata=metadata(ContainerMetadata, key, list), _parent=parent)
            node.__dict__["_content"] = [create(v, i, node) for i, v in enumerate(obj)]
            return node
        if key == "extractor_mode":
            kind, obj = "EnumNode", ExtractorMode(obj)
        else:
            kind = {bool: "BooleanNode", int: "IntegerNode", float: "FloatNode",
                    str: "StringNode"}.get(type(obj), "AnyNode")
        node = nodes[kind].__new__(nodes[kind])
        node.__dict__.update(_metadata=metadata(Metadata, key), _parent=parent, _val=obj)
        return node

    sys.modules.update(mods)
    try:
        yield types.SimpleNamespace(create=create, DictConfig=DictConfig)
    finally:
        for name in _FAKE_MODULES:
            sys.modules.pop(name, None)


# --------------------------------------------------------------------------------------------
# malicious files

class _Payload:
    """Pickles as ``callable(*args)``: what a hostile checkpoint does to plain ``pickle``."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def malicious_payload(kind: str, marker: os.PathLike) -> _Payload:
    """A pickled object that creates ``marker`` when unpickled: ``kind`` is ``os.system``,
    ``eval`` (``builtins.eval``) or ``subprocess`` (``subprocess.call``)."""
    import subprocess

    marker = str(marker)
    if kind == "os.system":
        return _Payload(os.system, (f"touch {marker}",))
    if kind == "eval":
        return _Payload(eval, (f"open({marker!r}, 'w').close()",))
    if kind == "subprocess":
        return _Payload(subprocess.call, (["touch", marker],))
    raise ValueError(f"kind: expected 'os.system', 'eval' or 'subprocess', found {kind!r}")


def save_malicious_checkpoint(path: os.PathLike, marker: os.PathLike, kind: str = "os.system",
                              container: str = "zip") -> Path:
    """A checkpoint-shaped file (``model`` weights + a hostile ``cfg``) that would create ``marker``.

    Args:
        container: ``zip`` (torch's format), ``legacy`` (torch < 1.6) or ``pickle`` (a bare pickle).
    """
    ckpt = {"model": {"encoder.layer_norm.weight": torch.ones(4)}, "args": None,
            "cfg": {"model": malicious_payload(kind, marker)}}
    if container == "zip":
        torch.save(ckpt, path)
    elif container == "legacy":
        torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    elif container == "pickle":  # no tensors: plain pickle stores them through torch.load itself
        with open(path, "wb") as f:
            pickle.dump(dict(ckpt, model={}), f, protocol=2)
    else:
        raise ValueError(f"container: expected 'zip', 'legacy' or 'pickle', found {container!r}")
    return Path(path)
