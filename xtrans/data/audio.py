"""Load the audio of a ``wav.scp`` entry: files, kaldiio ark offsets and shell pipes.

Three kinds of entry (see :mod:`xtrans.data.kaldi_dir`):

* a file path: read with soundfile (libsndfile: WAV, FLAC, OGG, ...); only the frames of a
  segment are read. A RIFF/WAV file whose header promises more audio than the file holds is
  reported as truncated (libsndfile would silently return the shorter signal). A headerless
  ``*.raw`` / ``*.pcm`` file (telephony, embedded capture) does not say its rate or sample
  format: it is read when the caller gives them as a :class:`RawFormat` and refused otherwise,
  with a hint (in a ``wav.scp``, convert it in a pipe:
  ``sox -t raw -r 8000 -e signed -b 16 -c 1 x.raw -t wav - |``).
* ``foo.ark:123``: read with :func:`kaldiio.load_mat`. An ark entry is either audio with its own
  rate (kaldiio writes ``(rate, array)`` as an embedded WAV/FLAC, which is what
  ``xtrans.bin.prepare_audio`` stores) or a bare Kaldi float vector/matrix, which carries no
  rate and is taken to be at :data:`ARK_SAMPLE_RATE` Hz (``(S,)`` or ``(S, C)`` samples).
* ``cmd |``: the command runs in a shell (current directory) and its stdout is decoded with
  soundfile, e.g. ``sph2pipe -f wav x.sph |`` or ``sox x.mp3 -t wav - |``.

Every failure, whatever the backend raised, becomes a :class:`BadAudioError` naming the
utterance, the path and the reason (in :func:`read_audio`, the one place that converts them).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import struct
import subprocess
from typing import TYPE_CHECKING

import kaldiio
import numpy as np
import soundfile

from xtrans.data.kaldi_dir import Segment, is_pipe, split_ark_offset
from xtrans.data.resample import resample
from xtrans.frames import SAMPLE_RATE

if TYPE_CHECKING:  # reading audio needs no torch (the runtime install has none); the tensor helpers import it
    import torch

logger = logging.getLogger(__name__)

ARK_SAMPLE_RATE = SAMPLE_RATE
"""Sample rate assumed for bare float vectors in ark files (they store no rate): the model's."""

PIPE_TIMEOUT_S = 600
"""Seconds a ``cmd |`` entry may run before it is reported as bad audio."""


RAW_SUFFIXES = (".raw", ".pcm")
"""File name endings of headerless PCM (read only with a :class:`RawFormat`)."""

RAW_FORMATS = {
    # name (as ffmpeg's -f / sox): (libsndfile subtype, endian, bytes per sample)
    "s16le": ("PCM_16", "LITTLE", 2),
    "s16be": ("PCM_16", "BIG", 2),
    "s24le": ("PCM_24", "LITTLE", 3),
    "s32le": ("PCM_32", "LITTLE", 4),
    "f32le": ("FLOAT", "LITTLE", 4),
    "f64le": ("DOUBLE", "LITTLE", 8),
    "s8": ("PCM_S8", "FILE", 1),
    "u8": ("PCM_U8", "FILE", 1),
    "mulaw": ("ULAW", "FILE", 1),
    "alaw": ("ALAW", "FILE", 1),
}
"""Sample formats of headerless PCM that :class:`RawFormat` accepts."""

RAW_HINT = (
    "headerless raw PCM does not say its sample rate or sample format; give them "
    "(transcribe: --raw-sample-rate 8000 --raw-format s16le; wav.scp: convert in a pipe, "
    "'sox -t raw -r 8000 -e signed -b 16 -c 1 FILE -t wav - |')"
)
"""The reason given for a ``*.raw`` / ``*.pcm`` file read without a :class:`RawFormat`."""


@dataclasses.dataclass(frozen=True)
class RawFormat:
    """How to read headerless PCM files (``*.raw``, ``*.pcm``).

    Attributes:
        sample_rate: samples per second per channel (Hz).
        sample_format: one of :data:`RAW_FORMATS`, e.g. ``"s16le"`` (signed 16-bit little endian,
            the usual telephony/embedded capture) or ``"mulaw"``.
        channels: interleaved channels.

    Raises:
        ValueError: for a non-positive rate or channel count, or an unknown sample format.
    """

    sample_rate: int
    sample_format: str = "s16le"
    channels: int = 1

    def __post_init__(self):
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) \
                or self.sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive integer (Hz), found {self.sample_rate!r}")
        if self.sample_format not in RAW_FORMATS:
            raise ValueError(f"sample_format: expected one of {', '.join(RAW_FORMATS)}, "
                             f"found {self.sample_format!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels <= 0:
            raise ValueError(f"channels: expected a positive integer, found {self.channels!r}")

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample of every channel."""
        return RAW_FORMATS[self.sample_format][2] * self.channels

    def soundfile_args(self) -> dict:
        """Keyword arguments that make :class:`soundfile.SoundFile` read such a file."""
        subtype, endian, _ = RAW_FORMATS[self.sample_format]
        return {"samplerate": self.sample_rate, "channels": self.channels, "subtype": subtype,
                "endian": endian, "format": "RAW"}


def is_raw_file(path: str) -> bool:
    """Whether a file path names headerless PCM (by its ending, :data:`RAW_SUFFIXES`)."""
    return path.lower().endswith(RAW_SUFFIXES)


class BadAudioError(Exception):
    """The audio of an utterance cannot be used.

    Attributes:
        utt_id: the utterance (``""`` when not known to the caller).
        path: the wav.scp entry (file, ``ark:offset`` or command).
        reason: what is wrong, in words.
    """

    def __init__(self, utt_id: str, path: str, reason: str):
        self.utt_id = utt_id
        self.path = path
        self.reason = reason
        super().__init__(f"utterance {utt_id!r} ({path}): {reason}")


def _to_float32(samples: np.ndarray) -> np.ndarray:
    """Integer PCM or float samples -> float32 in [-1, 1), shape (S, C)."""
    samples = np.asarray(samples)
    if samples.dtype == np.uint8:  # 8-bit WAV is unsigned
        samples = (samples.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(2 ** (8 * samples.dtype.itemsize - 1))
    else:
        samples = samples.astype(np.float32, copy=False)
    return samples[:, None] if samples.ndim == 1 else samples


def _wav_truncation(path: str) -> str | None:
    """A reason string when a RIFF/WAV file is shorter than its ``data`` chunk says, else None."""
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        file_size = f.seek(0, io.SEEK_END)
        pos = 12
        while pos + 8 <= file_size:
            f.seek(pos)
            chunk_id, size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                available = file_size - pos - 8
                # 0 and 0xFFFFFFFF are written by streaming writers that do not know the size
                if size not in (0, 0xFFFFFFFF) and size > available:
                    return (
                        f"truncated WAV: header declares {size} bytes of audio, "
                        f"file holds {available}"
                    )
                return None
            pos += 8 + size + (size & 1)
    return None


def _read_file(
    path: str, utt_id: str, segment: Segment | None, raw: RawFormat | None
) -> tuple[np.ndarray, int]:
    """Read a file (only the frames of ``segment``); errors other than BadAudioError propagate
    to :func:`read_audio`."""
    kwargs = {}
    if is_raw_file(path):
        if raw is None:
            if not os.path.exists(path):
                raise FileNotFoundError(path)
            raise BadAudioError(utt_id, path, RAW_HINT)
        size = os.path.getsize(path)
        if size % raw.bytes_per_frame:
            raise BadAudioError(
                utt_id, path, f"{size} bytes is not a whole number of {raw.sample_format} frames "
                f"of {raw.channels} channel(s) ({raw.bytes_per_frame} bytes each); wrong "
                "sample format or channel count, or not raw PCM?"
            )
        kwargs = raw.soundfile_args()
    else:
        truncation = _wav_truncation(path)
        if truncation:
            raise BadAudioError(utt_id, path, truncation)
    with soundfile.SoundFile(path, **kwargs) as f:
        rate = f.samplerate
        start, stop = 0, f.frames
        if segment is not None:
            start = round(segment.start * rate)
            if segment.end is not None:
                stop = min(stop, round(segment.end * rate))
            if start >= f.frames > 0:
                raise BadAudioError(
                    utt_id, path, f"segment starts at {segment.start} s, after the end "
                    f"of the recording ({f.frames / rate:.3f} s)"
                )
            f.seek(start)
        samples = f.read(max(stop - start, 0), dtype="float32", always_2d=True)
    return samples, rate


def _decode(value, utt_id: str, entry: str) -> tuple[np.ndarray, int]:
    """kaldiio's result (``(rate, array)`` or a bare array) -> float32 (S, C) and rate."""
    if isinstance(value, tuple):
        rate, samples = value
        return _to_float32(samples), int(rate)
    samples = np.asarray(value)
    if samples.ndim not in (1, 2) or not np.issubdtype(samples.dtype, np.number):
        raise BadAudioError(
            utt_id, entry, f"ark entry holds a {samples.dtype} array of shape {samples.shape}, "
            "expected audio samples (S,) or (S, C)"
        )
    return _to_float32(samples), ARK_SAMPLE_RATE


def _read_pipe(entry: str, utt_id: str) -> tuple[np.ndarray, int]:
    command = entry.rstrip()[:-1]
    try:
        result = subprocess.run(
            command, shell=True, capture_output=True, timeout=PIPE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise BadAudioError(utt_id, entry, f"command ran longer than {PIPE_TIMEOUT_S} s") from None
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip().splitlines()
        detail = f": {stderr[-1]}" if stderr else ""
        raise BadAudioError(
            utt_id, entry, f"command exited with status {result.returncode}{detail}"
        )
    try:
        samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors, and TypeError for some headerless output
        raise BadAudioError(
            utt_id, entry, f"command output ({len(result.stdout)} bytes) is not audio: {err}"
        ) from None
    return samples, rate


def _cut(samples: np.ndarray, rate: int, segment: Segment, utt_id: str, entry: str) -> np.ndarray:
    start = round(segment.start * rate)
    stop = len(samples) if segment.end is None else min(len(samples), round(segment.end * rate))
    if start >= len(samples) > 0:
        raise BadAudioError(
            utt_id, entry, f"segment starts at {segment.start} s, after the end of the "
            f"recording ({len(samples) / rate:.3f} s)"
        )
    return samples[start:stop]


def _backend_reason(err: Exception) -> str:
    """The reason for an exception of the audio backend (soundfile, kaldiio, the OS, ...)."""
    if isinstance(err, IsADirectoryError):
        return "is a directory, not an audio file"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, (soundfile.LibsndfileError, OSError)):
        return f"unreadable: {err}"
    return f"unreadable: {type(err).__name__}: {err}"


def read_audio(
    entry: str,
    *,
    utt_id: str = "",
    segment: Segment | None = None,
    raw: RawFormat | None = None,
) -> tuple[np.ndarray, int]:
    """Read the audio of one wav.scp entry at its own rate, all channels.

    Args:
        entry: the wav.scp value (file path, ``file.ark:offset`` or ``cmd |``).
        utt_id: the utterance, for error messages.
        segment: cut ``[start, end)`` seconds out of the recording, if given.
        raw: how to read a headerless ``*.raw`` / ``*.pcm`` file; without it such a file is
            refused (:data:`RAW_HINT`). Other entries ignore it.

    Returns:
        ``(samples, rate)``: float32 ``(S, C)`` array scaled to [-1, 1) (integer PCM is divided
        by 2^(bits-1)), and the sample rate in Hz. Values are not checked (may hold NaN).

    Raises:
        BadAudioError: when the audio cannot be read, whatever the reason (every exception of
            the backend is converted here, with its reason).
    """
    if not entry:
        raise BadAudioError(utt_id, entry, "empty wav.scp entry")
    try:
        if is_pipe(entry):
            samples, rate = _read_pipe(entry, utt_id)
        elif split_ark_offset(entry) is not None:
            try:
                value = kaldiio.load_mat(entry)
            except FileNotFoundError:
                raise BadAudioError(utt_id, entry, "ark file does not exist") from None
            except Exception as err:  # kaldiio raises many types for corrupt arks
                raise BadAudioError(utt_id, entry, f"unreadable ark entry: {err}") from None
            samples, rate = _decode(value, utt_id, entry)
        else:
            return _read_file(entry, utt_id, segment, raw)
        if segment is not None:
            samples = _cut(samples, rate, segment, utt_id, entry)
        return samples, rate
    except BadAudioError:
        raise
    except FileNotFoundError:
        raise BadAudioError(utt_id, entry, "file does not exist") from None
    except Exception as err:  # whatever the backend raises is a reason, not a crash
        logger.debug("reading %r failed", entry, exc_info=True)
        raise BadAudioError(utt_id, entry, _backend_reason(err)) from None


def as_samples(audio: np.ndarray | torch.Tensor, name: str = "audio") -> torch.Tensor:
    """In-memory samples ``(S,)`` or channels-last ``(S, C)`` -> ``(S, C)`` float32 tensor (CPU).

    Integer PCM arrays are scaled to [-1, 1) as soundfile reads them (8-bit is unsigned).

    Args:
        audio: a numpy array (float or integer PCM) or a float tensor.
        name: the argument's name, for error messages.

    Raises:
        TypeError: for another type, or an integer tensor.
        ValueError: for another number of dimensions.
    """
    import torch

    if isinstance(audio, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(_to_float32(audio)))
    elif isinstance(audio, torch.Tensor):
        if not audio.is_floating_point():
            raise TypeError(f"{name}: expected a float tensor, found dtype {audio.dtype}")
        x = audio.detach().to("cpu", torch.float32)
    else:
        raise TypeError(f"{name}: expected a numpy array or torch tensor, found {type(audio).__name__}")
    if x.dim() == 1:
        return x[:, None]
    if x.dim() == 2:
        return x
    raise ValueError(f"{name}: expected (S,) or channels-last (S, C) samples, found shape {tuple(x.shape)}")


def to_mono(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Down-mix ``(S, C)`` samples to ``(S,)`` by averaging the channels (float32 tensor)."""
    import torch

    x = torch.as_tensor(samples, dtype=torch.float32)
    return x.mean(dim=1) if x.ndim == 2 else x


def peak_dbfs(samples: np.ndarray | torch.Tensor) -> float:
    """The peak level of float samples in dB relative to full scale (1.0).

    ``20 * log10(max |x|)`` over every sample and channel: 0 dBFS is full scale, -6 dBFS half
    of it; digital silence (all zero) and no samples give ``-inf``.
    """
    x = np.abs(np.asarray(samples, dtype=np.float64))
    peak = float(x.max()) if x.size else 0.0
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")


def load_waveform(
    entry: str,
    *,
    utt_id: str = "",
    segment: Segment | None = None,
    sample_rate: int = SAMPLE_RATE,
    raw: RawFormat | None = None,
) -> torch.Tensor:
    """Read an utterance as a mono waveform at ``sample_rate``.

    Args:
        entry: the wav.scp value.
        utt_id: the utterance, for error messages.
        segment: cut ``[start, end)`` seconds out of the recording, if given.
        sample_rate: output rate in Hz; other rates are converted with
            :func:`xtrans.data.resample.resample`.
        raw: how to read headerless PCM files (see :func:`read_audio`).

    Returns:
        ``(S,)`` float32 tensor at ``sample_rate``.

    Raises:
        BadAudioError: when the audio cannot be read.
    """
    samples, rate = read_audio(entry, utt_id=utt_id, segment=segment, raw=raw)
    waveform = to_mono(samples)
    if rate != sample_rate:
        waveform = resample(waveform, rate, sample_rate)
    return waveform
