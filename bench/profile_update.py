"""Where the time of one training update goes: the trainer of ``python -m xtrans.bin.train``,
timed stage by stage on CPU.

The trainer is built as ``xtrans.bin.train`` builds it (``load_config`` of ``--config`` with the
data overrides and ``--set``, ``Trainer(cfg, outdir, init=--init)``, its log handlers) and
trained by its own ``Trainer.fit`` loop for ``--warmup`` untimed updates, ``--updates`` timed
ones and ``--profile-updates`` under ``torch.profiler``, then the end of the run (validation,
checkpoint, averaging). Nothing in ``xtrans`` is edited: this process wraps methods of the
trainer, its updater, the data set and the augmentation transforms, and hooks the model's
modules. Every wrapper and hook reports to one clock that charges each interval between two
events to the stage on top of a stack, so that the stages are exclusive and add up to the
update: what no stage claims is the row ``unattributed``. Each row has its wall time and the CPU
time of the process (all its threads): on a busy machine a stage's wall time grows with the time
the process waits for a core, its CPU time far less, so compare CPU times there. The rows:

- ``data: waiting for the next batch``: ``next()`` on the trainer's DataLoader (with
  ``data.num_workers: 0`` this is where batches are made; with workers, what the update
  waits for beyond their prefetching); the first batch (worker start-up, and what a process
  computes once and caches, such as the simulated rooms of ``reverb``) is reported apart,
  amortised over an epoch's batches with workers (new processes each epoch), else over the run;
- ``forward``: the encoder's ``wave_norm``, ``feature_extractor`` (CNN), ``feature_projection``,
  ``pos_conv`` and ``layers`` (forward hooks); the rest of the encoder (attention plan, masks,
  final norm); the predictor and joiner (hooks); the RNN-T loss (``rnnt_loss``, or the pruned
  loss's functions) and the CTC head + loss; the rest of ``Transducer.forward`` and the
  finiteness check;
- ``backward``: ``loss.backward()``, split by identity autograd nodes put on the inputs and
  outputs of the same modules and losses (a part's backward runs from the gradient of its
  output to those of its inputs): transformer layers, positional conv, joiner, losses, ...;
- ``optimizer``: ``clip_grad_norm_``, ``AdamW.step`` (step hooks), the rest (scheduler, zero_grad);
- ``logging``: ``steps.jsonl``, TensorBoard and the log line (``Trainer._record``);
- ``checkpointing and validation`` that fall inside the timed updates.

Beside the update, the cost of producing one batch where it is produced (the loader's worker,
overlapping the update, or the main process with ``num_workers: 0``): loading audio, each
augmentation kind of ``data.augment`` (exclusive: ``one_of`` is only its draw), tokenising,
the rest of ``AsrDataset.__getitem__``, collate. Then the top operators of ``torch.profiler``
by self CPU time over the profiled updates (the stages appear in its trace as
``record_function`` ranges).

Data. ``--recipe DIR`` takes a recipe directory where ``run.sh`` has prepared the data, as the
recipe's ``asr.sh`` passes it to stage-1 training: ``DIR/dump/train_clean``,
``DIR/dump/dev_clean``, ``DIR/data/lang_bpe/bpe.model`` and the initial encoder
``DIR/exp/pretrained/encoder.pt`` when it exists; ``--data``, ``--dev``, ``--tokenizer``,
``--init`` name them one by one (a Kaldi directory with ``utt2num_samples``). Nothing is
written there. With none of these, a corpus of ``--synth-utts`` utterances of eSpeak speech is
synthesised once into ``bench/results/profile_update_corpus_<N>`` (``xtrans.bin.synth_corpus``,
``xtrans.bin.train_bpe``; needs the ``synth`` extra), so that the benchmark runs on a fresh clone.

Comparison. ``--compare`` runs several configurations one after the other, each in a fresh
process, with a ratio column against the first: each argument is one configuration, a
space-separated list of ``KEY=VALUE`` overrides (``""`` = the config as it is); ``--threads 1,2``
multiplies them by torch thread counts. On a busy machine the load changes between the
configurations of one run too: trust the CPU ratio there (the table gives both).

Usage::

    python bench/profile_update.py --recipe egs/mini_synth/asr1            # the demo's stage 1, 30 updates
    python bench/profile_update.py --recipe /path/to/asr1 --compare data.num_workers=0 data.num_workers=1
    python bench/profile_update.py --recipe /path/to/asr1 --threads 1,2 --updates 20
    python bench/profile_update.py --dry-run                                # tiny model and corpus: seconds

Results: the table on stdout and in ``--out`` with ``.txt``; JSON in ``--out``
(default ``bench/results/profile_update.json``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "egs" / "mini_synth" / "asr1" / "conf" / "train_stage1.yaml"
SYNTH_CORPUS = REPO / "bench" / "results" / "profile_update_corpus_{}"  # .format(training utterances)

# the rows of the update, in order: key -> label
STAGES = {
    "data_wait": "data: waiting for the next batch",
    "wave_norm": "forward: waveform normalisation",
    "cnn": "forward: CNN front end",
    "feature_projection": "forward: feature projection",
    "pos_conv": "forward: positional conv",
    "layers": "forward: transformer layers",
    "encoder_other": "forward: encoder, other (attention plan, masks)",
    "predictor": "forward: predictor",
    "joiner": "forward: joiner",
    "rnnt_loss": "forward: RNN-T loss",
    "ctc": "forward: CTC head + loss",
    "forward_other": "forward: other (targets, finiteness check)",
    "backward": "backward",
    "clip": "optimizer: gradient clipping",
    "optimizer_step": "optimizer: AdamW step",
    "optimizer_other": "optimizer: scheduler, zero_grad",
    "update_other": "update: other (batch to device, sums)",
    "logging": "logging (steps.jsonl, TensorBoard, log line)",
    "checkpoint": "checkpointing and validation",
    "unattributed": "unattributed (the loop itself)",
}
# the parts of the backward pass (the clock's stage "bw:<part>"); "other" is what none claims
BACKWARD_PARTS = ("layers", "pos_conv", "feature_projection", "cnn", "predictor", "joiner", "rnnt_loss", "ctc",
                  "other")
# producing a batch, where it is produced (the clock DATA); between them, "augment:<kind>" of data.augment
PRODUCTION_HEAD = ("load_audio",)
PRODUCTION_TAIL = ("tokenize", "dataset_other", "collate")


# ----------------------------------------------------------------------------- the clock


class StageClock:
    """Exclusive time per stage: each interval between two events goes to the stage on top of the
    stack (``base`` when it is empty), so that the stages add up to the time elapsed. Both the
    wall time and the CPU time of this process (all its threads) are kept: on a busy machine
    the wall time of a stage grows with the time the process waits for a core, its CPU time far less.

    ``quiet`` > 0 ignores pushes and pops (the model's hooks while validation runs inside the
    ``checkpoint`` stage). While ``profiling``, every stage is also a ``record_function`` range.
    """

    def __init__(self, base: str):
        self.base = base
        self.stack = []  # (stage, record_function range or None)
        self.totals = defaultdict(lambda: [0.0, 0.0])  # stage -> [wall s, CPU s]
        self.last = time.perf_counter()
        self.last_cpu = time.process_time()
        self.quiet = 0
        self.profiling = False

    def _charge(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        spent = self.totals[self.stack[-1][0] if self.stack else self.base]
        spent[0] += now - self.last
        spent[1] += cpu - self.last_cpu
        self.last, self.last_cpu = now, cpu

    def push(self, stage: str) -> None:
        if self.quiet:
            return
        self._charge()
        span = None
        if self.profiling:
            import torch

            span = torch.autograd.profiler.record_function(f"stage::{stage}")
            span.__enter__()
        self.stack.append((stage, span))

    def pop(self, stage: str, above: bool = False) -> None:
        """Ends the latest ``stage``; with ``above``, every stage opened after it too."""
        if self.quiet:
            return
        self._charge()
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == stage:
                end = len(self.stack) if above else i + 1
                ended = self.stack[i:end]
                del self.stack[i:end]
                for _, span in reversed(ended):
                    if span is not None:
                        span.__exit__(None, None, None)
                return

    def top(self):
        return self.stack[-1][0] if self.stack else None

    def take(self) -> dict:
        """``{stage: [wall s, CPU s]}`` since the previous ``take``."""
        self._charge()
        out = {k: list(v) for k, v in self.totals.items()}
        self.totals.clear()
        return out


CLOCK = StageClock("unattributed")  # the training process's update
DATA = StageClock("idle")  # making batches, in whichever process makes them


def timed(clock: StageClock, stage: str, fn, quiet: bool = False):
    """``fn`` charged to ``stage`` (``quiet``: and everything it calls)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        clock.push(stage)
        clock.quiet += quiet
        try:
            return fn(*args, **kwargs)
        finally:
            clock.quiet -= quiet
            clock.pop(stage, above=True)

    return wrapper


def wrap_attr(obj, name: str, stage: str, missing: list, clock: StageClock = CLOCK, quiet: bool = False) -> None:
    """Replaces ``obj.name`` by its timed self; notes it in ``missing`` when there is none."""
    fn = getattr(obj, name, None)
    if fn is None:
        missing.append(f"{getattr(obj, '__name__', type(obj).__name__)}.{name}")
        return
    setattr(obj, name, timed(clock, stage, fn, quiet))


# ----------------------------------------------------------------------------- backward spans


def _mark_class():
    import torch

    class BackwardMark(torch.autograd.Function):
        """Identity whose backward calls ``callback`` (when the gradient of its output arrives)."""

        @staticmethod
        def forward(ctx, x, callback):
            ctx.callback = callback
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            ctx.callback()
            return grad, None

    return BackwardMark


class BackwardSpan:
    """The backward of one forward call of a part: open from the first gradient of its outputs
    until the gradients of all its inputs are made.

    A part with no input that needs a gradient (the predictor's token ids, a CNN under
    ``no_grad``) is closed at the next span event of any part, which on CPU (one autograd thread)
    comes once its nodes have run.
    """

    inputless: list = []

    def __init__(self, stage: str):
        self.stage, self.inputs, self.opened, self.closed = stage, 0, False, False

    @classmethod
    def _settle(cls) -> None:
        for span in cls.inputless:
            span.close()
        cls.inputless.clear()

    def close(self) -> None:
        if self.opened and not self.closed:
            self.closed = True
            CLOCK.pop(self.stage)

    def output_grad(self) -> None:
        if self.opened:
            return
        BackwardSpan._settle()
        self.opened = True
        CLOCK.push(self.stage)
        if self.inputs == 0:
            BackwardSpan.inputless.append(self)

    def input_grad(self) -> None:
        BackwardSpan._settle()
        self.inputs -= 1
        if self.inputs == 0:
            self.close()

    def mark_inputs(self, values):
        """``values`` (a tuple or dict) with each tensor that needs a gradient marked."""
        import torch

        def mark(v):
            if isinstance(v, torch.Tensor) and v.requires_grad:
                self.inputs += 1
                return MARK.apply(v, self.input_grad)
            return v

        if isinstance(values, dict):
            return {k: mark(v) for k, v in values.items()}
        return tuple(mark(v) for v in values)

    def mark_outputs(self, out):
        import torch

        if isinstance(out, torch.Tensor):
            return MARK.apply(out, self.output_grad) if out.requires_grad else out
        if isinstance(out, tuple):
            return tuple(self.mark_outputs(o) for o in out)
        return out


MARK = None


def hook_module(module, stage: str, part: str, *, close_forward: bool = True) -> None:
    """Charges ``module``'s forward to ``stage`` and its backward to ``bw:<part>``."""
    import torch

    pending = []

    def before(mod, args, kwargs):
        CLOCK.push(stage)
        if not torch.is_grad_enabled() or CLOCK.quiet:
            pending.append(None)
            return None
        span = BackwardSpan(f"bw:{part}")
        pending.append(span)
        return span.mark_inputs(args), span.mark_inputs(kwargs)

    def after(mod, args, kwargs, output):
        if close_forward:
            CLOCK.pop(stage)
        span = pending.pop()
        return None if span is None else span.mark_outputs(output)

    module.register_forward_pre_hook(before, with_kwargs=True)
    module.register_forward_hook(after, with_kwargs=True)


def timed_loss(fn, stage: str, part: str, *, join: bool = False):
    """A loss function charged to ``stage`` (``join``: continuing a stage its head opened), with its
    backward charged to ``bw:<part>``."""
    import torch

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        opened = not (join and CLOCK.top() == stage)
        if opened:
            CLOCK.push(stage)
        try:
            if not torch.is_grad_enabled() or CLOCK.quiet:
                return fn(*args, **kwargs)
            span = BackwardSpan(f"bw:{part}")
            return span.mark_outputs(fn(*span.mark_inputs(args), **span.mark_inputs(kwargs)))
        finally:
            CLOCK.pop(stage)

    return wrapper


# ----------------------------------------------------------------------------- instrumenting


def instrument_library(missing: list) -> None:
    """Class- and module-level wrappers, installed before the trainer exists (so that the
    loader's worker processes, forked later, have them too)."""
    import torch
    import torch.nn.functional as F

    from xtrans.data import dataset as dataset_module
    from xtrans.data.augment import pipeline
    from xtrans.models import transducer

    global MARK
    MARK = _mark_class()

    # the losses, where Transducer.forward looks them up
    for name in ("rnnt_loss", "simple_rnnt_loss", "prune_ranges", "prune_joiner_inputs", "pruned_rnnt_loss"):
        if hasattr(transducer, name):
            setattr(transducer, name, timed_loss(getattr(transducer, name), "rnnt_loss", "rnnt_loss"))
    F.ctc_loss = timed_loss(F.ctc_loss, "ctc", "ctc", join=True)  # the CTC head opened the stage
    torch.nn.utils.clip_grad_norm_ = timed(CLOCK, "clip", torch.nn.utils.clip_grad_norm_)

    # producing a batch: only the training set's items are counted
    cls = dataset_module.AsrDataset
    getitem, load = cls.__getitem__, cls._load

    def timed_getitem(self, index):
        if not getattr(self, "_profiled", False):
            return getitem(self, index)
        DATA.push("dataset_other")
        try:
            return getitem(self, index)
        finally:
            DATA.pop("dataset_other", above=True)

    def timed_load(self, index):
        if not getattr(self, "_profiled", False) or str(DATA.top()).startswith("augment:"):
            return load(self, index)  # babble's other talkers count as babble
        DATA.push("load_audio")
        try:
            return load(self, index)
        finally:
            DATA.pop("load_audio")

    cls.__getitem__, cls._load = timed_getitem, timed_load
    for kind, transform in pipeline.KINDS.items():
        transform.apply = timed(DATA, f"augment:{kind}", transform.apply)


def timed_collate(collate):
    """``collate`` that attaches the cost of making its batch (``batch.production``: ``{part: [wall s, CPU s]}``)."""

    @functools.wraps(collate)
    def wrapper(examples):
        DATA.push("collate")
        try:
            batch = collate(examples)
        finally:
            DATA.pop("collate")
        spent = DATA.take()
        spent.pop(DATA.base, None)
        batch.production = spent
        return batch

    return wrapper


class TimedLoader:
    """The trainer's DataLoader, with ``next()`` charged to ``data_wait``; keeps each batch's
    production cost, shape and the wait for the first batch of each iterator."""

    def __init__(self, loader, sink: dict):
        self.loader, self.sink = loader, sink

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        start = time.perf_counter()
        CLOCK.push("data_wait")
        try:
            it = iter(self.loader)
        finally:
            CLOCK.pop("data_wait")
        first = True
        while True:
            CLOCK.push("data_wait")
            try:
                batch = next(it)
            except StopIteration:
                return
            finally:
                CLOCK.pop("data_wait")
            if first:
                self.sink["epoch_starts"].append(time.perf_counter() - start)
                first = False
            self.sink["batches"].append(dict(production=getattr(batch, "production", {}),
                                             utts=len(batch.utt_ids), samples=int(batch.waveforms.shape[1]),
                                             padded=int(batch.waveforms.numel()), tokens=int(batch.targets.shape[1]),
                                             audio=float(batch.waveform_lengths.sum())))
            yield batch


def instrument_trainer(trainer, sink: dict, missing: list) -> None:
    """Instance-level wrappers and hooks on a built trainer, its updater and its model."""
    from xtrans.train import trainer as trainer_module

    trainer.train_set._profiled = True
    if hasattr(trainer_module, "collate"):
        trainer_module.collate = timed_collate(trainer_module.collate)
    else:
        missing.append("xtrans.train.trainer.collate")
    loader = getattr(trainer, "_loader", None)
    if loader is None:
        missing.append("Trainer._loader")
    else:
        trainer._loader = lambda: TimedLoader(loader(), sink)
    wrap_attr(trainer, "_record", "logging", missing)
    for name in ("save", "validate", "average"):
        fn = getattr(trainer, name)

        def ended(*args, _fn=fn, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                sink["end_events"].append((_name, time.perf_counter() - start, trainer.state.step))

        setattr(trainer, name, timed(CLOCK, "checkpoint", ended, quiet=True))
    updater = getattr(trainer, "updater", None)
    if updater is None:
        missing.append("Trainer.updater")
    else:
        wrap_attr(updater, "update", "update_other", missing)
        wrap_attr(updater, "_forward", "forward_other", missing)
        backward = getattr(updater, "_backward", None)
        if backward is not None:

            def backward_settled(*args, **kwargs):
                try:
                    return backward(*args, **kwargs)
                finally:
                    BackwardSpan._settle()  # the spans of inputless parts end with the backward pass

            updater._backward = backward_settled
        wrap_attr(updater, "_backward", "backward", missing)
        wrap_attr(updater, "_optimizer_step", "optimizer_other", missing)
    trainer.optimizer.register_step_pre_hook(lambda *a: CLOCK.push("optimizer_step"))
    trainer.optimizer.register_step_post_hook(lambda *a: CLOCK.pop("optimizer_step"))

    model = trainer.model
    enc = model.encoder
    enc.register_forward_pre_hook(lambda *a: CLOCK.push("encoder_other"))
    enc.register_forward_hook(lambda *a: CLOCK.pop("encoder_other"))
    for name, stage in (("wave_norm", "wave_norm"), ("feature_extractor", "cnn"),
                        ("feature_projection", "feature_projection"), ("pos_conv", "pos_conv")):
        module = getattr(enc, name, None)
        if module is None:
            missing.append(f"encoder.{name}")
            continue
        hook_module(module, stage, stage)
    layers = getattr(enc, "layers", None)
    if layers is None:
        missing.append("encoder.layers")
    else:
        for layer in layers:
            hook_module(layer, "layers", "layers")
    hook_module(model.predictor, "predictor", "predictor")
    hook_module(model.joiner, "joiner", "joiner")
    if getattr(model, "ctc_head", None) is not None:
        hook_module(model.ctc_head, "ctc", "ctc", close_forward=False)  # F.ctc_loss ends the stage


# ----------------------------------------------------------------------------- the worker


def _mean_ms(rows, key, which: int) -> float:
    """Mean over ``rows`` of ``row[key][which]`` (0: wall, 1: CPU), seconds -> ms."""
    return 1e3 * sum(r[key][which] for r in rows if key in r) / max(len(rows), 1)


class UpdateRecorder:
    """``Trainer.fit``'s ``on_update``: at the end of each update, takes the clock; keeps the
    timed updates' stages and times, and runs the profiled updates under ``torch.profiler``."""

    def __init__(self, spec: dict):
        self.spec, self.done = spec, 0
        self.total = spec["warmup"] + spec["updates"] + spec["profile_updates"]
        self.updates, self.times, self.top_ops = [], [], []
        self.profiler = None
        self.started = time.perf_counter()
        self.last = (time.perf_counter(), time.process_time())  # the previous update's end: wall, CPU

    def __call__(self, record) -> None:
        import torch

        spent = CLOCK.take()
        self.done += 1
        n, spec = self.done, self.spec
        if spec["warmup"] < n <= spec["warmup"] + spec["updates"]:
            self.updates.append(dict(spent, skipped=record.skipped))
            self.times.append((CLOCK.last - self.last[0], CLOCK.last_cpu - self.last[1]))
        if n == spec["warmup"] + spec["updates"] and spec["profile_updates"]:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.__enter__()
            CLOCK.profiling = True
        elif n == self.total:
            self.stop_profiler()
        if n % 10 == 0 or n == self.total:
            print(f"[{spec['label']}] update {n}/{self.total} ({time.perf_counter() - self.started:.0f} s)",
                  file=sys.stderr, flush=True)
        CLOCK.take()  # this callback's own time counts nowhere
        self.last = (CLOCK.last, CLOCK.last_cpu)

    def stop_profiler(self) -> None:
        if self.profiler is not None:
            CLOCK.profiling = False
            self.profiler.__exit__(None, None, None)
            self.top_ops = top_operators(self.profiler, self.spec["profile_updates"])
            self.profiler = None


def worker(spec: dict) -> dict:
    """One configuration, in this process: build, train, time; the result as a dict (ms)."""
    import logging

    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from xtrans.bin.train import setup_logging
    from xtrans.config import load_config
    from xtrans.train.config import TrainConfig
    from xtrans.train.runtime import DistInfo
    from xtrans.train.trainer import Trainer

    missing = []
    instrument_library(missing)
    overrides = dict(spec["overrides"])
    cfg = load_config(spec["config"], TrainConfig, overrides=overrides)
    run_updates = cfg.training.max_updates  # of the full run, for amortising what it pays once
    if cfg.schedule.total_updates is None:  # the learning-rate schedule of the full run
        overrides["schedule.total_updates"] = cfg.training.max_updates
    recorder = UpdateRecorder(spec)
    overrides["training.max_updates"] = recorder.total
    cfg = load_config(spec["config"], TrainConfig, overrides=overrides)

    outdir = Path(tempfile.mkdtemp(prefix="profile_update_"))
    sink = dict(epoch_starts=[], batches=[], end_events=[])
    try:
        setup_logging(outdir, None, 0)
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)  # the console: warnings only
        build_start = time.perf_counter()
        trainer = Trainer(cfg, outdir, init=spec["init"], dist_info=DistInfo(), device=torch.device("cpu"))
        build_s = time.perf_counter() - build_start
        instrument_trainer(trainer, sink, missing)
        trainer.fit(recorder)
        batches_per_epoch = len(trainer.sampler)
    finally:
        recorder.stop_profiler()
        shutil.rmtree(outdir, ignore_errors=True)
    run_updates = run_updates or batches_per_epoch * cfg.training.max_epochs
    return summarise(spec, cfg, recorder, sink, batches_per_epoch, run_updates, build_s, missing,
                     sum(p.numel() for p in trainer.model.parameters()))

def top_operators(prof, num_updates: int, k: int = 15) -> list:
    """The ``k`` operators with the most self CPU time (ms per update); the stage ranges left out."""
    rows = [e for e in prof.key_averages() if not e.key.startswith("stage::")]
    rows.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [dict(name=e.key, self_ms=e.self_cpu_time_total / 1e3 / num_updates,
                 total_ms=e.cpu_time_total / 1e3 / num_updates, calls=e.count / num_updates) for e in rows[:k]]


def split(updates, which: int):
    """Per-update means (ms) of the stages and of the backward parts, wall (0) or CPU (1) time."""
    stages = {key: _mean_ms(updates, key, which) for key in STAGES if key != "backward"}
    parts = [p for p in BACKWARD_PARTS if p != "other"]
    parts += sorted({k[3:] for u in updates for k in u if k.startswith("bw:")} - set(parts))
    backward = {part: _mean_ms(updates, f"bw:{part}", which) for part in parts}
    backward["other"] = _mean_ms(updates, "backward", which)
    stages["backward"] = sum(backward.values())
    return {key: stages[key] for key in STAGES}, backward


def summarise(spec, cfg, recorder, sink, batches_per_epoch, run_updates, build_s, missing, params) -> dict:
    """The worker's result: per-update means (ms) of the stages, wall and CPU, and the rest."""
    updates, times = recorder.updates, recorder.times
    n = len(updates)
    stages, backward = split(updates, 0)
    stages_cpu, backward_cpu = split(updates, 1)
    unknown = sorted({k for u in updates for k in u if k not in STAGES and not k.startswith("bw:")
                      and k != "skipped"})
    a = cfg.optim.accum_grad  # batches per update
    measured = sink["batches"][a * spec["warmup"]:a * (spec["warmup"] + n)] or sink["batches"]
    kinds = sorted({k for b in measured for k in b["production"] if k.startswith("augment:")})
    keys = (*PRODUCTION_HEAD, *kinds, *PRODUCTION_TAIL)
    production = {k: _mean_ms([b["production"] for b in measured], k, 0) for k in keys}
    production_cpu = {k: _mean_ms([b["production"] for b in measured], k, 1) for k in keys}
    ends = defaultdict(list)
    for name, seconds, _ in sink["end_events"]:
        ends[name].append(1e3 * seconds)
    ck = cfg.checkpoint
    per_save = (1 / ck.save_interval_updates if ck.save_interval_updates else 0) + 1 / batches_per_epoch
    per_valid = (1 / ck.valid_interval_updates if ck.valid_interval_updates else 0) + 1 / batches_per_epoch
    first_wait = 1e3 * statistics.mean(sink["epoch_starts"]) if sink["epoch_starts"] else 0.0
    # the first batch: each epoch with loader workers (new processes), else once per run
    amortised = dict(epoch_start=first_wait / (batches_per_epoch if cfg.data.num_workers else run_updates),
                     validation=(statistics.mean(ends["validate"]) if ends["validate"] else 0.0) * per_valid,
                     checkpoint=(statistics.mean(ends["save"]) if ends["save"] else 0.0) * per_save)
    wall = [1e3 * t[0] for t in times] or [0.0]
    cpu = [1e3 * t[1] for t in times] or [0.0]
    mean = lambda rows, key: sum(r[key] for r in rows) / max(len(rows), 1)  # noqa: E731
    return dict(
        label=spec["label"], overrides=spec["variant"], threads=spec["threads"] or _torch_threads(),
        updates=n, warmup=spec["warmup"], profile_updates=spec["profile_updates"],
        skipped=sum(1 for u in updates if u["skipped"]), params_m=round(params / 1e6, 3),
        update_ms=statistics.mean(wall), median_ms=statistics.median(wall), min_ms=min(wall), max_ms=max(wall),
        update_cpu_ms=statistics.mean(cpu), stages=stages, stages_cpu=stages_cpu,
        backward=backward, backward_cpu=backward_cpu,
        attributed_ms=sum(v for k, v in stages.items() if k != "unattributed"),
        unknown_stages=unknown, unhooked=missing,
        production_ms_per_batch=production, production_cpu_ms_per_batch=production_cpu,
        batch=dict(utts=mean(measured, "utts"), longest_seconds=mean(measured, "samples") / cfg.data.sample_rate,
                   padded_seconds=mean(measured, "padded") / cfg.data.sample_rate,
                   audio_seconds=mean(measured, "audio") / cfg.data.sample_rate, tokens=mean(measured, "tokens")),
        num_workers=cfg.data.num_workers, batches_per_epoch=batches_per_epoch, run_updates=run_updates,
        epoch_start_ms=[1e3 * s for s in sink["epoch_starts"]],
        end_of_run_ms=dict(ends), amortised_ms=amortised,
        projected_ms=statistics.mean(wall) + sum(amortised.values()), build_s=build_s,
        top_ops=recorder.top_ops, load_avg=os.getloadavg())

def _torch_version() -> str:
    import torch

    return torch.__version__


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ----------------------------------------------------------------------------- data


def synth_corpus(root: Path, num_train: int) -> dict:
    """An eSpeak corpus and its BPE tokenizer under ``root`` (made once; reused when there)."""
    lang = root / "lang_bpe"
    if not (lang / "bpe.model").exists():
        print(f"synthesising {num_train} utterances of eSpeak speech into {root} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "xtrans.bin.synth_corpus", "--outdir", str(root), "--num_train",
                        str(num_train), "--num_dev", "30", "--num_test", "0", "--seed", "0", "--nj", "2"],
                       check=True)
        subprocess.run([sys.executable, "-m", "xtrans.bin.train_bpe", "--vocab-size", "64", "--normalizer", "upper",
                        str(root / "train" / "text"), str(lang)], check=True)
    return {"data.train_dir": str(root / "train"), "data.dev_dir": str(root / "dev"),
            "data.tokenizer": str(lang / "bpe.model")}


def dry_run_overrides(config: Path, root: Path) -> dict:
    """A tiny corpus and model for ``--dry-run``, and a bank of 2 simulated rooms instead of the conf's."""
    import yaml

    from xtrans.testing.train_fixtures import make_tiny_corpus, tiny_overrides

    corpus = make_tiny_corpus(root, num_train=60, num_dev=4)
    out = tiny_overrides(corpus)
    augment = (yaml.safe_load(config.read_text()).get("data") or {}).get("augment")
    if augment:
        out["data.augment"] = [dict(e, rooms=min(e["rooms"], 2)) if e.get("rooms") else e for e in augment]
    return out


def data_overrides(args, scratch: Path) -> tuple:
    """(overrides, init, description) of the data the run trains on."""
    if args.dry_run:
        return dry_run_overrides(Path(args.config), scratch), None, "tiny synthetic corpus (--dry-run)"
    init = args.init
    if args.recipe:
        recipe = Path(args.recipe).resolve()
        args.data = args.data or str(recipe / "dump" / "train_clean")
        args.dev = args.dev or str(recipe / "dump" / "dev_clean")
        args.tokenizer = args.tokenizer or str(recipe / "data" / "lang_bpe" / "bpe.model")
        pretrained = recipe / "exp" / "pretrained" / "encoder.pt"
        init = init or (str(pretrained) if pretrained.exists() else None)
    if args.data:
        if not args.tokenizer:
            raise SystemExit("--data: also give --tokenizer (the BPE model the data was prepared for)")
        out = {"data.train_dir": str(Path(args.data).resolve()), "data.tokenizer": str(Path(args.tokenizer).resolve()),
               "data.dev_dir": str(Path(args.dev).resolve()) if args.dev else None}
        return out, init, args.data
    root = Path(str(SYNTH_CORPUS).format(args.synth_utts))
    return synth_corpus(root, args.synth_utts), init, f"eSpeak corpus in {root}"


# ----------------------------------------------------------------------------- the driver


def run_worker(spec: dict) -> dict:
    """``spec`` in a fresh interpreter (its progress and warnings on stderr); its result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    try:
        proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(dict(spec, result=result_path))],
                              stdout=sys.stderr)
        if proc.returncode != 0:
            return dict(label=spec["label"], overrides=spec["variant"], threads=spec["threads"],
                        error=f"worker exit status {proc.returncode} (its output is above)")
        return json.loads(Path(result_path).read_text())
    finally:
        os.unlink(result_path)


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def _ratio(value, first) -> str:
    return "-" if value is None or not first else f"{value / first:.2f}"


def table(results: list) -> list:
    """The printed tables, as lines: the update, the amortised costs, the batch production, the top ops.

    Per configuration: wall ms, its share of the update (%) and CPU ms (all threads of the process);
    then, per configuration after the first, the ratios of wall and of CPU time to the first.
    """
    ok = [r for r in results if "error" not in r]
    lines = [f"{r['label']}: error: {r['error']}" for r in results if "error" in r]
    if not ok:
        return lines
    w = 46
    lines.append(f"{'':<{w}}" + "".join(f" {r['label'][:24]:>24}" for r in ok))
    head = f"{'stage (per update)':<{w}}" + "".join(f" {'ms':>9} {'%':>5} {'cpu ms':>8}" for _ in ok)
    head += "".join(f" {'ratio':>6} {'cpu':>6}" for _ in ok[1:])
    lines += [head, "-" * len(head)]

    def row(label, get, share=lambda r: r["update_ms"]):
        vals = [get(r) for r in ok]
        text = f"{label:<{w}}"
        for (wall, cpu), r in zip(vals, ok):
            text += f" {wall:>9.1f} {_pct(wall, share(r)):>5.1f} " + (f"{cpu:>8.1f}" if cpu is not None else f"{'':>8}")
        for wall, cpu in vals[1:]:
            text += f" {_ratio(wall, vals[0][0]):>6} {_ratio(cpu, vals[0][1]):>6}"
        return text.rstrip()

    for key, label in STAGES.items():
        lines.append(row(label, lambda r, k=key: (r["stages"][k], r["stages_cpu"][k])))
        if key == "backward":
            for part in dict.fromkeys(p for r in ok for p in r["backward"]):
                lines.append(row(f"  of which {part}", lambda r, p=part: (r["backward"].get(p, 0.0),
                                                                          r["backward_cpu"].get(p, 0.0))))
    lines.append(row("update (mean; the rows add up to it)", lambda r: (r["update_ms"], r["update_cpu_ms"])))
    lines.append(f"{'  median / min / max ms':<{w}}" + "".join(
        f" {r['median_ms']:>9.0f} / {r['min_ms']:.0f} / {r['max_ms']:.0f}" for r in ok))
    lines.append(row("  attributed to a stage", lambda r: (r["attributed_ms"], None)))
    lines.append(f"{'  CPU share (cpu ms / ms; threads used)':<{w}}" + "".join(
        f" {r['update_cpu_ms'] / max(r['update_ms'], 1e-9):>9.2f} {r['threads']:>5}{'':>9}" for r in ok))

    lines += ["", "amortised beside the update (ms per update; measured once per run):"]
    lines.append(row("  epoch start (loader workers, first batch)", lambda r: (r["amortised_ms"]["epoch_start"], None)))
    lines.append(row("  validation (each epoch / valid interval)", lambda r: (r["amortised_ms"]["validation"], None)))
    lines.append(row("  checkpoint (each epoch / save interval)", lambda r: (r["amortised_ms"]["checkpoint"], None)))
    lines.append(row("  projected ms per update of a full run", lambda r: (r["projected_ms"], None)))
    for r in ok:
        when = (f"each epoch (new loader worker processes): over its {r['batches_per_epoch']} batches"
                if r["num_workers"] else f"once per run (what the process caches, e.g. reverb's rooms): "
                                         f"over its {r['run_updates']} updates")
        lines.append(f"  [{r['label']}] first batch: {', '.join(f'{v:.0f}' for v in r['epoch_start_ms'])} ms, "
                     f"paid {when}; end of run: "
                     + ", ".join(f"{k} {statistics.mean(v):.0f} ms" for k, v in r["end_of_run_ms"].items()))

    keys = list(dict.fromkeys(k for r in ok for k in r["production_ms_per_batch"]))
    lines += ["", f"{'producing one batch, where it is made':<{w}}" + "".join(
        f" {('worker process' if r['num_workers'] else 'main process'):>24}" for r in ok)]
    for key in keys:
        label = key.replace("augment:", "augment: ").replace("_", " ")
        lines.append(row(f"  {label}", lambda r, k=key: (r["production_ms_per_batch"].get(k, 0.0),
                                                         r["production_cpu_ms_per_batch"].get(k, 0.0))))
    lines.append(row("  total (% of the update)", lambda r: (sum(r["production_ms_per_batch"].values()),
                                                             sum(r["production_cpu_ms_per_batch"].values()))))
    for r in ok:
        b = r["batch"]
        lines.append(f"  [{r['label']}] batch (means): {b['utts']:.1f} utterances of up to "
                     f"{b['longest_seconds']:.2f} s, "
                     f"{b['padded_seconds']:.1f} s padded, {b['audio_seconds']:.1f} s of it audio "
                     f"({_pct(b['audio_seconds'], b['padded_seconds']):.0f}%), U = {b['tokens']:.1f}; "
                     f"{r['params_m']:.2f}M parameters, {r['updates']} "
                     f"timed updates after {r['warmup']}; load average {r['load_avg'][0]:.1f}")
        if r["unhooked"] or r["unknown_stages"]:
            lines.append(f"  [{r['label']}] not hooked: {r['unhooked']}; unknown stages: {r['unknown_stages']}")
    for r in ok:
        if not r["top_ops"]:
            continue
        lines += ["", f"[{r['label']}] top {len(r['top_ops'])} operators by self CPU time "
                      f"(torch.profiler, mean of {r['profile_updates']} updates; ms per update):",
                  f"  {'operator':<48} {'self ms':>8} {'total ms':>9} {'calls':>6}"]
        for op in r["top_ops"]:
            lines.append(f"  {op['name'][:48]:<48} {op['self_ms']:>8.1f} {op['total_ms']:>9.1f} {op['calls']:>6.0f}")
    return lines

def variants(args, base: dict) -> list:
    """The configurations to run: ``--compare`` x ``--threads``."""
    from xtrans.bin.train import parse_overrides

    threads = [int(t) for t in args.threads.split(",")] if args.threads else [None]
    compare = args.compare or [""]
    out = []
    for items, t in itertools.product(compare, threads):
        extra = parse_overrides(items.split()) if items.strip() else {}
        label = " ".join(items.split()) or "as configured"
        if len(threads) > 1 or t:
            label = f"{label}, {t} thr" if items.strip() else f"{t} threads"
        out.append(dict(label=label, variant=extra, threads=t, overrides={**base, **extra}))
    return out


def write_results(out: str | Path, lines: list, result: dict, runs: list) -> None:
    """``result`` as JSON in ``out`` and the table ``lines`` beside it (``.txt``); exit status 1 when
    one of ``runs`` (the configurations) failed (also bench/train_procs.py's)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.txt').name}")
    if any("error" in r for r in runs):
        sys.exit(1)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The config and data options that :func:`data_overrides` reads (also bench/train_procs.py's)."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the stage config")
    parser.add_argument("--recipe", help="a recipe directory with dump/train_clean, dump/dev_clean, "
                                         "data/lang_bpe/bpe.model (exp/pretrained/encoder.pt: --init)")
    parser.add_argument("--data", help="training Kaldi directory (with utt2num_samples)")
    parser.add_argument("--dev", help="dev Kaldi directory (default: none with --data; no validation)")
    parser.add_argument("--tokenizer", help="the BPE model of --data")
    parser.add_argument("--init", help="transducer checkpoint or encoder file to start from (as --init of train)")
    parser.add_argument("--synth-utts", type=int, default=300, help="utterances of the eSpeak corpus without data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(parser)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="config overrides for every configuration, as xtrans.bin.train --set")
    parser.add_argument("--compare", nargs="+", metavar="'KEY=VALUE ...'",
                        help="configurations to compare, each a space-separated list of overrides")
    parser.add_argument("--threads", help="torch CPU threads, a comma list (1,2) to compare; default torch's")
    parser.add_argument("--updates", type=int, default=30, help="timed updates")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates before them")
    parser.add_argument("--profile-updates", type=int, default=3, help="updates under torch.profiler after them")
    parser.add_argument("--dry-run", action="store_true", help="tiny model and corpus, 4 updates: seconds")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "profile_update.json"))
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        spec = json.loads(args._worker)
        Path(spec["result"]).write_text(json.dumps(worker(spec)))
        return
    if args.dry_run:
        args.updates, args.warmup, args.profile_updates = min(args.updates, 4), min(args.warmup, 1), 1
    from xtrans.bin.train import parse_overrides

    scratch = Path(tempfile.mkdtemp(prefix="profile_update_data_"))
    try:
        base, init, data = data_overrides(args, scratch)
        base.update(parse_overrides(args.overrides))
        results = []
        for v in variants(args, base):
            spec = dict(v, config=str(Path(args.config).resolve()), init=init, warmup=args.warmup,
                        updates=args.updates, profile_updates=args.profile_updates)
            results.append(run_worker(spec))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [f"one training update of {os.path.relpath(args.config, REPO)} on {data}"
             f"{' from ' + init if init else ''}: CPU, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f} at the end"] + table(results)
    print("\n".join(lines))
    result = dict(
        benchmark="one training update of xtrans.bin.train's trainer, split into stages (ms per update)",
        config=os.path.relpath(args.config, REPO), data=data, init=init, dry_run=args.dry_run,
        cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), load_avg=os.getloadavg(),
        python=platform.python_version(), torch=_torch_version(), time=time.strftime("%Y-%m-%dT%H:%M:%S"),
        stages=STAGES, backward_parts=BACKWARD_PARTS, variants=results)
    write_results(args.out, lines, result, results)


if __name__ == "__main__":
    main()
