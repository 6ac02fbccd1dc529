"""A Trainer assembled from parts passed in: a model, data and optimizer made outside the config."""

import json

import pytest
import torch

from xtrans.config import from_dict
from xtrans.data.dataset import AsrDataset, collate
from xtrans.data.sampler import DurationBatchSampler
from xtrans.models.config import build_model
from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config
from xtrans.tokenizer import Tokenizer
from xtrans.train.build import TrainerParts, build_parts
from xtrans.train.config import TrainConfig
from xtrans.train.runtime import Runtime
from xtrans.train.trainer import Trainer
from xtrans.train.update import Updater


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("parts") / "data", num_train=8, num_dev=2)


def own_parts(corpus, cfg: TrainConfig, lr: float = 0.05) -> TrainerParts:
    """A model, data and a plain SGD optimizer made by hand, not by build_parts."""
    tokenizer = Tokenizer(corpus.tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size=tokenizer.vocab_size)
    train_set = AsrDataset(corpus.train_dir, tokenizer)
    sampler = DurationBatchSampler(train_set.durations(), 1.5, num_buckets=1, seed=3)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return TrainerParts(model=model, optimizer=optimizer, scheduler=scheduler, train_set=train_set,
                        sampler=sampler, tokenizer=tokenizer)


def test_trainer_trains_the_parts_passed_in(corpus, tmp_path):
    cfg = from_dict(TrainConfig, tiny_train_config(corpus, data={"dev_dir": None}, training={"max_updates": 2}))
    parts = own_parts(corpus, cfg)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    records = []
    state = Trainer(cfg, tmp_path / "exp", parts=parts).fit(records.append)
    assert state is parts.state and state.step == 2 and state.batches_in_epoch == 2
    assert [r.step for r in records] == [1, 2] and not any(r.skipped for r in records)
    assert all(r.lrs == {"0": 0.05} and r.loss > 0 and r.utts >= 1 for r in records)
    changed = {k for k, v in parts.model.state_dict().items() if not torch.equal(v, before[k])}
    assert "joiner.output.weight" in changed and "encoder.layers.0.attention.q_proj.weight" in changed
    assert not any(k.startswith("encoder.feature_extractor.") for k in changed)  # frozen: not in SGD
    saved = torch.load(tmp_path / "exp" / "ckpt_step2.pt", weights_only=True)
    assert all(torch.equal(v, parts.model.state_dict()[k]) for k, v in saved["model"].items())
    lines = [json.loads(x) for x in (tmp_path / "exp" / "steps.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in lines] == [r.loss for r in records]


def test_parts_built_from_the_config_train_like_the_trainers_own(corpus, tmp_path):
    cfg = from_dict(TrainConfig, tiny_train_config(corpus, training={"max_updates": 3}))
    own = Trainer(cfg, tmp_path / "a").fit()
    passed = Trainer(cfg, tmp_path / "b", parts=build_parts(cfg, device=torch.device("cpu"))).fit()
    assert own.step == passed.step == 3

    def losses(run):
        return [json.loads(x)["loss"] for x in (tmp_path / run / "steps.jsonl").read_text().splitlines()]

    assert losses("a") == losses("b")
    a = torch.load(tmp_path / "a" / "ckpt_step3.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "ckpt_step3.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_updater_alone_makes_one_update(corpus):
    cfg = from_dict(TrainConfig, tiny_train_config(corpus, data={"dev_dir": None}))
    parts = own_parts(corpus, cfg, lr=0.1)
    batch = collate([parts.train_set[i] for i in next(iter(parts.sampler))])
    record = Updater(cfg, parts, Runtime(torch.device("cpu"))).update([batch])
    assert not record.skipped and record.utts == len(batch.utt_ids) and record.chunks == [None]
    assert record.audio == pytest.approx(float(batch.waveform_lengths.sum()) / 16000)
    assert parts.scheduler.last_epoch == 1 and all(p.grad is None for p in parts.model.parameters())
    assert parts.state.step == 0  # the trainer counts updates, not the updater


def test_parts_errors(corpus, tmp_path):
    cfg = from_dict(TrainConfig, tiny_train_config(corpus, data={"dev_dir": None}))
    parts = own_parts(corpus, cfg)
    with pytest.raises(ValueError, match=r"init, resume: expected None with parts passed in, found init='x\.pt'"):
        Trainer(cfg, tmp_path / "exp", parts=parts, init="x.pt")
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="optimizer: expected parameters of the model only, found 2 "):
        TrainerParts(model=parts.model, optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
                     scheduler=parts.scheduler, train_set=parts.train_set, sampler=parts.sampler,
                     tokenizer=parts.tokenizer)
