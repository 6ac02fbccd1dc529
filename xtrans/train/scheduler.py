"""Learning-rate schedule: linear warm-up, then cosine, linear, inverse-square-root or constant.

With peak rate ``lr`` (per parameter group), warm-up ``W`` updates and decay end ``N``, the rate
at update ``n`` (1-based: the rate used by the n-th optimizer step) is ``lr * f(n)``::

    n <= W:   f = n / W                                         (linear warm-up)
    cosine:   f = r + (1 - r) * (1 + cos(pi * p)) / 2           p = min(1, (n - W) / (N - W))
    linear:   f = r + (1 - r) * (1 - p)
    noam:     f = sqrt(W / n)                                   (inverse square root, Vaswani 2017)
    constant: f = 1

``r`` is ``min_lr_ratio``. The scheduler is a ``torch.optim.lr_scheduler.LRScheduler``, so its
``state_dict`` round-trips through checkpoints.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

DECAYS = ("cosine", "linear", "noam", "constant")


def check_decay(decay: str) -> str:
    """``decay`` if it is one of :data:`DECAYS`.

    Raises:
        ValueError: naming the known decays otherwise.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay: expected one of {', '.join(DECAYS)}, found {decay!r}")
    return decay


def lr_factor(update: int, *, warmup: int, decay: str, total: Optional[int], min_ratio: float) -> float:
    """``f(n)`` of the module docstring for update ``n >= 1`` (``n = 0`` gives the first rate too)."""
    n = max(1, update)
    if warmup > 0 and n <= warmup:
        return n / warmup
    if decay == "constant":
        return 1.0
    if decay == "noam":
        return math.sqrt(max(warmup, 1) / n)
    if total is None:
        raise ValueError(f"total_updates: decay {decay!r} needs an end (set schedule.total_updates "
                         "or training.max_updates)")
    p = min(1.0, (n - warmup) / max(1, total - warmup))
    if decay == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    if decay == "linear":
        return min_ratio + (1 - min_ratio) * (1 - p)
    raise ValueError(f"decay: expected one of {DECAYS}, found {decay!r}")


class WarmupDecayScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Warm-up then decay for every parameter group (each keeps its own peak rate).

    Call :meth:`step` after each ``optimizer.step()``.

    Args:
        optimizer: the optimizer; each group's ``initial_lr`` (its ``lr`` at construction) is the peak.
        warmup_updates: ``W``.
        decay: one of ``cosine | linear | noam | constant``.
        total_updates: ``N`` for cosine and linear.
        min_lr_ratio: ``r``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, warmup_updates: int, decay: str,
                 total_updates: Optional[int] = None, min_lr_ratio: float = 0.0):
        check_decay(decay)
        if decay in ("cosine", "linear") and total_updates is None:
            raise ValueError(f"total_updates: decay {decay!r} needs an end (set schedule.total_updates "
                             "or training.max_updates)")
        self.warmup_updates = warmup_updates
        self.decay = decay
        self.total_updates = total_updates
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer)

    def factor(self, update: int) -> float:
        return lr_factor(update, warmup=self.warmup_updates, decay=self.decay, total=self.total_updates,
                         min_ratio=self.min_lr_ratio)

    def get_lr(self):
        # last_epoch counts scheduler.step() calls, i.e. updates done; the next update is +1
        f = self.factor(self.last_epoch + 1)
        return [base * f for base in self.base_lrs]
