"""Kaldi data directory reading and writing."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from xtrans.data.kaldi_dir import (
    DataDir,
    DataDirError,
    Segment,
    find_unsorted,
    read_data_dir,
    read_table,
    resolve_entry,
    split_ark_offset,
    write_data_dir,
)


def _write(path, text):
    path.write_text(text, encoding="utf-8")


def test_read_table_keeps_order_duplicates_and_empty_values(tmp_path):
    _write(tmp_path / "text", "b  hello   world \n\na\nb again\n")
    assert read_table(tmp_path / "text") == [("b", "hello   world"), ("a", ""), ("b", "again")]


def test_read_table_missing_file_names_path(tmp_path):
    with pytest.raises(DataDirError, match="text: file does not exist") as info:
        read_table(tmp_path / "text")
    assert info.value.path.endswith("text") and info.value.line_no is None


def test_split_ark_offset():
    assert split_ark_offset("a/b.ark:123") == ("a/b.ark", 123)
    assert split_ark_offset("a/b.wav") is None
    assert split_ark_offset("sox x.wav -t wav - |") is None
    assert split_ark_offset("C:x.wav") is None


def test_relative_paths_resolve_against_data_dir_then_cwd(tmp_path, monkeypatch):
    (tmp_path / "d" / "rec").mkdir(parents=True)
    (tmp_path / "d" / "rec" / "a.wav").touch()
    (tmp_path / "other.ark").touch()
    monkeypatch.chdir(tmp_path)
    assert resolve_entry("rec/a.wav", tmp_path / "d") == str(tmp_path / "d" / "rec" / "a.wav")
    assert resolve_entry("other.ark:7", tmp_path / "d") == f"{tmp_path / 'other.ark'}:7"
    assert resolve_entry("cat rec/a.wav |", tmp_path / "d") == "cat rec/a.wav |"


def test_round_trip_with_segments(tmp_path):
    data = DataDir(
        wav_scp={"rec1": "/x/rec1.flac", "rec2": "cat /x/rec2.wav |"},
        text={"u2": "B", "u1": "A"},
        utt2spk={"u1": "s1", "u2": "s1"},
        segments={"u1": Segment("rec1", 0.5, 1.25), "u2": Segment("rec2", 0.0, None)},
        utt2num_samples={"u1": 12000, "u2": 5},
        utt2dur={"u1": 0.75, "u2": 0.0003},
    )
    write_data_dir(data, tmp_path / "out")
    assert (tmp_path / "out" / "text").read_text() == "u1 A\nu2 B\n"
    assert (tmp_path / "out" / "spk2utt").read_text() == "s1 u1 u2\n"
    assert "u2 rec2 0.000 -1\n" in (tmp_path / "out" / "segments").read_text()
    back = read_data_dir(tmp_path / "out")
    assert back.wav_scp == data.wav_scp
    assert back.text == data.text and back.utt2spk == data.utt2spk
    assert back.segments == data.segments
    assert back.utt2num_samples == data.utt2num_samples
    assert back.utt2dur == pytest.approx(data.utt2dur, abs=1e-4)
    assert back.utt_ids == ["u1", "u2"]
    assert back.wav_entry("u1") == ("/x/rec1.flac", Segment("rec1", 0.5, 1.25))


def test_subset_keeps_only_used_recordings():
    data = DataDir(
        wav_scp={"r1": "/a", "r2": "/b"},
        text={"u1": "A", "u2": "B"},
        segments={"u1": Segment("r1", 0, 1), "u2": Segment("r2", 0, 1)},
    )
    sub = data.subset(["u2"])
    assert sub.wav_scp == {"r2": "/b"} and sub.text == {"u2": "B"} and sub.utt2spk is None


def test_bad_number_names_line_and_key(tmp_path):
    _write(tmp_path / "wav.scp", "a /x.wav\n")
    _write(tmp_path / "utt2num_samples", "a 12\nb twelve\n")
    with pytest.raises(DataDirError, match=r"utt2num_samples:2: b: expected an integer, found 'tw"):
        read_data_dir(tmp_path)


def test_bad_segment_times(tmp_path):
    _write(tmp_path / "wav.scp", "r /x.wav\n")
    _write(tmp_path / "segments", "u r 2.0 1.0\n")
    with pytest.raises(DataDirError, match="end 1.0 must be after start 2.0"):
        read_data_dir(tmp_path)


def test_missing_dir_and_wav_scp(tmp_path):
    with pytest.raises(DataDirError, match="not a directory"):
        read_data_dir(tmp_path / "nope")
    with pytest.raises(DataDirError, match="wav.scp: file does not exist"):
        read_data_dir(tmp_path)


def test_find_unsorted_uses_byte_order():
    assert find_unsorted(["A", "B", "a", "b"]) is None  # C locale: upper case first
    assert find_unsorted(["a", "c", "b"]) == 2
    assert find_unsorted(["a", "a"]) is None


def test_reads_the_fsdd_layout_with_paths_relative_to_the_dir(spoken_digits):
    """wav.scp says ``recordings/<digit>_<speaker>_<take>.wav``, relative to the data directory."""
    root = spoken_digits
    assert not Path((root / "wav.scp").read_text().split()[1]).is_absolute()
    data = read_data_dir(root)
    assert len(data) == len(data.text) == len(data.utt2spk)
    first = data.utt_ids[0]
    path = data.wav_scp[first]
    assert path.startswith(str(root)) and soundfile.info(path).samplerate == 8000
    assert np.isclose(data.utt2dur[first], soundfile.info(path).duration, atol=1e-3)


def test_negative_number_names_line_and_key(tmp_path):
    _write(tmp_path / "wav.scp", "a /x.wav\nb /y.wav\n")
    _write(tmp_path / "utt2dur", "a 1.5\nb -0.5\n")
    with pytest.raises(DataDirError, match=r"utt2dur:2: b: expected a number >= 0, found -0.5"):
        read_data_dir(tmp_path)
