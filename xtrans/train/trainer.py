"""The training loop of one stage: AdamW, warm-up/decay, streaming masks, DDP, exact resume.

One update::

    micro-batches b_1..b_A (A = optim.accum_grad) of this rank
    N = utterances of all micro-batches on all ranks (one all-reduce)
    for each b_i:  loss_i = sum over utterances of (rnnt + ctc_weight * ctc) * W / N
                   backward(loss_i)             (DDP averages gradients over the W ranks)
    clip the global gradient norm; AdamW step; scheduler step

so the gradient of an update is that of the mean per-utterance loss over every utterance of
the update, whatever the split into ranks and micro-batches: a 2-process run equals a
1-process run with ``accum_grad=2`` on the union of the two ranks' batches.

Failures that do not stop training:
  * a micro-batch whose loss is not finite on some rank, or that runs out of memory in the
    forward pass, is skipped on every rank (a warning names its utterances);
  * an update whose gradient norm is not finite, or that runs out of memory in backward,
    is dropped (gradients zeroed, no optimizer or scheduler step);
  skipped micro-batches still consume their multi-chunk draw and sampler position, so a resumed
  run stays in step.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

from xtrans.config import save_config, to_dict
from xtrans.data.dataset import AsrDataset, Batch, collate
from xtrans.data.sampler import DurationBatchSampler
from xtrans.masks import StreamingConfig
from xtrans.models.config import build_model
from xtrans.models.transducer import Transducer
from xtrans.checkpoint import atomic_save, atomic_write_text, load_checkpoint, model_checkpoint
from xtrans.train.checkpoint import checkpoint_name, link_or_copy, load_init, prune, update_best
from xtrans.train.config import TrainConfig
from xtrans.train.multichunk import MultiChunkSampler
from xtrans.train.scheduler import WarmupDecayScheduler
from xtrans.train.state import TrainState, capture_rng, restore_rng, seed_everything

logger = logging.getLogger(__name__)


def is_oom(err: BaseException) -> bool:
    """True for a CUDA/CPU out-of-memory error."""
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError)
                                                       and "out of memory" in str(err))


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """From the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


@dataclass(frozen=True)
class UpdateRecord:
    """What one call of :meth:`Trainer.train_update` did (for ``steps.jsonl``, the log, the progress bar).

    Attributes:
        skipped: True when the update was dropped (no optimizer or scheduler step).
        chunks: the chunk size (frames) drawn for each micro-batch; ``None`` = full attention.
        audio: seconds of audio in the update (this rank's when skipped, all ranks' otherwise).
        loss: mean per-utterance loss over all ranks (``None`` when skipped).
        utts: utterances that contributed gradients, over all ranks.
        grad_norm: global gradient norm before clipping (``None`` when skipped).
        lrs: learning rate per parameter group, as used by the step.
        encoder_frozen: whether the encoder was frozen for this update.
        step: the update count after this update (set by :meth:`Trainer.fit`).
        epoch: the 0-based epoch (set by :meth:`Trainer.fit`).
    """

    skipped: bool
    chunks: List[Optional[int]]
    audio: float
    loss: Optional[float] = None
    utts: int = 0
    grad_norm: Optional[float] = None
    lrs: Dict[str, float] = field(default_factory=dict)
    encoder_frozen: bool = False
    step: Optional[int] = None
    epoch: Optional[int] = None

    def __getitem__(self, name: str):
        """``record["loss"]`` reads the field, like the dict :meth:`Trainer.train_update` used to return."""
        return getattr(self, name)


@dataclass(frozen=True)
class MicroBatchResult:
    """A micro-batch whose gradients were accumulated: its loss summed over its ``utts`` utterances."""

    loss_sum: float
    utts: int


@dataclass(frozen=True)
class MicroBatchSkip:
    """A micro-batch that contributed no gradient.

    Attributes:
        reason: why (logged with its utterances).
        drop_update: True when the gradients accumulated so far are lost too (out of memory
            in backward), so the whole update is dropped.
    """

    reason: str
    drop_update: bool = False


def split_param_groups(model: Transducer, cfg: TrainConfig) -> List[dict]:
    """AdamW groups: encoder / heads (predictor, joiner, CTC) x with / without weight decay.

    Biases and normalisation weights (1-D tensors) get no weight decay. Parameters frozen for
    the whole run (e.g. the CNN with ``freeze_feature_extractor``) are left out.
    """
    groups = []
    for name, module, lr in (("encoder", model.encoder, cfg.optim.encoder_lr),
                             ("heads", None, cfg.optim.head_lr)):
        if module is not None:
            params = [p for p in module.parameters() if p.requires_grad]
        else:
            enc = {id(p) for p in model.encoder.parameters()}
            params = [p for p in model.parameters() if p.requires_grad and id(p) not in enc]
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        groups.append(dict(name=f"{name}", params=decay, lr=lr, weight_decay=cfg.optim.weight_decay))
        groups.append(dict(name=f"{name}_no_decay", params=no_decay, lr=lr, weight_decay=0.0))
    return [g for g in groups if g["params"]]


class Trainer:
    """Trains one stage.

    Args:
        cfg: the stage config.
        outdir: run directory (checkpoints, ``train.log``, ``steps.jsonl``, ``tensorboard/``).
        init: transducer checkpoint or encoder file to start from (ignored on resume).
        resume: checkpoint to continue from exactly.
        dist_info: rank and world size (a process group must be initialised when > 1).
        device: where to train (default: ``cuda:<local_rank>`` when CUDA is available, else CPU).
    """

    def __init__(self, cfg: TrainConfig, outdir: str | os.PathLike, *, init: Optional[str] = None,
                 resume: Optional[str] = None, dist_info: DistInfo = DistInfo(),
                 device: Optional[torch.device] = None):
        from xtrans.tokenizer import Tokenizer

        self.cfg = cfg
        self.outdir = Path(outdir)
        self.dist = dist_info
        if device is None:
            device = torch.device(f"cuda:{dist_info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        self.device = device
        self.outdir.mkdir(parents=True, exist_ok=True)
        tcfg = cfg.training
        if tcfg.precision != "fp32" and device.type != "cuda":
            logger.warning("precision %s needs CUDA; training in fp32 on %s", tcfg.precision, device)
        self.amp_dtype = None if (tcfg.precision == "fp32" or device.type != "cuda") else (
            torch.bfloat16 if tcfg.precision == "bf16" else torch.float16)

        seed_everything(tcfg.seed)
        self.tokenizer = Tokenizer(cfg.data.tokenizer)
        d = cfg.data
        self.train_set = AsrDataset(d.train_dir, self.tokenizer, sample_rate=d.sample_rate,
                                    augment=d.augment_entries(), seed=tcfg.seed)
        self.sampler = DurationBatchSampler(self.train_set.durations(), d.max_seconds, num_buckets=d.num_buckets,
                                            shuffle=True, seed=tcfg.seed, rank=dist_info.rank,
                                            world_size=dist_info.world_size, max_batch_size=d.max_batch_size)
        self.dev_set = None if d.dev_dir is None else AsrDataset(d.dev_dir, self.tokenizer,
                                                                  sample_rate=d.sample_rate)

        self.model = build_model(cfg.model, vocab_size=self.tokenizer.vocab_size)
        if init is not None and resume is None:
            load_init(self.model, init)
        self.model.to(device)
        self._encoder_trainable = [p for p in self.model.encoder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(split_param_groups(self.model, cfg), betas=cfg.optim.betas,
                                           eps=cfg.optim.eps)
        s = cfg.schedule
        self.scheduler = WarmupDecayScheduler(self.optimizer, warmup_updates=s.warmup_updates, decay=s.decay,
                                              total_updates=s.total_updates or tcfg.max_updates,
                                              min_lr_ratio=s.min_lr_ratio)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.mc_sampler = (MultiChunkSampler(cfg.mask.multi_chunk, seed=tcfg.seed)
                           if cfg.mask.multi_chunk is not None else None)
        self.state = TrainState()
        if resume is not None:
            self._load_resume(resume)
        # per-rank training randomness (dropout, layer drop) after the shared model init
        if resume is None:
            seed_everything(tcfg.seed + 1000 * dist_info.rank)

        self.ddp = None
        if dist_info.world_size > 1:
            find_unused = tcfg.find_unused_parameters
            if find_unused is None:
                find_unused = tcfg.freeze_encoder_updates > 0 or cfg.model.encoder.layer_drop > 0
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=find_unused)
        self.writer = None
        self._steps_file = None
        self._window = dict(loss=0.0, utts=0, audio=0.0, time=time.time(), updates=0)
        self._since_save = [0.0, 0]

    # ------------------------------------------------------------------ resume

    def _load_resume(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState.from_state_dict(ckpt["train_state"])
        if self.state.sampler is not None:
            self.sampler.load_state_dict(self.state.sampler)
        if self.mc_sampler is not None and self.state.multi_chunk is not None:
            self.mc_sampler.load_state_dict(self.state.multi_chunk)
        if ckpt.get("config") != to_dict(self.cfg):
            old, new = ckpt.get("config") or {}, to_dict(self.cfg)
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            logger.warning("resuming %s with a config that differs in section(s) %s", path, diff)
        rngs = self.state.rng
        if len(rngs) != self.dist.world_size:
            logger.warning("checkpoint holds random states of %d ranks, running with %d: "
                           "random draws will not continue exactly", len(rngs), self.dist.world_size)
        if rngs:
            restore_rng(rngs[min(self.dist.rank, len(rngs) - 1)])
        logger.info("resumed from %s at update %d (epoch %d, batch %d)", path, self.state.step,
                    self.state.epoch, self.state.batches_in_epoch)

    # ------------------------------------------------------------------ helpers

    def _all_reduce(self, values: List[float], op=None) -> List[float]:
        if self.dist.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t.tolist()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def _set_encoder_frozen(self, frozen: bool) -> None:
        for p in self._encoder_trainable:
            p.requires_grad_(not frozen)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _streaming_for_batch(self) -> Optional[StreamingConfig]:
        if self.mc_sampler is not None:
            return self.mc_sampler.draw()
        return self.cfg.mask.fixed()

    def current_lrs(self) -> Dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    # ------------------------------------------------------------------ one update

    def train_update(self, micro: List[Batch]) -> UpdateRecord:
        """One optimizer update on this rank's micro-batches (see the module docstring)."""
        model = self.ddp or self.model
        model.train()
        frozen = self.state.step < self.cfg.training.freeze_encoder_updates
        self._set_encoder_frozen(frozen)
        total_utts = self._all_reduce([float(sum(len(b.utt_ids) for b in micro))])[0]
        scale = self.dist.world_size / max(total_utts, 1.0)
        loss_sum, used_utts, grads_made, audio, chunks, last_skipped = 0.0, 0, 0, 0.0, [], False
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(micro):
            streaming = self._streaming_for_batch()
            chunks.append(None if streaming is None else streaming.chunk_size)
            audio += float(batch.waveform_lengths.sum()) / self.cfg.data.sample_rate
            last = i == len(micro) - 1
            result = self._forward_backward(model, batch.to(self.device), streaming, scale, last)
            if isinstance(result, MicroBatchSkip):
                if result.drop_update:
                    return UpdateRecord(skipped=True, chunks=chunks, audio=audio)
                last_skipped = last
                continue
            grads_made += 1
            loss_sum += result.loss_sum
            used_utts += result.utts
        if grads_made == 0:
            return UpdateRecord(skipped=True, chunks=chunks, audio=audio)
        if self.ddp is not None and last_skipped:
            self._sync_grads_manually()  # the synchronising (last) micro-batch was skipped
        lrs = self.current_lrs()
        grad_norm = self._optimizer_step(micro, frozen)
        if grad_norm is None:
            return UpdateRecord(skipped=True, chunks=chunks, audio=audio)
        totals = self._all_reduce([loss_sum, float(used_utts), audio])
        return UpdateRecord(skipped=False, chunks=chunks, audio=totals[2], loss=totals[0] / max(totals[1], 1.0),
                            utts=int(totals[1]), grad_norm=grad_norm, lrs=lrs, encoder_frozen=frozen)

    def _forward_backward(self, model: nn.Module, batch: Batch, streaming: Optional[StreamingConfig],
                          scale: float, last: bool) -> Union[MicroBatchResult, MicroBatchSkip]:
        """Accumulates one micro-batch's gradients (its loss weighted by ``B * scale``), or skips it.

        A micro-batch that is bad on any rank (non-finite loss, out of memory in the forward pass)
        is skipped on every rank. DDP synchronises gradients on the ``last`` micro-batch only.
        """
        sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
        with sync:
            out, reason = self._forward(model, batch, streaming)
            bad = self._all_reduce([1.0 if reason else 0.0],
                                   op=dist.ReduceOp.MAX if self.dist.world_size > 1 else None)[0]
            if bad:
                why = reason or "a bad micro-batch on another rank"
                logger.warning("update %d: skipping micro-batch (%s); utterances: %s", self.state.step + 1,
                               why, " ".join(batch.utt_ids))
                self.state.skipped_batches += 1
                return MicroBatchSkip(why)
            B = len(batch.utt_ids)
            if not self._backward(out.loss * (B * scale), batch):
                return MicroBatchSkip("out of memory in backward", drop_update=True)
            return MicroBatchResult(loss_sum=float(out.loss.detach()) * B, utts=B)

    def _forward(self, model: nn.Module, batch: Batch, streaming: Optional[StreamingConfig]):
        """The forward pass -> ``(output, None)``, or ``(output or None, reason)`` when it must be skipped."""
        try:
            with self._autocast():
                out = model(batch.waveforms, batch.waveform_lengths, batch.targets,
                            batch.target_lengths, streaming=streaming, updates=self.state.step)
            if not bool(torch.isfinite(out.loss)):
                return out, f"non-finite loss {float(out.loss.detach())}"
            return out, None
        except Exception as err:
            if not is_oom(err):
                raise
            self._free_memory()
            return None, "out of memory in the forward pass"

    def _backward(self, loss: torch.Tensor, batch: Batch) -> bool:
        """Backward of ``loss``; False (gradients zeroed, a warning logged) when it runs out of memory."""
        try:
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            return True
        except Exception as err:
            if not is_oom(err):
                raise
            logger.warning("update %d: out of memory in backward; dropping the update; utterances: %s",
                           self.state.step + 1, " ".join(batch.utt_ids))
            self.optimizer.zero_grad(set_to_none=True)
            self._free_memory()
            self.state.skipped_batches += 1
            return False

    def _optimizer_step(self, micro: List[Batch], frozen: bool) -> Optional[float]:
        """Clips the accumulated gradients and steps optimizer and scheduler; returns the gradient norm.

        Returns ``None`` (gradients zeroed, no step, a warning naming the utterances) when the
        gradient norm is not finite.
        """
        if frozen:
            for p in self._encoder_trainable:
                p.grad = None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.cfg.optim.grad_clip
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf")))
        if not math.isfinite(grad_norm):
            logger.warning("update %d: non-finite gradient norm %s; dropping the update; utterances: %s",
                           self.state.step + 1, grad_norm, " ".join(u for b in micro for u in b.utt_ids))
            self.optimizer.zero_grad(set_to_none=True)
            self.state.skipped_batches += len(micro)
            if self.scaler is not None:
                self.scaler.update()
            return None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _sync_grads_manually(self) -> None:
        for p in self.model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.dist.world_size

    def _free_memory(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Dev loss (mean RNN-T NLL per utterance) under the stage's validation mask, all ranks.

        Also dev WER (greedy search, lazily imported) when ``checkpoint.best_metric`` is ``dev_wer``.
        """
        if self.dev_set is None:
            return {}
        model = self.model
        model.eval()
        d = self.cfg.data
        sampler = DurationBatchSampler(self.dev_set.durations(), d.dev_max_seconds or d.max_seconds,
                                       num_buckets=1, shuffle=False, max_batch_size=d.max_batch_size)
        batches = list(iter(sampler))[self.dist.rank::self.dist.world_size]
        streaming = self.cfg.mask.for_validation()
        nll, utts, tokens = 0.0, 0, 0
        want_wer = self.cfg.checkpoint.best_metric == "dev_wer"
        errors, words, decoded = 0, 0, 0
        max_wer_utts = self.cfg.checkpoint.wer_max_utts
        for idx in batches:
            batch = collate([self.dev_set[i] for i in idx]).to(self.device)
            with self._autocast():
                out = model(batch.waveforms, batch.waveform_lengths, batch.targets, batch.target_lengths,
                            streaming=streaming)
            rnnt = out.rnnt.float()
            finite = torch.isfinite(rnnt)
            if not bool(finite.all()):
                logger.warning("dev: non-finite loss for %s; left out",
                               " ".join(u for u, f in zip(batch.utt_ids, finite.tolist()) if not f))
            nll += float(rnnt[finite].sum())
            utts += int(finite.sum())
            tokens += int(batch.target_lengths[finite].sum())
            if want_wer and (max_wer_utts is None or decoded < max_wer_utts):
                e, w = self._batch_word_errors(batch, streaming)
                errors, words, decoded = errors + e, words + w, decoded + len(batch.utt_ids)
        nll, utts, tokens, errors, words = self._all_reduce([nll, float(utts), float(tokens), float(errors),
                                                             float(words)])
        result = {"dev_loss": nll / max(utts, 1.0), "dev_loss_per_token": nll / max(tokens, 1.0)}
        if want_wer:
            result["dev_wer"] = 100.0 * errors / max(words, 1.0)
        return result

    def _batch_word_errors(self, batch: Batch, streaming: Optional[StreamingConfig]):
        """Word errors and reference words of a dev batch by greedy search (xtrans.search.greedy)."""
        from xtrans.scoring.wer import align
        from xtrans.train.dev_decode import greedy_hypotheses

        hyps = greedy_hypotheses(self.model, batch.waveforms, batch.waveform_lengths, streaming)
        errors = words = 0
        for b, hyp in enumerate(hyps):
            ref = self.tokenizer.decode(batch.targets[b, : int(batch.target_lengths[b])].tolist()).split()
            errors += align(ref, self.tokenizer.decode(hyp).split()).counts.errors
            words += len(ref)
        return errors, words

    # ------------------------------------------------------------------ checkpoints

    def save(self, metrics: Dict[str, float]) -> None:
        """Writes ``ckpt_step<N>.pt`` (rank 0), updates best/last lists, ``best.pt``, ``latest.txt``."""
        st = self.state
        name = checkpoint_name(st.step)
        self._since_save = [0.0, 0]
        # the loop's own position: a prefetching DataLoader may already have moved the sampler on
        st.sampler = dict(self.sampler.state_dict(), epoch=st.epoch, position=st.batches_in_epoch)
        st.multi_chunk = None if self.mc_sampler is None else self.mc_sampler.state_dict()
        rng = capture_rng()
        if self.dist.world_size > 1:
            gathered = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng)
            st.rng = gathered
        else:
            st.rng = [rng]
        ck = self.cfg.checkpoint
        is_best = False
        metric = ck.best_metric
        score = metrics.get(metric)
        if score is None and self.dev_set is None:
            score = metrics.get("train_loss")
        if score is not None and not any(e[1] == name for e in st.best):
            is_best = update_best(st.best, score, name, ck.keep_best)
        if name not in st.last:
            st.last.append(name)
        del st.last[:-ck.keep_last]
        if self.dist.is_main:
            atomic_save({**model_checkpoint(self.model), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "scaler": None if self.scaler is None else self.scaler.state_dict(),
                         "config": to_dict(self.cfg), "train_state": st.state_dict(),
                         "tokenizer": str(Path(self.cfg.data.tokenizer).resolve()),
                         "metrics": dict(metrics)}, self.outdir / name)
            atomic_write_text(name + "\n", self.outdir / "latest.txt")
            if st.best:
                link_or_copy(self.outdir / st.best[0][1], self.outdir / "best.pt")
            deleted = prune(self.outdir, set(st.last) | {e[1] for e in st.best})
            logger.info("saved %s%s%s", name, " (best so far)" if is_best else "",
                        f"; removed {', '.join(deleted)}" if deleted else "")
        if self.dist.world_size > 1:
            dist.barrier()

    def average(self) -> None:
        """``average.pt`` from the ``checkpoint.average`` best checkpoints (rank 0)."""
        from xtrans.train.checkpoint import average_checkpoints

        k = self.cfg.checkpoint.average
        if k <= 0 or not self.dist.is_main or not self.state.best:
            return
        paths = [self.outdir / name for _, name in self.state.best[:k]]
        average_checkpoints(paths, self.outdir / "average.pt")

    # ------------------------------------------------------------------ logging

    def _open_logs(self) -> None:
        if not self.dist.is_main:
            return
        self._steps_file = open(self.outdir / "steps.jsonl", "a", encoding="utf-8")
        if self.cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.outdir / "tensorboard"), purge_step=self.state.step + 1)

    def _close_logs(self) -> None:
        if self._steps_file is not None:
            self._steps_file.close()
            self._steps_file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _record(self, record: UpdateRecord) -> None:
        """Writes an update to ``steps.jsonl`` and TensorBoard, and logs the window every ``log_interval``."""
        st = self.state
        if not self.dist.is_main:
            return
        entry = {"step": st.step, "epoch": st.epoch, "skipped": record.skipped, "chunk_sizes": record.chunks}
        if not record.skipped:
            entry.update(loss=record.loss, grad_norm=record.grad_norm, utts=record.utts,
                         lr_encoder=record.lrs.get("encoder", 0.0),
                         lr_head=record.lrs.get("heads", 0.0), encoder_frozen=record.encoder_frozen)
        self._steps_file.write(json.dumps(entry) + "\n")
        self._steps_file.flush()
        if record.skipped:
            return
        w = self._window
        w["loss"] += record.loss
        w["updates"] += 1
        w["audio"] += record.audio
        if self.writer is not None:
            self.writer.add_scalar("train/loss", record.loss, st.step)
            self.writer.add_scalar("train/grad_norm", record.grad_norm, st.step)
            for name, lr in record.lrs.items():
                self.writer.add_scalar(f"lr/{name}", lr, st.step)
        if st.step % self.cfg.logging.log_interval == 0:
            self._log_window(record)

    def _log_window(self, record: UpdateRecord) -> None:
        """The progress line: mean loss and audio throughput since the previous line."""
        st, w = self.state, self._window
        elapsed = max(time.time() - w["time"], 1e-9)
        chunks = sorted(set(record.chunks), key=lambda c: -1 if c is None else c)
        logger.info("step %d epoch %d loss %.4f lr %.3g/%.3g grad_norm %.3f audio_h/s %.3g chunk %s%s",
                    st.step, st.epoch + 1, w["loss"] / w["updates"], record.lrs.get("encoder", 0.0),
                    record.lrs.get("heads", 0.0), record.grad_norm, w["audio"] / 3600 / elapsed,
                    ",".join("full" if c is None else str(c) for c in chunks),
                    " (encoder frozen)" if record.encoder_frozen else "")
        self._window = dict(loss=0.0, utts=0, audio=0.0, time=time.time(), updates=0)

    def _log_metrics(self, metrics: Dict[str, float]) -> None:
        if not metrics or not self.dist.is_main:
            return
        logger.info("step %d epoch %d %s", self.state.step, self.state.epoch + 1,
                    " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"dev/{k}", v, self.state.step)
            self.writer.flush()
        with open(self.outdir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.state.step, "epoch": self.state.epoch, **metrics}) + "\n")

    # ------------------------------------------------------------------ the loop

    def _loader(self):
        # a private generator: creating a loader iterator must not consume the global torch RNG
        return torch.utils.data.DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate,
                                           num_workers=self.cfg.data.num_workers,
                                           pin_memory=self.device.type == "cuda",
                                           generator=torch.Generator().manual_seed(self.cfg.training.seed))

    def fit(self, on_update: Optional[Callable[[UpdateRecord], None]] = None) -> TrainState:
        """Trains until ``max_epochs`` or ``max_updates``; returns the final state.

        Args:
            on_update: called after every update with its record, ``step`` and ``epoch`` set
                (the CLI's progress bar).
        """
        st = self.state
        self._start_fit()
        try:
            while st.epoch < self.cfg.training.max_epochs and not self._update_limit_reached():
                num_batches = self._start_epoch()
                self._train_epoch(num_batches, on_update)
                self._finish_epoch_or_run(num_batches)
            self.average()
            logger.info("finished at update %d, epoch %d; %.2f h of audio; %d micro-batches skipped",
                        st.step, st.epoch, st.audio_seconds / 3600, st.skipped_batches)
        finally:
            self._close_logs()
        return st

    def _start_fit(self) -> None:
        """Writes the run's ``config.yaml``, opens the logs and logs what is trained."""
        if self.dist.is_main:
            save_config(self.cfg, self.outdir / "config.yaml")
        self._open_logs()
        n_params = sum(p.numel() for p in self.model.parameters())
        logger.info("training %s: %.2fM parameters, mask %s, %d rank(s), device %s, start at update %d",
                    self.outdir, n_params / 1e6, self._describe_mask(), self.dist.world_size, self.device,
                    self.state.step)

    def _update_limit_reached(self) -> bool:
        max_updates = self.cfg.training.max_updates
        return max_updates is not None and self.state.step >= max_updates

    def _start_epoch(self) -> int:
        """Positions the data at the state's epoch and batch (mid-epoch on resume); returns the epoch's batches."""
        st = self.state
        self.train_set.set_epoch(st.epoch)
        if st.batches_in_epoch == 0:
            self.sampler.set_epoch(st.epoch)
        else:
            self.sampler.epoch, self.sampler.position = st.epoch, st.batches_in_epoch
        return len(self.sampler)  # before iterating: a prefetching loader moves the sampler on

    def _train_epoch(self, num_batches: int, on_update: Optional[Callable[[UpdateRecord], None]]) -> None:
        """Updates until the epoch's data or the update budget runs out, validating and saving at intervals."""
        st = self.state
        it = iter(self._loader())
        while not self._update_limit_reached():
            micro = list(itertools.islice(it, self.cfg.optim.accum_grad))
            if not micro:
                break
            st.batches_in_epoch += len(micro)
            record = self._count_update(micro)
            if on_update is not None:
                on_update(record)
            if record.skipped:
                continue
            if st.batches_in_epoch >= num_batches or self._update_limit_reached():
                break  # validated and saved by _finish_epoch_or_run
            self._validate_and_save_at_intervals()

    def _count_update(self, micro: List[Batch]) -> UpdateRecord:
        """One update, counted in the run state and the logs; returns its record with step and epoch."""
        st = self.state
        record = self.train_update(micro)
        st.audio_seconds += record.audio
        if not record.skipped:
            st.step += 1
            self._since_save[0] += record.loss
            self._since_save[1] += 1
        self._record(record)
        return replace(record, step=st.step, epoch=st.epoch)

    def _validate_and_save_at_intervals(self) -> None:
        st, ck = self.state, self.cfg.checkpoint
        metrics = {}
        if ck.valid_interval_updates and st.step % ck.valid_interval_updates == 0:
            metrics = self.validate()
            self._log_metrics(metrics)
        if ck.save_interval_updates and st.step % ck.save_interval_updates == 0:
            self.save(dict(metrics, train_loss=self._last_loss()))

    def _finish_epoch_or_run(self, num_batches: int) -> None:
        """Validates and saves at the end of an epoch (then moves to the next) or of the update budget."""
        st = self.state
        if st.batches_in_epoch >= num_batches:
            logger.info("epoch %d done at update %d", st.epoch + 1, st.step)
            metrics = self.validate()
            self._log_metrics(metrics)
            st.epoch += 1
            st.batches_in_epoch = 0
            self.sampler.set_epoch(st.epoch)
            self.save(dict(metrics, train_loss=self._last_loss()))
        elif self._update_limit_reached():
            metrics = self.validate()
            self._log_metrics(metrics)
            self.save(dict(metrics, train_loss=self._last_loss()))

    def _last_loss(self) -> Optional[float]:
        """Mean training loss of the updates since the previous checkpoint (``best.pt`` without dev data)."""
        total, n = self._since_save
        return total / n if n else None

    def _describe_mask(self) -> str:
        m = self.cfg.mask
        if m.multi_chunk is not None:
            mc = m.multi_chunk
            sizes = mc.chunk_sizes if mc.chunk_sizes is not None else f"{mc.chunk_range[0]}..{mc.chunk_range[1]}"
            return f"multi-chunk {sizes} frames, left {mc.left_context}, sinks {mc.num_sinks}"
        fixed = m.fixed()
        return "full attention" if fixed is None else fixed.describe()
