"""Model configs (frozen dataclasses, loaded from a recipe's YAML), their resolution to a
:class:`~xtrans.models.arch.ModelArch`, and ``build_model``, the one builder of a transducer::

    arch = resolve_arch(cfg, vocab_size=tokenizer.vocab_size)   # presets, overrides, pretrained shape
    model = build_model(arch)                                   # model.arch == arch
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

from xtrans.models.arch import (LOSS_KINDS, TRAINING_OPTIONS, EncoderArch, LossArch, ModelArch, encoder_arch,
                                predictor_arch)
from xtrans.models.joiner import Joiner
from xtrans.models.predictor import LSTMPredictor, StatelessPredictor
from xtrans.models.transducer import Transducer
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.models.wav2vec2.presets import preset_kwargs


def encoder_defaults() -> Dict[str, Any]:
    """The default keyword arguments of :class:`~xtrans.models.wav2vec2.Wav2Vec2Encoder`."""
    return {k: p.default for k, p in inspect.signature(Wav2Vec2Encoder.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


_NOT_ENCODER_OPTIONS = ("preset", "pretrained", "conv_channels")


def _with_encoder_options(cls: type) -> type:
    """Adds every encoder option (a field of :class:`~xtrans.models.arch.EncoderArch`) to ``cls``'s fields.

    An option of :data:`~xtrans.models.arch.TRAINING_OPTIONS` gets its type and the encoder's
    default; any other gets ``Optional`` of its type and ``None`` (= the preset's or the
    checkpoint's value). ``conv_layers`` is left out: ``conv_channels`` sets its channels.
    """
    hints = typing.get_type_hints(EncoderArch)
    defaults = encoder_defaults()
    annotations = cls.__dict__["__annotations__"]
    for f in dataclasses.fields(EncoderArch):
        if f.name == "conv_layers":
            continue
        training = f.name in TRAINING_OPTIONS
        annotations[f.name] = hints[f.name] if training else Optional[hints[f.name]]
        setattr(cls, f.name, defaults[f.name] if training else None)
    return cls


@dataclass(frozen=True)
@_with_encoder_options
class EncoderConfig:
    """The encoder: a preset (or a pretrained checkpoint) plus overrides.

    Beside the three fields below it has one field per encoder option, derived from
    :class:`~xtrans.models.arch.EncoderArch` (their meaning is in
    :class:`~xtrans.models.wav2vec2.Wav2Vec2Encoder`'s docstring), except ``conv_layers``:

    - the options of :data:`~xtrans.models.arch.TRAINING_OPTIONS` (``dropout``,
      ``attention_dropout``, ``activation_dropout``, ``layer_drop``, ``freeze_feature_extractor``,
      and wav2vec 2.0 fine-tuning's feature masking ``mask_prob``, ``mask_length``,
      ``mask_channel_prob``, ``mask_channel_length``: fairseq's names and meanings, 0 = off; see
      :mod:`xtrans.models.wav2vec2.feature_masking`) take the encoder's defaults and are always
      set, pretrained or not;
    - every other option (``pos_conv``, ``waveform_norm``, ``extractor_mode``, ``embed_dim``,
      ``num_layers``, ``pos_conv_kernel``, ``rel_pos_buckets``, ...) is ``None`` = the preset's or
      the checkpoint's. A pretrained checkpoint fixes its shape: ``load_pretrained`` refuses a
      value that changes it (``num_layers`` may be lowered).

    Attributes:
        preset: ``xlsr_53 | wav2vec2_base | tiny | mini``, or a published encoder's shape
            (``xls_r_300m | xls_r_1b | xls_r_2b | mms_300m | mms_1b | hubert_base | hubert_large |
            wavlm_base_plus | wavlm_large | data2vec_audio_base | data2vec_audio_large``, see
            :mod:`xtrans.models.wav2vec2.presets`); ignored when ``pretrained`` is set.
        pretrained: a Hugging Face directory (wav2vec2, HuBERT, WavLM, data2vec-audio), a fairseq or
            unilm ``.pt`` to import (recipe stage 4); ``None`` = random initialisation from ``preset``.
        conv_channels: channels of every CNN layer (None = the preset's).
    """

    preset: str = "tiny"
    pretrained: Optional[str] = None
    conv_channels: Optional[int] = None

    def overrides(self) -> dict:
        """Encoder keyword arguments set by this config (``None`` fields left to the preset)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in _NOT_ENCODER_OPTIONS and getattr(self, f.name) is not None}


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
class LossConfig(LossArch):
    """The transducer loss as a recipe's ``model.loss`` section gives it: :class:`~xtrans.models.arch.LossArch`.

    The fields, defaults and checks are :class:`~xtrans.models.arch.LossArch`'s (declared there,
    once); only the message for an unknown ``kind`` speaks of the YAML key rather than the arch
    field. :meth:`arch` is what the model is built with.
    """

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"kind: expected {' or '.join(map(repr, LOSS_KINDS))}, found {self.kind!r}")
        super().__post_init__()

    def arch(self) -> LossArch:
        """The :class:`~xtrans.models.arch.LossArch` of this config; the full loss ignores the pruned settings."""
        if self.kind == "full":
            return LossArch()
        return LossArch(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class ModelConfig:
    """The transducer. ``vocab_size`` comes from the tokenizer when not given."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    joiner_dim: int = 512
    ctc_weight: float = 0.0
    vocab_size: Optional[int] = None
    loss: LossConfig = field(default_factory=LossConfig)


def resolve_arch(cfg: ModelConfig, vocab_size: Optional[int] = None,
                 pretrained: Optional[EncoderArch] = None) -> ModelArch:
    """The architecture that ``cfg`` describes: presets and overrides applied, the shape of a
    pretrained encoder read from its file.

    Args:
        cfg: the model config.
        vocab_size: ``V`` incl. blank (from the tokenizer); overrides ``cfg.vocab_size``.
        pretrained: when ``cfg.encoder.pretrained`` is set, the arch of that encoder as
            ``load_pretrained(path, **cfg.encoder.overrides())`` gives it (:func:`build_model`
            passes the one it loaded); ``None`` = load the file to read it.

    Raises:
        ValueError: when no vocabulary size is known, for an unknown preset or encoder option,
            or an option that would change the shape of a pretrained encoder.
    """
    V = vocab_size or cfg.vocab_size
    if not V:
        raise ValueError("vocab_size: not set in the config and not given (pass the tokenizer's size)")
    enc = cfg.encoder
    if enc.pretrained is not None:
        _check_pretrained_options(enc)
        encoder = pretrained if pretrained is not None else _load_pretrained(enc).arch
    else:
        kwargs = preset_kwargs(enc.preset, **enc.overrides())
        if enc.conv_channels is not None:
            kwargs["conv_layers"] = tuple((enc.conv_channels, k, s) for _, k, s in kwargs["conv_layers"])
        encoder = encoder_arch({**encoder_defaults(), **kwargs}, "model.encoder")
    return ModelArch(encoder=encoder, predictor=predictor_arch(**cfg.predictor.kwargs()), vocab_size=V,
                     joiner_dim=cfg.joiner_dim, blank=0, ctc_weight=cfg.ctc_weight, loss=cfg.loss.arch())


def _check_pretrained_options(cfg: EncoderConfig) -> None:
    if cfg.conv_channels is not None:
        raise ValueError("conv_channels: cannot change the CNN of a pretrained encoder")
    for name in ("pos_conv_kernel", "pos_conv_groups"):
        if getattr(cfg, name) is not None:
            raise ValueError(f"{name}: cannot change the positional convolution of a pretrained encoder")


def _load_pretrained(cfg: EncoderConfig) -> Wav2Vec2Encoder:
    from xtrans.models.wav2vec2 import load_pretrained

    _check_pretrained_options(cfg)
    return load_pretrained(cfg.pretrained, **cfg.overrides())


def build_model(arch: Union[ModelArch, ModelConfig], vocab_size: Optional[int] = None) -> Transducer:
    """Builds the :class:`Transducer` of ``arch`` (randomly initialised); ``model.arch == arch``.

    Args:
        arch: the architecture; or a :class:`ModelConfig`, resolved first with
            :func:`resolve_arch` (a config naming a ``pretrained`` encoder also gets its weights).
        vocab_size: with a config only: ``V`` incl. blank, as in :func:`resolve_arch`.

    Raises:
        ValueError: as :func:`resolve_arch`; ``vocab_size`` given with a :class:`ModelArch`.
        TypeError: ``arch`` is neither.
    """
    if isinstance(arch, ModelConfig):
        pretrained = _load_pretrained(arch.encoder) if arch.encoder.pretrained is not None else None
        model = build_model(resolve_arch(arch, vocab_size, None if pretrained is None else pretrained.arch))
        if pretrained is not None:
            model.encoder.load_state_dict(pretrained.state_dict())
        return model
    if not isinstance(arch, ModelArch):
        raise TypeError(f"arch: expected a ModelArch or a ModelConfig, found {type(arch).__name__}")
    if vocab_size is not None and vocab_size != arch.vocab_size:
        raise ValueError(f"vocab_size: the arch fixes it ({arch.vocab_size}); found {vocab_size}")
    encoder = Wav2Vec2Encoder(**arch.encoder.kwargs())
    p = arch.predictor
    if p.kind == "stateless":
        predictor = StatelessPredictor(vocab_size=arch.vocab_size, embed_dim=p.embed_dim, blank=arch.blank,
                                       context_size=p.context_size)
    else:
        predictor = LSTMPredictor(vocab_size=arch.vocab_size, embed_dim=p.embed_dim, hidden_dim=p.hidden_dim,
                                  num_layers=p.num_layers, dropout=p.dropout, blank=arch.blank)
    joiner = Joiner(encoder_dim=encoder.embed_dim, predictor_dim=predictor.output_dim, joiner_dim=arch.joiner_dim,
                    vocab_size=arch.vocab_size)
    loss = arch.loss
    return Transducer(encoder=encoder, predictor=predictor, joiner=joiner, vocab_size=arch.vocab_size,
                      blank=arch.blank, ctc_weight=arch.ctc_weight, arch=arch, loss_kind=loss.kind,
                      prune_range=loss.prune_range, simple_loss_scale=loss.simple_loss_scale,
                      warmup_updates=loss.warmup_updates)


def arch_from_v1(arch: Mapping[str, Any], name: str = "arch") -> ModelArch:
    """Converts the plain-dict ``arch`` of a format-1 checkpoint (``Transducer.arch`` before
    :class:`ModelArch`) -> :class:`ModelArch`.

    That dict is this one's layout, except that it had no ``loss`` entry for the full loss, and
    that its ``encoder`` entry holds only the arguments given when it was written (missing ones
    took :class:`~xtrans.models.wav2vec2.Wav2Vec2Encoder`'s defaults, as they do here).

    Raises:
        ValueError, TypeError: as :meth:`ModelArch.from_dict`.
    """
    if not isinstance(arch, Mapping):
        raise TypeError(f"{name}: expected a mapping, found {type(arch).__name__}")
    data = dict(arch)
    if isinstance(data.get("encoder"), Mapping):
        data["encoder"] = {**encoder_defaults(), **data["encoder"]}
    data.setdefault("blank", 0)
    data.setdefault("ctc_weight", 0.0)
    data.setdefault("loss", dataclasses.asdict(LossArch()))
    return ModelArch.from_dict(data, name)
