"""tools/gpu_check.sh keeps working: its --dry-run (CPU, tiny sizes) writes every promised JSON file."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def numbers(value):
    """Every int/float inside a JSON value (booleans excluded)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    pytest.importorskip("transformers")  # bench/encoder.py compares against Hugging Face
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return out, proc


@pytest.mark.slow
def test_dry_run_writes_every_promised_json(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["dry_run"]
    promised = {"env.json", "cuda_tests.json", "train.json", "rnnt_loss_transducer.json", "encoder.json",
                "train_step.json", "train_step_400s.json"}
    assert {s["json"] for s in summary["steps"]} == promised
    for name in promised:
        data = json.loads((out / name).read_text())
        values = numbers(data)
        assert values and all(math.isfinite(v) for v in values), name


@pytest.mark.slow
def test_dry_run_measures_what_it_claims(dry_run):
    out, _ = dry_run
    train = json.loads((out / "train.json").read_text())
    assert train["loss_fell"] and train["last_loss"] < 0.9 * train["first_loss"]
    assert train["updates"] == len(train["losses"]) > 0
    tests = json.loads((out / "cuda_tests.json").read_text())
    assert tests["selected"] >= 1 and tests["failed"] == tests["error"] == 0
    step = json.loads((out / "train_step.json").read_text())
    assert {(r["loss"], r["attention"]) for r in step["updates"]} >= {("full", "dense"), ("pruned", "dense")}
    for row in step["updates"]:
        assert "error" not in row, row
        assert row["update_ms"] > 0 and row["peak_mib"] >= row["model_mib"] > 0
    assert any(r["measured"] for r in step["head"]) and any(not r["measured"] for r in step["head"])
    assert all(r["extrapolated_mib"] > 0 for r in step["head"] if not r["measured"])
    rnnt = json.loads((out / "rnnt_loss_transducer.json").read_text())
    assert {r["impl"] for r in rnnt["results"]} == {"full", "pruned"}
    assert all(r["fwd_bwd_ms"] > 0 for r in rnnt["results"])


def test_unknown_option_is_refused(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--dryrun"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown option --dryrun" in proc.stderr
