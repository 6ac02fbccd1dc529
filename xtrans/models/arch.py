"""The architecture of a transducer: what its weights need, typed and frozen.

::

    ModelArch
      encoder: EncoderArch          the keyword arguments of Wav2Vec2Encoder, all of them
      predictor: StatelessPredictorArch | LSTMPredictorArch
      vocab_size: V (incl. blank), joiner_dim: J, blank, ctc_weight (> 0 adds the CTC head)
      loss: LossArch                full | pruned (pruned adds simple_am_proj / simple_lm_proj)

A recipe's :class:`~xtrans.models.config.ModelConfig` (presets, ``None`` = the preset's value, a
pretrained file) resolves to one with :func:`xtrans.models.config.resolve_arch`;
:func:`xtrans.models.config.build_model` builds the module; :attr:`Transducer.arch` keeps it.
A checkpoint stores :meth:`ModelArch.to_dict` (plain types: it loads with
``torch.load(weights_only=True)``) and :meth:`ModelArch.from_dict` reads it back, refusing an
unknown or missing field (``ValueError``) and a value of the wrong type (``TypeError``), each
named by its path (``arch.encoder.embed_dim``). Checkpoints of format 1 held the untyped dict of
that time; :func:`arch_from_v1` converts one.

This module holds data only (no torch), so that the models can import it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Tuple, Union

ConvLayers = Tuple[Tuple[int, int, int], ...]
"""(channels, kernel, stride) per CNN layer."""


@dataclass(frozen=True)
class EncoderArch:
    """The keyword arguments of :class:`~xtrans.models.wav2vec2.Wav2Vec2Encoder`, exactly.

    The encoder's signature is the one declaration of each option (name, type, default; its
    docstring says what each means); this torch-free copy is what a checkpoint stores, and
    ``test/test_encoder_contract.py`` fails on any drift: the same names in the same order, the
    same types (``conv_layers`` frozen to tuples), and each default here equal to the encoder's.
    The recipe config's options (:class:`~xtrans.models.config.EncoderConfig`) are derived from
    these fields.

    The options of :data:`TRAINING_OPTIONS` (the dropouts, ``freeze_feature_extractor``, the
    feature masking ``mask_*``) are how the model trains, not what it computes at inference: a
    resumed run, or the next stage started from it, needs them. ``mask_prob > 0`` adds one
    weight, the mask embedding ``mask_emb`` (D,).

    The fields without a default are those every stored arch has. Fields added after
    checkpoints were written (the model families of HuBERT, WavLM and data2vec-audio; feature
    masking) have the encoder's defaults, which give the architecture those checkpoints had:
    :meth:`ModelArch.from_dict` fills them in when a stored arch lacks them.
    """

    conv_layers: ConvLayers
    extractor_mode: str
    conv_bias: bool
    embed_dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    layer_norm_first: bool
    pos_conv_kernel: int
    pos_conv_groups: int
    pos_conv: str
    waveform_norm: str
    dropout: float
    attention_dropout: float
    activation_dropout: float
    layer_drop: float
    freeze_feature_extractor: bool
    layer_norm_eps: float
    mask_prob: float = 0.0
    mask_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_length: int = 64
    feat_proj_layer_norm: bool = True
    pos_conv_layers: int = 1
    pos_conv_norm: str = "weight"
    rel_pos_buckets: int = 0
    rel_pos_max_distance: int = 800
    rel_pos_gated: bool = False

    def __post_init__(self):
        _check_fields(self, type(self).__name__)

    def kwargs(self) -> Dict[str, Any]:
        """``Wav2Vec2Encoder(**arch.kwargs())`` builds the encoder."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> Dict[str, Any]:
        """Plain types only (tuples as lists), e.g. for an encoder-only file; read by :func:`encoder_arch`."""
        return _plain(self)


TRAINING_OPTIONS = ("dropout", "attention_dropout", "activation_dropout", "layer_drop", "freeze_feature_extractor",
                    "mask_prob", "mask_length", "mask_channel_prob", "mask_channel_length")
"""The fields of :class:`EncoderArch` that say how the encoder trains, not what it computes.

A recipe sets them for each run (default: the encoder's defaults), where the other options
default to the preset's or the pretrained checkpoint's (:class:`~xtrans.models.config.EncoderConfig`).
"""


@dataclass(frozen=True)
class StatelessPredictorArch:
    """:class:`~xtrans.models.predictor.StatelessPredictor`: ``embed_dim`` = ``D_pred``."""

    kind: ClassVar[str] = "stateless"
    embed_dim: int
    context_size: int

    def __post_init__(self):
        _check_fields(self, type(self).__name__)


@dataclass(frozen=True)
class LSTMPredictorArch:
    """:class:`~xtrans.models.predictor.LSTMPredictor` (output = ``hidden_dim``)."""

    kind: ClassVar[str] = "lstm"
    embed_dim: int
    hidden_dim: int
    num_layers: int
    dropout: float

    def __post_init__(self):
        _check_fields(self, type(self).__name__)


PredictorArch = Union[StatelessPredictorArch, LSTMPredictorArch]
PREDICTOR_ARCHS = {cls.kind: cls for cls in (StatelessPredictorArch, LSTMPredictorArch)}

LOSS_KINDS = ("full", "pruned")


@dataclass(frozen=True)
class LossArch:
    """The transducer loss; ``pruned`` adds two layers (``simple_am_proj``, ``simple_lm_proj``).

    The one declaration of the loss's settings: a recipe's ``model.loss`` section is read into
    its subclass :class:`~xtrans.models.config.LossConfig` (the same fields), and a checkpoint
    stores this.

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
        _check_fields(self, type(self).__name__)
        name = type(self).__name__
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"{name}.kind: expected one of {LOSS_KINDS}, found {self.kind!r}")
        if self.prune_range < 2:
            raise ValueError(f"{name}.prune_range: expected >= 2, found {self.prune_range}")
        if self.simple_loss_scale < 0:
            raise ValueError(f"{name}.simple_loss_scale: expected >= 0, found {self.simple_loss_scale}")
        if self.warmup_updates < 0:
            raise ValueError(f"{name}.warmup_updates: expected >= 0, found {self.warmup_updates}")


@dataclass(frozen=True)
class ModelArch:
    """Everything :func:`~xtrans.models.config.build_model` needs to rebuild a transducer."""

    encoder: EncoderArch
    predictor: PredictorArch
    vocab_size: int
    joiner_dim: int
    blank: int = 0
    ctc_weight: float = 0.0
    loss: LossArch = field(default_factory=LossArch)

    def __post_init__(self):
        _check_fields(self, type(self).__name__)
        if not 0 <= self.blank < self.vocab_size:
            raise ValueError(f"{type(self).__name__}.blank: expected in [0, vocab_size={self.vocab_size}), "
                             f"found {self.blank}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain types only (tuples as lists): for checkpoints, JSON and YAML."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "arch") -> "ModelArch":
        """The inverse of :meth:`to_dict`, with every field type-checked.

        Args:
            data: e.g. ``checkpoint["arch"]``.
            name: how messages call ``data``.

        A field with a default (one added after checkpoints of this format were written) may be
        missing: it takes the default.

        Raises:
            ValueError: an unknown or missing field, an unknown predictor or loss ``kind``, a value
                out of range; the message names the field (``arch.predictor.kind``).
            TypeError: a value of the wrong type, named the same way.
        """
        return _from_dict(cls, data, name)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        out = {"kind": value.kind} if isinstance(value, tuple(PREDICTOR_ARCHS.values())) else {}
        out.update({f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------ checks

_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_name(tp: Any) -> str:
    if tp == ConvLayers:
        return "a sequence of (channels, kernel, stride) int triples"
    if typing.get_origin(tp) is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float)
    if tp is str:
        return isinstance(value, str)
    if tp == ConvLayers:
        return isinstance(value, tuple) and len(value) > 0 and all(
            isinstance(c, tuple) and len(c) == 3 and all(_matches(x, int) for x in c) for c in value)
    if typing.get_origin(tp) is Union:
        return any(_matches(value, a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    raise AssertionError(f"no check for {tp}")  # internal: a field type this module does not know


def _check_fields(obj: Any, path: str) -> None:
    """Raises TypeError naming ``path.field`` for the first field whose value has the wrong type
    (after :func:`_coerce`: an int where a float belongs, lists where tuples belong)."""
    for name, tp in _hints(type(obj)).items():
        if typing.get_origin(tp) is ClassVar:
            continue
        value = _coerce(getattr(obj, name), tp)
        object.__setattr__(obj, name, value)  # frozen: the one write, during __post_init__
        if not _matches(value, tp):
            raise TypeError(f"{path}.{name}: expected {_type_name(tp)}, found {type(value).__name__} {value!r}")


def _coerce(value: Any, tp: Any) -> Any:
    """What YAML/JSON/torch give for a field -> the field's type (lists -> tuples, int -> float)."""
    if tp == ConvLayers and isinstance(value, (list, tuple)):
        return tuple(tuple(c) if isinstance(c, (list, tuple)) else c for c in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _from_dict(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"{path}: expected a mapping, found {type(data).__name__}")
    if cls == PredictorArch:
        kind = data.get("kind")
        if kind not in PREDICTOR_ARCHS:
            raise ValueError(f"{path}.kind: expected one of {sorted(PREDICTOR_ARCHS)}, found {kind!r}")
        cls = PREDICTOR_ARCHS[kind]
        data = {k: v for k, v in data.items() if k != "kind"}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown field (expected {', '.join(fields)})")
    missing = [n for n, f in fields.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{path}.{missing[0]}: missing (expected {', '.join(fields)})")
    kwargs = {}
    for name, tp in _hints(cls).items():
        if name not in fields or name not in data:  # not a field, or missing and defaulted
            continue
        value = data[name]
        if tp == PredictorArch or dataclasses.is_dataclass(tp):
            value = _from_dict(tp, value, f"{path}.{name}")
        else:
            value = _coerce(value, tp)
            if not _matches(value, tp):
                raise TypeError(f"{path}.{name}: expected {_type_name(tp)}, found {type(data[name]).__name__} "
                                f"{data[name]!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a value out of range (__post_init__): name it by its path
        message = str(err)
        prefix = f"{cls.__name__}."
        raise type(err)(path + message[len(prefix) - 1:] if message.startswith(prefix) else f"{path}: {message}"
                        ) from None


# ------------------------------------------------------------------------------------ format 1

def encoder_arch(value: Union[EncoderArch, Mapping[str, Any]], name: str = "arch.encoder") -> EncoderArch:
    """An :class:`EncoderArch` from itself or its dict (e.g. the ``arch`` of an encoder-only file)."""
    if isinstance(value, EncoderArch):
        return value
    return _from_dict(EncoderArch, value, name)


def predictor_arch(kind: str, **kwargs: Any) -> PredictorArch:
    """``predictor_arch("lstm", embed_dim=.., hidden_dim=.., num_layers=.., dropout=..)``.

    Raises:
        ValueError: for an unknown ``kind`` (or a missing/unknown argument).
    """
    return _from_dict(PredictorArch, dict(kwargs, kind=kind), "predictor")


__all__ = ["EncoderArch", "LSTMPredictorArch", "LossArch", "ModelArch", "PredictorArch", "StatelessPredictorArch",
           "TRAINING_OPTIONS", "encoder_arch", "predictor_arch"]
