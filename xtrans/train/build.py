"""A trainer's parts, and how a stage config assembles them.

:class:`TrainerParts` is what :class:`xtrans.train.trainer.Trainer` trains with: model,
optimizer, scheduler, data, samplers and run state. A test or another tool may make its own
(a tiny model, a small data set) and pass them in; :func:`build_parts` makes them from a
:class:`~xtrans.train.config.TrainConfig` as ``python -m xtrans.bin.train`` does.

Exact resume depends on the order in which :func:`build_parts` draws random numbers, so it
keeps this order::

    seed_everything(seed) -> tokenizer -> train set (its augmentation pipeline) -> batch sampler
    -> dev set -> build_model (random init) -> init weights -> optimizer, scheduler, scaler,
    multi-chunk sampler -> resume (restores every generator) or seed_everything(seed + 1000 * rank)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import nn

from xtrans.checkpoint import load_checkpoint
from xtrans.config import to_dict
from xtrans.data.dataset import AsrDataset
from xtrans.data.sampler import DurationBatchSampler
from xtrans.models.config import build_model
from xtrans.models.transducer import Transducer
from xtrans.train.checkpoint import load_init
from xtrans.train.config import TrainConfig
from xtrans.train.multichunk import MultiChunkSampler
from xtrans.train.runtime import DistInfo, autocast_dtype, default_device
from xtrans.train.scheduler import WarmupDecayScheduler
from xtrans.train.state import TrainState, restore_rng, seed_everything

if TYPE_CHECKING:
    from xtrans.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerParts:
    """What a trainer trains with.

    Attributes:
        model: the transducer, on the device the trainer runs on.
        optimizer: steps ``model``'s parameters (only those).
        scheduler: stepped after every optimizer step.
        train_set: the training data (``set_epoch`` draws each epoch's augmentation).
        sampler: this rank's batches of ``train_set`` (resumable mid-epoch).
        tokenizer: decodes token ids for the dev WER.
        dev_set: the dev data; ``None`` = no validation (``best.pt`` follows the train loss).
        multi_chunk: draws each micro-batch's chunk size; ``None`` = the config's fixed mask.
        scaler: gradient scaler of fp16 training; ``None`` otherwise.
        state: where the run stands (updated in place by the trainer).
    """

    model: Transducer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_set: AsrDataset
    sampler: DurationBatchSampler
    tokenizer: "Tokenizer"
    dev_set: Optional[AsrDataset] = None
    multi_chunk: Optional[MultiChunkSampler] = None
    scaler: Optional[torch.amp.GradScaler] = None
    state: TrainState = field(default_factory=TrainState)

    def __post_init__(self):
        own = {id(p) for p in self.model.parameters()}
        foreign = sum(1 for g in self.optimizer.param_groups for p in g["params"] if id(p) not in own)
        if foreign:
            raise ValueError(f"optimizer: expected parameters of the model only, found {foreign} "
                             "that are not the model's; build the optimizer from model.parameters()")


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


def build_parts(cfg: TrainConfig, *, init: Optional[str] = None, resume: Optional[str] = None,
                dist_info: DistInfo = DistInfo(), device: Optional[torch.device] = None) -> TrainerParts:
    """The parts of a stage's trainer, assembled from its config (random draws in the module's order).

    Args:
        cfg: the stage config.
        init: transducer checkpoint or encoder file to start from (ignored on resume).
        resume: checkpoint to continue from exactly (weights, optimizer, scheduler, samplers,
            run state and random generators).
        dist_info: rank and world size; the sampler gives this rank its share of the batches.
        device: where the model goes (default: ``cuda:<local_rank>`` when CUDA is available).
    """
    from xtrans.tokenizer import Tokenizer

    device = device if device is not None else default_device(dist_info)
    seed_everything(cfg.training.seed)
    tokenizer = Tokenizer(cfg.data.tokenizer)
    train_set, sampler, dev_set = _build_data(cfg, tokenizer, dist_info)
    model = build_model(cfg.model, vocab_size=tokenizer.vocab_size)
    if init is not None and resume is None:
        load_init(model, init)
    model.to(device)
    optimizer, scheduler, scaler = _build_optimization(model, cfg, device)
    multi_chunk = (MultiChunkSampler(cfg.mask.multi_chunk, seed=cfg.training.seed)
                   if cfg.mask.multi_chunk is not None else None)
    parts = TrainerParts(model=model, optimizer=optimizer, scheduler=scheduler, train_set=train_set,
                         sampler=sampler, tokenizer=tokenizer, dev_set=dev_set, multi_chunk=multi_chunk,
                         scaler=scaler)
    if resume is not None:
        return replace(parts, state=load_resume(parts, resume, cfg, dist_info))
    # per-rank training randomness (dropout, layer drop) after the shared model init
    seed_everything(cfg.training.seed + 1000 * dist_info.rank)
    return parts


def _build_data(cfg: TrainConfig, tokenizer: "Tokenizer", dist_info: DistInfo
                ) -> Tuple[AsrDataset, DurationBatchSampler, Optional[AsrDataset]]:
    """The training set with its augmentation pipeline, this rank's batch sampler, the dev set."""
    d, seed = cfg.data, cfg.training.seed
    train_set = AsrDataset(d.train_dir, tokenizer, sample_rate=d.sample_rate, augment=d.augment_entries(),
                           seed=seed)
    sampler = DurationBatchSampler(train_set.durations(), d.max_seconds, num_buckets=d.num_buckets,
                                   shuffle=True, seed=seed, rank=dist_info.rank,
                                   world_size=dist_info.world_size, max_batch_size=d.max_batch_size)
    dev_set = None if d.dev_dir is None else AsrDataset(d.dev_dir, tokenizer, sample_rate=d.sample_rate)
    return train_set, sampler, dev_set


def _build_optimization(model: Transducer, cfg: TrainConfig, device: torch.device):
    """AdamW over :func:`split_param_groups`, the warm-up/decay schedule, the fp16 gradient scaler."""
    optimizer = torch.optim.AdamW(split_param_groups(model, cfg), betas=cfg.optim.betas, eps=cfg.optim.eps)
    s = cfg.schedule
    scheduler = WarmupDecayScheduler(optimizer, warmup_updates=s.warmup_updates, decay=s.decay,
                                     total_updates=s.total_updates or cfg.training.max_updates,
                                     min_lr_ratio=s.min_lr_ratio)
    fp16 = autocast_dtype(cfg.training.precision, device) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    return optimizer, scheduler, scaler


def load_resume(parts: TrainerParts, path: str, cfg: TrainConfig, dist_info: DistInfo) -> TrainState:
    """Loads a checkpoint into ``parts`` and restores this rank's random generators; returns its run state.

    A config that differs from the checkpoint's, or another number of ranks, is logged as a warning
    (training goes on; with other ranks the random draws do not continue exactly).
    """
    ckpt = load_checkpoint(path)
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    if parts.scaler is not None and ckpt.get("scaler") is not None:
        parts.scaler.load_state_dict(ckpt["scaler"])
    state = TrainState.from_state_dict(ckpt["train_state"])
    if state.sampler is not None:
        parts.sampler.load_state_dict(state.sampler)
    if parts.multi_chunk is not None and state.multi_chunk is not None:
        parts.multi_chunk.load_state_dict(state.multi_chunk)
    if ckpt.get("config") != to_dict(cfg):
        old, new = ckpt.get("config") or {}, to_dict(cfg)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        logger.warning("resuming %s with a config that differs in section(s) %s", path, diff)
    rngs = state.rng
    if len(rngs) != dist_info.world_size:
        logger.warning("checkpoint holds random states of %d ranks, running with %d: "
                       "random draws will not continue exactly", len(rngs), dist_info.world_size)
    if rngs:
        restore_rng(rngs[min(dist_info.rank, len(rngs) - 1)])
    logger.info("resumed from %s at update %d (epoch %d, batch %d)", path, state.step, state.epoch,
                state.batches_in_epoch)
    return state


def wrap_ddp(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """``model`` in DistributedDataParallel (a process group must be initialised).

    ``training.find_unused_parameters`` unset: on when some parameters get no gradient in some
    updates (encoder freezing, layer drop).
    """
    find_unused = cfg.training.find_unused_parameters
    if find_unused is None:
        find_unused = cfg.training.freeze_encoder_updates > 0 or cfg.model.encoder.layer_drop > 0
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=find_unused)
