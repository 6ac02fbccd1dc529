"""The live server on an ONNX export (``--onnx DIR``): concurrent clients, batched onnxruntime calls,
and each final equal to OnnxSpeech2Text streaming on the same 16 kHz audio."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from xtrans.bin.export_onnx import main as export_main  # noqa: E402
from xtrans.data.resample import resample  # noqa: E402
from xtrans.onnx import OnnxSpeech2Text  # noqa: E402
from xtrans.serve.client import stream_audio  # noqa: E402
from xtrans.serve.engine import EndpointConfig  # noqa: E402
from xtrans.serve.onnx_backend import OnnxBackend  # noqa: E402
from xtrans.serve.server import BackgroundServer, ServerOptions  # noqa: E402
from xtrans.testing.serve_fixtures import digit_string, to_s16  # noqa: E402
from xtrans.testing.train_fixtures import save_decoding_checkpoint  # noqa: E402

SENTENCES = ["one two three", "four five six", "seven eight nine", "zero oh"]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_onnx")
    ckpt = save_decoding_checkpoint(root / "run", SENTENCES, seed=0, waveform_norm="cumulative")
    assert export_main(["--model", str(ckpt), "--outdir", str(root / "onnx"), "--chunk-ms", "320",
                        "--left-ms", "640", "--sinks", "2"]) == 0
    return root / "onnx"


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_onnx_server_finals_equal_onnx_streaming(spoken_digits, export_dir, search):
    backend = OnnxBackend.from_directory(export_dir, search=search, num_threads=1)
    s2t = OnnxSpeech2Text(export_dir, search=search, num_threads=1)
    signals = [to_s16(digit_string(spoken_digits, 3 + k % 2, seed=60 + k)) for k in range(4)]
    rates = [8000, 16000, 8000, 16000]
    sent = [x if r == 8000 else to_s16(resample(torch.from_numpy(x), 8000, 16000).numpy())
            for x, r in zip(signals, rates)]
    refs = []
    for x, r in zip(sent, rates):
        session = s2t.stream()
        session.accept_waveform(x if r == 16000 else resample(torch.from_numpy(x), 8000, 16000).numpy())
        refs.append(session.finalize())
    assert sum(bool(r.tokens) for r in refs) >= 2
    options = ServerOptions(port=0, endpoint=EndpointConfig(None, None))
    with BackgroundServer(backend, options) as srv:
        async def clients():
            rng = random.Random(1)
            return await asyncio.gather(*[stream_audio(srv.url, x, r, "s16le",
                                                       piece_samples=iter(lambda: rng.randint(1, 2000), None))
                                          for x, r in zip(sent, rates)])

        results = asyncio.run(clients())
        assert srv.call(lambda: srv.server.engine.stats.max_batch) > 1
    for result, ref in zip(results, refs):
        final = result.finals[0]
        assert result.close_code == 1000
        assert (final["token_ids"], final["text"]) == (ref.tokens, ref.text)
        assert final["timestamps"] == [round(t, 6) for t in ref.timestamps]


def test_onnx_stack_and_split_round_trip(export_dir):
    from xtrans.search_core import split_search_states, stack_search_states

    for search in ("greedy", "beam"):
        s2t = OnnxSpeech2Text(export_dir, search=search, num_threads=1)
        frames = np.random.default_rng(0).standard_normal((3, 5, s2t.config["encoder_dim"])).astype(np.float32)
        whole = s2t.search.step(frames, s2t.search.init_state(3))
        parts = split_search_states(whole)
        alone = [s2t.search.step(frames[b:b + 1], s2t.search.init_state(1)) for b in range(3)]
        for part, one in zip(parts, alone):
            assert s2t.transcription(part).tokens == s2t.transcription(one).tokens
        again = split_search_states(stack_search_states(parts))
        assert [s2t.transcription(p).tokens for p in again] == [s2t.transcription(p).tokens for p in parts]


def test_cli_onnx_errors(tmp_path, capsys):
    from xtrans.bin.serve import main as serve_main

    assert serve_main(["--onnx", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert serve_main(["--onnx", str(tmp_path), "--device", "cuda"]) == 2
    assert "--device: not used with --onnx" in capsys.readouterr().err
