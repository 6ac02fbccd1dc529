"""The data validator reports every bad utterance with its reason and writes a clean copy."""

import shlex
import sys

import pytest
import soundfile

from xtrans.data.audio import RAW_HINT

from xtrans.data.kaldi_dir import read_data_dir
from xtrans.testing.data_fixtures import RATE, make_messy_data_dir, speech
from xtrans.data.validate import (
    REPORT_FILE,
    encoder_frames,
    validate_data_dir,
    write_clean_data_dir,
)



@pytest.fixture
def messy_dir(tmp_path):
    """A data dir with one problem per utterance (and two good ones)."""
    return make_messy_data_dir(tmp_path)


def test_report_lists_every_bad_utterance_with_reason(messy_dir):
    report = validate_data_dir(messy_dir)
    by_utt = {}
    for p in report.problems:
        by_utt.setdefault(p.utt_id, set()).add(p.code)
    expected = {
        "empty": {"unreadable"},
        "trunc": {"unreadable"},
        "nan": {"nan_audio"},
        "stereo8k": {"wrong_rate", "not_mono"},
        "zeros": {"silent"},
        "short": {"too_long"},
        "notext": {"missing_text"},
        "ghost": {"missing_audio"},
        "good3": {"missing_audio"},  # only in text (with an empty transcript)
    }
    unsorted = [p for p in report.problems if p.code == "unsorted"]
    assert [(p.utt_id, p.drop) for p in unsorted] == [("empty", False)]  # swapped first lines
    assert "wav.scp is not sorted: 'empty' (line 2) comes after 'good1'" in unsorted[0].reason
    assert {u: c - {"unsorted"} for u, c in by_utt.items() if c - {"unsorted"}} == expected
    reasons = dict(report.pairs())
    assert "truncated WAV" in reasons["trunc"]
    assert "sample rate 8000 Hz, expected 16000 Hz" in [
        p.reason for p in report.problems if p.utt_id == "stereo8k"
    ]
    assert report.bad_utt_ids == set(expected)
    assert not report.ok
    assert "unreadable: 2" in report.summary()


def test_too_long_uses_encoder_frames_and_tokenizer(messy_dir):
    # 0.1 s at 16 kHz = 1600 samples -> (1600 - 400) // 320 + 1 = 4 frames
    assert encoder_frames(1600) == 4 and encoder_frames(399) == 0 and encoder_frames(400) == 1
    report = validate_data_dir(messy_dir, tokenizer=lambda text: text.split()[:4])
    assert "short" not in report.bad_utt_ids
    report = validate_data_dir(messy_dir, tokenizer=lambda text: text.split()[:5])
    [problem] = [p for p in report.problems if p.utt_id == "short"]
    assert problem.reason.startswith("5 tokens for 4 encoder frames")


def test_any_rate_accepts_8k_stereo(messy_dir):
    report = validate_data_dir(messy_dir, sample_rate=None, mono=False)
    assert "stereo8k" not in report.bad_utt_ids


def test_clean_dir_keeps_only_good_utterances(messy_dir, tmp_path):
    report = validate_data_dir(messy_dir)
    clean = write_clean_data_dir(report, tmp_path / "clean")
    assert clean.utt_ids == ["good1", "good2"]
    back = read_data_dir(tmp_path / "clean")
    assert back.utt_ids == ["good1", "good2"] and back.text["good1"] == "HELLO WORLD"
    assert back.utt2num_samples == {"good1": 16000, "good2": 8000}
    assert (tmp_path / "clean" / "wav.scp").read_text().startswith("good1 ")  # sorted
    written = (tmp_path / "clean" / REPORT_FILE).read_text()
    assert "trunc unreadable: truncated WAV" in written and "ghost missing_audio" in written
    assert validate_data_dir(tmp_path / "clean").ok


def test_empty_transcript_and_no_audio_mode(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("a /nonexistent/a.wav\nb /nonexistent/b.wav\n")
    (d / "text").write_text("a\nb ONE TWO THREE FOUR FIVE\n")
    (d / "utt2num_samples").write_text("a 16000\nb 1000\n")
    report = validate_data_dir(d, check_audio=False)
    assert report.pairs() == [
        ("a", "transcript is empty"),
        ("b", "23 tokens for 2 encoder frames (0.06 s); a transducer allows at most 1 per frame"),
    ]


def test_errors_name_the_argument(messy_dir, tmp_path):
    with pytest.raises(ValueError, match="max_tokens_per_frame must be positive"):
        validate_data_dir(messy_dir, max_tokens_per_frame=0)
    with pytest.raises(ValueError, match="sample_rate must be a positive number"):
        validate_data_dir(messy_dir, sample_rate=-1)
    report = validate_data_dir(messy_dir, check_audio=False)
    with pytest.raises(ValueError, match="path must differ from the validated directory"):
        write_clean_data_dir(report, messy_dir)


def test_cli_exit_status_and_clean_dir(messy_dir, tmp_path, capsys):
    from xtrans.bin import validate_data

    assert validate_data.main([str(messy_dir)]) == 1
    out = capsys.readouterr().out
    assert "stereo8k not_mono: 2 channels, expected mono" in out
    assert validate_data.main([str(messy_dir), "--clean-dir", str(tmp_path / "clean")]) == 0
    assert validate_data.main([str(tmp_path / "clean")]) == 0


def test_segments_duplicates_and_length_mismatch(tmp_path):
    soundfile.write(tmp_path / "rec.wav", speech(2.0), RATE, subtype="PCM_16")
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    (d / "segments").write_text("a rec 0.0 1.0\nb gone 0.0 1.0\nc rec 1.0 2.0\n")
    (d / "text").write_text("a A\nb B\nc C\nc C AGAIN\n")
    (d / "utt2num_samples").write_text("a 16000\nc 15000\n")
    report = validate_data_dir(d)
    assert report.pairs() == [
        ("c", "text has 2 lines for it"),
        ("b", "segments names recording 'gone', which is not in wav.scp"),
        ("c", "utt2num_samples says 15000 samples, the audio has 16000"),
    ]
    assert [p.code for p in report.problems] == ["duplicate_id", "missing_recording",
                                                 "length_mismatch"]


def test_raw_pcm_listed_with_reason_and_readable_through_a_pipe(tmp_path, capsys, monkeypatch):
    """A headerless .raw file in wav.scp is one unreadable utterance (with the hint), not a crash;
    converted in a pipe (the sox route) it is fine."""
    from xtrans.bin import validate_data

    soundfile.write(tmp_path / "good.wav", speech(1.0), RATE, subtype="PCM_16")
    pcm = (speech(1.0) * 32767).astype("<i2")
    pcm.tofile(tmp_path / "call.raw")
    to_wav = ("import io, sys, numpy, soundfile; x = numpy.fromfile(sys.argv[1], '<i2'); b = io.BytesIO(); "
              "soundfile.write(b, x, 16000, format='WAV', subtype='PCM_16'); sys.stdout.buffer.write(b.getvalue())")
    pipe = f"{shlex.quote(sys.executable)} -c {shlex.quote(to_wav)} {tmp_path / 'call.raw'} |"
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text(f"a {tmp_path / 'good.wav'}\nb {tmp_path / 'call.raw'}\nc {pipe}\n")
    (d / "text").write_text("a A\nb B\nc C\n")
    report = validate_data_dir(d)
    assert [(p.utt_id, p.code, p.reason) for p in report.problems] == [("b", "unreadable", RAW_HINT)]
    assert report.num_samples["c"] == len(pcm)

    assert validate_data.main([str(d)]) == 1
    out = capsys.readouterr().out
    assert f"b unreadable: {RAW_HINT}" in out.splitlines()

    import xtrans.data.validate as validate_module  # any other failure: listed, the others still checked

    def broken(samples, rate, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(validate_module, "audio_problems", broken)
    report = validate_data_dir(d)
    assert [(p.utt_id, p.reason) for p in report.problems] == [
        ("a", "MemoryError: simulated"), ("b", RAW_HINT), ("c", "MemoryError: simulated")]
