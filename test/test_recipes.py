"""The recipes run as users run them: run.sh through bash, on a copy of egs/, with tiny data.

- mini_synth: every stage 1-12 in --debug mode with minimal sizes (synthesis, formatting, BPE,
  a random encoder, training stages 1, 2b, 3a, 3b, 4 and 5a chained by --init, simulated and real
  streaming decoding, scoring, RESULTS.md and plots);
- mini_synth ssl1: all 8 stages in --debug mode (pretraining, the Hugging Face import, the four
  stage-1 runs, one 2b model and the four streaming variants from it, decoding, RESULTS.md);
- LibriSpeech: stages 1-5 on a LibriSpeech-layout tree made here (FLAC + *.trans.txt), with a
  tiny Hugging Face model as the pretrained encoder.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]


def copy_egs(tmp_path: Path) -> Path:
    dest = tmp_path / "egs"
    shutil.copytree(REPO / "egs", dest, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump*", "exp", "downloads", "RESULTS.md"))
    return dest


def run(recipe: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(["bash", "run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_mini_synth_all_stages_debug(tmp_path):
    pytest.importorskip("espeakng_loader")
    recipe = copy_egs(tmp_path) / "mini_synth" / "asr1"
    (recipe / "conf" / "decode_test.yaml").write_text(
        "searches: [greedy]\nmodes: [simulated, streaming]\nmulti_chunk_ms: [640]\n")
    proc = run(recipe, "--debug", "true", "--debug_utts", "12", "--debug_updates", "2", "--bpe_size", "40",
               "--train_stages", "1 2b 3a 3b 4 5a", "--train_threads", "1", "--decode_config", "conf/decode_test.yaml",
               "--train_opts", "--no_progress", "--level_opts", "--search greedy",  # the search decoded here
               "--local_data_opts", "--num_train 24 --num_dev 6 --num_test 6")
    for n in range(1, 13):
        assert re.search(rf"stage {n}:", proc.stdout), f"stage {n} did not run"
    assert "CNN fitted to 80 log-mel filters in 2 updates" in proc.stdout  # stage 4, conf/pretrain_frontend.yaml
    assert (recipe / "exp" / "pretrained" / "frontend_pretrain.png").exists()
    # the stage logs follow every variant; best models chain from stage to stage
    assert "[2b]" in (recipe / "exp" / "stage2" / "train.log").read_text()
    assert (recipe / "exp" / "stage1" / "train.log").read_text().count("INFO command:") == 1  # not written twice
    assert "2 rank(s)" in (recipe / "exp" / "stage1" / "train.log").read_text()  # run.sh's --train_nproc 2 (DDP)
    for d in ["stage1", "stage2/2b", "stage3/3a", "stage3/3b", "stage4", "stage5/5a"]:
        assert (recipe / "exp" / d / "best.pt").exists(), d
    assert "from exp/stage3/3b/best.pt" in (recipe / "exp" / "stage4" / "train.log").read_text()
    assert "from exp/stage3/3a/best.pt" in (recipe / "exp" / "stage5" / "train.log").read_text()
    results = (recipe / "RESULTS.md").read_text()
    decodings, _, level_section = results.partition("## Level robustness")
    rows = [line for line in decodings.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 11, results  # stage 1: 1; 2b, 3a, 3b, 4 (at 640 ms), 5a: simulated + streaming
    # real chunk-by-chunk streaming reproduces the masked full pass: same WER per configuration
    by_config = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        key = tuple(cells[:7])  # stage, variant, set, chunk, left, sinks, pos_conv
        by_config.setdefault(key, set()).add(cells[9])
    assert all(len(wers) == 1 for wers in by_config.values()), by_config
    assert (recipe / "exp" / "plots" / "wer_vs_chunk.png").exists()
    # stage 12's level robustness: models 1 and 5a at every gain; at 0 dB the WER of their stage-11 decoding
    level = json.loads((recipe / "exp" / "level_robustness.json").read_text())
    assert level["gains"] == [-30, -20, -10, 0, 6] and [m["tag"] for m in level["models"]] == ["stage1", "stage5a"]
    assert all(sorted(m["wer"], key=float) == ["-30", "-20", "-10", "0", "6"] for m in level["models"])
    for m, (stage, variant) in zip(level["models"], [("1", "-"), ("5", "a")]):
        simulated = [row for row in rows if re.match(rf"\| {stage} \| {variant} \| .*\| simulated \| greedy \|", row)]
        assert len(simulated) == 1, rows
        assert simulated[0].split("|")[10].strip() == f"{m['wer']['0']['wer']:.2f}"
    assert level["models"][0]["streaming"]["chunk_ms"] is None and level["models"][1]["streaming"]["chunk_ms"]
    assert "| stage5a |" in level_section and "![level robustness](exp/plots/level_robustness.png)" in level_section
    assert (recipe / "exp" / "plots" / "level_robustness.png").exists()
    assert (recipe / "exp" / "plots" / "training_curves.png").exists()
    # stage 3's token LM and stage 12's decode-time context table (hotword lists of data/phrases.txt, the LM)
    assert (recipe / "data" / "lang_bpe" / "lm.arpa").read_text().lstrip().startswith("\\data\\")
    context = json.loads((recipe / "exp" / "context.json").read_text())
    assert [m["tag"] for m in context["models"]] == ["stage5a"] and context["lm"]["tuned_on"].endswith("dev")
    assert context["hotwords_score"] == 2.0 and context["draws"] == 3  # run.sh's --context_opts
    assert context["num_phrases"] + len(context["unspelled"]) == 45
    assert {"all_noisy", "all_clean"} <= set(context["models"][0]["wer"])
    assert "## Decode-time context" in results and "![decode-time context](exp/plots/context.png)" in results
    # every stage's wall time: logged at its end, kept in exp/stage_times.tsv and tabled in RESULTS.md
    for n in range(1, 13):
        assert re.search(rf"stage {n} took \d+ s", proc.stdout), f"stage {n}'s time not logged"
    times = [line.split("\t") for line in (recipe / "exp" / "stage_times.tsv").read_text().splitlines()]
    assert [int(t[0]) for t in times] == list(range(1, 13)) and all(int(t[1]) >= 0 for t in times)
    assert "## Wall time" in results and re.search(r"\| 6 \| training stage 1: 1 \| \d+ min \d\d s \|", results)
    # --resume: a variant's own checkpoint continues it exactly, and only it
    run(recipe, "--stage", "7", "--stop_stage", "7", "--debug", "true", "--debug_updates", "3",
        "--train_stages", "2a 2b", "--train_threads", "1", "--resume", "exp/stage2/2b/ckpt_step2.pt", "--train_opts", "--no_progress")
    log = (recipe / "exp" / "stage2" / "train.log").read_text()
    assert "resumed from exp/stage2/2b/ckpt_step2.pt at update 2" in log and "[2a]" not in log


@pytest.mark.slow
def test_mini_synth_ssl_story_debug(tmp_path):
    pytest.importorskip("espeakng_loader")
    import torch
    from safetensors.torch import load_file

    recipe = copy_egs(tmp_path) / "mini_synth" / "ssl1"
    proc = run(recipe, "--debug", "true", "--debug_utts", "12", "--debug_updates", "2", "--nj", "1",
               "--train_threads", "1", "--train_opts", "--no_progress",
               "--local_data_opts", "--num_train 24 --num_dev 6 --num_test 6")
    for n in range(1, 9):
        assert re.search(rf"stage {n}:", proc.stdout), f"stage {n} did not run"
    exp = recipe / "exp"
    # the pretrained encoder travels as a Hugging Face directory and is imported through the stage-1 conf
    hf = load_file(str(exp / "ssl" / "hf" / "model.safetensors"))
    pretrained = torch.load(exp / "pretrained" / "encoder.pt", weights_only=True)
    random = torch.load(exp / "random" / "encoder.pt", weights_only=True)
    assert pretrained["source"] == "exp/ssl/hf" and random["source"].startswith("random:")
    assert {k: pretrained["arch"][k] for k in ("extractor_mode", "pos_conv", "waveform_norm", "num_layers")} == \
        {"extractor_mode": "layer_norm", "pos_conv": "causal", "waveform_norm": "cumulative", "num_layers": 3}
    assert pretrained["arch"] == random["arch"]  # the same model; only the weights differ
    assert torch.equal(pretrained["encoder"]["mask_emb"], hf["masked_spec_embed"])  # the pretrained mask embedding
    assert torch.equal(pretrained["encoder"]["feature_projection.projection.weight"],
                       hf["feature_projection.projection.weight"])
    assert not torch.equal(pretrained["encoder"]["mask_emb"], random["encoder"]["mask_emb"])
    # both share the CNN fitted to log-mel in stage 2 (pretraining keeps it frozen): only the transformer differs
    assert "frontend_logmel" in random["source"]
    cnn = [k for k in random["encoder"] if k.startswith("feature_extractor.")]
    assert cnn and all(torch.equal(pretrained["encoder"][k], random["encoder"][k]) for k in cnn)
    fitted = torch.load(exp / "frontend" / "encoder.pt", weights_only=True)["encoder"]
    assert all(torch.equal(fitted[k], random["encoder"][k]) for k in random["encoder"])
    key = "layers.0.attention.q_proj.weight"  # ... which pretraining trained
    assert not torch.equal(pretrained["encoder"][key], fitted[key])
    # the small label set: 10% of the checked training utterances (at least one)
    n_all = len((recipe / "dump_debug" / "train_clean" / "wav.scp").read_text().splitlines())
    n_small = len((recipe / "dump_debug" / "train_clean_10pct" / "wav.scp").read_text().splitlines())
    assert n_small == max(1, n_all // 10) < n_all
    for init in ("pretrained", "random"):
        for pct in ("10pct", "100pct"):
            log = (exp / "stage1" / f"{init}_{pct}" / "train.log").read_text()
            assert f"initialised the encoder from exp/{init}/encoder.pt" in log, (init, pct)
        small = (exp / "stage1" / f"{init}_10pct" / "config.yaml").read_text()
        assert "train_dir: dump_debug/train_clean_10pct" in small
    # the controlled comparison: every variant from the one 2b model, the same number of updates
    for d in ("stage3/3a", "stage3/3b", "stage5/5a", "stage5/5b"):
        assert "from exp/stage2/2b/ckpt_step2.pt" in (exp / d / "train.log").read_text(), d
        steps = [json.loads(line) for line in (exp / d / "steps.jsonl").read_text().splitlines()]
        assert steps[-1]["step"] == 2, d
    rules = {"2b": (640, None, 0), "3a": (640, 640, 0), "3b": (640, 1280, 0), "5a": (640, 640, 4), "5b": (640, 640, 16)}
    for d, rule in {"stage2/2b": rules["2b"], "stage3/3a": rules["3a"], "stage3/3b": rules["3b"],
                    "stage5/5a": rules["5a"], "stage5/5b": rules["5b"]}.items():
        info = json.loads((exp / d / "decode_test" / "decode.json").read_text())
        assert info["mode"] == "streaming" and (info["chunk_ms"], info["left_ms"], info["sinks"]) == rule, d
        assert info["latency_ms"]["num_chunks"] > 0
    # RESULTS.md: both tables, every run's WER as scored, the curves
    results = (recipe / "RESULTS.md").read_text()
    finetune, _, rest = results.partition("## Pretrained vs random encoder")[2].partition("## Streaming stages")
    rest = rest.partition("## Wall time")[0]
    rows = [r for r in finetune.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert [tuple(c.strip() for c in r.strip("|").split("|")[:2]) for r in rows] == \
        [("10%", "pretrained"), ("10%", "random"), ("100%", "pretrained"), ("100%", "random")]
    for row, d in zip(rows, ["pretrained_10pct", "random_10pct", "pretrained_100pct", "random_100pct"]):
        wer = json.loads((exp / "stage1" / d / "decode_test" / "wer.json").read_text())["WER"]
        assert row.split("|")[7].strip() == f"{wer:.2f}", (row, d)
    stream_rows = [r for r in rest.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert [r.split("|")[1].strip() for r in stream_rows] == ["2b (the start)", "3a", "3b", "5a", "5b"]
    assert all(re.search(r"\| \d+\.\d / \d+\.\d / \d+\.\d \|", r) for r in stream_rows), stream_rows
    assert "## Pretraining (no labels)" in results and "## Wall time" in results
    assert (exp / "plots" / "ssl_curves.png").exists() and "![learning curves](exp/plots/ssl_curves.png)" in results


def test_ssl_table_errors(tmp_path, capsys):
    from xtrans.bin import ssl_table
    from xtrans.scoring.ssl_story import RunMissingError, read_run

    with pytest.raises(RunMissingError, match=r"run '3a': .*missing: no such directory; run the recipe stage"):
        read_run("3a", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunMissingError, match="no update logged in steps.jsonl"):
        read_run("3a", tmp_path / "empty")
    out = str(tmp_path / "R.md")
    for name, message in [("pretrained", "--finetune: expected '<pretrained|random> <labels>'"),
                          ("scratch 10%", "found 'scratch 10%'"),
                          ("random 10%", "run 'random 10%': .*empty: no update logged")]:
        assert ssl_table.main(["--finetune", name, str(tmp_path / "empty"), "--out", out]) == 2
        assert re.search(message, capsys.readouterr().err), name
    assert not (tmp_path / "R.md").exists()


def make_librispeech_tree(root: Path, parts, utts_per_part: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = "THE QUICK BROWN FOX JUMPS OVER A LAZY DOG IN THE MORNING".split()
    for p, part in enumerate(parts):
        for spk in (f"{100 + p}", f"{200 + p}"):
            chapter = f"{spk}0"
            d = root / "LibriSpeech" / part / spk / chapter
            d.mkdir(parents=True)
            lines = []
            for i in range(utts_per_part // 2):
                utt = f"{spk}-{chapter}-{i:04d}"
                samples = (0.1 * rng.standard_normal(int(rng.integers(16000, 28000)))).astype(np.float32)
                soundfile.write(d / f"{utt}.flac", samples, 16000, subtype="PCM_16")
                lines.append(f"{utt} {' '.join(rng.choice(words, size=3))}\n")
            (d / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))


@pytest.mark.slow
def test_librispeech_stages_1_to_5(tmp_path):
    from xtrans.testing.pretrained_fixtures import random_hf_model, save_hf_dir

    recipe = copy_egs(tmp_path) / "librispeech" / "asr1"
    parts = ["train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"]
    make_librispeech_tree(tmp_path / "ls", parts)
    hf_model = random_hf_model("xlsr")
    hf_dir = save_hf_dir(hf_model, tmp_path / "hf_xlsr", do_normalize=True)
    run(recipe, "--stage", "1", "--stop_stage", "5", "--nj", "1", "--bpe_size", "40", "--bpe_type", "bpe",
        "--pretrained", str(hf_dir),
        "--local_data_opts", f"--librispeech_dir {tmp_path / 'ls'} --train_parts train-clean-100 "
                             "--eval_parts dev-clean,dev-other,test-clean,test-other")
    for name in ["train", "dev_clean", "test_clean", "test_other", "dev_other"]:
        text = (recipe / "data" / name / "text").read_text().splitlines()
        assert len(text) == 8 and (recipe / "dump" / name / "wav.scp").exists(), name
    assert (recipe / "dump" / "train_clean" / "wav.scp").exists()
    assert (recipe / "data" / "lang_bpe" / "bpe.model").exists()
    assert "<blk> 0" in (recipe / "data" / "lang_bpe" / "tokens.txt").read_text()
    import torch
    enc = torch.load(recipe / "exp" / "pretrained" / "encoder.pt", weights_only=True)
    # the pretrained weights, under the stage-1 config's streaming-safe options
    assert enc["arch"]["embed_dim"] == 64 and enc["arch"]["waveform_norm"] == "cumulative"
    assert torch.equal(enc["encoder"]["feature_projection.projection.weight"],
                       hf_model.state_dict()["feature_projection.projection.weight"])
