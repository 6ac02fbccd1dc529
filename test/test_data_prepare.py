"""prepare_audio end to end: 16 kHz mono ark/scp, bad utterances dropped, parallel workers."""

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch

from xtrans.bin import prepare_audio as prepare_cli
from xtrans.data.audio import load_waveform, read_audio
from xtrans.data.kaldi_dir import read_data_dir, write_data_dir
from xtrans.data.prepare import DROPPED_FILE, prepare_audio
from xtrans.data.validate import validate_data_dir


def _tone(freq, rate, seconds, channels=1):
    t = np.arange(round(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


@pytest.fixture
def raw_dir(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    soundfile.write(audio / "a.wav", _tone(440, 8000, 0.7), 8000, subtype="PCM_16")
    soundfile.write(audio / "b.flac", _tone(300, 44100, 0.5, channels=2), 44100)
    soundfile.write(audio / "c.wav", _tone(200, 16000, 0.4), 16000, subtype="PCM_16")
    (audio / "bad.wav").write_bytes(b"RIFF....not audio")
    kaldiio.save_ark(str(audio / "n.ark"), {"n": np.full(8000, np.nan, np.float32)},
                     scp=str(audio / "n.scp"))
    d = tmp_path / "raw"
    d.mkdir()
    (d / "wav.scp").write_text(
        f"a {audio / 'a.wav'}\n"
        f"b {audio / 'b.flac'}\n"
        f"bad {audio / 'bad.wav'}\n"
        f"c cat {audio / 'c.wav'} |\n"
        f"n {(audio / 'n.scp').read_text().split()[1]}\n"
    )
    (d / "text").write_text("a A\nb B\nbad X\nc C\nn N\n")
    (d / "utt2spk").write_text("a s1\nb s1\nbad s2\nc s2\nn s2\n")
    return d


@pytest.mark.parametrize("dtype, tolerance", [("int16", 1.0 / 32768), ("float32", 1e-7)])
def test_prepare_resamples_downmixes_and_drops_bad(raw_dir, tmp_path, dtype, tolerance):
    result = prepare_audio(raw_dir, tmp_path / "dump", nj=1, dtype=dtype)
    dropped = [(p.utt_id, p.code) for p in result.dropped]
    assert dropped == [("bad", "unreadable"), ("n", "nan_audio")]
    out = read_data_dir(tmp_path / "dump")
    assert out.utt_ids == ["a", "b", "c"] and out.text == {"a": "A", "b": "B", "c": "C"}
    assert out.utt2num_samples == {"a": 11200, "b": 8000, "c": 6400}
    assert out.utt2dur == pytest.approx({"a": 0.7, "b": 0.5, "c": 0.4})
    assert (tmp_path / "dump" / "spk2utt").read_text() == "s1 a b\ns2 c\n"
    assert "bad unreadable:" in (tmp_path / "dump" / DROPPED_FILE).read_text()
    src = read_data_dir(raw_dir)
    for utt in out.utt_ids:
        samples, rate = read_audio(out.wav_scp[utt])
        assert rate == 16000 and samples.shape == (out.utt2num_samples[utt], 1)
        expected = load_waveform(src.wav_scp[utt], sample_rate=16000)
        assert torch.allclose(torch.from_numpy(samples[:, 0]), expected, atol=tolerance)
    assert validate_data_dir(tmp_path / "dump").ok


def test_prepare_cuts_segments(tmp_path):
    soundfile.write(tmp_path / "rec.wav", _tone(100, 8000, 2.0), 8000, subtype="PCM_16")
    d = tmp_path / "raw"
    d.mkdir()
    (d / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    (d / "segments").write_text("u1 rec 0.00 0.50\nu2 rec 1.00 -1\nu3 rec 5.0 6.0\n")
    (d / "text").write_text("u1 A\nu2 B\nu3 C\n")
    result = prepare_audio(d, tmp_path / "dump")
    assert result.data.utt2num_samples == {"u1": 8000, "u2": 16000}
    assert [p.utt_id for p in result.dropped] == ["u3"]
    out = read_data_dir(tmp_path / "dump")
    assert out.segments is None and not (tmp_path / "dump" / "segments").exists()


def test_prepare_argument_errors(raw_dir, tmp_path):
    with pytest.raises(ValueError, match="nj must be >= 1, got 0"):
        prepare_audio(raw_dir, tmp_path / "o", nj=0)
    with pytest.raises(ValueError, match="dtype must be 'int16' or 'float32', got 'int8'"):
        prepare_audio(raw_dir, tmp_path / "o", dtype="int8")
    with pytest.raises(ValueError, match=r"max_seconds \(0.01\) must be >= min_seconds"):
        prepare_audio(raw_dir, tmp_path / "o", max_seconds=0.01)
    with pytest.raises(ValueError, match="dest must differ from src"):
        prepare_audio(raw_dir, raw_dir)


def test_prepare_sample_rate_error(raw_dir, tmp_path):
    with pytest.raises(ValueError, match="sample_rate: expected a positive number of Hz, found 0"):
        prepare_audio(raw_dir, tmp_path / "o", sample_rate=0)


def test_cli_parallel_on_8khz_speech(spoken_digits, tmp_path, capsys):
    digits = read_data_dir(spoken_digits)
    subset = digits.subset(digits.utt_ids[:20])
    write_data_dir(subset, tmp_path / "train")
    assert prepare_cli.main(["--nj", "2", str(tmp_path / "train"), str(tmp_path / "dump")]) == 0
    assert "kept 20 utterances, dropped 0" in capsys.readouterr().out
    out = read_data_dir(tmp_path / "dump")
    assert out.utt_ids == subset.utt_ids and out.text == subset.text
    assert sorted({Path(e.rsplit(":", 1)[0]).name for e in out.wav_scp.values()}) == [
        "wav.1.ark", "wav.2.ark"
    ]
    for utt in out.utt_ids[::5]:
        samples, rate = read_audio(out.wav_scp[utt])
        assert rate == 16000 and len(samples) == out.utt2num_samples[utt]
        assert len(samples) == pytest.approx(subset.utt2dur[utt] * 16000, abs=2)
        expected = load_waveform(subset.wav_scp[utt], sample_rate=16000)
        assert torch.allclose(torch.from_numpy(samples[:, 0]), expected, atol=1.0 / 32768)
    assert validate_data_dir(tmp_path / "dump").ok


def test_dead_worker_does_not_stop_the_run(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    lines = []
    for i in range(4):
        soundfile.write(tmp_path / f"{i}.wav", _tone(300, 8000, 0.3), 8000, subtype="PCM_16")
        lines.append(f"u{i} {tmp_path / f'{i}.wav'}\n")
    lines.append("u4 kill -9 $PPID |\n")  # the shell's parent is the worker: it dies here
    (d / "wav.scp").write_text("".join(lines))
    result = prepare_audio(d, tmp_path / "dump", nj=2)
    dropped = {p.utt_id: p for p in result.dropped}
    assert "u4" in dropped and "exited with code -9" in dropped["u4"].reason
    assert {"u0", "u1"} <= set(result.data.utt_ids)  # worker 1's shard is intact
    assert sorted(result.data.utt_ids + list(dropped)) == [f"u{i}" for i in range(5)]
    assert validate_data_dir(tmp_path / "dump").ok
