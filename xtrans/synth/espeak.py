"""Speech synthesis with eSpeak NG through the pip package ``espeakng-loader``.

``espeakng-loader`` bundles ``libespeak-ng`` (1.52) and its data directory; this module drives
the C API through :mod:`ctypes` (no system installation, no subprocess):

    espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, <data dir>, 0)  -> native rate (22,050 Hz)
    espeak_SetSynthCallback(cb)          cb(short *wav, int n, espeak_EVENT *events) collects samples
    espeak_SetVoiceByName("en-us+f3")    a language voice, optionally "+<variant>" (timbre)
    espeak_SetParameter(espeakRATE, wpm, 0), (espeakPITCH, 0..100, 0), (espeakRANGE, 0..100, 0)
    espeak_Synth(text, ...)              synchronous: the callback has all audio on return

The library keeps global state, so there is one engine per process (:func:`get_engine`);
parallel synthesis uses processes. Its synthesiser draws noise from its own generator and the C
library's ``rand()``; :meth:`EspeakEngine.synthesize` reseeds both (``espeak_ng_SetRandSeed``,
``srand``) for every utterance, so the same text, voice, settings and seed give identical audio.

A :class:`Voice` is a language voice plus a variant; :func:`render_utterance` adds the
corpus variation on top: speaking rate, pitch and pitch range, random leading/trailing pauses,
gain and additive noise at a random SNR, and resamples to 16 kHz with
:func:`xtrans.data.resample.resample`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from xtrans.data.resample import resample
from xtrans.frames import SAMPLE_RATE  # the output rate of render_utterance (re-exported)

logger = logging.getLogger(__name__)

ENGLISH_LANGUAGES: Tuple[str, ...] = (
    "en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
    "en-us-nyc")
"""English language voices of eSpeak NG 1.52 (accents); ``en-shaw`` (Shavian script) is left out."""

EXCLUDED_VARIANTS = frozenset({"Mr serious"})
"""Variant files whose names eSpeak cannot select (a space in the name)."""

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flags of speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded, or refused a voice or a text.

    Attributes:
        what: the call that failed (e.g. ``"espeak_SetVoiceByName('en+xx')"``).
        code: the library's return code.
    """

    def __init__(self, what: str, code: int, hint: str = ""):
        self.what = what
        self.code = code
        super().__init__(f"{what} failed with code {code}" + (f"; {hint}" if hint else ""))


@dataclass(frozen=True, order=True)
class Voice:
    """A language voice (accent) and an optional variant (timbre) of eSpeak NG.

    Attributes:
        language: e.g. ``"en-us"``.
        variant: a file name under ``espeak-ng-data/voices/!v`` (e.g. ``"f3"``), or ``None``.
    """

    language: str
    variant: Optional[str] = None

    @property
    def name(self) -> str:
        """What ``espeak_SetVoiceByName`` takes: ``"en-us+f3"``."""
        return self.language if self.variant is None else f"{self.language}+{self.variant}"

    @property
    def speaker_id(self) -> str:
        """A Kaldi-safe speaker id (no spaces): ``"en-us+f3"``."""
        return "".join(c if c.isalnum() or c in "+-_" else "_" for c in self.name)


def data_path() -> str:
    """The ``espeak-ng-data`` directory bundled with ``espeakng-loader``."""
    import espeakng_loader

    return espeakng_loader.get_data_path()


def list_variants() -> list[str]:
    """Sorted variant names available in the bundled data (minus :data:`EXCLUDED_VARIANTS`)."""
    folder = os.path.join(data_path(), "voices", "!v")
    return sorted(v for v in os.listdir(folder) if v not in EXCLUDED_VARIANTS)


class EspeakEngine:
    """The process-wide eSpeak NG instance (use :func:`get_engine`).

    Raises:
        EspeakError: when the library cannot be loaded or initialised.
    """

    def __init__(self):
        import espeakng_loader

        lib_path = espeakng_loader.get_library_path()
        try:
            self._lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise EspeakError(f"loading {lib_path}", -1, f"reinstall espeakng-loader ({e})") from e
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name) if libc_name else None
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path().encode(), 0)
        if rate <= 0:
            raise EspeakError("espeak_Initialize", rate, f"check the data directory {data_path()}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: Voice, *, rate: int = 175, pitch: int = 50,
                   pitch_range: int = 50, seed: int = 0) -> np.ndarray:
        """Speaks ``text`` with ``voice``: int16 samples at :attr:`sample_rate` (22,050 Hz).

        Args:
            text: what to say (plain text; eSpeak reads ALL-CAPS words as words).
            voice: the voice.
            rate: speaking rate in words per minute (80..450; eSpeak's default 175).
            pitch: base pitch 0..100 (50 = the voice's own).
            pitch_range: intonation range 0..100 (50 = the voice's own, 0 = monotone).
            seed: seeds the C library's ``rand()`` used by the synthesiser's noise sources.

        Raises:
            EspeakError: for an unknown voice or a failed synthesis.
        """
        with self._lock:
            code = self._lib.espeak_SetVoiceByName(voice.name.encode())
            if code != _EE_OK:
                raise EspeakError(f"espeak_SetVoiceByName({voice.name!r})", code,
                                  "see xtrans.synth.espeak.list_variants() and ENGLISH_LANGUAGES")
            for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range),
                                 (_PARAM_VOLUME, 100)):
                self._lib.espeak_SetParameter(param, int(value), 0)
            self._lib.espeak_ng_SetRandSeed(seed)
            if self._libc is not None:
                self._libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            code = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if code != _EE_OK:
                raise EspeakError(f"espeak_Synth({text!r})", code)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


_ENGINE: Optional[EspeakEngine] = None


def get_engine() -> EspeakEngine:
    """The process's :class:`EspeakEngine`, created on first use."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = EspeakEngine()
    return _ENGINE


@dataclass(frozen=True)
class Variation:
    """Ranges of the per-utterance random variation of :func:`render_utterance`.

    Attributes:
        rate_wpm: speaking rate range (words per minute).
        pitch: eSpeak base pitch range (0..100).
        pitch_range: eSpeak intonation range (0..100).
        snr_db: SNR range of the added noise (dB, relative to the speech's mean power).
        gain_db: peak level range (dB below full scale) of the final signal.
        pause_s: range of the random silence (with noise) before and after the speech.
    """

    rate_wpm: Tuple[float, float] = (130.0, 230.0)
    pitch: Tuple[float, float] = (25.0, 75.0)
    pitch_range: Tuple[float, float] = (20.0, 80.0)
    snr_db: Tuple[float, float] = (5.0, 40.0)
    gain_db: Tuple[float, float] = (-20.0, -1.0)
    pause_s: Tuple[float, float] = (0.0, 0.3)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White or coloured (power ~ 1/f^alpha, alpha in [0.5, 2]) Gaussian noise, unit power, (n,)."""
    white = rng.standard_normal(n)
    if rng.random() < 0.5:
        return white
    alpha = rng.uniform(0.5, 2.0)
    spectrum = np.fft.rfft(white)
    f = np.arange(spectrum.size, dtype=np.float64)
    spectrum *= 1.0 / np.maximum(f, 1.0) ** (alpha / 2)  # amplitude ~ f^(-alpha/2)
    y = np.fft.irfft(spectrum, n)
    return y / (np.sqrt(np.mean(y * y)) + 1e-12)


def render_utterance(text: str, voice: Voice, rng: np.random.Generator,
                     variation: Variation = Variation()) -> np.ndarray:
    """One corpus utterance: ``text`` spoken by ``voice`` with random variation, at 16 kHz.

    The speech is synthesised at eSpeak's rate with a random speaking rate, pitch and range,
    padded with random pauses, mixed with noise at a random SNR (speech power measured over
    the synthesised speech), scaled to a random peak level and resampled to 16 kHz.

    Args:
        text: the words to say.
        voice: the voice.
        rng: the source of all randomness (also seeds eSpeak's own noise), so a generator in
            the same state gives the same audio.
        variation: the ranges drawn from.

    Returns:
        (S,) float32 samples in [-1, 1] at :data:`SAMPLE_RATE`.

    Raises:
        EspeakError: when eSpeak fails or produces no audio.
    """
    engine = get_engine()
    u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
    rate, pitch, prange = u(variation.rate_wpm), u(variation.pitch), u(variation.pitch_range)
    seed = int(rng.integers(0, 2**31 - 1))
    speech = engine.synthesize(text.lower(), voice, rate=round(rate), pitch=round(pitch),
                               pitch_range=round(prange), seed=seed).astype(np.float64) / 32768.0
    if speech.size == 0 or not np.any(speech):
        raise EspeakError(f"espeak_Synth({text!r}, voice={voice.name!r})", 0, "no audio was produced")
    sr = engine.sample_rate
    power = float(np.mean(speech ** 2))
    lead, trail = (int(u(variation.pause_s) * sr) for _ in range(2))
    x = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    snr = u(variation.snr_db)
    x = x + _noise(rng, x.size) * np.sqrt(power / 10 ** (snr / 10))
    y = resample(x, sr, SAMPLE_RATE).numpy()
    peak = float(np.max(np.abs(y))) + 1e-12
    y = y * (10 ** (u(variation.gain_db) / 20) / peak)
    return y.astype(np.float32)


def english_voices(languages: Sequence[str] = ENGLISH_LANGUAGES,
                   variants: Optional[Sequence[str]] = None) -> list[Voice]:
    """Every ``language+variant`` pair (variants default to :func:`list_variants`), sorted."""
    variants = list_variants() if variants is None else list(variants)
    return sorted(Voice(lang, var) for lang in languages for var in variants)
