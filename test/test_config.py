"""Strict YAML configs: unknown keys and wrong types fail naming the key and the file."""

from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from xtrans.config import ConfigError, from_dict, load_config, save_config
from xtrans.models.config import EncoderConfig, ModelConfig, build_model


@dataclass(frozen=True)
class Inner:
    chunk: Optional[int] = None
    sizes: Tuple[int, ...] = (16, 32)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)


def write(tmp_path, text):
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return path


def test_load_nested_and_round_trip(tmp_path):
    path = write(tmp_path, "name: a\nlr: 2\ninner:\n  chunk: 32\n  sizes: [16, 64]\n")
    cfg = load_config(path, Outer)
    assert cfg == Outer(name="a", lr=2.0, inner=Inner(chunk=32, sizes=(16, 64)))
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml", Outer) == cfg
    assert load_config(path, Outer, overrides={"inner.chunk": None}).inner.chunk is None


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "inner:\n  chunck: 32\n")
    with pytest.raises(ConfigError, match=r"conf\.yaml: key 'inner\.chunck': unknown key"):
        load_config(path, Outer)


def test_wrong_type_names_key_and_file(tmp_path):
    path = write(tmp_path, "inner:\n  chunk: thirty-two\n")
    with pytest.raises(ConfigError, match=r"conf\.yaml: key 'inner\.chunk': wrong type"):
        load_config(path, Outer)
    with pytest.raises(ConfigError, match="key 'inner': expected a mapping"):
        from_dict(Outer, {"inner": 3})
    with pytest.raises(ConfigError, match=r"key 'inner\.sizes': wrong type"):
        from_dict(Outer, {"inner": {"sizes": ["a"]}})


def test_model_config_builds_a_transducer(tmp_path):
    path = write(tmp_path, "encoder:\n  preset: tiny\n  pos_conv: chunk\n  num_layers: 1\n"
                           "predictor:\n  kind: lstm\n  hidden_dim: 32\n  embed_dim: 16\njoiner_dim: 24\n")
    cfg = load_config(path, ModelConfig)
    model = build_model(cfg, vocab_size=11)
    assert model.encoder.pos_conv_mode == "chunk" and len(model.encoder.layers) == 1
    assert model.joiner.output.out_features == 11
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(cfg)
    with pytest.raises(ConfigError, match="key 'predictor': kind: expected 'stateless' or 'lstm'"):
        from_dict(ModelConfig, {"predictor": {"kind": "gru"}})
    with pytest.raises(ValueError, match="preset: expected one of"):
        build_model(ModelConfig(encoder=EncoderConfig(preset="huge")), vocab_size=5)


def test_positional_conv_size_is_configurable_for_random_encoders_only():
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="causal", pos_conv_kernel=16, pos_conv_groups=4))
    conv = build_model(cfg, vocab_size=5).encoder.pos_conv
    assert conv.kernel == 16 and conv.conv.groups == 4 and conv.history == 15
    with pytest.raises(ValueError, match="pos_conv_kernel: cannot change the positional convolution"):
        build_model(ModelConfig(encoder=EncoderConfig(pretrained="some/dir", pos_conv_kernel=16)), vocab_size=5)


def test_exponent_without_a_dot_is_a_float(tmp_path):
    """YAML 1.1 reads ``3e-3`` as a string; a float field takes it (``--set optim.lr=3e-3``)."""
    from xtrans.config import parse_overrides
    path = write(tmp_path, "lr: 3e-3\n")
    assert load_config(path, Outer).lr == 3e-3
    assert load_config(path, Outer, overrides=parse_overrides(["lr=-2E+1"])).lr == -20.0
    with pytest.raises(ConfigError, match="key 'name'"):
        from_dict(Outer, {"name": 5e-3})
    assert from_dict(Outer, {"name": "1e5"}).name == "1e5"  # a string field keeps its string
    with pytest.raises(ConfigError, match="key 'lr': wrong type"):
        from_dict(Outer, {"lr": "3e-3x"})
