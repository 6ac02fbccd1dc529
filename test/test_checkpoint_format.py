"""The typed architecture (``ModelArch``), ``build_model``, and the checkpoint format of ``xtrans.checkpoint``:
round trips with type checks, and checkpoints of format 1 (``test/fixtures/checkpoint_v1``, written by the
code of that time) that still load, decode the same tokens and rebuild the same parameters."""

import dataclasses
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xtrans.checkpoint import (CHECKPOINT_VERSION, CheckpointError, atomic_save, load_checkpoint, load_model,
                               model_checkpoint, read_arch)
from xtrans.inference import Speech2Text
from xtrans.models import build_model as exported_build_model
from xtrans.models.arch import EncoderArch, LossArch, LSTMPredictorArch, ModelArch, StatelessPredictorArch
from xtrans.models.config import (EncoderConfig, LossConfig, ModelConfig, PredictorConfig, arch_from_v1, build_model,
                                  resolve_arch)
from xtrans.models.wav2vec2 import Wav2Vec2Encoder
from xtrans.models.wav2vec2.model import XLSR_CONV_LAYERS
from xtrans.train.checkpoint import average_checkpoints

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"


def small_config(**extra) -> ModelConfig:
    enc = dict(preset="tiny", conv_channels=8, embed_dim=16, num_layers=1, num_heads=2, ffn_dim=16,
               pos_conv_kernel=8, pos_conv_groups=2)
    enc.update(extra.pop("encoder", {}))
    return ModelConfig(encoder=EncoderConfig(**enc), **extra)


def lstm_pruned_arch() -> ModelArch:
    return resolve_arch(small_config(predictor=PredictorConfig(kind="lstm", embed_dim=8, hidden_dim=12, num_layers=2),
                                     joiner_dim=8, ctc_weight=0.3,
                                     loss=LossConfig(kind="pruned", prune_range=3, warmup_updates=7)), vocab_size=9)


# ---------------------------------------------------------------------------------- ModelArch


def test_encoder_arch_is_exactly_the_encoders_keyword_arguments():
    params = inspect.signature(Wav2Vec2Encoder.__init__).parameters
    assert [f.name for f in dataclasses.fields(EncoderArch)] == [p for p in params if p != "self"]
    encoder = Wav2Vec2Encoder(conv_layers=[[8, 10, 5], [8, 3, 2]], embed_dim=16, num_layers=1, num_heads=2,
                              ffn_dim=16, pos_conv_kernel=8, pos_conv_groups=2, dropout=0)
    assert encoder.arch.conv_layers == ((8, 10, 5), (8, 3, 2)) and encoder.arch.dropout == 0.0
    assert isinstance(encoder.arch.dropout, float)
    with pytest.raises(TypeError, match="Wav2Vec2Encoder.embed_dim: expected int, found str '16'"):
        Wav2Vec2Encoder(embed_dim="16")


def test_model_arch_round_trips_through_plain_types_and_torch_load(tmp_path):
    arch = lstm_pruned_arch()
    assert arch.predictor == LSTMPredictorArch(embed_dim=8, hidden_dim=12, num_layers=2, dropout=0.1)
    assert arch.loss == LossArch(kind="pruned", prune_range=3, simple_loss_scale=0.5, warmup_updates=7)
    plain = arch.to_dict()
    assert plain["predictor"]["kind"] == "lstm" and plain["encoder"]["conv_layers"][0] == [8, 10, 5]
    assert json.loads(json.dumps(plain)) == plain  # plain types only
    torch.save({"arch": plain}, tmp_path / "a.pt")
    again = torch.load(tmp_path / "a.pt", weights_only=True)["arch"]
    assert ModelArch.from_dict(again) == ModelArch.from_dict(json.loads(json.dumps(plain))) == arch


@pytest.mark.parametrize("edit, error, match", [
    (lambda d: d.update(extra=1), ValueError, r"arch\.extra: unknown field"),
    (lambda d: d.pop("joiner_dim"), ValueError, r"arch\.joiner_dim: missing"),
    (lambda d: d.update(joiner_dim="8"), TypeError, r"arch\.joiner_dim: expected int, found str '8'"),
    (lambda d: d.update(ctc_weight=True), TypeError, r"arch\.ctc_weight: expected float, found bool"),
    (lambda d: d["encoder"].update(num_heads=2.0), TypeError, r"arch\.encoder\.num_heads: expected int"),
    (lambda d: d["encoder"].update(conv_layers=[[8, 10]]), TypeError,
     r"arch\.encoder\.conv_layers: expected a sequence of \(channels, kernel, stride\) int triples"),
    (lambda d: d["encoder"].pop("layer_norm_eps"), ValueError, r"arch\.encoder\.layer_norm_eps: missing"),
    (lambda d: d["predictor"].update(kind="gru"), ValueError,
     r"arch\.predictor\.kind: expected one of \['lstm', 'stateless'\], found 'gru'"),
    (lambda d: d["predictor"].update(context_size=2), ValueError, r"arch\.predictor\.context_size: unknown field"),
    (lambda d: d["loss"].update(kind="exact"), ValueError, r"arch\.loss\.kind: expected one of \('full', 'pruned'\)"),
    (lambda d: d.update(blank=9), ValueError, r"arch\.blank: expected in \[0, vocab_size=9\), found 9"),
    (lambda d: d.update(predictor=[1]), TypeError, r"arch\.predictor: expected a mapping, found list"),
])
def test_from_dict_names_the_field_that_is_wrong(edit, error, match):
    plain = lstm_pruned_arch().to_dict()
    edit(plain)
    with pytest.raises(error, match=match):
        ModelArch.from_dict(plain)


def test_direct_construction_is_type_checked():
    arch = lstm_pruned_arch()
    with pytest.raises(TypeError, match=r"ModelArch\.vocab_size: expected int, found float 9\.0"):
        dataclasses.replace(arch, vocab_size=9.0)
    with pytest.raises(TypeError, match=r"StatelessPredictorArch\.context_size: expected int, found NoneType"):
        StatelessPredictorArch(embed_dim=8, context_size=None)
    with pytest.raises(ValueError, match=r"LossArch\.kind: expected one of"):
        LossArch(kind="exact")


# ---------------------------------------------------------------------------------- build_model


def test_build_model_is_the_one_builder_and_keeps_its_arch():
    assert exported_build_model is build_model
    cfg = small_config(predictor=PredictorConfig(kind="stateless", embed_dim=8, context_size=3), joiner_dim=8,
                       ctc_weight=0.2)
    arch = resolve_arch(cfg, vocab_size=7)
    model = build_model(arch)
    assert model.arch is arch and model.encoder.arch == arch.encoder
    assert build_model(cfg, vocab_size=7).arch == arch  # a config is resolved first
    assert model.ctc_head.out_features == model.joiner.output.out_features == 7
    assert model.predictor.context_size == 3 and len(model.encoder.layers) == 1
    assert arch.encoder.conv_layers == tuple((8, k, s) for _, k, s in XLSR_CONV_LAYERS)
    rebuilt = build_model(ModelArch.from_dict(arch.to_dict()))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"vocab_size: the arch fixes it \(7\); found 8"):
        build_model(arch, vocab_size=8)
    with pytest.raises(TypeError, match="arch: expected a ModelArch or a ModelConfig, found dict"):
        build_model(arch.to_dict())


def test_full_loss_arch_does_not_depend_on_the_pruned_settings():
    a = resolve_arch(small_config(loss=LossConfig(kind="full", prune_range=9)), vocab_size=5)
    assert a.loss == LossArch() == resolve_arch(small_config(), vocab_size=5).loss


def test_layer_norm_eps_is_part_of_the_arch_and_survives_a_checkpoint(tmp_path):
    """A Hugging Face model's ``layer_norm_eps`` (load_pretrained) is rebuilt from the checkpoint alone."""
    arch = resolve_arch(small_config(), vocab_size=5)
    arch = dataclasses.replace(arch, encoder=dataclasses.replace(arch.encoder, layer_norm_eps=1e-3))
    atomic_save(model_checkpoint(build_model(arch)), tmp_path / "m.pt")
    model, _ = load_model(tmp_path / "m.pt")
    assert model.encoder.layer_norm.eps == model.encoder.layers[0].final_layer_norm.eps == 1e-3
    assert model.encoder.feature_extractor.conv_layers[0].norm.eps == 1e-5


def test_a_pretrained_encoder_fixes_the_shape_and_brings_its_weights(tmp_path):
    pytest.importorskip("transformers")
    from xtrans.models.wav2vec2 import load_pretrained
    from xtrans.testing.pretrained_fixtures import random_hf_model, save_hf_dir

    hf_dir = save_hf_dir(random_hf_model("xlsr", layer_norm_eps=1e-3), tmp_path / "hf", do_normalize=True)
    cfg = ModelConfig(encoder=EncoderConfig(pretrained=str(hf_dir), pos_conv="chunk", waveform_norm="cumulative",
                                            layer_drop=0.1),
                      predictor=PredictorConfig(kind="stateless", embed_dim=8), joiner_dim=8)
    model = build_model(cfg, vocab_size=5)
    ref = load_pretrained(hf_dir, pos_conv="chunk", waveform_norm="cumulative", layer_drop=0.1)
    assert model.arch.encoder == ref.arch == resolve_arch(cfg, vocab_size=5).encoder
    assert model.arch.encoder.layer_norm_eps == 1e-3 and model.arch.encoder.layer_drop == 0.1
    for k, v in ref.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v), k


# ---------------------------------------------------------------------------------- the format


def test_checkpoint_round_trip_and_ddp_prefix(tmp_path):
    torch.manual_seed(0)
    model = build_model(lstm_pruned_arch())
    ckpt = model_checkpoint(model)
    assert ckpt["version"] == CHECKPOINT_VERSION == 2 and ckpt["arch"] == model.arch.to_dict()
    atomic_save(dict(ckpt, tokenizer="bpe.model"), tmp_path / "plain.pt")
    atomic_save(dict(ckpt, model={f"module.{k}": v for k, v in ckpt["model"].items()}), tmp_path / "ddp.pt")
    for name in ("plain.pt", "ddp.pt"):
        loaded, raw = load_model(tmp_path / name)
        assert loaded.arch == model.arch and raw["version"] == 2
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
    assert load_model(tmp_path / "plain.pt")[1]["tokenizer"] == "bpe.model"


def test_format_errors(tmp_path):
    model = build_model(lstm_pruned_arch())
    ckpt = model_checkpoint(model)
    with pytest.raises(CheckpointError, match="format 3 is newer than this xtrans reads"):
        read_arch(dict(ckpt, version=3), "x.pt")
    with pytest.raises(CheckpointError, match=r"x.pt: invalid arch \(format 2\): arch\.joiner_dim: expected int"):
        read_arch(dict(ckpt, arch=dict(ckpt["arch"], joiner_dim="8")), "x.pt")
    with pytest.raises(CheckpointError, match="version: expected a format number >= 1, found '2'"):
        read_arch(dict(ckpt, version="2"), "x.pt")
    atomic_save(dict(ckpt, arch=dict(ckpt["arch"], joiner_dim=9)), tmp_path / "misfit.pt")
    with pytest.raises(CheckpointError, match="weights do not fit its 'arch'"):
        load_model(tmp_path / "misfit.pt")
    model.arch = None
    with pytest.raises(ValueError, match="model: expected a Transducer made by build_model"):
        model_checkpoint(model)


# ---------------------------------------------------------------------------------- format 1


def test_format_1_arch_dicts_convert_to_the_same_parameters():
    """archs.json: ``Transducer.arch`` and every parameter's shape of two models of format 1
    (LSTM + CTC + pruned loss + batch-norm CNN; stateless, full loss, the mini preset)."""
    for entry in json.loads((FIXTURE / "archs.json").read_text()):
        arch = arch_from_v1(entry["arch"])
        shapes = {k: list(v.shape) for k, v in build_model(arch).state_dict().items()}
        assert shapes == entry["shapes"], entry["name"]
        assert arch.encoder.layer_norm_eps == 1e-5  # not in format 1: the encoder's default
    lstm = arch_from_v1(json.loads((FIXTURE / "archs.json").read_text())[0]["arch"])
    assert lstm.loss == LossArch(kind="pruned", prune_range=3, simple_loss_scale=0.5, warmup_updates=7)
    assert lstm.ctc_weight == 0.3 and lstm.encoder.freeze_feature_extractor and lstm.encoder.dropout == 0.1
    with pytest.raises(TypeError, match=r"arch\.encoder\.embed_dim: expected int"):
        arch_from_v1(dict(entry["arch"], encoder=dict(entry["arch"]["encoder"], embed_dim="16")))


def test_format_1_checkpoint_loads_with_its_weights():
    raw = load_checkpoint(FIXTURE / "best.pt")
    assert raw["version"] == 1 and isinstance(raw["arch"], dict) and "loss" not in raw["arch"]
    model, ckpt = load_model(FIXTURE / "best.pt")
    assert model.arch == read_arch(raw) and model.arch.loss == LossArch()
    assert model.arch.predictor == StatelessPredictorArch(embed_dim=32, context_size=2)
    assert model.arch.encoder.waveform_norm == "cumulative" and model.vocab_size == 20
    for k, v in raw["model"].items():
        assert torch.equal(model.state_dict()[k], v), k


EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
"""What ``Speech2Text`` of format-1 days transcribed from ``tones.wav`` (see make_fixture.py)."""


@pytest.mark.parametrize("mode, kwargs", [
    ("full_greedy", {}), ("full_beam", dict(search="beam", beam=3)),
    ("chunk320_left320_sinks4", dict(chunk_ms=320, left_ms=320, sinks=4)),
])
def test_format_1_checkpoint_decodes_as_it_did(mode, kwargs):
    s2t = Speech2Text.from_checkpoint(FIXTURE / "best.pt", **kwargs)  # bpe.model found beside it
    result = s2t.transcribe(FIXTURE / "tones.wav")
    assert result.tokens == EXPECTED[mode]["tokens"] and result.text == EXPECTED[mode]["text"]
    assert len(result.tokens) > 3


def test_transcribe_cli_reads_a_format_1_checkpoint():
    proc = subprocess.run([sys.executable, "-m", "xtrans.bin.transcribe", "--model", str(FIXTURE / "best.pt"),
                           "--jsonl", str(FIXTURE / "tones.wav")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["tokens"] == EXPECTED["full_greedy"]["tokens"] and record["text"] == EXPECTED["full_greedy"]["text"]


def test_averaging_a_format_1_checkpoint_writes_todays_format(tmp_path):
    out = average_checkpoints([FIXTURE / "best.pt", FIXTURE / "best.pt"], tmp_path / "average.pt")
    assert out["version"] == CHECKPOINT_VERSION and ModelArch.from_dict(out["arch"]) == read_arch(
        load_checkpoint(FIXTURE / "best.pt"))
    model, _ = load_model(tmp_path / "average.pt")
    for k, v in load_checkpoint(FIXTURE / "best.pt")["model"].items():
        assert torch.allclose(model.state_dict()[k].float(), v.float()), k
