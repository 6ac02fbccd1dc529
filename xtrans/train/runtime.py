"""Where a training process computes: its rank among the processes, its device, its precision.

:class:`Runtime` is what the update (:mod:`xtrans.train.update`), the validation
(:mod:`xtrans.train.validation`) and the trainer share: the all-reduce of a few numbers over the
ranks and the autocast context of the run's precision.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.distributed as dist


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


def default_device(dist_info: DistInfo) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
    return torch.device(f"cuda:{dist_info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``training.precision`` (``fp32``, ``bf16``, ``fp16``) on ``device``.

    ``None`` (no autocast) for fp32 and off CUDA, where mixed precision is not used.
    """
    if precision == "fp32" or device.type != "cuda":
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


@dataclass(frozen=True)
class Runtime:
    """The rank, device and autocast dtype of a training process.

    Attributes:
        device: where the model and its batches live.
        dist: the process's rank and the world size (a process group is initialised when > 1).
        amp_dtype: the autocast dtype, ``None`` = fp32 (:func:`autocast_dtype`).
    """

    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    amp_dtype: Optional[torch.dtype] = None

    def all_reduce(self, values: List[float], op: str = "sum") -> List[float]:
        """The sums (``op="sum"``) or maxima (``op="max"``) of ``values`` over all ranks.

        ``values`` themselves in a 1-process run; float64 on the wire otherwise.
        """
        if self.dist.world_size == 1:
            return values
        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    def autocast(self):
        """The forward pass's autocast context (a null context in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
