"""combine_data merges Kaldi data directories and refuses clashing utterance ids."""

import pytest

from xtrans.bin.combine_data import combine, main
from xtrans.data.kaldi_dir import read_data_dir


def write_dir(path, utts):
    path.mkdir()
    (path / "wav.scp").write_text("".join(f"{u} /audio/{u}.wav\n" for u in utts))
    (path / "text").write_text("".join(f"{u} WORDS OF {u.upper()}\n" for u in utts))
    (path / "utt2spk").write_text("".join(f"{u} {u[0]}\n" for u in utts))


def test_combines_and_refuses_clashes(tmp_path, capsys):
    write_dir(tmp_path / "a", ["a1", "a2"])
    write_dir(tmp_path / "b", ["b1"])
    assert main([str(tmp_path / "all"), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    merged = read_data_dir(tmp_path / "all")
    assert merged.utt_ids == ["a1", "a2", "b1"] and merged.text["b1"] == "WORDS OF B1"
    write_dir(tmp_path / "c", ["a2"])
    with pytest.raises(ValueError, match="'a2' appears in both"):
        combine([tmp_path / "a", tmp_path / "c"])
    assert main([str(tmp_path / "bad"), str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "appears in both" in capsys.readouterr().err


def test_subset_data_keeps_every_kth_and_refuses_n_below_one(tmp_path, capsys):
    from xtrans.bin.subset_data import main as subset_main

    write_dir(tmp_path / "a", ["a1", "a2", "a3", "a4"])
    assert subset_main(["--n", "0", str(tmp_path / "a"), str(tmp_path / "s")]) == 2
    assert "--n: expected >= 1, found 0" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert subset_main(["--n", "2", str(tmp_path / "a"), str(tmp_path / "s")]) == 0
    assert read_data_dir(tmp_path / "s").utt_ids == ["a1", "a3"]
