"""The ONNX runtime (xtrans.onnx) and the predictor/joiner export (xtrans.export.onnx_export).

- predictor.onnx / joiner.onnx compute what the PyTorch modules compute;
- the numpy greedy and modified beam searches on onnxruntime give the tokens, timestamps and
  scores of xtrans.search on the same encoder frames (offline, batched and chunked);
- a streaming session follows the encoder contract of xtrans.onnx.config (priming, calls of
  samples_per_call, the last partial call), checked with a stand-in encoder ONNX written here:
  frames from a fixed projection of each 400-sample window, plus a float64 state;
- config / metadata round trips, torch-free import, error messages, the --onnx command line.
"""

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile
import torch
from torch import nn

from xtrans.data.resample import resample
from xtrans.export.onnx_export import (add_metadata, decoder_config, export_joiner, export_predictor,
                                       write_config, write_tokens)
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
from xtrans.onnx import (FORMAT, GreedySearch, ModifiedBeamSearch, OnnxDecoder, OnnxSpeech2Text, TokenTable,
                         check_config, load_config, read_metadata)
from xtrans.search import greedy_search, modified_beam_search

D = 96  # the tiny encoder's dimension
V = 12
C = 4  # stand-in encoder: frames per call
PRIME, STRIDE = 80, 320


def tiny_model(kind="stateless", seed=0, context_size=2):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm="cumulative"),
                      predictor=PredictorConfig(kind=kind, embed_dim=32, hidden_dim=32, dropout=0.0,
                                                context_size=context_size),
                      joiner_dim=32)
    model = build_model(cfg, vocab_size=V).eval()
    with torch.no_grad():  # louder logits than the random init, so paths differ clearly
        model.joiner.output.weight.mul_(4.0)
    return model


def ort_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class StandInEncoder(nn.Module):
    """Follows the encoder.onnx contract: frame k of a stream = window s[320k : 320k + 400] @ W,
    plus 0.1 k on feature 0 (k counted by the float64 state ``frames_seen``)."""

    def __init__(self, seed=3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(PRIME + STRIDE, D, generator=g) * 0.5)

    def forward(self, samples, num_samples, carry, frames_seen):
        x = torch.cat([carry, samples], dim=1)  # (B, 80 + 320 C)
        B = x.shape[0]
        head = x[:, :STRIDE * C].reshape(B, C, STRIDE)  # samples 320 j .. 320 j + 319
        tail = torch.cat([x[:, STRIDE:], x.new_zeros(B, STRIDE - PRIME)], 1).reshape(B, C, STRIDE)[..., :PRIME]
        frames = torch.cat([head, tail], dim=2) @ self.weight  # (B, C, D)
        index = frames_seen[:, None].float() + torch.arange(C, dtype=torch.float32)  # (B, C)
        frames = frames + torch.nn.functional.pad(0.1 * index[..., None], (0, D - 1))
        num_frames = torch.clamp(num_samples // STRIDE, max=C)
        return frames, num_frames, x[:, -PRIME:], frames_seen + num_frames.double()


class StandInStart(nn.Module):
    """Follows the encoder_start.onnx contract for the stand-in: the first 80 samples become its carry."""

    def forward(self, samples):
        return samples, torch.zeros_like(samples[:, 0], dtype=torch.float64)


def reference_frames(wave, weight):
    """The stand-in encoder's frames of a whole stream (T, D), computed directly."""
    T = (len(wave) - PRIME - STRIDE) // STRIDE + 1 if len(wave) >= PRIME + STRIDE else 0
    frames = np.stack([wave[STRIDE * k:STRIDE * k + PRIME + STRIDE] @ weight for k in range(T)]) \
        if T else np.zeros((0, D), np.float32)
    frames[:, 0] += 0.1 * np.arange(T)
    return frames.astype(np.float32)


def stream_config(model):
    return {"format": FORMAT, "sample_rate": 16000, "frame_ms": 20, "frame_stride": STRIDE,
            "chunk_frames": C, "chunk_ms": 20 * C, "left_frames": 8, "left_ms": 160, "sinks": 1,
            "samples_per_call": STRIDE * C, "prime_samples": PRIME, **decoder_config(model),
            "state_names": ["state.frontend.carry", "state.frames_seen"],
            "state_shapes": [["B", PRIME], ["B"]], "state_dtypes": ["float32", "float64"],
            "encoder_file": "encoder.onnx", "encoder_start_file": "encoder_start.onnx", "int8": False,
            "opset": 17}


def tokens_table(path):
    path.write_text("".join(f"{tok} {i}\n" for i, tok in enumerate(
        ["<blk>", "<unk>"] + [f"\u2581{c}" if i % 3 == 0 else c for i, c in enumerate("abcdefghij")])))
    return TokenTable(path)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A complete export directory: the tiny model's predictor and joiner, the stand-in encoder."""
    out = tmp_path_factory.mktemp("onnx")
    model = tiny_model()
    export_predictor(model, out / "predictor.onnx")
    export_joiner(model, out / "joiner.onnx")
    encoder = StandInEncoder().eval()
    names = ["samples", "num_samples", "state.frontend.carry", "state.frames_seen"]
    outputs = ["frames", "num_frames", "new_state.frontend.carry", "new_state.frames_seen"]
    args = (torch.zeros(2, STRIDE * C), torch.full((2,), STRIDE * C), torch.zeros(2, PRIME),
            torch.zeros(2, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and folding notes
        torch.onnx.export(encoder, args, str(out / "encoder.onnx"), input_names=names, output_names=outputs,
                          dynamic_axes={n: {0: "B"} for n in names + outputs}, opset_version=17, dynamo=False)
        torch.onnx.export(StandInStart(), (torch.zeros(2, PRIME),), str(out / "encoder_start.onnx"),
                          input_names=["samples"], output_names=["new_" + n for n in names[2:]],
                          dynamic_axes={n: {0: "B"} for n in ["samples"] + ["new_" + n for n in names[2:]]},
                          opset_version=17, dynamo=False)
    write_tokens(tokens_table(tmp_path_factory.mktemp("tok") / "tokens.txt"), out / "tokens.txt")
    config = stream_config(model)
    write_config(out, config)
    for name in ("encoder_start.onnx", "encoder.onnx", "predictor.onnx", "joiner.onnx"):
        add_metadata(out / name, config)
    decoder = OnnxDecoder(ort_session(out / "predictor.onnx"), ort_session(out / "joiner.onnx"),
                          blank=0, context_size=2)
    return {"dir": out, "model": model, "decoder": decoder, "config": config,
            "weight": encoder.weight.numpy()}


def speech(seconds=1.3, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


# --------------------------------------------------------------------------- predictor and joiner
def test_predictor_and_joiner_equal_pytorch(export):
    model, decoder = export["model"], export["decoder"]
    g = torch.Generator().manual_seed(5)
    for n in (1, 7):
        context = torch.randint(0, V, (n, 2), generator=g)
        with torch.no_grad():
            expected = model.predictor.output(type(model.predictor.init_state(1))(context)).numpy()
        got = decoder.predict(context.numpy())
        assert got.shape == (n, 32)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        enc, pred = torch.randn(n, D, generator=g), torch.randn(n, 32, generator=g)
        with torch.no_grad():
            expected = model.joiner(enc, pred).numpy()
        got = decoder.join(enc.numpy(), pred.numpy())
        assert got.shape == (n, V)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_predictor_context_one_exports(tmp_path):
    model = tiny_model(context_size=1)
    export_predictor(model, tmp_path / "p.onnx")
    context = np.array([[3], [0], [11]], dtype=np.int64)
    got = ort_session(tmp_path / "p.onnx").run(None, {"context": context})[0]
    with torch.no_grad():
        expected = model.predictor.output(model.predictor.init_state(3)._replace(
            context=torch.from_numpy(context))).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_lstm_predictor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected a stateless predictor, found lstm"):
        export_predictor(tiny_model("lstm"), tmp_path / "p.onnx")
    assert not (tmp_path / "p.onnx").exists()


# ------------------------------------------------------------------------------------- searches
def frames_batch(B=3, T=24, seed=1):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_greedy_equals_pytorch(export, max_symbols):
    model, decoder = export["model"], export["decoder"]
    enc, lengths = frames_batch(), torch.tensor([24, 15, 6])
    expected = greedy_search(model, enc, lengths, max_symbols=max_symbols)
    search = GreedySearch(decoder, max_symbols)
    got = search(enc.numpy(), lengths.numpy())
    assert any(len(h.tokens) > 3 for h in expected)
    if max_symbols > 1:
        assert any(len(h.timestamps) > len(set(h.timestamps)) for h in expected), "no frame with 2 tokens"
    for e, g in zip(expected, got):
        assert g.tokens == e.tokens
        assert g.timestamps == e.timestamps
        assert g.score == pytest.approx(e.score, abs=1e-4)
    # chunk by chunk: the same result
    state = search.init_state(3)
    for start in range(0, 24, 5):
        chunk_lengths = np.clip(lengths.numpy() - start, 0, 5)
        state = search.step(enc.numpy()[:, start:start + 5], state, chunk_lengths)
    assert [h.tokens for h in search.results(state)] == [h.tokens for h in got]
    assert state.num_frames.tolist() == [24, 15, 6]


@pytest.mark.parametrize("beam,merge", [(1, True), (4, True), (4, False), (7, True)])
def test_beam_equals_pytorch(export, beam, merge):
    model, decoder = export["model"], export["decoder"]
    enc, lengths = frames_batch(seed=2), torch.tensor([24, 15, 6])
    expected = modified_beam_search(model, enc, lengths, beam=beam, merge=merge)
    search = ModifiedBeamSearch(decoder, beam, merge)
    got = search(enc.numpy(), lengths.numpy())
    assert any(len(hyps[0].tokens) > 3 for hyps in expected)
    for e_hyps, g_hyps in zip(expected, got):
        assert [h.tokens for h in g_hyps] == [h.tokens for h in e_hyps]
        assert [h.timestamps for h in g_hyps] == [h.timestamps for h in e_hyps]
        assert [h.score for h in g_hyps] == pytest.approx([h.score for h in e_hyps], abs=1e-4)
    state = search.init_state(3)
    for start in range(0, 24, 7):
        state = search.step(enc.numpy()[:, start:start + 7], state, np.clip(lengths.numpy() - start, 0, 7))
    assert [[h.tokens for h in hyps] for hyps in search.results(state)] == \
        [[h.tokens for h in hyps] for hyps in got]


def test_wide_beam_merges_like_pytorch(tmp_path):
    """A beam wide enough that alignments of one token sequence meet and are log-added."""
    model = tiny_model()
    with torch.no_grad():
        model.joiner.output.bias[0] += 3.0  # blank as likely as a token: alignments meet
    export_predictor(model, tmp_path / "p.onnx")
    export_joiner(model, tmp_path / "j.onnx")
    decoder = OnnxDecoder(ort_session(tmp_path / "p.onnx"), ort_session(tmp_path / "j.onnx"), blank=0,
                          context_size=2)
    enc, lengths = frames_batch(B=2, T=8, seed=3), torch.tensor([8, 5])
    merged = modified_beam_search(model, enc, lengths, beam=40, merge=True)
    unmerged = modified_beam_search(model, enc, lengths, beam=40, merge=False)
    assert any(len({tuple(h.tokens) for h in hyps}) < len(hyps) for hyps in unmerged), "nothing to merge"
    for merge, expected in ((True, merged), (False, unmerged)):
        got = ModifiedBeamSearch(decoder, 40, merge)(enc.numpy(), lengths.numpy())
        for e_hyps, g_hyps in zip(expected, got):
            assert [h.tokens for h in g_hyps] == [h.tokens for h in e_hyps]
            assert [h.timestamps for h in g_hyps] == [h.timestamps for h in e_hyps]
            assert [h.score for h in g_hyps] == pytest.approx([h.score for h in e_hyps], abs=1e-4)


def test_search_argument_errors(export):
    decoder = export["decoder"]
    with pytest.raises(ValueError, match="max_symbols: expected >= 1, found 0"):
        GreedySearch(decoder, 0)
    with pytest.raises(ValueError, match="beam: expected >= 1, found 0"):
        ModifiedBeamSearch(decoder, 0)
    search = GreedySearch(decoder)
    with pytest.raises(ValueError, match=r"enc: expected a batch of 1 streams"):
        search.step(np.zeros((2, 3, D), np.float32), search.init_state(1))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 3\]"):
        search.step(np.zeros((1, 3, D), np.float32), search.init_state(1), np.array([4]))


# ----------------------------------------------------------------- hotwords and an LM (scorer hook)
def table_pieces(export):
    return [line.rsplit(maxsplit=1)[0] for line in (export["dir"] / "tokens.txt").read_text().splitlines()]


def context_scorers(export, plain):
    """A context graph of phrases from what the plain search emits (so the boosts matter), an LM
    over the tokens.txt pieces, and both."""
    from xtrans.context import ContextGraph, LMScorer, ScorerSum, train_ngram

    phrases = [(plain[0][0].tokens[:3], 1.5), (plain[1][0].tokens[1:3], 2.0), ([5, 6, 7], 1.0)]
    graph = ContextGraph(phrases, V)
    pieces = table_pieces(export)
    rng = np.random.default_rng(0)
    sentences = [[pieces[i] for i in rng.integers(2, V, size=rng.integers(1, 8))] for _ in range(50)]
    lm = LMScorer(train_ngram(sentences, 3, pieces[1:]), pieces, 0.5)
    return {"hotwords": graph, "lm": lm, "both": ScorerSum([lm, graph])}


@pytest.mark.parametrize("context", ["hotwords", "lm", "both", "per stream"])
def test_beam_with_context_equals_pytorch(export, context):
    """The search core scores context the same in both runtimes: tokens, timestamps, scores."""
    model, decoder = export["model"], export["decoder"]
    enc, lengths = frames_batch(seed=4), torch.tensor([24, 15, 6])
    plain = modified_beam_search(model, enc, lengths, beam=4)
    scorers = context_scorers(export, plain)
    scorer = list(scorers.values())[:3] if context == "per stream" else scorers[context]
    expected = modified_beam_search(model, enc, lengths, beam=4, scorer=scorer)
    assert [h.tokens for h in expected[0]] != [h.tokens for h in plain[0]], "the context changed nothing"
    search = ModifiedBeamSearch(decoder, 4)
    got = search(enc.numpy(), lengths.numpy(), scorer=scorer)
    for e_hyps, g_hyps in zip(expected, got):
        assert [(h.tokens, h.timestamps) for h in g_hyps] == [(h.tokens, h.timestamps) for h in e_hyps]
        assert [h.score for h in g_hyps] == pytest.approx([h.score for h in e_hyps], abs=1e-4)
    state = search.init_state(3, scorer=scorer)
    for start in range(0, 24, 5):
        state = search.step(enc.numpy()[:, start:start + 5], state, np.clip(lengths.numpy() - start, 0, 5))
    assert [[h.tokens for h in hyps] for hyps in search.results(state)] == [[h.tokens for h in hyps] for hyps in got]


def test_session_hotwords_and_lm_equal_pytorch(export, tmp_path):
    """OnnxSpeech2Text spells hotwords with tokens.txt and fuses an ARPA LM as the PyTorch search does."""
    from xtrans.context import ContextGraph, LMScorer, ScorerSum, train_ngram, write_arpa
    from xtrans.context.hotwords import WORD_REWARD

    wave = speech(seed=3)
    enc = torch.from_numpy(reference_frames(wave, export["weight"]))[None]
    model = export["model"]
    pieces = table_pieces(export)
    rng = np.random.default_rng(1)
    write_arpa(train_ngram([[pieces[i] for i in rng.integers(2, V, size=rng.integers(1, 8))] for _ in range(50)],
                           2, pieces[1:]), tmp_path / "lm.arpa")
    lm = LMScorer(tmp_path / "lm.arpa", pieces, 0.4)
    # the table has ▁a b c ▁d e f ▁g h i ▁j: "abc d" = [▁a, b, c, ▁d], "gh" = [▁g, h]
    # phrases match as whole words: the pieces that begin a word are the table's "▁" pieces
    starts = [i for i, piece in enumerate(pieces) if i > 0 and piece.startswith("\u2581")]
    assert len(starts) == 4
    graph = ContextGraph([([8, 9], 0.7)], V, starts, WORD_REWARD)  # as the recognizers build it
    s2t = OnnxSpeech2Text(export["dir"], search="beam", beam=3, num_threads=1, hotwords=["abc d", "gh :2.5"],
                          hotwords_score=1.5, lm=tmp_path / "lm.arpa", lm_scale=0.4)
    assert s2t.settings()["hotwords"] == 2 and s2t.settings()["lm_scale"] == 0.4
    expected = modified_beam_search(model, enc, beam=3, scorer=ScorerSum([lm, ContextGraph([([2, 3, 4, 5], 1.5),
                                                                                           ([8, 9], 2.5)], V, starts,
                                                                                          WORD_REWARD)]))[0]
    assert s2t.transcribe(wave).tokens == expected[0].tokens
    # a stream's own hotwords replace the defaults
    own = modified_beam_search(model, enc, beam=3, scorer=ScorerSum([lm, graph]))[0]
    session = s2t.stream(hotwords=["gh"], hotwords_score=0.7)
    session.accept_waveform(wave)
    final = session.finalize()
    assert final.tokens == own[0].tokens and final.score == pytest.approx(own[0].score, abs=1e-3)
    with pytest.raises(ValueError, match=r"hotwords: 'aq': characters \['q'\] are not in the model's tokens"):
        s2t.stream(hotwords=["aq"])
    with pytest.raises(ValueError, match="hotwords: expected modified beam search"):
        OnnxSpeech2Text(export["dir"], num_threads=1, hotwords=["abc"])
    with pytest.raises(ValueError, match="hotwords: expected modified beam search"):
        OnnxSpeech2Text(export["dir"], num_threads=1).stream(hotwords=["abc"])
    with pytest.raises(ValueError, match="lm: expected modified beam search"):
        OnnxSpeech2Text(export["dir"], num_threads=1, lm=tmp_path / "lm.arpa")


# ------------------------------------------------------------------------------ streaming session
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_session_equals_search_on_whole_stream_frames(export, search):
    wave = speech()
    ref = reference_frames(wave, export["weight"])  # (T, D)
    s2t = OnnxSpeech2Text(export["dir"], search=search, beam=3, num_threads=1)
    session = s2t.stream()
    rng = np.random.default_rng(1)
    start = 0
    while start < len(wave):  # pieces of random size, some shorter than the prime
        n = int(rng.integers(1, 3000))
        session.accept_waveform(wave[start:start + n], 16000)
        start += n
    final = session.finalize()
    assert session.search_state.num_frames.tolist() == [ref.shape[0]]
    model = export["model"]
    enc = torch.from_numpy(ref)[None]
    if search == "greedy":
        expected = greedy_search(model, enc, max_symbols=3)[0]
    else:
        expected = modified_beam_search(model, enc, beam=3)[0][0]
        assert [h.tokens for h in final.nbest] == [h.tokens for h in modified_beam_search(model, enc, beam=3)[0]]
        assert final.nbest[0].tokens == final.tokens
    assert len(expected.tokens) > 3
    assert final.tokens == expected.tokens
    assert final.token_ids == expected.tokens
    assert final.timestamps == pytest.approx([0.02 * t for t in expected.timestamps])
    assert final.pieces == [s2t.tokenizer.id_to_token(i) for i in expected.tokens]
    assert final.text == s2t.tokenizer.decode(expected.tokens)
    assert final.score == pytest.approx(expected.score, abs=1e-3)
    assert s2t.transcribe(wave).tokens == final.tokens  # whole file in one call
    json.dumps(final.to_dict())


@pytest.mark.parametrize("extra", [0, 1, STRIDE - 1, STRIDE, STRIDE * C - 1, STRIDE * C, STRIDE * C + 2 * STRIDE])
def test_session_frame_count_follows_the_contract(export, extra):
    """A stream of S >= 400 samples gives (S - 400) // 320 + 1 frames, whatever the remainder."""
    s2t = OnnxSpeech2Text(export["dir"], num_threads=1)
    S = PRIME + STRIDE * C * 2 + extra
    wave = speech(S / 16000)[:S]
    session = s2t.stream()
    session.accept_waveform(wave)
    frames_before = int(session.search_state.num_frames[0])
    assert frames_before == (S - PRIME) // (STRIDE * C) * C  # only whole calls before finalize
    result = session.finalize()
    assert int(session.search_state.num_frames[0]) == (S - PRIME - STRIDE) // STRIDE + 1
    expected = greedy_search(export["model"], torch.from_numpy(reference_frames(wave, export["weight"]))[None])
    assert result.tokens == expected[0].tokens


@pytest.mark.parametrize("S", [0, 79, 80, 399])
def test_short_stream_has_no_frames(export, S):
    session = OnnxSpeech2Text(export["dir"]).stream()
    assert session.accept_waveform(speech()[:S]) == ""
    result = session.finalize()
    assert result.tokens == [] and result.text == ""
    assert int(session.search_state.num_frames[0]) == 0


def test_session_input_forms(export):
    s2t = OnnxSpeech2Text(export["dir"], num_threads=1)
    wave = speech(0.8)
    pcm = np.round(wave * 32767).astype(np.int16)
    a = s2t.transcribe(pcm)
    b = s2t.transcribe(pcm.astype(np.float32) / 32768.0)
    stereo = s2t.transcribe(np.stack([pcm, pcm], axis=1))
    assert a.tokens == b.tokens == stereo.tokens
    assert a.score == pytest.approx(b.score, abs=1e-6)


def test_transcribe_reads_a_file(export, tmp_path):
    s2t = OnnxSpeech2Text(export["dir"], num_threads=1)
    wave = speech(0.9, seed=4)
    soundfile.write(tmp_path / "a.wav", wave, 16000, subtype="FLOAT")
    assert s2t.transcribe(tmp_path / "a.wav").tokens == s2t.transcribe(wave).tokens
    soundfile.write(tmp_path / "b.wav", wave, 8000, subtype="FLOAT")  # resampled as it streams
    want = s2t.transcribe(resample(wave, 8000, 16000).numpy())
    assert s2t.transcribe(tmp_path / "b.wav").tokens == want.tokens
    session = s2t.stream()
    for piece in np.array_split(wave, 7):
        session.accept_waveform(piece, 8000)
    assert session.finalize().tokens == want.tokens


def test_session_errors(export):
    s2t = OnnxSpeech2Text(export["dir"])
    session = s2t.stream()
    session.accept_waveform(speech(0.1), 8000)
    with pytest.raises(ValueError, match="sample_rate: this session's audio is at 8000 Hz, found 16000"):
        session.accept_waveform(speech(0.1), 16000)
    with pytest.raises(ValueError, match="orig_rate must be a positive integer number of Hz, found 0"):
        s2t.stream().accept_waveform(speech(0.1), 0)
    session = s2t.stream()
    session.accept_waveform(speech(0.1))
    with pytest.raises(ValueError, match="samples: this session's audio has 1 channel"):
        session.accept_waveform(np.zeros((10, 2), np.float32))
    with pytest.raises(TypeError, match="samples: expected a numpy array"):
        session.accept_waveform("a.wav")
    with pytest.raises(ValueError, match=r"samples: expected \(S,\) or channels-last"):
        session.accept_waveform(np.zeros((2, 2, 2), np.float32))
    session.finalize()
    for call in (session.finalize, lambda: session.accept_waveform(speech(0.1))):
        with pytest.raises(ValueError, match="session: already finalized"):
            call()
    with pytest.raises(ValueError, match="expected at least 25 ms of audio .one encoder frame., found 399 samples at 16000 Hz"):
        s2t.transcribe(np.zeros(399, np.float32))
    bad = speech(0.1)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="expected finite samples"):
        s2t.transcribe(bad)
    for kwargs, match in (({"search": "viterbi"}, "search: expected one of"),
                          ({"nbest": 0}, "nbest: expected >= 1"),
                          ({"num_threads": 0}, "num_threads: expected >= 1"),
                          ({"max_symbols": 0}, "max_symbols: expected >= 1")):
        with pytest.raises(ValueError, match=match):
            OnnxSpeech2Text(export["dir"], **kwargs)


# ---------------------------------------------------------------------- config, metadata, files
def test_config_and_metadata_round_trip(export, tmp_path):
    config = export["config"]
    assert load_config(export["dir"]) == config
    for name in ("encoder.onnx", "predictor.onnx", "joiner.onnx"):
        assert read_metadata(export["dir"] / name) == config
    # adding keys keeps the others; values keep their JSON types
    path = tmp_path / "j.onnx"
    shutil.copy(export["dir"] / "joiner.onnx", path)
    add_metadata(path, {"int8": True, "note": "x y"})
    meta = read_metadata(path)
    assert meta["int8"] is True and meta["note"] == "x y" and meta["state_shapes"] == config["state_shapes"]
    table = TokenTable(export["dir"] / "tokens.txt")
    assert table.vocab_size == V and table.id_to_token(2) == "\u2581a"
    write_tokens(export["dir"] / "tokens.txt", tmp_path / "tokens.txt")  # from a path
    assert (tmp_path / "tokens.txt").read_text() == (export["dir"] / "tokens.txt").read_text()


def test_decoder_config(export):
    assert decoder_config(export["model"]) == {"blank_id": 0, "vocab_size": V, "context_size": 2,
                                               "encoder_dim": D, "predictor_dim": 32, "joiner_dim": 32}
    with pytest.raises(ValueError, match="expected a stateless predictor, found lstm"):
        decoder_config(tiny_model("lstm"))


def test_config_errors(export, tmp_path):
    config = dict(export["config"])
    with pytest.raises(ValueError, match=r"expected the keys \['vocab_size'\]"):
        write_config(tmp_path, {k: v for k, v in config.items() if k != "vocab_size"})
    with pytest.raises(ValueError, match="format: expected 'xtrans-onnx-1', found 'xtrans-onnx-0'"):
        check_config({**config, "format": "xtrans-onnx-0"})
    with pytest.raises(ValueError, match="chunk_frames: expected a JSON int, found '4'"):
        check_config({**config, "chunk_frames": "4"})
    with pytest.raises(ValueError, match="samples_per_call: expected frame_stride x chunk_frames = 1280"):
        check_config({**config, "samples_per_call": 1000})
    with pytest.raises(ValueError, match="state_dtypes: state.frames_seen: expected one of"):
        check_config({**config, "state_dtypes": ["float32", "complex64"]})
    with pytest.raises(ValueError, match="state_names: expected names 'state.<x>', found 'carry'"):
        check_config({**config, "state_names": ["carry", "state.frames_seen"]})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: expected JSON"):
        load_config(tmp_path)


def test_bad_directories(export, tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX export directory .*nowhere does not exist"):
        OnnxSpeech2Text(tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="ONNX export directory: expected a directory"):
        OnnxSpeech2Text(tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        OnnxSpeech2Text(tmp_path)
    for missing in ("joiner.onnx", "predictor.onnx", "encoder.onnx", "tokens.txt"):
        d = tmp_path / f"without_{missing}"
        shutil.copytree(export["dir"], d)
        (d / missing).unlink()
        with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
            OnnxSpeech2Text(d)
    d = tmp_path / "swapped"
    shutil.copytree(export["dir"], d)
    shutil.copy(d / "joiner.onnx", d / "predictor.onnx")
    with pytest.raises(ValueError, match=r"predictor.onnx: inputs: expected \['context'\]"):
        OnnxSpeech2Text(d)
    d = tmp_path / "mixed"
    shutil.copytree(export["dir"], d)
    add_metadata(d / "joiner.onnx", {"vocab_size": 500})
    with pytest.raises(ValueError, match="joiner.onnx: metadata vocab_size: expected 12 .* another export"):
        OnnxSpeech2Text(d)
    d = tmp_path / "tokens"
    shutil.copytree(export["dir"], d)
    (d / "tokens.txt").write_text("<blk> 0\na 1\n")
    with pytest.raises(ValueError, match="tokens.txt: expected 12 tokens .* found 2"):
        OnnxSpeech2Text(d)


def test_write_tokens_refuses_untokenisable(tmp_path):
    class Table:
        vocab_size = 2

        def id_to_token(self, i):
            return ["<blk>", "a b "][i]

    with pytest.raises(ValueError, match="tokenizer: token 1: expected a non-empty string"):
        write_tokens(Table(), tmp_path / "tokens.txt")


def test_import_is_torch_free():
    code = ("import sys, xtrans.onnx, xtrans.onnx.search, xtrans.onnx.config, xtrans.transcription; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_transcription_matches_inference():
    """xtrans.transcription mirrors xtrans.inference's Transcription fields and TokenTable."""
    import dataclasses

    from xtrans import inference, transcription

    assert [f.name for f in dataclasses.fields(transcription.Transcription)] == \
        [f.name for f in dataclasses.fields(inference.Transcription)]


# ---------------------------------------------------------------------------------- command line
def test_transcribe_cli_onnx(export, tmp_path, capsys):
    from xtrans.bin.transcribe import main
    from xtrans.data.resample import resample

    s2t = OnnxSpeech2Text(export["dir"], search="beam", beam=3)
    wave16 = speech(1.0, seed=7)
    wave8 = speech(1.0, seed=8)[::2].copy()
    soundfile.write(tmp_path / "a.wav", wave16, 16000, subtype="FLOAT")
    soundfile.write(tmp_path / "b.wav", wave8, 8000, subtype="FLOAT")
    assert main(["--onnx", str(export["dir"]), "--search", "beam", "--beam", "3", "--jsonl",
                 str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["tokens"] == s2t.transcribe(wave16).tokens
    assert lines[1]["tokens"] == s2t.transcribe(resample(wave8, 8000, 16000).numpy()).tokens
    assert lines[0]["text"] == s2t.transcribe(wave16).text
    assert main(["--onnx", str(export["dir"]), "--tokenizer", "x.model", str(tmp_path / "a.wav")]) == 2
    assert "--tokenizer: not used with --onnx" in capsys.readouterr().err
    assert main(["--onnx", str(tmp_path / "none"), str(tmp_path / "a.wav")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--onnx", str(export["dir"]), "--model", "best.pt", str(tmp_path / "a.wav")])
    assert "not allowed with argument" in capsys.readouterr().err


# ------------------------------------------------------------------- a real export (lead's encoder)
def test_real_export_equals_speech2text_stream(tmp_path):
    """python -m xtrans.bin.export_onnx of a checkpoint, decoded by OnnxSpeech2Text, gives the tokens,
    timestamps and scores of Speech2Text.stream() with the same rule, fed the same random pieces."""
    from xtrans.bin.export_onnx import main as export_main
    from xtrans.inference import Speech2Text
    from xtrans.testing.train_fixtures import save_decoding_checkpoint

    ckpt = save_decoding_checkpoint(tmp_path / "run", ["one two three", "four five six", "seven eight nine"],
                                    seed=0, waveform_norm="cumulative")
    out = tmp_path / "onnx"
    assert export_main(["--model", str(ckpt), "--outdir", str(out), "--chunk-ms", "320", "--left-ms", "640",
                        "--sinks", "2", "--int8"]) == 0
    rng = np.random.default_rng(0)
    waves = [speech(1.0, seed=1), speech(25123 / 16000, seed=2), speech(0.1, seed=3)[:400]]
    for search in ("greedy", "beam"):
        reference = Speech2Text.from_checkpoint(ckpt, chunk_ms=320, left_ms=640, sinks=2, search=search, beam=4)
        s2t = OnnxSpeech2Text(out, search=search, beam=4, num_threads=1, encoder_file="encoder.onnx")
        for wave in waves:
            a, b = reference.stream(), s2t.stream()
            pos = 0
            while pos < len(wave):
                n = int(rng.integers(1, 5000))
                a.accept_waveform(wave[pos:pos + n])
                assert b.accept_waveform(wave[pos:pos + n]) == a.text  # partial results too
                pos += n
            expected, got = a.finalize(), b.finalize()
            assert got.tokens == expected.tokens and got.timestamps == expected.timestamps
            assert got.score == pytest.approx(expected.score, abs=1e-3)
            assert [h.tokens for h in got.nbest] == [h.tokens for h in expected.nbest]
        assert len(reference.transcribe(waves[1]).tokens) > 3
    # --int8: the runtime loads the int8 encoder by default; it decodes (close to, not exactly) the same
    assert s2t.config["encoder_file"] == "encoder.int8.onnx"
    int8 = OnnxSpeech2Text(out, num_threads=1)
    assert int8.encoder.get_inputs()[0].name == "samples"
    ops = {node.op_type for node in onnx.load(str(out / "encoder.int8.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger"}
    session = int8.stream()
    session.accept_waveform(waves[1])
    session.finalize()
    assert int(session.search_state.num_frames[0]) == (len(waves[1]) - 400) // 320 + 1
