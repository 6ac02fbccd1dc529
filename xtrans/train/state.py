"""Mutable run state of a training run (kept apart from the frozen config).

A checkpoint stores it next to model, optimizer, scheduler and config, so that ``--resume``
continues exactly: the same next batch (sampler position), the same random draws (python,
numpy and torch generators of every rank; the multi-chunk sampler) and the same schedule.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch


@dataclass
class TrainState:
    """Where a run stands.

    Attributes:
        step: updates done.
        epoch: current epoch (0-based).
        batches_in_epoch: micro-batches of ``epoch`` consumed on this rank (the sampler position).
        sampler: ``DurationBatchSampler.state_dict`` at the last save.
        multi_chunk: ``MultiChunkSampler.state_dict`` (``None`` without multi-chunk training).
        best: ``[(score, file name), ...]`` of kept best checkpoints, best first.
        last: file names of kept step/epoch checkpoints, oldest first.
        audio_seconds: audio consumed so far (all ranks).
        skipped_batches: micro-batches skipped (non-finite loss or gradient, out of memory).
        rng: per-rank random generator states (see :func:`capture_rng`).
    """

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    sampler: Optional[Dict[str, Any]] = None
    multi_chunk: Optional[Dict[str, Any]] = None
    best: List[List[Any]] = field(default_factory=list)
    last: List[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    skipped_batches: int = 0
    rng: List[Dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any]) -> "TrainState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})


def capture_rng() -> Dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) generator states of this process.

    Plain types and tensors only, so a checkpoint loads with ``torch.load(weights_only=True)``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Restores what :func:`capture_rng` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"], torch.cuda.current_device())


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
