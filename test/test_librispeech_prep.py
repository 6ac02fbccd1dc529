"""LibriSpeech data preparation on a tiny LibriSpeech-layout tree (FLAC + *.trans.txt) made here:
the Kaldi files, their order, the audio they point at, and the errors for a broken tree."""

import numpy as np
import pytest
import soundfile

from xtrans.bin.prepare_librispeech import main as prepare_main
from xtrans.data.audio import read_audio
from xtrans.data.kaldi_dir import find_unsorted, read_data_dir, read_table
from xtrans.recipes.librispeech import LibriSpeechError, parse_parts, prepare

# speaker -> chapter -> utterance number -> text (speaker 103 sorts after 19 as text, as Kaldi wants)
TREE = {
    "19": {"198": {0: "NORTHANGER ABBEY", 1: "CHAPTER ONE"}, "227": {3: "IT WAS A DARK NIGHT"}},
    "103": {"1240": {0: "HELLO  WORLD", 12: "A B C"}},
}


def make_tree(root, part="dev-clean", tree=TREE, seed=0):
    rng = np.random.default_rng(seed)
    lengths = {}
    for spk, chapters in tree.items():
        for chapter, utts in chapters.items():
            d = root / "LibriSpeech" / part / spk / chapter
            d.mkdir(parents=True)
            lines = []
            for num, text in utts.items():
                utt = f"{spk}-{chapter}-{num:04d}"
                n = int(rng.integers(1600, 4000))
                soundfile.write(d / f"{utt}.flac", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000,
                                subtype="PCM_16")
                lines.append(f"{utt} {text}\n")
                lengths[utt] = n
            (d / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
    return lengths


def test_prepare_writes_sorted_kaldi_dir(tmp_path):
    lengths = make_tree(tmp_path / "corpus")
    make_tree(tmp_path / "corpus", part="test-other", tree={"7": {"8": {5: "ONLY ONE"}}})
    summaries = prepare(tmp_path / "corpus", "dev-clean,test_other", tmp_path / "data")
    assert [(s.part, s.utterances, s.speakers) for s in summaries] == [("dev-clean", 5, 3), ("test-other", 1, 1)]
    d = tmp_path / "data" / "dev_clean"
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2num_samples"):
        keys = [k for k, _ in read_table(d / name)]
        assert find_unsorted(keys) is None, f"{name} is not sorted"
    text = dict(read_table(d / "text"))
    assert text == {"103-1240-0000": "HELLO WORLD", "103-1240-0012": "A B C", "19-198-0000": "NORTHANGER ABBEY",
                    "19-198-0001": "CHAPTER ONE", "19-227-0003": "IT WAS A DARK NIGHT"}
    assert [k for k, _ in read_table(d / "text")][0] == "103-1240-0000"  # byte order, as LC_ALL=C sort
    assert dict(read_table(d / "utt2spk"))["19-227-0003"] == "19-227"
    assert dict(read_table(d / "spk2utt"))["19-198"] == "19-198-0000 19-198-0001"
    data = read_data_dir(d)
    assert data.utt2num_samples == lengths
    for utt, path in data.wav_scp.items():
        assert path.endswith(f"/{utt}.flac") and path.startswith("/")
        samples, rate = read_audio(path)
        assert rate == 16000 and samples.shape[0] == lengths[utt]
    assert (tmp_path / "data" / "test_other" / "wav.scp").read_text().startswith("7-8-0005 /")


@pytest.mark.parametrize("breakage, message", [
    ("missing_flac", "transcribed, but the file is missing"),
    ("extra_flac", "no line in 19-198.trans.txt"),
    ("bad_line", "expected '<speaker>-<chapter>-<utt> TEXT'"),
    ("foreign_utt", "does not belong to chapter 19-198"),
])
def test_broken_tree_errors(tmp_path, breakage, message):
    make_tree(tmp_path)
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "19" / "198"
    trans = chapter / "19-198.trans.txt"
    if breakage == "missing_flac":
        (chapter / "19-198-0001.flac").unlink()
    elif breakage == "extra_flac":
        (chapter / "19-198-0009.flac").write_bytes((chapter / "19-198-0000.flac").read_bytes())
    elif breakage == "bad_line":
        trans.write_text(trans.read_text() + "hello there\n")
    else:
        trans.write_text(trans.read_text() + "19-227-0009 WRONG CHAPTER\n")
    with pytest.raises(LibriSpeechError, match=message):
        prepare(tmp_path, ["dev-clean"], tmp_path / "data")


def test_parts_and_cli(tmp_path, capsys):
    assert parse_parts("dev-clean, train_clean_100") == ["dev-clean", "train-clean-100"]
    with pytest.raises(ValueError, match="unknown LibriSpeech part 'dev'"):
        parse_parts("dev")
    make_tree(tmp_path / "c")
    assert prepare_main(["--root", str(tmp_path / "c"), "--parts", "dev-clean", "--out", str(tmp_path / "d"),
                         "--no_num_samples"]) == 0
    assert "dev-clean: 5 utterances, 3 speakers" in capsys.readouterr().out
    assert not (tmp_path / "d" / "dev_clean" / "utt2num_samples").exists()
    assert prepare_main(["--root", str(tmp_path / "c"), "--parts", "test-clean", "--out", str(tmp_path / "d")]) == 1
    assert "no such folder" in capsys.readouterr().err
