"""Encoder forward+backward time: xtrans ``Wav2Vec2Encoder`` vs Hugging Face ``Wav2Vec2Model``.

For each configuration a random HF model is saved and loaded back with
``xtrans.models.wav2vec2.load_pretrained`` (same weights; output agreement is reported as a
check), then, interleaved rep by rep so that machine load affects all alike:

- ``hf``: ``transformers.Wav2Vec2Model`` (its default attention implementation),
- ``xtrans full``: ours, full attention, ``pos_conv="full"``,
- ``xtrans chunk``: ours under the streaming mask (``pos_conv="chunk"``, chunk C, left L).

A step is forward + backward of ``mean(features ** 2)`` on a batch of equal-length random
waveforms, dropout off. Prints a table; writes JSON (``--out``).

Usage::

    python bench/encoder.py                       # tiny + mid on CPU, about 2-3 minutes on 2 cores
    python bench/encoder.py --device cuda --dtype bf16 --configs mid,xlsr --reps 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2 import load_pretrained
from xtrans.testing.pretrained_fixtures import save_hf_dir

CONV_512 = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
CONFIGS = {
    # the ``tiny`` preset's shape (64-channel CNN, D=96, 2 layers)
    "tiny": dict(conv=[(64, k, s) for _, k, s in CONV_512], hidden_size=96, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=192),
    # wav2vec2-base-sized transformer in the XLSR layout
    "mid": dict(conv=CONV_512, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072),
    # XLSR-53 itself (GPU only in practice)
    "xlsr": dict(conv=CONV_512, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                 intermediate_size=4096),
}


def hf_config(name: str):
    from transformers import Wav2Vec2Config

    spec = dict(CONFIGS[name])
    conv = spec.pop("conv")
    return Wav2Vec2Config(
        conv_dim=[c for c, _, _ in conv], conv_kernel=[k for _, k, _ in conv],
        conv_stride=[s for _, _, s in conv],
        feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True, num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, **spec)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(fn, model, device, dtype):
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if dtype == "bf16"
                else nullcontext())

    def step():
        model.zero_grad(set_to_none=True)
        with autocast:
            out = fn()
        loss = out.float().pow(2).mean()
        loss.backward()
        return out

    return step


def bench_config(name: str, args, device: torch.device) -> list:
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    hf = Wav2Vec2Model(hf_config(name))
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_dir(hf, tmp, do_normalize=False)
        ours_full = load_pretrained(tmp)
        ours_chunk = load_pretrained(tmp, pos_conv="chunk")
    hf, ours_full, ours_chunk = (m.to(device).train() for m in (hf, ours_full, ours_chunk))
    streaming = StreamingConfig(chunk_size=args.chunk, left_context=args.left)

    gen = torch.Generator().manual_seed(1)
    wav = (0.3 * torch.randn(args.batch, int(args.seconds * 16000), generator=gen)).to(device)
    lengths = torch.full((args.batch,), wav.shape[1], dtype=torch.long, device=device)

    with torch.no_grad():
        diff = (ours_full(wav, lengths)[0] - hf(wav).last_hidden_state).abs().max().item()

    runs = {
        "hf": make_step(lambda: hf(wav).last_hidden_state, hf, device, args.dtype),
        "xtrans full": make_step(lambda: ours_full(wav, lengths)[0], ours_full, device, args.dtype),
        f"xtrans chunk {args.chunk}/left {args.left}": make_step(
            lambda: ours_chunk(wav, lengths, streaming=streaming)[0], ours_chunk, device, args.dtype),
    }
    reps = args.reps if args.reps is not None else (5 if name == "tiny" else 2)
    times = {k: [] for k in runs}
    peak = {}
    for rep in range(args.warmup + reps):
        for label, step in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            if rep >= args.warmup:
                times[label].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak[label] = torch.cuda.max_memory_allocated(device) / 2**20

    frames = int(ours_full.output_lengths(lengths)[0])
    hf_ms = 1000 * statistics.median(times["hf"])
    rows = []
    for label, ts in times.items():
        ms = 1000 * statistics.median(ts)
        rows.append(dict(config=name, model=label, step_ms=round(ms, 1), min_ms=round(1000 * min(ts), 1),
                         ratio_vs_hf=round(ms / hf_ms, 3), reps=len(ts), frames=frames,
                         params_m=round(sum(p.numel() for p in ours_full.parameters()) / 1e6, 2),
                         max_abs_diff_fwd=diff if label == "xtrans full" else None,
                         peak_mem_mib=round(peak[label], 1) if label in peak else None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,mid", help=f"comma list of {sorted(CONFIGS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chunk", type=int, default=32, help="chunk size C in frames for the chunk run")
    parser.add_argument("--left", type=int, default=64, help="left context L in frames for the chunk run")
    parser.add_argument("--reps", type=int, default=None, help="timed steps (default: 5 tiny, 2 others)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "encoder.json"))
    args = parser.parse_args()

    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.configs.split(","):
        rows.extend(bench_config(name, args, device))

    print(f"encoder forward+backward, batch {args.batch} x {args.seconds:g} s, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    header = f"{'config':<6} {'model':<26} {'step ms':>9} {'min ms':>9} {'vs HF':>6} {'max|diff|':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        diff = f"{r['max_abs_diff_fwd']:.1e}" if r["max_abs_diff_fwd"] is not None else ""
        print(f"{r['config']:<6} {r['model']:<26} {r['step_ms']:>9.1f} {r['min_ms']:>9.1f} "
              f"{r['ratio_vs_hf']:>6.2f} {diff:>10}")

    result = dict(
        benchmark="encoder forward+backward (mean(features**2)), dropout off, equal lengths",
        torch=torch.__version__, transformers=transformers.__version__, device=args.device,
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or platform.machine()),
        dtype=args.dtype, threads=torch.get_num_threads(), batch=args.batch, seconds=args.seconds,
        chunk=args.chunk, left_context=args.left,
        load_avg=os.getloadavg() if hasattr(os, "getloadavg") else None,
        hf_attn_implementation="transformers default (sdpa)", time=time.strftime("%Y-%m-%dT%H:%M:%S"),
        results=rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
