"""Import of Microsoft unilm's WavLM checkpoints (``WavLM-Base+.pt``, ``WavLM-Large.pt``), without unilm.

The files are ``{"cfg": dict, "model": state dict}``: ``cfg`` is the flat ``WavLMConfig`` of
unilm's ``WavLM.py`` (fairseq's wav2vec2 options plus ``relative_position_embedding``,
``num_buckets``, ``max_distance``, ``gru_rel_pos``, ``normalize``), the weights keep fairseq's
names with the gate as ``self_attn.grep_linear`` / ``self_attn.grep_a`` and the bias table as
layer 0's ``self_attn.relative_attention_bias`` (:data:`~xtrans.models.wav2vec2.names.FAIRSEQ_NAMES`
``["wavlm"]``). Read through the same restricted unpickler as fairseq's files.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import torch

from xtrans.models.wav2vec2.import_fairseq import shared_encoder_kwargs
from xtrans.models.wav2vec2.safe_pickle import to_plain

_WAVLM_DEFAULTS = dict(
    extractor_mode="default", encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12, activation_fn="gelu", layer_norm_first=False,
    conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", conv_bias=False, normalize=False,
    conv_pos=128, conv_pos_groups=16, relative_position_embedding=False, num_buckets=320, max_distance=1280,
    gru_rel_pos=False)
"""unilm ``WavLMConfig`` defaults, for keys a ``cfg`` does not hold."""

UNILM_KEYS = ("relative_position_embedding", "gru_rel_pos", "num_buckets")
"""``cfg`` keys that only unilm's WavLM writes (fairseq nests its config under ``cfg["model"]``)."""


def is_unilm_checkpoint(ckpt: Mapping[str, Any]) -> bool:
    """True for the unilm WavLM layout: a flat ``cfg`` with WavLM's keys, or layer 0's bias table among the weights."""
    cfg = to_plain(ckpt.get("cfg")) if ckpt.get("cfg") is not None else None
    if not isinstance(cfg, Mapping) or isinstance(cfg.get("model"), Mapping):
        return False
    model = ckpt.get("model")
    keys = model.keys() if isinstance(model, Mapping) else ()
    return any(k in cfg for k in UNILM_KEYS) or any(k.endswith("relative_attention_bias.weight") for k in keys)


def read_unilm(ckpt: Mapping[str, Any], path: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], str]:
    """(encoder kwargs, fairseq-named state dict, ``"wavlm"``) of a loaded unilm WavLM checkpoint."""
    return encoder_kwargs_from_unilm(to_plain(ckpt["cfg"])), dict(ckpt["model"]), "wavlm"


def encoder_kwargs_from_unilm(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Encoder keyword arguments from unilm's flat ``WavLMConfig`` dict.

    Raises:
        ValueError: an option this encoder does not implement.
    """
    get = lambda key: cfg[key] if cfg.get(key) is not None else _WAVLM_DEFAULTS[key]  # noqa: E731
    mode = get("extractor_mode")
    if mode not in ("default", "layer_norm"):
        raise ValueError(f"WavLM cfg extractor_mode={mode!r}; expected 'default' or 'layer_norm'")
    if get("activation_fn") != "gelu":
        raise ValueError(f"WavLM cfg activation_fn={get('activation_fn')!r} is not supported; expected 'gelu'")
    relative = bool(get("relative_position_embedding"))
    if get("gru_rel_pos") and not relative:
        raise ValueError("WavLM cfg gru_rel_pos=True without relative_position_embedding is not supported "
                         "(a gate without a bias to gate)")
    return dict(
        **shared_encoder_kwargs(get, mode),
        pos_conv_kernel=int(get("conv_pos")),
        pos_conv_groups=int(get("conv_pos_groups")),
        waveform_norm="utterance" if get("normalize") else "none",
        rel_pos_buckets=int(get("num_buckets")) if relative else 0,
        rel_pos_max_distance=int(get("max_distance")),
        rel_pos_gated=bool(get("gru_rel_pos")) and relative,
    )
