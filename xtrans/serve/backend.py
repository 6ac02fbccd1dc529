"""What the server's decoding loop needs from a recognizer: batched streaming steps.

:class:`Backend` is the small interface the engine (:mod:`xtrans.serve.engine`) drives; a
backend holds no per-stream state of its own, only the model. A stream's state (one segment's
encoder and search state) is an opaque value the backend creates with :meth:`Backend.init` and
advances with :meth:`Backend.advance`, a batched call over streams whose states have the same
:meth:`Backend.batch_key`. :class:`TorchBackend` runs a :class:`~xtrans.inference.Speech2Text`
(PyTorch); an ONNX backend runs :mod:`xtrans.onnx`.

Every stream (every segment) is fed by the rule of the backend's :attr:`Backend.geometry`
(:class:`xtrans.frames.StreamGeometry`): its first ``prime_samples`` (80) samples alone, then
``samples_per_call`` per call (16 kHz), so each later call completes exactly one encoder chunk:
chunk ``c`` needs the waveform up to sample ``320 (c + 1) C + 80``. Streams fed this way keep
states of equal shapes, whichever chunk they are at, so they stack into one batch (with an
unbounded left context the key/value caches grow, and only streams at the same chunk of their
segment stack).

:func:`xtrans.serve.backend_for` gives the backend of a recognizer (either kind).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Hashable, Iterator, List, Optional, Protocol, Sequence, Union

import numpy as np
import torch

from xtrans.frames import StreamGeometry
from xtrans.masks import StreamingConfig
from xtrans.serve.geometry import DEFAULT_BATCH_ROWS, FeedSizes
from xtrans.search_core import BeamState, GreedyState, split_search_states, stack_search_states
from xtrans.streaming import EncoderState, StreamingEncoder, flatten_state, split_states, stack_states
from xtrans.transcription import Transcription


class Backend(Protocol):
    """A recognizer the engine can batch (see the module docstring).

    Attributes:
        geometry: how a segment is fed (16 kHz): ``prime_samples`` (80) in its first call,
            ``samples_per_call`` (``320 C``) in each later one, ``stride`` (320 = 20 ms) per frame.
        description: one line for the log (model, streaming rule, search).
    """

    geometry: StreamGeometry
    description: str

    def stream_context(self, hotwords: Optional[Sequence[str]] = None, hotwords_score: Optional[float] = None) -> Any:
        """What steers a stream's search: the recognizer's LM and the stream's hotwords (None: the
        recognizer's defaults) as its scorer (:meth:`xtrans.context.SearchContext.scorer`).

        Raises:
            ValueError: for hotwords the recognizer cannot take (greedy search, a phrase its
                tokens cannot spell, a bad score).
        """

    def init(self, context: Any = None) -> Any:
        """A fresh stream state (before the first sample of a segment) with the stream's
        :meth:`stream_context` (None: the recognizer's default)."""

    def batch_key(self, state: Any) -> Hashable:
        """States with equal keys can share one :meth:`advance` call."""

    def advance(self, states: Sequence[Any], audio: np.ndarray) -> List[Any]:
        """Feeds ``audio`` (B, n) float32, 16 kHz, row ``b`` to stream ``b``; returns the new states."""

    def finish(self, state: Any, audio: np.ndarray) -> Any:
        """Feeds a stream's last samples ``(n,)`` (any ``n``, also 0) and ends it."""

    def result(self, state: Any) -> Transcription:
        """The best result so far; timestamps in seconds from the start of the segment."""

    def num_frames(self, state: Any) -> int:
        """Encoder frames decoded so far in the segment."""


@dataclass(frozen=True)
class TorchStream:
    """One stream of a :class:`TorchBackend`: the encoder's and the search's states (batch 1)."""

    encoder: EncoderState
    search: Union[GreedyState, BeamState]


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Torch's CPU threads set to 1 inside (process-wide, as torch's setting is), then restored."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TorchBackend(FeedSizes):
    """A :class:`~xtrans.inference.Speech2Text` (PyTorch) as a :class:`Backend`.

    Batches are computed exactly: every call of the model takes ``batch_rows`` streams, whatever
    the batch the engine gives — a smaller one is filled up with copies of its first stream (their
    results are dropped), a larger one is computed ``batch_rows`` streams at a time. PyTorch's CPU
    kernels divide and round their work by the shapes of a call, so on calls of varying size a
    stream's frames depend (by up to a few 1e-6) on which streams share its batch, which can flip a
    near tie of the search; with one shape they do not (``test/test_serve_engine.py`` checks it bit
    for bit, on 1 and 2 threads). The search runs on one torch thread whatever the encoder uses: on
    more, the kernels also split a call's rows between threads, and on an AMD EPYC a row's result in
    calls of 5-11 rows then depends on its place in the call (a stream's in a batch); its calls are
    too small for threads to pay. The price is compute for the filler rows when few streams are live.

    Args:
        s2t: the recognizer (model, tokenizer, search).
        streaming: the streaming rule (default ``s2t.streaming``); needs a chunk size.
        batch_rows: streams per model call (>= 1; see above).

    Raises:
        ValueError: when there is no chunk size, or for ``batch_rows`` < 1.
    """

    def __init__(self, s2t, streaming: Optional[StreamingConfig] = None, *, batch_rows: int = DEFAULT_BATCH_ROWS):
        streaming = streaming if streaming is not None else s2t.streaming
        if streaming is None or streaming.is_full:
            raise ValueError("streaming: expected a rule with a chunk size (e.g. StreamingConfig.from_ms(640, 640)), "
                             f"found {streaming.describe() if streaming else None}")
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError(f"batch_rows: expected an integer >= 1, found {batch_rows!r}")
        self.s2t = s2t
        self.batch_rows = batch_rows
        self.streaming = streaming
        self.encoder = StreamingEncoder(s2t.model.encoder, streaming)
        self.geometry = StreamGeometry.of_frontend(s2t.model.encoder.feature_extractor, streaming.chunk_size)
        self.description = f"PyTorch, {streaming.describe()}, {s2t.search_name} search"

    def stream_context(self, hotwords: Optional[Sequence[str]] = None, hotwords_score: Optional[float] = None) -> Any:
        return self.s2t.context.scorer(hotwords, hotwords_score)

    def init(self, context: Any = None) -> TorchStream:
        device = self.s2t.device
        scorer = self.s2t.context.scorer() if context is None else context
        return TorchStream(self.encoder.init_state(1, device), self.s2t.new_search_state(scorer, device))

    def batch_key(self, state: TorchStream) -> Hashable:
        return tuple(tuple(t.shape[1:]) for _, t in flatten_state(state.encoder))

    def advance(self, states: Sequence[TorchStream], audio: np.ndarray) -> List[TorchStream]:
        rows = self.batch_rows
        out: List[TorchStream] = []
        for begin in range(0, len(states), rows):  # calls of exactly batch_rows streams (class docstring)
            group, samples = list(states[begin:begin + rows]), audio[begin:begin + rows]
            filler = rows - len(group)
            if filler:
                group += [group[0]] * filler
                samples = np.concatenate([samples, np.repeat(samples[:1], filler, axis=0)])
            out += self._call(group, samples)[:rows - filler]
        return out

    @torch.no_grad()
    def _call(self, states: Sequence[TorchStream], audio: np.ndarray) -> List[TorchStream]:
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.s2t.device)
        encoder = states[0].encoder if len(states) == 1 else stack_states([s.encoder for s in states])
        search = states[0].search if len(states) == 1 else stack_search_states([s.search for s in states])
        frames, counts, encoder = self.encoder.forward_chunk(x, encoder)
        search = self._search(frames, counts, search)
        if len(states) == 1:
            return [TorchStream(encoder, search)]
        return [TorchStream(e, s) for e, s in zip(split_states(encoder), split_search_states(search))]

    @torch.no_grad()
    def finish(self, state: TorchStream, audio: np.ndarray) -> TorchStream:
        encoder, search = state.encoder, state.search
        steps = []
        if len(audio):
            x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.s2t.device)[None]
            frames, counts, encoder = self.encoder.forward_chunk(x, encoder)
            steps.append((frames, counts))
        frames, counts, encoder = self.encoder.finalize(encoder)
        steps.append((frames, counts))
        for frames, counts in steps:
            search = self._search(frames, counts, search)
        return TorchStream(encoder, search)

    def _search(self, frames: torch.Tensor, counts: torch.Tensor,
                search: Union[GreedyState, BeamState]) -> Union[GreedyState, BeamState]:
        """The search advanced by a chunk's frames (if it has any), on one torch thread (class docstring)."""
        if not frames.shape[1]:
            return search
        with _one_torch_thread():
            return self.s2t.search.step(frames, search, counts)

    def result(self, state: TorchStream) -> Transcription:
        return self.s2t.transcription(state.search)

    def num_frames(self, state: TorchStream) -> int:
        return int(state.search.num_frames[0])
