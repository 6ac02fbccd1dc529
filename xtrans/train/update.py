"""One optimizer update from a rank's micro-batches: loss weighting, skips and drops.

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
import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

from xtrans.data.dataset import Batch
from xtrans.masks import StreamingConfig
from xtrans.train.build import TrainerParts
from xtrans.train.config import TrainConfig
from xtrans.train.runtime import Runtime

logger = logging.getLogger(__name__)


def is_oom(err: BaseException) -> bool:
    """True for a CUDA/CPU out-of-memory error."""
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError)
                                                       and "out of memory" in str(err))


@dataclass(frozen=True)
class UpdateRecord:
    """What one update did (for ``steps.jsonl``, the log, the progress bar).

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


def current_lrs(optimizer: torch.optim.Optimizer) -> Dict[str, float]:
    """The learning rate of each parameter group, by the group's ``name`` (else its index)."""
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}


class Updater:
    """Makes the optimizer updates of a run (see the module docstring).

    Args:
        cfg: the stage config (mask, encoder freezing, clipping, sample rate).
        parts: model, optimizer, scheduler, scaler, multi-chunk sampler; ``parts.state`` counts
            the skipped micro-batches and gives the update number.
        runtime: rank, device and autocast dtype.
        ddp: ``parts.model`` in DistributedDataParallel, in a multi-process run.
    """

    def __init__(self, cfg: TrainConfig, parts: TrainerParts, runtime: Runtime,
                 ddp: Optional[nn.parallel.DistributedDataParallel] = None):
        self.cfg, self.parts, self.runtime, self.ddp = cfg, parts, runtime, ddp
        # what encoder freezing freezes: the encoder's parameters that are trained at all
        self.encoder_trainable = [p for p in parts.model.encoder.parameters() if p.requires_grad]

    def update(self, micro: List[Batch]) -> UpdateRecord:
        """One optimizer update on this rank's micro-batches."""
        model = self.ddp or self.parts.model
        model.train()
        frozen = self.parts.state.step < self.cfg.training.freeze_encoder_updates
        for p in self.encoder_trainable:
            p.requires_grad_(not frozen)
        total_utts = self.runtime.all_reduce([float(sum(len(b.utt_ids) for b in micro))])[0]
        scale = self.runtime.dist.world_size / max(total_utts, 1.0)
        loss_sum, used_utts, grads_made, audio, chunks, last_skipped = 0.0, 0, 0, 0.0, [], False
        self.parts.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(micro):
            streaming = self._streaming_for_batch()
            chunks.append(None if streaming is None else streaming.chunk_size)
            audio += float(batch.waveform_lengths.sum()) / self.cfg.data.sample_rate
            last = i == len(micro) - 1
            result = self.forward_backward(model, batch.to(self.runtime.device), streaming, scale, last)
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
        lrs = current_lrs(self.parts.optimizer)
        grad_norm = self._optimizer_step(micro, frozen)
        if grad_norm is None:
            return UpdateRecord(skipped=True, chunks=chunks, audio=audio)
        totals = self.runtime.all_reduce([loss_sum, float(used_utts), audio])
        return UpdateRecord(skipped=False, chunks=chunks, audio=totals[2], loss=totals[0] / max(totals[1], 1.0),
                            utts=int(totals[1]), grad_norm=grad_norm, lrs=lrs, encoder_frozen=frozen)

    def _streaming_for_batch(self) -> Optional[StreamingConfig]:
        if self.parts.multi_chunk is not None:
            return self.parts.multi_chunk.draw()
        return self.cfg.mask.fixed()

    def forward_backward(self, model: nn.Module, batch: Batch, streaming: Optional[StreamingConfig],
                         scale: float, last: bool) -> Union[MicroBatchResult, MicroBatchSkip]:
        """Accumulates one micro-batch's gradients (its loss weighted by ``B * scale``), or skips it.

        A micro-batch that is bad on any rank (non-finite loss, out of memory in the forward pass)
        is skipped on every rank. DDP synchronises gradients on the ``last`` micro-batch only.
        """
        sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
        with sync:
            out, reason = self._forward(model, batch, streaming)
            if self.runtime.all_reduce([1.0 if reason else 0.0], op="max")[0]:
                why = reason or "a bad micro-batch on another rank"
                logger.warning("update %d: skipping micro-batch (%s); utterances: %s",
                               self.parts.state.step + 1, why, " ".join(batch.utt_ids))
                self.parts.state.skipped_batches += 1
                return MicroBatchSkip(why)
            B = len(batch.utt_ids)
            if not self._backward(out.loss * (B * scale), batch):
                return MicroBatchSkip("out of memory in backward", drop_update=True)
            return MicroBatchResult(loss_sum=float(out.loss.detach()) * B, utts=B)

    def _forward(self, model: nn.Module, batch: Batch, streaming: Optional[StreamingConfig]):
        """The forward pass -> ``(output, None)``, or ``(output or None, reason)`` when it must be skipped."""
        try:
            with self.runtime.autocast():
                out = model(batch.waveforms, batch.waveform_lengths, batch.targets,
                            batch.target_lengths, streaming=streaming, updates=self.parts.state.step)
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
            if self.parts.scaler is not None:
                self.parts.scaler.scale(loss).backward()
            else:
                loss.backward()
            return True
        except Exception as err:
            if not is_oom(err):
                raise
            logger.warning("update %d: out of memory in backward; dropping the update; utterances: %s",
                           self.parts.state.step + 1, " ".join(batch.utt_ids))
            self._free_memory()
            self.parts.state.skipped_batches += 1
            return False

    def _optimizer_step(self, micro: List[Batch], frozen: bool) -> Optional[float]:
        """Clips the accumulated gradients and steps optimizer and scheduler; returns the gradient norm.

        Returns ``None`` (gradients zeroed, no step, a warning naming the utterances) when the
        gradient norm is not finite.
        """
        optimizer, scaler = self.parts.optimizer, self.parts.scaler
        if frozen:
            for p in self.encoder_trainable:
                p.grad = None
        if scaler is not None:
            scaler.unscale_(optimizer)
        params = [p for p in self.parts.model.parameters() if p.grad is not None]
        clip = self.cfg.optim.grad_clip
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf")))
        if not math.isfinite(grad_norm):
            logger.warning("update %d: non-finite gradient norm %s; dropping the update; utterances: %s",
                           self.parts.state.step + 1, grad_norm, " ".join(u for b in micro for u in b.utt_ids))
            optimizer.zero_grad(set_to_none=True)
            self.parts.state.skipped_batches += len(micro)
            if scaler is not None:
                scaler.update()
            return None
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self.parts.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _sync_grads_manually(self) -> None:
        for p in self.parts.model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.runtime.dist.world_size

    def _free_memory(self) -> None:
        self.parts.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
