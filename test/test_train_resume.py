"""Exact resume after SIGKILL, and atomic checkpoint writes (the trainer run as a subprocess)."""

import json
import os
import signal
import subprocess

import pytest
import torch

from xtrans.testing.crash import command
from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config, write_yaml
from xtrans.train.checkpoint import CheckpointError, load_checkpoint

K = 8  # updates; the interrupted run dies after update K/2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    corpus = make_tiny_corpus(root / "data", num_train=16, num_dev=3)
    # multi-chunk draws, dropout, layer drop and gain perturbation make every random generator
    # matter; accum_grad=2 and K=8 cross an epoch boundary
    cfg = tiny_train_config(
        corpus,
        data={"gain_db": [-35.0, 10.0]},
        model={"encoder": {"num_layers": 2, "dropout": 0.1, "layer_drop": 0.3}},
        mask={"multi_chunk": {"chunk_sizes": [8, 16, 32], "left_context": 16}},
        optim={"accum_grad": 2},
        training={"max_updates": K},
        checkpoint={"save_interval_updates": 2},
    )
    conf = write_yaml(cfg, root / "conf.yaml")
    ref = root / "ref"
    run(conf, ref)
    return root, conf, ref


def run(conf, outdir, *extra, kill_in_save=None, kill_after_step=None, check=True):
    """``python -m xtrans.bin.train``, SIGKILLed at a chosen moment by :mod:`xtrans.testing.crash`."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--config", str(conf), "--outdir", str(outdir), "--init", "none", "--no_progress", *extra]
    proc = subprocess.run(command("xtrans.bin.train", args, kill_in_save=kill_in_save, kill_after_step=kill_after_step),
                          env=full_env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def steps(outdir):
    return [json.loads(line) for line in (outdir / "steps.jsonl").read_text().splitlines()]


def assert_same_weights(a, b):
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resume_after_sigkill_continues_exactly(setup):
    root, conf, ref = setup
    out = root / "killed"
    proc = run(conf, out, kill_after_step=K // 2, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert [s["step"] for s in steps(out)] == list(range(1, K // 2 + 1))
    run(conf, out, "--resume")
    got, want = steps(out), steps(ref)
    assert [s["step"] for s in got] == list(range(1, K + 1))
    for g, w in zip(got[K // 2:], want[K // 2:]):
        assert g == w  # loss, grad norm, learning rates, chunk sizes drawn: all identical
    assert len({c for s in want for c in s["chunk_sizes"]}) > 1
    assert want[-1]["epoch"] > 0  # the run crossed an epoch boundary
    assert_same_weights(out / f"ckpt_step{K}.pt", ref / f"ckpt_step{K}.pt")


def test_kill_during_save_keeps_previous_checkpoint(setup):
    root, conf, ref = setup
    out = root / "killed_in_save"
    # saves happen at updates 2, 4, ...: die half-way through writing the second one
    proc = run(conf, out, kill_in_save=2, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "ckpt_step4.pt.tmp").is_file() and not (out / "ckpt_step4.pt").exists()
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(out / "ckpt_step4.pt.tmp")
    assert (out / "latest.txt").read_text().strip() == "ckpt_step2.pt"
    assert load_checkpoint(out / "ckpt_step2.pt")["train_state"]["step"] == 2
    run(conf, out, "--resume")
    got = steps(out)
    assert [s["step"] for s in got] == [1, 2, 3, 4] + list(range(3, K + 1))  # 3, 4 redone after resume
    assert got[4:] == steps(ref)[2:]
    assert_same_weights(out / f"ckpt_step{K}.pt", ref / f"ckpt_step{K}.pt")
    assert not (out / "ckpt_step4.pt.tmp").exists() or load_checkpoint(out / "ckpt_step4.pt")


def test_keep_last_and_best(setup):
    root, conf, ref = setup
    kept = sorted(p.name for p in ref.glob("ckpt_step*.pt"))
    state = load_checkpoint(ref / f"ckpt_step{K}.pt")["train_state"]
    assert len(state["last"]) == 3 and state["last"][-1] == f"ckpt_step{K}.pt"
    assert len(state["best"]) == 2 and state["best"][0][0] <= state["best"][1][0]
    assert set(kept) == set(state["last"]) | {name for _, name in state["best"]}
    assert (ref / "best.pt").samefile(ref / state["best"][0][1]) or torch.equal(
        next(iter(load_checkpoint(ref / "best.pt")["model"].values())),
        next(iter(load_checkpoint(ref / state["best"][0][1])["model"].values())))
    assert (ref / "config.yaml").is_file() and (ref / "train.log").is_file()
    log = (ref / "train.log").read_text()
    assert "step 1 epoch 1 loss" in log and "audio_h/s" in log and "grad_norm" in log


def test_trainer_checkpoints_rebuild_their_model(setup):
    from xtrans.checkpoint import CHECKPOINT_VERSION, load_model

    _, _, ref = setup
    model, ckpt = load_model(ref / f"ckpt_step{K}.pt")
    assert ckpt["version"] == CHECKPOINT_VERSION and ckpt["arch"] == model.arch.to_dict()
    assert model.arch.encoder.num_layers == 2 and model.arch.encoder.layer_drop == 0.3  # the run's config
    assert model.arch.ctc_weight == 0.1 and model.arch.encoder.freeze_feature_extractor
    for k, v in ckpt["model"].items():
        assert torch.equal(model.state_dict()[k], v), k
