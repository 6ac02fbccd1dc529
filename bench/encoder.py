"""Encoder forward+backward time: xtrans ``Wav2Vec2Encoder`` vs Hugging Face ``Wav2Vec2Model``.

For each configuration a random HF model is saved and loaded back with
``xtrans.models.wav2vec2.load_pretrained`` (same weights; output agreement is reported as a
check), then, interleaved rep by rep so that machine load affects all alike:

- ``hf``: ``transformers.Wav2Vec2Model`` (its default attention implementation),
- ``xtrans full``: ours, full attention, ``pos_conv="full"``,
- ``xtrans chunk``: ours under the streaming mask (``pos_conv="chunk"``, chunk C, left L).

A step is forward + backward of ``mean(features ** 2)`` on a batch of equal-length random
waveforms, dropout off. Prints a table; writes JSON (``--out``).

``--attention`` instead measures the attention of the streaming rule, dense against linear
(issue 12), at ``--frames`` (750, 1750, 6000 = 15 s, 35 s, 2 min) for chunk 32 / left 64 /
sinks 4, on one XLSR-53-sized transformer layer (D=1024, 16 heads, FFN 4096; input (B, T, D))
and on the whole ``mini`` and ``xlsr_53`` encoders (waveform in, ``pos_conv="chunk"``):

- ``dense``: one SDPA call per layer under the (B, 1, T, T) mask
  (:func:`xtrans.models.attention.dense_attention`, the encoder before issue 12),
- ``linear``: the encoder as it is (:func:`xtrans.models.attention.streaming_attention`: each
  chunk over its own S + L + C keys).

Every measurement runs in a fresh process, so that its peak memory is its own: on CPU the peak
resident set size of the first step above the resident size before it (``VmHWM`` reset through
``/proc/self/clear_refs``), on CUDA ``max_memory_allocated`` above the memory before the step.
On CPU the child's address space is limited (``RLIMIT_AS``) to the free memory, so that a case
too big fails cleanly instead of waking the OOM killer. A case is skipped when its step time,
predicted from the same case at a smaller ``T`` (linear in T for ``linear``, quadratic for
``dense``; ``xlsr_53`` from the single layer x 24), exceeds ``--max-step-s``, or when the
remaining ``--budget-s`` cannot hold it; it is then tried forward only (``fwd``, no graph).
Writes ``bench/results/encoder_attention.json``.

Usage::

    python bench/encoder.py                       # tiny + mid on CPU, about 2-3 minutes on 2 cores
    python bench/encoder.py --device cuda --dtype bf16 --configs mid,xlsr --reps 10
    OMP_NUM_THREADS=1 python bench/encoder.py --attention --threads 1     # dense vs linear attention
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from xtrans.frames import samples_for_chunk
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


# ---------------------------------------------------------------------------- dense vs linear attention
ATTN_CASES = ("layer", "mini", "xlsr_53")
XLSR_LAYERS = 24


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size (``VmHWM``) since the last :func:`reset_peak_rss`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def attention_worker(spec: dict) -> dict:
    """One measurement, in a fresh process: ``spec`` names case, frames, kind, pass; returns times and peak."""
    import functools

    import xtrans.models.wav2vec2.model as wav2vec2_model
    from xtrans.models.attention import attention_plan
    from xtrans.models.wav2vec2 import preset_kwargs
    from xtrans.models.wav2vec2.model import TransformerLayer, Wav2Vec2Encoder

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    plan_of = attention_plan
    if spec["kind"] == "dense":  # the encoder before the gather path: one SDPA call under (B, 1, T, T)
        plan_of = functools.partial(attention_plan, gather=False)
        wav2vec2_model.attention_plan = plan_of
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    B, T = spec["batch"], spec["frames"]
    streaming = StreamingConfig(spec["chunk"], spec["left"], spec["sinks"])
    backward = spec["pass"] == "fwd+bwd"
    if spec["case"] == "layer":
        model = TransformerLayer(embed_dim=1024, num_heads=16, ffn_dim=4096, layer_norm_first=True,
                                 dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
        x = torch.randn(B, T, 1024, device=device, requires_grad=backward)
        lengths = torch.full((B,), T, dtype=torch.long, device=device)
        model = model.to(device)

        def forward():
            return model(x, plan_of(lengths, T, streaming))
    else:
        overrides = dict(pos_conv="chunk")
        if spec["case"] == "xlsr_53":
            overrides["waveform_norm"] = "cumulative"
        model = Wav2Vec2Encoder(**preset_kwargs(spec["case"], **overrides)).to(device)
        wav = 0.3 * torch.randn(B, samples_for_chunk(0, T), device=device)  # exactly T frames
        samples = torch.full((B,), wav.shape[1], dtype=torch.long, device=device)
        assert int(model.output_lengths(samples)[0]) == T

        def forward():
            return model(wav, samples, streaming=streaming)[0]
    model.train()

    def step():
        if not backward:
            with torch.no_grad():
                return forward()
        model.zero_grad(set_to_none=True)
        if spec["case"] == "layer":
            x.grad = None
        forward().pow(2).mean().backward()

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = rss_bytes()
        reset_peak_rss()
    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()) - base
    times = [first] if spec["warmup"] == 0 else []
    for _ in range(spec["reps"] - len(times)):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return dict(step_ms=round(1000 * statistics.median(times), 1), min_ms=round(1000 * min(times), 1),
                first_ms=round(1000 * first, 1), reps=len(times), peak_mib=round(peak / 2**20, 1),
                params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))


def mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_worker(spec: dict, timeout_s: float, limit_bytes: int = 0) -> dict:
    """Runs :func:`attention_worker` in a child process; ``error`` says why when it gives no result."""
    def limit():
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    cmd = [sys.executable, os.path.abspath(__file__), "--attention-worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              preexec_fn=limit if limit_bytes else None)
    except subprocess.TimeoutExpired:
        return dict(error=f"over the {timeout_s:.0f} s time limit")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if "memory" in tail.lower() or "alloc" in tail.lower() or proc.returncode in (-9, 137):
        return dict(error=f"out of memory ({tail[:120]})")
    return dict(error=f"exit {proc.returncode}: {tail[:160]}")


def predict_s(done: list, case: str, kind: str, frames: int, pass_: str) -> float | None:
    """Step time predicted from the measured rows of the largest smaller ``T`` (None: nothing to go by).

    ``linear`` scales with T. ``dense`` is the linear time plus the measured excess of dense over
    linear scaled with T^2 (all of it scaled with T^2 when linear is not measured there);
    ``fwd`` ~ ``fwd+bwd`` / 3; ``xlsr_53`` ~ 24 x the single layer x 1.2 (the CNN).
    """
    pass_factor = {("fwd+bwd", "fwd"): 1 / 3, ("fwd", "fwd+bwd"): 3.0}

    def at_largest(rows):
        rows = [r for r in rows if "step_ms" in r]
        smaller = [r for r in rows if r["frames"] <= frames] or rows
        if not smaller:
            return None
        T0 = max(r["frames"] for r in smaller)
        by_kind = {r["kind"]: r for r in smaller if r["frames"] == T0}
        lin, dense = by_kind.get("linear"), by_kind.get("dense")
        ratio = frames / T0

        def secs(r):
            return r["step_ms"] / 1000 * pass_factor.get((r["pass"], pass_), 1.0)

        if kind == "linear":
            return None if lin is None else secs(lin) * ratio
        if dense is None:
            return None
        if lin is None:
            return secs(dense) * ratio ** 2
        return secs(lin) * ratio + max(0.0, secs(dense) - secs(lin)) * ratio ** 2

    guess = at_largest([r for r in done if r["case"] == case])
    if guess is None and case == "xlsr_53":  # 24 such layers + the CNN
        layer = at_largest([r for r in done if r["case"] == "layer"])
        guess = None if layer is None else 1.2 * XLSR_LAYERS * layer
    return guess


def bench_attention(args) -> None:
    device = torch.device(args.device)
    frames = [int(t) for t in args.frames.split(",")]
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(ATTN_CASES))
    if unknown:
        raise SystemExit(f"--cases: expected names from {ATTN_CASES}, found {unknown}")
    limit = int(0.85 * mem_available_bytes()) if device.type == "cpu" else 0
    start = time.perf_counter()
    done = []
    for case in cases:
        for T in frames:
            for pass_ in ("fwd+bwd", "fwd"):
                guesses = {kind: predict_s(done, case, kind, T, pass_) for kind in ("linear", "dense")}
                if (guesses["linear"] or 0) <= args.max_step_s:
                    break
            for kind in ("linear", "dense"):  # linear first: the new path, should the budget end
                row = dict(case=case, frames=T, kind=kind, **{"pass": pass_})
                guess = guesses[kind]
                long_step = guess is not None and guess > args.max_step_s / 3  # one step, timed as it comes
                reps, warmup = (1, 0) if long_step else (args.reps, args.warmup)
                left = args.budget_s - (time.perf_counter() - start)
                if guess is not None and guess > args.max_step_s:
                    row["error"] = f"skipped: predicted {guess:.0f} s a step (over --max-step-s)"
                elif guess is not None and 5 + guess * (reps + warmup) > left:
                    row["error"] = f"skipped: predicted {guess:.0f} s a step, {max(left, 0):.0f} s of --budget-s left"
                else:
                    spec = dict(row, batch=args.batch, chunk=args.chunk, left=args.left, sinks=args.sinks,
                                reps=reps, warmup=warmup, device=args.device, threads=args.threads)
                    timeout = 60 + 1.5 * (reps + warmup) * (guess or args.max_step_s)
                    row.update(run_worker(spec, timeout, limit))
                done.append(row)
                print(f"  {case} T={T} {kind} {pass_}: "
                      + (f"{row['step_ms']:.0f} ms, peak {row['peak_mib']:.0f} MiB" if "step_ms" in row
                         else row["error"]), flush=True)

    print(f"\ndense vs linear attention, chunk {args.chunk} / left {args.left} / sinks {args.sinks}, "
          f"batch {args.batch}, {args.device} fp32, {args.threads or torch.get_num_threads()} threads")
    header = (f"{'case':<8} {'T':>5} {'pass':<8} {'dense ms':>9} {'dense MiB':>10} {'linear ms':>10} "
              f"{'linear MiB':>11} {'time x':>7} {'mem x':>6}")
    print(header)
    print("-" * len(header))
    for case in cases:
        for T in frames:
            pair = {r["kind"]: r for r in done if r["case"] == case and r["frames"] == T}
            d, lin = pair["dense"], pair["linear"]

            def cell(r, key, width):
                return f"{r[key]:>{width}.0f}" if key in r else f"{'-':>{width}}"

            ratio_t = f"{d['step_ms'] / lin['step_ms']:>7.2f}" if "step_ms" in d and "step_ms" in lin else f"{'':>7}"
            ratio_m = (f"{d['peak_mib'] / lin['peak_mib']:>6.2f}"
                       if "peak_mib" in d and "peak_mib" in lin and lin["peak_mib"] > 0 else f"{'':>6}")
            print(f"{case:<8} {T:>5} {d['pass']:<8} {cell(d, 'step_ms', 9)} {cell(d, 'peak_mib', 10)} "
                  f"{cell(lin, 'step_ms', 10)} {cell(lin, 'peak_mib', 11)} {ratio_t} {ratio_m}")
            for r in (d, lin):
                if "error" in r:
                    print(f"{'':<8} {'':>5} {r['kind']}: {r['error']}")

    result = dict(
        benchmark="dense vs linear streaming attention, step = forward (+ backward of mean(out**2)), "
                  "dropout off, equal lengths; peak = resident memory (CPU) or allocated memory (CUDA) "
                  "above the level before the step",
        torch=torch.__version__, device=args.device,
        device_name=(torch.cuda.get_device_name(device) if device.type == "cuda"
                     else platform.processor() or platform.machine()),
        threads=args.threads or torch.get_num_threads(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        batch=args.batch, chunk=args.chunk, left_context=args.left, num_sinks=args.sinks,
        max_step_s=args.max_step_s, budget_s=args.budget_s, wall_s=round(time.perf_counter() - start, 1),
        layer="one TransformerLayer, D=1024, 16 heads, FFN 4096, pre-LN (XLSR-53 sized)",
        load_avg=os.getloadavg() if hasattr(os, "getloadavg") else None,
        time=time.strftime("%Y-%m-%dT%H:%M:%S"), results=done)
    out = Path(args.out or Path(__file__).parent / "results" / "encoder_attention.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--attention-worker":  # a child of bench_attention
        print(json.dumps(attention_worker(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,mid", help=f"comma list of {sorted(CONFIGS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    parser.add_argument("--batch", type=int, default=None, help="default 4; 1 with --attention")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chunk", type=int, default=32, help="chunk size C in frames for the chunk run")
    parser.add_argument("--left", type=int, default=64, help="left context L in frames for the chunk run")
    parser.add_argument("--reps", type=int, default=None, help="timed steps (default: 5 tiny, 2 others)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default bench/results/encoder.json, encoder_attention.json)")
    parser.add_argument("--attention", action="store_true", help="dense vs linear attention instead")
    parser.add_argument("--cases", default=",".join(ATTN_CASES), help="--attention: comma list")
    parser.add_argument("--frames", default="750,1750,6000", help="--attention: comma list of T")
    parser.add_argument("--sinks", type=int, default=4, help="--attention: sink frames S")
    parser.add_argument("--max-step-s", type=float, default=120.0,
                        help="--attention: skip (or run forward only) a case predicted slower than this")
    parser.add_argument("--budget-s", type=float, default=720.0, help="--attention: total time to spend")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.attention:
        args.batch = args.batch or 1
        if args.reps is None:
            args.reps = 2
        bench_attention(args)
        return
    args.out = args.out or str(Path(__file__).parent / "results" / "encoder.json")
    args.batch = args.batch or 4

    import transformers

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
