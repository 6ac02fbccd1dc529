"""prepare_audio names a transcript without audio in dropped_utts, like every other dropped utterance."""

import numpy as np
import soundfile

from xtrans.bin import prepare_audio as prepare_cli
from xtrans.data.kaldi_dir import read_data_dir
from xtrans.data.prepare import DROPPED_FILE, prepare_audio


def _write_tone(path, seconds=0.3, rate=8000):
    t = np.arange(round(rate * seconds)) / rate
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 300 * t), rate, subtype="PCM_16")


def test_transcript_without_audio_is_named_and_counted(tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    for utt in ("a", "c"):
        _write_tone(tmp_path / f"{utt}.wav")
    (src / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\nc {tmp_path / 'c.wav'}\n")
    (src / "text").write_text("a A\nb B\nc C\nd D\n")
    (src / "utt2spk").write_text("a s\nb s\nc s\nd s\n")
    assert prepare_cli.main([str(src), str(tmp_path / "dump")]) == 0
    out = capsys.readouterr().out
    assert "kept 2 utterances, dropped 2" in out and "  missing_audio: 2" in out
    assert (tmp_path / "dump" / DROPPED_FILE).read_text() == (
        "b missing_audio: in text but not in wav.scp\n"
        "d missing_audio: in text but not in wav.scp\n")
    dump = read_data_dir(tmp_path / "dump")
    assert dump.utt_ids == ["a", "c"] and dump.text == {"a": "A", "c": "C"}


def test_transcript_without_segment_is_named(tmp_path):
    _write_tone(tmp_path / "rec.wav", seconds=1.0)
    src = tmp_path / "raw"
    src.mkdir()
    (src / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    (src / "segments").write_text("u1 rec 0.00 0.40\n")
    (src / "text").write_text("u1 A\nu2 B\n")
    result = prepare_audio(src, tmp_path / "dump")
    assert [(p.utt_id, p.code, p.reason) for p in result.dropped] == [
        ("u2", "missing_audio", "in text but not in segments")]
    assert result.summary().splitlines() == ["kept 1 utterances, dropped 1", "  missing_audio: 1"]
