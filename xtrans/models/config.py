"""Model configs (frozen dataclasses, loaded from a recipe's YAML) and ``build_model``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from xtrans.models.transducer import Transducer, build_transducer
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.models.wav2vec2.presets import preset_kwargs


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder: a preset (or a pretrained checkpoint) plus overrides.

    Attributes:
        preset: ``xlsr_53 | wav2vec2_base | tiny``; ignored when ``pretrained`` is set.
        pretrained: a Hugging Face directory or fairseq ``.pt`` to import (recipe stage 4);
            ``None`` = random initialisation from ``preset``.
        pos_conv: ``full | chunk | causal | none`` (None = the preset's / checkpoint's).
        pos_conv_kernel, pos_conv_groups: the positional convolution's kernel (frames, even) and
            groups (None = the preset's; a pretrained checkpoint fixes them).
        waveform_norm: ``none | utterance | cumulative`` (None = the preset's / checkpoint's).
        extractor_mode: ``layer_norm | group_norm | cumulative_norm | batch_norm`` (None = the
            preset's); see :class:`~xtrans.models.wav2vec2.Wav2Vec2Encoder`.
        conv_channels: channels of every CNN layer (None = the preset's).
        embed_dim, num_layers, num_heads, ffn_dim: transformer size (None = the preset's).
        dropout, attention_dropout, activation_dropout, layer_drop: regularisation.
        freeze_feature_extractor: no gradient into the CNN.
    """

    preset: str = "tiny"
    pretrained: Optional[str] = None
    pos_conv: Optional[str] = None
    pos_conv_kernel: Optional[int] = None
    pos_conv_groups: Optional[int] = None
    waveform_norm: Optional[str] = None
    extractor_mode: Optional[str] = None
    conv_channels: Optional[int] = None
    embed_dim: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    ffn_dim: Optional[int] = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layer_drop: float = 0.0
    freeze_feature_extractor: bool = False

    def overrides(self) -> dict:
        """Encoder keyword arguments set by this config (``None`` fields left to the preset)."""
        out = {k: getattr(self, k) for k in ("pos_conv", "pos_conv_kernel", "pos_conv_groups", "waveform_norm",
                                             "extractor_mode", "embed_dim", "num_layers", "num_heads", "ffn_dim")
               if getattr(self, k) is not None}
        out.update(dropout=self.dropout, attention_dropout=self.attention_dropout,
                   activation_dropout=self.activation_dropout, layer_drop=self.layer_drop,
                   freeze_feature_extractor=self.freeze_feature_extractor)
        return out


@dataclass(frozen=True)
class PredictorConfig:
    """Prediction network: ``stateless`` (embedding over the last tokens) or ``lstm``."""

    kind: str = "stateless"
    embed_dim: int = 256
    context_size: int = 2
    hidden_dim: int = 512
    num_layers: int = 1
    dropout: float = 0.1

    def __post_init__(self):
        if self.kind not in ("stateless", "lstm"):
            raise ValueError(f"kind: expected 'stateless' or 'lstm', found {self.kind!r}")

    def kwargs(self) -> dict:
        if self.kind == "stateless":
            return dict(kind="stateless", embed_dim=self.embed_dim, context_size=self.context_size)
        return dict(kind="lstm", embed_dim=self.embed_dim, hidden_dim=self.hidden_dim,
                    num_layers=self.num_layers, dropout=self.dropout)


@dataclass(frozen=True)
class LossConfig:
    """The transducer loss.

    Attributes:
        kind: ``full`` (exact RNN-T on the (B, T, U+1, V) lattice) or ``pruned`` (simple loss of a
            trivial joiner + RNN-T on ``prune_range`` label positions per frame; Kuang et al.,
            Interspeech 2022).
        prune_range: ``R``, label positions per frame (pruned only).
        simple_loss_scale: weight of the simple loss once warmed up (pruned only).
        warmup_updates: over these first updates the simple loss's weight falls from 1.0 to
            ``simple_loss_scale`` and the pruned loss's rises from 0.1 to 1.0 (icefall's schedule).
    """

    kind: str = "full"
    prune_range: int = 5
    simple_loss_scale: float = 0.5
    warmup_updates: int = 2000

    def __post_init__(self):
        if self.kind not in ("full", "pruned"):
            raise ValueError(f"kind: expected 'full' or 'pruned', found {self.kind!r}")
        if self.prune_range < 2:
            raise ValueError(f"prune_range: expected >= 2, found {self.prune_range}")
        if self.simple_loss_scale < 0:
            raise ValueError(f"simple_loss_scale: expected >= 0, found {self.simple_loss_scale}")
        if self.warmup_updates < 0:
            raise ValueError(f"warmup_updates: expected >= 0, found {self.warmup_updates}")

    def kwargs(self) -> Optional[dict]:
        """The ``loss`` argument of :func:`build_transducer` (None for the full loss)."""
        if self.kind == "full":
            return None
        return dict(kind=self.kind, prune_range=self.prune_range, simple_loss_scale=self.simple_loss_scale,
                    warmup_updates=self.warmup_updates)


@dataclass(frozen=True)
class ModelConfig:
    """The transducer. ``vocab_size`` comes from the tokenizer when not given."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    joiner_dim: int = 512
    ctc_weight: float = 0.0
    vocab_size: Optional[int] = None
    loss: LossConfig = field(default_factory=LossConfig)


def build_encoder(cfg: EncoderConfig) -> Wav2Vec2Encoder:
    """The encoder of ``cfg``: imported from ``cfg.pretrained`` or built from ``cfg.preset``."""
    overrides = cfg.overrides()
    if cfg.pretrained is not None:
        from xtrans.models.wav2vec2 import load_pretrained
        if cfg.conv_channels is not None:
            raise ValueError("conv_channels: cannot change the CNN of a pretrained encoder")
        for name in ("pos_conv_kernel", "pos_conv_groups"):
            if getattr(cfg, name) is not None:
                raise ValueError(f"{name}: cannot change the positional convolution of a pretrained encoder")
        return load_pretrained(cfg.pretrained, **overrides)
    kwargs = preset_kwargs(cfg.preset, **overrides)
    if cfg.conv_channels is not None:
        kwargs["conv_layers"] = tuple((cfg.conv_channels, k, s) for _, k, s in kwargs["conv_layers"])
    return Wav2Vec2Encoder(**kwargs)


def build_model(cfg: ModelConfig, vocab_size: Optional[int] = None, encoder: Optional[Wav2Vec2Encoder] = None
                ) -> Transducer:
    """Turns a :class:`ModelConfig` into a :class:`Transducer`.

    Args:
        cfg: the model config.
        vocab_size: ``V`` incl. blank (from the tokenizer); overrides ``cfg.vocab_size``.
        encoder: an already built/loaded encoder to use instead of building one from ``cfg.encoder``.

    Raises:
        ValueError: when no vocabulary size is known.
    """
    V = vocab_size or cfg.vocab_size
    if not V:
        raise ValueError("vocab_size: not set in the config and not given (pass the tokenizer's size)")
    enc = encoder if encoder is not None else build_encoder(cfg.encoder)
    return build_transducer(encoder=enc, vocab_size=V, predictor=cfg.predictor.kwargs(),
                            joiner_dim=cfg.joiner_dim, blank=0, ctc_weight=cfg.ctc_weight,
                            encoder_kwargs=enc.arch, loss=cfg.loss.kwargs())
