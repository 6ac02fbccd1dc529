"""ONNX export of the streaming transducer: onnxruntime equals the PyTorch streaming encoder.

The exported encoder (``encoder_start.onnx`` + one ``encoder.onnx`` call per chunk) is run on
speech (the tests' spoken digits, :mod:`xtrans.testing.speech_fixtures`) and compared frame by
frame with :class:`StreamingEncoder` fed the same audio in random pieces; decoded tokens of the
onnxruntime recognizer equal those of ``Speech2Text.stream()``; bad export requests fail before
anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

onnxruntime = pytest.importorskip("onnxruntime")

from xtrans.bin.export_onnx import main as export_main  # noqa: E402
from xtrans.checkpoint import load_model, model_checkpoint  # noqa: E402
from xtrans.export.encoder import export_encoder  # noqa: E402
from xtrans.masks import StreamingConfig  # noqa: E402
from xtrans.models import build_model  # noqa: E402
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, preset_kwargs, tiny  # noqa: E402
from xtrans.streaming import StreamingEncoder  # noqa: E402
from xtrans.testing.train_fixtures import save_decoding_checkpoint  # noqa: E402

TOL = 1e-4


def mini(**overrides):
    return Wav2Vec2Encoder(**preset_kwargs("mini", **overrides))


SENTENCES = ["one two three", "four five six", "seven eight nine", "zero oh"]


def speech_waves(root: Path, n: int, seed: int = 0):
    """``n`` random recordings of the FSDD-shaped folder ``root``, float32 at 16 kHz (8 kHz upsampled)."""
    from xtrans.data.resample import resample
    lines = (root / "wav.scp").read_text().split("\n")
    paths = [root / line.split()[1] for line in lines if line.strip()]
    random.Random(seed).shuffle(paths)
    out = []
    for path in paths[:n]:
        wave, rate = soundfile.read(path, dtype="float32")
        out.append(resample(torch.from_numpy(wave), rate, 16000).numpy() if rate != 16000 else wave)
    return out


def run_exported(outdir: Path, info: dict, waves):
    """The exported encoder over a batch of streams (zero-padded to the longest): valid frames per stream."""
    start = onnxruntime.InferenceSession(str(outdir / "encoder_start.onnx"))
    enc = onnxruntime.InferenceSession(str(outdir / "encoder.onnx"))
    P, per = info["prime_samples"], info["samples_per_call"]
    lengths = [len(w) for w in waves]
    x = np.zeros((len(waves), max(lengths)), np.float32)
    for b, w in enumerate(waves):
        x[b, :len(w)] = w
    states = start.run(None, {"samples": x[:, :P]})
    outs = [[] for _ in waves]
    pos = P
    while pos < x.shape[1]:
        piece = x[:, pos:pos + per]
        valid = np.array([min(max(n - pos, 0), per) for n in lengths], np.int64)
        feed = {"samples": np.pad(piece, ((0, 0), (0, per - piece.shape[1]))), "num_samples": valid,
                **dict(zip(info["state_names"], states))}
        frames, counts, *states = enc.run(None, feed)
        for b in range(len(waves)):
            outs[b].append(frames[b, :counts[b]])
        pos += per
    return [np.concatenate(o) for o in outs]


def run_streaming(encoder, cfg, waves, seed: int):
    """StreamingEncoder on each stream alone, fed in random pieces: its frames per stream."""
    rng = random.Random(seed)
    out = []
    for w in waves:
        streamer = StreamingEncoder(encoder, cfg)
        state = streamer.init_state(1)
        frames, pos = [], 0
        wave = torch.from_numpy(w)[None]
        while pos < wave.shape[1]:
            n = rng.randint(1, 6000)
            y, counts, state = streamer.forward_chunk(wave[:, pos:pos + n], state)
            frames.append(y[0, :counts[0]])
            pos += n
        y, counts, state = streamer.finalize(state)
        frames.append(y[0, :counts[0]])
        out.append(torch.cat(frames).numpy())
    return out


@pytest.mark.parametrize("build,kwargs,cfg", [
    (tiny, dict(pos_conv="chunk"), StreamingConfig(8, 16, 2)),
    (tiny, dict(pos_conv="causal", extractor_mode="cumulative_norm", layer_norm_first=False), StreamingConfig(4, 8, 0)),
    (mini, dict(extractor_mode="batch_norm"), StreamingConfig(32, 32, 4)),
    # WavLM's gated relative position bias (sinks at their absolute frames), data2vec's positional conv stack
    (tiny, dict(pos_conv="chunk", rel_pos_buckets=32, rel_pos_max_distance=64, rel_pos_gated=True),
     StreamingConfig(8, 16, 2)),
    (tiny, dict(pos_conv="chunk", pos_conv_layers=3, pos_conv_norm="layer", pos_conv_kernel=5,
                layer_norm_first=False), StreamingConfig(4, 8, 3)),
])
def test_exported_encoder_equals_streaming_encoder_on_speech(spoken_digits, tmp_path, build, kwargs, cfg):
    torch.manual_seed(0)
    encoder = build(**kwargs).eval()
    info = export_encoder(encoder, cfg, tmp_path)
    waves = speech_waves(spoken_digits, 3)
    with torch.no_grad():
        ref = run_streaming(encoder, cfg, waves, seed=1)
    got = run_exported(tmp_path, info, waves)  # one batch of 3 streams of different lengths
    for r, g in zip(ref, got):
        assert r.shape == g.shape and r.shape[0] > 0
        assert np.abs(r - g).max() <= TOL


def test_state_names_and_shapes_are_fixed(tmp_path):
    encoder = tiny(pos_conv="chunk").eval()
    info = export_encoder(encoder, StreamingConfig(8, 16, 2), tmp_path)
    session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"))
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    assert list(inputs)[:2] == ["samples", "num_samples"] and inputs["samples"] == ["B", 8 * 320]
    assert list(inputs)[2:] == info["state_names"]
    assert outputs == ["frames", "num_frames"] + ["new_" + n for n in info["state_names"]]
    for name, shape in zip(info["state_names"], info["state_shapes"]):
        assert inputs[name][1:] == shape[1:]
    H, Dh = 4, 24
    assert info["state_shapes"][info["state_names"].index("state.layers.0.left_keys")] == ["B", H, 16, Dh]
    assert info["state_shapes"][info["state_names"].index("state.layers.0.sink_keys")] == ["B", H, 2, Dh]


@pytest.mark.parametrize("kwargs,cfg,match", [
    (dict(extractor_mode="group_norm", pos_conv="chunk"), StreamingConfig(8, 16, 0), "group_norm"),
    (dict(pos_conv="full"), StreamingConfig(8, 16, 0), "pos_conv='full'"),
    (dict(pos_conv="chunk"), StreamingConfig(8, None, 0), "bounded left context"),
    (dict(pos_conv="chunk"), StreamingConfig(None, None, 0), "full attention"),
])
def test_unexportable_encoders_are_refused_before_writing(tmp_path, kwargs, cfg, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        export_encoder(tiny(**kwargs).eval(), cfg, out)
    assert not out.exists()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    return save_decoding_checkpoint(run, SENTENCES, seed=0, waveform_norm="cumulative")


def test_cli_refuses_bad_requests_before_writing(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert export_main(["--model", str(checkpoint), "--outdir", str(out), "--chunk-ms", "630",
                        "--left-ms", "640"]) == 2
    assert "multiple of 20" in capsys.readouterr().err
    not_a_model = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, not_a_model)
    assert export_main(["--model", str(not_a_model), "--outdir", str(out), "--chunk-ms", "640",
                        "--left-ms", "640"]) == 1
    assert "not a transducer checkpoint" in capsys.readouterr().err
    group = tmp_path / "group.pt"
    model, _ = load_model(checkpoint)
    arch = model.arch
    arch = dataclasses.replace(arch, encoder=dataclasses.replace(arch.encoder, extractor_mode="group_norm"))
    torch.save(model_checkpoint(build_model(arch)), group)
    assert export_main(["--model", str(group), "--outdir", str(out), "--chunk-ms", "640",
                        "--left-ms", "640"]) == 1
    assert "group_norm" in capsys.readouterr().err
    assert not out.exists()


def test_cli_writes_the_export_directory(checkpoint, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert export_main(["--model", str(checkpoint), "--outdir", str(out), "--chunk-ms", "320",
                        "--left-ms", "640", "--sinks", "2", "--int8"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"encoder_start.onnx", "encoder.onnx", "encoder.int8.onnx", "predictor.onnx", "joiner.onnx",
            "tokens.txt", "config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["chunk_ms"] == 320 and config["left_ms"] == 640 and config["sinks"] == 2
    assert config["samples_per_call"] == 16 * 320 and config["encoder_file"] == "encoder.int8.onnx"
    from xtrans.onnx.config import read_metadata
    assert read_metadata(out / "encoder.onnx")["chunk_frames"] == 16
    assert "exported" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny transducer trained for a few updates here (the trainer's checkpoint format), and its corpus."""
    from xtrans.config import from_dict
    from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_train_config
    from xtrans.train.config import TrainConfig
    from xtrans.train.trainer import Trainer

    root = tmp_path_factory.mktemp("trained")
    corpus = make_tiny_corpus(root / "data", num_train=8, num_dev=4)
    cfg = from_dict(TrainConfig, tiny_train_config(corpus, training={"max_updates": 6}))
    state = Trainer(cfg, root / "exp").fit()
    return root / "exp" / f"ckpt_step{state.step}.pt", corpus


def decode_tokens(session, wave, seed):
    rng = random.Random(seed)
    pos = 0
    while pos < len(wave):
        n = rng.randint(1, 7000)
        session.accept_waveform(wave[pos:pos + n], 16000)
        pos += n
    return session.finalize().tokens


@pytest.mark.parametrize("which", ["random", "trained"])
def test_onnx_recognizer_decodes_like_speech2text_on_speech(spoken_digits, checkpoint, trained, tmp_path, which):
    from xtrans.inference import Speech2Text
    from xtrans.onnx import OnnxSpeech2Text

    ckpt = checkpoint if which == "random" else trained[0]
    out = tmp_path / "onnx"
    assert export_main(["--model", str(ckpt), "--outdir", str(out), "--chunk-ms", "320", "--left-ms", "640",
                        "--sinks", "2", "--int8"]) == 0
    # the encoder frames of this checkpoint's export on speech, batch of 3
    config = json.loads((out / "config.json").read_text())
    model, _ = load_model(ckpt)
    waves = speech_waves(spoken_digits, 3, seed=which == "trained")
    cfg = StreamingConfig(16, 32, 2)
    with torch.no_grad():
        ref = run_streaming(model.encoder.eval(), cfg, waves, seed=2)
    for r, g in zip(ref, run_exported(out, config, waves)):
        assert r.shape == g.shape and np.abs(r - g).max() <= TOL
    emitted = 0
    for search in ("greedy", "beam"):
        s2t = Speech2Text.from_checkpoint(ckpt, chunk_ms=320, left_ms=640, sinks=2, search=search)
        onnx = OnnxSpeech2Text(out, search=search, encoder_file="encoder.onnx")
        for i, wave in enumerate(waves):
            want = decode_tokens(s2t.stream(), wave, seed=i)
            assert decode_tokens(onnx.stream(), wave, seed=100 + i) == want
            emitted += len(want)
        int8 = OnnxSpeech2Text(out, search=search)  # config.json names the int8 encoder
        assert all(isinstance(int8.transcribe(w).text, str) for w in waves)
    if which == "random":
        assert emitted > 0  # the louder random joiner emits tokens: the comparison is not vacuous


def test_decode_cli_on_an_export_equals_the_checkpoint(checkpoint, trained, tmp_path):
    from xtrans.bin.decode import main as decode_main

    out = tmp_path / "onnx"
    assert export_main(["--model", str(checkpoint), "--outdir", str(out), "--chunk-ms", "320", "--left-ms", "640",
                        "--sinks", "2", "--int8"]) == 0
    data = str(trained[1].dev_dir)
    assert decode_main(["--model", str(checkpoint), "--data", data, "--outdir", str(tmp_path / "pt"),
                        "--mode", "streaming", "--chunk_ms", "320", "--left_ms", "640", "--sinks", "2",
                        "--search", "beam"]) == 0
    assert decode_main(["--onnx", str(out), "--onnx_encoder", "encoder.onnx", "--data", data,
                        "--outdir", str(tmp_path / "fp32"), "--mode", "streaming", "--search", "beam"]) == 0
    assert (tmp_path / "fp32" / "text").read_text() == (tmp_path / "pt" / "text").read_text()
    info = json.loads((tmp_path / "fp32" / "decode.json").read_text())
    assert info["onnx"] == str(out) and info["chunk_ms"] == 320 and info["left_ms"] == 640 and info["sinks"] == 2
    assert decode_main(["--onnx", str(out), "--data", data, "--outdir", str(tmp_path / "int8"),
                        "--mode", "streaming"]) == 0
    assert json.loads((tmp_path / "int8" / "decode.json").read_text())["onnx_encoder"] == "encoder.int8.onnx"
    assert decode_main(["--onnx", str(out), "--data", data, "--outdir", str(tmp_path / "bad"),
                        "--mode", "simulated"]) == 2
    assert decode_main(["--onnx", str(out), "--data", data, "--outdir", str(tmp_path / "bad"),
                        "--mode", "streaming", "--chunk_ms", "640"]) == 2


def test_external_data_export_loads_and_matches(spoken_digits, tmp_path):
    """A large encoder's weights go to encoder.onnx.data (forced here on a tiny one): same frames."""
    torch.manual_seed(0)
    encoder = tiny(pos_conv="causal").eval()
    cfg = StreamingConfig(8, 16, 2)
    info = export_encoder(encoder, cfg, tmp_path, external_data=True)
    assert info["external_data"] and (tmp_path / "encoder.onnx.data").is_file()
    assert (tmp_path / "encoder.onnx").stat().st_size < (tmp_path / "encoder.onnx.data").stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx", "encoder.onnx.data", "encoder_start.onnx"]
    waves = speech_waves(spoken_digits, 1)
    with torch.no_grad():
        ref = run_streaming(encoder, cfg, waves, seed=3)
    got = run_exported(tmp_path, info, waves)
    assert np.abs(ref[0] - got[0]).max() <= TOL
    from xtrans.bin.export_onnx import quantize_int8
    quantize_int8(tmp_path / "encoder.onnx", tmp_path / "encoder.int8.onnx", external_data=True)
    onnxruntime.InferenceSession(str(tmp_path / "encoder.int8.onnx"))


def test_onnx_session_resamples_8khz_speech_like_speech2text(spoken_digits, checkpoint, tmp_path):
    """The recordings are 8 kHz: both sessions resample them as they stream, to the same tokens."""
    from xtrans.inference import Speech2Text
    from xtrans.onnx import OnnxSpeech2Text

    out = tmp_path / "onnx"
    assert export_main(["--model", str(checkpoint), "--outdir", str(out), "--chunk-ms", "320", "--left-ms", "640",
                        "--sinks", "2"]) == 0
    lines = (spoken_digits / "wav.scp").read_text().split("\n")
    paths = [spoken_digits / line.split()[1] for line in lines[:40:8] if line.strip()]
    s2t = Speech2Text.from_checkpoint(checkpoint, chunk_ms=320, left_ms=640, sinks=2, search="beam")
    onnx = OnnxSpeech2Text(out, search="beam")
    emitted = 0
    for i, path in enumerate(paths):
        wave, rate = soundfile.read(path, dtype="float32")
        assert rate == 8000
        pieces = [(0, len(wave))] if i % 2 else [(a, a + 1234) for a in range(0, len(wave), 1234)]
        ref, got = s2t.stream(), onnx.stream()
        for a, b in pieces:
            ref.accept_waveform(wave[a:b], rate)
            got.accept_waveform(wave[a:b], rate)
        want = ref.finalize().tokens
        assert got.finalize().tokens == want
        emitted += len(want)
    assert emitted > 0
