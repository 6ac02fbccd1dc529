"""Streaming speech recognition from an ONNX export, on onnxruntime + numpy (no torch).

::

    s2t = OnnxSpeech2Text("exp/onnx", search="beam", beam=4)
    session = s2t.stream()
    for piece in pieces:                      # float32 samples at 16 kHz, any piece size
        partial = session.accept_waveform(piece, sample_rate=16000)
    final = session.finalize()                # .text, .tokens, .pieces, .timestamps (s)
    s2t.transcribe(samples).text              # a whole utterance, through the same session

The export directory's layout is described in :mod:`xtrans.onnx.config`. A session feeds the
encoder by the rule of :class:`xtrans.frames.StreamGeometry` (read from ``config.json``): the
first ``prime_samples`` (80) samples prime it (``encoder_start.onnx``), then every
``samples_per_call`` (320 C) further samples make one encoder call that returns the chunk's
``C`` frames; at :meth:`~OnnxStreamingSession.finalize` the remaining ``r`` samples (zero-padded,
``num_samples = r``) give ``r // 320`` last frames. Each call's valid frames advance the search
(:mod:`xtrans.onnx.search`: the search core, :mod:`xtrans.search_core`, that :mod:`xtrans.search`
runs too), so with the same streaming rule and search settings the tokens equal
:meth:`xtrans.inference.Speech2Text.stream`'s.

:class:`OnnxSpeech2Text` and its session implement :class:`xtrans.transcription.Recognizer` and
:class:`~xtrans.transcription.RecognizerSession`, as :class:`xtrans.inference.Speech2Text` does.

Audio at another rate is resampled to the export's (16 kHz) as it arrives, by the streaming
resampler of :mod:`xtrans.data.resample` (on numpy arrays: no torch), as ``Speech2Text`` does.

With modified beam search the recognizer takes an n-gram LM (``lm``, ``lm_scale``) and hotwords
(``hotwords``, ``hotwords_score``; per stream: ``stream(hotwords=[...])``), as ``Speech2Text``
does (``docs/decoding.md``). Phrases are spelled with ``tokens.txt``
(:class:`xtrans.context.pieces.PieceEncoder`, exact for a BPE tokenizer), or with the
sentencepiece model when the export directory holds one as ``bpe.model``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort

from xtrans.data.resample import ResampleState, init_resample_state, resample_chunk, resample_flush
from xtrans.frames import frames_to_ms
from xtrans.onnx.config import (CONFIG_FILE, DEFAULT_ENCODER_FILE, JOINER_FILE, PREDICTOR_FILE, TOKENS_FILE,
                                check_metadata, decode_metadata, load_config, stream_geometry)
from xtrans.context import DEFAULT_HOTWORDS_SCORE, DEFAULT_LM_SCALE, SearchContext
from xtrans.context.pieces import spelling
from xtrans.onnx.search import GreedySearch, ModifiedBeamSearch
from xtrans.search_core.scorer import Scorer
from xtrans.transcription import SearchTranscriber, SessionResults, TokenTable, Transcription

logger = logging.getLogger(__name__)

SEARCHES = ("greedy", "beam")
SPELLING_MODEL = "bpe.model"
"""A sentencepiece model in the export directory, used (when there) to spell hotwords."""


def _session(path: Path, num_threads: Optional[int], providers: Optional[Sequence[str]]) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the ONNX export in {path.parent} is incomplete "
                                "(python -m xtrans.bin.export_onnx writes encoder, predictor and joiner)")
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def _check_io(session: ort.InferenceSession, path: Path, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Raises ValueError when the model lacks one of the contract's input/output names."""
    for kind, expected, found in (("inputs", inputs, [i.name for i in session.get_inputs()]),
                                  ("outputs", outputs, [o.name for o in session.get_outputs()])):
        missing = [name for name in expected if name not in found]
        if missing:
            raise ValueError(f"{path}: {kind}: expected {list(expected)}, found {found} (missing {missing}); "
                             "re-export with python -m xtrans.bin.export_onnx")


class OnnxDecoder:
    """``predictor.onnx`` and ``joiner.onnx`` as the decoder of :mod:`xtrans.onnx.search`.

    Args:
        predictor: session of ``context (N, K) int64 -> predictor_out (N, D_pred)``.
        joiner: session of ``encoder_out (N, D), predictor_out (N, D_pred) -> logits (N, V)``.
        blank: the blank id.
        context_size: ``K``.
    """

    def __init__(self, predictor: ort.InferenceSession, joiner: ort.InferenceSession, *, blank: int,
                 context_size: int):
        self.predictor = predictor
        self.joiner = joiner
        self.blank = blank
        self.context_size = context_size

    def predict(self, context: np.ndarray) -> np.ndarray:
        """(N, K) last tokens -> (N, D_pred) float32."""
        return self.predictor.run(["predictor_out"], {"context": np.ascontiguousarray(context, dtype=np.int64)})[0]

    def join(self, encoder_out: np.ndarray, predictor_out: np.ndarray) -> np.ndarray:
        """(N, D), (N, D_pred) -> logits (N, V) float32."""
        return self.joiner.run(["logits"], {
            "encoder_out": np.ascontiguousarray(encoder_out, dtype=np.float32),
            "predictor_out": np.ascontiguousarray(predictor_out, dtype=np.float32)})[0]


def as_mono(samples: np.ndarray, name: str = "samples") -> Tuple[np.ndarray, int]:
    """An (S,) or channels-last (S, C) array -> ((S,) float32 mono, C); integer PCM is scaled to [-1, 1).

    Raises:
        TypeError: for something that is not a numpy array (or array-like of numbers).
        ValueError: for another rank.
    """
    if isinstance(samples, (str, bytes, os.PathLike)) or not hasattr(samples, "__len__"):
        raise TypeError(f"{name}: expected a numpy array of samples, found {type(samples).__name__}")
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.integer):
        offset = 128.0 if x.dtype == np.uint8 else 0.0
        scale = 128.0 if x.dtype == np.uint8 else float(2 ** (8 * x.dtype.itemsize - 1))
        x = (x.astype(np.float32) - offset) / scale
    elif not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected float or integer PCM samples, found dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.ndim == 1:
        return x, 1
    if x.ndim == 2:
        return x.mean(axis=1, dtype=np.float32), x.shape[1]
    raise ValueError(f"{name}: expected (S,) or channels-last (S, C) samples, found shape {x.shape}")


class OnnxSpeech2Text(SearchTranscriber):
    """Decodes speech with an ONNX export (the runtime twin of :class:`xtrans.inference.Speech2Text`,
    a :class:`~xtrans.transcription.Recognizer`).

    The streaming rule (chunk, left context, sinks) is fixed by the export; see :attr:`config`,
    and :attr:`geometry` for how a stream is fed to the encoder.

    Args:
        directory: the export directory (``config.json``, encoder/predictor/joiner ``.onnx``,
            ``tokens.txt``).
        search: ``greedy`` or ``beam`` (modified beam search).
        beam: beam size for ``beam``.
        max_symbols: most tokens per frame for ``greedy`` (as :class:`Speech2Text`'s default, 3).
        nbest: hypotheses kept in :attr:`Transcription.nbest` for ``beam`` (default: the beam).
        num_threads: onnxruntime intra-op threads per model (None = onnxruntime's default).
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        encoder_file: the encoder model to load, a file name in ``directory`` (default
            ``config.json``'s ``encoder_file``: the int8 encoder of an ``--int8`` export); e.g.
            ``"encoder.onnx"`` for the float encoder of an ``--int8`` export.
        lm: an ARPA n-gram LM over the export's pieces, fused into ``beam`` search; None = no LM.
        lm_scale: the LM's weight.
        hotwords: phrases (``PHRASE`` or ``PHRASE :SCORE``) boosted in every stream that brings
            none of its own (``beam`` search).
        hotwords_score: the per-token boost of phrases without their own.

    Raises:
        FileNotFoundError: when the directory or one of its files is missing.
        ValueError: for a bad ``search``/``beam``/``max_symbols``/``nbest``, an invalid
            ``config.json``, a model without the expected inputs/outputs, a model file from another
            export, a ``tokens.txt`` of another size (or a ``bpe.model`` with other pieces), an LM
            or hotwords with greedy search, or a phrase the tokens cannot spell.
    """

    def __init__(self, directory: Union[str, os.PathLike], *, search: str = "greedy", beam: int = 4,
                 max_symbols: int = 3, nbest: Optional[int] = None, num_threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, encoder_file: Optional[str] = None, lm=None,
                 lm_scale: float = DEFAULT_LM_SCALE, hotwords: Optional[Sequence[str]] = None,
                 hotwords_score: float = DEFAULT_HOTWORDS_SCORE):
        if search not in SEARCHES:
            raise ValueError(f"search: expected one of {SEARCHES}, found {search!r}")
        if nbest is not None and nbest < 1:
            raise ValueError(f"nbest: expected >= 1 or None, found {nbest}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads: expected >= 1 or None, found {num_threads}")
        self.directory = Path(directory)
        self.config: Dict[str, Any] = load_config(self.directory)
        cfg = self.config
        tokens_path = self.directory / TOKENS_FILE
        if not tokens_path.is_file():
            raise FileNotFoundError(f"{tokens_path} does not exist: the ONNX export in {self.directory} "
                                    "is incomplete")
        self.tokenizer = TokenTable(tokens_path)
        if self.tokenizer.vocab_size != cfg["vocab_size"]:
            raise ValueError(f"{tokens_path}: expected {cfg['vocab_size']} tokens (vocab_size of {CONFIG_FILE}), "
                             f"found {self.tokenizer.vocab_size}")

        self.geometry = stream_geometry(cfg)
        self.frame_ms: int = cfg["frame_ms"]
        encoder_path = self.directory / (encoder_file or cfg.get("encoder_file") or DEFAULT_ENCODER_FILE)
        self.encoder_file = encoder_path.name
        self.encoder = _session(encoder_path, num_threads, providers)
        # dynamic quantisation scales a call's activations by their range over the whole batch
        self.encoder_batch_invariant: bool = b"DynamicQuantizeLinear" not in encoder_path.read_bytes()
        models = [(self.encoder, encoder_path)]
        states = cfg["state_names"]
        start_path = self.directory / cfg["encoder_start_file"]
        self.encoder_start = _session(start_path, num_threads, providers)
        _check_io(self.encoder_start, start_path, ["samples"], ["new_" + s for s in states])
        models.append((self.encoder_start, start_path))
        predictor = _session(self.directory / PREDICTOR_FILE, num_threads, providers)
        joiner = _session(self.directory / JOINER_FILE, num_threads, providers)
        _check_io(self.encoder, encoder_path, ["samples", "num_samples", *states],
                  ["frames", "num_frames", *("new_" + s for s in states)])
        _check_io(predictor, self.directory / PREDICTOR_FILE, ["context"], ["predictor_out"])
        _check_io(joiner, self.directory / JOINER_FILE, ["encoder_out", "predictor_out"], ["logits"])
        models += [(predictor, self.directory / PREDICTOR_FILE), (joiner, self.directory / JOINER_FILE)]
        for session, path in models:
            check_metadata(cfg, decode_metadata(session.get_modelmeta().custom_metadata_map), str(path))

        self.decoder = OnnxDecoder(predictor, joiner, blank=cfg["blank_id"], context_size=cfg["context_size"])
        self.search_name = search
        self.nbest = nbest
        self.search = (GreedySearch(self.decoder, max_symbols) if search == "greedy"
                       else ModifiedBeamSearch(self.decoder, beam))
        pieces = [self.tokenizer.id_to_token(i) for i in range(self.tokenizer.vocab_size)]
        encode, unk_id = spelling(self._spelling_tokenizer(pieces))
        self.context = SearchContext(search=search, pieces=pieces, encode=encode, unk_id=unk_id, lm=lm,
                                     lm_scale=lm_scale, hotwords=hotwords, hotwords_score=hotwords_score)
        logger.info("loaded ONNX export %s (V=%d, chunk %d ms, left %s ms, %s sinks, %s search)",
                    self.directory, cfg["vocab_size"], cfg["frame_ms"] * cfg["chunk_frames"],
                    cfg.get("left_ms"), cfg.get("sinks"), search)

    def _spelling_tokenizer(self, pieces: Sequence[str]):
        """The export's ``bpe.model`` when it has one (checked against ``tokens.txt``), else its token table."""
        path = self.directory / SPELLING_MODEL
        if not path.is_file():
            return self.tokenizer
        try:
            from xtrans.tokenizer import Tokenizer  # sentencepiece: not part of a runtime install
        except ImportError as err:
            raise ImportError(f"{path}: spelling hotwords with a sentencepiece model needs sentencepiece "
                              f"(pip install sentencepiece); or remove it to spell with {TOKENS_FILE}") from err
        model = Tokenizer(path)
        if [model.id_to_token(i) for i in range(model.vocab_size)] != list(pieces):
            raise ValueError(f"{path}: its pieces differ from {TOKENS_FILE}'s; put the model's own tokenizer there "
                             "(or none: phrases are then spelled with tokens.txt)")
        return model

    @property
    def sample_rate(self) -> int:
        """The sample rate the export expects (Hz)."""
        return self.config["sample_rate"]

    def stream(self, *, hotwords: Optional[Sequence[str]] = None,
               hotwords_score: Optional[float] = None) -> "OnnxStreamingSession":
        """Opens a streaming session (the export's streaming rule).

        Args:
            hotwords: this stream's phrases (``PHRASE`` or ``PHRASE :SCORE``), instead of the
                recognizer's default hotwords (``[]``: none); needs ``search="beam"``.
            hotwords_score: their per-token boost (default: the recognizer's ``hotwords_score``).

        Raises:
            ValueError: for hotwords with greedy search, or a phrase the tokens cannot spell.
        """
        return OnnxStreamingSession(self, self.context.scorer(hotwords, hotwords_score))

    def settings(self) -> Dict[str, Any]:
        """What decodes, as JSON values: the export (``onnx``, ``onnx_encoder``: the encoder file
        loaded), ``device``, the export's streaming rule (``chunk_ms``, ``left_ms``, ``sinks``) and
        ``search`` (``pos_conv`` is not recorded in an export: None), and the context (``lm``,
        ``lm_scale``, ``hotwords``: :meth:`SearchContext.describe <xtrans.context.SearchContext.describe>`)."""
        cfg = self.config
        return {"onnx": str(self.directory), "onnx_encoder": self.encoder_file, "device": "cpu (onnxruntime)",
                "pos_conv": None, "chunk_ms": frames_to_ms(cfg["chunk_frames"]),
                "left_ms": frames_to_ms(cfg.get("left_frames")), "sinks": cfg.get("sinks", 0),
                "search": self.search_name, **self.context.describe()}

    def transcribe(self, audio: Union[str, os.PathLike, np.ndarray], sample_rate: Optional[int] = None, *,
                   hotwords: Optional[Sequence[str]] = None, hotwords_score: Optional[float] = None) -> Transcription:
        """Decodes one whole utterance through a streaming session (the recognizer's LM, and its
        default hotwords or the utterance's own).

        Args:
            audio: samples ``(S,)`` or channels-last ``(S, C)`` (float, or integer PCM), or the
                path of a WAV/FLAC/... file (read with soundfile, at its own rate).
            sample_rate: the rate of array input in Hz (default: the export's, 16 kHz); other
                rates are resampled.
            hotwords, hotwords_score: this utterance's phrases and their boost, as in :meth:`stream`.

        Raises:
            ValueError: for audio that is not finite or shorter than one encoder frame (25 ms),
                or a bad sample rate; as :meth:`stream` for hotwords.
        """
        session = self.stream(hotwords=hotwords, hotwords_score=hotwords_score)  # bad hotwords fail first
        if isinstance(audio, (str, os.PathLike)):
            import soundfile

            samples, rate = soundfile.read(str(audio), dtype="float32", always_2d=True)
            where = str(audio)
        else:
            samples, rate, where = audio, self.sample_rate if sample_rate is None else sample_rate, "audio"
        wave, _ = as_mono(samples, where)
        frame_samples = self.geometry.receptive_field
        if wave.shape[0] * self.sample_rate < frame_samples * rate:
            raise ValueError(f"{where}: expected at least {1000 * frame_samples / self.sample_rate:g} ms of audio "
                             f"(one encoder frame), found {wave.shape[0]} samples at {rate} Hz")
        if not np.isfinite(wave).all():
            raise ValueError(f"{where}: expected finite samples, found NaN or infinity")
        session.accept_waveform(wave, rate)
        return session.finalize()


class OnnxStreamingSession(SessionResults):
    """One audio stream decoded as it arrives (made by :meth:`OnnxSpeech2Text.stream`; a
    :class:`~xtrans.transcription.RecognizerSession`).

    The sample rate and channel count must stay the same within a session.
    """

    def __init__(self, s2t: OnnxSpeech2Text, scorer: Optional[Scorer] = None):
        self.s2t = s2t
        cfg = s2t.config
        self.geometry = s2t.geometry
        self.encoder_state: Dict[str, np.ndarray] = {
            name: np.zeros([1 if d == "B" else d for d in shape], dtype=np.dtype(dtype))
            for name, shape, dtype in zip(cfg["state_names"], cfg["state_shapes"], cfg["state_dtypes"])}
        self._fed = 0  # samples given to encoder calls
        self._pending = np.zeros(0, dtype=np.float32)  # received samples no encoder call has taken
        self.num_frames = 0  # encoder frames decoded so far
        self.chunk_frames: int = self.geometry.chunk_frames
        self.search_state = s2t.new_search_state(scorer)
        self.channels: Optional[int] = None
        self.resampler: Optional[ResampleState] = None  # to the export's rate, made at the first call
        self.finished = False

    def accept_waveform(self, samples: np.ndarray, sample_rate: Optional[int] = None) -> str:
        """Feeds the next samples ``(n,)`` or ``(n, C)``; returns the text decoded so far.

        Args:
            samples: float samples in [-1, 1] or integer PCM.
            sample_rate: their rate in Hz (default the export's); the same for the whole session.

        Raises:
            ValueError: after :meth:`finalize`, for a bad or changed sample rate, or when the channel
                count changes.
        """
        self._check_open()
        rate = self.s2t.sample_rate if sample_rate is None else sample_rate
        if self.resampler is None:
            self.resampler = init_resample_state(rate, self.s2t.sample_rate)  # checks the rate
        elif rate != self.resampler.orig_rate:
            raise ValueError(f"sample_rate: this session's audio is at {self.resampler.orig_rate} Hz, found {rate}")
        wave, channels = as_mono(samples)
        if self.channels is None:
            self.channels = channels
        elif channels != self.channels:
            raise ValueError(f"samples: this session's audio has {self.channels} channel(s), found {channels}")
        wave, self.resampler = resample_chunk(wave, self.resampler)
        self._feed(wave)
        return self.text

    def _feed(self, wave: np.ndarray, end: bool = False) -> None:
        """Queues 16 kHz samples and makes the encoder calls they complete (:meth:`StreamGeometry.calls
        <xtrans.frames.StreamGeometry.calls>`; with ``end``, also the last partial call)."""
        self._pending = np.concatenate([self._pending, wave.astype(np.float32, copy=False)])
        for n in self.geometry.calls(self._fed, self._pending.shape[0], end=end):
            if not self.geometry.primed(self._fed):
                self._prime(self._pending[None, :n])
            else:  # a whole call, or the last one zero-padded
                self._call(np.pad(self._pending[:n], (0, self.geometry.samples_per_call - n)), n)
            self._pending = self._pending[n:]
            self._fed += n

    def _prime(self, samples: np.ndarray) -> None:
        """The encoder state after the stream's first ``prime_samples`` samples (1, prime_samples):
        ``encoder_start.onnx``'s output."""
        start = self.s2t.encoder_start
        names = list(self.encoder_state)
        new_state = start.run(["new_" + s for s in names], {"samples": np.ascontiguousarray(samples, np.float32)})
        self.encoder_state = dict(zip(names, new_state))

    def _call(self, samples: np.ndarray, num_samples: int) -> None:
        """One encoder call on ``samples`` (samples_per_call,), of which ``num_samples`` are real."""
        feeds = {"samples": np.ascontiguousarray(samples[None], dtype=np.float32),
                 "num_samples": np.array([num_samples], dtype=np.int64), **self.encoder_state}
        names = ["frames", "num_frames", *("new_" + s for s in self.encoder_state)]
        frames, num_frames, *new_state = self.s2t.encoder.run(names, feeds)
        self.encoder_state = dict(zip(self.encoder_state, new_state))
        self.num_frames += int(num_frames[0])
        if frames.shape[1] and int(num_frames[0]) > 0:
            self.search_state = self.s2t.search.step(frames, self.search_state, num_frames.astype(np.int64))

    def finalize(self) -> Transcription:
        """Ends the stream: decodes the last (partial) chunk and returns the final result."""
        self._check_open()
        tail = np.zeros(0, dtype=np.float32)
        if self.resampler is not None:
            tail, self.resampler = resample_flush(self.resampler)
        self._feed(tail, end=True)
        self._pending = self._pending[:0]
        self.finished = True
        return self.result()
