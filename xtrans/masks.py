"""Streaming attention masks: chunks, limited left context and attention sinks.

The streaming rule (docs/streaming.md), shared by training, simulated and real streaming inference.
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
chunk), ``left_context=None`` keeps every earlier frame. Multi-chunk training, which draws a
configuration per batch, lives in :mod:`xtrans.train.multichunk`. Reference: Kumar et al.,
"XLSR-Transducer: Streaming ASR for Self-Supervised Pretrained Models", ICASSP 2025.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from xtrans.frames import FRAME_MS, frames_to_ms, ms_to_frames  # noqa: F401 (re-exported)


class StreamingNotSupportedError(ValueError):
    """The encoder configuration cannot obey the streaming rule (e.g. a group-norm extractor)."""


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
        """True when every frame may attend every frame: ``chunk_size`` is None.

        The project's one definition of full attention. With ``C = None`` the whole utterance
        is one chunk, so the left context (which only restricts keys before a chunk's start)
        and the sinks (which only add keys) change nothing: ``(None, L, S)`` is full attention
        for every ``L`` and ``S``.
        """
        return self.chunk_size is None

    @classmethod
    def from_ms(cls, chunk_ms: Optional[float] = None, left_ms: Optional[float] = None,
                num_sinks: int = 0) -> "StreamingConfig":
        """Builds a configuration from milliseconds (chunk, left context) and sink frames."""
        return cls(ms_to_frames(chunk_ms), ms_to_frames(left_ms), num_sinks)

    def describe(self) -> str:
        """A short human-readable label, e.g. ``chunk 640 ms, left 640 ms, sinks 4``."""
        if self.is_full:
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
