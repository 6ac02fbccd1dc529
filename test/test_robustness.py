"""python -m xtrans.bin.robustness on tiny saved checkpoints, its conditions and
python -m xtrans.bin.make_noise: every model x condition x level in the report; clean and gain equal
to the level tool; a noise cell equal to decoding files that hold the transformed audio (an
independent path through files); conditions deterministic per seed, different per utterance, at
the requested SNR, reverberation keeping the length, rooms other than training's; the Markdown
section and the plot; bad options refused with exit status 2."""

import contextlib
import io
import json
import pickle
import re

import numpy as np
import pytest
import soundfile

from xtrans.bin.decode import main as decode_main
from xtrans.bin.level_robustness import main as level_main
from xtrans.bin.make_noise import main as make_noise_main
from xtrans.bin.robustness import main as robustness_main
from xtrans.bin.score import main as score_main
from xtrans.config import to_dict
from xtrans.data.audio import load_waveform
from xtrans.data.augment import HELD_OUT_FAMILIES, measured_snr, read_scp, room_bank
from xtrans.data.kaldi_dir import DataDir, read_data_dir, write_data_dir
from xtrans.scoring.plots import robustness_figure
from xtrans.scoring.robustness import (DEFAULT_CONDITIONS, BabbleAt, MeasuredRoom, NoiseAt, RoomAt, Setup,
                                       TelephoneLine, change, held_out_rooms, parse_condition_levels, parse_conditions)
from xtrans.testing.train_fixtures import save_decoding_checkpoint
from xtrans.train.config import MaskConfig, TrainConfig

SENTENCES = ["zero one two", "three four five", "six seven eight nine", "one oh two"]
LEVELS = {"gain": [-10, 0], "noise": [10, 0], "babble": [5], "reverb": [0.6], "clean": [None], "telephone": [None]}
OPTIONS = ["--gains", "-10,0", "--snrs", "10,0", "--babble-snrs", "5", "--rt60s", "0.6", "--rooms", "2"]


def _speech(size: int = 16000, seed: int = 0) -> np.ndarray:
    """A quiet speech-like signal: tones under a syllable-rate envelope, with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(size) / 16000
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (180, 360, 900, 2200)) * envelope
    return (0.02 * x).astype(np.float32)


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """exp/stage1/best.pt (full attention) and exp/stage5/5a/best.pt (trained under chunk 320 ms,
    left 320 ms, 4 sinks), a data dir of 4 utterances of 16 kHz noise bursts, a 1-utterance data dir
    and a noise.scp of 2 generated noises."""
    root = tmp_path_factory.mktemp("robustness")
    for k, run in enumerate([root / "exp" / "stage1", root / "exp" / "stage5" / "5a"]):
        extra = {}
        if k == 1:
            extra["config"] = to_dict(TrainConfig(mask=MaskConfig(chunk_size=16, left_context=16, num_sinks=4)))
            extra["config"]["data"]["tokenizer"] = str(run / "bpe.model")
        save_decoding_checkpoint(run, SENTENCES, seed=(4, 1)[k], waveform_norm="none", extra=extra)
    rng = np.random.default_rng(0)
    wav_scp, text = {}, {}
    for k in range(4):
        path = root / f"u{k}.wav"
        level = (0.05, 0.2, 0.5, 0.02)[k]
        soundfile.write(path, (level * rng.standard_normal(8000 + 3000 * k)).clip(-1, 1).astype(np.float32), 16000)
        wav_scp[f"u{k}"], text[f"u{k}"] = str(path), SENTENCES[k]
    write_data_dir(DataDir(wav_scp=wav_scp, text=text), root / "data" / "test")
    write_data_dir(DataDir(wav_scp={"u0": wav_scp["u0"]}, text={"u0": text["u0"]}), root / "data" / "one")
    assert make_noise_main(["--num", "2", "--seconds", "0.5", "--out", str(root / "noise")]) == 0
    return root


def _models(exp):
    return [str(exp / "exp" / "stage1" / "best.pt"), str(exp / "exp" / "stage5" / "5a" / "best.pt")]


@pytest.fixture(scope="module")
def report(exp):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = robustness_main(["--model", _models(exp)[0], "--model", _models(exp)[1], "--data",
                              str(exp / "data" / "test"), *OPTIONS, "--out", str(exp / "exp" / "robustness.json"),
                              "--plot", str(exp / "plots" / "robustness.png"), "--markdown", str(exp / "rob.md")])
    assert rc == 0
    return json.loads((exp / "exp" / "robustness.json").read_text()), stdout.getvalue()


def _key(level):
    return "-" if level is None else f"{level:g}"


def test_report_has_every_model_condition_level(report):
    rep, _ = report
    assert [c["name"] for c in rep["conditions"]] == list(DEFAULT_CONDITIONS)  # rir needs --rir_scp
    assert {c["name"]: c["levels"] for c in rep["conditions"]} == LEVELS
    assert rep["seed"] == 12345 and rep["num_utts"] == 4
    noise = next(c for c in rep["conditions"] if c["name"] == "noise")
    assert noise["source"] == "generated" and noise["families"] == list(HELD_OUT_FAMILIES) and noise["held_out"]
    assert [m["tag"] for m in rep["models"]] == ["stage1", "stage5a"]
    assert rep["models"][1]["streaming"]["description"] == "chunk 320 ms, left 320 ms, sinks 4"
    words = sum(len(s.split()) for s in SENTENCES)
    for m in rep["models"]:
        assert {c: sorted(levels) for c, levels in m["wer"].items()} \
            == {c: sorted(_key(v) for v in levels) for c, levels in LEVELS.items()}
        for levels in m["wer"].values():
            for entry in levels.values():
                assert entry["words"] == words and entry["failed"] == 0
                assert entry["errors"] == entry["sub"] + entry["del"] + entry["ins"]
                assert entry["wer"] == pytest.approx(100 * entry["errors"] / entry["words"])


def test_clean_and_gain_equal_the_level_tool(exp, report, tmp_path):
    """The gain condition is the level tool's measurement, and clean is 0 dB (the recordings are within
    full scale, where apply_gain(x, 0) = x); the models hear the conditions (some WER changes)."""
    out = tmp_path / "level.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert level_main(["--model", _models(exp)[0], "--model", _models(exp)[1], "--data", str(exp / "data" / "test"),
                           "--gains", "-10,0", "--out", str(out)]) == 0
    level = json.loads(out.read_text())
    for m, lm in zip(report[0]["models"], level["models"]):
        assert m["wer"]["gain"] == lm["wer"]
        assert m["wer"]["clean"]["-"] == m["wer"]["gain"]["0"]
    assert any(entry["errors"] != m["wer"]["clean"]["-"]["errors"] for m in report[0]["models"]
               for c in ("noise", "babble", "reverb", "telephone") for entry in m["wer"][c].values())


def test_noise_cell_equals_decoding_transformed_files(exp, report):
    """noise at 0 dB equals decoding float WAV files that hold NoiseAt(0)(x, index): each utterance
    gets its own draw by its position in the data directory, in the tool as outside it."""
    src = read_data_dir(exp / "data" / "test")
    wav_scp = {}
    for index, utt in enumerate(src.utt_ids):
        samples = load_waveform(src.wav_scp[utt]).numpy()  # (S,) at 16 kHz, as the decoder hands it over
        path = exp / f"{utt}_noise0.wav"
        soundfile.write(path, NoiseAt(0.0, seed=12345)(samples, index), 16000, subtype="FLOAT")
        wav_scp[utt] = str(path)
    write_data_dir(DataDir(wav_scp=wav_scp, text=src.text), exp / "data" / "test_noise0")
    outdir = exp / "decode" / "noise0"
    with contextlib.redirect_stdout(io.StringIO()):
        assert decode_main(["--model", _models(exp)[0], "--data", str(exp / "data" / "test_noise0"),
                            "--outdir", str(outdir)]) == 0
        assert score_main(["--decode_dir", str(outdir)]) == 0
    wer = json.loads((outdir / "wer.json").read_text())
    got = report[0]["models"][0]["wer"]["noise"]["0"]
    assert (got["words"], got["sub"], got["del"], got["ins"]) == (wer["N"], wer["S"], wer["D"], wer["I"])


def _transforms(exp):
    data = str(exp / "data" / "test")
    return {"generated noise": NoiseAt(10.0), "noise list": NoiseAt(10.0, noise_scp=str(exp / "noise" / "noise.scp")),
            "babble": BabbleAt(10.0, data), "reverb": RoomAt(0.6, rooms=2)}


@pytest.mark.parametrize("name", ["generated noise", "noise list", "babble", "reverb"])
def test_conditions_deterministic_and_different_per_utterance(exp, name):
    transform = _transforms(exp)[name]
    x = _speech()
    first = transform(x, 0)
    assert first.dtype == np.float32 and first.shape == x.shape
    copy = pickle.loads(pickle.dumps(transform))  # as a worker process receives it
    np.testing.assert_array_equal(copy(x, 0), first)
    assert not np.array_equal(transform(x, 1), first)
    if name == "reverb":  # its rooms are taken in turn
        np.testing.assert_array_equal(transform(x, 2), first)
    else:  # another seed, another draw
        other = type(transform)(**{**transform.__dict__, "seed": 7})
        assert not np.array_equal(other(x, 0), first)


@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0, 0.0, -5.0])
@pytest.mark.parametrize("name", ["generated noise", "noise list", "babble"])
def test_noise_mix_has_the_requested_snr(exp, name, snr):
    transform = type(_transforms(exp)[name])(**{**_transforms(exp)[name].__dict__, "snr_db": snr})
    speech = _speech(seed=3)
    mix = transform(speech, 3)
    assert np.max(np.abs(mix)) < 0.99  # within full scale: limit_peak left it as mixed
    assert measured_snr(speech, mix.astype(np.float64) - speech) == pytest.approx(snr, abs=0.1)


def test_reverb_keeps_length_and_uses_rooms_training_never_draws():
    for size in (8000, 12345):
        x = _speech(size)
        y = RoomAt(0.6, rooms=2)(x, 1)
        assert y.shape == x.shape and y.dtype == np.float32 and np.max(np.abs(y)) <= 0.99
    rooms = held_out_rooms(0.6, 12345, 2)
    assert len(rooms) == 2 and not np.array_equal(rooms[0], rooms[1])
    for seed in (0, 1):  # training's banks: small room_seed values (default 1)
        for trained in room_bank(2, (0.6, 0.6), seed):
            assert all(r.shape != trained.shape or not np.array_equal(r, trained) for r in rooms)
    x = _speech(9000)
    assert TelephoneLine()(x, 0).shape == x.shape


def test_markdown_table_and_plot(exp, report):
    rep, stdout = report
    header, *rows = stdout.splitlines()[:3]
    columns = re.split(r"\s{2,}", header)
    assert columns == ["model", "streaming", "clean", "gain -10 dB", "gain 0 dB", "noise 10 dB", "noise 0 dB",
                       "babble 5 dB", "reverb 0.6 s", "telephone"]
    for row, m in zip(rows, rep["models"]):
        assert re.split(r"\s{2,}", row)[2:] == [f"{m['wer'][c][_key(v)]['wer']:.2f}"
                                                for c in DEFAULT_CONDITIONS for v in LEVELS[c]]
    assert "noise: generated noise of the held-out families sweeps and crackle" in stdout
    md = (exp / "rob.md").read_text()
    assert md.startswith("## Robustness") and "seed 12345" in md
    assert "**noise**: generated noise of the held-out families sweeps and crackle (never drawn in training)" in md
    assert "**reverb**: convolved with one of 2 rooms per RT60 (s)" in md and "**clean**" not in md
    assert "| model | streaming | clean | 10 dB | 0 dB | 10 dB - clean |" in md
    assert "| model | streaming | clean | -10 dB | 0 dB | max \\|WER(g) - clean\\| |" in md
    assert "| model | streaming | clean | telephone | telephone - clean |" in md
    for m in rep["models"]:
        clean = m["wer"]["clean"]["-"]["wer"]
        row = next(line for line in md.split("**noise**")[1].splitlines() if line.startswith(f"| {m['tag']} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        noise = m["wer"]["noise"]
        assert cells[2:] == [f"{clean:.2f}", f"{noise['10']['wer']:.2f}", f"{noise['0']['wer']:.2f}",
                             change(noise["10"]["wer"], clean)]
    assert "![robustness](plots/robustness.png)" in md
    assert (exp / "plots" / "robustness.png").stat().st_size > 0
    fig = robustness_figure(rep)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["gain", "noise (generated)", "babble", "reverb", "channels"]
    for ax in axes:
        labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert labels == ["stage1 (full attention)", "stage5a (chunk 320 ms, left 320 ms, sinks 4)"]


def test_change_column():
    assert change(12.5, 10.0) == "+2.50 (x1.25)"
    assert change(5.0, 0.0) == "+5.00" and change(None, 3.0) == "-"


def test_noise_list_is_named_in_the_report(exp, tmp_path):
    scp = str(exp / "noise" / "noise.scp")
    out = tmp_path / "r.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert robustness_main(["--model", _models(exp)[0], "--data", str(exp / "data" / "test"), "--conditions",
                                "noise,clean", "--snrs", "-5", "--noise-scp", scp, "--out", str(out),
                                "--markdown", str(tmp_path / "r.md")]) == 0
    rep = json.loads(out.read_text())
    assert [c["name"] for c in rep["conditions"]] == ["clean", "noise"]
    noise = rep["conditions"][1]
    assert noise["source"] == "noise_scp" and noise["noise_scp"] == scp and noise["levels"] == [-5]
    assert f"a noise of `{scp}` (2 recordings) per utterance" in (tmp_path / "r.md").read_text()


def test_make_noise_writes_wavs_and_a_list(exp, tmp_path):
    entries = read_scp(str(exp / "noise" / "noise.scp"))
    assert [k for k, _ in entries] == ["sweeps-0000", "crackle-0001"]
    for _, path in entries:
        x, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000 and x.shape == (8000,) and np.max(np.abs(x)) == pytest.approx(0.5, abs=1e-3)
    with contextlib.redirect_stdout(io.StringIO()):
        assert make_noise_main(["--num", "2", "--seconds", "0.5", "--out", str(tmp_path / "again")]) == 0
    for (_, a), (_, b) in zip(entries, read_scp(str(tmp_path / "again" / "noise.scp"))):
        np.testing.assert_array_equal(soundfile.read(a)[0], soundfile.read(b)[0])  # the same seed, the same noise


@pytest.mark.parametrize("argv, message", [
    (["--families", "sweeps,wind"], "--families: expected noise families of .* found 'wind'"),
    (["--num", "0"], "--num: expected >= 1 files, found 0"),
    (["--seconds", "-1"], "--seconds: expected > 0, found -1"),
])
def test_make_noise_bad_options(tmp_path, capsys, argv, message):
    assert make_noise_main([*argv, "--out", str(tmp_path / "n")]) == 2
    assert re.search("error: " + message, capsys.readouterr().err)
    assert not (tmp_path / "n").exists()


def test_library_errors(exp):
    with pytest.raises(ValueError, match="--conditions: expected conditions of clean, gain, noise, babble, reverb, "
                                         "rir, telephone, found 'wind'"):
        parse_conditions("clean,wind")
    with pytest.raises(ValueError, match="--rt60s: expected RT60s in seconds > 0 such as 0.3,0.6,0.9, found '0'"):
        parse_condition_levels(["reverb"], {"reverb": "0.3,0"})
    with pytest.raises(ValueError, match="--seed: expected an integer >= 0, found -1"):
        Setup(data_dir="d", seed=-1)
    with pytest.raises(ValueError, match="--noise_scp: expected the noise condition in --conditions"):
        Setup(data_dir="d", noise_scp=str(exp / "noise" / "noise.scp")).check(["clean"], {}, 4)


@pytest.mark.parametrize("argv, message", [
    (["--conditions", "clean,wind"], "--conditions: expected conditions of clean, .* found 'wind'"),
    (["--conditions", ","], "--conditions: expected comma-separated conditions"),
    (["--snrs", "10,x"], "--snrs: expected comma-separated finite SNRs in dB such as 20,10,5,0, found 'x'"),
    (["--snrs", "-5,-5"], "--snrs: expected each SNR once, found -5 twice"),
    (["--babble-snrs", "5,,"], "--babble_snrs: expected comma-separated finite SNRs in dB .* found ''"),
    (["--gains", "-10,nan"], "--gains: expected comma-separated finite gains in dB"),
    (["--rt60s", "0.3,0"], "--rt60s: expected RT60s in seconds > 0"),
    (["--rt60s", "0.01"], "--rt60s: expected RT60s that simulated rooms .* reach, found 0.01 s"),
    (["--noise_scp", "missing.scp"], "--noise_scp: expected a readable '<id> <wav entry>' list, found missing.scp"),
    (["--noise_scp", "NOISE", "--conditions", "clean,reverb"], "--noise_scp: expected the noise condition"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, found -1"),
    (["--rooms", "0"], "--rooms: expected an integer >= 1, found 0"),
    (["--talkers", "0"], "--talkers: expected an integer >= 1, found 0"),
    (["--data", "ONE"], "--conditions: babble draws its talkers from the other utterances of --data; "
                        "expected at least 2, found 1"),
    (["--sinks", "4"], "--left_ms/--sinks: expected together with --chunk_ms"),
])
def test_bad_options_exit_2(exp, capsys, argv, message):
    argv = [str(exp / "noise" / "noise.scp") if a == "NOISE" else str(exp / "data" / "one") if a == "ONE" else a
            for a in argv]
    data = [] if "--data" in argv else ["--data", str(exp / "data" / "test")]
    assert robustness_main(["--model", _models(exp)[0], *data, *argv]) == 2
    assert re.search("error: " + message, capsys.readouterr().err)


def test_results_md_section_when_report_exists(exp, report, tmp_path):
    out = tmp_path / "RESULTS.md"
    with contextlib.redirect_stdout(io.StringIO()):
        assert score_main(["--results", str(exp / "exp"), "--out", str(out),
                           "--plots_dir", str(tmp_path / "plots")]) == 0
    text = out.read_text()
    assert "## Robustness" in text and "**noise**: generated noise of the held-out families" in text
    assert "![robustness](plots/robustness.png)" in text and (tmp_path / "plots" / "robustness.png").stat().st_size > 0

    broken = tmp_path / "broken_exp"
    broken.mkdir()
    (broken / "robustness.json").write_text('{"models": []}')
    with contextlib.redirect_stdout(io.StringIO()):
        assert score_main(["--results", str(broken), "--out", str(tmp_path / "R2.md")]) == 0
    assert "Robustness" not in (tmp_path / "R2.md").read_text()


def _write_rirs(root, rirs):
    """A '<id> <wav>' list of impulse responses written as float WAVs (16 kHz)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, rir in rirs.items():
        soundfile.write(root / f"{name}.wav", np.asarray(rir, dtype=np.float32), 16000, subtype="FLOAT")
        lines.append(f"{name} {root / f'{name}.wav'}")
    (root / "rirs.scp").write_text("\n".join(lines) + "\n")
    return root / "rirs.scp"


def _room(delay, seed, seconds=0.3):
    """A response with silence before its direct path (at ``delay``) and a decaying tail after it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    rir = np.zeros(delay + t.size)
    rir[delay:] = 0.1 * rng.standard_normal(t.size) * np.exp(-t / 0.05)
    rir[delay] = 0.8
    return rir


def test_measured_rooms_keep_time_and_length_and_draw_per_utterance(tmp_path):
    """An impulse response that is a delayed impulse leaves the speech as it is (the response is taken from
    its direct path on, scaled to 1 there); a list of rooms gives each utterance its own, the same every call."""
    delayed = np.zeros(300)
    delayed[200] = 0.5
    x = _speech(9000)
    identity = MeasuredRoom(str(_write_rirs(tmp_path / "one", {"late": delayed})))
    np.testing.assert_allclose(identity(x, 3), x, atol=1e-6)
    rooms = MeasuredRoom(str(_write_rirs(tmp_path / "three", {f"r{k}": _room(50 + 100 * k, k) for k in range(3)})))
    white = (0.05 * np.random.default_rng(7).standard_normal(9000)).astype(np.float32)
    outputs = [rooms(white, i) for i in range(12)]
    for i, y in enumerate(outputs):
        assert y.shape == white.shape and y.dtype == np.float32 and np.max(np.abs(y)) <= 0.99
        np.testing.assert_array_equal(y, rooms(white, i))
        lag = np.argmax(np.correlate(y, white, mode="full")) - (white.size - 1)
        assert lag == 0  # the direct path, the strongest tap, is at time 0 whatever silence preceded it
    assert len({y.tobytes() for y in outputs}) == 3  # all three rooms are drawn, by the utterance's index
    other_seed = [MeasuredRoom(rooms.rir_scp, seed=1)(white, i) for i in range(12)]
    assert any(not np.array_equal(a, b) for a, b in zip(other_seed, outputs))


def test_rir_condition_in_the_report(exp, tmp_path):
    """With --rir_scp the default conditions include rir; a list whose only response is a delayed impulse
    scores exactly as the clean recordings, and the report names the list and its rooms' RT60."""
    delayed = np.zeros(100)
    delayed[40] = 0.7
    identity = _write_rirs(tmp_path / "identity", {"late": delayed})
    out = tmp_path / "rir.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert robustness_main(["--model", _models(exp)[0], "--data", str(exp / "data" / "test"), *OPTIONS,
                                "--rir_scp", str(identity), "--out", str(out), "--markdown",
                                str(tmp_path / "rir.md")]) == 0
    rep = json.loads(out.read_text())
    assert [c["name"] for c in rep["conditions"]] == [*DEFAULT_CONDITIONS[:-1], "rir", "telephone"]
    rir = next(c for c in rep["conditions"] if c["name"] == "rir")
    assert rir["rir_scp"] == str(identity) and rir["responses"] == 1 and rir["levels"] == [None]
    wer = rep["models"][0]["wer"]
    assert wer["rir"]["-"] == wer["clean"]["-"]
    assert "**rir**: convolved with a measured impulse response" in (tmp_path / "rir.md").read_text()

    rooms = _write_rirs(tmp_path / "rooms", {f"r{k}": _room(30 * k, k, seconds=0.6) for k in range(2)})
    with contextlib.redirect_stdout(io.StringIO()):
        assert robustness_main(["--model", _models(exp)[0], "--data", str(exp / "data" / "test"),
                                "--conditions", "clean,rir", "--rir_scp", str(rooms), "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert [c["name"] for c in rep["conditions"]] == ["clean", "rir"]
    assert next(c for c in rep["conditions"] if c["name"] == "rir")["rt60_median"] > 0
    titles = [ax.get_title() for ax in robustness_figure(rep).axes if ax.get_visible()]
    assert titles == ["measured rooms"]


@pytest.mark.parametrize("argv, message", [
    (["--conditions", "clean,rir"], "--conditions: the rir condition needs --rir_scp"),
    (["--rir_scp", "RIRS", "--conditions", "clean,reverb"], "--rir_scp: expected the rir condition in --conditions"),
    (["--rir_scp", "missing.scp"], "--rir_scp: expected a readable '<id> <wav entry>' list, found missing.scp"),
    (["--rir_scp", "ZERO"], "--rir_scp: impulse response 'z' .*: rir: expected a non-zero impulse response"),
    (["--rir_scp", "GONE"], "--rir_scp: impulse response 'g': cannot read"),
])
def test_rir_bad_options_exit_2(exp, tmp_path, capsys, argv, message):
    paths = {"RIRS": _write_rirs(tmp_path / "ok", {"r": _room(10, 0)}),
             "ZERO": _write_rirs(tmp_path / "zero", {"z": np.zeros(50)})}
    if "GONE" in argv:
        (tmp_path / "gone.scp").write_text(f"g {tmp_path / 'absent.wav'}\n")
        paths["GONE"] = tmp_path / "gone.scp"
    argv = [str(paths.get(a, a)) for a in argv]
    assert robustness_main(["--model", _models(exp)[0], "--data", str(exp / "data" / "test"), *argv]) == 2
    assert re.search("error: " + message, capsys.readouterr().err)
