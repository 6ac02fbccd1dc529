"""WER alignments (exact C/S/D/I scripts on hand-made pairs, against an independent edit distance),
result.txt, text/trn readers, and RESULTS.md + plots from a hand-made experiment tree."""

import json
import math
import random

import numpy as np
import pytest
from matplotlib.image import imread

from xtrans.bin.score import main as score_main
from xtrans.scoring.results import collect_results, stage_variant
from xtrans.scoring.plots import plot_training_curves, read_steps
from xtrans.scoring.wer import align, format_result, read_text, score, write_text, write_trn


def word_errors(ref, hyp):
    """Plain Levenshtein distance between word sequences: an independent reference for align()."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


@pytest.mark.parametrize("ref, hyp, ops", [
    ("A B C D", "A X C D E", "C S C C I"),
    ("A B C D", "A C D", "C D C C"),
    ("A B", "", "D D"),
    ("", "A B", "I I"),
    ("A B C", "A B C", "C C C"),
    ("A B C", "X Y Z", "S S S"),
    ("A B C D E", "B C D E F", "D C C C C I"),
])
def test_alignment_exact(ref, hyp, ops):
    a = align(ref.split(), hyp.split())
    assert a.ops == ops.split()
    # the pairs rebuild both sides
    assert [r for r, _ in a.pairs if r is not None] == ref.split()
    assert [h for _, h in a.pairs if h is not None] == hyp.split()


def test_counts_and_wer():
    c = align("A B C D".split(), "A X C D E".split()).counts
    assert (c.ref_words, c.cor, c.sub, c.dele, c.ins) == (4, 3, 1, 0, 1)
    assert c.wer == pytest.approx(50.0)
    assert align([], []).counts.wer == 0.0 and math.isinf(align([], ["A"]).counts.wer)


def test_alignment_cost_is_edit_distance():
    rng = random.Random(0)
    for _ in range(200):
        ref = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 7))]
        a = align(ref, hyp)
        assert a.counts.errors == word_errors(ref, hyp)
        assert a.counts.cor + a.counts.sub + a.counts.dele == len(ref)
        assert a.counts.cor + a.counts.sub + a.counts.ins == len(hyp)


def test_score_totals_missing_and_result_txt():
    refs = {"u1": "A B C D", "u2": "HELLO WORLD", "u3": "X"}
    hyps = {"u1": "A X C D E", "u2": "hello"}
    r = score(refs, hyps, ignore_case=True)
    assert r.missing == ["u3"]
    s = r.summary()
    assert (s["N"], s["C"], s["S"], s["D"], s["I"], s["missing"]) == (7, 4, 1, 2, 1, 1)
    assert s["WER"] == pytest.approx(400 / 7)
    text = format_result(r)
    assert text.startswith("%WER 57.14 [ 4 / 7, 1 ins, 2 del, 1 sub ]")
    block = text.split("id: (u1)\n")[1].split("\n\n")[0].splitlines()
    assert block == ["Scores: (#C #S #D #I) 3 1 0 1", "REF:  A B C D ***", "HYP:  A X C D E",
                     "Eval:   S     I"]
    assert "REF:  HELLO WORLD\nHYP:  HELLO ***\nEval:       D" in text
    with pytest.raises(ValueError, match="no reference"):
        score({"u1": "A"}, {"u9": "A"})


def test_text_and_trn_files(tmp_path):
    items = [("b", "TWO WORDS"), ("a", "ONE"), ("c", "")]
    write_text(items, tmp_path / "text")
    write_trn(items, tmp_path / "hyp.trn")
    assert (tmp_path / "text").read_text() == "a ONE\nb TWO WORDS\nc\n"
    assert (tmp_path / "hyp.trn").read_text() == "ONE (a)\nTWO WORDS (b)\n(c)\n"
    assert read_text(tmp_path / "text") == read_text(tmp_path / "hyp.trn") == dict(items)
    (tmp_path / "bad.trn").write_text("NO ID HERE\n")
    with pytest.raises(ValueError, match="bad.trn:1"):
        read_text(tmp_path / "bad.trn")
    (tmp_path / "dup").write_text("a X\na Y\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_text(tmp_path / "dup")


def test_score_cli_ref_hyp(tmp_path, capsys):
    (tmp_path / "ref").write_text("u1 A B C D\n")
    (tmp_path / "hyp").write_text("u1 A X C D E\n")
    assert score_main(["--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"),
                       "--result", str(tmp_path / "result.txt")]) == 0
    out = capsys.readouterr().out
    assert "%WER 50.00 [ 2 / 4, 1 ins, 0 del, 1 sub ]" in out
    assert json.loads(out.splitlines()[-1])["S"] == 1
    assert "Eval:   S     I" in (tmp_path / "result.txt").read_text()


def test_stage_variant():
    assert stage_variant("exp/stage2/2a/best.pt") == (2, "a")
    assert stage_variant("exp/stage1/best.pt") == (1, None)
    assert stage_variant("exp/stage4/decode_x") == (4, None)
    assert stage_variant("model.pt") == (None, None)


def _fake_decode(exp, rel, ref, hyp, **info):
    d = exp / rel
    d.mkdir(parents=True)
    (d / "ref").write_text(ref)
    (d / "text").write_text(hyp)
    base = {"model": str(exp / rel.split("/decode_")[0] / "best.pt"), "data": "dump/test_clean",
            "mode": "simulated", "chunk_ms": None, "left_ms": None, "sinks": 0, "pos_conv": "chunk",
            "search": "greedy", "beam": None, "rtf": 0.1, "latency_ms": None}
    base.update(info)
    (d / "decode.json").write_text(json.dumps(base))


def test_results_md_and_plots(tmp_path, capsys):
    exp = tmp_path / "exp"
    ref = "u1 A B C D\nu2 E F\n"
    _fake_decode(exp, "stage2/2a/decode_sim_640", ref, "u1 A B C D\nu2 E F\n", chunk_ms=640)
    _fake_decode(exp, "stage2/2a/decode_stream_640", ref, "u1 A X C D\nu2 E F\n", chunk_ms=640,
                 mode="streaming", latency_ms={"mean": 12.5, "p95": 20.0})
    _fake_decode(exp, "stage2/2a/decode_sim_320", ref, "u1 A X C\nu2 E F G\n", chunk_ms=320)
    _fake_decode(exp, "stage5/5b/decode_s16", ref, "u2 E F\n", chunk_ms=640, left_ms=640, sinks=16,
                 search="beam", beam=4)
    _fake_decode(exp, "stage1/decode_full", ref, "u1 A B C D\nu2 E F\n")
    (exp / "stage2" / "2a" / "decode_broken").mkdir()
    (exp / "stage2" / "2a" / "decode_broken" / "decode.json").write_text("{not json")
    # training logs: a good one, one with a cut last line and skipped updates, an empty one
    (exp / "stage1" / "steps.jsonl").write_text("".join(json.dumps({"step": s, "loss": 10 / s}) + "\n"
                                                        for s in range(1, 21)))
    (exp / "stage2" / "2a" / "steps.jsonl").write_text(
        '{"step": 1, "loss": 3.0}\n{"step": 2, "skipped": true}\n{"step": 3, "loss": 2.0}\n{"step": 4, "lo')
    (exp / "stage5" / "5b" / "steps.jsonl").write_text("")
    assert read_steps(exp / "stage2" / "2a" / "steps.jsonl") == [(1, 3.0), (3, 2.0)]

    rows = collect_results(exp)
    assert [(r.stage, r.variant, r.mode, r.chunk_ms) for r in rows] == [
        (1, None, "simulated", None), (2, "a", "simulated", 320), (2, "a", "simulated", 640),
        (2, "a", "streaming", 640), (5, "b", "simulated", 640)]
    wers = [r.wer for r in rows]
    assert wers == pytest.approx([0.0, 50.0, 0.0, 100 / 6, 400 / 6])
    assert (exp / "stage2" / "2a" / "decode_sim_320" / "result.txt").is_file()

    out = tmp_path / "RESULTS.md"
    assert score_main(["--results", str(exp), "--out", str(out)]) == 0
    md = out.read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| stage | variant | test set | chunk ms | left ms | sinks | pos_conv | mode |")
    assert len(lines) == 1 + len(rows)
    assert "| 2 | a | test_clean | 640 | unlimited | 0 | chunk | streaming | greedy | 16.67 | 1 / 0 / 0 (6) " \
           "| 0.100 | 12.5 / 20.0 |" in md
    assert "| 5 | b | test_clean | 640 | 640 | 16 | chunk | simulated | beam 4 | 66.67 | 0 / 4 / 0 (6) |" in md
    assert "| 1 | - | test_clean | full | - | 0 |" in md
    for png in ("wer_vs_chunk.png", "training_curves.png"):
        assert f"(plots/{png})" in md
        img = imread(tmp_path / "plots" / png)
        assert img.ndim == 3 and img.shape[0] > 100 and np.ptp(img) > 0


def test_no_training_logs(tmp_path):
    assert plot_training_curves(tmp_path, tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()
