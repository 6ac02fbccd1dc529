"""Live server load test: N concurrent real-time clients on loopback, partial latency, keeping up, CPU.

The server (:mod:`xtrans.bin.serve`: its own option parser and backend) runs in a subprocess of
this script, so that its CPU time is its own (``/proc/<pid>/stat``); the only addition is a
timer around the engine's batched compute step, read over the subprocess's stdin/stdout. The
clients run in this process on one asyncio loop. For each N (default 1, 4, 16, 32, 64 for the
demo model; 1, 2 for the xlsr_53 size), N clients connect to ``ws://127.0.0.1:PORT/ws`` at
start times spread uniformly over ``--stagger-s`` and stream their own speech as s16le at
``--rate`` (16 kHz: no resampling on the server; 8000 sends the recordings' own rate) in
100 ms pieces at real-time pace: piece ``i`` is sent when its last sample would exist,
``t0 + (i + 1) * 0.1 s``; ``end`` follows the last piece. The speech is 8 kHz spoken digits,
joined with random pauses into ``--seconds`` long streams, a different string per client: FSDD
recordings from ``../shared/data/fsdd`` (or ``$XTRANS_SHARED_DATA/fsdd``) where that folder
exists, else the tests' synthetic digits (:mod:`xtrans.testing.speech_fixtures`), made in a
temporary folder.

What is reported per N:

- ``keeps up``: every client got its finals, ``done`` and a normal close, the server-side RTF
  is below 1, and every stream's last final arrived within one chunk + ``--slack-ms`` of its
  ``end`` message being sent;
- ``RTF``: seconds the server's decoding loop spent in batched compute (encoder + search, the
  engine's ``compute``, wall time in its worker thread) / seconds over which the round's audio
  arrived (first client's first piece due to last client's last piece due). Streams are
  concurrent, so this is the fraction of real time the decoder is busy; at 1 it falls behind;
- partial latency p50 / p95 / max: for each partial, the time it was received minus the time the
  client sent the piece that completed the chunk which produced it. The server sends a partial
  only when a chunk changes the text, and the protocol has no per-chunk acknowledgement (the
  benchmark does not change it), so only chunks that produced a partial are measured
  (``partials`` counts them; ``chunks`` in the JSON counts every decoded stream chunk, each
  segment's 80-sample first call and each stream's last call included). To attribute partials
  to chunks, every client's audio is first decoded by an :class:`~xtrans.serve.engine.Engine` of
  the same backend and endpointing in this process, fed the same pieces: after each piece it
  runs until no stream has a whole chunk left, so each partial and final is tagged with the
  piece whose arrival made its chunk decodable. A stream's events do not depend on which
  streams share its batches (tested in test/test_serve.py), so the server sends the same
  sequence; the i-th partial received is the i-th of the replay. A stream whose sequence
  differs is counted in ``mismatch`` and only its common prefix is measured. Chunk boundaries
  fall inside pieces, so the latency is measured from the piece's send time, which is up to
  100 ms after the chunk's last sample existed (the piece's own duration, as any 100 ms client;
  at ``--rate 8000`` the server's resampler holds a few samples back, which can make the next
  piece the completing one);
- ``final ms``: the most time from sending ``end`` to receiving the last final (the remaining
  partial chunk is decoded then; the JSON has the median too);
- ``CPU %``: the server process's user + system CPU time / the round's wall time (200 % = both
  cores of a 2-core machine); ``client CPU %`` is this process's; ``machine %`` all cores'
  busy share (other work on the machine shows there); ``batch``: mean streams per batched call;
- ``lag ms``: how late the clients sent their pieces at worst (this process's own pacing; if it
  is large the machine was too busy for the clients themselves).

Models (random weights unless ``--model``/``--onnx``: the cost does not depend on the weights):
``mini`` is the demo's model (egs/mini_synth/asr1/conf/train_stage5a.yaml: the ``mini`` encoder,
stateless predictor, joiner 128, 128 tokens; chunk 640 ms, left 640 ms, 4 sinks, greedy search);
``xlsr_53`` the LibriSpeech stage-5a model (egs/librispeech/asr1/conf/train_stage5a.yaml, 500
tokens). A random transducer emits either nothing or a token on every frame, neither like a
trained one; the random checkpoints are therefore shaped so that tokens come on about 2 % of
frames: the predictor's projection into the joiner is zeroed and the encoder's scaled by 3
(emission depends on the audio, not on the model's own history), and the blank logit is raised
to the 98th percentile of the non-blank margin measured on other digit speech. An emitting frame
then gives greedy search's 3 tokens (``--max-symbols``), about 3 tokens/s in all; a partial
comes on roughly a third of the chunks. The shapes, and hence the cost, are the models'.

Usage::

    python bench/serve.py [--quick] [--presets mini,xlsr_53] [--model CKPT] [--onnx DIR]
                          [--clients 1,4,16,32,64] [--xlsr-clients 1,2] [--seconds 15]
                          [--rate 16000] [--threads N] [--out bench/results/serve.json]

``--quick``: N = 1, 2 with 3 s streams, ``mini`` only (unless ``--presets`` says otherwise),
to check that the script works. ``--model CKPT`` replaces the random ``mini`` model by a
checkpoint (e.g. egs/mini_synth/asr1/exp/stage5/5a/best.pt); ``--onnx DIR`` adds an ONNX
export's rows (its chunk, left context and sinks come from the export).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Keep this script's folder off the import path (bench/onnx.py would shadow the onnx package).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("XTRANS_SHARED_DATA", REPO.parent / "shared" / "data")) / "fsdd"
FSDD_RATE = 8000
PIECE_S = 0.1
EMIT_FRACTION = 0.02  # frames of the random models that emit a token (module docstring)

# name -> (training conf whose ``model`` and ``mask`` sections give the shape, vocabulary size incl. blank)
PRESETS: Dict[str, Tuple[str, int]] = {
    "mini": ("egs/mini_synth/asr1/conf/train_stage5a.yaml", 30),  # run.sh: --bpe_size 30
    "xlsr_53": ("egs/librispeech/asr1/conf/train_stage5a.yaml", 500),  # run.sh: --bpe_size 500
}


# --------------------------------------------------------------------------- audio
def s16_exact(x: np.ndarray) -> np.ndarray:
    """The samples a s16le client really sends (so the replay sees exactly what the server does)."""
    return (np.clip(np.round(x * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


_SYNTHETIC_SPEECH: Optional[tempfile.TemporaryDirectory] = None


def speech_folder() -> Tuple[Path, str]:
    """An FSDD-shaped folder of 8 kHz digits and its description: ``../shared/data/fsdd`` if it is
    there, else the tests' synthetic spoken digits, written once into a temporary folder."""
    global _SYNTHETIC_SPEECH
    if (FSDD / "wav.scp").is_file():
        return FSDD, f"FSDD ({FSDD})"
    if _SYNTHETIC_SPEECH is None:
        from xtrans.testing.speech_fixtures import write_spoken_digits

        _SYNTHETIC_SPEECH = tempfile.TemporaryDirectory(prefix="bench_serve_speech_")
        write_spoken_digits(_SYNTHETIC_SPEECH.name)
    return Path(_SYNTHETIC_SPEECH.name), "synthetic spoken digits (eSpeak NG, xtrans.testing.speech_fixtures)"


def make_streams(n: int, seconds: float, rate: int, seed: int = 0) -> Tuple[List[np.ndarray], str]:
    """``n`` different streams of ``seconds`` at ``rate``: spoken digits with pauses (:func:`speech_folder`)."""
    length = int(round(seconds / PIECE_S)) * int(round(rate * PIECE_S))  # whole pieces
    import soundfile

    root, source = speech_folder()
    files = [root / line.split(maxsplit=1)[1] for line in (root / "wav.scp").read_text().splitlines() if line.strip()]
    out = []
    for i in range(n):
        rng = random.Random(seed * 100003 + i)
        parts, total = [], 0
        while total < seconds * FSDD_RATE:
            pause = rng.uniform(1.0, 1.6) if rng.random() < 0.15 else rng.uniform(0.05, 0.35)
            x, r = soundfile.read(rng.choice(files), dtype="float32")
            assert r == FSDD_RATE, r
            parts += [np.zeros(int(pause * FSDD_RATE), np.float32), x]
            total += len(parts[-2]) + len(x)
        x = np.concatenate(parts)
        if rate != FSDD_RATE:
            from xtrans.data.resample import resample

            x = resample(x.astype(np.float64), FSDD_RATE, rate).numpy().astype(np.float32)
        x = np.pad(x, (0, max(0, length - len(x))))[:length]
        out.append(s16_exact(x))
    return out, source


# --------------------------------------------------------------------------- models
def random_checkpoint(preset: str, outdir: Path, seed: int = 0) -> Tuple[Path, Dict[str, Any]]:
    """A decodable random checkpoint of a preset's shape (``best.pt`` + ``tokens.txt`` in ``outdir``),
    its emission calibrated as the module docstring says; returns it and its ``mask`` section."""
    import torch
    import yaml

    from xtrans.checkpoint import model_checkpoint
    from xtrans.config import from_dict
    from xtrans.masks import StreamingConfig
    from xtrans.models.config import ModelConfig, build_model
    from xtrans.streaming import StreamingEncoder

    conf_path, vocab = PRESETS[preset]
    conf = yaml.safe_load((REPO / conf_path).read_text())
    cfg = from_dict(ModelConfig, conf["model"], source=conf_path)
    mask = conf["mask"]
    torch.manual_seed(seed)
    model = build_model(cfg, vocab_size=vocab).eval()
    calib = make_streams(1, 6.0, 16000, seed=seed + 7919)[0][0]  # other speech than the clients'
    j = model.joiner
    with torch.no_grad():
        j.predictor_proj.weight.zero_()
        j.encoder_proj.weight.mul_(3.0)
        j.encoder_proj.bias.mul_(3.0)
        enc = StreamingEncoder(model.encoder, StreamingConfig(mask["chunk_size"], mask["left_context"],
                                                              mask["num_sinks"]))
        state = enc.init_state(1)
        a, _, state = enc.forward_chunk(torch.from_numpy(calib)[None], state)
        b, _, state = enc.finalize(state)
        logits = j(torch.cat([a, b], 1)[0], torch.zeros(1, j.predictor_proj.in_features))
        margin = logits[:, 1:].max(-1).values - logits[:, 0]
        j.output.bias[0] += float(torch.quantile(margin, 1 - EMIT_FRACTION))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "tokens.txt").write_text("<blk> 0\n<unk> 1\n" + "".join(f"\u2581w{i} {i}\n" for i in range(2, vocab)),
                                       encoding="utf-8")
    path = outdir / "best.pt"
    torch.save(model_checkpoint(model), path)
    return path, mask


# --------------------------------------------------------------------------- the server subprocess
def serve_child(argv: Sequence[str]) -> int:
    """``--serve-child -- <xtrans.bin.serve options>``: the server, plus a compute timer.

    Prints ``{"url": ...}`` once listening; answers each ``stats`` line on stdin with a JSON line;
    stops at the end of stdin."""
    import logging

    from xtrans.bin.serve import build_backend, get_parser, options_from
    from xtrans.serve.server import StreamingServer

    args = get_parser().parse_args(list(argv))
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    backend = build_backend(args)
    options = options_from(args)

    async def main() -> None:
        server = StreamingServer(backend, options)
        engine = server.engine
        timer = {"busy_s": 0.0, "steps": 0}
        compute = engine.compute

        def timed(work):
            start = time.perf_counter()
            try:
                return compute(work)
            finally:
                timer["busy_s"] += time.perf_counter() - start
                timer["steps"] += 1

        engine.compute = timed
        await server.start()
        print(json.dumps({"url": server.url}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            if line.strip() == "stats":
                s = engine.stats
                print(json.dumps(dict(timer, calls=s.calls, chunks=s.chunks, max_batch=s.max_batch,
                                      errors=s.errors, connections=server.num_connections)), flush=True)
        await server.stop()

    asyncio.run(main())
    return 0


class ServerProcess:
    """``serve_child`` in a subprocess: its URL, its stats and its CPU seconds."""

    def __init__(self, serve_args: List[str], log_path: Path, startup_timeout_s: float = 600.0):
        self.log_path = log_path
        self._log = open(log_path, "w")
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-child", "--", *serve_args]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, cwd=str(REPO))
        first = self._readline(startup_timeout_s)
        self.url = json.loads(first)["url"]

    def _readline(self, timeout_s: float) -> str:
        box: List[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not box or not box[0]:
            self.close()
            raise RuntimeError(f"the server subprocess gave no answer; its log ({self.log_path}):\n"
                               + self.log_path.read_text()[-3000:])
        return box[0]

    def stats(self) -> Dict[str, Any]:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self._readline(60.0))

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def machine_cpu() -> Tuple[float, float]:
    """(busy, total) jiffies of all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


# --------------------------------------------------------------------------- replay (attribution)
def replay(backend, endpoint, streams: List[np.ndarray], rate: int) -> List[List[Tuple[Tuple, Any]]]:
    """Per stream, its events ``((type, segment, text), piece)`` as the server produces them; ``piece``
    is the index of the piece whose arrival made the chunk decodable, or ``"end"``."""
    from xtrans.serve.engine import Engine

    piece = int(round(rate * PIECE_S))
    engine = Engine(backend, endpoint, max_batch=max(1, len(streams)))
    ids = [engine.open(rate) for _ in streams]
    events: Dict[int, List[Tuple[Tuple, Any]]] = {sid: [] for sid in ids}

    def drain(tag) -> None:
        while True:
            work = engine.collect()
            if work is None:
                return
            for ev in engine.apply(engine.compute(work)):
                m = ev.message
                if m["type"] in ("partial", "final"):
                    events[ev.stream].append(((m["type"], m["segment"], m["text"]), tag))
                elif m["type"] == "error":
                    raise RuntimeError(f"replay: stream {ev.stream}: {m['message']}")

    for p in range(max(len(s) for s in streams) // piece):
        for sid, s in zip(ids, streams):
            if (p + 1) * piece <= len(s):
                engine.accept(sid, s[p * piece:(p + 1) * piece])
        drain(p)
    for sid in ids:
        engine.end(sid)
    drain("end")
    return [events[sid] for sid in ids]


# --------------------------------------------------------------------------- clients
@dataclass
class ClientRecord:
    due: List[float] = field(default_factory=list)  # when each piece was due (monotonic)
    sent: List[float] = field(default_factory=list)  # when its send returned
    end_sent: Optional[float] = None
    messages: List[Dict[str, Any]] = field(default_factory=list)
    received: List[float] = field(default_factory=list)
    close_code: Optional[int] = None
    failure: Optional[str] = None


async def run_client(url: str, pieces: List[bytes], rate: int, t0: float, timeout_s: float) -> ClientRecord:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    rec = ClientRecord()
    await asyncio.sleep(max(0.0, t0 - 0.05 - time.monotonic()))  # connect just before the audio starts
    try:
        async with connect(url, max_size=None, compression=None, open_timeout=60) as ws:
            async def receive() -> None:
                try:
                    async for message in ws:
                        rec.received.append(time.monotonic())
                        rec.messages.append(json.loads(message))
                except ConnectionClosed:
                    pass

            reader = asyncio.create_task(receive())
            await ws.send(json.dumps({"type": "start", "sample_rate": rate, "format": "s16le"}))
            try:
                for i, data in enumerate(pieces):
                    due = t0 + (i + 1) * PIECE_S
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await ws.send(data)
                    rec.due.append(due)
                    rec.sent.append(time.monotonic())
                await ws.send(json.dumps({"type": "end"}))
                rec.end_sent = time.monotonic()
            except ConnectionClosed as err:
                rec.failure = f"closed while sending: {err}"
            try:
                await asyncio.wait_for(reader, timeout_s)
            except asyncio.TimeoutError:
                rec.failure = rec.failure or f"no close within {timeout_s:.0f} s after the audio"
            rec.close_code = ws.close_code
    except Exception as err:  # a refused or broken connection is a result, not a crash
        rec.failure = rec.failure or f"{type(err).__name__}: {err}"
    return rec


async def run_round(url: str, streams: List[List[bytes]], rate: int, stagger_s: float, seconds: float,
                    seed: int) -> List[ClientRecord]:
    rng = random.Random(seed)
    base = time.monotonic() + 0.5
    starts = [base + rng.uniform(0.0, stagger_s) for _ in streams]
    timeout = 30.0 + 3.0 * seconds
    return await asyncio.gather(*(run_client(url, p, rate, t0, timeout) for p, t0 in zip(streams, starts)))


def pct(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(records: List[ClientRecord], expected: List[List[Tuple[Tuple, Any]]], chunk_s: float,
            slack_s: float) -> Dict[str, Any]:
    """Latencies and failures of one round's clients (module docstring)."""
    partial_ms, final_ms, failures = [], [], []
    mismatched = 0
    for k, (rec, exp) in enumerate(zip(records, expected)):
        got = [(m, t) for m, t in zip(rec.messages, rec.received) if m["type"] in ("partial", "final")]
        if rec.failure or rec.close_code != 1000 or not rec.messages or rec.messages[-1]["type"] != "done":
            errors = [m.get("message") for m in rec.messages if m["type"] == "error"]
            failures.append(f"client {k}: {rec.failure or ''} close {rec.close_code} {errors[:1]}".strip())
        n = 0
        for (m, t), (key, tag) in zip(got, exp):
            if (m["type"], m["segment"], m["text"]) != key:
                break
            n += 1
            if m["type"] == "partial" and tag != "end" and tag < len(rec.sent):
                partial_ms.append(1000 * (t - rec.sent[tag]))
        if n != len(got) or len(got) != len(exp):
            mismatched += 1
        finals = [t for m, t in got if m["type"] == "final"]
        if rec.end_sent is not None and finals and got[-1][0]["type"] == "final":
            final_ms.append(1000 * (finals[-1] - rec.end_sent))
    lag = [1000 * (s - d) for rec in records for s, d in zip(rec.sent, rec.due)]
    return dict(partials=len(partial_ms), partial_p50_ms=pct(partial_ms, 0.5), partial_p95_ms=pct(partial_ms, 0.95),
                partial_max_ms=max(partial_ms) if partial_ms else None,
                final_p50_ms=pct(final_ms, 0.5), final_max_ms=max(final_ms) if final_ms else None,
                finals_late=sum(f > 1000 * (chunk_s + slack_s) for f in final_ms),
                mismatched_streams=mismatched, failures=failures, client_lag_max_ms=max(lag) if lag else None)


# --------------------------------------------------------------------------- one setup
def bench_setup(label: str, serve_args: List[str], clients: List[int], streams: List[np.ndarray], rate: int,
                args: argparse.Namespace, workdir: Path) -> Dict[str, Any]:
    from xtrans.bin.serve import build_backend, get_parser
    from xtrans.serve.engine import EndpointConfig

    print(f"[{label}] replaying {max(clients)} streams for attribution ...", file=sys.stderr, flush=True)
    parsed = get_parser().parse_args(serve_args)
    t = time.perf_counter()
    backend = build_backend(parsed)
    endpoint = EndpointConfig(silence_ms=parsed.endpoint_silence_ms, max_segment_s=parsed.max_segment_s)
    expected = replay(backend, endpoint, streams[:max(clients)], rate)
    replay_s = time.perf_counter() - t
    chunk_s = backend.chunk_samples / 16000
    description = backend.description
    del backend
    piece = int(round(rate * PIECE_S))
    from xtrans.serve.protocol import encode_audio

    pieces = [[encode_audio(s[i:i + piece], "s16le") for i in range(0, len(s), piece)] for s in streams]
    print(f"[{label}] starting the server ...", file=sys.stderr, flush=True)
    server = ServerProcess(serve_args, workdir / f"server_{label.replace('/', '_')}.log")
    rows = []
    try:
        asyncio.run(run_round(server.url, [pieces[-1][:int(2 / PIECE_S)]], rate, 0.0, 2.0, 0))  # warm-up
        for n in clients:
            s0, c0, m0, p0, w0 = server.stats(), server.cpu_s(), machine_cpu(), time.process_time(), time.monotonic()
            records = asyncio.run(run_round(server.url, pieces[:n], rate, args.stagger_s, args.seconds, seed=n))
            s1, c1, m1, p1, w1 = server.stats(), server.cpu_s(), machine_cpu(), time.process_time(), time.monotonic()
            wall = w1 - w0
            dues = [r.due for r in records if r.due]  # the audio flowed from the first due - 1 piece to the last
            first = min(d[0] for d in dues) - PIECE_S if dues else w0
            last = max(d[-1] for d in dues) if dues else w1
            audio_span = max(1e-9, last - first)
            busy = s1["busy_s"] - s0["busy_s"]
            calls, chunks = s1["calls"] - s0["calls"], s1["chunks"] - s0["chunks"]
            m = measure(records, expected[:n], chunk_s, args.slack_ms / 1000)
            rtf = busy / audio_span
            keeps = not m["failures"] and rtf < 1.0 and m["finals_late"] == 0 and m["final_max_ms"] is not None
            row = dict(clients=n, keeps_up=keeps, rtf=rtf, busy_s=busy, audio_span_s=audio_span, wall_s=wall,
                       server_cpu_pct=100 * (c1 - c0) / wall, client_cpu_pct=100 * (p1 - p0) / wall,
                       machine_busy_pct=100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
                       batched_calls=calls, chunks=chunks, mean_batch=chunks / calls if calls else None, **m)
            rows.append(row)
            print(f"[{label}] N={n}: {'keeps up' if keeps else 'falls behind'}, RTF {rtf:.3f}, partial p95 "
                  f"{fmt(row['partial_p95_ms'])} ms, server CPU {row['server_cpu_pct']:.0f}%", file=sys.stderr,
                  flush=True)
            for f in m["failures"][:3]:
                print(f"    {f}", file=sys.stderr)
    finally:
        server.close()
    return dict(setup=label, server=description, serve_args=serve_args, chunk_s=chunk_s, replay_s=replay_s,
                rows=rows, largest_n_keeping_up=max((r["clients"] for r in rows if r["keeps_up"]), default=None))


def fmt(v: Optional[float], spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: List[Dict[str, Any]], slack_ms: float) -> None:
    header = (f"{'setup':10} {'N':>3} {'keeps up':>8} {'RTF':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} "
              f"{'partials':>8} {'final ms':>8} {'CPU %':>6} {'client %':>8} {'machine %':>9} {'batch':>5} "
              f"{'lag ms':>6} {'mism':>4}")
    print(header)
    print("-" * len(header))
    for res in results:
        for r in res["rows"]:
            print(f"{res['setup']:10} {r['clients']:3d} {'yes' if r['keeps_up'] else 'NO':>8} {r['rtf']:6.3f} "
                  f"{fmt(r['partial_p50_ms']):>7} {fmt(r['partial_p95_ms']):>7} {fmt(r['partial_max_ms']):>7} "
                  f"{r['partials']:8d} {fmt(r['final_max_ms']):>8} {r['server_cpu_pct']:6.0f} "
                  f"{r['client_cpu_pct']:8.0f} {r['machine_busy_pct']:9.0f} {fmt(r['mean_batch'], '.1f'):>5} "
                  f"{fmt(r['client_lag_max_ms']):>6} {r['mismatched_streams']:4d}")
    print(f"keeps up: no failure, RTF < 1 and every last final within chunk + {slack_ms:g} ms of 'end'; p50/p95/max: "
          "partial latency from sending the piece that completed the chunk; final ms: worst 'end' -> last final; "
          "CPU %: server process (200 = 2 cores); machine %: all cores busy; batch: streams per batched call; "
          "lag: worst client pacing delay; mism: streams whose messages differ from the replay")
    for res in results:
        best = res["largest_n_keeping_up"]
        print(f"{res['setup']} ({res['server']}): largest N that keeps up: {best if best is not None else 'none'}")
        if res.get("goal") is not None:
            print(f"  goal (>= 32 real-time streams with partial p95 <= 150 ms): {'met' if res['goal'] else 'NOT met'}")


# --------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--serve-child"]:
        sys.exit(serve_child(argv[2:] if argv[1:2] == ["--"] else argv[1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 1, 2 with 3 s streams (mini only unless --presets)")
    p.add_argument("--presets", default=None, help="random-weight models to run: mini,xlsr_53 (default both; "
                   "quick: mini)")
    p.add_argument("--model", default=None, help="a checkpoint to serve instead of the random mini model")
    p.add_argument("--tokenizer", default=None, help="--model: its tokenizer, if not found beside it")
    p.add_argument("--onnx", default=None, metavar="DIR", help="also serve this ONNX export")
    p.add_argument("--clients", default="1,4,16,32,64", help="N for the demo model (mini / --model / --onnx)")
    p.add_argument("--xlsr-clients", default="1,2", help="N for xlsr_53")
    p.add_argument("--seconds", type=float, default=15.0, help="audio per client")
    p.add_argument("--rate", type=int, default=16000, help="the clients' sample rate (8000: the recordings' own; "
                   "the server resamples)")
    p.add_argument("--stagger-s", type=float, default=1.0, help="client start times spread over this")
    p.add_argument("--slack-ms", type=float, default=250.0, help="keeping up: the last final within chunk + this")
    p.add_argument("--chunk-ms", type=float, default=None, help="default: the preset conf's (640)")
    p.add_argument("--left-ms", type=float, default=None, help="default: the preset conf's (640)")
    p.add_argument("--sinks", type=int, default=None, help="default: the preset conf's (4)")
    p.add_argument("--search", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--max-batch", type=int, default=32, help="server --max-batch")
    p.add_argument("--threads", type=int, default=None,
                   help="server --num-threads (default the server's: a decoding thread per CPU)")
    p.add_argument("--batch-rows", default=None,
                   help="server --batch-rows of the PyTorch setups (default the server's); a comma list (1,8) "
                        "runs each setup once per value, labelled /rN")
    p.add_argument("--out", default="bench/results/serve.json")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 3.0
        args.clients = args.xlsr_clients = "1,2"
        args.stagger_s = min(args.stagger_s, 0.5)
    presets = [x for x in (args.presets if args.presets is not None
                           else "mini" if args.quick else "mini,xlsr_53").split(",") if x]
    unknown = [x for x in presets if x not in PRESETS]
    if unknown:
        p.error(f"--presets: expected names from {', '.join(PRESETS)}, found {', '.join(unknown)}")
    demo_n = [int(x) for x in args.clients.split(",")]
    xlsr_n = [int(x) for x in args.xlsr_clients.split(",")]

    wall, load_start = time.time(), os.getloadavg()
    streams, audio = make_streams(max(demo_n + xlsr_n), args.seconds, args.rate)
    common = ["--port", "0", "--log-level", "WARNING", "--search", args.search, "--max-batch", str(args.max_batch),
              "--max-connections", str(max(demo_n + xlsr_n) + 8)]
    if args.threads:
        common += ["--num-threads", str(args.threads)]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        setups = []  # (label, serve args, N list)
        for preset in presets:
            ns = xlsr_n if preset == "xlsr_53" else demo_n
            if preset == "mini" and args.model:
                ckpt, label = args.model, "model"
                mask = dict(chunk_size=32, left_context=32, num_sinks=4)  # the demo's stage 5a
                extra = ["--tokenizer", args.tokenizer] if args.tokenizer else []
            else:
                print(f"[{preset}] building a random checkpoint ...", file=sys.stderr, flush=True)
                ckpt, mask = random_checkpoint(preset, work / preset)
                label, extra = preset, []
            chunk = args.chunk_ms if args.chunk_ms is not None else 20 * mask["chunk_size"]
            left = args.left_ms if args.left_ms is not None else 20 * mask["left_context"]
            sinks = args.sinks if args.sinks is not None else mask["num_sinks"]
            serve_args = ["--model", str(ckpt), *extra, "--chunk-ms", f"{chunk:g}", "--left-ms", f"{left:g}",
                          "--sinks", str(sinks), *common]
            if args.batch_rows is None:
                setups.append((label, serve_args, ns))
            else:
                setups += [(f"{label}/r{rows}", [*serve_args, "--batch-rows", rows], ns)
                           for rows in args.batch_rows.split(",")]
        if args.onnx:
            setups.append(("onnx", ["--onnx", args.onnx, *common], demo_n))
        for label, serve_args, ns in setups:
            res = bench_setup(label, serve_args, ns, streams, args.rate, args, work)
            if not label.startswith("xlsr_53"):
                res["goal"] = any(r["keeps_up"] and r["clients"] >= 32 and r["partial_p95_ms"] is not None
                                  and r["partial_p95_ms"] <= 150 for r in res["rows"])
                if max(ns) < 32:
                    res["goal"] = None
            results.append(res)

    print_table(results, args.slack_ms)
    import torch

    meta = dict(torch=torch.__version__, platform=platform.platform(), cpus=os.cpu_count(), audio=audio,
                rate=args.rate, seconds=args.seconds, piece_s=PIECE_S, stagger_s=args.stagger_s,
                slack_ms=args.slack_ms, quick=args.quick, loadavg_at_start=load_start,
                loadavg_at_end=os.getloadavg(), wall_s=time.time() - wall)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, results=results), indent=2))
    print(f"wrote {out} ({meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
