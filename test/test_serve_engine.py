"""The live server without the network: the protocol's messages, batched search states, and the
engine's batching and endpointing (a stream's result never depends on its batch; each final
equals Speech2Text streaming on the segment's audio)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from xtrans.data.resample import resample
from xtrans.inference import Speech2Text
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model
from xtrans.search import GreedySearch, ModifiedBeamSearch
from xtrans.search.batch import split_search_states, stack_search_states
from xtrans.serve.backend import TorchBackend
from xtrans.serve.engine import EndpointConfig, Engine
from xtrans.serve.protocol import (CLOSE_POLICY_VIOLATION, CLOSE_UNSUPPORTED_DATA, End, ProtocolError, Start,
                                   decode_audio, encode_audio, parse_text)
from xtrans.testing.serve_fixtures import batched_and_alone, digit_string, stream_reference
from xtrans.testing.train_fixtures import save_decoding_checkpoint

SENTENCES = ["one two three", "four five six", "seven eight nine", "zero oh"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_decoding_checkpoint(tmp_path_factory.mktemp("serve") / "run", SENTENCES, seed=0,
                                    waveform_norm="cumulative")


def recognizer(checkpoint, search="greedy"):
    return Speech2Text.from_checkpoint(checkpoint, chunk_ms=320, left_ms=640, sinks=2, search=search)


# ---------------------------------------------------------------------------- protocol messages
def test_parse_text_messages():
    assert parse_text('{"type": "start"}') == Start(16000, "s16le")
    assert parse_text('{"type": "start", "sample_rate": 8000, "format": "f32le"}') == Start(8000, "f32le")
    assert parse_text('{"type": "start", "sample_rate": 44100.0}') == Start(44100, "s16le")
    assert parse_text('{"type": "end"}') == End()


@pytest.mark.parametrize("text, code, match", [
    ("not json", CLOSE_POLICY_VIOLATION, "expected a JSON text message"),
    ("[1, 2]", CLOSE_POLICY_VIOLATION, "expected a JSON object"),
    ('{"type": "stop"}', CLOSE_POLICY_VIOLATION, 'expected "start" or "end", found \'stop\''),
    ('{"type": "start", "rate": 8000}', CLOSE_POLICY_VIOLATION, "unknown key"),
    ('{"type": "start", "format": "mp3"}', CLOSE_UNSUPPORTED_DATA, "format: expected one of s16le, f32le"),
    ('{"type": "start", "sample_rate": "fast"}', CLOSE_UNSUPPORTED_DATA, "sample_rate: expected an integer"),
    ('{"type": "start", "sample_rate": 0}', CLOSE_UNSUPPORTED_DATA, "sample_rate: expected an integer"),
])
def test_bad_text_messages(text, code, match):
    with pytest.raises(ProtocolError, match=match) as err:
        parse_text(text)
    assert err.value.code == code


def test_audio_formats_round_trip():
    x = (np.arange(-8, 8, dtype=np.float32) / 8)
    assert np.array_equal(decode_audio(encode_audio(x, "f32le"), "f32le"), x)
    assert np.array_equal(decode_audio(encode_audio(x, "s16le"), "s16le"), np.clip(x, -1, 32767 / 32768))
    assert np.array_equal(decode_audio(b"\x00\x80\xff\x7f", "s16le"), np.array([-1.0, 32767 / 32768], np.float32))
    with pytest.raises(ProtocolError, match="whole s16le samples .* found 3 bytes"):
        decode_audio(b"\x00\x01\x02", "s16le")
    with pytest.raises(ProtocolError, match="whole f32le samples .* found 6 bytes"):
        decode_audio(b"\x00" * 6, "f32le")
    with pytest.raises(ProtocolError, match="finite"):
        decode_audio(np.array([0.0, np.nan], "<f4").tobytes(), "f32le")
    with pytest.raises(ValueError, match="fmt: expected one of"):
        encode_audio(x, "mp3")


# ---------------------------------------------------------------------------- batched search states
@pytest.mark.parametrize("predictor", ["stateless", "lstm"])
@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_batched_search_steps_equal_streams_alone(predictor, kind):
    torch.manual_seed(0)
    pred = (PredictorConfig(kind="lstm", embed_dim=16, hidden_dim=16, dropout=0.0) if predictor == "lstm"
            else PredictorConfig(kind="stateless", embed_dim=16, context_size=2))
    model = build_model(ModelConfig(encoder=EncoderConfig(preset="tiny"), predictor=pred, joiner_dim=16),
                        vocab_size=12).eval()
    with torch.no_grad():
        model.joiner.output.weight.mul_(4.0)
    search = GreedySearch(model, max_symbols=2) if kind == "greedy" else ModifiedBeamSearch(model, beam=3)
    D = model.joiner.encoder_proj.in_features
    chunks = torch.randn(3, 4, 5, D)  # stream, chunk, frames, D
    alone = []
    for b in range(3):
        state = search.init_state(1)
        for c in range(4):
            state = search.step(chunks[b, c][None], state)
        alone.append(state)
    # stream 2 joins after one chunk of its own; lengths differ in the last chunk
    states = [search.init_state(1), search.init_state(1), search.step(chunks[2, 0][None], search.init_state(1))]
    for c in range(4):
        batch = stack_search_states(states[:2] + ([states[2]] if c < 3 else []))
        enc = torch.stack([chunks[0, c], chunks[1, c]] + ([chunks[2, c + 1]] if c < 3 else []))
        lengths = torch.tensor([5, 3 if c == 3 else 5] + ([5] if c < 3 else []))
        parts = split_search_states(search.step(enc, batch, lengths))
        states = parts + ([states[2]] if c == 3 else [])
    states[1] = search.step(chunks[1, 3, 3:][None], states[1])  # the frames stream 1 left out
    for b in range(3):
        got, want = search.results(states[b]), search.results(alone[b])
        if kind == "greedy":
            assert (got[0].tokens, got[0].timestamps) == (want[0].tokens, want[0].timestamps)
            assert got[0].score == pytest.approx(want[0].score, abs=1e-4)  # float32 joiner
        else:
            assert [(h.tokens, h.timestamps) for h in got[0]] == [(h.tokens, h.timestamps) for h in want[0]]
            assert [h.score for h in got[0]] == pytest.approx([h.score for h in want[0]], abs=1e-4)
        assert int(states[b].num_frames[0]) == 20


def test_stack_search_states_refuses_bad_input():
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=EncoderConfig(preset="tiny"), joiner_dim=16), vocab_size=12).eval()
    greedy, beam = GreedySearch(model).init_state(2), ModifiedBeamSearch(model).init_state(1)
    with pytest.raises(ValueError, match="at least one"):
        stack_search_states([])
    with pytest.raises(TypeError, match="a mix of BeamState, GreedyState"):
        stack_search_states([greedy, beam])
    with pytest.raises(TypeError, match="expected GreedyState or BeamState"):
        stack_search_states([object()])
    with pytest.raises(TypeError, match="state: expected a GreedyState or BeamState"):
        split_search_states(object())
    assert [s.batch_size for s in split_search_states(stack_search_states([greedy, greedy]))] == [1, 1, 1, 1]


# ---------------------------------------------------------------------------- the engine
def run_engine(engine: Engine, signals, rate: int, seed: int, starts=None, max_piece: int = 4000):
    """Streams each signal into the engine in random pieces (stream k joins at step ``starts[k]``),
    stepping as it goes; returns every event's message per signal."""
    rng = random.Random(seed)
    starts = starts or [0] * len(signals)
    ids, pos = [None] * len(signals), [0] * len(signals)
    messages = {k: [] for k in range(len(signals))}
    owner = {}
    done = set()
    step = 0
    while len(done) < len(signals):
        for k, x in enumerate(signals):
            if step < starts[k] or pos[k] is None:
                continue
            if ids[k] is None:
                ids[k] = engine.open(rate)
                owner[ids[k]] = k
            n = rng.randint(1, max_piece)
            engine.accept(ids[k], x[pos[k]:pos[k] + n])
            pos[k] += n
            if pos[k] >= len(x):
                engine.end(ids[k])
                pos[k] = None
        for event in engine.step():
            messages[owner[event.stream]].append(event.message)
            if event.message["type"] == "done":
                done.add(owner[event.stream])
        step += 1
    assert engine.num_streams == 0
    return [messages[k] for k in range(len(signals))]


def check_final(final, ref, start=0.0):
    assert final["token_ids"] == ref.tokens
    assert final["tokens"] == ref.pieces
    assert final["text"] == ref.text
    assert final["timestamps"] == [round(start + t, 6) for t in ref.timestamps]


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_engine_batch_does_not_change_a_streams_result(spoken_digits, checkpoint, search):
    s2t = recognizer(checkpoint, search)
    signals = [digit_string(spoken_digits, 3 + k % 3, seed=k) for k in range(6)]
    refs = [stream_reference(s2t, x, 8000) for x in signals]
    assert sum(bool(r.tokens) for r in refs) >= 4, "the tiny model emits tokens on most strings"
    engine = Engine(TorchBackend(s2t), EndpointConfig(None, None), max_batch=4)
    # streams join at different steps and run in batches of at most 4
    results = run_engine(engine, signals, 8000, seed=1, starts=[0, 0, 1, 2, 2, 6], max_piece=6000)
    assert engine.stats.max_batch == 4 and engine.stats.errors == 0
    solo = run_engine(Engine(TorchBackend(s2t), EndpointConfig(None, None)), signals[:1], 8000, seed=2)[0]
    assert solo[-2] == results[0][-2]
    for messages, ref, x in zip(results, refs, signals):
        assert [m["type"] for m in messages[-2:]] == ["final", "done"]
        assert {m["type"] for m in messages[:-2]} <= {"partial"}
        final = messages[-2]
        check_final(final, ref)
        assert (final["segment"], final["start"], final["end"]) == (0, 0.0, round(2 * len(x) / 16000, 6))
        partials = [m["text"] for m in messages if m["type"] == "partial"]
        assert all(a != b for a, b in zip(partials, partials[1:])), "a partial only when the text changes"


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("threads, batch_rows", [(1, 8), (2, 8), (2, 3), (2, 5)])  # 5: rows split unevenly
def test_torch_backend_batches_equal_streams_alone(spoken_digits, checkpoint, search, threads, batch_rows):
    """Each stream's encoder state and result after each chunk, batched in shuffled groups of 1-5
    (larger than ``batch_rows`` too), equal those of the stream advanced alone, bit for bit."""
    from xtrans.streaming import flatten_state

    backend = TorchBackend(recognizer(checkpoint, search), batch_rows=batch_rows)
    waves = [resample(torch.from_numpy(digit_string(spoken_digits, 4, seed=k)), 8000, 16000).numpy()
             for k in range(6)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        steps = 0
        for k, batched, alone in batched_and_alone(backend, waves):
            steps += 1
            for b in range(len(waves)):
                for (name, got), (_, want) in zip(flatten_state(batched[b].encoder), flatten_state(alone[b].encoder)):
                    assert torch.equal(got, want), (k, b, name)
                assert backend.result(batched[b]) == backend.result(alone[b]), (k, b)
    finally:
        torch.set_num_threads(before)
    assert steps >= 3 and any(backend.result(s).tokens for s in alone)


def test_engine_batches_are_one_torch_call(checkpoint):
    """The engine's batches for a TorchBackend hold at most batch_rows streams (one model call each,
    whose partials a server sends as soon as it returns); max_batch below it still caps them."""
    for rows, max_batch, sizes in ((2, 32, [2, 2, 1]), (4, 32, [4, 1]), (4, 3, [3, 2])):
        backend = TorchBackend(recognizer(checkpoint), batch_rows=rows)
        engine = Engine(backend, EndpointConfig(None, None), max_batch=max_batch)
        for sid in [engine.open() for _ in range(5)]:
            engine.accept(sid, np.zeros(2 * backend.geometry.samples_per_call, np.float32))
        for _ in range(2):  # the priming call, then a chunk
            work = engine.collect()
            assert [len(b) for b in work.batches] == sizes
            engine.apply(engine.compute(work))


def test_engine_refuses_bad_settings(checkpoint):
    backend = TorchBackend(recognizer(checkpoint))
    with pytest.raises(ValueError, match="max_batch: expected an integer >= 1, found 0"):
        Engine(backend, max_batch=0)
    with pytest.raises(ValueError, match="silence_ms: expected a positive number or None"):
        EndpointConfig(silence_ms=0)
    with pytest.raises(ValueError, match="max_segment_s: expected a positive number or None"):
        EndpointConfig(max_segment_s=-1)
    with pytest.raises(ValueError, match="streaming: expected a rule with a chunk size"):
        TorchBackend(Speech2Text.from_checkpoint(checkpoint))
    with pytest.raises(ValueError, match="batch_rows: expected an integer >= 1, found 0"):
        TorchBackend(recognizer(checkpoint), batch_rows=0)
    with pytest.raises(ValueError, match="rates|ratio|positive"):
        Engine(backend).open(0)


def test_engine_endpoints_restart_the_segment(spoken_digits, checkpoint):
    """Two utterances 2 s apart: two finals whose times tile the audio, each equal to Speech2Text on
    its segment's audio (the cut is at a frame boundary; the first segment also read the 80
    samples after it)."""
    s2t = recognizer(checkpoint)
    a = resample(torch.from_numpy(digit_string(spoken_digits, 2, seed=3)), 8000, 16000).numpy()
    b = resample(torch.from_numpy(digit_string(spoken_digits, 2, seed=4)), 8000, 16000).numpy()
    x = np.concatenate([a, np.zeros(32000, np.float32), b])
    engine = Engine(TorchBackend(s2t), EndpointConfig(silence_ms=800, max_segment_s=20))
    messages = run_engine(engine, [x], 16000, seed=5)[0]
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["segment"] for f in finals] == [0, 1]
    first, second = finals
    a_end, b_start, total = len(a) / 16000, (len(a) + 32000) / 16000, len(x) / 16000
    assert first["start"] == 0.0 and a_end < first["end"] <= b_start
    assert second["start"] == first["end"] and second["end"] == total
    assert first["text"] and second["text"]
    assert max(first["timestamps"]) < a_end and min(second["timestamps"]) >= b_start
    assert first["end"] - (max(first["timestamps"]) + 0.02) >= 0.8 - 1e-6  # 800 ms of trailing blank
    cut = int(round(first["end"] * 16000))
    check_final(first, stream_reference(s2t, x[:cut + 80], 16000))
    check_final(second, stream_reference(s2t, x[cut:], 16000), start=first["end"])
    partial_segments = [m["segment"] for m in messages if m["type"] == "partial"]
    assert partial_segments == sorted(partial_segments) and set(partial_segments) <= {0, 1}
