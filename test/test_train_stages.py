"""Every stage config loads; each stage's mask trains a few updates on CPU; stages chain via --init."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xtrans.config import ConfigError, load_config
from xtrans.models.config import build_model
from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_overrides, tiny_train_config, write_yaml
from xtrans.train.checkpoint import CheckpointError, load_init
from xtrans.train.config import TrainConfig
from xtrans.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["1", "2a", "2b", "2c", "2d", "3a", "3b", "3c", "4", "5a", "5b"]
# (chunk, left context, sinks) of the stage table in docs/streaming.md; stage 4 is multi-chunk
MASKS = {"1": (None, None, 0), "2a": (16, None, 0), "2b": (32, None, 0), "2c": (64, None, 0),
         "2d": (128, None, 0), "3a": (32, 32, 0), "3b": (32, 64, 0), "3c": (32, None, 0),
         "5a": (32, 32, 4), "5b": (32, 32, 16)}
PREVIOUS = {"2a": "1", "2b": "1", "2c": "1", "2d": "1", "3a": "2b", "3b": "2b", "3c": "2b", "4": "3b",
            "5a": "3a", "5b": "3a"}


def conf_path(corpus_name, stage):
    return ROOT / "egs" / corpus_name / "asr1" / "conf" / f"train_stage{stage}.yaml"


@pytest.mark.parametrize("corpus_name", ["mini_synth", "fsdd", "librispeech"])
@pytest.mark.parametrize("stage", STAGES)
def test_stage_conf_loads_and_matches_the_stage_table(corpus_name, stage):
    cfg = load_config(conf_path(corpus_name, stage), TrainConfig)
    enc = cfg.model.encoder
    if corpus_name in ("mini_synth", "fsdd"):  # from scratch: one front end in every stage (fitted in stage 4, frozen)
        assert (enc.pos_conv, enc.waveform_norm, enc.extractor_mode) == ("causal", "cumulative", "batch_norm")
        assert enc.freeze_feature_extractor and enc.pos_conv_kernel == 32
        assert cfg.data.gain_db == (-35.0, 10.0)  # any microphone level, in every stage
    else:
        assert enc.pos_conv == ("full" if stage == "1" else "chunk")
        assert enc.waveform_norm == "cumulative"
    assert enc.preset == ("xlsr_53" if corpus_name == "librispeech" else "mini")
    if stage == "4":
        mc = cfg.mask.multi_chunk
        assert mc.chunk_range == (16, 64) and mc.left_context == 64
    else:
        m = cfg.mask
        assert (m.chunk_size, m.left_context, m.num_sinks) == MASKS[stage]
    if corpus_name == "librispeech":
        assert cfg.training.precision == "bf16" and enc.freeze_feature_extractor


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("stages") / "data", num_train=8, num_dev=2)


def test_every_stage_trains_a_few_updates_from_the_previous_one(corpus, tmp_path):
    """Stage 1 starts from an encoder-only file; each later stage from its predecessor's best.pt."""
    overrides = dict(tiny_overrides(corpus), **{"training.max_updates": 2, "data.dev_dir": None})
    cfg1 = load_config(conf_path("mini_synth", "1"), TrainConfig, overrides=overrides)
    encoder_file = tmp_path / "encoder.pt"
    torch.save({"model": build_model(cfg1.model, vocab_size=corpus.vocab_size).encoder.state_dict()},
               encoder_file)
    best = {}
    for stage in STAGES:
        cfg = load_config(conf_path("mini_synth", stage), TrainConfig, overrides=overrides)
        init = encoder_file if stage == "1" else best[PREVIOUS[stage]]
        trainer = Trainer(cfg, tmp_path / stage, init=str(init))
        state = trainer.fit()
        assert state.step == 2
        best[stage] = tmp_path / stage / "best.pt"
        assert best[stage].is_file()
        steps = [json.loads(x) for x in (tmp_path / stage / "steps.jsonl").read_text().splitlines()]
        chunks = {c for s in steps for c in s["chunk_sizes"]}
        if stage != "4":
            assert chunks == {MASKS[stage][0]}
    # init from a stage-3a transducer checkpoint restored every weight of stage 5a's start
    model = build_model(load_config(conf_path("mini_synth", "5a"), TrainConfig, overrides=overrides).model,
                        vocab_size=corpus.vocab_size)
    assert load_init(model, str(best["3a"])) == "transducer"
    ref = torch.load(best["3a"], weights_only=True)["model"]
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_init_that_does_not_fit_fails_clearly(corpus, tmp_path):
    cfg = load_config(conf_path("mini_synth", "2a"), TrainConfig, overrides=tiny_overrides(corpus))
    model = build_model(cfg.model, vocab_size=corpus.vocab_size)
    torch.save({"model": {"weird.weight": torch.zeros(2)}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not fit the encoder: missing"):
        load_init(model, str(tmp_path / "bad.pt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_init(model, str(tmp_path / "missing.pt"))


def test_pruned_and_full_loss_models_initialise_each_other(corpus, tmp_path):
    """The pruned loss's trivial joiner is a training-only head, like CTC: a stage trained with it
    starts the next stage's full-loss model (and back), every shared weight carried over."""
    cfg = load_config(conf_path("mini_synth", "1"), TrainConfig,
                      overrides=dict(tiny_overrides(corpus), **{"model.loss.kind": "full"}))
    pruned_cfg = load_config(conf_path("mini_synth", "1"), TrainConfig,
                             overrides=dict(tiny_overrides(corpus), **{"model.loss.kind": "pruned"}))
    torch.manual_seed(0)
    pruned = build_model(pruned_cfg.model, vocab_size=corpus.vocab_size)
    full = build_model(cfg.model, vocab_size=corpus.vocab_size)
    assert any(k.startswith("simple_am_proj.") for k in pruned.state_dict())
    for src, dst in ((pruned, full), (full, pruned)):
        torch.save({"model": src.state_dict()}, tmp_path / "src.pt")
        assert load_init(dst, str(tmp_path / "src.pt")) == "transducer"
        shared = set(src.state_dict()) & set(dst.state_dict())
        assert shared == {k for k in src.state_dict() if not k.startswith(("simple_am_proj.", "simple_lm_proj."))} \
            or shared == {k for k in dst.state_dict() if not k.startswith(("simple_am_proj.", "simple_lm_proj."))}
        assert all(torch.equal(dst.state_dict()[k], src.state_dict()[k]) for k in shared)


def test_multi_chunk_stage_draws_different_chunks_deterministically(corpus, tmp_path, caplog):
    overrides = dict(tiny_overrides(corpus), **{"training.max_updates": 6, "data.dev_dir": None,
                                                 "data.max_batch_size": 2})
    cfg = load_config(conf_path("mini_synth", "4"), TrainConfig, overrides=overrides)
    with caplog.at_level(logging.INFO, logger="xtrans.train.trainer"):
        Trainer(cfg, tmp_path / "a").fit()
    log = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ") and " chunk " in r.getMessage()]
    drawn = [line.split(" chunk ")[1].split()[0] for line in log]
    assert len(drawn) == 6 and len(set(drawn)) > 1
    assert all(16 <= int(c) <= 64 for c in drawn)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xtrans.train.trainer"):
        Trainer(cfg, tmp_path / "b").fit()
    again = [r.getMessage().split(" chunk ")[1].split()[0] for r in caplog.records
             if r.getMessage().startswith("step ") and " chunk " in r.getMessage()]
    assert again == drawn


def test_unknown_conf_key_names_the_key_and_the_file(tmp_path):
    bad = write_yaml(tiny_train_config(optim={"encoder_lrr": 1e-4}), tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match=r"typo\.yaml: key 'optim\.encoder_lrr': unknown key"):
        load_config(bad, TrainConfig)
    with pytest.raises(ConfigError, match=r"train_stage1\.yaml: key 'training': precision: expected fp32, bf16 or fp16"):
        load_config(conf_path("mini_synth", "1"), TrainConfig, overrides={"training.precision": "fp8"})
    proc = subprocess.run([sys.executable, "-m", "xtrans.bin.train", "--config", str(bad), "--outdir",
                           str(tmp_path / "exp"), "--no_progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "optim.encoder_lrr" in proc.stderr and "typo.yaml" in proc.stderr
