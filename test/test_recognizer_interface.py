"""One recognizer interface and one feed rule (issue 21).

- xtrans.frames.StreamGeometry: the feed rule (80 priming samples, then 320 C per call, a last
  partial call) against the frame geometry it is derived from;
- Speech2Text and OnnxSpeech2Text both satisfy xtrans.transcription.Recognizer (and their
  sessions RecognizerSession), share the session bookkeeping, and give the same partial and final
  texts on the same speech; the data-directory loop decodes both through the same code to the
  same text;
- the layering the refactoring keeps: no command-line module imports another, the server's
  engine and ONNX backend import no torch.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from xtrans.frames import (FRAME_STRIDE, PRIME_SAMPLES, RECEPTIVE_FIELD, StreamGeometry, num_frames,
                           samples_for_chunk)
from xtrans.transcription import Recognizer, RecognizerSession, SearchTranscriber, SessionResults

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["one two three", "four five six", "seven eight nine", "zero oh"]


# ---------------------------------------------------------------------------- the feed rule

def test_geometry_of_xlsr():
    g = StreamGeometry(16)
    assert (g.stride, g.receptive_field, g.prime_samples, g.samples_per_call) == (320, 400, 80, 5120)
    assert PRIME_SAMPLES == RECEPTIVE_FIELD - FRAME_STRIDE == g.prime_samples
    assert [g.call_size(fed) for fed in (0, 80, 80 + 5120)] == [80, 5120, 5120]
    assert all(g.samples_for_chunk(c) == samples_for_chunk(c, 16) for c in range(5))


@pytest.mark.parametrize("C", [1, 4, 16])
def test_every_call_after_priming_completes_exactly_one_chunk(C):
    g = StreamGeometry(C)
    fed = 0
    for k, size in enumerate(g.calls(0, g.samples_for_chunk(9) + 100)):
        fed += size
        assert num_frames(fed) == k * C  # chunk k - 1 is complete ...
        assert num_frames(fed - 1) == max(0, k * C - 1)  # ... at the last sample of call k, not before
    assert fed == g.samples_for_chunk(9)


@pytest.mark.parametrize("C", [2, 16])
def test_the_last_partial_call_completes_its_frames(C):
    g = StreamGeometry(C)
    fed = g.prime_samples + 3 * g.samples_per_call
    for q in range(0, g.samples_per_call, 97):
        sizes = g.calls(fed, q, end=True)
        if q < g.stride:  # it would complete no frame
            assert sizes == [] and g.calls(fed, q) == []
        else:
            assert sizes == [q] and g.calls(fed, q) == []
            assert num_frames(fed + q) - num_frames(fed) == q // g.stride
    assert g.calls(0, 79, end=True) == [] and g.calls(0, 80 + 319, end=True) == [80]


def test_calls_of_pieces_equal_calls_of_the_whole():
    """However the audio arrives, the calls it makes are the same."""
    g = StreamGeometry(4)
    rng = random.Random(0)
    total = 3 * g.samples_per_call + 1000
    fed, waiting, calls = 0, 0, []
    left = total
    while left:
        piece = min(left, rng.randint(1, 3000))
        left -= piece
        waiting += piece
        for size in g.calls(fed, waiting, end=left == 0):
            calls.append(size)
            fed, waiting = fed + size, waiting - size
    assert calls == g.calls(0, total, end=True)


def test_geometry_without_priming_and_of_a_frontend():
    g = StreamGeometry(3, stride=100, receptive_field=100)
    assert g.prime_samples == 0 and g.primed(0) and g.calls(0, 650, end=True) == [300, 300]
    assert g.calls(0, 750, end=True) == [300, 300, 150]

    class Frontend:
        stride, receptive_field = 320, 400

    assert StreamGeometry.of_frontend(Frontend(), 8) == StreamGeometry(8)
    assert g.num_frames(250) == 2 == num_frames(250, stride=100, receptive_field=100)


@pytest.mark.parametrize("kwargs, match", [({"chunk_frames": 0}, "chunk_frames: expected an integer >= 1, found 0"),
                                           ({"chunk_frames": 2, "stride": 0}, "stride: expected an integer >= 1"),
                                           ({"chunk_frames": 2, "receptive_field": 300},
                                            "receptive_field: expected an integer >= 320, found 300")])
def test_geometry_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StreamGeometry(**kwargs)


def test_the_encoder_and_the_export_use_the_rule(recognizers):
    s2t, onnx = recognizers
    from xtrans.onnx.config import stream_geometry

    g = StreamGeometry.of_frontend(s2t.model.encoder.feature_extractor, 16)
    assert g == StreamGeometry(16) == onnx.geometry == stream_geometry(onnx.config)
    assert (onnx.config["prime_samples"], onnx.config["samples_per_call"]) == (g.prime_samples, g.samples_per_call)


# ---------------------------------------------------------------------------- one interface

@pytest.fixture(scope="module")
def recognizers(tmp_path_factory):
    """A Speech2Text (chunk 320 ms, left 640 ms, 2 sinks) and the OnnxSpeech2Text of its export."""
    from xtrans.export.directory import export
    from xtrans.inference import Speech2Text
    from xtrans.masks import StreamingConfig
    from xtrans.onnx import OnnxSpeech2Text
    from xtrans.testing.train_fixtures import save_decoding_checkpoint

    root = tmp_path_factory.mktemp("interface")
    ckpt = save_decoding_checkpoint(root / "run", SENTENCES, seed=0, waveform_norm="cumulative")
    export(ckpt, root / "onnx", StreamingConfig.from_ms(320, 640, 2))
    return (Speech2Text.from_checkpoint(ckpt, chunk_ms=320, left_ms=640, sinks=2),
            OnnxSpeech2Text(root / "onnx", num_threads=1))


def test_both_recognizers_satisfy_the_interface(recognizers):
    for recognizer in recognizers:
        assert isinstance(recognizer, Recognizer) and isinstance(recognizer, SearchTranscriber)
        session = recognizer.stream()
        assert isinstance(session, RecognizerSession) and isinstance(session, SessionResults)
        assert (session.chunk_frames, session.num_frames, session.finished, session.text) == (16, 0, False, "")
        for name in ("transcribe", "stream", "settings"):
            assert name in dir(recognizer)
        params = list(inspect.signature(session.accept_waveform).parameters)
        assert params[:2] == ["samples", "sample_rate"]
        # the bookkeeping is shared, not twinned
        assert type(recognizer).transcription is SearchTranscriber.transcription
        assert type(session).result is SessionResults.result
    settings = [r.settings() for r in recognizers]
    for key in ("device", "chunk_ms", "left_ms", "sinks", "search"):
        assert settings[0][key] == settings[1][key] or key == "device"
    assert (settings[0]["chunk_ms"], settings[0]["left_ms"], settings[0]["sinks"]) == (320, 640, 2)


def test_both_sessions_give_the_same_partials_and_final(recognizers, spoken_digits):
    from xtrans.testing.serve_fixtures import digit_string

    wave = digit_string(spoken_digits, 3, seed=5)  # 8 kHz: both sessions resample as they stream
    rng = random.Random(1)
    cuts = sorted(rng.sample(range(1, len(wave)), 12))
    pieces = [wave[a:b] for a, b in zip([0] + cuts, cuts + [len(wave)])]
    sessions = [r.stream() for r in recognizers]
    for piece in pieces:
        partials = [s.accept_waveform(piece, 8000) for s in sessions]
        assert partials[0] == partials[1] and sessions[0].num_frames == sessions[1].num_frames
    finals = [s.finalize() for s in sessions]
    assert finals[0].tokens == finals[1].tokens and finals[0].text == finals[1].text
    assert finals[0].timestamps == finals[1].timestamps
    for s in sessions:
        with pytest.raises(ValueError, match=rf"session: already finalized; open a new one with "
                                             rf"{type(s.s2t).__name__}\.stream\(\)"):
            s.finalize()


def test_decoding_a_data_dir_runs_both_through_the_same_code(recognizers, spoken_digits, monkeypatch):
    import xtrans.decoding.data_dir as data_dir
    from xtrans.data.kaldi_dir import DataDir, read_data_dir

    full = read_data_dir(spoken_digits)
    utts = sorted(full.utt_ids)[::7][:6]
    data = DataDir(wav_scp={u: full.wav_scp[u] for u in utts})
    seen = []
    original = data_dir.decode_streaming

    def spy(recognizer, *args, **kwargs):
        seen.append(type(recognizer).__name__)
        return original(recognizer, *args, **kwargs)

    monkeypatch.setattr(data_dir, "decode_streaming", spy)
    options = argparse.Namespace(mode="streaming", piece_ms=None)
    records = [data_dir.run(options, data, r, progress=False) for r in recognizers]
    assert seen == ["Speech2Text"] * len(utts) + ["OnnxSpeech2Text"] * len(utts)
    assert all("error" not in r for recs in records for r in recs)
    assert [r["text"] for r in records[0]] == [r["text"] for r in records[1]]
    assert any(r["text"] for r in records[0])  # not vacuous
    assert [len(r["chunk_ms"]) for r in records[0]] == [len(r["chunk_ms"]) for r in records[1]]


def test_bad_audio_fails_alike_for_both(recognizers, tmp_path):
    from xtrans.decoding.data_dir import decode_utterance

    soundfile.write(tmp_path / "short.wav", np.full(300, 0.1), 16000)
    options = argparse.Namespace(mode="streaming", piece_ms=None)
    errors = {decode_utterance(r, options, "u", str(tmp_path / "short.wav"), None)["error"] for r in recognizers}
    assert len(errors) == 1 and "shorter than one encoder frame" in errors.pop()


def test_recognizer_spec_loads_either_and_refuses_mixtures(recognizers, tmp_path):
    from xtrans.decoding.load import RecognizerSpec

    onnx = recognizers[1]
    loaded = RecognizerSpec(onnx=str(onnx.directory), search="beam", beam=2, num_threads=1).load()
    assert type(loaded) is type(onnx) and loaded.search_name == "beam"
    assert RecognizerSpec.from_options(argparse.Namespace(onnx="x", model=None, nj=3)) == RecognizerSpec(onnx="x")
    with pytest.raises(ValueError, match="model/onnx: expected exactly one of a checkpoint and an ONNX export"):
        RecognizerSpec()
    with pytest.raises(ValueError, match="model/onnx: expected exactly one"):
        RecognizerSpec(model="a.pt", onnx="dir")
    with pytest.raises(ValueError, match=r"onnx: the export fixes its tokens, streaming rule and device; "
                                         r"found \['chunk_ms', 'sinks'\]"):
        RecognizerSpec(onnx="dir", chunk_ms=640, sinks=4)
    with pytest.raises(ValueError, match="onnx_encoder: expected an ONNX export"):
        RecognizerSpec(model="a.pt", onnx_encoder="encoder.onnx")


def test_backend_for_either_recognizer(recognizers):
    from xtrans.serve import backend_for
    from xtrans.serve.backend import TorchBackend
    from xtrans.serve.onnx_backend import OnnxBackend

    torch_backend, onnx_backend = (backend_for(r) for r in recognizers)
    assert isinstance(torch_backend, TorchBackend) and isinstance(onnx_backend, OnnxBackend)
    assert torch_backend.geometry == onnx_backend.geometry == StreamGeometry(16)
    assert (onnx_backend.chunk_samples, onnx_backend.extra_samples, onnx_backend.frame_samples) == (5120, 80, 320)
    with pytest.raises(TypeError, match="recognizer: expected a Speech2Text or an OnnxSpeech2Text, found object"):
        backend_for(object())


# ---------------------------------------------------------------------------- layering

def test_no_command_line_module_imports_another():
    for path in sorted((ROOT / "xtrans" / "bin").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n == "xtrans.bin" or n.startswith("xtrans.bin.") for n in names), \
                f"{path.name} imports {names}"


def test_the_onnx_server_path_is_torch_free():
    code = ("import sys, xtrans.frames, xtrans.transcription, xtrans.serve.engine, xtrans.serve.onnx_backend, "
            "xtrans.decoding.load, xtrans.bin.serve; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
