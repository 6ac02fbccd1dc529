"""Exact resume after SIGKILL with the whole augmentation pipeline on, in a DataLoader worker."""

import json
import os
import signal
import subprocess

import pytest
import torch

from xtrans.testing.crash import command
from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config, write_yaml
from xtrans.train.checkpoint import load_checkpoint

K = 6  # updates; the interrupted run dies after update K/2

PIPELINE = [  # every kind, each likely to apply: the audio of every update depends on all of them
    {"kind": "speed", "factors": [0.9, 1.0, 1.1], "prob": 0.5},
    {"kind": "reverb", "prob": 0.5, "rooms": 4, "rt60": [0.2, 0.8], "room_seed": 3},
    {"kind": "one_of", "prob": 0.9, "of": [
        {"kind": "generated_noise", "snr_db": [0.0, 20.0]},
        {"kind": "babble", "talkers": [1, 3], "snr_db": [5.0, 20.0]},
        {"kind": "noise", "scp": "NOISE_SCP", "snr_db": [0.0, 20.0]},
    ]},
    {"kind": "one_of", "prob": 0.7, "of": [{"kind": "eq"}, {"kind": "telephone"}, {"kind": "codec"}]},
    {"kind": "time_mask", "num_masks": 1, "prob": 0.5},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import numpy as np
    import soundfile as sf

    from xtrans.data.augment import generate_noise

    root = tmp_path_factory.mktemp("augment_resume")
    corpus = make_tiny_corpus(root / "data", num_train=12, num_dev=3)
    sf.write(root / "hum.wav", 0.1 * generate_noise("hum", 8000, np.random.default_rng(0)), 16000)
    (root / "noise.scp").write_text(f"hum {root / 'hum.wav'}\n")
    pipeline = json.loads(json.dumps(PIPELINE).replace("NOISE_SCP", str(root / "noise.scp")))
    cfg = tiny_train_config(
        corpus,
        data={"gain_db": [-35.0, 10.0], "augment": pipeline, "num_workers": 1},
        model={"encoder": {"num_layers": 2, "mask_prob": 0.3, "mask_length": 2, "mask_channel_prob": 0.2,
                           "mask_channel_length": 4}},
        training={"max_updates": K},
        checkpoint={"save_interval_updates": 1},
    )
    conf = write_yaml(cfg, root / "conf.yaml")
    ref = root / "ref"
    run(conf, ref)
    return root, conf, ref


def run(conf, outdir, *extra, kill_after_step=None, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--config", str(conf), "--outdir", str(outdir), "--init", "none", "--no_progress", *extra]
    proc = subprocess.run(command("xtrans.bin.train", args, kill_after_step=kill_after_step),
                          env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def steps(outdir):
    return [json.loads(line) for line in (outdir / "steps.jsonl").read_text().splitlines()]


def test_resume_with_the_whole_pipeline_continues_exactly(setup):
    root, conf, ref = setup
    out = root / "killed"
    proc = run(conf, out, kill_after_step=K // 2, check=False)
    assert proc.returncode == -signal.SIGKILL
    run(conf, out, "--resume")
    got, want = steps(out), steps(ref)
    assert [s["step"] for s in got] == list(range(1, K + 1))
    for g, w in zip(got[K // 2:], want[K // 2:]):
        assert g == w  # losses and gradient norms identical: the same audio, the same feature masks
    a, b = load_checkpoint(out / f"ckpt_step{K}.pt")["model"], load_checkpoint(ref / f"ckpt_step{K}.pt")["model"]
    assert "encoder.mask_emb" in a
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_resume_exactly(setup):
    """The demo trains in 2 gloo processes (asr.sh --train_nproc 2): a run resumed from one of their
    checkpoints continues as the uninterrupted run (both ranks' batches, draws and feature masks)."""
    root, conf, _ = setup
    whole, resumed = root / "ddp_whole", root / "ddp_resumed"
    keep = ("--set", f"checkpoint.keep_last={K}")  # the middle checkpoint stays
    run(conf, whole, "--nproc", "2", *keep)
    run(conf, resumed, "--nproc", "2", "--resume", str(whole / f"ckpt_step{K // 2}.pt"), *keep)
    got, want = steps(resumed), steps(whole)
    assert [s["step"] for s in got] == list(range(K // 2 + 1, K + 1))
    assert got == want[K // 2:]
    a, b = load_checkpoint(resumed / f"ckpt_step{K}.pt")["model"], load_checkpoint(whole / f"ckpt_step{K}.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
