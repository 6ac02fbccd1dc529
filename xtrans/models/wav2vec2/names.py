"""Parameter names of published checkpoints -> the encoder's names: one table per family and source format.

A table is a list of ``(pattern, template)``: a checkpoint name that fully matches ``pattern``
becomes ``template`` (``\\1`` .. the groups). Families that add weights extend the table of the
family they build on, so no name is written twice::

    source        family                          table
    Hugging Face  wav2vec2, hubert                HF_NAMES["wav2vec2"]
                  wavlm                           + gate and relative position bias
                  data2vec-audio                  + the positional conv stack
    fairseq       wav2vec2, hubert                FAIRSEQ_NAMES["wav2vec2"]
                  data2vec_audio                  + the positional conv stack
    unilm         WavLM (fairseq's names)         FAIRSEQ_NAMES["wavlm"]: + grep_linear, grep_a, ...

Our names (``Wav2Vec2Encoder.state_dict()``): ``feature_extractor.conv_layers.<i>.{conv,norm}``,
``feature_projection.{layer_norm,projection}``, ``pos_conv.conv`` (one weight-normed conv) or
``pos_conv.convs.<i>`` (a stack), ``rel_pos_bias.embedding``, ``layers.<i>.{attention.{q,k,v,out}_proj,
attention.gru_rel_pos_linear, attention.gru_rel_pos_const, layer_norm, feed_forward.{intermediate,
output}_dense, final_layer_norm}``, ``layer_norm``, and ``mask_emb`` (fairseq's ``mask_emb``, Hugging
Face's ``masked_spec_embed``: the vector that masked frames become, present only with feature masking).

Weights of pretraining only (:data:`PRETRAINING_ONLY`) are dropped quietly; heads of fine-tuned
models (:data:`HEADS`) are dropped with a log line; anything else unknown is an error. Weights
that only some configurations of the encoder have (:data:`OPTIONAL_WEIGHTS`) are matched by
:func:`fit_optional_weights`.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

NameTable = Sequence[Tuple[str, str]]

PRETRAINING_ONLY = re.compile(
    r"^(quantizer\.|project_q\.|project_hid\.|final_proj\.|target_glu\.|project_inp\.|"
    r"label_embs_concat$|_ema)")
"""Weights used only by self-supervised pretraining (quantizer, targets, data2vec's EMA teacher)."""

OPTIONAL_WEIGHTS = ("mask_emb",)
"""Our weights that exist only under a training option: ``mask_emb`` with ``mask_prob > 0``
(feature masking). A file may hold one the encoder lacks, or lack one the encoder has."""

HEADS = re.compile(
    r"^(lm_head\.|proj\.|projector\.|classifier\.|layer_weights$|dropout\.|"
    r"final_dropout\.|adapter\.|objective\.)")
"""Heads that fine-tuning puts on top of the encoder (CTC projection, classifiers)."""

_LAYER_PART = r"(attention\.(?:q|k|v|out)_proj|layer_norm|final_layer_norm|feed_forward\.(?:intermediate|output)_dense)"

_HF_WAV2VEC2: NameTable = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"feature_extractor.conv_layers.\1.norm.\2"),
    (r"feature_projection\.(layer_norm|projection)\.(weight|bias)", r"feature_projection.\1.\2"),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"pos_conv.conv.bias"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_g|parametrizations\.weight\.original0)",
     r"pos_conv.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_v|parametrizations\.weight\.original1)",
     r"pos_conv.conv.parametrizations.weight.original1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (rf"encoder\.layers\.(\d+)\.{_LAYER_PART}\.(weight|bias)", r"layers.\1.\2.\3"),
    (r"masked_spec_embed", r"mask_emb"),
]

HF_NAMES: Dict[str, NameTable] = {
    "wav2vec2": _HF_WAV2VEC2,
    "hubert": _HF_WAV2VEC2,
    "wavlm": [*_HF_WAV2VEC2,
              (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.(weight|bias)",
               r"layers.\1.attention.gru_rel_pos_linear.\2"),
              (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const", r"layers.\1.attention.gru_rel_pos_const"),
              (r"encoder\.layers\.0\.attention\.rel_attn_embed\.weight", r"rel_pos_bias.embedding.weight")],
    "data2vec-audio": [*_HF_WAV2VEC2,
                       (r"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.(weight|bias)", r"pos_conv.convs.\1.\2")],
}
"""Hugging Face names (after the wrapper's prefix, e.g. ``wavlm.``) per ``config.json`` ``model_type``."""

_FAIRSEQ_LAYER = {"self_attn.q_proj": "attention.q_proj", "self_attn.k_proj": "attention.k_proj",
                  "self_attn.v_proj": "attention.v_proj", "self_attn.out_proj": "attention.out_proj",
                  "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
                  "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm"}

_FAIRSEQ_WAV2VEC2: NameTable = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    # 2.1 = the LayerNorm inside (TransposeLast, LayerNorm, TransposeLast); 2 = the GroupNorm
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)", r"feature_extractor.conv_layers.\1.norm.\2"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", r"pos_conv.conv.bias"),
    (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
     r"pos_conv.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
     r"pos_conv.conv.parametrizations.weight.original1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    *((rf"encoder\.layers\.(\d+)\.{re.escape(theirs)}\.(weight|bias)", rf"layers.\1.{ours}.\2")
      for theirs, ours in _FAIRSEQ_LAYER.items()),
    (r"mask_emb", r"mask_emb"),
]

FAIRSEQ_NAMES: Dict[str, NameTable] = {
    "wav2vec2": _FAIRSEQ_WAV2VEC2,
    "hubert": _FAIRSEQ_WAV2VEC2,
    # fairseq's pos_conv_depth > 1: Sequential(Sequential(conv, SamePad, TransposeLast, LayerNorm, ...) x n)
    "data2vec_audio": [*_FAIRSEQ_WAV2VEC2, (r"encoder\.pos_conv\.(\d+)\.0\.(weight|bias)", r"pos_conv.convs.\1.\2")],
    # unilm's WavLM.py: fairseq's names, the gate as grep_linear / grep_a
    "wavlm": [*_FAIRSEQ_WAV2VEC2,
              (r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)", r"layers.\1.attention.gru_rel_pos_linear.\2"),
              (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"layers.\1.attention.gru_rel_pos_const"),
              (r"encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight", r"rel_pos_bias.embedding.weight")],
}
"""fairseq names (pretrained models; fine-tuned ones under ``w2v_encoder.w2v_model.``) per family."""

@functools.lru_cache(maxsize=None)
def _compiled(table: Tuple[Tuple[str, str], ...]) -> List[Tuple[re.Pattern, str]]:
    return [(re.compile(pattern), template) for pattern, template in table]


def rename(name: str, table: NameTable) -> Optional[str]:
    """Our name for checkpoint weight ``name`` under ``table``, or None when no entry matches."""
    for pattern, template in _compiled(tuple(table)):
        m = pattern.fullmatch(name)
        if m:
            return m.expand(template)
    return None


def fit_optional_weights(own: Mapping[str, Any], state_dict: Mapping[str, Any], source: str,
                         prefix: str = "") -> Dict[str, Any]:
    """``state_dict`` made to fit a model's ``own`` state dict in its :data:`OPTIONAL_WEIGHTS`.

    An optional weight (``prefix`` + name, e.g. ``encoder.mask_emb`` of a transducer) that the
    model lacks is dropped (a file of an encoder trained or pretrained with feature masking,
    loaded into one without); one that the model has and the file lacks (a file from before
    feature masking, or of a model without it) takes the model's own initialisation. Both are
    logged (the first at DEBUG: pretrained files carry their mask embedding as a matter of
    course). Every other name is left for the caller's strict check.
    """
    out = dict(state_dict)
    for name in (prefix + n for n in OPTIONAL_WEIGHTS):
        if name in out and name not in own:
            del out[name]
            logger.debug("%s: %s dropped (the model has no place for it: feature masking is off)", source, name)
        elif name in own and name not in out:
            out[name] = own[name]
            logger.info("%s: has no %s; the model's own initialisation is kept (learned in training)",
                        source, name)
    return out
