"""The feed sizes both server backends expose, read from their :class:`~xtrans.frames.StreamGeometry`, and the
PyTorch backend's call size (torch-free: ``serve --onnx`` reads it too)."""

from __future__ import annotations

from xtrans.frames import StreamGeometry

DEFAULT_BATCH_ROWS = 4
"""Streams per model call of :class:`~xtrans.serve.backend.TorchBackend` (its docstring says why a fixed
number; ``bench/serve.py`` measures what it costs)."""


class FeedSizes:
    """``chunk_samples``, ``extra_samples`` and ``frame_samples`` of a backend's ``geometry``."""

    geometry: StreamGeometry

    @property
    def chunk_samples(self) -> int:
        """``geometry.samples_per_call``: 16 kHz samples per call after the first."""
        return self.geometry.samples_per_call

    @property
    def extra_samples(self) -> int:
        """``geometry.prime_samples``: samples of the first call of a segment."""
        return self.geometry.prime_samples

    @property
    def frame_samples(self) -> int:
        """``geometry.stride``: samples per encoder frame."""
        return self.geometry.stride
