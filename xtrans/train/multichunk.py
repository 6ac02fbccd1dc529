"""Multi-chunk training (stage 4): a streaming configuration drawn per batch.

A training policy with its own RNG state, kept next to the trainer that owns it; the
configurations it draws obey the streaming rule of :mod:`xtrans.masks`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from xtrans.masks import StreamingConfig


@dataclass(frozen=True)
class MultiChunkConfig:
    """Stage-4 multi-chunk training: the chunk size is drawn per batch.

    Attributes:
        chunk_sizes: the chunk sizes (frames) to draw from, or ``None`` to use ``chunk_range``.
        chunk_range: inclusive (low, high) frames, drawn uniformly when ``chunk_sizes`` is None.
        probabilities: weights for ``chunk_sizes`` (normalised); ``None`` = uniform.
        full_context_prob: share of batches trained with full attention.
        left_context: left context (frames) applied with every drawn chunk; ``None`` = unlimited.
        num_sinks: attention sinks applied with every drawn chunk.
    """

    chunk_sizes: Optional[Tuple[int, ...]] = (16, 32, 64)
    chunk_range: Optional[Tuple[int, int]] = None
    probabilities: Optional[Tuple[float, ...]] = None
    full_context_prob: float = 0.0
    left_context: Optional[int] = 64
    num_sinks: int = 0

    def __post_init__(self):
        if (self.chunk_sizes is None) == (self.chunk_range is None):
            raise ValueError("chunk_sizes/chunk_range: give exactly one of the two")
        if self.chunk_sizes is not None:
            if not self.chunk_sizes or min(self.chunk_sizes) < 1:
                raise ValueError(f"chunk_sizes: expected positive frame counts, found {self.chunk_sizes}")
            if self.probabilities is not None and (
                    len(self.probabilities) != len(self.chunk_sizes) or min(self.probabilities) < 0
                    or sum(self.probabilities) <= 0):
                raise ValueError(f"probabilities: expected {len(self.chunk_sizes)} non-negative "
                                 f"weights, found {self.probabilities}")
        else:
            lo, hi = self.chunk_range
            if not 1 <= lo <= hi:
                raise ValueError(f"chunk_range: expected 1 <= low <= high, found {self.chunk_range}")
            if self.probabilities is not None:
                raise ValueError("probabilities: only valid with chunk_sizes")
        if not 0.0 <= self.full_context_prob <= 1.0:
            raise ValueError(f"full_context_prob: expected in [0, 1], found {self.full_context_prob}")


class MultiChunkSampler:
    """Draws a :class:`StreamingConfig` per batch for multi-chunk training (stage 4).

    Deterministic given the seed: the n-th draw depends only on ``(seed, n)``, so a resumed
    run (``state_dict``/``load_state_dict``) continues with the same draws.
    """

    def __init__(self, config: MultiChunkConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.num_drawn = 0

    def draw(self) -> StreamingConfig:
        """The configuration for the next batch."""
        cfg = self.config
        rng = random.Random(self.seed * 1_000_003 + self.num_drawn)
        self.num_drawn += 1
        if cfg.full_context_prob > 0 and rng.random() < cfg.full_context_prob:
            return StreamingConfig()
        if cfg.chunk_sizes is not None:
            weights = cfg.probabilities or [1.0] * len(cfg.chunk_sizes)
            chunk = rng.choices(list(cfg.chunk_sizes), weights=list(weights))[0]
        else:
            chunk = rng.randint(*cfg.chunk_range)
        return StreamingConfig(chunk, cfg.left_context, cfg.num_sinks)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "num_drawn": self.num_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.num_drawn = int(state["seed"]), int(state["num_drawn"])


def sample_configs(config: MultiChunkConfig, n: int, seed: int = 0) -> Sequence[StreamingConfig]:
    """The first ``n`` draws of a fresh :class:`MultiChunkSampler` (for plots and checks)."""
    sampler = MultiChunkSampler(config, seed)
    return [sampler.draw() for _ in range(n)]
