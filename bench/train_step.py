"""One training update of the LibriSpeech transducer: time and peak memory, full vs pruned loss,
dense vs linear-cost streaming attention.

Every configuration runs in a fresh subprocess, so that peaks do not mix:

- model: ``build_model`` of the ``model:`` section of ``--config`` (default the LibriSpeech
  recipe's ``conf/train_stage4.yaml``: XLSR-53 encoder with its CNN frozen, stateless predictor,
  joiner 512, CTC weight 0.1, BPE 500), with the encoder preset ``--preset``, ``loss.kind`` set to
  ``full`` or ``pruned`` (the conf's ``prune_range`` and scales) and layer drop off, so that every
  update runs every layer; dropout as in the conf;
- batch: ``--batch`` utterances of ``--seconds`` of random audio, each with
  ``U = --tokens-per-second * seconds`` random tokens (4 tokens/s is an estimate for LibriSpeech
  read speech in BPE 500, about 2.7 words/s; the joiner lattice grows with it);
- mask: the conf's validation mask (stage 4: chunk 32 frames, left context 64);
- attention: ``linear``, the encoder as it is (``xtrans.models.attention.streaming_attention``
  attends each chunk to its ``S + L + C`` keys), or ``dense``, the same encoder with that call
  replaced in the worker process by SDPA under the (B, 1, T, T) mask of the same rule;
- update: AdamW over the trainer's parameter groups (``split_param_groups``), forward,
  backward, gradient clipping, step, as ``xtrans.train.trainer`` does; ``--warmup`` untimed
  updates, then the median of ``--reps``.

Memory. CPU: the peak resident set (``VmHWM``) over the updates, the high-water mark reset
(``/proc/self/clear_refs``) once the model is built, with glibc's ``MALLOC_MMAP_THRESHOLD_``
fixed at 64 KiB so that freed tensors leave the resident set: ``peak MiB`` is the whole
process (weights, gradients, AdamW states, activations, the loss lattice); ``model MiB`` is
the resident set before the first update, with the AdamW moments already allocated.
CUDA: ``torch.cuda.max_memory_allocated`` (``model MiB``: ``memory_allocated`` before the first update).

Head. The predictor, joiner, loss and CTC head alone (forward and backward on given encoder
frames (B, T, D)) are measured in the same way at ``B`` and ``2B`` utterances of ``--seconds``;
the difference gives the head's cost per lattice cell ``T (U+1)`` (full) or per frame (pruned),
which extrapolates it to the conf's ``max_seconds`` batches of ``--durations`` second
utterances. Those batches are also measured where the extrapolation stays under
``--measure-limit-gib``; the table says which numbers are measured and which are extrapolated.

Usage::

    python bench/train_step.py                       # xlsr_53, 2 x 15 s, CPU: minutes
    python bench/train_step.py --preset mini         # a quick run
    python bench/train_step.py --dry-run             # tiny preset, 1 s audio: seconds
    python bench/train_step.py --device cuda --dtype bf16 --batch 25 --seconds 16   # a 400 s batch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "egs" / "librispeech" / "asr1" / "conf" / "train_stage4.yaml"
LOSSES = ("full", "pruned")
ATTENTIONS = ("dense", "linear")


# ----------------------------------------------------------------------------- memory


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Peak memory since :meth:`reset`: resident set on CPU, allocated memory on CUDA (MiB)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> float:
        """Starts a new peak; returns the memory in use now."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current VmRSS
                f.write("5")
        except OSError:  # not Linux, or not allowed: the peak then counts from the process start
            pass
        return _status_mib("VmRSS")

    def peak(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _status_mib("VmHWM")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- the model


def linear_attention_status() -> str:
    """``""`` when the encoder's layers attend through the gathered plan of ``attention_plan``, else why not."""
    from xtrans.models.wav2vec2 import model as encoder_module

    if getattr(encoder_module, "attention_plan", None) is None:
        return "the encoder does not plan its attention with xtrans.models.attention.attention_plan (not wired in yet)"
    return ""


def use_dense_attention() -> None:
    """Makes this process's encoder attend through SDPA with the dense (B, 1, T, T) mask.

    The encoder plans its layers' attention once per pass with ``attention_plan``, which gathers
    each chunk's ``S + L + C`` keys when the left context is bounded; the dense baseline plans (in
    this worker process only) with ``gather=False``: SDPA under
    :func:`~xtrans.models.attention.dense_attention_mask`, the same rule as a (T, T) mask: what the
    encoder did before the linear path existed.
    """
    import functools

    from xtrans.models.attention import attention_plan
    from xtrans.models.wav2vec2 import model as encoder_module

    encoder_module.attention_plan = functools.partial(attention_plan, gather=False)


def load_train_config(args, loss: str):
    """The stage config with this run's loss and preset, through the library's config loader."""
    from xtrans.config import load_config
    from xtrans.train.config import TrainConfig

    overrides = {"model.loss.kind": loss, "model.encoder.preset": args.preset, "model.encoder.layer_drop": 0.0}
    return load_config(args.config, TrainConfig, overrides=overrides)


def batch_shape(args, encoder_kwargs: dict, batch: int, seconds: float):
    """(S samples, T frames, U tokens) of a batch of ``seconds`` utterances."""
    from xtrans.models.wav2vec2 import conv_output_lengths

    samples = int(round(seconds * 16000))
    frames = int(conv_output_lengths(torch.tensor([samples]), encoder_kwargs["conv_layers"])[0])
    return samples, frames, max(1, int(round(args.tokens_per_second * seconds)))


def random_batch(args, vocab: int, batch: int, samples: int, tokens: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(batch, samples, generator=gen)
    targets = torch.randint(1, vocab, (batch, tokens), generator=gen)
    lengths = torch.full((batch,), samples, dtype=torch.long)
    target_lengths = torch.full((batch,), tokens, dtype=torch.long)
    return wav.to(device), lengths.to(device), targets.to(device), target_lengths.to(device)


class GivenFrames(nn.Module):
    """Stands in for the encoder so that the head is measured alone: returns ``frames`` (B, T, D)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.frames = self.frame_lengths = None

    def forward(self, waveform, lengths, streaming=None):
        return self.frames, self.frame_lengths


def _autocast(device: torch.device, dtype: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


# ----------------------------------------------------------------------------- workers


def update_worker(args, loss: str, attention: str) -> dict:
    """One configuration: ``--warmup`` + ``--reps`` full updates; timings (ms) and memory (MiB)."""
    from xtrans.models.config import build_model
    from xtrans.models.wav2vec2 import preset_kwargs
    from xtrans.train.trainer import split_param_groups

    device = torch.device(args.device)
    path = "attention_plan, gathered (chunks attend their S + L + C keys)"
    if linear_attention_status():
        path = "SDPA, dense (B, 1, T, T) mask (the encoder has no other path yet)"
    elif attention == "dense":
        use_dense_attention()
        path = "SDPA, dense (B, 1, T, T) mask (attention_plan with gather=False in this process)"
    cfg = load_train_config(args, loss)
    vocab = cfg.model.vocab_size or args.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size=vocab).to(device).train()
    optimizer = torch.optim.AdamW(split_param_groups(model, cfg), betas=cfg.optim.betas, eps=cfg.optim.eps)
    samples, frames, tokens = batch_shape(args, preset_kwargs(cfg.model.encoder.preset), args.batch, args.seconds)
    wav, lengths, targets, target_lengths = random_batch(args, vocab, args.batch, samples, tokens, device)
    streaming = cfg.mask.for_validation()
    # AdamW's moments exist from the first step on: create them before measuring, so that the
    # first update already has the memory of every later one (a step on zero gradients)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    memory = PeakMemory(device)
    model_mib = memory.reset()
    times, values = [], []
    for rep in range(args.warmup + args.reps):
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, args.dtype):
            out = model(wav, lengths, targets, target_lengths, streaming=streaming)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                       cfg.optim.grad_clip or float("inf"))
        optimizer.step()
        _sync(device)
        if rep >= args.warmup:
            times.append(time.perf_counter() - start)
        values.append(float(out.loss.detach()))
        del out
    return dict(
        kind="update", loss=loss, attention=attention, attention_path=path, batch=args.batch,
        seconds=args.seconds, frames=frames, tokens=tokens, chunk=streaming.chunk_size if streaming else None,
        left_context=streaming.left_context if streaming else None,
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        trainable_m=round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
        update_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times), reps=len(times),
        updates_per_s=1.0 / statistics.median(times), model_mib=model_mib, peak_mib=memory.peak(),
        first_loss=values[0])


def head_worker(args, loss: str, batch: int, seconds: float) -> dict:
    """The head alone (predictor, joiner, loss, CTC head) on given frames: forward + backward."""
    from xtrans.models.config import build_model
    from xtrans.models.wav2vec2 import preset_kwargs

    device = torch.device(args.device)
    cfg = load_train_config(args, loss)
    vocab = cfg.model.vocab_size or args.vocab_size
    encoder_kwargs = preset_kwargs(cfg.model.encoder.preset, **cfg.model.encoder.overrides())
    torch.manual_seed(0)
    stand_in = GivenFrames(encoder_kwargs["embed_dim"])
    model = build_model(cfg.model, vocab_size=vocab)
    model.encoder = stand_in  # the head alone: predictor, joiner, CTC head and loss on given frames
    model = model.to(device).train()
    _, frames, tokens = batch_shape(args, encoder_kwargs, batch, seconds)
    gen = torch.Generator().manual_seed(0)
    stand_in.frames = torch.randn(batch, frames, stand_in.embed_dim, generator=gen).to(device).requires_grad_()
    stand_in.frame_lengths = torch.full((batch,), frames, dtype=torch.long, device=device)
    targets = torch.randint(1, vocab, (batch, tokens), generator=gen).to(device)
    target_lengths = torch.full((batch,), tokens, dtype=torch.long, device=device)
    dummy = torch.zeros(batch, 1, device=device)
    memory = PeakMemory(device)
    before = memory.reset()
    _sync(device)
    start = time.perf_counter()
    with _autocast(device, args.dtype):
        out = model(dummy, stand_in.frame_lengths, targets, target_lengths)
    out.loss.backward()
    _sync(device)
    elapsed = time.perf_counter() - start
    return dict(kind="head", loss=loss, batch=batch, seconds=seconds, frames=frames, tokens=tokens,
                head_ms=1e3 * elapsed, head_mib=memory.peak() - before)


def run_worker(args, spec: dict) -> dict:
    """Runs ``spec`` in a fresh interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, __file__, "--_worker", json.dumps(spec)] + args.passthrough
    # glibc: every block from 64 KiB up is its own mapping, returned when freed, so that the
    # resident set follows the live tensors (its adaptive threshold keeps freed blocks otherwise)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return dict(spec, error=lines[-1] if lines else f"exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the driver


def head_rows(args, losses) -> list:
    """Head memory at B and 2B x --seconds (measured) and at max_seconds batches (extrapolated/measured)."""
    from xtrans.models.wav2vec2 import preset_kwargs

    cfg = load_train_config(args, "full")
    encoder_kwargs = preset_kwargs(cfg.model.encoder.preset)
    max_seconds = cfg.data.max_seconds
    rows = []
    for loss in losses:
        small = [run_worker(args, dict(kind="head", loss=loss, batch=b, seconds=args.seconds))
                 for b in (args.batch, 2 * args.batch)]
        for row in small:
            rows.append(dict(row, measured=True, extrapolated_mib=None))
        if any("error" in r for r in small):
            continue
        # the head's memory is linear in the utterances of a batch: slope per utterance, then
        # per lattice cell T (U+1) (full) or per frame T (pruned), plus the fixed part
        per_utt = (small[1]["head_mib"] - small[0]["head_mib"]) / args.batch
        fixed = small[0]["head_mib"] - per_utt * args.batch
        cells = small[0]["frames"] * (small[0]["tokens"] + 1 if loss == "full" else 1)
        for seconds in args.durations:
            batch = int(max_seconds // seconds)
            _, frames, tokens = batch_shape(args, encoder_kwargs, batch, seconds)
            estimate = fixed + per_utt / cells * batch * frames * (tokens + 1 if loss == "full" else 1)
            row = dict(kind="head", loss=loss, batch=batch, seconds=seconds, frames=frames, tokens=tokens,
                       extrapolated_mib=estimate, measured=False, head_mib=None, head_ms=None)
            if estimate <= 1024 * args.measure_limit_gib:
                measured = run_worker(args, dict(kind="head", loss=loss, batch=batch, seconds=seconds))
                row.update(measured=True, **{k: measured.get(k) for k in ("head_mib", "head_ms", "error")})
            rows.append(row)
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(args, cfg, threads: int, linear_status: str, updates: list, heads: list) -> list:
    """The printed tables, as lines."""
    m = cfg.mask.for_validation()
    mask = "full attention" if m is None else f"chunk {m.chunk_size}, left {m.left_context}, sinks {m.num_sinks}"
    lines = [f"one update of {args.preset} + the head of {os.path.relpath(args.config, REPO)}: batch "
             f"{args.batch} x {args.seconds:g} s, U = {args.tokens_per_second:g} tokens/s, {mask}, "
             f"{args.device} {args.dtype}, {threads} threads"]
    if linear_status and "linear" in args.attention:
        lines.append(f"linear attention not measured: {linear_status}")
    if updates:
        header = (f"{'loss':<7} {'attention':<9} {'T':>5} {'U':>4} {'update ms':>10} {'min ms':>9} "
                  f"{'upd/s':>6} {'model MiB':>10} {'peak MiB':>9}")
        lines += [header, "-" * len(header)]
    for r in updates:
        if "error" in r:
            lines.append(f"{r['loss']:<7} {r['attention']:<9} error: {r['error']}")
            continue
        lines.append(f"{r['loss']:<7} {r['attention']:<9} {r['frames']:>5} {r['tokens']:>4} "
                     f"{r['update_ms']:>10.0f} {r['min_ms']:>9.0f} {r['updates_per_s']:>6.2f} "
                     f"{r['model_mib']:>10.0f} {r['peak_mib']:>9.0f}")
    if heads:
        lines += ["", f"head alone (predictor, joiner, loss, CTC head; forward + backward on given (B, T, "
                      f"{preset_dim(cfg)}) frames); the conf's max_seconds {cfg.data.max_seconds:g}; "
                      f"'-' = not measured / not extrapolated:"]
        header = (f"{'loss':<7} {'B':>4} {'utt s':>6} {'T':>5} {'U':>4} {'measured MiB':>13} {'head ms':>8} "
                  f"{'extrapolated MiB':>17}")
        lines += [header, "-" * len(header)]
        for r in heads:
            err = f"  error: {r['error']}" if r.get("error") else ""
            lines.append(f"{r['loss']:<7} {r['batch']:>4} {r['seconds']:>6g} {r['frames']:>5} {r['tokens']:>4} "
                         f"{_fmt(r.get('head_mib'), '.0f'):>13} {_fmt(r.get('head_ms'), '.0f'):>8} "
                         f"{_fmt(r.get('extrapolated_mib'), '.0f'):>17}{err}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    parser.add_argument("--preset", default="xlsr_53", help="encoder preset (xlsr_53, mini, tiny, ...)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the stage config (model, mask, optim)")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per utterance")
    parser.add_argument("--batch", type=int, default=2, help="utterances per batch")
    parser.add_argument("--tokens-per-second", type=float, default=4.0, help="U = this x seconds")
    parser.add_argument("--vocab-size", type=int, default=500, help="V incl. blank when the conf sets none")
    parser.add_argument("--losses", default="full,pruned")
    parser.add_argument("--attention", default="dense,linear",
                        help="dense and/or linear (when the encoder has it); '' = only the head")
    parser.add_argument("--durations", default="5,15,35",
                        help="utterance seconds of the max_seconds batches the head is extrapolated to")
    parser.add_argument("--measure-limit-gib", type=float, default=None,
                        help="measure a max_seconds head batch when its extrapolation is below this "
                             "(default: 6 on CPU, 60 on CUDA, 0 with --dry-run)")
    parser.add_argument("--no-head", action="store_true", help="skip the head measurements")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--dry-run", action="store_true", help="tiny preset, 1 s audio, 1 rep: seconds on CPU")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_step.json"))
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dry_run:
        args.preset, args.seconds, args.reps, args.warmup = "tiny", 1.0, 1, 0
        args.durations = "1,2"
    args.durations = [float(s) for s in str(args.durations).split(",")]
    if args.measure_limit_gib is None:
        args.measure_limit_gib = 0.0 if args.dry_run else (60.0 if args.device == "cuda" else 6.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._worker:
        spec = json.loads(args._worker)
        if spec["kind"] == "update":
            row = update_worker(args, spec["loss"], spec["attention"])
        else:
            row = head_worker(args, spec["loss"], spec["batch"], spec["seconds"])
        print(json.dumps(row))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    args.passthrough = [a for a in sys.argv[1:] if not a.startswith("--_worker")]

    losses = [s for s in args.losses.split(",") if s]
    for loss in losses:
        if loss not in LOSSES:
            parser.error(f"--losses: expected a comma list of {LOSSES}, found {loss!r}")
    attentions = [s for s in args.attention.split(",") if s]
    for attention in attentions:
        if attention not in ATTENTIONS:
            parser.error(f"--attention: expected a comma list of {ATTENTIONS}, found {attention!r}")
    linear_status = linear_attention_status()
    if "linear" in attentions and linear_status:
        attentions.remove("linear")
    updates = [run_worker(args, dict(kind="update", loss=loss, attention=attention))
               for attention in attentions for loss in losses]
    heads = [] if args.no_head else head_rows(args, losses)

    cfg = load_train_config(args, "full")
    threads = args.threads or torch.get_num_threads()
    lines = table(args, cfg, threads, linear_status, updates, heads)
    print("\n".join(lines))
    result = dict(
        benchmark="one training update (forward, backward, clip, AdamW step) of the recipe's transducer",
        config=os.path.relpath(args.config, REPO), preset=args.preset, device=args.device,
        device_name=(torch.cuda.get_device_name() if args.device == "cuda"
                     else platform.processor() or platform.machine()),
        dtype=args.dtype, threads=threads, torch=torch.__version__, batch=args.batch, seconds=args.seconds,
        tokens_per_second=args.tokens_per_second, max_seconds=cfg.data.max_seconds,
        prune_range=cfg.model.loss.prune_range, dry_run=args.dry_run,
        linear_attention=linear_status or "measured",
        memory=("CPU: peak resident set (VmHWM) of the process, reset after building the model"
                if args.device == "cpu" else "CUDA: torch.cuda.max_memory_allocated"),
        load_avg=os.getloadavg(), time=time.strftime("%Y-%m-%dT%H:%M:%S"), updates=updates, head=heads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.txt').name}")


def preset_dim(cfg) -> int:
    from xtrans.models.wav2vec2 import preset_kwargs

    return preset_kwargs(cfg.model.encoder.preset, **cfg.model.encoder.overrides())["embed_dim"]


if __name__ == "__main__":
    main()
