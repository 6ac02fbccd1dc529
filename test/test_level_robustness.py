"""python -m xtrans.bin.level_robustness on tiny saved checkpoints: every gain for every model, the
0 dB column equal to what xtrans.bin.decode scores (an independent path through files), a scaled
copy equal to decoding files scaled by apply_gain, each model's own training mask, malformed
--gains refused, and the "Level robustness" section of RESULTS.md."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

import xtrans.decoding.data_dir as decode_module  # the decoding loop of xtrans.bin.decode
from xtrans.bin.decode import main as decode_main
from xtrans.bin.level_robustness import main as level_main
from xtrans.bin.score import main as score_main
from xtrans.config import to_dict
from xtrans.data.audio import read_audio
from xtrans.data.augment import apply_gain
from xtrans.data.kaldi_dir import DataDir, read_data_dir, write_data_dir
from xtrans.testing.train_fixtures import save_decoding_checkpoint
from xtrans.scoring.level import gain_key, max_wer_change, parse_gains
from xtrans.train.config import MaskConfig, TrainConfig

SENTENCES = ["zero one two", "three four five", "six seven eight nine", "one oh two"]
GAINS = [-30, -10, 0, 6]


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """exp/stage1/best.pt (no training config: full attention) and exp/stage5/5a/best.pt (its
    training config's mask: chunk 320 ms, left 320 ms, 4 sinks), bpe.model beside each, and a data
    dir of 4 utterances of 16 kHz noise bursts at different levels."""
    root = tmp_path_factory.mktemp("level")
    for k, run in enumerate([root / "exp" / "stage1", root / "exp" / "stage5" / "5a"]):
        extra = {}
        if k == 1:
            train = TrainConfig(mask=MaskConfig(chunk_size=16, left_context=16, num_sinks=4))
            extra["config"] = to_dict(train)
            extra["config"]["data"]["tokenizer"] = str(run / "bpe.model")
        # seeds whose untrained models emit a few words
        save_decoding_checkpoint(run, SENTENCES, seed=(4, 1)[k], waveform_norm="none", extra=extra)
    rng = np.random.default_rng(0)
    wav_scp, text = {}, {}
    for k in range(4):
        path = root / f"u{k}.wav"
        level = (0.05, 0.2, 0.5, 0.02)[k]
        soundfile.write(path, (level * rng.standard_normal(8000 + 3000 * k)).clip(-1, 1).astype(np.float32), 16000)
        wav_scp[f"u{k}"], text[f"u{k}"] = str(path), SENTENCES[k]
    write_data_dir(DataDir(wav_scp=wav_scp, text=text), root / "data" / "test")
    return root


def _models(exp):
    return [str(exp / "exp" / "stage1" / "best.pt"), str(exp / "exp" / "stage5" / "5a" / "best.pt")]


def _decode_wer(exp, data, name, *extra):
    """WER of ``python -m xtrans.bin.decode`` + ``xtrans.bin.score`` (text files on disk)."""
    outdir = exp / "decode" / name
    assert decode_main(["--model", _models(exp)[1 if "--chunk_ms" in extra else 0], "--data", str(data),
                        "--outdir", str(outdir), *extra]) == 0
    assert score_main(["--decode_dir", str(outdir)]) == 0
    return json.loads((outdir / "wer.json").read_text())


@pytest.fixture(scope="module")
def report(exp, tmp_path_factory):
    out = exp / "exp" / "level_robustness.json"
    spy = []
    original = decode_module.apply_gain

    def recording_gain(waveform, gain_db):
        spy.append(gain_db)
        return original(waveform, gain_db)

    decode_module.apply_gain = recording_gain  # nj=1: decoded in this process
    try:
        rc = level_main(["--model", _models(exp)[0], "--model", _models(exp)[1], "--data", str(exp / "data" / "test"),
                         "--gains", ",".join(str(g) for g in GAINS), "--out", str(out),
                         "--plot", str(exp / "plots" / "level.png"), "--markdown", str(exp / "level.md")])
    finally:
        decode_module.apply_gain = original
    assert rc == 0
    return json.loads(out.read_text()), spy


def test_every_gain_for_every_model_through_apply_gain(exp, report, capsys):
    rep, spy = report
    assert rep["gains"] == GAINS
    assert [m["tag"] for m in rep["models"]] == ["stage1", "stage5a"]
    for m in rep["models"]:
        assert sorted(m["wer"], key=float) == [str(g) for g in GAINS]
        for entry in m["wer"].values():
            assert entry["words"] == sum(len(s.split()) for s in SENTENCES)
            assert entry["errors"] == entry["sub"] + entry["del"] + entry["ins"]
            assert entry["wer"] == pytest.approx(100 * entry["errors"] / entry["words"])
    # every utterance of every (model, gain) pair was scaled by apply_gain with that gain
    assert sorted(spy) == sorted(g for g in GAINS for _ in range(2 * 4))
    assert (exp / "plots" / "level.png").stat().st_size > 0


def test_streaming_rule_from_each_checkpoint(report):
    full, chunked = report[0]["models"]
    assert full["streaming"]["chunk_ms"] is None and full["streaming"]["description"] == "full attention"
    assert "no training config" in full["streaming"]["source"]
    assert (chunked["streaming"]["chunk_ms"], chunked["streaming"]["left_ms"], chunked["streaming"]["sinks"]) \
        == (320, 320, 4)
    assert chunked["streaming"]["source"] == "training config"


def test_zero_db_equals_decode(exp, report):
    """The 0 dB column is what xtrans.bin.decode and xtrans.bin.score give for the same model,
    data and streaming rule."""
    full, chunked = report[0]["models"]
    for m, extra in ((full, ()), (chunked, ("--chunk_ms", "320", "--left_ms", "320", "--sinks", "4"))):
        wer = _decode_wer(exp, exp / "data" / "test", f"{m['tag']}_0db", *extra)
        got = m["wer"][gain_key(0)]
        assert (got["words"], got["sub"], got["del"], got["ins"]) == (wer["N"], wer["S"], wer["D"], wer["I"])
        assert got["wer"] == pytest.approx(wer["WER"])


def test_scaled_copy_equals_decoding_scaled_files(exp, report):
    """-30 dB equals decoding float WAV files holding apply_gain(x, -30): the tool scales on the fly
    exactly as a rescaled recording would be read."""
    src = read_data_dir(exp / "data" / "test")
    wav_scp = {}
    for utt in src.utt_ids:
        samples, rate = read_audio(src.wav_scp[utt])
        path = exp / f"{utt}_m30.wav"
        soundfile.write(path, apply_gain(torch.tensor(samples), -30.0).numpy(), rate, subtype="FLOAT")
        wav_scp[utt] = str(path)
    write_data_dir(DataDir(wav_scp=wav_scp, text=src.text), exp / "data" / "test_m30")
    chunked = report[0]["models"][1]
    wer = _decode_wer(exp, exp / "data" / "test_m30", "m30", "--chunk_ms", "320", "--left_ms", "320", "--sinks", "4")
    got = chunked["wer"][gain_key(-30)]
    assert (got["sub"], got["del"], got["ins"]) == (wer["S"], wer["D"], wer["I"])
    assert got["errors"] != chunked["wer"][gain_key(0)]["errors"], \
        "the model without waveform normalisation should hear the level"


def test_table_and_markdown(exp, report, capsys):
    rep = report[0]
    md = (exp / "level.md").read_text()
    assert md.startswith("## Level robustness")
    assert "| model | streaming | -30 dB | -10 dB | 0 dB | 6 dB | max \\|WER(g) - WER(0 dB)\\| |" in md
    for m in rep["models"]:
        row = next(line for line in md.splitlines() if line.startswith(f"| {m['tag']} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:6] == [f"{m['wer'][str(g)]['wer']:.2f}" for g in GAINS]
        change = max(abs(m["wer"][str(g)]["wer"] - m["wer"]["0"]["wer"]) for g in GAINS)
        assert cells[6] == f"{change:.2f}" and max_wer_change(m["wer"]) == pytest.approx(change)
    assert "![level robustness](plots/level.png)" in md


def test_results_md_section_when_report_exists(exp, report, tmp_path):
    out = tmp_path / "RESULTS.md"
    assert score_main(["--results", str(exp / "exp"), "--out", str(out), "--plots_dir", str(tmp_path / "plots")]) == 0
    text = out.read_text()
    assert "## Level robustness" in text and "| stage5a | chunk 320 ms, left 320 ms, sinks 4 |" in text
    assert "![level robustness](plots/level_robustness.png)" in text
    assert (tmp_path / "plots" / "level_robustness.png").stat().st_size > 0

    empty = tmp_path / "empty_exp"
    empty.mkdir()
    assert score_main(["--results", str(empty), "--out", str(tmp_path / "R2.md")]) == 0
    assert "Level robustness" not in (tmp_path / "R2.md").read_text()


@pytest.mark.parametrize("gains, found", [("a,b", "'a'"), ("", "''"), ("-10,,0", "''"), ("0,nan", "'nan'"),
                                          ("-10,0,-10", "-10 twice")])
def test_malformed_gains_are_refused(exp, capsys, gains, found):
    with pytest.raises(ValueError, match="--gains: expected"):
        parse_gains(gains)
    rc = level_main(["--model", _models(exp)[0], "--data", str(exp / "data" / "test"), "--gains", gains])
    err = capsys.readouterr().err
    assert rc == 2 and "error: --gains: expected" in err and found in err


def test_option_errors(exp, capsys):
    data = str(exp / "data" / "test")
    assert level_main(["--model", _models(exp)[0], "--data", data, "--sinks", "4"]) == 2
    assert "--left_ms/--sinks: expected together with --chunk_ms" in capsys.readouterr().err
    assert level_main(["--model", _models(exp)[0], "--model", _models(exp)[0], "--data", data]) == 2
    assert "found 'stage1' twice" in capsys.readouterr().err
    assert level_main(["--model", str(exp / "nope.pt"), "--data", data]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_cli_default_gains_parallel_and_tags(exp, report, tmp_path):
    """As a module with --nj 2 (spawned workers): the default gains, named rows, and the same
    WER as in-process decoding for the gains both runs measured."""
    out = tmp_path / "level.json"
    proc = subprocess.run([sys.executable, "-m", "xtrans.bin.level_robustness", "--model",
                           f"chunked={_models(exp)[1]}", "--data", str(exp / "data" / "test"),
                           "--nj", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    assert rep["gains"] == [-30, -20, -10, 0, 6] and rep["models"][0]["tag"] == "chunked"
    before = report[0]["models"][1]["wer"]
    for g in GAINS:
        assert rep["models"][0]["wer"][str(g)] == before[str(g)]
    header, row = proc.stdout.splitlines()[:2]
    assert re.split(r"\s{2,}", header) == ["model", "streaming", "-30 dB", "-20 dB", "-10 dB", "0 dB", "6 dB",
                                           "max |WER(g) - WER(0 dB)|"]
    wer = rep["models"][0]["wer"]
    assert re.split(r"\s{2,}", row) == ["chunked", "chunk 320 ms, left 320 ms, sinks 4",
                                        *(f"{wer[str(g)]['wer']:.2f}" for g in (-30, -20, -10, 0, 6)),
                                        f"{max_wer_change(wer):.2f}"]
    assert "level robustness" in proc.stderr  # the progress bar
