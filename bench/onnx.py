"""Streaming encoder on PyTorch vs onnxruntime fp32 vs onnxruntime int8: RTF and per-chunk latency.

For each encoder shape (the demo's ``mini`` and the ``xlsr_53`` preset, random weights: the cost
does not depend on them) the encoder is exported once (:mod:`xtrans.export.encoder`, fp32 and
dynamic int8), then one stream of random audio is fed one chunk of samples per call, on 1 and 2
threads, to

- ``torch``: :class:`xtrans.streaming.StreamingEncoder` (fp32, ``torch.set_num_threads``);
- ``ort-fp32``: ``encoder.onnx`` on onnxruntime (``intra_op_num_threads``);
- ``ort-int8``: ``encoder.int8.onnx`` (MatMul/Gemm weights int8, CNN float).

Every call is timed (the compute latency of one chunk; the algorithmic latency is the chunk plus
5 ms); the first ``--warmup`` calls are left out. With a bounded left context the caches have
fixed shapes from the first chunk on, so the cost per chunk is the same 10 s or 10 min into a
stream. RTF = compute time / audio time. ``diff`` is the largest difference of a run's frames from
PyTorch's (fp32 should be ~1e-5; int8 shows the quantisation error). Ratios are to PyTorch on the
same number of threads.

Usage::

    python bench/onnx.py [--quick] [--presets mini,xlsr_53] [--threads 1,2] [--seconds 10]
                         [--out bench/results/onnx.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

# This script is named like the onnx package: keep its own folder off the import path, so that
# ``import onnx`` (in torch.onnx and onnxruntime's quantiser) finds the package, not this file.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np
import torch

from xtrans.export.directory import quantize_int8
from xtrans.export.encoder import export_encoder
from xtrans.frames import StreamGeometry
from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2 import Wav2Vec2Encoder, preset_kwargs
from xtrans.onnx.config import stream_geometry
from xtrans.streaming import StreamingEncoder

SAMPLE_RATE = 16000


def p95(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def build(preset: str) -> Wav2Vec2Encoder:
    overrides: Dict[str, Any] = dict(waveform_norm="cumulative")
    if preset == "xlsr_53":
        overrides.update(pos_conv="chunk")
    torch.manual_seed(0)
    return Wav2Vec2Encoder(**preset_kwargs(preset, **overrides)).eval()


def summarize(name: str, times: List[float], chunk_s: float, frames: np.ndarray, ref: Optional[np.ndarray]) -> Dict:
    return dict(runtime=name, chunks=len(times), mean_ms=1000 * statistics.mean(times), p95_ms=1000 * p95(times),
                rtf=statistics.mean(times) / chunk_s,
                diff=None if ref is None else float(np.abs(frames - ref[:len(frames)]).max()))


@torch.no_grad()
def run_torch(encoder, cfg: StreamingConfig, wave: np.ndarray, warmup: int):
    streamer = StreamingEncoder(encoder, cfg)
    state = streamer.init_state(1)
    x = torch.from_numpy(wave)[None]
    geometry = StreamGeometry.of_frontend(encoder.feature_extractor, cfg.chunk_size)
    prime, per = geometry.prime_samples, geometry.samples_per_call
    _, _, state = streamer.forward_chunk(x[:, :prime], state)
    times, frames = [], []
    for k, pos in enumerate(range(prime, x.shape[1] - per + 1, per)):
        start = time.perf_counter()
        y, _, state = streamer.forward_chunk(x[:, pos:pos + per], state)
        if k >= warmup:
            times.append(time.perf_counter() - start)
        frames.append(y[0].numpy())
    return times, np.concatenate(frames)


def run_ort(outdir: Path, encoder_file: str, info: Dict, wave: np.ndarray, threads: int, warmup: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    start_session = ort.InferenceSession(str(outdir / "encoder_start.onnx"), opts, providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(str(outdir / encoder_file), opts, providers=["CPUExecutionProvider"])
    geometry = stream_geometry(info)
    prime, per = geometry.prime_samples, geometry.samples_per_call
    x = wave[None]
    states = start_session.run(None, {"samples": x[:, :prime]})
    full = np.array([per], np.int64)
    times, frames = [], []
    for k, pos in enumerate(range(prime, x.shape[1] - per + 1, per)):
        feed = {"samples": x[:, pos:pos + per], "num_samples": full, **dict(zip(info["state_names"], states))}
        start = time.perf_counter()
        y, _, *states = session.run(None, feed)
        if k >= warmup:
            times.append(time.perf_counter() - start)
        frames.append(y[0])
    return times, np.concatenate(frames)


def bench_preset(preset: str, cfg: StreamingConfig, seconds: float, threads: List[int], warmup: int) -> List[Dict]:
    encoder = build(preset)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE) + 80)).astype(np.float32)
    chunk_s = cfg.chunk_size * 0.02
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        info = export_encoder(encoder, cfg, out)
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        quantize_int8(out / "encoder.onnx", out / "encoder.int8.onnx", external_data=info["external_data"])
        quant_s = time.perf_counter() - t0
        sizes = {name: sum(p.stat().st_size for p in out.glob(name + "*")) / 1e6  # with its .data, if any
                 for name in ("encoder.onnx", "encoder.int8.onnx")}
        for n in threads:
            torch.set_num_threads(n)
            t_times, ref = run_torch(encoder, cfg, wave, warmup)
            results = [summarize("torch", t_times, chunk_s, ref, None)]
            for name, file in (("ort-fp32", "encoder.onnx"), ("ort-int8", "encoder.int8.onnx")):
                times, frames = run_ort(out, file, info, wave, n, warmup)
                results.append(summarize(name, times, chunk_s, frames, ref))
            for r in results:
                r.update(preset=preset, threads=n, ratio_to_torch=r["mean_ms"] / results[0]["mean_ms"],
                         export_s=export_s, quantize_s=quant_s, encoder_mb=sizes["encoder.onnx"],
                         int8_mb=sizes["encoder.int8.onnx"], params_m=sum(p.numel() for p in encoder.parameters()) / 1e6)
                rows.append(r)
                print(f"{preset:8s} {n:>2d} thr  {r['runtime']:9s} {r['mean_ms']:8.1f} ms  p95 {r['p95_ms']:8.1f} ms  "
                      f"RTF {r['rtf']:6.3f}  x{r['ratio_to_torch']:5.2f}  diff {r['diff'] if r['diff'] is not None else '-'}",
                      flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s streams, mini only")
    parser.add_argument("--presets", default="mini,xlsr_53")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    parser.add_argument("--chunk-ms", type=float, default=640)
    parser.add_argument("--left-ms", type=float, default=640)
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="calls left out of the timings")
    parser.add_argument("--out", default="bench/results/onnx.json")
    args = parser.parse_args(argv)
    presets = ["mini"] if args.quick else args.presets.split(",")
    seconds = 3.0 if args.quick else args.seconds
    cfg = StreamingConfig.from_ms(args.chunk_ms, args.left_ms, args.sinks)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"streaming encoder, {cfg.describe()}, {seconds:.0f} s of audio per run, one chunk per call")
    rows = []
    for preset in presets:
        rows += bench_preset(preset, cfg, seconds, threads, args.warmup)
    print("\npreset   threads runtime    mean ms   p95 ms    RTF   vs torch  encoder MB")
    for r in rows:
        mb = r["int8_mb"] if r["runtime"] == "ort-int8" else r["encoder_mb"]
        print(f"{r['preset']:8s} {r['threads']:>7d} {r['runtime']:9s} {r['mean_ms']:8.1f} {r['p95_ms']:8.1f} "
              f"{r['rtf']:6.3f} {r['ratio_to_torch']:8.2f} {mb:10.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(config=vars(args), torch=torch.__version__, rows=rows), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
