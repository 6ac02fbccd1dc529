"""Learning-rate schedule, checkpoint averaging, dev WER, TensorBoard and the stage log."""

import math
import subprocess
import sys

import pytest
import torch

from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config, write_yaml
from xtrans.train.checkpoint import average_state_dicts, load_checkpoint
from xtrans.train.scheduler import WarmupDecayScheduler, lr_factor


def test_warmup_then_decay():
    kw = dict(warmup=4, total=12, min_ratio=0.1)
    assert [lr_factor(n, decay="cosine", **kw) for n in (1, 2, 4)] == [0.25, 0.5, 1.0]
    assert lr_factor(8, decay="cosine", **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(12, decay="cosine", **kw) == pytest.approx(0.1)
    assert lr_factor(100, decay="linear", **kw) == pytest.approx(0.1)
    assert lr_factor(16, decay="noam", **kw) == pytest.approx(math.sqrt(4 / 16))
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": 1.0}, {"params": [], "lr": 0.1}])
    sched = WarmupDecayScheduler(opt, warmup_updates=4, decay="cosine", total_updates=12, min_lr_ratio=0.1)
    seen = []
    for _ in range(12):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx([0.25, 0.025]) and seen[3] == pytest.approx([1.0, 0.1])
    again = WarmupDecayScheduler(opt, warmup_updates=4, decay="cosine", total_updates=12, min_lr_ratio=0.1)
    again.load_state_dict(sched.state_dict())
    assert again.last_epoch == 12
    with pytest.raises(ValueError, match="total_updates: decay 'cosine' needs an end"):
        WarmupDecayScheduler(opt, warmup_updates=4, decay="cosine")
    with pytest.raises(ValueError, match="decay: expected one of"):
        WarmupDecayScheduler(opt, warmup_updates=4, decay="step")


def test_average_state_dicts():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(1)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(2)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 2
    with pytest.raises(ValueError, match=r"state_dicts\[1\]: keys differ"):
        average_state_dicts([a, {"w": a["w"]}])


def test_run_with_wer_tensorboard_stage_log_and_averaging(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "data", num_train=8, num_dev=2)
    cfg = tiny_train_config(corpus, training={"max_updates": 3},
                            checkpoint={"save_interval_updates": 1, "valid_interval_updates": 1,
                                        "best_metric": "dev_wer", "average": 2},
                            logging={"tensorboard": True})
    conf = write_yaml(cfg, tmp_path / "conf.yaml")
    out = tmp_path / "stage2" / "2a"
    stage_log = tmp_path / "stage2" / "train.log"
    proc = subprocess.run([sys.executable, "-m", "xtrans.bin.train", "--config", str(conf), "--outdir", str(out),
                           "--stage_log", str(stage_log), "--no_progress"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = stage_log.read_text()
    assert "[2a]" in log and "step 3 epoch" in log and "dev_wer" in log
    assert log.splitlines()[-1] in (out / "train.log").read_text()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    best = load_checkpoint(out / "ckpt_step3.pt")["train_state"]["best"]
    assert len(best) == 2 and all(0.0 <= score for score, _ in best)
    avg = load_checkpoint(out / "average.pt")
    assert avg["averaged_from"] == [str(out / name) for _, name in best]
    # the CLI gives the same average
    proc = subprocess.run([sys.executable, "-m", "xtrans.bin.average_checkpoints", "--outdir", str(out),
                           "--best", "2", "--out", str(tmp_path / "avg.pt")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    again = load_checkpoint(tmp_path / "avg.pt")["model"]
    assert all(torch.equal(v, avg["model"][k]) for k, v in again.items())


def test_saving_best_twice_leaves_no_temporary(tmp_path):
    """Re-linking best.pt to the file it already is (two hard links of one inode: POSIX rename
    does nothing) must not leave best.pt.tmp behind; neither may a failed save."""
    import os

    from xtrans.train.checkpoint import atomic_save, atomic_write_text, link_or_copy

    atomic_save({"w": torch.ones(2)}, tmp_path / "ckpt_step2.pt")
    for _ in range(2):
        link_or_copy(tmp_path / "ckpt_step2.pt", tmp_path / "best.pt")
        assert os.path.samefile(tmp_path / "best.pt", tmp_path / "ckpt_step2.pt")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "ckpt_step2.pt"]
    os.link(tmp_path / "best.pt", tmp_path / "best.pt.tmp")  # left by an earlier version of link_or_copy
    link_or_copy(tmp_path / "ckpt_step2.pt", tmp_path / "best.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "ckpt_step2.pt"]
    atomic_save({"w": torch.zeros(2)}, tmp_path / "ckpt_step4.pt")
    link_or_copy(tmp_path / "ckpt_step4.pt", tmp_path / "best.pt")
    assert torch.equal(load_checkpoint(tmp_path / "best.pt")["w"], torch.zeros(2))
    assert load_checkpoint(tmp_path / "ckpt_step2.pt")["w"].sum() == 2  # the old one is untouched
    atomic_write_text("ckpt_step4.pt\n", tmp_path / "latest.txt")
    with pytest.raises(Exception, match="pickle"):
        atomic_save({"w": lambda: 0}, tmp_path / "ckpt_step6.pt")  # cannot be pickled
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "ckpt_step6.pt").exists()
