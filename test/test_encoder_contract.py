"""The encoder contract (``xtrans.models.encoder.Encoder``) and the one declaration of each encoder option.

``Wav2Vec2Encoder`` satisfies the protocol and an object missing a member does not (the transducer
and the streaming encoder refuse it, naming what is missing); the code that trains, streams and
exports an encoder names the protocol, not the class. The encoder's keyword arguments are the
one declaration of its options: ``EncoderArch`` must have the same names in the same order, the
same types and the same defaults (a drift of any kind fails here, and the check is shown to
catch each kind), and ``EncoderConfig``'s options are derived from ``EncoderArch``. ``LossArch`` is
the one declaration of the loss's settings, ``LossConfig`` its YAML face.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Optional, Sequence, Tuple

import pytest
from torch import nn

import xtrans.export.encoder
import xtrans.models.transducer
import xtrans.streaming.encoder
from xtrans.config import ConfigError, from_dict
from xtrans.masks import StreamingConfig
from xtrans.models.arch import TRAINING_OPTIONS, ConvLayers, EncoderArch, LossArch, ModelArch
from xtrans.models.config import EncoderConfig, LossConfig, ModelConfig, encoder_defaults, resolve_arch
from xtrans.models.encoder import Encoder, FrameGeometry, check_encoder
from xtrans.models.joiner import Joiner
from xtrans.models.predictor import StatelessPredictor
from xtrans.models.transducer import Transducer
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, presets
from xtrans.streaming import StreamingEncoder

# --------------------------------------------------------------------------------------------
# the protocol


@pytest.mark.parametrize("overrides", [
    dict(),  # wav2vec 2.0 / XLSR layout
    dict(rel_pos_buckets=16, rel_pos_max_distance=40, rel_pos_gated=True),  # WavLM
    dict(pos_conv_layers=2, pos_conv_norm="layer", pos_conv_kernel=8),  # data2vec-audio
], ids=["wav2vec2", "wavlm", "data2vec"])
def test_every_family_satisfies_the_encoder_protocol(overrides):
    encoder = presets.tiny(num_layers=1, **overrides)
    assert isinstance(encoder, Encoder)
    assert isinstance(encoder.feature_extractor, FrameGeometry)
    assert (encoder.feature_extractor.stride, encoder.feature_extractor.receptive_field) == (320, 400)
    check_encoder(encoder)  # no error


class _Delegate:
    """Everything a Wav2Vec2Encoder has, except the names in ``missing``."""

    def __init__(self, encoder: nn.Module, missing: Sequence[str]):
        self._encoder, self._missing = encoder, set(missing)

    def __getattr__(self, name):
        if name in self._missing:
            raise AttributeError(name)
        return getattr(self._encoder, name)

    def __call__(self, *args, **kwargs):
        return self._encoder(*args, **kwargs)


@pytest.mark.parametrize("missing", [["encode_chunk"], ["feature_extractor"], ["check_streaming", "embed_dim"]])
def test_an_object_missing_a_member_is_not_an_encoder(missing):
    encoder = presets.tiny(num_layers=1)
    assert isinstance(_Delegate(encoder, []), Encoder)  # the delegate itself is transparent
    fake = _Delegate(encoder, missing)
    assert not isinstance(fake, Encoder)
    message = rf"encoder: expected an encoder .*found _Delegate without {', '.join(missing)}"
    with pytest.raises(TypeError, match=message):
        check_encoder(fake)


def test_the_transducer_and_the_streaming_encoder_refuse_what_is_no_encoder():
    predictor = StatelessPredictor(vocab_size=5, embed_dim=8, blank=0, context_size=2)
    joiner = Joiner(encoder_dim=8, predictor_dim=8, joiner_dim=8, vocab_size=5)
    with pytest.raises(TypeError, match="encoder: expected an encoder .*found Linear without check_streaming"):
        Transducer(encoder=nn.Linear(8, 8), predictor=predictor, joiner=joiner, vocab_size=5)
    with pytest.raises(TypeError, match="encoder: expected an encoder .*found Linear without"):
        StreamingEncoder(nn.Linear(8, 8), StreamingConfig(4, 4, 0))


@pytest.mark.parametrize("module", [xtrans.models.transducer, xtrans.streaming.encoder, xtrans.export.encoder],
                         ids=lambda m: m.__name__)
def test_transducer_streaming_and_export_depend_on_the_protocol_not_the_class(module):
    source = inspect.getsource(module)
    assert "Wav2Vec2Encoder" not in source and "xtrans.models.wav2vec2.model" not in source
    assert "from xtrans.models.encoder import" in source


# --------------------------------------------------------------------------------------------
# EncoderArch = the encoder's keyword arguments: names, order, types, defaults


def _frozen(tp):
    """The type an arch stores for an argument of type ``tp`` (sequences of triples become tuples)."""
    return ConvLayers if tp == Sequence[Tuple[int, int, int]] else tp


def arch_drift(init, arch_cls) -> list:
    """Every difference between a constructor's keyword arguments and an arch dataclass, as messages."""
    params = {n: p for n, p in inspect.signature(init).parameters.items() if n != "self"}
    param_types = typing.get_type_hints(init)
    fields = {f.name: f for f in dataclasses.fields(arch_cls)}
    field_types = typing.get_type_hints(arch_cls)
    drift = []
    if list(params) != list(fields):
        drift.append(f"names/order: {list(params)} != {list(fields)}")
    for name in params.keys() & fields.keys():
        if _frozen(param_types.get(name)) != field_types[name]:
            drift.append(f"{name}: type {param_types.get(name)} != {field_types[name]}")
        default = fields[name].default
        if default is not dataclasses.MISSING and default != params[name].default:
            drift.append(f"{name}: default {params[name].default!r} != {default!r}")
        if params[name].default is inspect.Parameter.empty:
            drift.append(f"{name}: no default in the constructor")
    return drift


def test_encoder_arch_is_the_encoders_signature_without_drift():
    assert arch_drift(Wav2Vec2Encoder.__init__, EncoderArch) == []
    # the fields without a default (every stored arch has them) come first, as the oldest arguments
    required = [f.name for f in dataclasses.fields(EncoderArch) if f.default is dataclasses.MISSING]
    assert required == [f.name for f in dataclasses.fields(EncoderArch)][:len(required)]
    # every default of the encoder has its declared type: the default encoder's arch is its defaults
    defaults = encoder_defaults()
    assert EncoderArch(**defaults).kwargs() == dict(defaults, conv_layers=tuple(map(tuple, defaults["conv_layers"])))


def _drifted_init(kind: str):
    """The encoder's signature with one drift of ``kind``."""
    sig = inspect.signature(Wav2Vec2Encoder.__init__)
    params = list(sig.parameters.values())
    hints = typing.get_type_hints(Wav2Vec2Encoder.__init__)
    if kind == "new argument":
        params.append(inspect.Parameter("rel_pos_scale", inspect.Parameter.KEYWORD_ONLY, default=1.0))
        hints["rel_pos_scale"] = float
    elif kind == "default":
        i = [p.name for p in params].index("mask_length")
        params[i] = params[i].replace(default=11)
    elif kind == "type":
        hints["rel_pos_buckets"] = float
    elif kind == "order":
        params[1], params[2] = params[2], params[1]

    def init(*args, **kwargs):
        raise AssertionError("not called")

    init.__signature__ = sig.replace(parameters=params)
    init.__annotations__ = hints
    return init


@pytest.mark.parametrize("kind", ["new argument", "default", "type", "order"])
def test_the_drift_check_catches_each_kind_of_drift(kind):
    assert arch_drift(_drifted_init(kind), EncoderArch)


def test_an_argument_missing_from_the_arch_is_refused_at_construction(monkeypatch):
    """The encoder records its arch from all its keyword arguments: one EncoderArch lacks is an error."""
    narrower = dataclasses.make_dataclass("EncoderArch", [(f.name, f.type, f) for f in dataclasses.fields(EncoderArch)
                                                          if f.name != "rel_pos_gated"], frozen=True)
    import xtrans.models.arch as arch_module

    monkeypatch.setattr(arch_module, "EncoderArch", narrower)
    with pytest.raises(ValueError, match=r"Wav2Vec2Encoder\.rel_pos_gated: unknown field"):
        presets.tiny(num_layers=1)


# --------------------------------------------------------------------------------------------
# EncoderConfig: derived from EncoderArch


def test_encoder_config_has_every_encoder_option_derived_from_the_arch():
    hints = typing.get_type_hints(EncoderConfig)
    arch_hints = typing.get_type_hints(EncoderArch)
    fields = {f.name: f for f in dataclasses.fields(EncoderConfig)}
    options = [f.name for f in dataclasses.fields(EncoderArch) if f.name != "conv_layers"]
    assert set(fields) == {"preset", "pretrained", "conv_channels", *options}
    defaults = encoder_defaults()
    for name in options:
        if name in TRAINING_OPTIONS:  # always set: the encoder's default
            assert (hints[name], fields[name].default) == (arch_hints[name], defaults[name]), name
        else:  # None = the preset's or the checkpoint's
            assert (hints[name], fields[name].default) == (Optional[arch_hints[name]], None), name
    assert set(TRAINING_OPTIONS) <= set(options)
    assert EncoderConfig().overrides() == {name: defaults[name] for name in TRAINING_OPTIONS}


def test_a_recipe_sets_any_encoder_option_and_a_typo_is_refused():
    cfg = from_dict(ModelConfig, {"encoder": {"preset": "tiny", "num_layers": 1, "rel_pos_buckets": 16,
                                              "rel_pos_max_distance": 40, "rel_pos_gated": True}}, source="m.yaml")
    arch = resolve_arch(cfg, vocab_size=5).encoder
    assert (arch.rel_pos_buckets, arch.rel_pos_max_distance, arch.rel_pos_gated, arch.num_layers) == (16, 40, True, 1)
    assert arch == presets.tiny(num_layers=1, rel_pos_buckets=16, rel_pos_max_distance=40, rel_pos_gated=True).arch
    with pytest.raises(ConfigError, match=r"m\.yaml: key 'encoder\.rel_pos_bukets': unknown key"):
        from_dict(ModelConfig, {"encoder": {"rel_pos_bukets": 16}}, source="m.yaml")
    with pytest.raises(ConfigError, match=r"key 'encoder\.rel_pos_gated': wrong type"):
        from_dict(ModelConfig, {"encoder": {"rel_pos_gated": "yes"}}, source="m.yaml")


# --------------------------------------------------------------------------------------------
# LossArch and LossConfig: one declaration


def test_loss_config_is_loss_arch_read_from_yaml():
    assert issubclass(LossConfig, LossArch)
    assert dataclasses.fields(LossConfig) == dataclasses.fields(LossArch)
    assert not set(vars(LossConfig).get("__annotations__", {}))  # no field of its own
    pruned = LossConfig(kind="pruned", prune_range=3, warmup_updates=7)
    assert pruned.arch() == LossArch(kind="pruned", prune_range=3, simple_loss_scale=0.5, warmup_updates=7)
    assert type(pruned.arch()) is LossArch and LossConfig(prune_range=9).arch() == LossArch()
    plain = resolve_arch(ModelConfig(loss=pruned), vocab_size=5).to_dict()
    assert ModelArch.from_dict(plain).loss == pruned.arch()


@pytest.mark.parametrize("kwargs, match", [
    (dict(prune_range=1), r"LossArch\.prune_range: expected >= 2, found 1"),
    (dict(simple_loss_scale=-0.5), r"LossArch\.simple_loss_scale: expected >= 0, found -0\.5"),
    (dict(warmup_updates=-1), r"LossArch\.warmup_updates: expected >= 0, found -1"),
    (dict(prune_range="5"), r"LossArch\.prune_range: expected int, found str '5'"),
])
def test_loss_arch_checks_what_loss_config_checked(kwargs, match):
    error = TypeError if isinstance(next(iter(kwargs.values())), str) else ValueError
    with pytest.raises(error, match=match):
        LossArch(**kwargs)
    with pytest.raises(error, match=match.replace("LossArch", "LossConfig")):
        LossConfig(**kwargs)


def test_a_stored_arch_still_loads():
    """An arch dict of before this change (every loss field, the encoder's fields) reads the same."""
    arch = resolve_arch(ModelConfig(encoder=EncoderConfig(preset="tiny", num_layers=1),
                                    loss=LossConfig(kind="pruned", prune_range=4)), vocab_size=7)
    plain = arch.to_dict()
    assert list(plain["loss"]) == ["kind", "prune_range", "simple_loss_scale", "warmup_updates"]
    assert ModelArch.from_dict(plain) == arch
