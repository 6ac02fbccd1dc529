"""Steering recognition at decode time through the recognizers, the tools and the server.

A model whose joiner ignores the audio (zero output weights, biases only) makes two words nearly
tie on every frame: "ON" a little above "OFF". Hotwords ("OFF") and an LM trained on "OFF"
transcripts must flip it, identically in the PyTorch recognizer and the ONNX export's, and per
stream (streams with and without hotwords batched together in the server's engine). Greedy
search refuses both; the start message's new fields are validated like the others.
"""

from __future__ import annotations

import asyncio
import json
import random
import re

import numpy as np
import pytest
import soundfile
import torch

from xtrans.serve.protocol import (CLOSE_POLICY_VIOLATION, CLOSE_UNSUPPORTED_DATA, MAX_HOTWORD_CHARS, MAX_HOTWORDS,
                                   ProtocolError, Start, parse_text)

WORDS = ["ON", "OFF", "UP", "DOWN", "LEFT", "RIGHT"]
CHUNK_MS, LEFT_MS, SINKS = 320, 640, 2


@pytest.fixture(scope="module")
def steered(tmp_path_factory):
    """exp/best.pt with bpe.model beside it (whole words are pieces), and its ONNX export."""
    from xtrans.checkpoint import model_checkpoint
    from xtrans.export.directory import export
    from xtrans.masks import StreamingConfig
    from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
    from xtrans.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("steered")
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(200)]
    tokenizer = train_tokenizer(sentences, root / "exp" / "bpe", vocab_size=36)
    on, off = tokenizer.encode("ON"), tokenizer.encode("OFF")
    assert len(on) == len(off) == 1, "whole words are pieces"
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm="cumulative",
                                            conv_channels=32, embed_dim=64, num_layers=1, num_heads=4, ffn_dim=128),
                      predictor=PredictorConfig(kind="stateless", embed_dim=32, context_size=2), joiner_dim=32)
    model = build_model(cfg, vocab_size=tokenizer.vocab_size)
    with torch.no_grad():  # the same distribution on every frame: blank, then ON a little above OFF
        model.joiner.output.weight.zero_()
        model.joiner.output.bias.fill_(-10.0)
        model.joiner.output.bias[0] = 4.0
        model.joiner.output.bias[on[0]] = 1.1
        model.joiner.output.bias[off[0]] = 1.0
    ckpt = root / "exp" / "best.pt"
    torch.save(model_checkpoint(model), ckpt)
    export(ckpt, root / "onnx", StreamingConfig.from_ms(CHUNK_MS, LEFT_MS, SINKS))
    (root / "text").write_text("".join(f"u{i} OFF {rng.choice(WORDS)}\n" for i in range(100)), encoding="utf-8")
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    soundfile.write(root / "a.wav", wave, 16000)
    return {"root": root, "ckpt": ckpt, "onnx": root / "onnx", "bpe": root / "exp" / "bpe.model", "wave": wave}


def recognizers(steered, **kwargs):
    from xtrans.inference import Speech2Text
    from xtrans.onnx import OnnxSpeech2Text

    return (Speech2Text.from_checkpoint(steered["ckpt"], chunk_ms=CHUNK_MS, left_ms=LEFT_MS, sinks=SINKS,
                                        search="beam", **kwargs),
            OnnxSpeech2Text(steered["onnx"], search="beam", num_threads=1, **kwargs))


def streamed(recognizer, wave, **stream_kwargs):
    session = recognizer.stream(**stream_kwargs)
    for start in range(0, len(wave), 3000):
        session.accept_waveform(wave[start:start + 3000], 16000)
    return session.finalize()


def test_hotwords_win_a_near_tie_in_both_runtimes(steered):
    wave = steered["wave"]
    plain = [streamed(r, wave) for r in recognizers(steered)]
    assert plain[0].tokens == plain[1].tokens and set(plain[0].text.split()) == {"ON"}
    weak = [streamed(r, wave, hotwords=["OFF"], hotwords_score=0.05) for r in recognizers(steered)]
    assert [r.tokens for r in weak] == [plain[0].tokens] * 2  # a boost below the gap changes nothing
    boosted = [streamed(r, wave, hotwords=["OFF"]) for r in recognizers(steered)]
    assert boosted[0].tokens == boosted[1].tokens
    assert "OFF" in boosted[0].text.split() and "ON" not in boosted[0].text.split()
    # recognizer-level defaults apply to transcribe() and every stream without its own
    defaults = recognizers(steered, hotwords=["OFF"])
    assert [r.transcribe(wave, 16000).tokens for r in defaults] == [boosted[0].tokens] * 2
    assert [streamed(r, wave, hotwords=[]).tokens for r in defaults] == [plain[0].tokens] * 2


def test_an_lm_steers_both_runtimes_alike(steered):
    from xtrans.bin.train_lm import main as train_lm

    lm = steered["root"] / "lm.arpa"
    assert train_lm(["--text", str(steered["root"] / "text"), "--tokenizer", str(steered["bpe"]), "--order", "2",
                     "--out", str(lm)]) == 0
    wave = steered["wave"]
    fused = [streamed(r, wave) for r in recognizers(steered, lm=lm, lm_scale=0.5)]
    assert fused[0].tokens == fused[1].tokens and fused[0].text.split()[0] == "OFF"
    assert fused[0].score == pytest.approx(fused[1].score, abs=1e-3)
    zero = [streamed(r, wave) for r in recognizers(steered, lm=lm, lm_scale=0.0)]
    assert [r.tokens for r in zero] == [streamed(r, wave).tokens for r in recognizers(steered)]
    assert set(zero[0].text.split()) == {"ON"}
    s2t, onnx = recognizers(steered, lm=lm, lm_scale=0.5, hotwords=["OFF"])
    assert s2t.settings()["lm"] == str(lm) and onnx.settings()["hotwords"] == 1


def test_greedy_search_refuses_context(steered):
    from xtrans.inference import Speech2Text
    from xtrans.onnx import OnnxSpeech2Text

    with pytest.raises(ValueError, match="hotwords: expected modified beam search .* found greedy search"):
        Speech2Text.from_checkpoint(steered["ckpt"], chunk_ms=CHUNK_MS, hotwords=["OFF"])
    greedy = Speech2Text.from_checkpoint(steered["ckpt"], chunk_ms=CHUNK_MS)
    with pytest.raises(ValueError, match="hotwords: expected modified beam search"):
        greedy.stream(hotwords=["OFF"])
    with pytest.raises(ValueError, match="lm: expected modified beam search"):
        OnnxSpeech2Text(steered["onnx"], lm=steered["root"] / "lm.arpa")
    s2t, _ = recognizers(steered)
    with pytest.raises(ValueError, match="hotwords: 'OFF Z' has characters the model's tokenizer does not know"):
        s2t.stream(hotwords=["OFF Z"])
    with pytest.raises(ValueError, match="hotwords_score: given without hotwords"):
        s2t.stream(hotwords_score=2.0)
    with pytest.raises(TypeError, match="expected a list of phrases, found a single str"):
        s2t.stream(hotwords="OFF")


# ------------------------------------------------------------------------------ command lines
def test_transcribe_and_decode_take_hotwords_and_an_lm(steered, tmp_path, capsys):
    from xtrans.bin.decode import main as decode_main
    from xtrans.bin.transcribe import main as transcribe_main

    (tmp_path / "hot.txt").write_text("OFF :2.0\n", encoding="utf-8")
    wav = str(steered["root"] / "a.wav")
    for source in (["--model", str(steered["ckpt"]), "--streaming", "--chunk-ms", str(CHUNK_MS)],
                   ["--onnx", str(steered["onnx"])]):
        assert transcribe_main(source + ["--search", "beam", wav]) == 0
        assert set(capsys.readouterr().out.split("\t")[1].split()) == {"ON"}
        assert transcribe_main(source + ["--search", "beam", "--hotwords", str(tmp_path / "hot.txt"),
                                         "--hotwords-score", "1.0", wav]) == 0
        assert "OFF" in capsys.readouterr().out.split("\t")[1].split()
        assert transcribe_main(source + ["--hotwords", str(tmp_path / "hot.txt"), wav]) == 2
        assert "hotwords: expected modified beam search" in capsys.readouterr().err
    assert transcribe_main(["--onnx", str(steered["onnx"]), "--search", "beam", "--lm", str(tmp_path / "none.arpa"),
                            wav]) == 2
    assert "does not exist" in capsys.readouterr().err
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 {wav}\n", encoding="utf-8")
    (data / "text").write_text("u1 OFF\n", encoding="utf-8")
    out = tmp_path / "decode"
    assert decode_main(["--onnx", str(steered["onnx"]), "--data", str(data), "--outdir", str(out), "--mode",
                        "streaming", "--search", "beam", "--hotwords", str(tmp_path / "hot.txt"),
                        "--hotwords_score", "1.0"]) == 0
    info = json.loads((out / "decode.json").read_text())
    assert (info["hotwords_file"], info["hotwords"], info["lm"]) == (str(tmp_path / "hot.txt"), 1, None)
    assert "OFF" in (out / "text").read_text().split()


def test_help_names_the_flags():
    import subprocess
    import sys

    for tool in ("transcribe", "decode", "serve"):
        out = subprocess.run([sys.executable, "-m", f"xtrans.bin.{tool}", "--help"], capture_output=True, text=True,
                             check=True).stdout
        for flag in ("--hotwords", "--hotwords-score", "--lm", "--lm-scale"):
            assert re.search(rf"{flag}\b", out), (tool, flag)


# ------------------------------------------------------------------------------ the server
def test_start_message_fields():
    msg = parse_text(json.dumps({"type": "start", "hotwords": ["TURN ON", " XLSR :2.5 "], "hotwords_score": 2}))
    assert msg == Start(16000, "s16le", ("TURN ON", "XLSR :2.5"), 2.0)
    assert parse_text('{"type": "start"}').hotwords is None


@pytest.mark.parametrize("start, match", [
    ({"hotwords": "TURN ON"}, "hotwords: expected a list of phrases"),
    ({"hotwords": ["A", 3]}, "hotwords: expected a list of phrases"),
    ({"hotwords": []}, f"hotwords: expected 1 to {MAX_HOTWORDS} phrases, found 0"),
    ({"hotwords": ["A"] * (MAX_HOTWORDS + 1)}, f"hotwords: expected 1 to {MAX_HOTWORDS} phrases"),
    ({"hotwords": ["A" * (MAX_HOTWORD_CHARS + 1)]}, f"at most {MAX_HOTWORD_CHARS} characters"),
    ({"hotwords": ["A :loud"]}, "expected a number after ':'"),
    ({"hotwords": ["  "]}, "expected a phrase"),
    ({"hotwords": ["A"], "hotwords_score": 0}, "hotwords_score: expected a finite number > 0"),
    ({"hotwords": ["A"], "hotwords_score": True}, "hotwords_score: expected a finite number > 0"),
    ({"hotwords_score": 1.5}, "hotwords_score: expected hotwords with it"),
])
def test_bad_start_fields(start, match):
    with pytest.raises(ProtocolError, match=match) as err:
        parse_text(json.dumps({"type": "start", **start}))
    assert err.value.code == CLOSE_UNSUPPORTED_DATA


def test_unknown_start_keys_are_still_refused():
    with pytest.raises(ProtocolError, match="unknown key") as err:
        parse_text('{"type": "start", "hotword": ["A"]}')
    assert err.value.code == CLOSE_POLICY_VIOLATION


def test_engine_batches_streams_with_and_without_hotwords(steered):
    from xtrans.serve.backend import TorchBackend
    from xtrans.serve.engine import EndpointConfig, Engine

    s2t, _ = recognizers(steered)
    backend = TorchBackend(s2t)
    engine = Engine(backend, EndpointConfig(silence_ms=None, max_segment_s=None))
    wave = steered["wave"]
    ids = [engine.open(16000), engine.open(16000, backend.stream_context(["OFF"])),
           engine.open(16000, backend.stream_context(["OFF"], 0.05))]
    for sid in ids:
        engine.accept(sid, wave)
        engine.end(sid)
    finals = {}
    while engine.num_streams:
        for event in engine.step():
            if event.message["type"] == "final":
                finals[event.stream] = event.message
    assert engine.stats.max_batch == 3
    for sid, kwargs in zip(ids, ({}, {"hotwords": ["OFF"]}, {"hotwords": ["OFF"], "hotwords_score": 0.05})):
        assert finals[sid]["token_ids"] == streamed(s2t, wave, **kwargs).tokens
    assert set(finals[ids[0]]["text"].split()) == {"ON"} and "OFF" in finals[ids[1]]["text"].split()


@pytest.mark.parametrize("search", ["beam", "greedy"])
def test_server_takes_a_clients_hotwords(steered, search, tmp_path, capsys):
    from xtrans.inference import Speech2Text
    from xtrans.serve.backend import TorchBackend
    from xtrans.serve.client import stream_audio
    from xtrans.serve.engine import EndpointConfig
    from xtrans.serve.server import BackgroundServer, ServerOptions

    s2t = Speech2Text.from_checkpoint(steered["ckpt"], chunk_ms=CHUNK_MS, left_ms=LEFT_MS, sinks=SINKS, search=search)
    options = ServerOptions(port=0, endpoint=EndpointConfig(silence_ms=None, max_segment_s=None))
    wave = steered["wave"]
    with BackgroundServer(TorchBackend(s2t), options) as srv:
        async def clients():
            return await asyncio.gather(stream_audio(srv.url, wave, 16000, hotwords=["OFF"], hotwords_score=1.5),
                                        stream_audio(srv.url, wave, 16000, hotwords=["OFF Z"]),
                                        stream_audio(srv.url, wave, 16000))
        hot, unspellable, plain = asyncio.run(clients())
        (tmp_path / "hot.txt").write_text("OFF\n", encoding="utf-8")
        from xtrans.serve.client import main as client_main

        status = client_main([srv.url, str(steered["root"] / "a.wav"), "--hotwords", str(tmp_path / "hot.txt")])
        printed = capsys.readouterr()
    assert plain.close_code == 1000 and plain.finals[0]["token_ids"] == streamed(s2t, wave).tokens
    assert unspellable.close_code == 1003
    if search == "greedy":
        for refused in (hot, unspellable):
            assert refused.close_code == 1003
            assert "hotwords: expected modified beam search" in refused.errors[0]["message"]
    else:
        assert "has characters the model's tokenizer does not know" in unspellable.errors[0]["message"]
        assert hot.close_code == 1000 and hot.finals[0]["token_ids"] == streamed(s2t, wave, hotwords=["OFF"]).tokens
        assert "OFF" in hot.finals[0]["text"].split()
        assert status == 0 and printed.out.rstrip("\n").split("\t")[2] == hot.finals[0]["text"]
    if search == "greedy":
        assert status == 1 and "hotwords: expected modified beam search" in printed.err



# ---------------------------------------------------------------------------- the context table (recipe stage 12)
PHRASES = ["ON", "OFF", "UP", "DOWN", "LEFT", "RIGHT", "FOUR", "NINE", "TEN", "HIGH", "LOW",
           "FIFTH"]


def test_hotword_lists_hold_or_avoid_the_utterances_phrase():
    from xtrans.scoring.context import command_utts, hotword_lists, read_phrases

    utts = [f"u{k}" for k in range(40)]
    refs = {u: PHRASES[k % len(PHRASES)].lower() if k % 3 else "ONE TWO THREE" for k, u in enumerate(utts)}
    right, wrong = hotword_lists(utts, refs, PHRASES, seed=7, list_size=10)
    again = hotword_lists(utts, refs, PHRASES, seed=7, list_size=10)
    assert (right, wrong) == again
    assert hotword_lists(utts, refs, PHRASES, seed=8, list_size=10) != (right, wrong)
    commands = command_utts(utts, refs, PHRASES)
    assert set(right) == set(commands) == {u for k, u in enumerate(utts) if k % 3}
    for u in utts:
        ref = refs[u].upper()
        assert len(wrong[u]) == len(set(wrong[u])) == 10 and ref not in wrong[u]
        if u in right:
            assert len(right[u]) == len(set(right[u])) == 10 and ref in right[u]
            assert set(right[u]) <= set(PHRASES)
    assert len({tuple(right[u]) for u in right}) > len(right) // 2, "lists differ across utterances"
    assert hotword_lists(utts, refs, PHRASES, seed=7, list_size=10, draw=0) == (right, wrong)
    right1, wrong1 = hotword_lists(utts, refs, PHRASES, seed=7, list_size=10, draw=1)
    assert (right1, wrong1) == hotword_lists(utts, refs, PHRASES, seed=7, list_size=10, draw=1)
    assert sum(wrong1[u] != wrong[u] for u in utts) > len(utts) // 2, "another draw, other lists"
    assert set(right1) == set(right) and all(refs[u].upper() in right1[u] for u in right1)
    with pytest.raises(ValueError, match="at least 11 distinct phrases"):
        hotword_lists(utts, refs, PHRASES[:10], seed=0)


def test_read_phrases(tmp_path):
    from xtrans.scoring.context import read_phrases

    path = tmp_path / "phrases.txt"
    path.write_text("# commands\nturn  on\nTURN ON\n\n" + "\n".join(PHRASES) + "  # the rest\n", encoding="utf-8")
    assert read_phrases(path) == ["TURN ON"] + PHRASES
    path.write_text("\n".join(PHRASES[:5]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"phrases.txt: expected at least 11 distinct phrases .* found 5"):
        read_phrases(path)


def _context_data(root):
    """A Kaldi dir of 12 utterances of noise: 8 say OFF (commands), 4 say a digit string."""
    from xtrans.data.kaldi_dir import DataDir, write_data_dir

    rng = np.random.default_rng(1)
    wav, text = {}, {}
    for k in range(12):
        path = root / "wav" / f"u{k:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
        wav[f"u{k:02d}"], text[f"u{k:02d}"] = str(path), "OFF" if k < 8 else "ONE TWO"
    write_data_dir(DataDir(wav_scp=wav, text=text), root / "data")
    (root / "phrases.txt").write_text("\n".join(PHRASES) + "\n", encoding="utf-8")
    return root / "data"


def test_context_table_measures_hotwords_and_the_lm(steered, tmp_path):
    """The model says ON where the commands say OFF: a list holding OFF fixes them, lists without it
    do not, the LM trained on OFF transcripts does; the report reaches RESULTS.md."""
    from xtrans.bin import context_table, score, train_lm
    from xtrans.scoring.context import CONTEXT_JSON

    data = _context_data(tmp_path)
    lm = tmp_path / "lm.arpa"
    assert train_lm.main(["--text", str(steered["root"] / "text"), "--tokenizer", str(steered["bpe"]),
                          "--order", "2", "--out", str(lm)]) == 0
    exp = tmp_path / "exp"
    (exp / "stage5" / "5a").mkdir(parents=True)
    ckpt = exp / "stage5" / "5a" / "best.pt"
    ckpt.write_bytes(steered["ckpt"].read_bytes())
    args = ["--model", str(ckpt), "--data", str(data), "--tokenizer", str(steered["bpe"]),
            "--chunk_ms", str(CHUNK_MS), "--left_ms", str(LEFT_MS), "--sinks", str(SINKS),
            "--phrases", str(tmp_path / "phrases.txt"), "--lm", str(lm), "--lm_scales", "0.5,3",
            "--tune_data", str(data), "--out", str(exp / CONTEXT_JSON),
            "--plot", str(exp / "plots" / "context.png"),
            # the toy says the same on every frame, so all alignments of a token sequence are alike: a boost
            # above ~0.7 per token makes more insertions the better-scoring hypothesis (their alignments are
            # many), which the search finds now that it keeps the hypotheses best without the boosts beside
            # those best with them; 0.5 flips the ON/OFF near-tie alone
            "--hotwords_score", "0.5"]
    assert context_table.main(args) == 0
    report = json.loads((exp / CONTEXT_JSON).read_text())
    assert (report["num_utts"], report["num_commands"], report["num_phrases"]) == (12, 8, len(PHRASES))
    wer = report["models"][0]["wer"]
    assert set(wer) == {"commands_noisy", "all_noisy", "all_clean"}
    assert set(wer["commands_noisy"]) == {"none", "right", "distractors", "lm"}
    assert set(wer["all_clean"]) == {"none", "distractors", "lm"}
    cmd = {c: v["wer"] for c, v in wer["commands_noisy"].items()}
    assert cmd["none"] >= 100.0 and cmd["right"] < cmd["none"]  # the model says ON ON
    assert cmd["distractors"] == cmd["none"]
    assert report["lm"]["scale"] in (0.5, 3.0) and len(report["lm"]["dev_wer"]) == 2
    assert min(report["lm"]["dev_wer"]) < report["lm"]["dev_wer_without"]
    assert wer["all_clean"]["lm"]["wer"] < wer["all_clean"]["none"]["wer"]
    assert (exp / "plots" / "context.png").stat().st_size > 0
    assert score.main(["--results", str(exp), "--out", str(tmp_path / "RESULTS.md")]) == 0
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## Decode-time context" in md and "| stage5a |" in md and "commands, 10 dB SNR (8)" in md


def test_context_table_refuses_bad_options(steered, tmp_path):
    from xtrans.bin import context_table

    data = _context_data(tmp_path)
    base = ["--model", str(steered["ckpt"]), "--data", str(data), "--chunk_ms", str(CHUNK_MS),
            "--phrases", str(tmp_path / "phrases.txt")]
    assert context_table.main(base + ["--search", "greedy"]) == 2
    assert context_table.main(base + ["--tune_data", str(data)]) == 2
    assert context_table.main(base + ["--lm", str(tmp_path / "missing.arpa")]) == 2
    assert context_table.main(base + ["--lm_scales", "0,x"]) == 2
    (tmp_path / "few.txt").write_text("ON\nOFF\n", encoding="utf-8")
    assert context_table.main(base[:-1] + [str(tmp_path / "few.txt")]) == 2


def test_context_table_pools_several_draws_of_lists(steered, tmp_path):
    """--draws 2 decodes every list context twice, with draw 0's lists (those of --draws 1) and draw 1's,
    and pools their errors: each pooled entry is the sum of the two decodings made here by hand."""
    from xtrans.bin import context_table
    from xtrans.data.kaldi_dir import read_data_dir
    from xtrans.decoding.data_dir import run as decode_records
    from xtrans.decoding.measure import load, model_jobs
    from xtrans.scoring.context import hotword_lists, read_phrases
    from xtrans.scoring.robustness import Setup
    from xtrans.scoring.wer import score

    data = _context_data(tmp_path)
    base = ["--model", str(steered["ckpt"]), "--data", str(data), "--tokenizer", str(steered["bpe"]),
            "--chunk_ms", str(CHUNK_MS), "--left_ms", str(LEFT_MS), "--sinks", str(SINKS),
            "--phrases", str(tmp_path / "phrases.txt"), "--hotwords_score", "0.5"]
    reports = {}
    for draws in (1, 2):
        out = tmp_path / f"context{draws}.json"
        assert context_table.main(base + ["--draws", str(draws), "--out", str(out)]) == 0
        reports[draws] = json.loads(out.read_text())
    assert reports[2]["draws"] == 2 and reports[1]["draws"] == 1
    one, two = reports[1]["models"][0]["wer"], reports[2]["models"][0]["wer"]

    args = context_table.get_parser().parse_args(base)
    job = model_jobs(args)[0]
    vars(job["decode"]).update(lm=None, lm_scale=0.1, hotwords=None, hotwords_score=0.5)
    s2t = load(job)
    d = read_data_dir(data)
    utts = list(d.utt_ids)
    phrases = read_phrases(tmp_path / "phrases.txt")
    right, distractors = hotword_lists(utts, d.text, phrases, seed=args.seed, draw=1)
    noise = Setup(data_dir=str(data), seed=args.seed).options("noise", args.snr)["transform"]
    commands = [u for u in utts if d.text[u] == "OFF"]
    for name, subset, transform, context, lists in [
            ("commands_noisy", commands, noise, "right", right),
            ("commands_noisy", commands, noise, "distractors", distractors),
            ("all_noisy", utts, noise, "distractors", distractors),
            ("all_clean", utts, None, "distractors", distractors)]:
        records = decode_records(job["decode"], d, s2t, None, transform=transform, utts=subset, progress=False,
                                 hotwords={u: lists[u] for u in subset}, hotwords_score=0.5)
        counts = score({u: d.text[u] for u in subset}, {r["utt"]: r["text"] for r in records}).counts
        assert two[name][context]["errors"] == one[name][context]["errors"] + counts.errors
        assert two[name][context]["words"] == 2 * one[name][context]["words"]
        entry = two[name][context]
        assert entry["wer"] == pytest.approx(100 * entry["errors"] / entry["words"])
    assert two[name]["none"] == one[name]["none"]  # contexts without lists are decoded once
    assert context_table.main(base + ["--draws", "0"]) == 2
