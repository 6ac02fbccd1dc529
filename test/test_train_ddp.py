"""DistributedDataParallel on CPU (gloo, 2 processes) through the CLI equals 1 process.

Loss normalisation: the loss of an update is the mean over every utterance of the update on
all ranks (each rank scales its summed loss by world_size / total utterances; DDP averages
gradients). So 2 ranks with one micro-batch each equal 1 process with ``accum_grad=2`` on the
same two batches (the sampler gives rank r batches r, r+2, ...).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config, write_yaml
from xtrans.train.checkpoint import load_checkpoint


def run(conf, outdir, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "xtrans.bin.train", "--config", str(conf), "--outdir", str(outdir),
                           "--no_progress", *extra], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_two_processes_equal_one_process_on_the_union(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "data", num_train=12, num_dev=2)
    # the encoder is frozen for update 1 (DDP with find_unused_parameters), trained in update 2
    # 12 utterances in batches of 2: 6 batches, so updates 1 and 2 use batches 0-3 in both runs
    common = dict(data={"max_batch_size": 2}, training={"max_updates": 2, "freeze_encoder_updates": 1},
                  checkpoint={"save_interval_updates": 1})
    conf2 = write_yaml(tiny_train_config(corpus, **common), tmp_path / "ddp.yaml")
    conf1 = write_yaml(tiny_train_config(corpus, optim={"accum_grad": 2}, **common), tmp_path / "one.yaml")
    run(conf2, tmp_path / "ddp", "--nproc", "2")
    run(conf1, tmp_path / "one")
    for step in (1, 2):
        a = load_checkpoint(tmp_path / "ddp" / f"ckpt_step{step}.pt")["model"]
        b = load_checkpoint(tmp_path / "one" / f"ckpt_step{step}.pt")["model"]
        assert list(a) == list(b)
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=f"update {step}: {k}")
    s2 = [json.loads(x) for x in (tmp_path / "ddp" / "steps.jsonl").read_text().splitlines()]
    s1 = [json.loads(x) for x in (tmp_path / "one" / "steps.jsonl").read_text().splitlines()]
    assert [s["utts"] for s in s2] == [s["utts"] for s in s1]
    assert s2[0]["loss"] == pytest.approx(s1[0]["loss"], rel=1e-5)
    assert s1[0]["encoder_frozen"] and not s1[1]["encoder_frozen"]
    e1 = load_checkpoint(tmp_path / "one" / "ckpt_step1.pt")["model"]
    e2 = load_checkpoint(tmp_path / "one" / "ckpt_step2.pt")["model"]
    key = "encoder.layers.0.attention.q_proj.weight"
    assert not torch.equal(e1[key], e2[key])  # trained once unfrozen
    # rank 0 writes the logs; both ranks' random states are in the checkpoint
    assert len(load_checkpoint(tmp_path / "ddp" / "ckpt_step2.pt")["train_state"]["rng"]) == 2
