"""Greedy and modified beam search: against independent walks through predictor and joiner,
the exact one-symbol-per-frame forward, max_symbols, batching, and chunked (streaming) use."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from xtrans.masks import StreamingConfig
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
from xtrans.search import GreedySearch, ModifiedBeamSearch, greedy_search, modified_beam_search
from xtrans.streaming import StreamingEncoder

D = 96  # the tiny encoder's dimension


def tiny_model(kind="stateless", vocab_size=12, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm="cumulative"),
                      predictor=PredictorConfig(kind=kind, embed_dim=32, hidden_dim=32, dropout=0.0),
                      joiner_dim=32)
    model = build_model(cfg, vocab_size=vocab_size).eval()
    with torch.no_grad():  # louder logits than the random init, so paths differ clearly
        model.joiner.output.weight.mul_(4.0)
    return model


def encoder_frames(B=3, T=24, seed=1):
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))


def walk_logprobs(model, enc, tokens, symbols_per_frame):
    """Independent walk: log p of each decision along a path, with the predictor run on the
    whole token prefix (``predictor.forward``) and the joiner unprojected.

    ``symbols_per_frame[t]`` is the list of symbols taken at frame t (tokens, then maybe blank).
    """
    pred = model.predictor(torch.tensor([tokens], dtype=torch.long))[0]  # (U+1, D_pred)
    total, u = 0.0, 0
    for t, symbols in enumerate(symbols_per_frame):
        for s in symbols:
            logp = F.log_softmax(model.joiner(enc[t], pred[u]).double(), dim=-1)
            total += float(logp[s])
            if s != model.blank:
                assert tokens[u] == s
                u += 1
    assert u == len(tokens)
    return total


def one_symbol_path(hyp, T, blank):
    """The one-symbol-per-frame alignment given by a hypothesis' timestamps."""
    at = dict(zip(hyp.timestamps, hyp.tokens))
    assert len(at) == len(hyp.tokens), "one token per frame at most"
    return [[at.get(t, blank)] for t in range(T)]


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_beam_one_equals_greedy_one_symbol(kind):
    model = tiny_model(kind)
    enc, lengths = encoder_frames(), torch.tensor([24, 15, 6])
    greedy = greedy_search(model, enc, lengths, max_symbols=1)
    beam = modified_beam_search(model, enc, lengths, beam=1)
    assert any(len(h.tokens) > 2 for h in greedy)
    for g, (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert g.timestamps == b.timestamps
        assert g.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_beam_scores_are_alignment_logprobs(kind):
    model = tiny_model(kind)
    enc, lengths = encoder_frames(), torch.tensor([24, 15, 6])
    with torch.no_grad():
        nbest = modified_beam_search(model, enc, lengths, beam=4, merge=False)
        for b, hyps in enumerate(nbest):
            assert len(hyps) == 4
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            T = int(lengths[b])
            for h in hyps:
                assert all(0 <= t < T for t in h.timestamps)
                path = one_symbol_path(h, T, model.blank)
                assert h.score == pytest.approx(walk_logprobs(model, enc[b], h.tokens, path), abs=1e-4)


def exact_logprob(model, enc, tokens):
    """log P(tokens) summed over every one-symbol-per-frame alignment (float64 forward)."""
    T, U = enc.shape[0], len(tokens)
    pred = model.predictor(torch.tensor([tokens], dtype=torch.long))[0]
    logp = F.log_softmax(model.joiner(enc[:, None], pred[None]).double(), dim=-1)  # (T, U+1, V)
    alpha = torch.full((U + 1,), -math.inf, dtype=torch.float64)
    alpha[0] = 0.0
    for t in range(T):
        new = alpha + logp[t, :, model.blank]
        if U:
            emit = alpha[:-1] + logp[t, torch.arange(U), torch.tensor(tokens)]
            new[1:] = torch.logaddexp(new[1:], emit)
        alpha = new
    return float(alpha[U])


def test_merged_scores_are_total_logprob_without_pruning():
    model = tiny_model("lstm", vocab_size=4)
    enc = encoder_frames(B=1, T=5)
    with torch.no_grad():
        # V=4, T=5: at most 1+3+...+3^5 = 364 sequences; 1000 keeps every alignment
        (hyps,) = modified_beam_search(model, enc, beam=1000)
        assert len(hyps) == len({tuple(h.tokens) for h in hyps}) == 364
        # the sequences share all the probability mass
        assert torch.logsumexp(torch.tensor([h.score for h in hyps]), 0).item() == pytest.approx(0.0, abs=1e-6)
        for h in hyps[:20] + hyps[-5:]:
            assert h.score == pytest.approx(exact_logprob(model, enc[0], h.tokens), abs=1e-5)
        # the timestamps are one alignment of the tokens, the best one
        best = hyps[0]
        path = one_symbol_path(best, 5, model.blank)
        assert walk_logprobs(model, enc[0], best.tokens, path) <= best.score + 1e-9
    # with pruning, a merged score is still at most the total
    with torch.no_grad():
        (pruned,) = modified_beam_search(model, enc, beam=3)
        for h in pruned:
            assert h.score <= exact_logprob(model, enc[0], h.tokens) + 1e-6


def test_greedy_respects_max_symbols():
    model = tiny_model("stateless")
    with torch.no_grad():
        model.joiner.output.bias[5] += 100.0  # token 5 dominates everywhere
    enc, lengths = encoder_frames(B=2, T=10), torch.tensor([10, 4])
    for max_symbols in (1, 2, 7):
        hyps = greedy_search(model, enc, lengths, max_symbols=max_symbols)
        for h, T in zip(hyps, lengths.tolist()):
            assert h.tokens == [5] * (T * max_symbols)
            assert h.timestamps == [t for t in range(T) for _ in range(max_symbols)]


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_greedy_matches_independent_walk(kind):
    model = tiny_model(kind)
    with torch.no_grad():
        model.joiner.output.bias[model.blank] -= 1.0  # several tokens per frame happen
    enc, lengths = encoder_frames(), torch.tensor([24, 15, 6])
    hyps = greedy_search(model, enc, lengths, max_symbols=3)
    assert any(len(set(h.timestamps)) < len(h.timestamps) for h in hyps), "some frame emits twice"
    with torch.no_grad():
        for b, h in enumerate(hyps):
            # reference: one utterance at a time, predictor re-run on the whole prefix each step
            tokens, times, path = [], [], []
            for t in range(int(lengths[b])):
                taken = []
                for _ in range(3):
                    pred = model.predictor(torch.tensor([tokens], dtype=torch.long))[0, -1]
                    k = int(model.joiner(enc[b, t], pred).argmax())
                    taken.append(k)
                    if k == model.blank:
                        break
                    tokens.append(k)
                    times.append(t)
                path.append(taken)
            assert h.tokens == tokens and h.timestamps == times
            assert h.score == pytest.approx(walk_logprobs(model, enc[b], tokens, path), abs=1e-4)


def test_batch_equals_single():
    model = tiny_model("lstm")
    enc, lengths = encoder_frames(), torch.tensor([24, 15, 6])
    batch_g = greedy_search(model, enc, lengths)
    batch_b = modified_beam_search(model, enc, lengths, beam=4)
    for b in range(3):
        one = enc[b:b + 1, :int(lengths[b])]
        assert greedy_search(model, one)[0].tokens == batch_g[b].tokens
        single = modified_beam_search(model, one, beam=4)[0]
        assert [h.tokens for h in single] == [h.tokens for h in batch_b[b]]
        assert [h.timestamps for h in single] == [h.timestamps for h in batch_b[b]]


def chunked(search, enc, lengths, sizes):
    """Feeds ``enc`` in chunks of the given sizes (cycled), each stream its own valid frames."""
    state = search.init_state(enc.shape[0])
    start, i = 0, 0
    while start < enc.shape[1]:
        n = sizes[i % len(sizes)]
        i += 1
        piece = enc[:, start:start + n]
        valid = (lengths - start).clamp(min=0, max=piece.shape[1])
        state = search.step(piece, state, valid)
        start += n
    return state


@pytest.mark.parametrize("kind", ["stateless", "lstm"])
def test_streaming_search_equals_offline(kind):
    model = tiny_model(kind)
    enc, lengths = encoder_frames(), torch.tensor([24, 15, 6])
    greedy = GreedySearch(model, max_symbols=2)
    beam = ModifiedBeamSearch(model, beam=4)
    offline_g, offline_b = greedy(enc, lengths), beam(enc, lengths)
    for sizes in ([1], [5, 3, 1, 7], [24]):
        g = greedy.results(chunked(greedy, enc, lengths, sizes))
        b = beam.results(chunked(beam, enc, lengths, sizes))
        for x, y in zip(g, offline_g):
            assert (x.tokens, x.timestamps) == (y.tokens, y.timestamps)
            assert x.score == pytest.approx(y.score, abs=1e-4)
        for xs, ys in zip(b, offline_b):
            assert [(h.tokens, h.timestamps) for h in xs] == [(h.tokens, h.timestamps) for h in ys]
            assert [h.score for h in xs] == pytest.approx([h.score for h in ys], abs=1e-4)


def test_search_through_real_streaming_encoder():
    """Waveform -> StreamingEncoder chunk by chunk -> streaming search, against the masked full pass."""
    model = tiny_model("lstm")
    cfg = StreamingConfig(chunk_size=4, left_context=4, num_sinks=2)
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        enc, enc_lengths = model.encode(wave, torch.tensor([16000]), cfg)
    for search in (GreedySearch(model, max_symbols=1), ModifiedBeamSearch(model, beam=4)):
        offline = search.results(search.step(enc, search.init_state(1), enc_lengths))
        streamer = StreamingEncoder(model.encoder, cfg)
        enc_state, state = streamer.init_state(1), search.init_state(1)
        start = 0
        for n in [1000, 333, 4000, 17, 2650, 8000]:
            frames, counts, enc_state = streamer.forward_chunk(wave[:, start:start + n], enc_state)
            state = search.step(frames, state, counts)
            start += n
        frames, counts, enc_state = streamer.finalize(enc_state)
        state = search.step(frames, state, counts)
        assert int(state.num_frames[0]) == int(enc_lengths[0])
        streamed = search.results(state)
        if isinstance(search, GreedySearch):
            assert streamed[0].tokens == offline[0].tokens and streamed[0].tokens
            assert streamed[0].timestamps == offline[0].timestamps
        else:
            assert [h.tokens for h in streamed[0]] == [h.tokens for h in offline[0]]


def test_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_symbols: expected >= 1"):
        GreedySearch(model, max_symbols=0)
    with pytest.raises(ValueError, match="beam: expected >= 1"):
        ModifiedBeamSearch(model, beam=0)
    with pytest.raises(ValueError, match=r"enc: expected encoder frames \(B, T, D\)"):
        greedy_search(model, torch.zeros(5, D))
    with pytest.raises(ValueError, match="enc: expected a batch of 2 streams"):
        GreedySearch(model).step(torch.zeros(3, 4, D), GreedySearch(model).init_state(2))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 4\]"):
        modified_beam_search(model, torch.zeros(2, 4, D), torch.tensor([5, 1]))
    with pytest.raises(ValueError, match="nbest: expected >= 1"):
        modified_beam_search(model, torch.zeros(1, 4, D), nbest=0)


@pytest.mark.parametrize("make", [GreedySearch, ModifiedBeamSearch])
def test_both_searches_check_their_chunks_alike(make):
    """One chunk check (xtrans.search_core.ops.check_chunk) serves both searches' step."""
    search = make(tiny_model())
    state = search.init_state(2)
    with pytest.raises(ValueError, match="enc: expected a batch of 2 streams"):
        search.step(torch.zeros(3, 4, D), state)
    with pytest.raises(ValueError, match=r"lengths: expected shape \(2,\), found \(3,\)"):
        search.step(torch.zeros(2, 4, D), state, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 4\], found \[-1, 2\]"):
        search.step(torch.zeros(2, 4, D), state, torch.tensor([-1, 2]))


def test_both_runtimes_run_the_search_core():
    """The PyTorch and onnxruntime searches are the core's searches on their own ops; the core imports no torch."""
    import subprocess
    import sys

    import xtrans.onnx.search as onnx_search
    import xtrans.search_core as core

    for search in (GreedySearch, onnx_search.GreedySearch):
        assert issubclass(search, core.GreedySearch) and search.step is core.GreedySearch.step
    for search in (ModifiedBeamSearch, onnx_search.ModifiedBeamSearch):
        assert issubclass(search, core.ModifiedBeamSearch) and search.step is core.ModifiedBeamSearch.step
    code = ("import sys, xtrans.search_core; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_beam_call_has_rows_fixed_by_batch_and_beam(monkeypatch):
    """BLAS kernels round a row by the number of rows in the call, so each stream's scores would
    depend on how many hypotheses its neighbours hold: every joiner and prediction-network call of
    the search computes 2 * beam rows per stream, with hotwords on one stream (the search without
    boosts inside: up to 2 * beam hypotheses) or on none."""
    from xtrans.context import ContextGraph

    model = tiny_model("lstm")
    calls = []
    joiner, step = type(model.joiner).forward, type(model.predictor).step
    def counted_joiner(self, enc, pred, **kw):
        calls.append(("joiner", enc.shape[0]))
        return joiner(self, enc, pred, **kw)

    def counted_step(self, symbols, state):
        calls.append(("prediction", symbols.shape[0]))
        return step(self, symbols, state)

    monkeypatch.setattr(type(model.joiner), "forward", counted_joiner)
    monkeypatch.setattr(type(model.predictor), "step", counted_step)
    enc, lengths = encoder_frames(), torch.tensor([24, 15, 6])
    for scorer in (None, [ContextGraph([([3, 4, 5], 2.0), ([7, 7], 1.0)], 12), None, None]):
        for beam in (1, 2, 4):
            calls.clear()
            search = ModifiedBeamSearch(model, beam=beam)
            search.step(enc, search.init_state(3, scorer=scorer), lengths)
            assert {n for _, n in calls} == {2 * beam * 3}, (scorer, beam)
            assert {kind for kind, _ in calls} == {"joiner", "prediction"}


def test_a_streams_beam_does_not_depend_on_its_neighbours():
    """A stream beside two other streams and beside two copies of itself (as the server fills a
    batch up): the same tokens, timestamps and scores, bit for bit, in chunks as a server feeds them.
    The demo's sizes (joiner 128, 30 tokens), where BLAS uses its blocked kernels."""
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", pos_conv="chunk", waveform_norm="cumulative"),
                      predictor=PredictorConfig(kind="stateless", embed_dim=64, context_size=2), joiner_dim=128)
    model = build_model(cfg, vocab_size=30).eval()
    with torch.no_grad():  # peaked like a trained model's: beams merge, so their sizes differ by stream
        model.joiner.output.weight.mul_(8.0)
        model.joiner.output.bias[model.blank] += 3.0
    enc = 0.2 * encoder_frames(T=24)  # quiet frames: mostly blank, beams of 2-3 distinct hypotheses
    alone = enc[2:].expand(3, -1, -1).contiguous()  # stream 2, last in the mixed batch, first here
    for beam, threads in itertools.product((2, 3, 4), (1, 2)):
        search = ModifiedBeamSearch(model, beam=beam)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results = []
            for x in (enc, alone):
                state = search.init_state(3)
                for c in range(0, 24, 8):
                    state = search.step(x[:, c:c + 8], state)
                hyps = search.results(state)[0 if x is alone else 2]
                results.append([(h.tokens, h.timestamps, h.score) for h in hyps])
        finally:
            torch.set_num_threads(before)
        assert results[0] == results[1], (beam, threads)
