"""Training survives bad batches: a NaN waveform, an out-of-memory batch."""

import logging

import pytest
import torch

from xtrans.config import from_dict
from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config
from xtrans.train.config import TrainConfig
from xtrans.train.trainer import Trainer


@pytest.fixture(scope="module")
def nan_corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("nan") / "data", num_train=10, num_dev=2,
                            nan_utts=["train_003"])


def test_nan_waveform_batch_is_skipped_with_a_warning(nan_corpus, tmp_path, caplog):
    cfg = from_dict(TrainConfig, tiny_train_config(nan_corpus, data={"dev_dir": None},
                                                   training={"max_updates": None, "max_epochs": 1}))
    with caplog.at_level(logging.WARNING, logger="xtrans.train.trainer"):
        state = Trainer(cfg, tmp_path / "exp").fit()
    warnings = [r.getMessage() for r in caplog.records if "skipping micro-batch" in r.getMessage()]
    assert len(warnings) == 1 and "non-finite loss" in warnings[0] and "train_003" in warnings[0]
    assert state.skipped_batches == 1 and state.step >= 1 and state.epoch == 1
    model = torch.load(tmp_path / "exp" / f"ckpt_step{state.step}.pt", weights_only=True)["model"]
    assert all(bool(torch.isfinite(v).all()) for v in model.values())


def test_out_of_memory_batch_is_skipped(nan_corpus, tmp_path, caplog, monkeypatch):
    cfg = from_dict(TrainConfig, tiny_train_config(nan_corpus, data={"dev_dir": None},
                                                   training={"max_updates": 3}))
    trainer = Trainer(cfg, tmp_path / "exp")
    forward = trainer.model.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "forward", flaky)
    with caplog.at_level(logging.WARNING, logger="xtrans.train.trainer"):
        state = trainer.fit()
    assert state.step == 3 and state.skipped_batches >= 1
    assert any("out of memory" in r.getMessage() for r in caplog.records)


def test_non_finite_gradient_drops_the_update(nan_corpus, tmp_path, caplog, monkeypatch):
    cfg = from_dict(TrainConfig, tiny_train_config(nan_corpus, data={"dev_dir": None},
                                                   training={"max_updates": 2}))
    trainer = Trainer(cfg, tmp_path / "exp")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    weight = trainer.model.joiner.output.weight
    handle = weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    batch = next(iter(trainer._loader()))
    with caplog.at_level(logging.WARNING, logger="xtrans.train.trainer"):
        info = trainer.train_update([batch])
    handle.remove()
    assert info["skipped"]
    assert any("non-finite gradient norm" in r.getMessage() and batch.utt_ids[0] in r.getMessage()
               for r in caplog.records)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k
