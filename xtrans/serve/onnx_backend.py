"""An ONNX export (:mod:`xtrans.onnx`, onnxruntime) as a :class:`~xtrans.serve.backend.Backend`.

The export's encoder takes a batch of streams (every state tensor has the stream axis first,
``"B"`` in ``config.json``'s ``state_shapes``), so the streams of a batch are joined by
concatenating their states and split by slicing them; the searches' states are joined and split
by the search core (:func:`xtrans.search_core.stack_search_states`), as for PyTorch. Each
stream is fed as :class:`xtrans.onnx.OnnxStreamingSession` feeds it, by the export's
:class:`~xtrans.frames.StreamGeometry`: ``prime_samples`` through ``encoder_start.onnx``, then
calls of ``samples_per_call`` samples, and a last zero-padded call for the rest, so a final
equals that session's result on the same audio. Nothing here imports torch.

Batches are computed exactly: the export's sessions must run on one intra-op thread. On more,
onnxruntime divides a call's work among its threads by the shapes of the call, and a stream's
frames then depend (by up to a few 1e-6) on which streams share its batch, which can flip a near
tie of the search; on one thread every stream's rows are computed alike whatever the batch
(``test_runtime/test_runtime_serve.py`` checks both, bit for bit). A server uses more cores by
computing several batches at once (:attr:`xtrans.serve.server.ServerOptions.workers`). An int8
encoder (``--int8``: onnxruntime's dynamic quantisation) scales each call's activations by their
range over the whole batch, which changes a stream's frames by up to 0.1 with its neighbours, so
its encoder runs one stream per call (the search, on the float predictor and joiner, stays batched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Union

import numpy as np

from xtrans.onnx import OnnxSpeech2Text
from xtrans.serve.geometry import FeedSizes
from xtrans.search_core import BeamState, GreedyState, split_search_states, stack_search_states
from xtrans.transcription import Transcription


@dataclass(frozen=True)
class OnnxStream:
    """One stream: the encoder state (name -> (1, ...) array), primed or not, and the search state."""

    encoder: Dict[str, np.ndarray]
    primed: bool
    search: Union[GreedyState, BeamState]


class OnnxBackend(FeedSizes):
    """An :class:`~xtrans.onnx.OnnxSpeech2Text` as a batched server backend.

    Raises:
        ValueError: when the export is not at 16 kHz (the engine resamples to 16 kHz), or was not
            loaded with ``num_threads=1`` (see the module docstring).
    """

    def __init__(self, s2t: OnnxSpeech2Text):
        cfg = s2t.config
        if cfg["sample_rate"] != 16000:
            raise ValueError(f"--onnx: expected an export at 16000 Hz, found {cfg['sample_rate']} Hz")
        sessions = {"encoder": s2t.encoder, "encoder_start": s2t.encoder_start,
                    "predictor": s2t.decoder.predictor, "joiner": s2t.decoder.joiner}
        threads = {name: session.get_session_options().intra_op_num_threads for name, session in sessions.items()}
        if set(threads.values()) != {1}:
            raise ValueError("s2t: expected an export loaded with num_threads=1 (on more onnxruntime threads a "
                             "stream's results depend on the streams that share its batch; a server uses more "
                             f"cores with more workers), found intra-op threads {threads} (0: all cores)")
        self.s2t = s2t
        self.geometry = s2t.geometry
        self._states = list(zip(cfg["state_names"], cfg["state_shapes"], cfg["state_dtypes"]))
        int8 = "" if s2t.encoder_batch_invariant else ", int8 encoder one stream per call"
        self.description = (f"ONNX {s2t.directory}{int8}, chunk {cfg['frame_ms'] * cfg['chunk_frames']} ms, "
                            f"left {cfg.get('left_ms')} ms, {cfg.get('sinks')} sinks, {s2t.search_name} search")

    @classmethod
    def from_directory(cls, directory, *, search: str = "greedy", beam: int = 4, max_symbols: int = 3,
                       num_threads: int = 1) -> "OnnxBackend":
        return cls(OnnxSpeech2Text(directory, search=search, beam=beam, max_symbols=max_symbols,
                                   num_threads=num_threads))

    def stream_context(self, hotwords: Optional[Sequence[str]] = None, hotwords_score: Optional[float] = None) -> Any:
        return self.s2t.context.scorer(hotwords, hotwords_score)

    def init(self, context: Any = None) -> OnnxStream:
        encoder = {name: np.zeros([1 if d == "B" else d for d in shape], dtype=np.dtype(dtype))
                   for name, shape, dtype in self._states}
        scorer = self.s2t.context.scorer() if context is None else context
        return OnnxStream(encoder, self.geometry.primed(0), self.s2t.new_search_state(scorer))

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
        search = states[0].search if len(states) == 1 else stack_search_states([s.search for s in states])
        lengths = np.full(len(states), audio.shape[1], dtype=np.int64)
        encoder, search = self._call(encoder, search, audio, lengths)
        searches = [search] if len(states) == 1 else split_search_states(search)
        return [OnnxStream({n: t[b:b + 1] for n, t in encoder.items()}, True, searches[b])
                for b in range(len(states))]

    def _call(self, encoder: Dict[str, np.ndarray], search, samples: np.ndarray, num_samples: np.ndarray):
        names = list(encoder)
        outputs = ["frames", "num_frames", *("new_" + n for n in names)]
        if self.s2t.encoder_batch_invariant:
            frames, num_frames, *new = self.s2t.encoder.run(
                outputs, {"samples": samples, "num_samples": num_samples, **encoder})
        else:  # one stream per call (module docstring)
            rows = [self.s2t.encoder.run(outputs, {"samples": samples[b:b + 1], "num_samples": num_samples[b:b + 1],
                                                   **{n: t[b:b + 1] for n, t in encoder.items()}})
                    for b in range(len(samples))]
            frames, num_frames, *new = [np.concatenate(parts) for parts in zip(*rows)]
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
