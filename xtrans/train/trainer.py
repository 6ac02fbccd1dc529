"""The training loop of one stage: epochs, validation, checkpoints, logs, exact resume.

A :class:`Trainer` trains the parts it is given (:class:`~xtrans.train.build.TrainerParts`),
or assembles them from the stage config (:func:`~xtrans.train.build.build_parts`)::

    Trainer(cfg, outdir, init=..., resume=...)        # as python -m xtrans.bin.train does
    Trainer(cfg, outdir, parts=TrainerParts(...))     # a model and data made elsewhere

Each update is :class:`~xtrans.train.update.Updater`'s (the loss weighting over ranks and
micro-batches, skipped micro-batches, dropped updates); validation is
:func:`xtrans.train.validation.validate`. Per update the trainer writes ``steps.jsonl`` (and
TensorBoard), every ``log_interval`` updates a progress line; at intervals and at the end of
each epoch it validates and saves a checkpoint that resumes exactly (:meth:`Trainer.save`).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.distributed as dist

from xtrans.checkpoint import atomic_save, atomic_write_text, model_checkpoint
from xtrans.config import save_config, to_dict
from xtrans.data.dataset import Batch, collate
from xtrans.masks import StreamingConfig
from xtrans.train.build import TrainerParts, build_parts, split_param_groups, wrap_ddp  # noqa: F401 (re-exported)
from xtrans.train.checkpoint import checkpoint_name, link_or_copy, prune, update_best
from xtrans.train.config import TrainConfig
from xtrans.train.runtime import DistInfo, Runtime, autocast_dtype, default_device
from xtrans.train.state import TrainState, capture_rng
from xtrans.train.update import (  # noqa: F401 (re-exported)
    MicroBatchResult,
    MicroBatchSkip,
    UpdateRecord,
    Updater,
    current_lrs,
    is_oom,
)
from xtrans.train.validation import validate

logger = logging.getLogger(__name__)


class Trainer:
    """Trains one stage.

    Args:
        cfg: the stage config.
        outdir: run directory (checkpoints, ``train.log``, ``steps.jsonl``, ``tensorboard/``).
        parts: what to train with; ``None`` = :func:`~xtrans.train.build.build_parts` from ``cfg``
            (with ``init`` and ``resume``). Parts passed in are trained as they are: the caller
            seeds, initialises, resumes and moves them to ``device``.
        init: transducer checkpoint or encoder file to start from (ignored on resume).
        resume: checkpoint to continue from exactly.
        dist_info: rank and world size (a process group must be initialised when > 1).
        device: where to train (default: the device of ``parts.model``, else ``cuda:<local_rank>``
            when CUDA is available, else CPU).

    Raises:
        ValueError: for ``init`` or ``resume`` together with ``parts``.
    """

    def __init__(self, cfg: TrainConfig, outdir: str | Path, parts: Optional[TrainerParts] = None, *,
                 init: Optional[str] = None, resume: Optional[str] = None,
                 dist_info: DistInfo = DistInfo(), device: Optional[torch.device] = None):
        if parts is not None and (init is not None or resume is not None):
            raise ValueError("init, resume: expected None with parts passed in, found "
                             f"init={init!r}, resume={resume!r}; load them with "
                             "build_parts(cfg, init=..., resume=...) or into your own parts")
        if device is None:
            device = default_device(dist_info) if parts is None else next(parts.model.parameters()).device
        self.cfg, self.outdir, self.dist, self.device = cfg, Path(outdir), dist_info, device
        self.outdir.mkdir(parents=True, exist_ok=True)
        if cfg.training.precision != "fp32" and device.type != "cuda":
            logger.warning("precision %s needs CUDA; training in fp32 on %s", cfg.training.precision, device)
        self.runtime = Runtime(device, dist_info, autocast_dtype(cfg.training.precision, device))
        if parts is None:
            parts = build_parts(cfg, init=init, resume=resume, dist_info=dist_info, device=device)
        self.parts = parts
        self.model, self.optimizer, self.scheduler, self.scaler = (parts.model, parts.optimizer, parts.scheduler,
                                                                   parts.scaler)
        self.train_set, self.sampler, self.dev_set = parts.train_set, parts.sampler, parts.dev_set
        self.tokenizer, self.multi_chunk, self.state = parts.tokenizer, parts.multi_chunk, parts.state
        self.ddp = wrap_ddp(parts.model, cfg, device) if dist_info.world_size > 1 else None
        self.updater = Updater(cfg, parts, self.runtime, self.ddp)
        self.writer = None
        self._steps_file = None
        self._window = dict(loss=0.0, utts=0, audio=0.0, time=time.time(), updates=0)
        self._since_save = [0.0, 0]

    # ------------------------------------------------------------------ one update, validation

    def train_update(self, micro: List[Batch]) -> UpdateRecord:
        """One optimizer update on this rank's micro-batches (:meth:`Updater.update`)."""
        return self.updater.update(micro)

    def _forward_backward(self, model, batch: Batch, streaming: Optional[StreamingConfig], scale: float,
                          last: bool):
        """One micro-batch's gradients, or its skip (:meth:`Updater.forward_backward`)."""
        return self.updater.forward_backward(model, batch, streaming, scale, last)

    def current_lrs(self) -> Dict[str, float]:
        return current_lrs(self.optimizer)

    def validate(self) -> Dict[str, float]:
        """Dev loss (and WER) on all ranks (:func:`xtrans.train.validation.validate`); ``{}`` without dev data."""
        if self.dev_set is None:
            return {}
        return validate(self.model, self.dev_set, self.tokenizer, self.cfg, self.runtime)

    # ------------------------------------------------------------------ checkpoints

    def save(self, metrics: Dict[str, float]) -> None:
        """Writes ``ckpt_step<N>.pt`` (rank 0), updates best/last lists, ``best.pt``, ``latest.txt``.

        The checkpoint holds what resumes exactly: model, optimizer, scheduler, scaler, config and
        the run state with the data position and every rank's random generators.
        """
        name = checkpoint_name(self.state.step)
        self._since_save = [0.0, 0]
        self._capture_position()
        is_best = self._update_kept(name, metrics)
        if self.dist.is_main:
            self._write_checkpoint(name, metrics, is_best)
        if self.dist.world_size > 1:
            dist.barrier()

    def _capture_position(self) -> None:
        """Stores the sampler positions and the random generators of every rank in the run state."""
        st = self.state
        # the loop's own position: a prefetching DataLoader may already have moved the sampler on
        st.sampler = dict(self.sampler.state_dict(), epoch=st.epoch, position=st.batches_in_epoch)
        st.multi_chunk = None if self.multi_chunk is None else self.multi_chunk.state_dict()
        rng = capture_rng()
        if self.dist.world_size > 1:
            gathered = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng)
            st.rng = gathered
        else:
            st.rng = [rng]

    def _update_kept(self, name: str, metrics: Dict[str, float]) -> bool:
        """Enters checkpoint ``name`` in the state's best and last lists; True when it is the best so far.

        The score is ``checkpoint.best_metric``, or the training loss when there is no dev data.
        """
        st, ck = self.state, self.cfg.checkpoint
        is_best = False
        score = metrics.get(ck.best_metric)
        if score is None and self.dev_set is None:
            score = metrics.get("train_loss")
        if score is not None and not any(e[1] == name for e in st.best):
            is_best = update_best(st.best, score, name, ck.keep_best)
        if name not in st.last:
            st.last.append(name)
        del st.last[:-ck.keep_last]
        return is_best

    def _write_checkpoint(self, name: str, metrics: Dict[str, float], is_best: bool) -> None:
        """Writes checkpoint ``name``, ``latest.txt`` and ``best.pt``; deletes checkpoints no list keeps."""
        st = self.state
        atomic_save({**model_checkpoint(self.model), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(),
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
