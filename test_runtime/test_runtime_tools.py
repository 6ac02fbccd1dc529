"""The deployment's command lines in processes where ``import torch`` fails
(``python -m xtrans.testing.torch_free``): ``transcribe``, ``decode`` and ``serve`` with ``--onnx``
and the client import no torch, with ``--help`` and on the export, and give the PyTorch
recognizer's results; a checkpoint there is refused with a message that says what to install."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from xtrans.testing.runtime_fixtures import SEARCHES
from xtrans.testing.torch_free import LEAKED

TOOLS = ("xtrans.bin.transcribe", "xtrans.bin.decode", "xtrans.bin.serve", "xtrans.serve.client")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torch_free(module, *args, cwd):
    """``python -m module *args`` with torch refused; run in ``cwd`` (not the checkout, so that an
    installed xtrans is the one imported)."""
    return subprocess.run([sys.executable, "-m", "xtrans.testing.torch_free", module, *map(str, args)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=300)


def check_torch_free(proc):
    assert proc.returncode != LEAKED, proc.stderr
    assert "torch_free: refused" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("module", TOOLS)
def test_help(module, tmp_path):
    proc = torch_free(module, "--help", cwd=tmp_path)
    check_torch_free(proc)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m {module}")


@pytest.mark.parametrize("search", SEARCHES)
def test_transcribe(runtime_refs, search, tmp_path):
    files = list(runtime_refs.audio.values())
    proc = torch_free("xtrans.bin.transcribe", "--onnx", runtime_refs.onnx, "--search", search, "--jsonl",
                      "--timestamps", "--num-threads", "1", *files, cwd=tmp_path)
    check_torch_free(proc)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(f) for f in files]
    for utt, record in zip(runtime_refs.audio, records):
        ref = runtime_refs.results[search][utt]
        assert (record["tokens"], record["text"]) == (ref["tokens"], ref["text"]), utt
        assert [round(t, 6) for t in record["timestamps"]] == ref["timestamps"], utt


def test_decode(runtime_refs, tmp_path):
    out = tmp_path / "decode"
    proc = torch_free("xtrans.bin.decode", "--onnx", runtime_refs.onnx, "--data", runtime_refs.data, "--outdir", out,
                      "--mode", "streaming", "--search", "beam", "--num_threads", "1", cwd=tmp_path)
    check_torch_free(proc)
    assert proc.returncode == 0, proc.stderr
    hyps = dict((line.split(maxsplit=1) + [""])[:2] for line in (out / "text").read_text().splitlines())
    assert {utt: words.split() for utt, words in hyps.items()} == {
        utt: ref["text"].split() for utt, ref in runtime_refs.results["beam"].items()}
    info = json.loads((out / "decode.json").read_text())
    assert (info["failed"], info["num_utts"]) == ({}, len(runtime_refs.audio))


def test_serve_and_client(runtime_refs, tmp_path):
    """One final per file (endpointing off) with the PyTorch text; the server stops cleanly on SIGTERM."""
    server = subprocess.Popen([sys.executable, "-m", "xtrans.testing.torch_free", "xtrans.bin.serve", "--onnx",
                               str(runtime_refs.onnx), "--port", "0", "--endpoint-silence-ms", "none",
                               "--max-segment-s", "none", "--num-threads", "2", "--log-level", "WARNING"],
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert first.startswith("listening on ws://"), first + server.stderr.read()
        files = list(runtime_refs.audio.values())
        proc = torch_free("xtrans.serve.client", first.split()[-1], *files, cwd=tmp_path)
    finally:
        server.send_signal(signal.SIGTERM)
        _, server_err = server.communicate(timeout=60)
    check_torch_free(proc)
    assert proc.returncode == 0, proc.stderr
    assert server.returncode == 0, server_err
    assert "torch_free" not in server_err, server_err
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [(Path(f), text) for f, _, text in lines] == [
        (path, runtime_refs.results["greedy"][utt]["text"]) for utt, path in runtime_refs.audio.items()]


@pytest.mark.parametrize("module, args", [
    ("xtrans.bin.transcribe", ["a.wav"]),
    ("xtrans.bin.decode", ["--data", "data", "--outdir", "out"]),
    ("xtrans.bin.serve", ["--port", "0"]),
])
def test_checkpoint_without_torch(module, args, tmp_path):
    (tmp_path / "best.pt").write_bytes(b"")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wav.scp").write_text("a a.wav\n")
    proc = torch_free(module, "--model", tmp_path / "best.pt", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "needs PyTorch" in proc.stderr and "pip install 'xtrans[train]'" in proc.stderr, proc.stderr
