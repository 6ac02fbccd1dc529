"""The feed sizes both server backends expose, read from their :class:`~xtrans.frames.StreamGeometry` (torch-free)."""

from __future__ import annotations

from xtrans.frames import StreamGeometry


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
