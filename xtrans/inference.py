"""Speech-to-text with a trained transducer: whole files and real chunk-by-chunk streaming.

::

    s2t = Speech2Text.from_checkpoint("exp/stage5/best.pt", chunk_ms=640, left_ms=640, sinks=4,
                                      search="beam", beam=4)
    s2t.transcribe("a.flac").text                 # masked full pass under the streaming rule
    session = s2t.stream()                         # real streaming (xtrans.streaming)
    for piece in pieces:
        partial = session.accept_waveform(piece, sample_rate=8000)
    final = session.finalize()

Audio may come at any sample rate (converted to 16 kHz with
:func:`xtrans.data.resample.resample`) with any number of channels (averaged). Arrays are
``(S,)`` or channels-last ``(S, C)``, as :mod:`soundfile` reads them.

With modified beam search, decoding can be steered at decode time (``docs/decoding.md``): an
n-gram LM by shallow fusion (``lm``, ``lm_scale``) and hotwords, the recognizer's defaults
(``hotwords``, ``hotwords_score``) or a stream's own::

    s2t = Speech2Text.from_checkpoint("best.pt", chunk_ms=640, search="beam", lm="lm.arpa", lm_scale=0.3)
    session = s2t.stream(hotwords=["TURN ON THE RADIO", "XLSR :2.5"], hotwords_score=1.5)

A streaming session and ``transcribe`` with the same streaming configuration compute the same
encoder frames (the streaming encoder reproduces the masked full pass) and run the same
frame-synchronous search, so they give the same tokens; the session resamples incrementally
with the same filter, so this holds for audio at other rates too.

:class:`Speech2Text` and its :class:`StreamingSession` implement
:class:`xtrans.transcription.Recognizer` and :class:`~xtrans.transcription.RecognizerSession`,
as the onnxruntime recognizer (:class:`xtrans.onnx.OnnxSpeech2Text`) does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from xtrans.data.audio import BadAudioError, as_samples, read_audio
from xtrans.data.resample import ResampleState, init_resample_state, resample, resample_chunk, resample_flush
from xtrans.data.validate import audio_problems
from xtrans.frames import FRAME_MS, SAMPLE_RATE, frames_to_ms
from xtrans.masks import StreamingConfig
from xtrans.models.transducer import Transducer
from xtrans.search import BeamState, GreedySearch, GreedyState, Hypothesis, ModifiedBeamSearch  # noqa: F401 (Hypothesis: re-exported)
from xtrans.streaming import EncoderState, StreamingEncoder
from xtrans.tokenizer import find_tokenizer, load_tokenizer  # noqa: F401 (re-exported)
from xtrans.transcription import Recognizer, RecognizerSession, TokenTable  # noqa: F401 (re-exported)
from xtrans.transcription import SearchTranscriber, SessionResults, Transcription
from xtrans.checkpoint import CheckpointError, load_model  # noqa: F401 (CheckpointError: documented here)
from xtrans.context import DEFAULT_HOTWORDS_SCORE, DEFAULT_LM_SCALE, SearchContext
from xtrans.context.pieces import spelling
from xtrans.search_core.scorer import Scorer

logger = logging.getLogger(__name__)

SEARCHES = ("greedy", "beam")

Audio = Union[str, os.PathLike, np.ndarray, torch.Tensor]


class Speech2Text(SearchTranscriber):
    """Decodes speech with a transducer and a tokenizer (a :class:`~xtrans.transcription.Recognizer`).

    Args:
        model: the :class:`Transducer` (put in eval mode and moved to ``device``).
        tokenizer: a :class:`~xtrans.tokenizer.Tokenizer` or :class:`~xtrans.tokenizer.TokenTable` (``decode``,
            ``id_to_token``, ``vocab_size``) of the model's vocabulary.
        device: where to run.
        streaming: the streaming rule for :meth:`transcribe` (masked full pass) and the default
            for :meth:`stream`; ``None`` = full attention.
        search: ``greedy`` or ``beam`` (modified beam search).
        beam: beam size for ``beam``.
        max_symbols: most tokens per frame for ``greedy``.
        nbest: hypotheses kept in :attr:`Transcription.nbest` for ``beam`` (default: the beam).
        lm: an ARPA n-gram LM over the tokenizer's pieces (``python -m xtrans.bin.train_lm``),
            fused into ``beam`` search; None = no LM.
        lm_scale: the LM's weight.
        hotwords: phrases (``PHRASE`` or ``PHRASE :SCORE``) boosted in every stream that brings
            none of its own (``beam`` search).
        hotwords_score: the per-token boost of phrases without their own.

    Raises:
        ValueError: on an unknown search, a bad size, a vocabulary mismatch, a streaming rule
            the encoder cannot obey, an LM or hotwords with greedy search, or a phrase the
            tokenizer cannot spell.
    """

    frame_ms = FRAME_MS
    """Duration of an encoder frame (ms), for timestamps."""

    def __init__(self, model: Transducer, tokenizer, *, device: Union[str, torch.device] = "cpu",
                 streaming: Optional[StreamingConfig] = None, search: str = "greedy", beam: int = 4,
                 max_symbols: int = 3, nbest: Optional[int] = None, lm=None, lm_scale: float = DEFAULT_LM_SCALE,
                 hotwords: Optional[Sequence[str]] = None, hotwords_score: float = DEFAULT_HOTWORDS_SCORE):
        if search not in SEARCHES:
            raise ValueError(f"search: expected one of {SEARCHES}, found {search!r}")
        if streaming is not None and not isinstance(streaming, StreamingConfig):
            raise TypeError(f"streaming: expected a StreamingConfig or None, found {type(streaming).__name__}")
        if tokenizer.vocab_size != model.vocab_size:
            raise ValueError(f"tokenizer: has {tokenizer.vocab_size} tokens, the model's vocabulary has "
                             f"{model.vocab_size}; use the tokenizer the model was trained with")
        model.encoder.check_streaming(streaming)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.streaming = streaming
        self.search_name = search
        self.nbest = nbest
        self.search = (GreedySearch(self.model, max_symbols) if search == "greedy"
                       else ModifiedBeamSearch(self.model, beam))
        encode, unk_id = spelling(tokenizer)
        self.context = SearchContext(search=search, pieces=[tokenizer.id_to_token(i) for i in range(model.vocab_size)],
                                     encode=encode, unk_id=unk_id, lm=lm, lm_scale=lm_scale, hotwords=hotwords,
                                     hotwords_score=hotwords_score)

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], tokenizer=None, device: Union[str, torch.device] = "cpu",
                        streaming: Optional[StreamingConfig] = None, *, chunk_ms: Optional[float] = None,
                        left_ms: Optional[float] = None, sinks: int = 0, search: str = "greedy",
                        beam: int = 4, max_symbols: int = 3, nbest: Optional[int] = None, lm=None,
                        lm_scale: float = DEFAULT_LM_SCALE, hotwords: Optional[Sequence[str]] = None,
                        hotwords_score: float = DEFAULT_HOTWORDS_SCORE) -> "Speech2Text":
        """Loads a checkpoint of any format (:func:`xtrans.checkpoint.load_model`).

        Args:
            path: the checkpoint file (``best.pt``, ``average.pt``, ``ckpt_step<N>.pt``).
            tokenizer: a tokenizer object, a sentencepiece ``.model`` or a ``tokens.txt``; ``None``
                = ``checkpoint["tokenizer"]``, then the training config's ``data.tokenizer``,
                then ``bpe.model`` or ``tokens.txt`` next to the checkpoint.
            device: where to run.
            streaming: the streaming rule; or give it in milliseconds with ``chunk_ms``,
                ``left_ms`` (None = unlimited) and ``sinks`` (frames).
            search, beam, max_symbols, nbest, lm, lm_scale, hotwords, hotwords_score: as in
                :class:`Speech2Text`.

        Raises:
            CheckpointError: when the file is missing, unreadable or not a transducer checkpoint.
            FileNotFoundError: when no tokenizer is given or found.
            ValueError: for conflicting streaming arguments (and as :class:`Speech2Text`).
        """
        if streaming is not None and chunk_ms is not None:
            raise ValueError("streaming/chunk_ms: give the streaming rule either as a StreamingConfig "
                             "or in milliseconds, not both")
        if chunk_ms is not None:
            streaming = StreamingConfig.from_ms(chunk_ms, left_ms, sinks)
        elif left_ms is not None or sinks:
            raise ValueError("chunk_ms: left_ms/sinks need a chunk size (chunk_ms)")
        model, ckpt = load_model(path, map_location="cpu")
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(tokenizer if tokenizer is not None else find_tokenizer(path, ckpt))
        logger.info("loaded %s (V=%d, %s, %s search)", path, model.vocab_size,
                    streaming.describe() if streaming else "full attention", search)
        return cls(model, tokenizer, device=device, streaming=streaming, search=search, beam=beam,
                   max_symbols=max_symbols, nbest=nbest, lm=lm, lm_scale=lm_scale, hotwords=hotwords,
                   hotwords_score=hotwords_score)

    # ------------------------------------------------------------------ whole utterances
    def load_audio(self, audio: Audio, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Reads/validates audio -> (S,) float32 mono at 16 kHz.

        Digital silence (all zero) is valid input, as in a live stream, and is decoded like any
        audio (for training data it is a problem: :func:`xtrans.data.validate.audio_problems`).

        Raises:
            BadAudioError: for an unreadable file, or audio that is empty, not finite or shorter
                than one encoder frame (25 ms).
        """
        if isinstance(audio, (str, os.PathLike)):
            path = str(audio)
            samples, rate = read_audio(path)
            samples = torch.from_numpy(np.ascontiguousarray(samples))
        else:
            path, rate = "<array>", sample_rate
            samples = as_samples(audio)
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"sample_rate: expected a positive integer (Hz), found {rate}")
        problems = [(code, reason) for code, reason
                    in audio_problems(samples.numpy(), int(rate), sample_rate=None, mono=False)
                    if code != "silent"]  # a problem for training data only
        if problems:
            raise BadAudioError("", path, "; ".join(reason for _, reason in problems))
        wave = samples.mean(dim=1)
        return resample(wave, int(rate), SAMPLE_RATE) if rate != SAMPLE_RATE else wave

    @torch.no_grad()
    def transcribe(self, audio: Audio, sample_rate: int = SAMPLE_RATE, *, hotwords: Optional[Sequence[str]] = None,
                   hotwords_score: Optional[float] = None) -> Transcription:
        """Decodes one whole utterance (under :attr:`streaming` as a masked full pass), with the
        recognizer's LM and its default hotwords or the utterance's own.

        Args:
            audio: a WAV/FLAC/... path (its own rate is used), or samples ``(S,)`` / ``(S, C)``.
            sample_rate: the rate of array input in Hz.
            hotwords, hotwords_score: this utterance's phrases and their boost, as in :meth:`stream`.

        Raises:
            BadAudioError: see :meth:`load_audio`.
            ValueError: as :meth:`stream` for hotwords.
        """
        scorer = self.context.scorer(hotwords, hotwords_score)
        wave = self.load_audio(audio, sample_rate).to(self.device)
        lengths = torch.tensor([wave.shape[0]], device=self.device)
        enc, enc_lengths = self.model.encode(wave[None], lengths, self.streaming)
        state = self.new_search_state(scorer, self.device)
        return self.transcription(self.search.step(enc, state, enc_lengths))

    def settings(self) -> Dict[str, Any]:
        """What decodes, as JSON values: ``device``, ``pos_conv`` (the encoder's positional
        convolution), the streaming rule of :meth:`transcribe` (``chunk_ms``, ``left_ms``,
        ``sinks``; ``None``, ``None``, 0 for full attention), ``search`` and the context (``lm``,
        ``lm_scale``, ``hotwords``: :meth:`SearchContext.describe <xtrans.context.SearchContext.describe>`)."""
        rule = self.streaming
        return {"device": str(self.device), "pos_conv": self.model.arch.encoder.pos_conv,
                "chunk_ms": None if rule is None else frames_to_ms(rule.chunk_size),
                "left_ms": None if rule is None else frames_to_ms(rule.left_context),
                "sinks": 0 if rule is None else rule.num_sinks, "search": self.search_name,
                **self.context.describe()}

    # ------------------------------------------------------------------ streaming
    def stream(self, chunk_ms: Optional[float] = None, left_ms: Optional[float] = None,
               sinks: Optional[int] = None, *, hotwords: Optional[Sequence[str]] = None,
               hotwords_score: Optional[float] = None) -> "StreamingSession":
        """Opens a real streaming session (chunk by chunk, state carried between calls).

        Args:
            chunk_ms: chunk size in ms (multiple of 20); ``None`` = the rule of :attr:`streaming`.
            left_ms: left context in ms (``None`` = unlimited).
            sinks: attention-sink frames (``None`` = 0).
            hotwords: this stream's phrases (``PHRASE`` or ``PHRASE :SCORE``), instead of the
                recognizer's default hotwords (``[]``: none); needs ``search="beam"``.
            hotwords_score: their per-token boost (default: the recognizer's ``hotwords_score``).

        Raises:
            ValueError: when no chunk size is known, or ``left_ms``/``sinks`` come without ``chunk_ms``;
                for hotwords with greedy search, or a phrase the tokenizer cannot spell.
        """
        scorer = self.context.scorer(hotwords, hotwords_score)
        if chunk_ms is not None:
            config = StreamingConfig.from_ms(chunk_ms, left_ms, sinks or 0)
        elif left_ms is not None or sinks is not None:
            raise ValueError("chunk_ms: left_ms/sinks need a chunk size (chunk_ms)")
        else:
            config = self.streaming
        if config is None or config.is_full:
            raise ValueError("chunk_ms: streaming needs a chunk size; pass chunk_ms or construct "
                             "Speech2Text with a streaming configuration")
        return StreamingSession(self, config, scorer)


@dataclass(frozen=True)
class SessionState:
    """Everything a :class:`StreamingSession` carries between calls, as one value.

    Each call of the session computes a new value from the old one and replaces it (only when
    the call succeeds, so a call that raises leaves the session as it was).

    Attributes:
        encoder: the streaming encoder's state (batch 1).
        search: the search's state (batch 1).
        resampler: the incremental resampling to 16 kHz; ``None`` until the first audio fixes
            the session's sample rate.
        channels: channels of the session's audio; ``None`` until the first audio.
        num_frames: encoder frames (20 ms) decoded so far.
        finished: True after :meth:`StreamingSession.finalize`.
    """

    encoder: EncoderState
    search: Union[GreedyState, BeamState]
    resampler: Optional[ResampleState] = None
    channels: Optional[int] = None
    num_frames: int = 0
    finished: bool = False


class StreamingSession(SessionResults):
    """One audio stream decoded as it arrives (made by :meth:`Speech2Text.stream`; a
    :class:`~xtrans.transcription.RecognizerSession`).

    Audio is resampled to 16 kHz incrementally (:func:`~xtrans.data.resample.resample_chunk`),
    fed to a :class:`~xtrans.streaming.StreamingEncoder`, and every completed chunk of encoder
    frames advances the search. The sample rate and channel count must stay the same within a
    session. Between calls the session holds one :class:`SessionState` (:attr:`state`); its search
    state carries the stream's scorer (its LM and hotwords, :meth:`Speech2Text.stream`).
    """

    def __init__(self, s2t: Speech2Text, streaming: StreamingConfig, scorer: Optional[Scorer] = None):
        self.s2t = s2t
        self.streaming = streaming
        self.encoder = StreamingEncoder(s2t.model.encoder, streaming)
        self._state = SessionState(encoder=self.encoder.init_state(1, s2t.device),
                                   search=s2t.new_search_state(scorer, s2t.device))

    @property
    def state(self) -> SessionState:
        """The session's state after the last call."""
        return self._state

    @property
    def sample_rate(self) -> Optional[int]:
        """The rate of the session's audio in Hz (``None`` before the first audio)."""
        return None if self._state.resampler is None else self._state.resampler.orig_rate

    @property
    def channels(self) -> Optional[int]:
        """Channels of the session's audio (``None`` before the first audio)."""
        return self._state.channels

    @property
    def finished(self) -> bool:
        """True after :meth:`finalize`."""
        return self._state.finished

    @property
    def search_state(self) -> Union[GreedyState, BeamState]:
        """The search's state after the last call (batch 1)."""
        return self._state.search

    @property
    def chunk_frames(self) -> int:
        """``C``: encoder frames per chunk of this session's streaming rule."""
        return self.streaming.chunk_size

    @property
    def num_frames(self) -> int:
        """Encoder frames decoded so far: the search has seen frames ``0 .. num_frames - 1``.

        A multiple of the chunk size until :meth:`finalize` adds the last, shorter chunk.
        """
        return self._state.num_frames

    @torch.no_grad()
    def accept_waveform(self, samples: Union[np.ndarray, torch.Tensor], sample_rate: int = SAMPLE_RATE) -> str:
        """Feeds the next samples ``(n,)`` or ``(n, C)``; returns the text decoded so far.

        Raises:
            ValueError: after :meth:`finalize`, or when the rate or channel count changes.
        """
        self._check_open()
        state = self._state
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive integer (Hz), found {sample_rate}")
        x = as_samples(samples, "samples")
        resampler, channels = state.resampler, state.channels
        if resampler is None:
            resampler, channels = init_resample_state(int(sample_rate), SAMPLE_RATE), x.shape[1]
        if sample_rate != resampler.orig_rate:
            raise ValueError(f"sample_rate: this session's audio is at {resampler.orig_rate} Hz, found "
                             f"{sample_rate} Hz; open a new session for another rate")
        if x.shape[1] != channels:
            raise ValueError(f"samples: this session's audio has {channels} channel(s), found {x.shape[1]}")
        wave, resampler = resample_chunk(x.mean(dim=1), resampler)
        self._state = self._feed(replace(state, resampler=resampler, channels=channels), wave)
        return self.text

    def _feed(self, state: SessionState, wave: torch.Tensor) -> SessionState:
        """``state`` after new 16 kHz samples (n,)."""
        if wave.shape[0] == 0:
            return state
        frames, counts, encoder = self.encoder.forward_chunk(wave[None].to(self.s2t.device), state.encoder)
        return self._search(replace(state, encoder=encoder), frames, counts)

    def _search(self, state: SessionState, frames: torch.Tensor, counts: torch.Tensor) -> SessionState:
        """``state`` after encoder frames (1, T, D) with valid counts (1,)."""
        if frames.shape[1] == 0:
            return state
        return replace(state, search=self.s2t.search.step(frames, state.search, counts),
                       num_frames=state.num_frames + frames.shape[1])

    @torch.no_grad()
    def finalize(self) -> Transcription:
        """Ends the stream: decodes the last (partial) chunk and returns the final result."""
        self._check_open()
        state = self._state
        if state.resampler is not None:
            wave, resampler = resample_flush(state.resampler)
            state = self._feed(replace(state, resampler=resampler), wave)
        frames, counts, encoder = self.encoder.finalize(state.encoder)
        state = self._search(replace(state, encoder=encoder), frames, counts)
        self._state = replace(state, finished=True)
        return self.result()

