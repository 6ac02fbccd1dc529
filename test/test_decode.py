"""xtrans.bin.decode on a tiny saved checkpoint: the files it writes, simulated == real streaming
hypotheses for the same configuration, decode.json timing, then score and RESULTS.md on its output."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile

from xtrans.bin.decode import main as decode_main
from xtrans.bin.decode import percentile
from xtrans.bin.score import main as score_main
from xtrans.data.kaldi_dir import DataDir, read_data_dir, write_data_dir
from xtrans.testing.train_fixtures import save_decoding_checkpoint
from xtrans.scoring.wer import read_text

SENTENCES = ["zero one two", "three four five", "six seven eight nine", "one oh two"]


@pytest.fixture(scope="module")
def exp(tmp_path_factory, spoken_digits):
    """exp/stage5/5a/best.pt (trainer format) + bpe.model beside it, and a data dir of 4 utterances
    (8 kHz spoken digits of four voices)."""
    root = tmp_path_factory.mktemp("decode")
    save_decoding_checkpoint(root / "exp" / "stage5" / "5a", SENTENCES, seed=0, waveform_norm="cumulative")
    src = read_data_dir(spoken_digits)
    write_data_dir(src.subset(src.utt_ids[::len(src) // 4][:4]), root / "data" / "test")
    return root


def _decode(exp, tag, *extra):
    outdir = exp / "exp" / "stage5" / "5a" / f"decode_{tag}"
    rc = decode_main(["--model", str(exp / "exp" / "stage5" / "5a" / "best.pt"), "--data",
                      str(exp / "data" / "test"), "--outdir", str(outdir), *extra])
    assert rc == 0
    return outdir


def test_simulated_equals_streaming_and_files(exp):
    chunk = ["--chunk_ms", "320", "--left_ms", "320", "--sinks", "4"]
    sim = _decode(exp, "sim", "--mode", "simulated", *chunk)
    stream = _decode(exp, "stream", "--mode", "streaming", *chunk, "--piece_ms", "100")
    for d in (sim, stream):
        for name in ("text", "hyp.trn", "ref", "ref.trn", "decode.json"):
            assert (d / name).is_file(), f"{d / name} missing"
    hyp_sim, hyp_stream = read_text(sim / "text"), read_text(stream / "text")
    assert hyp_sim == hyp_stream
    assert read_text(sim / "hyp.trn") == hyp_sim
    refs = read_data_dir(exp / "data" / "test").text
    assert read_text(sim / "ref") == refs and sorted(hyp_sim) == sorted(refs)
    assert any(hyp_sim.values()), "the tiny model should emit some tokens"

    info = json.loads((stream / "decode.json").read_text())
    assert (info["stage"], info["variant"], info["mode"]) == (5, "a", "streaming")
    assert (info["chunk_ms"], info["left_ms"], info["sinks"], info["pos_conv"]) == (320, 320, 4, "chunk")
    assert info["num_utts"] == 4 and not info["failed"]
    assert info["rtf"] == pytest.approx(info["processing_seconds"] / info["audio_seconds"])
    assert set(info["utterances"]) == set(refs)
    lat = info["latency_ms"]
    assert lat["num_chunks"] >= 4 and 0 < lat["mean"] <= lat["max"] and lat["p95"] <= lat["max"]
    assert json.loads((sim / "decode.json").read_text())["latency_ms"] is None


def test_full_attention_beam_and_scoring(exp, capsys):
    full = _decode(exp, "full_beam", "--search", "beam", "--beam", "3")
    info = json.loads((full / "decode.json").read_text())
    assert (info["chunk_ms"], info["left_ms"], info["search"], info["beam"]) == (None, None, "beam", 3)
    assert score_main(["--decode_dir", str(full)]) == 0
    wer = json.loads((full / "wer.json").read_text())
    assert wer["N"] == sum(len(t.split()) for t in read_text(full / "ref").values())
    assert wer["WER"] == pytest.approx(100 * (wer["S"] + wer["D"] + wer["I"]) / wer["N"])
    assert (full / "result.txt").read_text().startswith("%WER")

    out = exp / "RESULTS.md"
    assert score_main(["--results", str(exp / "exp"), "--out", str(out)]) == 0
    table = [line for line in out.read_text().splitlines() if line.startswith("| 5 ")]
    assert len(table) >= 1 and any("beam 3" in row and "| full |" in row for row in table)
    assert (exp / "plots" / "wer_vs_chunk.png").is_file()


def test_errors(exp, capsys):
    model = str(exp / "exp" / "stage5" / "5a" / "best.pt")
    data = str(exp / "data" / "test")
    assert decode_main(["--model", model, "--data", data, "--outdir", str(exp / "x"), "--mode", "streaming"]) == 2
    assert "needs --chunk_ms" in capsys.readouterr().err
    assert decode_main(["--model", str(exp / "nope.pt"), "--data", data, "--outdir", str(exp / "x")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert decode_main(["--model", model, "--data", str(exp / "nodata"), "--outdir", str(exp / "x")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_percentile_matches_numpy():
    xs = [5.0, 1.0, 3.0, 2.0, 9.0, 4.0]
    for q in (0, 50, 95, 100):
        assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))


def test_parallel_jobs_give_the_same_hypotheses(exp):
    """--nj 2 (spawned worker processes), real streaming fed one chunk per call."""
    chunk = ["--chunk_ms", "320", "--left_ms", "320", "--sinks", "4"]
    sim = _decode(exp, "sim_nj1", "--mode", "simulated", *chunk)
    par = _decode(exp, "stream_nj2", "--mode", "streaming", *chunk, "--nj", "2")
    assert read_text(par / "text") == read_text(sim / "text")
    info = json.loads((par / "decode.json").read_text())
    assert info["nj"] == 2 and info["piece_ms"] == 320 and len(info["utterances"]) == 4


def test_plan_decodes_every_line_in_one_process(exp, capsys):
    """--plan: one output folder per line, each equal to the single-configuration run, and scored;
    command-line options override the lines'; a malformed plan is refused before any decoding."""
    model = str(exp / "exp" / "stage5" / "5a" / "best.pt")
    data = str(exp / "data" / "test")
    plan = exp / "plan.txt"
    plan.write_text("sim_c320 --mode simulated --chunk_ms 320 --left_ms 320 --sinks 4\n"
                    "\n# a comment\n"
                    "str_c320 --mode streaming --chunk_ms 320 --left_ms 320 --sinks 4\n"
                    "full_beam --search beam --beam 2\n")
    outdir = exp / "plan_out"
    assert decode_main(["--model", model, "--data", data, "--outdir", str(outdir), "--plan", str(plan),
                        "--nj", "2", "--beam", "3"]) == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["decode_test_full_beam", "decode_test_sim_c320",
                                                        "decode_test_str_c320"]
    single = _decode(exp, "single_sim_c320", "--mode", "simulated", "--chunk_ms", "320", "--left_ms", "320",
                     "--sinks", "4")
    for tag in ("sim_c320", "str_c320"):
        assert read_text(outdir / f"decode_test_{tag}" / "text") == read_text(single / "text")
    sim = json.loads((outdir / "decode_test_sim_c320" / "decode.json").read_text())
    stream = json.loads((outdir / "decode_test_str_c320" / "decode.json").read_text())
    beam = json.loads((outdir / "decode_test_full_beam" / "decode.json").read_text())
    assert (sim["mode"], sim["chunk_ms"], sim["sinks"]) == ("simulated", 320, 4)
    assert stream["mode"] == "streaming" and stream["latency_ms"]["num_chunks"] >= 4
    assert (beam["search"], beam["beam"], beam["chunk_ms"]) == ("beam", 3, None)  # --beam 3 overrides the line
    for tag in ("sim_c320", "str_c320", "full_beam"):
        assert (outdir / f"decode_test_{tag}" / "wer.json").is_file()
    assert "decoding" in capsys.readouterr().out

    plan.write_text("ok --mode simulated\nbad --mode streaming\n")  # streaming needs --chunk_ms
    assert decode_main(["--model", model, "--data", data, "--outdir", str(exp / "bad"), "--plan", str(plan)]) == 2
    assert "plan line bad" in capsys.readouterr().err and not (exp / "bad").exists()
    plan.write_text("same --mode simulated\nsame --search beam\n")
    assert decode_main(["--model", model, "--data", data, "--outdir", str(exp / "bad"), "--plan", str(plan)]) == 2
    assert "expected a new '<tag> <options>' line" in capsys.readouterr().err


def test_one_failing_utterance_is_reported_and_the_rest_decoded(tmp_path):
    """decode_utterance turns any failure into an error record, whatever the exception."""
    import argparse

    from xtrans.bin.decode import decode_utterance
    from xtrans.inference import Transcription

    class Flaky:
        def transcribe(self, samples, sample_rate):
            if samples.shape[0] == 800:
                raise RuntimeError("CUDA error: simulated")
            return Transcription(text="ok", tokens=[], pieces=[], timestamps=[], score=0.0)

    for name, n in (("a", 1600), ("b", 800)):
        soundfile.write(tmp_path / f"{name}.wav", 0.1 * np.ones(n), 16000)
    (tmp_path / "c.raw").write_bytes(b"\0" * 100)
    args = argparse.Namespace(mode="simulated")
    records = [decode_utterance(Flaky(), args, u, str(tmp_path / f), None)
               for u, f in (("a", "a.wav"), ("b", "b.wav"), ("c", "c.raw"))]
    assert records[0]["text"] == "ok" and "error" not in records[0]
    assert records[1] == {"utt": "b", "text": "", "error": "RuntimeError: CUDA error: simulated"}
    assert records[2]["text"] == "" and "headerless raw PCM" in records[2]["error"]

    from xtrans.bin.decode import run
    from xtrans.data.kaldi_dir import Segment
    data = DataDir(wav_scp={"rec": str(tmp_path / "a.wav")},
                   segments={"s1": Segment("rec", 0.0, None), "s2": Segment("gone", 0.0, None)})
    records = run(args, data, Flaky(), progress=False)  # a segment of a missing recording: one error
    assert [r.get("error") for r in records] == [None, "recording 'gone' is not in wav.scp"]


ROOT = Path(__file__).resolve().parents[1]
MINI_CONF = ROOT / "egs" / "mini_synth" / "asr1" / "conf"


@pytest.mark.parametrize("stage", ["1", "4", "5a"])
def test_planned_jobs_equal_their_command_line_text(stage, tmp_path):
    """--train_config/--decode_config call the planner directly; each job's options are what its
    printed line (xtrans.bin.decode_plan) parses to, and decode.yaml's beam reaches the beam jobs."""
    from xtrans.bin.decode import get_parser, planned_jobs
    from xtrans.recipes.decode_plan import plan

    decode_yaml = tmp_path / "decode.yaml"
    decode_yaml.write_text("searches: [greedy, beam]\nbeam: 7\nmodes: [simulated, streaming]\n"
                           "multi_chunk_ms: [320, 1280]\n")
    base = ["--model", "m.pt", "--data", "dump/test", "--outdir", "exp/x", "--nj", "2"]
    parser = get_parser()
    args = parser.parse_args(base + ["--train_config", str(MINI_CONF / f"train_stage{stage}.yaml"),
                                     "--decode_config", str(decode_yaml)])
    got = planned_jobs(args, parser)
    jobs = plan(args.train_config, args.decode_config)
    assert [tag for tag, _ in got] == [job.tag for job in jobs] and len(set(job.tag for job in jobs)) == len(jobs)
    assert len(jobs) == {"1": 2, "4": 8, "5a": 4}[stage]
    for (tag, ns), job in zip(got, jobs):
        text = parser.parse_args(base + shlex.split(job.args()) + ["--train_config", args.train_config,
                                                                  "--decode_config", args.decode_config])
        assert vars(ns) == {**vars(text), "outdir": f"exp/x/decode_test_{tag}"}
        assert ns.beam == (7 if job.search == "beam" else 4) and ns.nj == 2
    if stage == "5a":
        assert {(ns.mode, ns.chunk_ms, ns.left_ms, ns.sinks) for _, ns in got} == {
            ("simulated", 640.0, 640.0, 4), ("streaming", 640.0, 640.0, 4)}
    if stage == "1":
        assert [(ns.mode, ns.chunk_ms, ns.search) for _, ns in got] == [("simulated", None, "greedy"),
                                                                       ("simulated", None, "beam")]


def test_decode_runs_the_plan_of_two_configs(exp, capsys, tmp_path):
    """The recipe's stage 11: every planned configuration decoded and scored in one process, each
    equal to its single-configuration run; inconsistent options are refused before decoding."""
    model = str(exp / "exp" / "stage5" / "5a" / "best.pt")
    data = str(exp / "data" / "test")
    decode_yaml = tmp_path / "decode.yaml"
    decode_yaml.write_text("searches: [greedy]\nmodes: [simulated, streaming]\n")
    train_yaml = str(MINI_CONF / "train_stage5a.yaml")  # chunk 640 ms, left 640 ms, 4 sinks
    outdir = tmp_path / "out"
    assert decode_main(["--model", model, "--data", data, "--outdir", str(outdir), "--train_config", train_yaml,
                        "--decode_config", str(decode_yaml)]) == 0
    tags = ["simulated_chunk640_left640_sinks4_greedy", "streaming_chunk640_left640_sinks4_greedy"]
    assert sorted(p.name for p in outdir.iterdir()) == [f"decode_test_{t}" for t in tags]
    single = _decode(exp, "single_sim_c640", "--mode", "simulated", "--chunk_ms", "640", "--left_ms", "640",
                     "--sinks", "4")
    for tag in tags:
        d = outdir / f"decode_test_{tag}"
        assert read_text(d / "text") == read_text(single / "text") and (d / "wer.json").is_file()
        info = json.loads((d / "decode.json").read_text())
        assert (info["mode"], info["chunk_ms"], info["left_ms"], info["sinks"], info["search"]) == (
            tag.split("_")[0], 640, 640, 4, "greedy")
    assert "2 configurations" in capsys.readouterr().out

    bad = str(tmp_path / "bad")
    common = ["--model", model, "--data", data, "--outdir", bad]
    assert decode_main(common + ["--train_config", train_yaml]) == 2
    assert "--train_config: expected --decode_config with it, found none" in capsys.readouterr().err
    assert decode_main(common + ["--train_config", train_yaml, "--decode_config", str(decode_yaml),
                                 "--chunk_ms", "320"]) == 2
    assert "found --chunk_ms 320.0 on the command line" in capsys.readouterr().err
    assert decode_main(common + ["--train_config", train_yaml, "--decode_config", str(decode_yaml),
                                 "--plan", str(tmp_path / "plan.txt")]) == 2
    assert "--plan: expected either a plan file or --train_config/--decode_config, found both" in \
        capsys.readouterr().err
    assert decode_main(common + ["--train_config", train_yaml, "--decode_config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    decode_yaml.write_text("searches: [greedy]\nbeam: 0\n")
    assert decode_main(common + ["--train_config", train_yaml, "--decode_config", str(decode_yaml)]) == 2
    assert "beam: expected >= 1, found 0" in capsys.readouterr().err
    assert not Path(bad).exists()
