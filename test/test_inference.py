"""Speech2Text and the transcribe CLI on a saved tiny checkpoint and a tiny sentencepiece model:
whole-file decoding agrees with real streaming (irregular pieces, 8 kHz stereo included), the
checkpoint/tokenizer lookup, and the CLI's per-file errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from xtrans.bin.transcribe import main as transcribe_main
from xtrans.checkpoint import model_checkpoint
from xtrans.data.audio import RAW_HINT, BadAudioError, peak_dbfs
from xtrans.data.resample import resample
from xtrans.inference import Speech2Text, TokenTable
from xtrans.masks import StreamingConfig
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
from xtrans.tokenizer import train_tokenizer
from xtrans.train.checkpoint import CheckpointError

SENTENCES = ["a cat sat", "the cat sat at the mat", "that hat", "a mat", "the hat sat"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """exp/best.pt (trainer format: model + arch) with bpe.model next to it, and audio files."""
    root = tmp_path_factory.mktemp("s2t")
    exp = root / "exp"
    tokenizer = train_tokenizer(SENTENCES, exp / "bpe", vocab_size=16)
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm="cumulative"),
                      predictor=PredictorConfig(kind="lstm", embed_dim=32, hidden_dim=32, dropout=0.0),
                      joiner_dim=32)
    model = build_model(cfg, vocab_size=tokenizer.vocab_size)
    with torch.no_grad():  # louder logits so that paths are clear-cut; a few tokens per utterance
        model.joiner.output.weight.mul_(4.0)
        model.joiner.output.bias[0] += 2.0
    torch.save(model_checkpoint(model), exp / "best.pt")
    tokenizer.write_tokens(exp / "tokens.txt")
    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", (0.3 * rng.standard_normal(24000)).astype(np.float32), 16000)
    soundfile.write(audio / "b.flac", 0.3 * rng.uniform(-1, 1, (9000, 2)), 8000)  # 8 kHz stereo
    soundfile.write(audio / "empty.wav", np.zeros(0, np.float32), 16000)
    soundfile.write(audio / "silent.wav", np.zeros(16000, np.float32), 16000)
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00not a wave file at all")
    (audio / "call.raw").write_bytes((3000 * rng.standard_normal(4800)).astype("<i2").tobytes())  # 8 kHz s16le
    return root


def test_transcribe_and_stream_agree(workdir):
    cfg = StreamingConfig(chunk_size=4, left_context=4, num_sinks=2)
    for search in ("greedy", "beam"):
        s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt", streaming=cfg, search=search)
        for name in ("a.wav", "b.flac"):
            path = workdir / "audio" / name
            whole = s2t.transcribe(path)
            assert whole.tokens, "the biased random model emits something"
            assert len(whole.timestamps) == len(whole.tokens) == len(whole.pieces)
            assert whole.timestamps == sorted(whole.timestamps)
            samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
            session = s2t.stream()
            start, partials = 0, []
            for i, n in enumerate([1, 517, 3000, 77, 1280, 4096, 999] * 10):
                if start >= len(samples):
                    break
                piece = samples[start:start + n]
                partials.append(session.accept_waveform(piece if i % 2 else torch.from_numpy(piece), rate))
                if search == "greedy":  # a partial result only grows
                    assert whole.tokens[:len(session.result().tokens)] == session.result().tokens
                start += n
            final = session.finalize()
            assert (final.tokens, final.timestamps, final.text) == (whole.tokens, whole.timestamps, whole.text)
            assert final.score == pytest.approx(whole.score, abs=1e-3)
            if search == "beam":
                assert 1 <= len(final.nbest) <= 4 and final.nbest[0].tokens == final.tokens
                assert [h.tokens for h in final.nbest] == [h.tokens for h in whole.nbest]


def test_array_input_and_rates(workdir):
    s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt", tokenizer=workdir / "exp" / "bpe.model")
    samples, rate = soundfile.read(workdir / "audio" / "b.flac", dtype="float32")
    from_file = s2t.transcribe(workdir / "audio" / "b.flac")
    assert s2t.transcribe(samples, sample_rate=rate).tokens == from_file.tokens
    mono16k = resample(torch.from_numpy(samples.mean(1)), rate, 16000)
    assert s2t.transcribe(mono16k).tokens == from_file.tokens
    pcm = (samples * 32767).astype(np.int16)  # integer PCM is scaled like soundfile does
    assert s2t.transcribe(pcm, sample_rate=rate).text == s2t.transcribe(pcm / 32768.0, sample_rate=rate).text


def test_token_table_decodes_like_tokenizer(workdir):
    s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt")
    table = TokenTable(workdir / "exp" / "tokens.txt")
    ids = s2t.tokenizer.encode("the cat sat at the mat")
    assert table.decode([0] + ids + [0]) == s2t.tokenizer.decode(ids) == "the cat sat at the mat"
    assert table.vocab_size == s2t.tokenizer.vocab_size


def test_errors(workdir, tmp_path):
    exp = workdir / "exp"
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        Speech2Text.from_checkpoint(tmp_path / "missing.pt")
    lone = tmp_path / "lone.pt"
    lone.write_bytes((exp / "best.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match="tokenizer: none given"):
        Speech2Text.from_checkpoint(lone)
    torch.save({"model": {}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a transducer checkpoint"):
        Speech2Text.from_checkpoint(tmp_path / "bad.pt", tokenizer=exp / "bpe.model")
    small = train_tokenizer(SENTENCES, tmp_path / "small", vocab_size=12)
    with pytest.raises(ValueError, match="tokenizer: has 12 tokens, the model's vocabulary has 16"):
        Speech2Text.from_checkpoint(exp / "best.pt", tokenizer=small)
    with pytest.raises(ValueError, match="search: expected one of"):
        Speech2Text.from_checkpoint(exp / "best.pt", search="viterbi")
    with pytest.raises(ValueError, match="chunk_ms: left_ms/sinks need a chunk size"):
        Speech2Text.from_checkpoint(exp / "best.pt", left_ms=640)
    s2t = Speech2Text.from_checkpoint(exp / "best.pt")
    s2t.transcribe(np.zeros(16000, np.float32))  # digital silence is valid input (what a live stream gets)
    with pytest.raises(BadAudioError, match="no samples"):
        s2t.transcribe(np.zeros(0, np.float32))
    with pytest.raises(BadAudioError, match="shorter than one encoder frame"):
        s2t.transcribe(np.ones(100, np.float32))
    with pytest.raises(ValueError, match=r"expected \(S,\) or channels-last \(S, C\)"):
        s2t.transcribe(np.ones((2, 2, 100), np.float32))
    with pytest.raises(ValueError, match="chunk_ms: streaming needs a chunk size"):
        s2t.stream()
    session = s2t.stream(chunk_ms=80, left_ms=80, sinks=2)
    session.accept_waveform(np.ones((1000, 2), np.float32), 8000)
    with pytest.raises(ValueError, match="this session's audio is at 8000 Hz, found 16000 Hz"):
        session.accept_waveform(np.ones(10, np.float32), 16000)
    with pytest.raises(ValueError, match="this session's audio has 2 channel"):
        session.accept_waveform(np.ones(10, np.float32), 8000)
    session.finalize()
    with pytest.raises(ValueError, match="session: already finalized"):
        session.accept_waveform(np.ones((10, 2), np.float32), 8000)


def test_cli_reports_bad_files_and_carries_on(workdir, capsys):
    """A headerless .raw file among good ones: the good ones (digital silence included) are
    decoded, the raw one is reported with the hint, exit status 1."""
    audio = workdir / "audio"
    files = [str(audio / n) for n in ("a.wav", "broken.wav", "b.flac", "call.raw", "empty.wav", "silent.wav")]
    code = transcribe_main(["--model", str(workdir / "exp" / "best.pt"), "--streaming", "--chunk-ms", "80",
                            "--left-ms", "80", "--sinks", "2", "--timestamps", *files])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [files[0], files[2], files[5]]
    s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt", chunk_ms=80, left_ms=80, sinks=2)
    for line, f in zip(lines, (files[0], files[2])):
        _, text, times = line.split("\t")
        result = s2t.transcribe(f)
        assert text == result.text
        assert times == " ".join(f"{p}@{t:.2f}" for p, t in zip(result.pieces, result.timestamps))
    assert lines[2] == f"{files[5]}\t\t"  # digital silence: empty text, no timestamps
    errors = [e for e in err.splitlines() if e.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors] == [files[1], files[3], files[4]]
    assert errors[1] == f"error: {files[3]}: {RAW_HINT}"
    assert "--raw-sample-rate 8000 --raw-format s16le" in errors[1]
    assert "no samples" in errors[2]
    assert "3 of 6 file(s) failed" in err


def test_cli_decodes_raw_pcm_with_its_format(workdir, capsys):
    audio = workdir / "audio"
    files = [str(audio / "a.wav"), str(audio / "call.raw")]
    model = ["--model", str(workdir / "exp" / "best.pt")]
    assert transcribe_main(model + ["--raw-sample-rate", "8000", "--raw-format", "s16le", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt")
    pcm = np.fromfile(files[1], dtype="<i2")
    expected = s2t.transcribe(pcm.astype(np.float32) / 32768, sample_rate=8000)
    assert expected.tokens and lines[1] == f"{files[1]}\t{expected.text}"

    assert transcribe_main(model + ["--raw-sample-rate", "8000", *files]) == 2
    assert ("error: --raw-sample-rate and --raw-format: expected both (a headerless file says neither), "
            "found only --raw-sample-rate") in capsys.readouterr().err
    assert transcribe_main(model + ["--raw-format", "s16le", *files]) == 2
    assert "found only --raw-format" in capsys.readouterr().err
    assert transcribe_main(model + ["--raw-sample-rate", "0", "--raw-format", "s16le", *files]) == 2
    assert "--raw-sample-rate: expected a positive rate (Hz), found 0" in capsys.readouterr().err


def test_cli_carries_on_after_any_exception(workdir, capsys, monkeypatch):
    """Not only bad audio: whatever goes wrong with one file is reported and the batch goes on."""
    original = Speech2Text.transcribe

    def flaky(self, audio, sample_rate=16000):
        if sample_rate == 8000:
            raise RuntimeError("out of memory (simulated)")
        return original(self, audio, sample_rate)

    monkeypatch.setattr(Speech2Text, "transcribe", flaky)
    files = [str(workdir / "audio" / n) for n in ("b.flac", "a.wav")]
    assert transcribe_main(["--model", str(workdir / "exp" / "best.pt"), *files]) == 1
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [files[1]]
    assert f"error: {files[0]}: RuntimeError: out of memory (simulated)" in err.splitlines()
    assert "1 of 2 file(s) failed" in err


def test_peak_dbfs():
    assert peak_dbfs(np.array([[0.25, -0.5], [0.1, 0.0]], np.float32)) == pytest.approx(20 * np.log10(0.5))
    assert peak_dbfs(torch.tensor([1.0, -0.3])) == 0.0
    assert peak_dbfs(np.zeros(100, np.float32)) == float("-inf") == peak_dbfs(np.zeros((0, 1)))


def test_cli_warns_about_quiet_files(workdir, tmp_path, capsys):
    """A peak below -50 dBFS (digital silence included) gets a warning naming the file and its
    peak level; the file is still decoded and the exit status is unchanged."""
    quiet = tmp_path / "quiet.wav"
    x = 0.3 * np.random.default_rng(1).standard_normal(16000)
    x *= 10 ** (-60 / 20) / np.abs(x).max()  # peak exactly -60 dBFS
    soundfile.write(quiet, x.astype(np.float32), 16000, subtype="FLOAT")
    model = ["--model", str(workdir / "exp" / "best.pt")]
    normal = str(workdir / "audio" / "a.wav")
    assert transcribe_main(model + [normal, str(quiet)]) == 0
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [normal, str(quiet)]
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {quiet}: peak level -60.0 dBFS is below -50 dBFS (very quiet input); "
                        "check the microphone or recording level"]
    assert transcribe_main(model + [normal]) == 0
    assert "warning" not in capsys.readouterr().err
    silent = str(workdir / "audio" / "silent.wav")
    for extra in ([], ["--streaming", "--chunk-ms", "80", "--real-streaming", "--jsonl"]):
        assert transcribe_main(model + extra + [silent]) == 0  # valid input, as in a live stream
        out, err = capsys.readouterr()
        assert f"warning: {silent}: peak level -inf dBFS is below -50 dBFS (digital silence)" in err
        assert "error" not in err
        if extra:
            assert json.loads(out)["text"] == "" and json.loads(out)["tokens"] == []
        else:
            assert out == f"{silent}\t\n"
    s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt")
    s2t.load_audio(np.zeros(8000, np.float32))  # not refused by the library either
    with pytest.raises(BadAudioError, match="shorter than one encoder frame"):
        s2t.load_audio(np.zeros(100, np.float32))


def test_cli_jsonl_beam_and_real_streaming(workdir, capsys):
    args = ["--model", str(workdir / "exp" / "best.pt"), "--tokenizer", str(workdir / "exp" / "tokens.txt"),
            "--streaming", "--chunk-ms", "80", "--left-ms", "80", "--search", "beam", "--jsonl",
            str(workdir / "audio" / "a.wav")]
    assert transcribe_main(args) == 0
    masked = json.loads(capsys.readouterr().out)
    assert transcribe_main(args + ["--real-streaming", "--piece-ms", "30"]) == 0
    real = json.loads(capsys.readouterr().out)
    assert masked["tokens"] == real["tokens"] and masked["tokens"]
    assert len(masked["nbest"]) == 4 and "timestamps" not in masked


def test_cli_as_module(workdir):
    proc = subprocess.run([sys.executable, "-m", "xtrans.bin.transcribe", "--model", str(workdir / "exp" / "best.pt"),
                           "--num-threads", "1", str(workdir / "audio" / "a.wav"), str(workdir / "audio" / "nope.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.startswith(str(workdir / "audio" / "a.wav") + "\t")
    assert "error: " + str(workdir / "audio" / "nope.wav") in proc.stderr


def test_in_memory_model_and_streaming_check(workdir):
    from xtrans.models.wav2vec2.model import StreamingNotSupportedError
    from xtrans.tokenizer import Tokenizer
    tokenizer = Tokenizer(workdir / "exp" / "bpe.model")
    torch.manual_seed(1)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="full", waveform_norm="cumulative"),
                      predictor=PredictorConfig(embed_dim=32), joiner_dim=32)
    model = build_model(cfg, vocab_size=tokenizer.vocab_size)
    s2t = Speech2Text(model, tokenizer, search="beam", beam=2, nbest=1)
    result = s2t.transcribe(np.random.default_rng(0).standard_normal(8000).astype(np.float32))
    assert len(result.nbest) == 1 and result.nbest[0].text == result.text
    assert not model.training
    with pytest.raises(StreamingNotSupportedError, match="pos_conv='full' looks 64 frames"):
        Speech2Text(model, tokenizer, streaming=StreamingConfig(chunk_size=4))


def test_session_state_is_one_value_replaced_per_call(workdir):
    """The session's frame count follows the chunk geometry, each call replaces one frozen state,
    and a call that raises leaves the state as it was."""
    import dataclasses

    from xtrans.frames import num_frames, samples_for_chunk
    from xtrans.inference import SessionState

    cfg = StreamingConfig(chunk_size=4, left_context=4, num_sinks=2)
    s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt", streaming=cfg)
    session = s2t.stream()
    assert (session.num_frames, session.sample_rate, session.channels, session.finished) == (0, None, None, False)
    wave = (0.3 * np.random.default_rng(1).standard_normal(12000)).astype(np.float32)
    need = samples_for_chunk(1, 4)  # chunks 0 and 1 complete exactly here
    session.accept_waveform(wave[:need - 1])
    assert session.num_frames == 4
    before = session.state
    assert isinstance(before, SessionState) and before.num_frames == 4 and before.channels == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.num_frames = 0
    with pytest.raises(ValueError, match="this session's audio is at 16000 Hz, found 8000 Hz"):
        session.accept_waveform(wave[need - 1:need], 8000)
    assert session.state is before
    session.accept_waveform(wave[need - 1:need])
    assert session.num_frames == 8 and session.state is not before and before.num_frames == 4
    session.accept_waveform(wave[need:])
    final = session.finalize()
    assert session.num_frames == num_frames(len(wave)) and session.finished
    assert final.tokens == s2t.transcription(session.state.search).tokens == s2t.transcribe(wave).tokens


def test_transcription_of_a_search_state(workdir):
    s2t = Speech2Text.from_checkpoint(workdir / "exp" / "best.pt", search="beam", beam=3, nbest=2)
    empty = s2t.transcription(s2t.search.init_state(1))
    assert (empty.tokens, empty.text, len(empty.nbest)) == ([], "", 1)


def test_tokenizer_helpers_are_reexported():
    from xtrans import inference, tokenizer
    assert inference.TokenTable is tokenizer.TokenTable
    assert inference.find_tokenizer is tokenizer.find_tokenizer
    assert inference.load_tokenizer is tokenizer.load_tokenizer
