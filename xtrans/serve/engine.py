"""The server's decoding loop without the network: streams, batching and endpointing.

An :class:`Engine` holds the live streams of a server. Audio comes in with :meth:`Engine.accept`
(any rate, resampled to 16 kHz incrementally as it arrives) and waits in the stream's buffer
until a whole chunk is there. One step of the loop then

1. :meth:`Engine.collect`: takes the next chunk of every stream that has one, grouped by the
   backend's :meth:`~xtrans.serve.backend.Backend.batch_key` (streams whose states stack) into
   batches of at most ``max_batch`` streams; a stream whose audio has ended and whose remaining
   samples are less than a chunk is finished on its own;
2. :meth:`Engine.compute`: runs each batch as one batched encoder call and one batched search
   step (:meth:`~xtrans.serve.backend.Backend.advance`). Pure: it reads the work and returns
   new states, so a server runs it in a worker thread while its event loop keeps receiving.
   When a batched call raises, each of its streams is retried alone, so that a fault stays with
   the stream that caused it;
3. :meth:`Engine.apply`: stores the new states and returns the :class:`Event` s for the clients
   (partials when the text changed, finals at endpoints and at the end, ``done``, errors).

Streams join and leave between steps; a stream's result does not depend on the streams that
shared its batches. :meth:`Engine.step` runs the three in one go; a server computes a step's
batches on its worker threads (``Engine(workers=n)`` keeps every batch small enough that each
worker gets some) and applies each batch's outcome as soon as it is computed, so that the first
batches' partials do not wait for the last ones.

Each segment is fed by the rule of the backend's :class:`~xtrans.frames.StreamGeometry`: its
first ``prime_samples`` (80) alone, then ``samples_per_call`` (320 C) per call, so every later
call completes one chunk and the states of streams at different chunks stack. The engine keeps
audio as numpy arrays (a backend that needs tensors converts them).

Endpointing (sherpa's rules): after each chunk, the current segment ends when it has emitted a
token and the last ``EndpointConfig.silence_ms`` of it emitted none, or when it is
``EndpointConfig.max_segment_s`` long (at the first chunk boundary at or past it). The segment's
final is sent and a new segment starts at the cut, a frame boundary, with a fresh encoder and
search state; the 80 samples past the cut that the last frame read are read again by the next
segment's first frame. A segment that reaches the maximum length without a token restarts
without a final. Times are seconds of 16 kHz audio from the start of the connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Optional, Tuple

import numpy as np

from xtrans.data.resample import ResampleState, init_resample_state, resample_chunk, resample_flush
from xtrans.frames import SAMPLE_RATE
from xtrans.serve.protocol import (CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, DONE, error_message, final_message,
                                   partial_message)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointConfig:
    """When a segment ends (module docstring); ``None`` turns a rule off.

    Attributes:
        silence_ms: trailing milliseconds without a token, after the segment's first token.
        max_segment_s: longest segment in seconds (rounded up to a whole chunk).
    """

    silence_ms: Optional[float] = 800.0
    max_segment_s: Optional[float] = 20.0

    def __post_init__(self):
        for name in ("silence_ms", "max_segment_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected a positive number or None (off), found {value}")


@dataclass
class Event:
    """A message for one stream's client.

    Attributes:
        stream: the stream id.
        message: the JSON object to send (:mod:`xtrans.serve.protocol`).
        close_code: when set, the connection is closed with this code after the message
            (1000 after ``done``, 1011 after a decoding error); the stream is gone from the engine.
    """

    stream: int
    message: Dict[str, Any]
    close_code: Optional[int] = None


@dataclass
class _Stream:
    """One connection's audio and decoding state."""

    id: int
    resampler: Optional[ResampleState]
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # 16 kHz, from buffer_start
    buffer_start: int = 0  # connection sample index of buffer[0]
    received: int = 0  # 16 kHz samples received so far
    ended: bool = False
    busy: bool = False  # a step is computing it
    segment: int = 0
    segment_start: int = 0  # connection sample index where the segment starts
    fed: int = 0  # samples of the segment given to the backend
    state: Any = None  # the backend's state of the segment; None = fresh
    context: Any = None  # what steers the stream's search (Backend.stream_context); None = the backend's default
    partial: str = ""  # the last text sent for the segment
    order: int = 0  # when it was last served (fairness)


@dataclass
class _Item:
    stream: int
    state: Any
    audio: np.ndarray
    finish: bool
    context: Any = None


@dataclass
class Work:
    """What :meth:`Engine.collect` took: batches of items (streams with their next audio)."""

    batches: List[List[_Item]]


@dataclass
class Outcome:
    """What :meth:`Engine.compute` made: per item, the new state and its result, or the exception."""

    items: List[Tuple[_Item, Any, Any, Optional[BaseException]]]


@dataclass
class EngineStats:
    """Counters since the engine started."""

    calls: int = 0  # batched backend calls
    chunks: int = 0  # stream chunks decoded
    max_batch: int = 0  # the largest batch so far
    streams_opened: int = 0
    errors: int = 0


def _pieces(batch: List[_Item], most: int) -> List[List[_Item]]:
    """``batch`` cut into the fewest consecutive pieces of at most ``most`` items, of about equal sizes."""
    n = -(-len(batch) // most)
    return [batch[i * len(batch) // n:(i + 1) * len(batch) // n] for i in range(n)]


class Engine:
    """The streams of a server and their batched decoding (module docstring).

    Args:
        backend: the recognizer (:class:`~xtrans.serve.backend.Backend`).
        endpoint: the endpointing rules.
        max_batch: most streams per batched call (>= 1); a backend with ``batch_rows`` (streams
            per model call, :class:`~xtrans.serve.backend.TorchBackend`) caps it at that, so that a
            batch is one model call and its results can go out as soon as it returns.
        workers: how many batches the caller computes at once (>= 1): :meth:`collect` makes no
            batch larger than ``1 / workers`` of the step's streams, so that every worker gets
            about as many.
    """

    def __init__(self, backend, endpoint: EndpointConfig = EndpointConfig(), max_batch: int = 32,
                 workers: int = 1):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: expected an integer >= 1, found {max_batch!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected an integer >= 1, found {workers!r}")
        self.backend = backend
        self.endpoint = endpoint
        self.max_batch = min(max_batch, getattr(backend, "batch_rows", max_batch))
        self.workers = workers
        self.stats = EngineStats()
        self._streams: Dict[int, _Stream] = {}
        self._next_id = 0
        self._clock = 0

    # ------------------------------------------------------------------ streams
    @property
    def num_streams(self) -> int:
        """Streams open in the engine."""
        return len(self._streams)

    def open(self, sample_rate: int = SAMPLE_RATE, context: Any = None) -> int:
        """A new stream whose audio comes at ``sample_rate`` Hz; returns its id.

        Args:
            sample_rate: the rate of the stream's audio (Hz).
            context: what steers its search, from the backend's
                :meth:`~xtrans.serve.backend.Backend.stream_context` (its hotwords); every segment
                of the stream starts with it. None = the backend's default.

        Raises:
            ValueError: for a rate the resampler cannot take.
        """
        resampler = None if sample_rate == SAMPLE_RATE else init_resample_state(int(sample_rate), SAMPLE_RATE)
        sid = self._next_id
        self._next_id += 1
        self._streams[sid] = _Stream(sid, resampler, context=context)
        self.stats.streams_opened += 1
        return sid

    def accept(self, stream: int, samples: np.ndarray) -> None:
        """Appends samples (n,) float32 at the stream's rate (resampled to 16 kHz here)."""
        s = self._streams[stream]
        if s.ended:
            raise ValueError(f"stream {stream}: its audio has ended")
        x = np.asarray(samples, dtype=np.float32)
        if s.resampler is not None:
            x, s.resampler = resample_chunk(x, s.resampler)
        self._append(s, x)

    def end(self, stream: int) -> None:
        """The stream's audio is over: it is decoded to the end, then gets its last final and ``done``."""
        s = self._streams[stream]
        if s.ended:
            return
        if s.resampler is not None:
            y, s.resampler = resample_flush(s.resampler)
            self._append(s, y)
        s.ended = True

    def close(self, stream: int) -> None:
        """Drops a stream at once (its client went away); unknown ids are ignored."""
        self._streams.pop(stream, None)

    def _append(self, s: _Stream, x: np.ndarray) -> None:
        if len(x):
            s.buffer = np.concatenate([s.buffer, x.astype(np.float32, copy=False)])
            s.received += len(x)

    # ------------------------------------------------------------------ one step
    def _need(self, s: _Stream) -> int:
        """Samples of the stream's next call (:meth:`StreamGeometry.call_size
        <xtrans.frames.StreamGeometry.call_size>`): the segment's first ``prime_samples`` alone (a
        fresh state's shapes differ from a running one's; after them they agree), then one chunk per call."""
        return self.backend.geometry.call_size(s.fed)

    def _available(self, s: _Stream) -> int:
        return s.buffer_start + len(s.buffer) - (s.segment_start + s.fed)

    def collect(self) -> Optional[Work]:
        """Takes the next chunk of every ready stream (module docstring); ``None`` when none is ready."""
        ready = sorted((s for s in self._streams.values() if not s.busy), key=lambda s: s.order)
        groups: Dict[Hashable, List[_Item]] = {}
        batches: List[List[_Item]] = []
        for s in ready:
            need, have = self._need(s), self._available(s)
            offset = s.segment_start + s.fed - s.buffer_start
            if have >= need:
                item = _Item(s.id, s.state, s.buffer[offset:offset + need], finish=False, context=s.context)
                key = ("init",) if s.state is None else ("state", self.backend.batch_key(s.state))
                group = groups.setdefault(key, [])
                if len(group) == self.max_batch:
                    group = groups[key] = []
                if not group:
                    batches.append(group)
                group.append(item)
            elif s.ended:
                batches.append([_Item(s.id, s.state, s.buffer[offset:], finish=True, context=s.context)])
            else:
                continue
            s.busy = True
        if self.workers > 1:  # no batch larger than a worker's share of the step's streams
            share = -(-sum(len(b) for b in batches) // self.workers)
            batches = [piece for batch in batches for piece in _pieces(batch, share)]
        for batch in batches:
            self.stats.calls += 1
            self.stats.max_batch = max(self.stats.max_batch, len(batch))
        return Work(batches) if batches else None

    def compute(self, work: Work) -> Outcome:
        """Runs the work's batches on the backend (thread-safe with respect to the engine: it
        touches nothing but ``work``)."""
        out: List[Tuple[_Item, Any, Any, Optional[BaseException]]] = []
        b = self.backend
        for batch in work.batches:
            if batch[0].finish:
                out += [self._run_one(item, lambda st, item=item: b.finish(st, item.audio)) for item in batch]
                continue
            states = [b.init(item.context) if item.state is None else item.state for item in batch]
            try:
                new = b.advance(states, np.stack([item.audio for item in batch]))
                out += [(item, st, b.result(st), None) for item, st in zip(batch, new)]
            except Exception:  # find the stream at fault: each alone
                if len(batch) == 1:
                    logger.exception("decoding stream %d failed", batch[0].stream)
                out += [self._run_one(item, lambda st, item=item: b.advance([st], item.audio[None])[0],
                                      log=len(batch) > 1)
                        for item in batch]
        return Outcome(out)

    def _run_one(self, item: _Item, run, log: bool = True) -> Tuple[_Item, Any, Any, Optional[BaseException]]:
        try:
            state = run(self.backend.init(item.context) if item.state is None else item.state)
            return item, state, self.backend.result(state), None
        except Exception as err:
            if log:
                logger.exception("decoding stream %d failed", item.stream)
            return item, None, None, err

    def apply(self, outcome: Outcome) -> List[Event]:
        """Stores the outcome's states; returns the events for the clients, in order per stream."""
        events: List[Event] = []
        for item, state, result, err in outcome.items:
            s = self._streams.get(item.stream)
            if s is None:  # the client went away meanwhile
                continue
            s.busy = False
            self._clock += 1
            s.order = self._clock
            if err is not None:
                events.append(self._fail(s, err))
                continue
            try:
                events += self._advance(s, item, state, result)
            except Exception as apply_err:  # never the whole loop for one stream
                logger.exception("stream %d: handling its result failed", s.id)
                events.append(self._fail(s, apply_err))
        return events

    def step(self) -> List[Event]:
        """One step of the loop (collect, compute, apply) in the calling thread; [] when idle."""
        work = self.collect()
        if work is None:
            return []
        return self.apply(self.compute(work))

    # ------------------------------------------------------------------ results
    def _fail(self, s: _Stream, err: BaseException) -> Event:
        self.stats.errors += 1
        self.close(s.id)
        return Event(s.id, error_message(f"decoding failed: {type(err).__name__}: {err}"), CLOSE_INTERNAL_ERROR)

    def _advance(self, s: _Stream, item: _Item, state: Any, result) -> List[Event]:
        b = self.backend
        s.state = state
        s.fed += len(item.audio)
        self.stats.chunks += 1
        frames = b.num_frames(state)
        if item.finish:
            final = self._final(s, result, s.received)
            self.close(s.id)
            return [Event(s.id, final), Event(s.id, dict(DONE), CLOSE_NORMAL)]
        # the next segment would start at the cut: drop what no later call reads
        stride = b.geometry.stride
        keep = s.segment_start + stride * frames - s.buffer_start
        if keep > 0:
            s.buffer = s.buffer[keep:]
            s.buffer_start += keep
        events = []
        if result.text != s.partial:
            s.partial = result.text
            events.append(Event(s.id, partial_message(s.segment, result.text)))
        reason = self._endpoint(frames, result)
        if reason is not None:
            cut = s.segment_start + stride * frames
            if result.tokens:
                events.append(Event(s.id, self._final(s, result, cut)))
                s.segment += 1
            logger.debug("stream %d: segment ends at %.2f s (%s)", s.id, cut / SAMPLE_RATE, reason)
            s.segment_start, s.fed, s.state, s.partial = cut, 0, None, ""
        return events

    def _endpoint(self, frames: int, result) -> Optional[str]:
        """Why the segment ends after this chunk (``None``: it goes on)."""
        frame_s = self.backend.geometry.stride / SAMPLE_RATE
        length_s = frames * frame_s
        if result.tokens and self.endpoint.silence_ms is not None:
            trailing_s = length_s - (result.timestamps[-1] + frame_s)
            if trailing_s * 1000 >= self.endpoint.silence_ms - 1e-6:
                return f"{trailing_s * 1000:.0f} ms without a token"
        if self.endpoint.max_segment_s is not None and length_s >= self.endpoint.max_segment_s - 1e-9:
            return f"{length_s:.2f} s long"
        return None

    def _final(self, s: _Stream, result, end_sample: int) -> Dict[str, Any]:
        start = s.segment_start / SAMPLE_RATE
        return final_message(s.segment, result.text, start, end_sample / SAMPLE_RATE, result.pieces, result.tokens,
                             [start + t for t in result.timestamps])
