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

This is the geometry the rest of the library assumes (data checks, streaming, timestamps);
the CNN in :mod:`xtrans.models.wav2vec2` derives its own stride and receptive field from its
convolution layers, which for XLSR-53 are these numbers.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Optional, Union, overload

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


@overload
def num_frames(samples: int) -> int: ...
@overload
def num_frames(samples: "torch.Tensor") -> "torch.Tensor": ...


def num_frames(samples: Union[int, "torch.Tensor"]) -> Union[int, "torch.Tensor"]:
    """Encoder frames of a waveform of ``S`` samples at 16 kHz.

    ``T = (S - 400) // 320 + 1`` for ``S >= 400``, else 0 (frame ``k`` reads samples
    ``[320 k, 320 k + 400)`` and exists only when all of them do).

    Args:
        samples: ``S``, a Python int or an integer tensor of any shape (e.g. lengths ``(B,)``).

    Returns:
        ``T``, of the same kind: an int, or an int64 tensor of the same shape.

    Raises:
        TypeError: if ``samples`` is neither an int nor an integer tensor.
    """
    if type(samples).__module__.startswith("torch"):  # a tensor (torch imported by whoever made it)
        import torch
        if samples.dtype.is_floating_point or samples.dtype.is_complex or samples.dtype == torch.bool:
            raise TypeError(f"samples: expected an integer tensor, found dtype {samples.dtype}")
        return torch.clamp((samples.long() - RECEPTIVE_FIELD) // FRAME_STRIDE + 1, min=0)
    if isinstance(samples, bool):
        raise TypeError("samples: expected an int or an integer tensor, found bool")
    try:
        count = operator.index(samples)  # int, numpy integers
    except TypeError:
        raise TypeError(f"samples: expected an int or an integer tensor, "
                        f"found {type(samples).__name__}") from None
    return max(0, (count - RECEPTIVE_FIELD) // FRAME_STRIDE + 1)


def samples_for_chunk(chunk_index: int, chunk_size: int) -> int:
    """Samples needed before chunk ``c`` of ``C`` frames is complete: ``320 (c + 1) C + 80``.

    The chunk's last frame ``(c + 1) C - 1`` reads up to sample ``320 ((c + 1) C - 1) + 400
    = 320 (c + 1) C + 80`` (exclusive), so ``num_frames(samples_for_chunk(c, C)) == (c + 1) C``
    and one sample fewer gives one frame less.

    Raises:
        ValueError: if ``chunk_index < 0`` or ``chunk_size < 1``.
    """
    if chunk_index < 0:
        raise ValueError(f"chunk_index: expected >= 0, found {chunk_index}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1 frame, found {chunk_size}")
    return FRAME_STRIDE * (chunk_index + 1) * chunk_size + RECEPTIVE_FIELD - FRAME_STRIDE


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
