"""Frame geometry of the XLSR (wav2vec 2.0) encoder: one place for 16 kHz, 320, 400 and 20 ms.

The encoder reads a 16 kHz waveform through a CNN of stride 320 samples (20 ms) and receptive
field 400 samples (25 ms). Frame ``k`` reads samples ``[320 k, 320 k + 400)``::

    samples  0        320      640      960
             |--------|--------|--------|----
    frame 0  [=========)                         samples [0, 400)
    frame 1           [=========)                samples [320, 720)
    frame 2                    [=========)       samples [640, 1040)

so a waveform of ``S`` samples gives ``T = (S - 400) // 320 + 1`` frames (0 when ``S < 400``),
and the frames of chunk ``c`` of ``C`` frames (frames ``c C .. (c + 1) C - 1``) are complete once
the waveform reaches sample ``320 (c + 1) C + 80``: 5 ms after the chunk's nominal end.

A stream is therefore fed to a chunk-at-a-time encoder as its first 80 samples alone, then
``320 C`` samples per call, each call completing exactly one chunk; :class:`StreamGeometry` is
that rule, and the PyTorch server backend, the ONNX export, the ONNX runtime and the server's
engine all ask it.

This is the geometry the rest of the library assumes (data checks, streaming, timestamps);
the CNN in :mod:`xtrans.models.wav2vec2` derives its own stride and receptive field from its
convolution layers, which for XLSR-53 are these numbers.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Union, overload

if TYPE_CHECKING:  # no torch at run time: the torch-free runtime (xtrans.onnx) uses this module too
    import torch

SAMPLE_RATE = 16000
"""Rate of the encoder's input waveform in Hz."""

FRAME_STRIDE = 320
"""Samples between consecutive encoder frames at 16 kHz (20 ms)."""

RECEPTIVE_FIELD = 400
"""Samples at 16 kHz read by one encoder frame (25 ms)."""

FRAME_MS = 20
"""Duration of one encoder frame in milliseconds (``FRAME_STRIDE / SAMPLE_RATE``)."""

PRIME_SAMPLES = RECEPTIVE_FIELD - FRAME_STRIDE
"""Samples that prime a stream (80): after them every further 320 samples complete one frame."""


@overload
def num_frames(samples: int, *, stride: int = FRAME_STRIDE, receptive_field: int = RECEPTIVE_FIELD) -> int: ...
@overload
def num_frames(samples: "torch.Tensor", *, stride: int = FRAME_STRIDE,
               receptive_field: int = RECEPTIVE_FIELD) -> "torch.Tensor": ...


def num_frames(samples: Union[int, "torch.Tensor"], *, stride: int = FRAME_STRIDE,
               receptive_field: int = RECEPTIVE_FIELD) -> Union[int, "torch.Tensor"]:
    """Encoder frames of a waveform of ``S`` samples at 16 kHz.

    ``T = (S - 400) // 320 + 1`` for ``S >= 400``, else 0 (frame ``k`` reads samples
    ``[320 k, 320 k + 400)`` and exists only when all of them do). A CNN of another stride
    ``s`` and receptive field ``r`` gives ``(S - r) // s + 1``.

    Args:
        samples: ``S``, a Python int or an integer tensor of any shape (e.g. lengths ``(B,)``).
        stride, receptive_field: the CNN's, in samples (XLSR's 320 and 400 by default).

    Returns:
        ``T``, of the same kind: an int, or an int64 tensor of the same shape.

    Raises:
        TypeError: if ``samples`` is neither an int nor an integer tensor.
    """
    if type(samples).__module__.startswith("torch"):  # a tensor (torch imported by whoever made it)
        import torch
        if samples.dtype.is_floating_point or samples.dtype.is_complex or samples.dtype == torch.bool:
            raise TypeError(f"samples: expected an integer tensor, found dtype {samples.dtype}")
        return torch.clamp((samples.long() - receptive_field) // stride + 1, min=0)
    if isinstance(samples, bool):
        raise TypeError("samples: expected an int or an integer tensor, found bool")
    try:
        count = operator.index(samples)  # int, numpy integers
    except TypeError:
        raise TypeError(f"samples: expected an int or an integer tensor, "
                        f"found {type(samples).__name__}") from None
    return max(0, (count - receptive_field) // stride + 1)


def samples_for_chunk(chunk_index: int, chunk_size: int) -> int:
    """Samples needed before chunk ``c`` of ``C`` frames is complete: ``320 (c + 1) C + 80``.

    The chunk's last frame ``(c + 1) C - 1`` reads up to sample ``320 ((c + 1) C - 1) + 400
    = 320 (c + 1) C + 80`` (exclusive), so ``num_frames(samples_for_chunk(c, C)) == (c + 1) C``
    and one sample fewer gives one frame less.

    Raises:
        ValueError: if ``chunk_index < 0`` or ``chunk_size < 1``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 frame, found {chunk_size}")
    return StreamGeometry(int(chunk_size)).samples_for_chunk(chunk_index)


@dataclass(frozen=True)
class StreamGeometry:
    """How a stream is cut into calls of a chunk-at-a-time encoder: the feed rule, in one place.

    Frame ``k`` of a CNN of stride ``s`` and receptive field ``r`` (320 and 400 for XLSR) reads
    samples ``[s k, s k + r)``, so chunk ``c`` of ``C`` frames is complete at sample
    ``s (c + 1) C + (r - s)``. A stream is fed as::

        call 0      its first  p = r - s  samples alone ("priming": they complete no frame)
        call k >= 1 the next   s C        samples: they complete exactly chunk k - 1's C frames
        last call   the       q < s C    samples left (zero-padded to s C by a fixed-shape
                    graph), which complete q // s frames; skipped when q < s (no frame)

    Cut this way, every call after the first sees the CNN's carries at the same phase, so each
    stream state keeps its shapes from call to call (what a fixed-shape ONNX graph needs, and
    what lets the server stack streams at different chunks into one batch).

    Attributes:
        chunk_frames: ``C``, encoder frames per chunk (>= 1).
        stride: ``s``, samples between frames.
        receptive_field: ``r``, samples one frame reads (>= ``s``).

    Raises:
        ValueError: for a chunk or stride below 1, or a receptive field below the stride.
    """

    chunk_frames: int
    stride: int = FRAME_STRIDE
    receptive_field: int = RECEPTIVE_FIELD

    def __post_init__(self):
        for name, low in (("chunk_frames", 1), ("stride", 1), ("receptive_field", self.stride)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")

    @classmethod
    def of_frontend(cls, frontend: Any, chunk_frames: int) -> "StreamGeometry":
        """The geometry of a CNN front end (anything with integer ``stride`` and ``receptive_field``,
        e.g. ``Wav2Vec2Encoder.feature_extractor``) for chunks of ``chunk_frames``."""
        return cls(int(chunk_frames), int(frontend.stride), int(frontend.receptive_field))

    @property
    def prime_samples(self) -> int:
        """``p = r - s``: the samples of a stream's first call (80 for XLSR)."""
        return self.receptive_field - self.stride

    @property
    def samples_per_call(self) -> int:
        """``s C``: the samples of every later call, one chunk each."""
        return self.stride * self.chunk_frames

    def num_frames(self, samples: int) -> int:
        """Frames of ``samples`` samples: ``(S - r) // s + 1``, 0 below ``r`` (:func:`num_frames`)."""
        return num_frames(samples, stride=self.stride, receptive_field=self.receptive_field)

    def samples_for_chunk(self, chunk_index: int) -> int:
        """Samples before chunk ``c`` is complete: ``s (c + 1) C + p`` (:func:`samples_for_chunk`)."""
        if chunk_index < 0:
            raise ValueError(f"chunk_index: expected >= 0, found {chunk_index}")
        return self.samples_per_call * (chunk_index + 1) + self.prime_samples

    def primed(self, fed: int) -> bool:
        """Whether a stream given ``fed`` samples in whole calls so far has had its priming call."""
        return fed >= self.prime_samples

    def call_size(self, fed: int) -> int:
        """Samples of the next call of a stream given ``fed`` samples so far: ``p`` first, then ``s C``."""
        return self.samples_per_call if self.primed(fed) else self.prime_samples

    def calls(self, fed: int, available: int, *, end: bool = False) -> List[int]:
        """Sizes of the calls that ``available`` waiting samples make, for a stream given ``fed`` so far.

        Whole calls only (:meth:`call_size` each, in order); with ``end`` (the stream is over)
        also the last, partial call of the ``q`` samples left when they complete a frame
        (``q >= s``, after priming). Samples no call takes keep waiting (or, at the end, are
        dropped: they complete no frame).
        """
        sizes: List[int] = []
        while available >= self.call_size(fed):
            size = self.call_size(fed)
            sizes.append(size)
            fed, available = fed + size, available - size
        if end and self.primed(fed) and available >= self.stride:
            sizes.append(available)
        return sizes


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


def frames_to_seconds(frames: Union[int, float]) -> float:
    """Frame index or count -> seconds (frame ``k`` starts at ``0.02 k`` s)."""
    return frames * FRAME_STRIDE / SAMPLE_RATE
