"""Streaming attention masks: chunks, limited left context and attention sinks.

The streaming rule (DESIGN.md), shared by training, simulated and real streaming inference.
Frames are 20 ms. With chunk size ``C`` frames, left context ``L`` frames and ``S`` sink
frames, query frame ``i`` lies in chunk ``c = i // C`` and may attend key ``j`` exactly when::

    j < (c + 1) * C   and   ( j >= c * C - L   or   j < S )

Masks are boolean, **True = may attend** (the convention of
``torch.nn.functional.scaled_dot_product_attention``). Example, T=8, C=2, L=2, S=1::

    key      0 1 2 3 4 5 6 7
    q=0,1    x x . . . . . .
    q=2,3    x x x x . . . .
    q=4,5    x . x x x x . .     <- key 0 is the sink
    q=6,7    x . . . x x x x

``None`` means unlimited: ``chunk_size=None`` is full attention (the whole utterance is one
chunk), ``left_context=None`` keeps every earlier frame. Reference: Kumar et al.,
"XLSR-Transducer: Streaming ASR for Self-Supervised Pretrained Models", ICASSP 2025.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

FRAME_MS = 20
"""Duration of one encoder frame (stride 320 samples at 16 kHz)."""


def ms_to_frames(ms: Optional[float]) -> Optional[int]:
    """Milliseconds -> whole 20 ms frames (``None`` stays ``None``).

    Raises:
        ValueError: if ``ms`` is negative or not a multiple of 20 ms.
    """
    if ms is None:
        return None
    if ms < 0 or not math.isclose(ms / FRAME_MS, round(ms / FRAME_MS)):
        raise ValueError(f"ms: expected a non-negative multiple of {FRAME_MS} ms, found {ms}")
    return int(round(ms / FRAME_MS))


def frames_to_ms(frames: Optional[int]) -> Optional[int]:
    """Frames -> milliseconds (``None`` stays ``None``)."""
    return None if frames is None else int(frames) * FRAME_MS


@dataclass(frozen=True)
class StreamingConfig:
    """One streaming configuration of the rule above.

    Attributes:
        chunk_size: frames per chunk ``C``; ``None`` = full attention.
        left_context: frames of left context ``L`` before a chunk; ``None`` = unlimited.
        num_sinks: the first ``S`` frames of the utterance, always visible (attention sink).
    """

    chunk_size: Optional[int] = None
    left_context: Optional[int] = None
    num_sinks: int = 0

    def __post_init__(self):
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size: expected >= 1 or None, found {self.chunk_size}")
        if self.left_context is not None and self.left_context < 0:
            raise ValueError(f"left_context: expected >= 0 or None, found {self.left_context}")
        if self.num_sinks < 0:
            raise ValueError(f"num_sinks: expected >= 0, found {self.num_sinks}")

    @property
    def is_full(self) -> bool:
        """True when the configuration is plain full attention (no streaming restriction)."""
        return self.chunk_size is None and self.left_context is None

    @classmethod
    def from_ms(cls, chunk_ms: Optional[float] = None, left_ms: Optional[float] = None,
                num_sinks: int = 0) -> "StreamingConfig":
        """Builds a configuration from milliseconds (chunk, left context) and sink frames."""
        return cls(ms_to_frames(chunk_ms), ms_to_frames(left_ms), num_sinks)

    def describe(self) -> str:
        """A short human-readable label, e.g. ``chunk 640 ms, left 640 ms, sinks 4``."""
        if self.is_full and self.num_sinks == 0:
            return "full attention"
        chunk = "full" if self.chunk_size is None else f"{frames_to_ms(self.chunk_size)} ms"
        left = "unlimited" if self.left_context is None else f"{frames_to_ms(self.left_context)} ms"
        return f"chunk {chunk}, left {left}, sinks {self.num_sinks}"


def chunk_attention_mask(num_frames: int, chunk_size: Optional[int] = None,
                         left_context: Optional[int] = None, num_sinks: int = 0,
                         device=None) -> torch.Tensor:
    """The streaming attention mask of the rule above.

    Args:
        num_frames: ``T``, the number of frames.
        chunk_size: ``C`` frames per chunk; ``None`` = one chunk (full attention).
        left_context: ``L`` frames before the chunk start; ``None`` = unlimited.
        num_sinks: ``S``, the first frames every query may attend.
        device: where to build the mask.

    Returns:
        BoolTensor (T, T), ``mask[i, j]`` True when query ``i`` may attend key ``j``.

    Raises:
        ValueError: on a negative ``num_frames``, ``chunk_size < 1``, negative ``left_context``
            or ``num_sinks``.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames: expected >= 0, found {num_frames}")
    StreamingConfig(chunk_size, left_context, num_sinks)  # validates the arguments
    idx = torch.arange(num_frames, device=device)
    if chunk_size is None:
        chunk_start = torch.zeros_like(idx)
        chunk_end = torch.full_like(idx, num_frames)
    else:
        chunk_start = (idx // chunk_size) * chunk_size
        chunk_end = chunk_start + chunk_size
    q_start, q_end = chunk_start[:, None], chunk_end[:, None]  # (T, 1)
    k = idx[None, :]  # (1, T)
    visible = k < q_end
    if left_context is not None:
        visible = visible & ((k >= q_start - left_context) | (k < num_sinks))
    return visible


def key_padding_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """BoolTensor (B, T), True where a frame lies inside its utterance (may be attended)."""
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths[:, None]


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
