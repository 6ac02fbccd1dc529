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
(:class:`~xtrans.models.attention.RelativePositionBias`,
:meth:`~xtrans.models.wav2vec2.transformer.SelfAttention.bias_gate`);
data2vec-audio (Baevski et al., 2022) replaces the positional convolution by a stack of five
(:class:`PositionalConv`); XLS-R and MMS are XLSR-53 at other sizes. Every one streams exactly.

Streaming (Kumar et al., 2025): every part that mixes frames in time obeys the chunk rule:
attention (the layers of :mod:`xtrans.models.wav2vec2.transformer`) through one
:class:`~xtrans.models.attention.AttentionPlan` per pass or chunk, which every layer shares (the
rule of :func:`xtrans.masks.chunk_attention_mask`, at a cost linear in T for bounded left context);
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
from torch import nn

from xtrans.masks import StreamingConfig, StreamingNotSupportedError, key_padding_mask
from xtrans.models.arch import encoder_arch
from xtrans.models.attention import AttentionCache, RelativePositionBias, attention_plan, dense_attention_mask
from xtrans.models.wav2vec2.feature_masking import check_span_options, mask_features
from xtrans.models.wav2vec2.frontend import (EXTRACTOR_MODES, WAVEFORM_NORMS, XLSR_CONV_LAYERS, ConvLayer,
                                             FeatureExtractor, FeatureProjection, WaveformNorm, conv_output_lengths,
                                             cumulative_normalize, normalize_waveform)
from xtrans.models.wav2vec2.positional import POS_CONV_MODES, POS_CONV_NORMS, PositionalConv
from xtrans.models.wav2vec2.states import FrontendState, PositionalConvState
from xtrans.models.wav2vec2.transformer import FeedForward, SelfAttention, TransformerLayer

__all__ = [  # the encoder, and the names its modules had when they all lived here
    "EXTRACTOR_MODES", "POS_CONV_MODES", "POS_CONV_NORMS", "WAVEFORM_NORMS", "XLSR_CONV_LAYERS", "ConvLayer",
    "FeatureExtractor", "FeatureProjection", "FeedForward", "PositionalConv", "SelfAttention",
    "StreamingNotSupportedError", "TransformerLayer", "WaveformNorm", "Wav2Vec2Encoder", "conv_output_lengths",
    "cumulative_normalize", "normalize_waveform",
]


class Wav2Vec2Encoder(nn.Module):
    """wav2vec 2.0 / XLSR encoder with streaming masks; an :class:`xtrans.models.encoder.Encoder`.

    Its keyword arguments are the one declaration of the encoder's options (names, types,
    defaults): :class:`~xtrans.models.arch.EncoderArch` mirrors them exactly (:attr:`arch` holds
    those of this encoder) and :class:`~xtrans.models.config.EncoderConfig` derives its fields from it.

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
        options = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # every keyword argument
        super().__init__()
        # what rebuilds this encoder, type-checked; EncoderArch has exactly these fields (an argument
        # it lacks would be refused here as an unknown field; test/test_encoder_contract.py checks both ways)
        self.arch = encoder_arch(options, "Wav2Vec2Encoder")
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

        :meth:`forward` does not build it when the left context is bounded: its one
        :func:`~xtrans.models.attention.attention_plan` per pass then has every layer attend each
        chunk to its gathered keys. Returns ``None`` when every frame may see every frame,
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
        plan = attention_plan(frame_lengths, T, streaming, self.rel_pos_bias)  # the mask and bias of every layer
        x = self._contextualize(x, self.pos_conv(x, chunk, frame_lengths), lambda layer, h: layer(h, plan))
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
        n = h.shape[1]
        valid = start[:, None] + torch.arange(n, device=h.device)[None, :] < lengths[:, None]  # (B, n)
        pos, positional = self.pos_conv.forward_chunk(h, positional, valid)
        # every layer's cache has the same slots: one mask and one position bias for all layers
        plan = caches[0].plan(start, n, lengths, self.rel_pos_bias) if caches else None
        new_caches = []

        def run_layer(layer: TransformerLayer, x: torch.Tensor) -> torch.Tensor:
            y, cache = layer.forward_chunk(x, caches[len(new_caches)], start, plan, streaming.left_context)
            new_caches.append(cache)
            return y

        x = self._contextualize(h, pos, run_layer)
        return x.masked_fill(~valid[:, :, None], 0.0), positional, tuple(new_caches)
