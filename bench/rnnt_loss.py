"""Benchmark of xtrans.losses.rnnt_loss against torchaudio and a plain autograd baseline.

Times forward and forward+backward (median over repetitions after warm-up) and measures the
peak memory of one forward+backward, each implementation and shape in its own subprocess so
that peaks do not mix. On CPU the peak is the rise of the process's resident-set high-water
mark (``ru_maxrss``) over its resident size just before the call, so it includes the
(B, T, U+1, V) gradient every implementation must return; on CUDA it is
``torch.cuda.max_memory_allocated`` above the memory in use before the call.

``--mode transducer`` compares the whole transducer loss at training size instead: ``full``
(joiner on (B, T, U+1, J), ``rnnt_loss``) against ``pruned`` (simple loss of the am/lm
projections, ``prune_ranges``, joiner on (B, T, R, J), ``pruned_rnnt_loss``), forward and
backward through the joiner, the projections and the (B, T, D), (B, U+1, D) inputs.

Usage::

    python bench/rnnt_loss.py [--device cpu|cuda] [--reps 5] [--out bench/results/rnnt_loss.json]
    python bench/rnnt_loss.py --mode transducer [--shapes 8,750,80,500] [--joiner-dim 512]
        [--prune-range 5] [--out bench/results/rnnt_loss_transducer.json]
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

SHAPES = [  # (B, T, U, V)
    (8, 200, 40, 256),
    (4, 500, 100, 500),
    (16, 100, 20, 1000),
]
IMPLS = ["xtrans", "torchaudio", "autograd"]
TRANSDUCER_SHAPES = [(8, 750, 80, 500)]  # (B, T, U, V): the training-size check of the pruned loss
TRANSDUCER_IMPLS = ["full", "pruned"]


def autograd_rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=0):
    """Baseline: log_softmax, gathers and the alpha recursion, differentiated by autograd.

    Each frame row of alpha is one ``logcumsumexp`` over u (full lengths assumed, as in this
    benchmark); autograd keeps the (B, T, U+1, V) log-softmax and every row.
    """
    batch, frames, width, _ = logits.shape
    log_probs = logits.float().log_softmax(dim=-1)
    blank_lp = log_probs[..., blank]  # (B, T, U+1)
    index = targets[:, None, :, None].expand(-1, frames, -1, 1)
    label_lp = log_probs[:, :, :-1].gather(-1, index).squeeze(-1)  # (B, T, U)
    zero = label_lp.new_zeros(batch, frames, 1)
    prefix = torch.cat([zero, label_lp.cumsum(dim=2)], dim=2)  # (B, T, U+1)
    alpha = prefix[:, 0]
    for t in range(1, frames):
        alpha = prefix[:, t] + torch.logcumsumexp(alpha + blank_lp[:, t - 1] - prefix[:, t], dim=1)
    return -(alpha[:, -1] + blank_lp[:, -1, -1])


def _torchaudio_status():
    try:
        import torchaudio
        import torchaudio.functional  # noqa: F401
    except Exception as exc:  # ImportError, or an ABI mismatch raising OSError
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"not importable ({type(exc).__name__}: {message})"
    return f"torchaudio {torchaudio.__version__}"


def _loss_fn(impl):
    if impl == "xtrans":
        from xtrans.losses import rnnt_loss

        return lambda x, y, tl, ul: rnnt_loss(x, y, tl, ul, reduction="sum")
    if impl == "torchaudio":
        import torchaudio.functional as taf

        return lambda x, y, tl, ul: taf.rnnt_loss(
            x, y.int(), tl.int(), ul.int(), blank=0, reduction="sum"
        )
    if impl == "autograd":
        return lambda x, y, tl, ul: autograd_rnnt_loss(x, y, tl, ul).sum()
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def _rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _worker(impl, shape, device, reps, warmup):
    """Runs one case in this process; returns a dict of timings (ms) and peak memory (MiB)."""
    batch, frames, labels, vocab = shape
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, frames, labels + 1, vocab, generator=gen).to(device)
    logits.requires_grad_(True)
    targets = torch.randint(1, vocab, (batch, labels), generator=gen).to(device)
    logit_lengths = torch.full((batch,), frames, device=device)
    target_lengths = torch.full((batch,), labels, device=device)
    fn = _loss_fn(impl)
    row = _measure(lambda: fn(logits, targets, logit_lengths, target_lengths), [logits], device, reps,
                   warmup)
    row["logits_mib"] = logits.numel() * logits.element_size() / 2**20
    return row


def _transducer_worker(impl, shape, device, reps, warmup, joiner_dim, prune_range):
    """One transducer-loss case (full or pruned) at (B, T, U, V); timings (ms), peak (MiB)."""
    from torch import nn

    from xtrans.losses import (prune_joiner_inputs, prune_ranges, pruned_rnnt_loss, rnnt_loss,
                               simple_rnnt_loss)
    from xtrans.models.joiner import Joiner

    batch, frames, labels, vocab = shape
    dim = joiner_dim  # encoder and predictor output dims as the joiner's, as in icefall
    torch.manual_seed(0)
    joiner = Joiner(encoder_dim=dim, predictor_dim=dim, joiner_dim=joiner_dim, vocab_size=vocab).to(device)
    simple_am_proj, simple_lm_proj = nn.Linear(dim, vocab).to(device), nn.Linear(dim, vocab).to(device)
    enc = torch.randn(batch, frames, dim, device=device, requires_grad=True)  # (B, T, D)
    pred = torch.randn(batch, labels + 1, dim, device=device, requires_grad=True)  # (B, U+1, D)
    targets = torch.randint(1, vocab, (batch, labels), device=device)
    logit_lengths = torch.full((batch,), frames, device=device)
    target_lengths = torch.full((batch,), labels, device=device)
    params = list(joiner.parameters())
    if impl == "full":
        def fn():
            logits = joiner(enc[:, :, None], pred[:, None])  # (B, T, U+1, V)
            return rnnt_loss(logits, targets, logit_lengths, target_lengths, reduction="sum")
    elif impl == "pruned":
        params += list(simple_am_proj.parameters()) + list(simple_lm_proj.parameters())

        def fn():
            am, lm = simple_am_proj(enc), simple_lm_proj(pred)  # (B, T, V), (B, U+1, V)
            simple = simple_rnnt_loss(am, lm, targets, logit_lengths, target_lengths, reduction="sum")
            ranges = prune_ranges(am, lm, targets, logit_lengths, target_lengths, prune_range)
            enc_pruned, pred_pruned = prune_joiner_inputs(joiner.encoder_proj(enc), joiner.predictor_proj(pred),
                                                          ranges)
            logits = joiner(enc_pruned, pred_pruned, projected=True)  # (B, T, R, V)
            pruned = pruned_rnnt_loss(logits, targets, ranges, logit_lengths, target_lengths, reduction="sum")
            return 0.5 * simple + pruned
    else:
        raise ValueError(f"impl must be one of {TRANSDUCER_IMPLS}, got {impl!r}")
    row = _measure(fn, [enc, pred] + params, device, reps, warmup)
    row["logits_mib"] = batch * frames * (labels + 1 if impl == "full" else prune_range) * vocab * 4 / 2**20
    return row


def _measure(fn, inputs, device, reps, warmup):
    """Peak memory of the first ``fn()`` + backward w.r.t. ``inputs``, then median timings."""
    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # Peak memory of the first call (before any warm-up has raised the high-water mark).
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_kib() * 1024
    loss = fn()
    grad = torch.autograd.grad(loss, inputs)
    sync()
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    value = float(loss.detach())
    del loss, grad

    for _ in range(warmup):
        torch.autograd.grad(fn(), inputs)
    forward, total = [], []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        loss = fn()
        sync()
        middle = time.perf_counter()
        torch.autograd.grad(loss, inputs)
        sync()
        end = time.perf_counter()
        forward.append(middle - start)
        total.append(end - start)
        del loss
    return {
        "forward_ms": 1e3 * statistics.median(forward),
        "fwd_bwd_ms": 1e3 * statistics.median(total),
        "fwd_bwd_min_ms": 1e3 * min(total),
        "peak_mib": peak / 2**20,
        "loss_sum": value,
    }


def _run_case(impl, shape, args):
    command = [
        sys.executable, __file__, "--_worker", impl, ",".join(map(str, shape)),
        "--device", args.device, "--reps", str(args.reps), "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--mode", args.mode, "--joiner-dim", str(args.joiner_dim),
        "--prune-range", str(args.prune_range),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--impls", default=None, help="comma-separated subset of " + ",".join(IMPLS)
                        + " (or, --mode transducer, of " + ",".join(TRANSDUCER_IMPLS) + ")")
    parser.add_argument("--mode", choices=["loss", "transducer"], default="loss",
                        help="loss: rnnt_loss implementations; transducer: full vs pruned transducer loss")
    parser.add_argument("--shapes", default=None, help="B,T,U,V[;B,T,U,V...] instead of the mode's shapes")
    parser.add_argument("--joiner-dim", type=int, default=512, help="transducer mode: J (and D)")
    parser.add_argument("--prune-range", type=int, default=5, help="transducer mode: R")
    parser.add_argument("--out", default=None, help="JSON results (default bench/results/rnnt_loss[_transducer].json)")
    parser.add_argument("--_worker", nargs=2, metavar=("IMPL", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args._worker:
        impl, shape = args._worker
        shape = tuple(int(n) for n in shape.split(","))
        if args.mode == "transducer":
            row = _transducer_worker(impl, shape, args.device, args.reps, args.warmup, args.joiner_dim,
                                     args.prune_range)
        else:
            row = _worker(impl, shape, args.device, args.reps, args.warmup)
        print(json.dumps(row))
        return
    if args.out is None:
        name = "rnnt_loss_transducer.json" if args.mode == "transducer" else "rnnt_loss.json"
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)
    if args.mode == "transducer":
        base_impl, all_impls, shapes = "full", TRANSDUCER_IMPLS, TRANSDUCER_SHAPES
    else:
        base_impl, all_impls, shapes = "xtrans", IMPLS, SHAPES
    if args.shapes:
        shapes = [tuple(int(n) for n in s.split(",")) for s in args.shapes.split(";")]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")

    impls = args.impls.split(",") if args.impls else list(all_impls)
    torchaudio_status = _torchaudio_status()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print(f"time: median of --reps forward+backward after warm-up; x time, x mem: ratio to {base_impl}")
    if args.mode == "transducer":
        print(f"joiner dim {args.joiner_dim}, prune range {args.prune_range}; (logits MiB): the joiner's output")
    else:
        print(f"torchaudio: {torchaudio_status}")
    if "torchaudio" in impls and not torchaudio_status.startswith("torchaudio "):
        impls.remove("torchaudio")

    results = []
    header = (
        f"{'B':>3} {'T':>4} {'U':>4} {'V':>5} {'impl':>10} {'fwd ms':>9} {'fwd+bwd ms':>11}"
        f" {'(min)':>8} {'peak MiB':>9} {'x time':>7} {'x mem':>6}  (logits MiB)"
    )
    print(header)
    print("-" * len(header))
    for shape in shapes:
        rows = {impl: _run_case(impl, shape, args) for impl in impls}
        base = rows.get(base_impl, {})
        for impl, row in rows.items():
            entry = {"B": shape[0], "T": shape[1], "U": shape[2], "V": shape[3], "impl": impl, **row}
            if "error" in row:
                print(f"{shape[0]:>3} {shape[1]:>4} {shape[2]:>4} {shape[3]:>5} {impl:>10}  error: {row['error']}")
            else:
                if "fwd_bwd_ms" in base:
                    entry["time_vs_base"] = row["fwd_bwd_ms"] / base["fwd_bwd_ms"]
                    entry["mem_vs_base"] = row["peak_mib"] / base["peak_mib"]
                print(
                    f"{shape[0]:>3} {shape[1]:>4} {shape[2]:>4} {shape[3]:>5} {impl:>10}"
                    f" {row['forward_ms']:>9.1f} {row['fwd_bwd_ms']:>11.1f} {row['fwd_bwd_min_ms']:>8.1f}"
                    f" {row['peak_mib']:>9.1f}"
                    f" {entry.get('time_vs_base', float('nan')):>7.2f}"
                    f" {entry.get('mem_vs_base', float('nan')):>6.2f}  ({row['logits_mib']:.0f})"
                )
            results.append(entry)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as out:
        json.dump(
            {
                "torch": torch.__version__,
                "mode": args.mode,
                **({"joiner_dim": args.joiner_dim, "prune_range": args.prune_range}
                   if args.mode == "transducer" else {"torchaudio": torchaudio_status}),
                "device": args.device,
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "reps": args.reps,
                "results": results,
            },
            out,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
