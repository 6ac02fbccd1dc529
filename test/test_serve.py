"""The live server over loopback websockets: the protocol (each final equals Speech2Text streaming
on the same audio, both formats, an 8 kHz client), concurrent clients, endpointing, faults and
limits (the right error and close code, and a well-behaved client alongside still gets its exact
result), the HTTP side, and the command line."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from xtrans.bin.serve import main as serve_main
from xtrans.data.resample import resample
from xtrans.inference import Speech2Text
from xtrans.serve.backend import TorchBackend
from xtrans.serve.client import stream_audio
from xtrans.serve.engine import EndpointConfig
from xtrans.serve.protocol import encode_audio
from xtrans.serve.server import BackgroundServer, ServerOptions
from xtrans.testing.serve_fixtures import digit_string, stream_reference, to_s16
from xtrans.testing.train_fixtures import save_decoding_checkpoint

SENTENCES = ["one two three", "four five six", "seven eight nine", "zero oh"]
NO_ENDPOINTS = EndpointConfig(silence_ms=None, max_segment_s=None)
MARKER = 0.5  # f32le audio holding this exact value makes FaultyBackend raise


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_decoding_checkpoint(tmp_path_factory.mktemp("serve") / "run", SENTENCES, seed=0,
                                    waveform_norm="cumulative")


@pytest.fixture(scope="module")
def s2t(checkpoint):
    return Speech2Text.from_checkpoint(checkpoint, chunk_ms=320, left_ms=640, sinks=2)


@pytest.fixture(scope="module")
def server(s2t):
    with BackgroundServer(TorchBackend(s2t), ServerOptions(port=0, endpoint=NO_ENDPOINTS)) as srv:
        yield srv


def random_pieces(seed: int, high: int = 3000):
    rng = random.Random(seed)
    return iter(lambda: rng.randint(1, high), None)


def check_final(final, ref, start=0.0):
    assert final["text"] == ref.text
    assert final["token_ids"] == ref.tokens and final["tokens"] == ref.pieces
    assert final["timestamps"] == [round(start + t, 6) for t in ref.timestamps]


def run(coro):
    return asyncio.run(coro)


def wait_until(predicate, timeout_s: float = 5.0):
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


# ---------------------------------------------------------------------------- 1. protocol
@pytest.mark.parametrize("fmt, rate", [("s16le", 16000), ("f32le", 16000), ("s16le", 8000), ("f32le", 8000)])
def test_final_equals_speech2text_streaming(spoken_digits, server, s2t, fmt, rate):
    x8 = digit_string(spoken_digits, 4, seed=11)
    x = x8 if rate == 8000 else resample(torch.from_numpy(x8), 8000, 16000).numpy()
    if fmt == "s16le":
        x = to_s16(x)  # what the client sends
    ref = stream_reference(s2t, x, rate)
    assert ref.tokens, "the tiny model emits tokens on this string"
    result = run(stream_audio(server.url, x, rate, fmt, piece_samples=random_pieces(rate)))
    assert result.close_code == 1000
    types = [m["type"] for m in result.messages]
    assert types[-2:] == ["final", "done"] and set(types[:-2]) == {"partial"}
    final = result.finals[0]
    check_final(final, ref)
    assert (final["segment"], final["start"], final["end"]) == (0, 0.0, round(len(x) / rate, 6))
    assert all(m["segment"] == 0 for m in result.messages[:-1])


def test_defaults_without_a_start_message(spoken_digits, server, s2t):
    x = to_s16(resample(torch.from_numpy(digit_string(spoken_digits, 2, seed=12)), 8000, 16000).numpy())
    result = run(stream_audio(server.url, x, 16000, "s16le", send_start=False))
    check_final(result.finals[0], stream_reference(s2t, x, 16000))
    empty = run(stream_audio(server.url, np.zeros(0, np.float32), 16000))
    assert [m["type"] for m in empty.messages] == ["final", "done"] and empty.close_code == 1000
    assert (empty.finals[0]["text"], empty.finals[0]["end"]) == ("", 0.0)


# ---------------------------------------------------------------------------- 2. concurrency
def test_concurrent_clients_get_their_solo_results(spoken_digits, server, s2t):
    signals = [digit_string(spoken_digits, 3 + k % 3, seed=20 + k) for k in range(8)]
    refs = [stream_reference(s2t, x, 8000) for x in signals]
    before = server.call(lambda: server.server.engine.stats.max_batch)

    async def clients():
        return await asyncio.gather(*[stream_audio(server.url, x, 8000, ("s16le", "f32le")[k % 2],
                                                   piece_samples=random_pieces(k, 1200))
                                      for k, x in enumerate(signals)])

    results = run(clients())
    for result, ref in zip(results, refs):
        assert result.close_code == 1000
        check_final(result.finals[0], ref)
    assert server.call(lambda: server.server.engine.stats.max_batch) > max(before, 1), "streams shared batches"
    wait_until(lambda: server.call(lambda: (server.server.num_connections, server.server.engine.num_streams))
               == (0, 0))


# ---------------------------------------------------------------------------- 3. endpointing
def test_two_utterances_give_two_finals_with_their_times(spoken_digits, s2t):
    a = to_s16(resample(torch.from_numpy(digit_string(spoken_digits, 2, seed=3)), 8000, 16000).numpy())
    b = to_s16(resample(torch.from_numpy(digit_string(spoken_digits, 2, seed=4)), 8000, 16000).numpy())
    x = np.concatenate([a, np.zeros(32000, np.float32), b])
    with BackgroundServer(TorchBackend(s2t), ServerOptions(port=0)) as srv:  # default rules: 800 ms, 20 s
        result = run(stream_audio(srv.url, x, 16000, piece_samples=random_pieces(5)))
    first, second = result.finals
    assert (first["segment"], second["segment"]) == (0, 1)
    a_end, b_start = len(a) / 16000, (len(a) + 32000) / 16000
    assert first["start"] == 0.0 and a_end < first["end"] <= a_end + 1.2  # 800 ms + a chunk
    assert second["start"] == first["end"] and second["end"] == len(x) / 16000
    assert first["text"] and max(first["timestamps"]) < a_end
    assert second["text"] and min(second["timestamps"]) >= b_start
    cut = int(round(first["end"] * 16000))
    check_final(first, stream_reference(s2t, x[:cut + 80], 16000))
    check_final(second, stream_reference(s2t, x[cut:], 16000), start=first["end"])


def test_a_long_stream_is_split_at_the_maximum_segment_length(spoken_digits, s2t):
    x8 = digit_string(spoken_digits, 60, seed=6)
    x = to_s16(resample(torch.from_numpy(x8), 8000, 16000).numpy())[:25 * 16000]
    assert len(x) == 25 * 16000
    options = ServerOptions(port=0, endpoint=EndpointConfig(silence_ms=None, max_segment_s=20))
    with BackgroundServer(TorchBackend(s2t), options) as srv:
        result = run(stream_audio(srv.url, x, 16000, piece_samples=random_pieces(7, 16000)))
    first, second = result.finals
    assert (first["start"], first["end"]) == (0.0, 20.16)  # 63 chunks of 320 ms: the first at or past 20 s
    assert (second["start"], second["end"]) == (20.16, 25.0)
    cut = int(20.16 * 16000)
    check_final(first, stream_reference(s2t, x[:cut + 80], 16000))
    check_final(second, stream_reference(s2t, x[cut:], 16000), start=20.16)


# ---------------------------------------------------------------------------- 4. faults and limits
class FaultyBackend(TorchBackend):
    """Raises while decoding any batch that holds a stream whose audio has the MARKER value."""

    def advance(self, states, audio):
        if (audio == MARKER).any():
            raise RuntimeError("injected fault")
        return super().advance(states, audio)

    def finish(self, state, audio):
        if (audio == MARKER).any():
            raise RuntimeError("injected fault")
        return super().finish(state, audio)


@pytest.fixture(scope="module")
def fault_server(s2t):
    options = ServerOptions(port=0, endpoint=NO_ENDPOINTS, max_connections=3, max_message_bytes=65536,
                            idle_timeout_s=1.0)
    with BackgroundServer(FaultyBackend(s2t), options) as srv:
        yield srv


async def exchange(url, messages, *, pause_s: float = 0.0):
    """Sends ``messages`` (str or bytes) then reads until the server closes: (messages, close code)."""
    received = []
    async with connect(url, max_size=None, compression=None) as ws:
        for m in messages:
            await ws.send(m)
        if pause_s:
            await asyncio.sleep(pause_s)
        try:
            async for m in ws:
                received.append(json.loads(m))
        except ConnectionClosed:  # closed with an error code
            pass
        return received, ws.close_code


START = json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le"})
AUDIO = encode_audio(np.full(4000, 0.01, np.float32), "s16le")


@pytest.mark.parametrize("messages, code, match", [
    (["{oops"], 1008, "expected a JSON text message"),
    (['{"type": "pause"}'], 1008, 'expected "start" or "end"'),
    (['{"type": "start", "format": "mp3"}'], 1003, "format: expected one of s16le, f32le"),
    ([START, b"\x01\x02\x03"], 1003, "whole s16le samples .* found 3 bytes"),
    ([START, b"\x00" * 65538], 1009, "message of 65538 bytes: expected at most 65536"),
    ([START, AUDIO, START], 1008, "at most one start message"),
    ([json.dumps({"type": "start", "format": "f32le"}), np.array([np.inf], "<f4").tobytes()], 1003, "finite"),
])
def test_bad_messages_close_only_that_client(spoken_digits, fault_server, s2t, messages, code, match):
    x = digit_string(spoken_digits, 3, seed=30)
    ref = stream_reference(s2t, x, 8000)

    async def both():
        return await asyncio.gather(stream_audio(fault_server.url, x, 8000, piece_samples=random_pieces(31)),
                                    exchange(fault_server.url, messages))

    good, (received, close_code) = run(both())
    assert close_code == code
    assert received[-1]["type"] == "error" and re.search(match, received[-1]["message"])
    assert all(m["type"] == "partial" for m in received[:-1])
    assert good.close_code == 1000
    check_final(good.finals[0], ref)


def test_audio_after_end_is_an_error(fault_server):
    audio = [encode_audio(np.random.default_rng(k).uniform(-0.3, 0.3, 8000).astype(np.float32), "s16le")
             for k in range(6)]
    received, code = run(exchange(fault_server.url, [START, *audio, '{"type": "end"}', AUDIO]))
    assert code == 1008 and received[-1] == {"type": "error", "message": "expected nothing after the end message"}


def test_idle_client_is_closed(fault_server):
    received, code = run(exchange(fault_server.url, [START, AUDIO], pause_s=1.5))
    assert code == 1008 and "idle: no message for 1 s" in received[-1]["message"]


def test_a_decoding_fault_closes_that_stream_with_1011(spoken_digits, fault_server, s2t):
    x = digit_string(spoken_digits, 3, seed=32)
    ref = stream_reference(s2t, x, 8000)
    bad = np.full(16000, 0.1, np.float32)
    bad[9000] = MARKER

    async def both():
        return await asyncio.gather(stream_audio(fault_server.url, x, 8000, piece_samples=random_pieces(33)),
                                    stream_audio(fault_server.url, bad, 16000, "f32le", piece_samples=[6000] * 9))

    good, faulty = run(both())
    assert faulty.close_code == 1011
    assert faulty.messages[-1] == {"type": "error", "message": "decoding failed: RuntimeError: injected fault"}
    assert good.close_code == 1000
    check_final(good.finals[0], ref)
    assert fault_server.call(lambda: fault_server.server.engine.stats.errors) >= 1


def test_a_client_killed_mid_stream_frees_its_state(spoken_digits, fault_server, s2t):
    x = digit_string(spoken_digits, 3, seed=34)
    ref = stream_reference(s2t, x, 8000)

    async def killed():
        ws = await connect(fault_server.url)
        await ws.send(START)
        for _ in range(10):
            await ws.send(AUDIO)
        await asyncio.sleep(0.1)
        ws.transport.abort()  # no close frame: the process died

    async def both():
        return await asyncio.gather(stream_audio(fault_server.url, x, 8000, piece_samples=random_pieces(35)),
                                    killed())

    good, _ = run(both())
    check_final(good.finals[0], ref)
    wait_until(lambda: fault_server.call(lambda: (fault_server.server.num_connections,
                                                  fault_server.server.engine.num_streams)) == (0, 0))


def test_connections_over_the_limit_are_refused(spoken_digits, fault_server, s2t):
    wait_until(lambda: fault_server.call(lambda: fault_server.server.num_connections) == 0)
    signals = [digit_string(spoken_digits, 2, seed=40 + k) for k in range(3)]
    refs = [stream_reference(s2t, x, 8000) for x in signals]

    async def scenario():
        holders = [await connect(fault_server.url) for _ in range(3)]  # the limit: 3
        extra, code = await exchange(fault_server.url, [])
        results = []
        for ws, x in zip(holders, signals):  # the three go on untouched
            await ws.send(json.dumps({"type": "start", "sample_rate": 8000}))
            await ws.send(encode_audio(x, "s16le"))
            await ws.send(json.dumps({"type": "end"}))
        for ws in holders:
            results.append([json.loads(m) async for m in ws])
            await ws.close()
        return extra, code, results

    extra, code, results = run(scenario())
    assert code == 1008 and "server full: 3 connections are open (--max-connections)" in extra[-1]["message"]
    for messages, ref in zip(results, refs):
        assert messages[-1] == {"type": "done"}
        check_final(messages[-2], ref)


# ---------------------------------------------------------------------------- HTTP and the CLI
def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_http_page_static_files_and_paths(server):
    base = f"http://127.0.0.1:{server.port}"
    status, kind, body = fetch(base + "/")
    assert status == 200 and kind.startswith("text/html") and 'id="mic"' in body and "/static/app.js" in body
    assert "https://" not in body and "http://" not in body, "no CDN"
    status, kind, body = fetch(base + "/static/app.js")
    assert kind.startswith("text/javascript") and "getUserMedia" in body and "/ws" in body
    status, kind, body = fetch(base + "/static/capture-worklet.js")
    assert "registerProcessor('capture-16k'" in body
    for path in ("/nope", "/static/../server.py", "/static/missing.js"):
        with pytest.raises(urllib.error.HTTPError, match="404"):
            fetch(base + path)

    async def wrong_path():
        async with connect(f"ws://127.0.0.1:{server.port}/other"):
            pass

    with pytest.raises(InvalidStatus, match="404"):
        run(wrong_path())


def test_cli_serves_and_stops(spoken_digits, checkpoint, s2t):
    cmd = [sys.executable, "-m", "xtrans.bin.serve", "--model", str(checkpoint), "--port", "0", "--chunk-ms", "320",
           "--left-ms", "640", "--sinks", "2", "--endpoint-silence-ms", "none", "--max-segment-s", "none",
           "--num-threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on ws://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split()[-1]
        x = digit_string(spoken_digits, 3, seed=50)
        result = run(stream_audio(url, x, 8000))
        check_final(result.finals[0], stream_reference(s2t, x, 8000))
    finally:
        proc.send_signal(2)  # SIGINT
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "connection 1 open from 127.0.0.1" in err
    assert "connection 1 closed (1000 -) after" in err and f"{len(x) / 8000:.2f} s of audio" in err


@pytest.mark.parametrize("args, match", [
    (["--max-batch", "0"], "max_batch: expected a positive number, found 0"),
    (["--idle-timeout-s", "-1"], "idle_timeout_s: expected a positive number or None, found -1"),
    (["--endpoint-silence-ms", "0"], "silence_ms: expected a positive number or None"),
    (["--tokenizer", "x.model", "--onnx", "DIR"], "--tokenizer: not used with --onnx"),
])
def test_cli_refuses_bad_options(checkpoint, capsys, args, match):
    source = [] if "--onnx" in args else ["--model", str(checkpoint)]
    try:
        code = serve_main(source + args)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert re.search(match, capsys.readouterr().err)


def test_client_command_prints_finals(spoken_digits, server, s2t, tmp_path, capsys):
    from xtrans.serve.client import main as client_main

    import soundfile

    x = digit_string(spoken_digits, 3, seed=70)
    soundfile.write(tmp_path / "d.wav", x, 8000, subtype="PCM_16")
    assert client_main([server.url, str(tmp_path / "d.wav")]) == 0
    ref = stream_reference(s2t, x, 8000)
    assert capsys.readouterr().out == f"{tmp_path / 'd.wav'}\t0.00-{len(x) / 8000:.2f}\t{ref.text}\n"
