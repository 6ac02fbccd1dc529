"""WER alignments (exact C/S/D/I scripts on hand-made pairs, against an independent edit distance),
result.txt, text/trn readers, and RESULTS.md + plots from a hand-made experiment tree."""

import json
import math
import random

import numpy as np
import pytest
from matplotlib.image import imread

from xtrans.bin.score import main as score_main
from xtrans.scoring.results import ResultRow, collect_results, stage_variant
from xtrans.scoring.plots import (
    plot_training_curves,
    plot_wer_vs_chunk,
    read_steps,
    training_curves_figure,
    wer_series,
    wer_vs_chunk_figure,
)
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


def _row(stage, variant, chunk_ms, left_ms, sinks, wer, mode="simulated", search="greedy", data="test_clean"):
    return ResultRow(decode_dir=f"exp/stage{stage}/{stage}{variant or ''}/decode_{mode}_{chunk_ms}_{search}",
                     stage=stage, variant=variant, data=data, mode=mode, chunk_ms=chunk_ms, left_ms=left_ms,
                     sinks=sinks, pos_conv="chunk", search=search, beam=4 if search == "beam" else None, wer=wer)


def recipe_rows(mode="simulated", search="greedy"):
    """What the LibriSpeech recipe decodes: stage 1 full attention, 2a-2d each at its own chunk,
    3a-3c at 640 ms with other left contexts, the multi-chunk stage-4 model at three chunks, 5a/5b
    (sinks) at 640 ms. At 640 ms the best WER is stage 5b's, not stage 2b's."""
    return [_row(1, None, None, None, 0, 3.0, mode, search)] + [
        _row(2, v, c, None, 0, w, mode, search)
        for v, c, w in (("a", 320, 6.1), ("b", 640, 4.9), ("c", 1280, 4.2), ("d", 2560, 3.7))] + [
        _row(3, v, 640, left, 0, w, mode, search)
        for v, left, w in (("a", 640, 4.4), ("b", 1280, 4.6), ("c", None, 5.0))] + [
        _row(4, None, c, 1280, 0, w, mode, search) for c, w in ((320, 5.5), (640, 4.7), (1280, 4.3))] + [
        _row(5, v, 640, 640, s, w, mode, search) for v, s, w in (("a", 4, 4.3), ("b", 16, 4.25))] + [
        _row(2, "b", 640, None, 0, None, mode, search)]  # not scored: left out


def test_wer_series_never_mix_stages():
    series = wer_series(recipe_rows() + recipe_rows("streaming", "beam"))
    assert {s.panel for s in series} == {("test_clean", "greedy", "simulated"), ("test_clean", "beam", "streaming")}
    got = [(s.kind, s.label, s.points) for s in series if s.panel == ("test_clean", "greedy", "simulated")]
    assert got == [
        ("reference", "stage 1 (full attention)", [(None, 3.0, None)]),
        ("line", "stage 2 (2a-2d, one model per chunk, unlimited left)",
         [(320, 6.1, "a"), (640, 4.9, "b"), (1280, 4.2, "c"), (2560, 3.7, "d")]),
        ("points", "stage 3a (left 640 ms)", [(640, 4.4, "a")]),
        ("points", "stage 3b (left 1280 ms)", [(640, 4.6, "b")]),
        ("points", "stage 3c (unlimited left)", [(640, 5.0, "c")]),
        ("line", "stage 4 (one model at several chunks, left 1280 ms)",
         [(320, 5.5, None), (640, 4.7, None), (1280, 4.3, None)]),
        ("points", "stage 5a (left 640 ms, 4 sinks)", [(640, 4.3, "a")]),
        ("points", "stage 5b (left 640 ms, 16 sinks)", [(640, 4.25, "b")]),
    ]
    # a stage with two models at one chunk, or models that differ in more than the chunk, is never one line
    two = wer_series([_row(2, "a", 320, None, 0, 6.0), _row(2, "a", 640, None, 0, 5.5),
                      _row(2, "b", 640, None, 0, 4.9)])
    assert [(s.kind, s.label, [w for _, w, _ in s.points]) for s in two] == [
        ("line", "stage 2a (unlimited left)", [6.0, 5.5]), ("points", "stage 2b (unlimited left)", [4.9])]
    other = wer_series([_row(3, "a", 640, 640, 0, 4.4), _row(3, "b", 1280, 1280, 0, 4.1)])
    assert [(s.kind, s.label) for s in other] == [("points", "stage 3a (left 640 ms)"),
                                                  ("points", "stage 3b (left 1280 ms)")]


def test_wer_vs_chunk_figure_draws_one_line_per_stage(tmp_path):
    fig = wer_vs_chunk_figure(recipe_rows() + recipe_rows("streaming"))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["test_clean: greedy search, simulated",
                                               "test_clean: greedy search, real streaming"]
    for ax in axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["320", "640", "1280", "2560"]
        lines = {line.get_label(): line for line in ax.get_lines()}
        reference = lines["stage 1 (full attention)"]
        assert list(reference.get_ydata()) == [3.0, 3.0] and reference.get_xydata()[0, 0] == 0  # horizontal
        stage2 = lines["stage 2 (2a-2d, one model per chunk, unlimited left)"]
        assert list(stage2.get_xdata()) == [0, 1, 2, 3] and list(stage2.get_ydata()) == [6.1, 4.9, 4.2, 3.7]
        stage4 = lines["stage 4 (one model at several chunks, left 1280 ms)"]
        assert list(stage4.get_xdata()) == [0, 1, 2] and list(stage4.get_ydata()) == [5.5, 4.7, 4.3]
        points = {k: v for k, v in lines.items() if k.startswith(("stage 3", "stage 5"))}
        assert len(points) == 5 and all(v.get_linestyle() == "None" for v in points.values())
        xs = [float(v.get_xdata()[0]) for v in points.values()]
        assert all(1 < x < 1.75 for x in xs) and len(set(xs)) == 5  # beside 640 ms, none hidden
        assert {t.get_text() for t in ax.texts} >= {"2a", "2b", "2c", "2d", "3a", "3b", "3c", "5a", "5b"}
    legend = fig.legends[0]
    assert len(legend.get_texts()) == 8
    out = plot_wer_vs_chunk(recipe_rows(), tmp_path / "w.png")
    img = imread(out)
    assert img.ndim == 3 and np.ptp(img) > 0


def test_training_curves_one_log_panel_per_stage(tmp_path):
    def log(rel, losses):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "steps.jsonl").write_text(
            "".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in enumerate(losses, 1)))

    log("stage1", [1000.0, 300.0, 50.0, 10.0, 8.0])
    log("stage2/2a", [9.0, 7.0, 6.5])
    log("stage2/2b", [9.5, 7.5, 6.0])
    log("stage4", [7.0, 6.0])
    fig = training_curves_figure(tmp_path)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["stage 1", "stage 2", "stage 4"]
    assert all(ax.get_yscale() == "log" for ax in axes)
    assert [[line.get_label() for line in ax.get_lines()] for ax in axes] == [
        ["stage 1"], ["stage 2a", "stage 2b"], ["stage 4"]]
    low, high = axes[1].get_ylim()
    assert 5 < low and high < 11  # stage 2 on its own scale, not under stage 1's 1000
    assert list(axes[2].get_lines()[0].get_xdata()) == [1, 2]
    assert list(training_curves_figure(tmp_path, smooth=2).axes[0].get_lines()[0].get_ydata()) == \
        [1000.0, 650.0, 175.0, 30.0, 9.0]
    log("stage3/3a", [2.0, 0.0])  # a loss that is not positive: linear scale
    assert training_curves_figure(tmp_path).axes[2].get_yscale() == "linear"


def test_stage_times_section(tmp_path, capsys):
    """asr.sh's exp/stage_times.tsv becomes a "Wall time" table with the total; a bad line is named."""
    from xtrans.scoring.stage_times import read_stage_times
    exp = tmp_path / "exp"
    _fake_decode(exp, "stage1/decode_full", "u1 A\n", "u1 A\n")
    (exp / "stage_times.tsv").write_text("6\t300\ttraining stage 1: 1\n1\t65\tdata preparation\n")
    assert [r.stage for r in read_stage_times(exp / "stage_times.tsv")] == [1, 6]
    out = tmp_path / "RESULTS.md"
    assert score_main(["--results", str(exp), "--out", str(out)]) == 0
    md = out.read_text()
    assert "## Wall time" in md and "CPU cores" in md
    assert "| 1 | data preparation | 1 min 05 s | 65 |" in md
    assert "| 6 | training stage 1: 1 | 5 min 00 s | 300 |" in md
    assert "| all | stages 1, 6 | 6 min 05 s | 365 |" in md
    (exp / "stage_times.tsv").write_text("6\tlong\tx\n")
    with pytest.raises(ValueError, match="stage_times.tsv:1"):
        read_stage_times(exp / "stage_times.tsv")
    assert score_main(["--results", str(exp), "--out", str(out)]) == 0
    assert "## Wall time" not in out.read_text()
    assert "left out" in capsys.readouterr().err
