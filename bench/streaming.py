"""Streaming encoder benchmark: real-time factor and per-chunk latency deep into a stream.

Feeds a stream of audio to :class:`xtrans.streaming.StreamingEncoder` one chunk of samples per
call (640 ms for chunk 32), times every call (the compute latency of one chunk; the
algorithmic latency is the chunk itself plus 5 ms), and reports mean and p95 over a window of
chunks starting 10 s, 60 s and 300 s into the stream. With a bounded left context these must be
flat; with an unlimited one they grow with the stream. The naive baseline re-encodes the whole
prefix with the masked full pass (``encoder(prefix, streaming=cfg)``) for every new chunk, so
its cost per chunk grows with the prefix (measured only at a few points: it is slow).

Random weights (``pos_conv="chunk"``, ``waveform_norm="cumulative"``), random audio: the cost
does not depend on either. For ``xlsr_53`` the stream is encoded for real up to
``--xlsr-real-s`` seconds; later points are reached by a *fast-forwarded* state (marked ``ff``):
the counters move on by whole chunks while every cache keeps its shape, which is exactly the
state a real stream would have there, up to the cached values (bounded left context only).

Usage::

    python bench/streaming.py [--quick] [--device cpu|cuda] [--threads 1,2]
                              [--presets tiny,xlsr_53] [--out bench/results/streaming.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from xtrans.frames import SAMPLE_RATE
from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2 import tiny, xlsr_53
from xtrans.streaming import EncoderState, StreamingEncoder

BUILDERS = {"tiny": tiny, "xlsr_53": xlsr_53}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fast_forward(state: EncoderState, frames: int, stride: int) -> EncoderState:
    """The state ``frames`` frames later, without encoding them (benchmark only).

    Valid for timing with a bounded left context: the caches keep their shapes, only the
    counters (and the waveform-normalisation sums, scaled) move on.
    """
    wave = state.frontend.wave
    samples = frames * stride
    scale = (wave.count + samples) / wave.count.clamp(min=1)
    wave = dataclasses.replace(wave, count=wave.count + samples, total=wave.total * scale,
                               total_sq=wave.total_sq * scale)
    return dataclasses.replace(state, frontend=dataclasses.replace(state.frontend, wave=wave),
                               frames=state.frames + frames, samples=state.samples + samples)


def p95(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


@torch.no_grad()
def naive_chunk_ms(encoder, cfg: StreamingConfig, seconds: float, device: str, reps: int) -> float:
    """Time of one re-encoding of a ``seconds`` prefix with the masked full pass (ms, mean)."""
    wave = torch.randn(1, int(seconds * SAMPLE_RATE), device=device) * 0.1
    encoder(wave[:, :SAMPLE_RATE], streaming=cfg)  # warm-up
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        encoder(wave, streaming=cfg)
        sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.mean(times)


def run_stream(encoder, cfg: StreamingConfig, points: List[float], window: int, real_limit_s: float,
               device: str, naive_points: List[float], naive_reps: int, label: str) -> Dict:
    """Streams chunk-sized pieces; latency windows at ``points`` seconds; naive baseline there."""
    streamer = StreamingEncoder(encoder, cfg)
    stride = encoder.feature_extractor.stride
    piece = cfg.chunk_size * stride
    piece_s = piece / SAMPLE_RATE
    gen = torch.Generator().manual_seed(0)
    state = streamer.init_state(1, device=device)
    audio_s, real_audio_s, compute_s = 0.0, 0.0, 0.0

    def step(state):
        nonlocal audio_s, real_audio_s, compute_s
        samples = (torch.randn(1, piece, generator=gen) * 0.1).to(device)
        sync(device)
        start = time.perf_counter()
        _, _, state = streamer.forward_chunk(samples, state)
        sync(device)
        elapsed = time.perf_counter() - start
        audio_s += piece_s
        real_audio_s += piece_s
        compute_s += elapsed
        return state, elapsed

    rows = []
    for point in sorted(points):
        ff = False
        while audio_s + piece_s <= point + 1e-9 and audio_s + piece_s <= real_limit_s + 1e-9:
            state, _ = step(state)
        if audio_s + piece_s <= point + 1e-9:  # beyond the real limit: jump ahead
            chunks = int((point - audio_s) // piece_s)
            state = fast_forward(state, chunks * cfg.chunk_size, stride)
            audio_s += chunks * piece_s
            ff = True
        latencies = []
        for _ in range(window):
            state, elapsed = step(state)
            latencies.append(1000 * elapsed)
        naive = None
        if point in naive_points:
            naive = naive_chunk_ms(encoder, cfg, point, device, naive_reps)
        rows.append(dict(point_s=point, stream_mean_ms=statistics.mean(latencies),
                         stream_median_ms=statistics.median(latencies), stream_p95_ms=p95(latencies),
                         naive_ms=naive, state_kib=state.num_bytes() / 1024, fast_forwarded=ff,
                         left_keys=state.layers[0].left_keys.shape[2]))
        print(f"  {label} @{point:g}s: stream {rows[-1]['stream_mean_ms']:.1f} ms"
              + (f", naive {naive:.0f} ms" if naive is not None else "") + (" (ff)" if ff else ""),
              file=sys.stderr, flush=True)
    return dict(rtf=compute_s / real_audio_s, real_audio_s=real_audio_s, chunk_ms=1000 * piece_s, points=rows)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter streams and fewer baselines")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1,2", help="torch intra-op threads to try (CPU)")
    parser.add_argument("--presets", default="tiny,xlsr_53")
    parser.add_argument("--xlsr-real-s", type=float, default=None,
                        help="xlsr_53: seconds encoded for real before fast-forwarding (default 60, quick 10)")
    parser.add_argument("--out", default="bench/results/streaming.json")
    args = parser.parse_args(argv)

    device = args.device
    threads = [int(t) for t in args.threads.split(",")] if device == "cpu" else [torch.get_num_threads()]
    points = [10.0, 60.0, 300.0]
    windows = {"tiny": 20, "xlsr_53": 5 if args.quick else 8}  # chunks timed at each point
    xlsr_real = args.xlsr_real_s if args.xlsr_real_s is not None else (10.0 if args.quick else 60.0)
    bounded, unlimited = StreamingConfig(32, 32, 4), StreamingConfig(32, None, 0)
    short = [10.0, 60.0] if args.quick else points  # the growing cache is slow to reach 300 s
    plans = {  # preset -> [(config, points, seconds encoded for real, naive points, naive reps)]
        "tiny": [(bounded, points, 1e9, [10.0, 60.0], 3), (unlimited, short, 1e9, [10.0, 60.0], 3)],
        "xlsr_53": [(bounded, points, xlsr_real, [10.0], 1)],
    }
    results = []
    wall, load_start = time.time(), os.getloadavg()
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        encoder = BUILDERS[preset](pos_conv="chunk", waveform_norm="cumulative").eval().to(device)
        params = sum(p.numel() for p in encoder.parameters())
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for cfg, cfg_points, real_limit, naive_points, naive_reps in plans[preset]:
                label = f"{preset} [{cfg.describe()}] {n_threads} thr"
                print(f"{label} ...", file=sys.stderr, flush=True)
                run = run_stream(encoder, cfg, cfg_points, windows[preset], real_limit, device, naive_points,
                                 naive_reps if not args.quick else 1, label)
                results.append(dict(preset=preset, params=params, config=cfg.describe(),
                                    threads=n_threads, device=device, **run))
        del encoder

    header = (f"{'preset':8} {'config':34} {'thr':>3} {'RTF':>6} {'at':>5} {'mean ms':>8} {'median':>7} {'p95 ms':>8} "
              f"{'naive ms':>9} {'state KiB':>9} {'keys':>5}")
    print(header)
    print("-" * len(header))
    for r in results:
        for row in r["points"]:
            naive = "-" if row["naive_ms"] is None else f"{row['naive_ms']:.0f}"
            at = f"{row['point_s']:g}s" + ("*" if row["fast_forwarded"] else "")
            print(f"{r['preset']:8} {r['config']:34} {r['threads']:>3} {r['rtf']:6.3f} {at:>5} "
                  f"{row['stream_mean_ms']:8.1f} {row['stream_median_ms']:7.1f} {row['stream_p95_ms']:8.1f} {naive:>9} "
                  f"{row['state_kib']:9.0f} {row['left_keys']:5d}")
    print("* fast-forwarded state (same cache shapes as a real stream there); RTF over the audio "
          "encoded for real; naive = re-encoding the whole prefix with the masked full pass per chunk; "
          "keys = left-context keys cached per layer")

    meta = dict(torch=torch.__version__, platform=platform.platform(), cpus=os.cpu_count(),
                loadavg_at_start=load_start, loadavg_at_end=os.getloadavg(), quick=args.quick,
                window_chunks=windows,
                wall_s=time.time() - wall)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, results=results), indent=2))
    print(f"wrote {out} ({meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
