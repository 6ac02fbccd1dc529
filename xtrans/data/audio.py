"""Load the audio of a ``wav.scp`` entry: files, kaldiio ark offsets and shell pipes.

Three kinds of entry (see :mod:`xtrans.data.kaldi_dir`):

* a file path: read with soundfile (libsndfile: WAV, FLAC, OGG, ...); only the frames of a
  segment are read. A RIFF/WAV file whose header promises more audio than the file holds is
  reported as truncated (libsndfile would silently return the shorter signal).
* ``foo.ark:123``: read with :func:`kaldiio.load_mat`. An ark entry is either audio with its own
  rate (kaldiio writes ``(rate, array)`` as an embedded WAV/FLAC, which is what
  ``xtrans.bin.prepare_audio`` stores) or a bare Kaldi float vector/matrix, which carries no
  rate and is taken to be at :data:`ARK_SAMPLE_RATE` Hz (``(S,)`` or ``(S, C)`` samples).
* ``cmd |``: the command runs in a shell (current directory) and its stdout is decoded with
  soundfile, e.g. ``sph2pipe -f wav x.sph |`` or ``sox x.mp3 -t wav - |``.

Every failure becomes a :class:`BadAudioError` naming the utterance, the path and the reason.
"""

from __future__ import annotations

import io
import logging
import struct
import subprocess

import kaldiio
import numpy as np
import soundfile
import torch

from xtrans.data.kaldi_dir import Segment, is_pipe, split_ark_offset
from xtrans.data.resample import resample

logger = logging.getLogger(__name__)

ARK_SAMPLE_RATE = 16000
"""Sample rate assumed for bare float vectors in ark files (they store no rate)."""

PIPE_TIMEOUT_S = 600
"""Seconds a ``cmd |`` entry may run before it is reported as bad audio."""


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


def _read_file(path: str, utt_id: str, segment: Segment | None) -> tuple[np.ndarray, int]:
    try:
        truncation = _wav_truncation(path)
        if truncation:
            raise BadAudioError(utt_id, path, truncation)
        with soundfile.SoundFile(path) as f:
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
    except FileNotFoundError:
        raise BadAudioError(utt_id, path, "file does not exist") from None
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise BadAudioError(utt_id, path, f"unreadable: {err}") from None
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
    except (soundfile.LibsndfileError, RuntimeError) as err:
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


def read_audio(
    entry: str, *, utt_id: str = "", segment: Segment | None = None
) -> tuple[np.ndarray, int]:
    """Read the audio of one wav.scp entry at its own rate, all channels.

    Args:
        entry: the wav.scp value (file path, ``file.ark:offset`` or ``cmd |``).
        utt_id: the utterance, for error messages.
        segment: cut ``[start, end)`` seconds out of the recording, if given.

    Returns:
        ``(samples, rate)``: float32 ``(S, C)`` array scaled to [-1, 1) (integer PCM is divided
        by 2^(bits-1)), and the sample rate in Hz. Values are not checked (may hold NaN).

    Raises:
        BadAudioError: when the audio cannot be read.
    """
    if not entry:
        raise BadAudioError(utt_id, entry, "empty wav.scp entry")
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
        return _read_file(entry, utt_id, segment)
    if segment is not None:
        samples = _cut(samples, rate, segment, utt_id, entry)
    return samples, rate


def to_mono(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Down-mix ``(S, C)`` samples to ``(S,)`` by averaging the channels (float32 tensor)."""
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
    sample_rate: int = 16000,
) -> torch.Tensor:
    """Read an utterance as a mono waveform at ``sample_rate``.

    Args:
        entry: the wav.scp value.
        utt_id: the utterance, for error messages.
        segment: cut ``[start, end)`` seconds out of the recording, if given.
        sample_rate: output rate in Hz; other rates are converted with
            :func:`xtrans.data.resample.resample`.

    Returns:
        ``(S,)`` float32 tensor at ``sample_rate``.

    Raises:
        BadAudioError: when the audio cannot be read.
    """
    samples, rate = read_audio(entry, utt_id=utt_id, segment=segment)
    waveform = to_mono(samples)
    if rate != sample_rate:
        waveform = resample(waveform, rate, sample_rate)
    return waveform
