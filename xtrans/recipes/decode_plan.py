"""Which decodings recipe stage 11 runs for a trained model: its ``conf/decode.yaml`` plus the mask
the model was trained under (read from the stage's training config).

Rules: a full-attention model (stage 1) is decoded with full attention (simulated only: there is
no chunk to stream); a chunked model with its own chunk / left context / sinks, simulated (the
masked full pass) and real chunk-by-chunk streaming; the multi-chunk model (stage 4) at every
chunk size of ``multi_chunk_ms`` with its left context. Each mode is decoded with every search
(modified beam search with ``beam``). ``python -m xtrans.bin.decode --train_config --decode_config``
decodes every job of the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from xtrans.config import load_config
from xtrans.frames import frames_to_ms, ms_to_frames
from xtrans.train.config import TrainConfig


@dataclass(frozen=True)
class DecodeConfig:
    """``conf/decode.yaml``.

    Attributes:
        searches: ``greedy`` and/or ``beam``.
        beam: beam size of modified beam search.
        modes: ``simulated`` (masked full pass) and/or ``streaming`` (chunk by chunk).
        multi_chunk_ms: chunk sizes at which the multi-chunk model is decoded.
    """

    searches: Tuple[str, ...] = ("greedy", "beam")
    beam: int = 4
    modes: Tuple[str, ...] = ("simulated", "streaming")
    multi_chunk_ms: Tuple[int, ...] = (320, 640, 1280)

    def __post_init__(self):
        if self.beam < 1:
            raise ValueError(f"beam: expected >= 1, found {self.beam}")
        for s in self.searches:
            if s not in ("greedy", "beam"):
                raise ValueError(f"searches: expected greedy or beam, found {s!r}")
        for m in self.modes:
            if m not in ("simulated", "streaming"):
                raise ValueError(f"modes: expected simulated or streaming, found {m!r}")
        for ms in self.multi_chunk_ms:
            ms_to_frames(ms)


@dataclass(frozen=True)
class DecodeJob:
    """One decoding: mode, chunk/left in ms (None = full / unlimited), sinks, search and, for
    ``search="beam"``, the beam size (None for greedy)."""

    mode: str
    chunk_ms: Optional[int]
    left_ms: Optional[int]
    sinks: int
    search: str
    beam: Optional[int] = None

    @property
    def tag(self) -> str:
        chunk = "full" if self.chunk_ms is None else f"chunk{self.chunk_ms}"
        left = "" if self.chunk_ms is None else ("_leftinf" if self.left_ms is None else f"_left{self.left_ms}")
        sinks = f"_sinks{self.sinks}" if self.sinks else ""
        return f"{self.mode}_{chunk}{left}{sinks}_{self.search}"

    def options(self) -> Dict[str, Any]:
        """The options of ``python -m xtrans.bin.decode`` this job sets, by name (``chunk_ms``, ...)."""
        out = {"mode": self.mode, "search": self.search, "sinks": self.sinks, "chunk_ms": self.chunk_ms,
               "left_ms": self.left_ms}
        if self.beam is not None:
            out["beam"] = self.beam
        return out

    def args(self) -> str:
        """:meth:`options` as command-line text (what ``xtrans.bin.decode_plan`` prints; ``None`` left out)."""
        return " ".join(f"--{name} {value}" for name, value in self.options().items() if value is not None)


def plan(train_config: str, decode_config: str) -> List[DecodeJob]:
    """The decodings of the model trained with ``train_config``."""
    train = load_config(train_config, TrainConfig)
    dec = load_config(decode_config, DecodeConfig)
    mask = train.mask
    if mask.multi_chunk is not None:
        left = frames_to_ms(mask.multi_chunk.left_context)
        streams = [(ms, left, mask.multi_chunk.num_sinks) for ms in dec.multi_chunk_ms]
    elif mask.fixed() is None:  # full attention
        streams = []
    else:
        streams = [(frames_to_ms(mask.chunk_size), frames_to_ms(mask.left_context), mask.num_sinks)]
    jobs = []
    for search in dec.searches:
        beam = dec.beam if search == "beam" else None
        if not streams:
            jobs.append(DecodeJob("simulated", None, None, 0, search, beam))
        for chunk, left, sinks in streams:
            jobs += [DecodeJob(mode, chunk, left, sinks, search, beam) for mode in dec.modes]
    return jobs
