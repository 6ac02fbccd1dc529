"""Decoding a Kaldi data directory with a recognizer, utterance by utterance.

The loop of ``python -m xtrans.bin.decode`` (and of ``level_robustness`` and ``robustness``,
which change the audio on the fly): every utterance of ``wav.scp`` (cut by ``segments`` when
there is one) is read, optionally scaled by a gain and changed by a per-utterance
:data:`Transform`, and decoded by any :class:`~xtrans.transcription.Recognizer` —
:class:`~xtrans.inference.Speech2Text` and :class:`~xtrans.onnx.OnnxSpeech2Text` go through
the same code — in one of two modes:

- ``simulated``: ``recognizer.transcribe`` of the whole utterance;
- ``streaming``: a live session (``recognizer.stream()``) fed ``piece_ms`` of audio per call
  (default one chunk), every call's compute time measured and divided among the chunks it
  completed.

A failed utterance (unreadable, too short, or any other failure) becomes an error record and the
others are decoded. With a worker pool (:func:`worker_pool`), each process loads its own
recognizer from the options' :class:`~xtrans.decoding.load.RecognizerSpec`, once per
configuration.

``options`` below is anything with the attributes of ``python -m xtrans.bin.decode``'s options
that it reads: ``mode``, ``piece_ms`` (optional), and with a pool ``nj`` and the fields of a
:class:`~xtrans.decoding.load.RecognizerSpec`.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from xtrans.data.audio import BadAudioError, read_audio, to_mono
from xtrans.data.kaldi_dir import DataDir
from xtrans.data.resample import resample
from xtrans.data.validate import audio_problems
from xtrans.decoding.load import RecognizerSpec
from xtrans.frames import SAMPLE_RATE, frames_to_ms
from xtrans.transcription import Recognizer

logger = logging.getLogger(__name__)

MODES = ("simulated", "streaming")

Transform = Callable[[np.ndarray, int], np.ndarray]
"""A per-utterance transform of the audio before decoding: ``transform(samples, index)`` takes the
``(S,)`` float32 mono samples at 16 kHz of the utterance ``data.utt_ids[index]`` and returns the
``(S',)`` float32 samples at 16 kHz to decode. With a worker pool it is sent to the worker
processes, so it must pickle: a frozen dataclass with ``__call__`` defined at module level (e.g.
the conditions of :mod:`xtrans.scoring.robustness`)."""


# ---------------------------------------------------------------------------- one utterance

def check_audio(samples: np.ndarray, rate: int) -> None:
    """Refuses audio that no recognizer decodes, as :meth:`xtrans.inference.Speech2Text.load_audio` does.

    Digital silence is valid (as in a live stream).

    Args:
        samples: ``(S,)`` or channels-last ``(S, C)`` samples.
        rate: their sample rate in Hz.

    Raises:
        BadAudioError: for audio that is empty, not finite or shorter than one encoder frame (25 ms).
    """
    x = np.asarray(samples)
    problems = [reason for code, reason in audio_problems(x[:, None] if x.ndim == 1 else x, int(rate),
                                                          sample_rate=None, mono=False)
                if code != "silent"]  # a problem for training data only
    if problems:
        raise BadAudioError("", "<array>", "; ".join(problems))


def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """:func:`xtrans.data.augment.apply_gain` (the gain training draws, clipped at full scale) of
    numpy samples; it imports torch and the augmentations when called, not with this module."""
    import torch

    from xtrans.data.augment import apply_gain as gain

    return gain(torch.tensor(samples), gain_db).numpy()


def mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """``(S,)`` or ``(S, C)`` samples at ``rate`` -> ``(S',)`` float32 mono samples at 16 kHz
    (channels averaged, resampled as :func:`xtrans.data.audio.load_waveform` does)."""
    wave = to_mono(samples)
    if rate != SAMPLE_RATE:
        wave = resample(wave, rate, SAMPLE_RATE)
    return wave.numpy().astype(np.float32, copy=False)


def decode_simulated(recognizer: Recognizer, samples: np.ndarray, rate: int,
                     **context: Any) -> Tuple[str, Dict[str, Any]]:
    """One utterance by ``recognizer.transcribe`` (for a checkpoint: the masked full pass), with
    ``context`` (``hotwords``, ``hotwords_score``: the utterance's own) where given; returns the
    text and its timing."""
    start = time.perf_counter()
    text = recognizer.transcribe(samples, sample_rate=rate, **context).text
    return text, {"seconds": time.perf_counter() - start}


def decode_streaming(recognizer: Recognizer, samples: np.ndarray, rate: int,
                     piece_ms: Optional[float] = None, **context: Any) -> Tuple[str, Dict[str, Any]]:
    """One utterance through a real streaming session, ``piece_ms`` of audio per call (default
    one chunk of the session's rule), with ``context`` as :func:`decode_simulated`; the session
    resamples to 16 kHz as the audio streams.

    The timing holds the total processing time and the compute time of every call that completed
    at least one chunk (divided among the chunks it completed; ``finalize`` counts as one chunk).

    Raises:
        BadAudioError: see :func:`check_audio`.
    """
    check_audio(samples, rate)  # the checks of transcribe (too short, ...); a session makes none
    session = recognizer.stream(**context)
    C = session.chunk_frames
    step = max(1, int(round(rate * (piece_ms or frames_to_ms(C)) / 1000)))
    chunk_ms: List[float] = []
    total = 0.0
    for begin in range(0, samples.shape[0], step):
        before = session.num_frames
        t0 = time.perf_counter()
        session.accept_waveform(samples[begin:begin + step], rate)
        dt = time.perf_counter() - t0
        total += dt
        chunks = (session.num_frames - before) // C
        if chunks:
            chunk_ms += [1000.0 * dt / chunks] * chunks
    t0 = time.perf_counter()
    text = session.finalize().text
    dt = time.perf_counter() - t0
    total += dt
    chunk_ms.append(1000.0 * dt)
    return text, {"seconds": total, "chunk_ms": chunk_ms}


def decode_utterance(recognizer: Recognizer, options: Any, utt: str, entry: Optional[str], segment,
                     gain_db: Optional[float] = None, transform: Optional[Transform] = None,
                     index: int = 0, hotwords: Optional[Sequence[str]] = None,
                     hotwords_score: Optional[float] = None) -> Dict[str, Any]:
    """Decodes one utterance; returns ``{"utt", "text", "duration", "seconds", ...}`` or, on bad
    audio or any other failure, ``{"utt", "text": "", "error": reason}`` (the run carries on).

    Args:
        recognizer: what decodes (in ``simulated`` mode only its ``transcribe`` is called).
        options: ``mode`` (:data:`MODES`) and, for ``streaming``, ``piece_ms`` (None = one chunk).
        utt: the utterance id.
        entry: its ``wav.scp`` entry (None when the recording is missing).
        segment: its :class:`~xtrans.data.kaldi_dir.Segment`, or None.
        gain_db: ``None`` = as recorded; else the samples are first scaled with
            :func:`xtrans.data.augment.apply_gain` (clipped at full scale).
        transform: then turns the utterance, made mono at 16 kHz, into what is decoded (see
            :data:`Transform`); a failure of the transform is a failure of the utterance.
        index: the utterance's position in the data directory (``data.utt_ids``), for
            per-utterance draws of ``transform``.
        hotwords, hotwords_score: the utterance's own hotwords (instead of the recognizer's
            defaults; ``[]``: none) and their boost; None: the recognizer's.
    """
    if entry is None:
        recording = segment.recording_id if segment is not None else utt
        return {"utt": utt, "text": "", "error": f"recording {recording!r} is not in wav.scp"}
    try:
        samples, rate = read_audio(entry, utt_id=utt, segment=segment)
        if gain_db is not None:
            samples = apply_gain(samples, gain_db)
        if transform is not None:
            samples, rate = transform(mono_16k(samples, rate), index), SAMPLE_RATE
        context = {} if hotwords is None else {"hotwords": list(hotwords), "hotwords_score": hotwords_score}
        if options.mode == "simulated":
            text, timing = decode_simulated(recognizer, samples, rate, **context)
        else:
            text, timing = decode_streaming(recognizer, samples, rate, getattr(options, "piece_ms", None), **context)
    except BadAudioError as err:
        return {"utt": utt, "text": "", "error": err.reason}
    except Exception as err:  # one bad utterance never stops the decoding of the others
        logger.debug("decoding %s (%s) failed", utt, entry, exc_info=True)
        return {"utt": utt, "text": "", "error": f"{type(err).__name__}: {err}"}
    return {"utt": utt, "text": text, "duration": samples.shape[0] / rate, **timing}


# ---------------------------------------------------------------------------- a data directory

_WORKER: Dict[RecognizerSpec, Recognizer] = {}
"""A worker process's recognizer, keyed by its spec (one configuration at a time)."""


def _init_worker() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _worker_decode(job: Tuple[Any, ...]) -> Dict[str, Any]:
    spec, options, *item = job
    if spec not in _WORKER:
        _WORKER.clear()
        if spec.num_threads and spec.model is not None:  # an export's threads are onnxruntime's
            import torch

            torch.set_num_threads(spec.num_threads)
        _WORKER[spec] = spec.load()
    return decode_utterance(_WORKER[spec], options, *item)


def worker_pool(nj: int) -> ProcessPoolExecutor:
    """``nj`` spawned decoding processes; they load each configuration's recognizer once, on first use."""
    import multiprocessing
    return ProcessPoolExecutor(nj, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)


def _wav_entry(data: DataDir, utt: str) -> Tuple[Optional[str], Any]:
    """``data.wav_entry(utt)``, with entry None when the recording is missing (reported per utterance)."""
    try:
        return data.wav_entry(utt)
    except KeyError:
        return None, None if data.segments is None else data.segments.get(utt)


def run(options: Any, data: DataDir, recognizer: Optional[Recognizer], pool: Optional[ProcessPoolExecutor] = None,
        *, gain_db: Optional[float] = None, transform: Optional[Transform] = None,
        hotwords: Optional[Mapping[str, Sequence[str]]] = None, hotwords_score: Optional[float] = None,
        utts: Optional[Sequence[str]] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """Decodes every utterance of ``data`` (or those of ``utts``, in that order): in ``pool``'s
    processes when given (each loads the recognizer of ``RecognizerSpec.from_options(options)``),
    else here with ``recognizer``; each scaled by ``gain_db`` and then changed by ``transform``
    when given, with its own hotwords where ``hotwords`` (utterance -> phrases) has an entry (see
    :func:`decode_utterance`). Returns the records in utterance order. ``progress=False`` hides
    the per-utterance progress bar."""
    position = {utt: index for index, utt in enumerate(data.utt_ids)}
    hotwords = hotwords or {}
    items = [(utt, *_wav_entry(data, utt), gain_db, transform, position[utt], hotwords.get(utt),
              hotwords_score if utt in hotwords else None)
             for utt in (data.utt_ids if utts is None else utts)]
    bar = tqdm(total=len(items), desc=f"decode ({options.mode})", unit="utt", file=sys.stderr,
               disable=not progress or len(items) < 2)
    records = []
    if pool is not None:
        spec = RecognizerSpec.from_options(options)
        jobs = [(spec, options, *item) for item in items]
        for rec in pool.map(_worker_decode, jobs, chunksize=max(1, len(items) // (4 * getattr(options, "nj", 1)))):
            records.append(rec)
            bar.update()
    else:
        for item in items:
            records.append(decode_utterance(recognizer, options, *item))
            bar.update()
    bar.close()
    return records
