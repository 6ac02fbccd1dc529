"""The wav2vec 2.0 family of encoders, written to obey the streaming rule of ``xtrans.masks``.

Data flow (shape legend: B batch, S samples at 16 kHz, T frames of 20 ms, D model dim, H heads)::

    waveform (B, S) -> waveform normalisation -> CNN feature extractor (7 convs, stride 320)
    -> (B, T, 512) -> LayerNorm + Linear -> (B, T, D) -> [training: feature masking]
    -> + positional convolution
    -> N transformer layers under the streaming mask -> (final LayerNorm) -> (B, T, D)

Two layouts of Baevski et al. (2020) are covered: XLSR-53 / XLS-R ("layer_norm" extractor,
pre-LN transformer with a final norm) and wav2vec2-base ("group_norm" extractor, post-LN
transformer with a norm after the positional convolution). The self-supervised models built on
them are options of the same modules: HuBERT (Hsu et al., 2021) is this layout; WavLM (Chen et
al., 2022) adds a gated relative position bias to the attention scores
(:class:`~xtrans.models.attention.RelativePositionBias`, :meth:`SelfAttention.bias_gate`);
data2vec-audio (Baevski et al., 2022) replaces the positional convolution by a stack of five
(:class:`PositionalConv`); XLS-R and MMS are XLSR-53 at other sizes. Every one streams exactly.

Streaming (Kumar et al., 2025): every part that mixes frames in time obeys the chunk rule:
attention through :func:`xtrans.models.attention.streaming_attention` (the rule of
:func:`xtrans.masks.chunk_attention_mask`, at a cost linear in T for bounded left context);
the positional convolution through ``pos_conv`` (``full | chunk | causal | none``); waveform
normalisation through ``waveform_norm`` (``cumulative`` is streaming-safe). The per-frame CNN
in "layer_norm" mode is streamable as is; "group_norm" normalises over the whole utterance and refuses streaming;
"cumulative_norm" is its causal version (running per-channel statistics of the first conv, see
:mod:`xtrans.models.wav2vec2.frontend_norm`): streamable, and it keeps the energy contour;
"batch_norm" normalises the first conv per channel with batch statistics in training and fixed
(running) statistics at inference: stateless, streamable, and the cheapest per training update.

Feature masking (wav2vec 2.0 fine-tuning, :mod:`xtrans.models.wav2vec2.feature_masking`): in
training only, time spans of the projected features become the learned ``mask_emb`` and channel
spans are zeroed, before the positional convolution (where fairseq applies it). Evaluation and
the streaming path (:meth:`Wav2Vec2Encoder.extract_chunk`, :meth:`Wav2Vec2Encoder.encode_chunk`)
never mask.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import StreamingConfig, StreamingNotSupportedError, key_padding_mask
from xtrans.models.arch import encoder_arch
from xtrans.models.attention import (AttentionCache, RelativePositionBias, biased_scores_mask, dense_attention_mask,
                                     streaming_attention)
from xtrans.models.wav2vec2.feature_masking import check_span_options, mask_features
from xtrans.models.wav2vec2.frontend import (EXTRACTOR_MODES, WAVEFORM_NORMS, XLSR_CONV_LAYERS, ConvLayer,
                                             FeatureExtractor, FeatureProjection, WaveformNorm, conv_output_lengths,
                                             cumulative_normalize, normalize_waveform)
from xtrans.models.wav2vec2.positional import POS_CONV_MODES, POS_CONV_NORMS, PositionalConv
from xtrans.models.wav2vec2.states import FrontendState, PositionalConvState

__all__ = [  # the encoder, and the names its modules had when they all lived here
    "EXTRACTOR_MODES", "POS_CONV_MODES", "POS_CONV_NORMS", "WAVEFORM_NORMS", "XLSR_CONV_LAYERS", "ConvLayer",
    "FeatureExtractor", "FeatureProjection", "FeedForward", "PositionalConv", "SelfAttention",
    "StreamingNotSupportedError", "TransformerLayer", "WaveformNorm", "Wav2Vec2Encoder", "conv_output_lengths",
    "cumulative_normalize", "normalize_waveform",
]



class SelfAttention(nn.Module):
    """Multi-head self-attention under the streaming rule (:func:`~xtrans.models.attention.streaming_attention`).

    :meth:`forward` attends a whole padded batch under the rule, at a cost linear in ``T`` for
    bounded left context; :meth:`attend` takes explicit keys/values and a boolean mask (True = may
    attend), for the streaming encoder's cached keys.

    With a relative position bias (WavLM, :class:`~xtrans.models.attention.RelativePositionBias`,
    shared by all layers and passed in), ``gated=True`` scales it per query and head by WavLM's
    gate (:meth:`bias_gate`); its weights keep WavLM's names ``gru_rel_pos_linear`` and
    ``gru_rel_pos_const``.
    """

    def __init__(self, *, embed_dim: int, num_heads: int, dropout: float, gated: bool = False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide embed_dim {embed_dim}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.gated = gated
        if gated:
            self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def bias_gate(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """WavLM's gate of the position bias from the attention input (B, T, D) -> (B, H, T), or None.

        Per head, the query frame's slice ``x_h`` (D/H values) gives two gates
        ``a, b = sigmoid(sum over 4 of W x_h + w)`` and the bias is scaled by
        ``a (b c_h - 1) + 2`` (``c_h`` learned; with ``c_h = 1`` the scale lies in (1, 2)).
        """
        if not self.gated:
            return None
        h = self.split_heads(x)  # (B, H, T, D/H)
        gates = torch.sigmoid(self.gru_rel_pos_linear(h).unflatten(-1, (2, 4)).sum(-1))  # (B, H, T, 2)
        gate_a, gate_b = gates[..., 0], gates[..., 1]
        return gate_a * (gate_b * self.gru_rel_pos_const[..., 0] - 1.0) + 2.0  # (B, H, T)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of frames ``x`` (B, T, D) -> two (B, H, T, D/H) (cached when streaming)."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Queries from ``x`` (B, Tq, D) over keys/values (B, H, Tk, D/H) -> (B, Tq, D).

        ``mask`` broadcasts to (B, H, Tq, Tk), True = may attend; ``None`` = attend to all; or a
        float mask added to the scores (``-inf`` = may not attend).
        """
        q = self.split_heads(self.q_proj(x))
        return self.merge_heads(F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0))

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Heads (B, H, Tq, D/H) -> output projection (B, Tq, D)."""
        B, H, Tq, Dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, Tq, H * Dh))  # (B, H, Tq, D/H) -> (B, Tq, D)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, streaming: Optional[StreamingConfig],
                position_bias: Optional[RelativePositionBias] = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), frames past ``lengths`` (B,) never attended, under ``streaming``.

        Rows of padded frames hold finite values of no meaning. ``position_bias`` (WavLM) is added
        to the scores, gated by :meth:`bias_gate`.
        """
        q = self.split_heads(self.q_proj(x))
        k, v = self.project_kv(x)
        bias = {} if position_bias is None else dict(position_bias=position_bias, bias_gate=self.bias_gate(x))
        return self.merge_heads(streaming_attention(q, k, v, lengths, streaming,
                                                    dropout_p=self.dropout if self.training else 0.0, **bias))


class FeedForward(nn.Module):
    """Linear(D, F) -> GELU -> dropout -> Linear(F, D) -> dropout."""

    def __init__(self, *, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.output_dense(self.activation_dropout(F.gelu(self.intermediate_dense(x)))))


class TransformerLayer(nn.Module):
    """One transformer layer, pre-LN (XLSR-53) or post-LN (wav2vec2-base)."""

    def __init__(self, *, embed_dim: int, num_heads: int, ffn_dim: int, layer_norm_first: bool,
                 dropout: float, attention_dropout: float, activation_dropout: float, gated_bias: bool = False):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(embed_dim=embed_dim, num_heads=num_heads, dropout=attention_dropout,
                                       gated=gated_bias)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.feed_forward = FeedForward(embed_dim=embed_dim, ffn_dim=ffn_dim,
                                        activation_dropout=activation_dropout, dropout=dropout)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def attention_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the attention's keys/values are computed from (normed input for pre-LN)."""
        return self.layer_norm(x) if self.layer_norm_first else x

    def around(self, x: torch.Tensor, attention: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The layer around ``attention`` (its input (B, Tq, D) -> (B, Tq, D)): (B, Tq, D) -> (B, Tq, D)."""
        if self.layer_norm_first:
            x = x + self.dropout(attention(self.layer_norm(x)))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(attention(x)))
        return self.final_layer_norm(x + self.feed_forward(x))

    def forward_with_kv(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The layer with the attention's keys/values given (B, H, Tk, D/H): (B, Tq, D) -> (B, Tq, D)."""
        return self.around(x, lambda h: self.attention.attend(h, k, v, mask))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, streaming: Optional[StreamingConfig],
                position_bias: Optional[RelativePositionBias] = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), attending under ``streaming`` to the ``lengths`` (B,) valid frames
        (with the encoder's relative ``position_bias``, WavLM)."""
        return self.around(x, lambda h: self.attention(h, lengths, streaming, position_bias))

    def init_state(self, batch_size: int, streaming: StreamingConfig, device=None,
                   dtype: Optional[torch.dtype] = None) -> AttentionCache:
        """The empty key/value cache of this layer's attention under ``streaming``."""
        attn = self.attention
        return AttentionCache.zeros(batch_size, attn.num_heads, attn.head_dim, streaming.num_sinks,
                                    streaming.left_context, device, dtype)

    def forward_chunk(self, x: torch.Tensor, state: AttentionCache, start: torch.Tensor, lengths: torch.Tensor,
                      left_context: Optional[int], position_bias: Optional[RelativePositionBias] = None
                      ) -> Tuple[torch.Tensor, AttentionCache]:
        """One chunk (B, n, D) at frames ``start`` (B,) .. ``start + n - 1`` -> (B, n, D), new cache.

        Each query attends the cached sinks and window and the whole chunk (the rule's key set,
        :func:`~xtrans.models.attention.chunk_key_mask`), never a key at or past ``lengths`` (B,);
        the cache then keeps the last ``left_context`` frames (all when None). A relative
        ``position_bias`` sees every cached key at its absolute frame (sink slot ``i`` = frame
        ``i``, window slot ``w`` = frame ``start - L + w``), as the full pass does.
        """
        n = x.shape[1]
        k, v = self.attention.project_kv(self.attention_input(x))  # (B, H, n, D/H)
        keys, values = state.keys_values(k, v)
        mask = state.mask(start, n, lengths)  # (B, 1, n, K)

        def attention(h: torch.Tensor) -> torch.Tensor:
            scores_mask = mask
            if position_bias is not None:
                query_pos = start[:, None] + torch.arange(n, device=x.device)  # (B, n)
                scores_mask = biased_scores_mask(position_bias, query_pos, state.key_positions(start, n),
                                                 self.attention.bias_gate(h), mask)  # (B, H, n, K)
            return self.attention.attend(h, keys, values, scores_mask)

        y = self.around(x, attention)
        return y, state.append(k, v, start, bounded=left_context is not None)


class Wav2Vec2Encoder(nn.Module):
    """wav2vec 2.0 / XLSR encoder with streaming masks.

    Args:
        conv_layers: (channels, kernel, stride) per CNN layer.
        extractor_mode: ``layer_norm`` (XLSR-53, per-frame, streamable), ``group_norm``
            (wav2vec2-base, per-utterance, not streamable) or ``cumulative_norm`` (conv 1
            normalised per channel with running statistics over time; causal, streamable; see
            :class:`~xtrans.models.wav2vec2.frontend_norm.CumulativeChannelNorm`) or
            ``batch_norm`` (conv 1 normalised per channel over the batch's valid positions in
            training, with fixed running statistics in evaluation; stateless and streamable in
            evaluation; see :class:`~xtrans.models.wav2vec2.frontend_norm.MaskedBatchNorm`).
        conv_bias: bias in the CNN convolutions.
        embed_dim: ``D``.
        num_layers: transformer layers.
        num_heads: ``H``.
        ffn_dim: feed-forward inner size.
        layer_norm_first: pre-LN (XLSR) when True, post-LN (base) when False.
        pos_conv_kernel: positional convolution kernel (128).
        pos_conv_groups: its groups (16).
        pos_conv: ``full | chunk | causal | none`` (see :class:`PositionalConv`).
        waveform_norm: ``none | utterance | cumulative`` (see :func:`normalize_waveform`).
        dropout: after the positional embedding and inside layers.
        attention_dropout: on attention weights.
        activation_dropout: inside the feed-forward block.
        layer_drop: probability of skipping a whole layer per training batch.
        freeze_feature_extractor: no gradient into the CNN (run under ``no_grad``), and the CNN
            stays in evaluation mode, so a ``batch_norm`` front end keeps its running statistics.
        layer_norm_eps: epsilon of every layer norm after the CNN (Hugging Face's ``layer_norm_eps``;
            the CNN's keep 1e-5, as there).
        mask_prob: wav2vec 2.0 fine-tuning's time masking, in training only (fairseq's
            ``mask_prob``, Hugging Face's ``mask_time_prob``): per utterance of ``n`` valid frames,
            ``floor(mask_prob * n / mask_length + u)`` spans (``u`` uniform in [0, 1), at least 2)
            of ``mask_length`` frames are replaced by the learned ``mask_emb`` (D,) after the
            feature projection. Not the masked fraction: spans overlap, about ``1 - exp(-mask_prob)``
            of the frames are masked. 0 = off; ``mask_emb`` exists only when > 0.
        mask_length: frames per time span (fairseq's ``mask_length``, 10).
        mask_channel_prob: channel masking, in training only: as ``mask_prob`` over the ``D``
            channels of each utterance (no minimum); masked channels are zeroed in all its frames.
        mask_channel_length: channels per channel span (fairseq's ``mask_channel_length``, 64).
            See :mod:`xtrans.models.wav2vec2.feature_masking`.
        feat_proj_layer_norm: a LayerNorm over the CNN channels before the projection (False in
            some Hugging Face HuBERT conversions, ``feat_proj_layer_norm``).
        pos_conv_layers: convolutions in the positional embedding's stack (5 in data2vec-audio).
        pos_conv_norm: ``weight`` (one weight-normed convolution: wav2vec 2.0, HuBERT, WavLM) or
            ``layer`` (each convolution followed by a LayerNorm without affine: data2vec-audio);
            see :class:`PositionalConv`.
        rel_pos_buckets: buckets of WavLM's relative position bias; 0 = no bias (wav2vec 2.0,
            HuBERT, data2vec). See :class:`~xtrans.models.attention.RelativePositionBias`.
        rel_pos_max_distance: the distance (frames) from which relative positions share the last bucket.
        rel_pos_gated: scale the bias per query by WavLM's gate (``gru_rel_pos``).

    The model families differ only in these options (presets and ``load_pretrained`` set them):
    HuBERT is wav2vec 2.0's layout; WavLM adds ``rel_pos_*``; data2vec-audio sets
    ``pos_conv_layers=5, pos_conv_norm="layer"``; XLS-R and MMS are wav2vec 2.0 at other sizes.
    """

    def __init__(self, *, conv_layers: Sequence[Tuple[int, int, int]] = XLSR_CONV_LAYERS,
                 extractor_mode: str = "layer_norm", conv_bias: bool = True, embed_dim: int = 1024,
                 num_layers: int = 24, num_heads: int = 16, ffn_dim: int = 4096,
                 layer_norm_first: bool = True, pos_conv_kernel: int = 128, pos_conv_groups: int = 16,
                 pos_conv: str = "full", waveform_norm: str = "utterance", dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 layer_drop: float = 0.0, freeze_feature_extractor: bool = False, layer_norm_eps: float = 1e-5,
                 mask_prob: float = 0.0, mask_length: int = 10, mask_channel_prob: float = 0.0,
                 mask_channel_length: int = 64, feat_proj_layer_norm: bool = True, pos_conv_layers: int = 1,
                 pos_conv_norm: str = "weight", rel_pos_buckets: int = 0, rel_pos_max_distance: int = 800,
                 rel_pos_gated: bool = False):
        super().__init__()
        self.arch = encoder_arch(dict(  # the keyword arguments that rebuild this encoder, type-checked
            conv_layers=conv_layers, extractor_mode=extractor_mode,
            conv_bias=conv_bias, embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads,
            ffn_dim=ffn_dim, layer_norm_first=layer_norm_first, pos_conv_kernel=pos_conv_kernel,
            pos_conv_groups=pos_conv_groups, pos_conv=pos_conv, waveform_norm=waveform_norm,
            dropout=dropout, attention_dropout=attention_dropout, activation_dropout=activation_dropout,
            layer_drop=layer_drop, freeze_feature_extractor=freeze_feature_extractor,
            layer_norm_eps=layer_norm_eps, feat_proj_layer_norm=feat_proj_layer_norm,
            pos_conv_layers=pos_conv_layers, pos_conv_norm=pos_conv_norm, rel_pos_buckets=rel_pos_buckets,
            rel_pos_max_distance=rel_pos_max_distance, rel_pos_gated=rel_pos_gated, mask_prob=mask_prob,
            mask_length=mask_length, mask_channel_prob=mask_channel_prob, mask_channel_length=mask_channel_length),
            "Wav2Vec2Encoder")
        if waveform_norm not in WAVEFORM_NORMS:
            raise ValueError(f"waveform_norm: expected one of {WAVEFORM_NORMS}, found {waveform_norm!r}")
        if not 0.0 <= layer_drop < 1.0:
            raise ValueError(f"layer_drop: expected in [0, 1), found {layer_drop}")
        if rel_pos_buckets < 0:
            raise ValueError(f"rel_pos_buckets: expected >= 0 (0 = no relative position bias), found {rel_pos_buckets}")
        if rel_pos_gated and not rel_pos_buckets:
            raise ValueError("rel_pos_gated: expected False without a relative position bias (rel_pos_buckets=0), "
                             "found True")
        check_span_options("mask_prob", mask_prob, "mask_length", mask_length)
        check_span_options("mask_channel_prob", mask_channel_prob, "mask_channel_length", mask_channel_length)
        if mask_channel_prob > 0 and mask_channel_length > embed_dim:
            raise ValueError(f"mask_channel_length: expected <= embed_dim ({embed_dim}) so that a channel span "
                             f"fits, found {mask_channel_length}")
        self.embed_dim = embed_dim
        self.layer_norm_first = layer_norm_first
        self.waveform_norm = waveform_norm
        self.layer_drop = layer_drop
        self.freeze_feature_extractor = freeze_feature_extractor
        self.mask_prob, self.mask_length = mask_prob, mask_length
        self.mask_channel_prob, self.mask_channel_length = mask_channel_prob, mask_channel_length
        self.wave_norm = WaveformNorm(waveform_norm)
        self.feature_extractor = FeatureExtractor(conv_layers=conv_layers, mode=extractor_mode,
                                                  conv_bias=conv_bias)
        self.feature_projection = FeatureProjection(in_dim=conv_layers[-1][0], embed_dim=embed_dim,
                                                    dropout=dropout, layer_norm=feat_proj_layer_norm)
        self.pos_conv = PositionalConv(embed_dim=embed_dim, kernel=pos_conv_kernel, groups=pos_conv_groups,
                                       mode=pos_conv, num_layers=pos_conv_layers, norm=pos_conv_norm)
        # WavLM: one relative position bias, shared by every layer (each gates it by its queries)
        self.rel_pos_bias = (RelativePositionBias(num_heads=num_heads, num_buckets=rel_pos_buckets,
                                                  max_distance=rel_pos_max_distance) if rel_pos_buckets else None)
        # post-LN (base) normalises right after adding the positional embedding;
        # pre-LN (XLSR) normalises after the last layer.
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim=embed_dim, num_heads=num_heads, ffn_dim=ffn_dim,
                             layer_norm_first=layer_norm_first, dropout=dropout,
                             attention_dropout=attention_dropout, activation_dropout=activation_dropout,
                             gated_bias=rel_pos_gated)
            for _ in range(num_layers))
        if freeze_feature_extractor:
            self.feature_extractor.requires_grad_(False)
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm) and not name.startswith("feature_extractor."):
                module.eps = layer_norm_eps
        # what masked frames become (fairseq's mask_emb, HF's masked_spec_embed; both uniform in [0, 1)).
        # Only with time masking, and drawn last: every other weight is the one the same seed gives
        # without masking, and an encoder without masking has today's weights, names and draws.
        self.mask_emb = nn.Parameter(torch.empty(embed_dim).uniform_()) if mask_prob > 0 else None

    def train(self, mode: bool = True) -> "Wav2Vec2Encoder":
        """As :meth:`torch.nn.Module.train`, except that a frozen CNN stays in evaluation mode."""
        super().train(mode)
        if self.freeze_feature_extractor:
            self.feature_extractor.eval()
        return self

    @property
    def pos_conv_mode(self) -> str:
        return self.pos_conv.mode

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames for ``lengths`` samples (B,) -> (B,)."""
        return conv_output_lengths(lengths, self.feature_extractor.conv_layers_spec)

    def check_streaming(self, streaming: Optional[StreamingConfig]) -> None:
        """Raises :class:`StreamingNotSupportedError` when this encoder cannot obey ``streaming``."""
        if streaming is None or streaming.is_full:
            return
        if self.feature_extractor.mode == "group_norm":
            raise StreamingNotSupportedError(
                "extractor_mode='group_norm' normalises each CNN channel over the whole utterance "
                "(wav2vec2-base layout) and cannot stream; use a 'layer_norm' extractor (XLSR-53 layout)")
        if self.waveform_norm == "utterance":
            raise StreamingNotSupportedError(
                "waveform_norm='utterance' reads the whole utterance before the first frame; set "
                "waveform_norm to 'cumulative' (or 'none') for a streaming configuration")
        if self.pos_conv.mode == "full":
            raise StreamingNotSupportedError(
                "pos_conv='full' looks 64 frames (1.28 s) ahead across chunk borders; set pos_conv to "
                "'chunk', 'causal' or 'none' for a streaming configuration")

    def extract(self, waveform: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Waveform normalisation + CNN + projection: (B, S) -> (B, T, D), (B,), padding zeroed."""
        x = self.wave_norm(waveform, lengths)
        if self.freeze_feature_extractor:
            with torch.no_grad():
                feats, frame_lengths = self.feature_extractor(x, lengths)
        else:
            feats, frame_lengths = self.feature_extractor(x, lengths)
        h = self.feature_projection(feats)
        valid = key_padding_mask(frame_lengths, h.shape[1])
        return h.masked_fill(~valid[:, :, None], 0.0), frame_lengths

    def init_frontend_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None
                            ) -> FrontendState:
        """The waveform normalisation's and the CNN's state before the first sample."""
        return FrontendState(wave=self.wave_norm.init_state(batch_size, device),
                             conv=self.feature_extractor.init_state(batch_size, device, dtype))

    def extract_chunk(self, samples: torch.Tensor, state: FrontendState) -> Tuple[torch.Tensor, FrontendState]:
        """:meth:`extract` piece by piece: the next raw samples (B, m) -> the frames they complete (B, n, D).

        Samples past a stream's end must be zero; frames that read them are the caller's to
        discard (as :meth:`extract` zeroes frames past each length).
        """
        x, wave = self.wave_norm.forward_chunk(samples, state.wave)
        feats, conv = self.feature_extractor.forward_chunk(x, state.conv)
        return self.feature_projection(feats), FrontendState(wave=wave, conv=conv)

    def attention_mask(self, lengths: torch.Tensor, num_frames: int,
                       streaming: Optional[StreamingConfig]) -> Optional[torch.Tensor]:
        """The dense mask the layers' attention obeys, True = may attend (for inspection and tests).

        :meth:`forward` does not build it: the layers call
        :func:`~xtrans.models.attention.streaming_attention`, which gathers each chunk's keys
        when the left context is bounded. Returns ``None`` when every frame may see every frame,
        (B, 1, 1, T) key padding for full attention, else (B, 1, T, T) (the streaming rule
        combined with key padding; query rows of padded frames see every key, so that no row
        is empty). See :func:`~xtrans.models.attention.dense_attention_mask`.
        """
        return dense_attention_mask(lengths, num_frames, streaming)

    def forward(self, waveform: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                streaming: Optional[StreamingConfig] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encodes a padded batch under a streaming configuration (the masked full pass).

        Args:
            waveform: (B, S) float, 16 kHz, zero-padded.
            lengths: (B,) valid samples; ``None`` = all ``S``.
            streaming: the chunk rule to obey; ``None`` = full attention.

        Returns:
            features (B, T, D), zero past each length, and frame lengths (B,).

        Raises:
            ValueError: on a badly shaped input or a streaming configuration this encoder cannot obey.
        """
        if waveform.dim() != 2:
            raise ValueError(f"waveform: expected (B, S), found shape {tuple(waveform.shape)}")
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long,
                                 device=waveform.device)
        elif lengths.shape != (waveform.shape[0],):
            raise ValueError(f"lengths: expected shape ({waveform.shape[0]},), found {tuple(lengths.shape)}")
        elif int(lengths.max()) > waveform.shape[1]:
            raise ValueError(f"lengths: max {int(lengths.max())} exceeds {waveform.shape[1]} samples")
        self.check_streaming(streaming)
        x, frame_lengths = self.extract(waveform, lengths)
        if self.training:
            x = self.mask_features(x, frame_lengths)
        T = x.shape[1]
        chunk = None if streaming is None else streaming.chunk_size
        bias = self.rel_pos_bias
        x = self._contextualize(x, self.pos_conv(x, chunk, frame_lengths),
                                lambda layer, h: layer(h, frame_lengths, streaming, bias))
        valid = key_padding_mask(frame_lengths, T)
        return x.masked_fill(~valid[:, :, None], 0.0), frame_lengths

    def mask_features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wav2vec 2.0 fine-tuning's feature masking of :meth:`extract`'s frames (B, T, D) -> (B, T, D).

        Time spans inside each utterance's ``lengths`` (B,) valid frames become ``mask_emb``,
        channel spans are zeroed (:func:`~xtrans.models.wav2vec2.feature_masking.mask_features`),
        drawn from torch's default generator; :meth:`forward` calls it in training only. With
        ``mask_prob = mask_channel_prob = 0`` it returns ``x`` itself and draws nothing.
        """
        if self.mask_prob == 0 and self.mask_channel_prob == 0:
            return x
        return mask_features(x, lengths, self.mask_emb, mask_prob=self.mask_prob, mask_length=self.mask_length,
                             mask_channel_prob=self.mask_channel_prob, mask_channel_length=self.mask_channel_length)

    def _contextualize(self, x: torch.Tensor, pos: torch.Tensor,
                       run_layer: Callable[[TransformerLayer, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Frames (B, T, D) + positional embedding -> the transformer stack, pre-LN or post-LN.

        ``run_layer(layer, x)`` runs one layer (over the whole utterance, or over a chunk with
        its cache); in training, layer drop skips whole layers.
        """
        x = x + pos
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            if self.training and self.layer_drop > 0 and torch.rand(()) < self.layer_drop:
                continue
            x = run_layer(layer, x)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x

    def init_chunk_state(self, batch_size: int, streaming: StreamingConfig, device=None,
                         dtype: Optional[torch.dtype] = None) -> Tuple[PositionalConvState, Tuple[AttentionCache, ...]]:
        """The positional convolution's history and every layer's key/value cache before the first chunk."""
        return (self.pos_conv.init_state(batch_size, device, dtype),
                tuple(layer.init_state(batch_size, streaming, device, dtype) for layer in self.layers))

    def encode_chunk(self, h: torch.Tensor, positional: PositionalConvState, caches: Tuple[AttentionCache, ...],
                     start: torch.Tensor, lengths: torch.Tensor, streaming: StreamingConfig
                     ) -> Tuple[torch.Tensor, PositionalConvState, Tuple[AttentionCache, ...]]:
        """One chunk of projected CNN frames (B, n, D) through the positional conv and the layers.

        The chunk form of :meth:`forward` after :meth:`extract`: frames ``start`` (B,) ..
        ``start + n - 1`` of each stream, ``lengths`` (B,) its valid frames (frames at or past
        it must be zero in ``h``; they come out zero). Returns the frames (B, n, D) and the new
        states.
        """
        valid = start[:, None] + torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]  # (B, n)
        pos, positional = self.pos_conv.forward_chunk(h, positional, valid)
        new_caches = []

        def run_layer(layer: TransformerLayer, x: torch.Tensor) -> torch.Tensor:
            y, cache = layer.forward_chunk(x, caches[len(new_caches)], start, lengths, streaming.left_context,
                                           self.rel_pos_bias)
            new_caches.append(cache)
            return y

        x = self._contextualize(h, pos, run_layer)
        return x.masked_fill(~valid[:, :, None], 0.0), positional, tuple(new_caches)
