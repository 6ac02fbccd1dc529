"""The live server on an export is exact: whatever streams share its batches, and with two workers
computing batches at once, every stream gets the messages a replay of its audio alone gets, and
its final (endpointing off) is the PyTorch recognizer's result. The export's CNN is the kind whose
onnxruntime results depend on the batch on two intra-op threads; the backend computes each batch on
one, so its states match bit for bit."""

import asyncio
import random

import numpy as np
import pytest

from xtrans.data.resample import init_resample_state, resample_chunk, resample_flush
from xtrans.onnx import OnnxSpeech2Text
from xtrans.serve.client import stream_audio
from xtrans.serve.engine import EndpointConfig, Engine, Work
from xtrans.serve.onnx_backend import OnnxBackend
from xtrans.serve.server import BackgroundServer, ServerOptions
from xtrans.testing.runtime_fixtures import SEARCHES
from xtrans.testing.serve_fixtures import batched_and_alone


def at_16k(samples, rate):
    if rate == 16000:
        return samples
    state = init_resample_state(rate, 16000)
    head, state = resample_chunk(samples, state)
    tail, _ = resample_flush(state)
    return np.concatenate([head, tail])


def signals(refs):
    """(samples, rate, format) per client: every test signal, and two of them again in f32le."""
    out = [(*refs.samples(utt), "s16le") for utt in refs.audio]
    return out + [(x, r, "f32le") for x, r, _ in out[:2]]


def test_engine_deals_a_step_among_workers(runtime_refs):
    """Five streams ready: one batch for one worker; for two, batches of 3 and 2, for three 2, 2 and 1."""
    backend = OnnxBackend.from_directory(runtime_refs.onnx)
    for workers, sizes in ((1, [5]), (2, [3, 2]), (3, [2, 2, 1])):
        engine = Engine(backend, EndpointConfig(None, None), workers=workers)
        for sid in [engine.open() for _ in range(5)]:
            engine.accept(sid, np.zeros(2 * backend.geometry.samples_per_call, np.float32))
        for step in range(2):  # the priming call, then a chunk
            work = engine.collect()
            assert sorted(len(b) for b in work.batches) == sorted(sizes)
            for batch in work.batches:  # as the server does: each batch applied when it is computed
                engine.apply(engine.compute(Work([batch])))
    with pytest.raises(ValueError, match="workers: expected an integer >= 1, found 0"):
        Engine(backend, workers=0)
    with pytest.raises(ValueError, match="workers: expected a positive number, found 0"):
        ServerOptions(workers=0)


def test_backend_refuses_threads(runtime_refs):
    with pytest.raises(ValueError, match=r"s2t: expected an export loaded with num_threads=1 .* found intra-op "
                                         r"threads \{'encoder': 2"):
        OnnxBackend(OnnxSpeech2Text(runtime_refs.onnx, num_threads=2))


@pytest.mark.parametrize("search, encoder_file", [("greedy", None), ("beam", None), ("greedy", "encoder.int8.onnx")])
def test_backend_batches_equal_streams_alone(runtime_refs, search, encoder_file):
    """Each stream's encoder state and result after each chunk, batched in shuffled groups of 1-5,
    equal those of the stream advanced alone, bit for bit; with the int8 encoder too, whose
    activation scales are taken over a call's whole batch (so the backend calls it per stream)."""
    backend = OnnxBackend(OnnxSpeech2Text(runtime_refs.onnx, search=search, num_threads=1, encoder_file=encoder_file))
    assert backend.s2t.encoder_batch_invariant == (encoder_file is None)
    waves = [at_16k(x, r) for x, r, _ in signals(runtime_refs)]
    steps = 0
    for k, batched, alone in batched_and_alone(backend, waves):
        steps += 1
        for b in range(len(waves)):
            for name, value in alone[b].encoder.items():
                assert np.array_equal(batched[b].encoder[name], value), (k, b, name)
            assert backend.result(batched[b]) == backend.result(alone[b]), (k, b)
    assert steps >= 3


def run_clients(url, clients, seed):
    rng = random.Random(seed)

    async def main():
        return await asyncio.gather(*[
            stream_audio(url, x, r, fmt, piece_samples=iter(lambda: rng.randint(1, 3000), None))
            for x, r, fmt in clients])

    return asyncio.run(main())


@pytest.mark.parametrize("search, endpoint", [("greedy", EndpointConfig(None, None)),
                                              ("greedy", EndpointConfig(silence_ms=300, max_segment_s=1.5)),
                                              ("beam", EndpointConfig(silence_ms=300, max_segment_s=1.5))])
def test_concurrent_streams_get_the_messages_of_a_replay_alone(runtime_refs, search, endpoint):
    backend = OnnxBackend.from_directory(runtime_refs.onnx, search=search)
    clients = signals(runtime_refs)
    with BackgroundServer(backend, ServerOptions(port=0, endpoint=endpoint, workers=2)) as srv:
        together = run_clients(srv.url, clients, seed=1)
        assert srv.call(lambda: srv.server.engine.stats.max_batch) > 1
        alone = [run_clients(srv.url, [client], seed=2)[0] for client in clients]
    for k, (got, ref) in enumerate(zip(together, alone)):
        assert got.close_code == ref.close_code == 1000, k
        assert got.messages == ref.messages, k
        assert any(m["type"] == "partial" for m in got.messages), k
    if endpoint.silence_ms is None:
        for (utt, result), got in zip(runtime_refs.results[search].items(), together):
            assert [(m["token_ids"], m["text"], m["timestamps"]) for m in got.finals] == [
                (result["tokens"], result["text"], result["timestamps"])], utt
    else:
        assert sum(len(got.finals) > 1 for got in together) >= 2  # endpoints happened


def test_command_line_workers():
    """``serve --onnx``: ``--num-threads`` decoding threads (default one per CPU); ``--model``: one,
    torch's threads being its own; ``--batch-rows`` is ``--model``'s alone."""
    from xtrans.bin.serve import available_cpus, get_parser, options_from

    parse = get_parser().parse_args
    assert options_from(parse(["--onnx", "exp/onnx"])).workers == available_cpus()
    assert options_from(parse(["--onnx", "exp/onnx", "--num-threads", "3"])).workers == 3
    assert options_from(parse(["--model", "best.pt", "--num-threads", "2"])).workers == 1
    with pytest.raises(ValueError, match="--batch-rows: not used with --onnx"):
        options_from(parse(["--onnx", "exp/onnx", "--batch-rows", "4"]))
