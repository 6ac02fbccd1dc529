"""An ONNX export (:mod:`xtrans.onnx`, onnxruntime) as a :class:`~xtrans.serve.backend.Backend`.

The export's encoder takes a batch of streams (every state tensor has the stream axis first,
``"B"`` in ``config.json``'s ``state_shapes``), so the streams of a batch are joined by
concatenating their states and split by slicing them; the numpy searches' states
(:class:`xtrans.onnx.search.GreedyState` / ``BeamState``) are joined and split here too. Each
stream is fed as :class:`xtrans.onnx.OnnxStreamingSession` feeds it, by the export's
:class:`~xtrans.frames.StreamGeometry`: ``prime_samples`` through ``encoder_start.onnx``, then
calls of ``samples_per_call`` samples, and a last zero-padded call for the rest, so a final
equals that session's result on the same audio. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Hashable, List, Optional, Sequence, Union

import numpy as np

from xtrans.onnx import OnnxSpeech2Text
from xtrans.onnx.search import BeamState, GreedyState
from xtrans.transcription import Transcription


@dataclass(frozen=True)
class OnnxStream:
    """One stream: the encoder state (name -> (1, ...) array), primed or not, and the search state."""

    encoder: Dict[str, np.ndarray]
    primed: bool
    search: Union[GreedyState, BeamState]


def stack_onnx_search_states(states: Sequence[Union[GreedyState, BeamState]]) -> Union[GreedyState, BeamState]:
    """Joins numpy search states of streams into one batch (as :func:`xtrans.search.batch.stack_search_states`)."""
    if isinstance(states[0], GreedyState):
        return GreedyState(context=np.concatenate([s.context for s in states]),
                           predictor_out=np.concatenate([s.predictor_out for s in states]),
                           tokens=[list(t) for s in states for t in s.tokens],
                           timestamps=[list(t) for s in states for t in s.timestamps],
                           scores=np.concatenate([s.scores for s in states]),
                           num_frames=np.concatenate([s.num_frames for s in states]))
    offsets = np.cumsum([0] + [s.batch_size for s in states[:-1]])
    return BeamState(stream=np.concatenate([s.stream + o for s, o in zip(states, offsets)]),
                     tokens=[t for s in states for t in s.tokens], timestamps=[t for s in states for t in s.timestamps],
                     scores=np.concatenate([s.scores for s in states]),
                     context=np.concatenate([s.context for s in states]),
                     predictor_out=np.concatenate([s.predictor_out for s in states]),
                     num_frames=np.concatenate([s.num_frames for s in states]))


def split_onnx_search_states(state: Union[GreedyState, BeamState]) -> List[Union[GreedyState, BeamState]]:
    """One numpy search state per stream (the inverse of :func:`stack_onnx_search_states`)."""
    if isinstance(state, GreedyState):
        return [GreedyState(context=state.context[b:b + 1], predictor_out=state.predictor_out[b:b + 1],
                            tokens=[list(state.tokens[b])], timestamps=[list(state.timestamps[b])],
                            scores=state.scores[b:b + 1], num_frames=state.num_frames[b:b + 1])
                for b in range(state.batch_size)]
    out = []
    for b in range(state.batch_size):
        rows = np.flatnonzero(state.stream == b)
        a, z = int(rows[0]), int(rows[-1]) + 1
        out.append(BeamState(stream=np.zeros(z - a, dtype=state.stream.dtype), tokens=state.tokens[a:z],
                             timestamps=state.timestamps[a:z], scores=state.scores[a:z], context=state.context[a:z],
                             predictor_out=state.predictor_out[a:z], num_frames=state.num_frames[b:b + 1]))
    return out


class OnnxBackend:
    """An :class:`~xtrans.onnx.OnnxSpeech2Text` as a batched server backend.

    Raises:
        ValueError: when the export is not at 16 kHz (the engine resamples to 16 kHz).
    """

    def __init__(self, s2t: OnnxSpeech2Text):
        cfg = s2t.config
        if cfg["sample_rate"] != 16000:
            raise ValueError(f"--onnx: expected an export at 16000 Hz, found {cfg['sample_rate']} Hz")
        self.s2t = s2t
        self.geometry = s2t.geometry
        self._states = list(zip(cfg["state_names"], cfg["state_shapes"], cfg["state_dtypes"]))
        self.description = (f"ONNX {s2t.directory}, chunk {cfg['frame_ms'] * cfg['chunk_frames']} ms, "
                            f"left {cfg.get('left_ms')} ms, {cfg.get('sinks')} sinks, {s2t.search_name} search")

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

    @classmethod
    def from_directory(cls, directory, *, search: str = "greedy", beam: int = 4, max_symbols: int = 3,
                       num_threads: Optional[int] = None) -> "OnnxBackend":
        return cls(OnnxSpeech2Text(directory, search=search, beam=beam, max_symbols=max_symbols,
                                   num_threads=num_threads))

    def init(self) -> OnnxStream:
        encoder = {name: np.zeros([1 if d == "B" else d for d in shape], dtype=np.dtype(dtype))
                   for name, shape, dtype in self._states}
        return OnnxStream(encoder, self.geometry.primed(0), self.s2t.search.init_state(1))

    def batch_key(self, state: OnnxStream) -> Hashable:
        return state.primed

    def advance(self, states: Sequence[OnnxStream], audio: np.ndarray) -> List[OnnxStream]:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        names = [name for name, _, _ in self._states]
        if not states[0].primed:  # encoder_start.onnx on the first prime_samples
            new = self.s2t.encoder_start.run(["new_" + n for n in names], {"samples": audio})
            return [OnnxStream({n: t[b:b + 1] for n, t in zip(names, new)}, True, s.search)
                    for b, s in enumerate(states)]
        encoder = {n: np.concatenate([s.encoder[n] for s in states]) for n in names}
        search = states[0].search if len(states) == 1 else stack_onnx_search_states([s.search for s in states])
        lengths = np.full(len(states), audio.shape[1], dtype=np.int64)
        encoder, search = self._call(encoder, search, audio, lengths)
        searches = [search] if len(states) == 1 else split_onnx_search_states(search)
        return [OnnxStream({n: t[b:b + 1] for n, t in encoder.items()}, True, searches[b])
                for b in range(len(states))]

    def _call(self, encoder: Dict[str, np.ndarray], search, samples: np.ndarray, num_samples: np.ndarray):
        names = list(encoder)
        frames, num_frames, *new = self.s2t.encoder.run(
            ["frames", "num_frames", *("new_" + n for n in names)],
            {"samples": samples, "num_samples": num_samples, **encoder})
        if frames.shape[1] and int(num_frames.max()) > 0:
            search = self.s2t.search.step(frames, search, num_frames.astype(np.int64))
        return dict(zip(names, new)), search

    def finish(self, state: OnnxStream, audio: np.ndarray) -> OnnxStream:
        audio = np.asarray(audio, dtype=np.float32)
        geometry = self.geometry
        fed = geometry.prime_samples if state.primed else 0  # the calls ahead depend only on this
        for n in geometry.calls(fed, len(audio), end=True):
            if n == geometry.call_size(fed):  # a whole call
                state = self.advance([state], audio[None, :n])[0]
            else:  # the last, zero-padded call
                padded = np.pad(audio[None, :n], ((0, 0), (0, geometry.samples_per_call - n)))
                encoder, search = self._call(state.encoder, state.search, padded, np.array([n], np.int64))
                state = OnnxStream(encoder, True, search)
            audio, fed = audio[n:], fed + n
        return state

    def result(self, state: OnnxStream) -> Transcription:
        return self.s2t.transcription(state.search)

    def num_frames(self, state: OnnxStream) -> int:
        return int(state.search.num_frames[0])
