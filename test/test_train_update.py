"""One update of the trainer: its record, its micro-batches, and the updates it drops."""

import json
import logging

import pytest
import torch

from xtrans.config import from_dict
from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config
from xtrans.train.config import TrainConfig
from xtrans.train.trainer import MicroBatchResult, MicroBatchSkip, Trainer, UpdateRecord


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("upd") / "data", num_train=10, num_dev=2,
                            nan_utts=["train_003"])


def trainer_for(corpus, tmp_path, **sections) -> Trainer:
    sections.setdefault("data", {"dev_dir": None})
    return Trainer(from_dict(TrainConfig, tiny_train_config(corpus, **sections)), tmp_path / "exp")


def test_fit_reports_every_update_as_a_record_that_matches_steps_jsonl(corpus, tmp_path):
    trainer = trainer_for(corpus, tmp_path, training={"max_updates": None, "max_epochs": 1},
                          optim={"accum_grad": 2}, mask={"multi_chunk": {"chunk_sizes": [4, 8, 16]}})
    records = []
    state = trainer.fit(records.append)
    assert all(isinstance(r, UpdateRecord) for r in records)
    assert sum(len(r.chunks) for r in records) == len(trainer.sampler)  # every batch drawn a chunk once
    assert all(len(r.chunks) == 2 for r in records[:-1]) and set(records[0].chunks) <= {4, 8, 16}
    done = [r for r in records if not r.skipped]
    assert [r.step for r in done] == list(range(1, state.step + 1))
    assert all(r.epoch == 0 for r in records)
    assert state.audio_seconds == pytest.approx(sum(r.audio for r in records))
    assert state.skipped_batches == 1  # the micro-batch of the NaN utterance
    for prev, r in zip([0] + [r.step for r in records], records):
        assert r.step == prev + (0 if r.skipped else 1)
    lines = [json.loads(x) for x in (tmp_path / "exp" / "steps.jsonl").read_text().splitlines()]
    assert [x["skipped"] for x in lines] == [r.skipped for r in records]
    assert [x["loss"] for x in lines if not x["skipped"]] == [r.loss for r in done]
    assert [x["chunk_sizes"] for x in lines] == [r.chunks for r in records]
    assert all(r.utts >= 1 and r.grad_norm > 0 and set(r.lrs) >= {"encoder", "heads"} for r in done)


def test_micro_batch_result_and_skip(corpus, tmp_path):
    trainer = trainer_for(corpus, tmp_path)
    model = trainer.model.train()
    batches = list(trainer._loader())
    good = next(b for b in batches if "train_003" not in b.utt_ids)
    bad = next(b for b in batches if "train_003" in b.utt_ids)
    result = trainer._forward_backward(model, good, None, 1.0 / len(good.utt_ids), last=True)
    assert isinstance(result, MicroBatchResult) and result.utts == len(good.utt_ids)
    assert result.loss_sum > 0
    assert any(p.grad is not None for p in model.parameters())
    skip = trainer._forward_backward(model, bad, None, 1.0, last=True)
    assert isinstance(skip, MicroBatchSkip) and "non-finite loss" in skip.reason and not skip.drop_update


def test_out_of_memory_in_backward_drops_the_update(corpus, tmp_path, caplog):
    trainer = trainer_for(corpus, tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    lrs = trainer.current_lrs()

    def oom(grad):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = trainer.model.joiner.output.weight.register_hook(oom)
    batch = next(b for b in trainer._loader() if "train_003" not in b.utt_ids)
    with caplog.at_level(logging.WARNING, logger="xtrans.train.trainer"):
        record = trainer.train_update([batch])
    handle.remove()
    assert record.skipped and record.loss is None and record.grad_norm is None
    assert record.audio == pytest.approx(float(batch.waveform_lengths.sum()) / 16000)
    assert trainer.state.skipped_batches == 1 and trainer.state.step == 0
    assert any("out of memory in backward" in r.getMessage() for r in caplog.records)
    assert all(p.grad is None for p in trainer.model.parameters())
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert trainer.current_lrs() == lrs  # no scheduler step
