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

A streaming session and ``transcribe`` with the same streaming configuration compute the same
encoder frames (the streaming encoder reproduces the masked full pass) and run the same
frame-synchronous search, so they give the same tokens; the session resamples incrementally
with the same filter, so this holds for audio at other rates too.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from xtrans.data.audio import BadAudioError, read_audio
from xtrans.data.resample import resample
from xtrans.data.validate import audio_problems
from xtrans.masks import StreamingConfig
from xtrans.models.transducer import Transducer
from xtrans.search import GreedySearch, Hypothesis, ModifiedBeamSearch
from xtrans.streaming import StreamingEncoder
from xtrans.tokenizer import Tokenizer
from xtrans.train.checkpoint import CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The model's sample rate."""

SEARCHES = ("greedy", "beam")

Audio = Union[str, os.PathLike, np.ndarray, torch.Tensor]


@dataclass
class Transcription:
    """The result of decoding one utterance.

    Attributes:
        text: the decoded text.
        tokens: token ids (no blank).
        pieces: the token strings.
        timestamps: emission time of each token in seconds (frame index x 20 ms).
        score: log-probability of the result as defined by the search
            (:mod:`xtrans.search.greedy`, :mod:`xtrans.search.beam`).
        nbest: for beam search, every returned hypothesis best first (the first is this one);
            empty for greedy search.
    """

    text: str
    tokens: List[int]
    pieces: List[str]
    timestamps: List[float]
    score: float
    nbest: List["Transcription"] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """Plain types (for JSON)."""
        return asdict(self)


class TokenTable:
    """A ``tokens.txt`` (``<token> <id>`` per line, id 0 = blank) used as a decode-only tokenizer.

    Pieces are joined and sentencepiece's word marker ``▁`` becomes a space.

    Raises:
        ValueError: on a malformed line or ids that are not ``0 .. V-1``.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)
        table: Dict[int, str] = {}
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{self.path}:{n}: expected '<token> <id>', found {line!r}")
            table[int(parts[1])] = parts[0]
        if sorted(table) != list(range(len(table))):
            raise ValueError(f"{self.path}: expected ids 0 .. {len(table) - 1}, each once")
        self._tokens = [table[i] for i in range(len(table))]

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def id_to_token(self, i: int) -> str:
        return self._tokens[i]

    def decode(self, ids) -> str:
        return "".join(self._tokens[int(i)] for i in ids if int(i) != 0).replace("\u2581", " ").strip()


def _as_samples(audio: Union[np.ndarray, torch.Tensor], name: str = "audio") -> torch.Tensor:
    """An (S,) or channels-last (S, C) array -> (S, C) float32 tensor (integer PCM scaled to [-1, 1))."""
    if isinstance(audio, np.ndarray):
        if np.issubdtype(audio.dtype, np.integer):
            scale = 128.0 if audio.dtype == np.uint8 else float(2 ** (8 * audio.dtype.itemsize - 1))
            audio = (audio.astype(np.float32) - (128.0 if audio.dtype == np.uint8 else 0.0)) / scale
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    elif isinstance(audio, torch.Tensor):
        if not audio.is_floating_point():
            raise TypeError(f"{name}: expected a float tensor, found dtype {audio.dtype}")
        x = audio.detach().to("cpu", torch.float32)
    else:
        raise TypeError(f"{name}: expected a path, numpy array or torch tensor, found {type(audio).__name__}")
    if x.dim() == 1:
        return x[:, None]
    if x.dim() == 2:
        return x
    raise ValueError(f"{name}: expected (S,) or channels-last (S, C) samples, found shape {tuple(x.shape)}")


class _StreamingResampler:
    """Incremental :func:`~xtrans.data.resample.resample` to 16 kHz: the concatenated outputs of
    :meth:`accept` and :meth:`flush` equal ``resample(whole_input, rate, 16000)``.

    ``resample`` reduces the ratio to ``L / M`` and computes output block ``k`` (outputs
    ``kL .. kL+L-1``) from inputs ``[kM - W, kM + M + W)`` (zeros outside the signal). A block
    is emitted once those inputs have arrived; inputs no block needs any more are dropped.
    """

    def __init__(self, rate: int):
        g = math.gcd(rate, SAMPLE_RATE)
        self.rate = rate
        self.M, self.L = rate // g, SAMPLE_RATE // g
        defaults = inspect.signature(resample).parameters  # the filter ``resample`` uses
        cutoff = 0.5 * defaults["rolloff"].default * min(self.M, self.L) / self.M
        self.W = math.ceil(defaults["zero_crossings"].default / (2 * cutoff)) + 1
        self.buffer = torch.zeros(0)
        self.buffer_start = 0  # input index of buffer[0]
        self.received = 0
        self.next_block = 0

    def _window_start(self) -> int:
        """First input index (a multiple of M) the next block may read."""
        return self.M * max(0, (self.next_block * self.M - self.W) // self.M)

    def _emit(self, num_out: int) -> torch.Tensor:
        a = self._window_start()
        y = resample(self.buffer[a - self.buffer_start:], self.rate, SAMPLE_RATE)
        offset = (a // self.M) * self.L
        out = y[self.next_block * self.L - offset:num_out - offset]
        self.next_block = -(-num_out // self.L)
        keep = self._window_start()
        self.buffer, self.buffer_start = self.buffer[keep - self.buffer_start:], keep
        return out

    def accept(self, x: torch.Tensor) -> torch.Tensor:
        """New input samples (S,) -> the 16 kHz samples now complete."""
        if self.rate == SAMPLE_RATE:
            return x
        self.buffer = torch.cat([self.buffer, x])
        self.received += x.shape[0]
        end_block = (self.received - self.W - self.M) // self.M + 1
        if end_block <= self.next_block:
            return x.new_zeros(0)
        return self._emit(end_block * self.L)

    def flush(self) -> torch.Tensor:
        """The remaining output at the end of the input."""
        if self.rate == SAMPLE_RATE or self.received == 0:
            return torch.zeros(0)
        total = -(-self.received * self.L // self.M)
        if total <= self.next_block * self.L:
            return torch.zeros(0)
        return self._emit(total)


class Speech2Text:
    """Decodes speech with a transducer and a tokenizer.

    Args:
        model: the :class:`Transducer` (put in eval mode and moved to ``device``).
        tokenizer: a :class:`~xtrans.tokenizer.Tokenizer` or :class:`TokenTable` (``decode``,
            ``id_to_token``, ``vocab_size``) of the model's vocabulary.
        device: where to run.
        streaming: the streaming rule for :meth:`transcribe` (masked full pass) and the default
            for :meth:`stream`; ``None`` = full attention.
        search: ``greedy`` or ``beam`` (modified beam search).
        beam: beam size for ``beam``.
        max_symbols: most tokens per frame for ``greedy``.
        nbest: hypotheses kept in :attr:`Transcription.nbest` for ``beam`` (default: the beam).

    Raises:
        ValueError: on an unknown search, a bad size, a vocabulary mismatch, or a streaming
            rule the encoder cannot obey.
    """

    def __init__(self, model: Transducer, tokenizer, *, device: Union[str, torch.device] = "cpu",
                 streaming: Optional[StreamingConfig] = None, search: str = "greedy", beam: int = 4,
                 max_symbols: int = 3, nbest: Optional[int] = None):
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

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], tokenizer=None, device: Union[str, torch.device] = "cpu",
                        streaming: Optional[StreamingConfig] = None, *, chunk_ms: Optional[float] = None,
                        left_ms: Optional[float] = None, sinks: int = 0, search: str = "greedy",
                        beam: int = 4, max_symbols: int = 3, nbest: Optional[int] = None) -> "Speech2Text":
        """Loads a training checkpoint (``{"model": state_dict, "arch": Transducer.arch, ...}``).

        Args:
            path: the checkpoint file (``best.pt``, ``average.pt``, ``ckpt_step<N>.pt``).
            tokenizer: a tokenizer object, a sentencepiece ``.model`` or a ``tokens.txt``; ``None``
                = ``checkpoint["tokenizer"]``, then the training config's ``data.tokenizer``,
                then ``bpe.model`` or ``tokens.txt`` next to the checkpoint.
            device: where to run.
            streaming: the streaming rule; or give it in milliseconds with ``chunk_ms``,
                ``left_ms`` (None = unlimited) and ``sinks`` (frames).
            search, beam, max_symbols, nbest: as in :class:`Speech2Text`.

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
        ckpt = load_checkpoint(path, map_location="cpu")
        if not isinstance(ckpt, dict) or "model" not in ckpt or not ckpt.get("arch"):
            raise CheckpointError(path, "not a transducer checkpoint (expected a dict with 'model' "
                                        "and 'arch')")
        model = Transducer.from_arch(ckpt["arch"])
        state = ckpt["model"]
        if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
            state = {k[len("module."):]: v for k, v in state.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(path, f"weights do not fit its 'arch': {err}") from None
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(tokenizer if tokenizer is not None else find_tokenizer(path, ckpt))
        logger.info("loaded %s (V=%d, %s, %s search)", path, model.vocab_size,
                    streaming.describe() if streaming else "full attention", search)
        return cls(model, tokenizer, device=device, streaming=streaming, search=search, beam=beam,
                   max_symbols=max_symbols, nbest=nbest)

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
            samples = _as_samples(audio)
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
    def transcribe(self, audio: Audio, sample_rate: int = SAMPLE_RATE) -> Transcription:
        """Decodes one whole utterance (under :attr:`streaming` as a masked full pass).

        Args:
            audio: a WAV/FLAC/... path (its own rate is used), or samples ``(S,)`` / ``(S, C)``.
            sample_rate: the rate of array input in Hz.

        Raises:
            BadAudioError: see :meth:`load_audio`.
        """
        wave = self.load_audio(audio, sample_rate).to(self.device)
        lengths = torch.tensor([wave.shape[0]], device=self.device)
        enc, enc_lengths = self.model.encode(wave[None], lengths, self.streaming)
        state = self.search.init_state(1, self.device)
        return self._result(self.search.step(enc, state, enc_lengths))

    def _result(self, state) -> Transcription:
        if isinstance(self.search, GreedySearch):
            return self._make(self.search.results(state)[0])
        hyps = self.search.results(state, self.nbest)[0]
        nbest = [self._make(h) for h in hyps]
        return replace(nbest[0], nbest=nbest)

    def _make(self, hyp: Hypothesis) -> Transcription:
        return Transcription(text=self.tokenizer.decode(hyp.tokens), tokens=list(hyp.tokens),
                             pieces=[self.tokenizer.id_to_token(i) for i in hyp.tokens],
                             timestamps=hyp.times_s(), score=hyp.score)

    # ------------------------------------------------------------------ streaming
    def stream(self, chunk_ms: Optional[float] = None, left_ms: Optional[float] = None,
               sinks: Optional[int] = None) -> "StreamingSession":
        """Opens a real streaming session (chunk by chunk, state carried between calls).

        Args:
            chunk_ms: chunk size in ms (multiple of 20); ``None`` = the rule of :attr:`streaming`.
            left_ms: left context in ms (``None`` = unlimited).
            sinks: attention-sink frames (``None`` = 0).

        Raises:
            ValueError: when no chunk size is known, or ``left_ms``/``sinks`` come without ``chunk_ms``.
        """
        if chunk_ms is not None:
            config = StreamingConfig.from_ms(chunk_ms, left_ms, sinks or 0)
        elif left_ms is not None or sinks is not None:
            raise ValueError("chunk_ms: left_ms/sinks need a chunk size (chunk_ms)")
        else:
            config = self.streaming
        if config is None or config.chunk_size is None:
            raise ValueError("chunk_ms: streaming needs a chunk size; pass chunk_ms or construct "
                             "Speech2Text with a streaming configuration")
        return StreamingSession(self, config)


class StreamingSession:
    """One audio stream decoded as it arrives (made by :meth:`Speech2Text.stream`).

    Audio is resampled to 16 kHz incrementally, fed to a
    :class:`~xtrans.streaming.StreamingEncoder`, and every completed chunk of encoder frames
    advances the search. The sample rate and channel count must stay the same within a session.
    """

    def __init__(self, s2t: Speech2Text, streaming: StreamingConfig):
        self.s2t = s2t
        self.streaming = streaming
        self.encoder = StreamingEncoder(s2t.model.encoder, streaming)
        self.encoder_state = self.encoder.init_state(1, s2t.device)
        self.search_state = s2t.search.init_state(1, s2t.device)
        self.sample_rate: Optional[int] = None
        self.channels: Optional[int] = None
        self.finished = False
        self._resampler: Optional[_StreamingResampler] = None

    def accept_waveform(self, samples: Union[np.ndarray, torch.Tensor], sample_rate: int = SAMPLE_RATE) -> str:
        """Feeds the next samples ``(n,)`` or ``(n, C)``; returns the text decoded so far.

        Raises:
            ValueError: after :meth:`finalize`, or when the rate or channel count changes.
        """
        if self.finished:
            raise ValueError("session: already finalized; open a new one with Speech2Text.stream()")
        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive integer (Hz), found {sample_rate}")
        x = _as_samples(samples, "samples")
        if self.sample_rate is None:
            self.sample_rate, self.channels = int(sample_rate), x.shape[1]
            self._resampler = _StreamingResampler(self.sample_rate)
        if sample_rate != self.sample_rate:
            raise ValueError(f"sample_rate: this session's audio is at {self.sample_rate} Hz, found "
                             f"{sample_rate} Hz; open a new session for another rate")
        if x.shape[1] != self.channels:
            raise ValueError(f"samples: this session's audio has {self.channels} channel(s), found {x.shape[1]}")
        self._feed(self._resampler.accept(x.mean(dim=1)))
        return self.text

    @torch.no_grad()
    def _feed(self, wave: torch.Tensor) -> None:
        if wave.shape[0] == 0:
            return
        frames, counts, self.encoder_state = self.encoder.forward_chunk(
            wave[None].to(self.s2t.device), self.encoder_state)
        self._search(frames, counts)

    def _search(self, frames: torch.Tensor, counts: torch.Tensor) -> None:
        if frames.shape[1]:
            self.search_state = self.s2t.search.step(frames, self.search_state, counts)

    @property
    def text(self) -> str:
        """The best text of the frames decoded so far."""
        return self.result().text

    def result(self) -> Transcription:
        """The current best result (partial until :meth:`finalize`)."""
        return self.s2t._result(self.search_state)

    @torch.no_grad()
    def finalize(self) -> Transcription:
        """Ends the stream: decodes the last (partial) chunk and returns the final result."""
        if self.finished:
            raise ValueError("session: already finalized; open a new one with Speech2Text.stream()")
        if self._resampler is not None:
            self._feed(self._resampler.flush())
        frames, counts, self.encoder_state = self.encoder.finalize(self.encoder_state)
        self._search(frames, counts)
        self.finished = True
        return self.result()


def find_tokenizer(checkpoint: Union[str, os.PathLike], ckpt: Dict[str, Any]) -> Path:
    """Where the tokenizer of a checkpoint is: ``ckpt["tokenizer"]``, the training config's
    ``data.tokenizer``, else ``bpe.model`` / ``tokens.txt`` next to the checkpoint.

    Raises:
        FileNotFoundError: naming every place looked at.
    """
    candidates = []
    if isinstance(ckpt.get("tokenizer"), str):
        candidates.append(Path(ckpt["tokenizer"]))
    config = ckpt.get("config")
    if isinstance(config, dict) and isinstance(config.get("data"), dict) \
            and isinstance(config["data"].get("tokenizer"), str):
        candidates.append(Path(config["data"]["tokenizer"]))
    here = Path(checkpoint).parent
    candidates += [here / "bpe.model", here / "tokens.txt"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"tokenizer: none given for {checkpoint} and none found at "
                            f"{', '.join(str(c) for c in candidates)}; pass --tokenizer / tokenizer=")


def load_tokenizer(path: Union[str, os.PathLike]):
    """A sentencepiece ``.model`` -> :class:`~xtrans.tokenizer.Tokenizer`; ``tokens.txt`` -> :class:`TokenTable`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer: {path} does not exist")
    if path.suffix == ".txt":
        return TokenTable(path)
    return Tokenizer(path)
