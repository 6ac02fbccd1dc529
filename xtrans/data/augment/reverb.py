"""Reverberation: speech convolved with a room impulse response (RIR).

An RIR comes from a list of measured or simulated responses (a Kaldi-style ``rir.scp``, e.g.
RIRS_NOISES' ``real_rirs_isotropic_noises`` or ``simulated_rirs``) or from a shoebox room
simulated by the image method (Allen and Berkley, 1979) in pyroomacoustics: a random room of
3-10 x 3-8 x 2.5-4 m, absorption set for a target RT60 by Sabine's formula, a source and a
microphone at random places at least 0.5 m from the walls.

Alignment is kept: every RIR is cut to start at its direct path (its largest magnitude) and
scaled so that the direct path is 1, so ``y = (x * h)[:S]`` has the dry speech at the same time
and level and only adds the room's reflections after it: the transcript's timing does not move,
and the output has the input's length.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from xtrans.frames import SAMPLE_RATE

MAX_RIR_SECONDS = 2.0
"""Longest response kept (seconds); later samples are dropped."""

CACHE_ENV = "XTRANS_CACHE_DIR"
"""Environment variable naming the folder where simulated rooms are kept between processes
(``<dir>/rooms``); unset: ``$XDG_CACHE_HOME/xtrans`` or ``~/.cache/xtrans``; set empty: no disk cache."""

logger = logging.getLogger(__name__)


def align_rir(rir: np.ndarray, max_seconds: float = MAX_RIR_SECONDS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``rir`` from its direct path (largest magnitude) on, scaled so that the direct path is 1.

    Raises:
        ValueError: for an empty or all-zero response, or one that is not 1-D.
    """
    rir = np.asarray(rir, dtype=np.float64)
    if rir.ndim == 2 and 1 in rir.shape:
        rir = rir.reshape(-1)
    if rir.ndim != 1 or rir.size == 0:
        raise ValueError(f"rir: expected a 1-D impulse response, found shape {rir.shape}")
    peak = int(np.argmax(np.abs(rir)))
    if rir[peak] == 0.0:
        raise ValueError("rir: expected a non-zero impulse response, found all zeros")
    out = rir[peak:peak + max(1, int(max_seconds * sample_rate))] / rir[peak]
    return out.astype(np.float32)


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``speech`` (S,) convolved with an aligned ``rir`` (:func:`align_rir`), cut to ``S`` samples.

    Computed by FFT: ``y[n] = sum_k h[k] x[n - k]`` for ``n < S``.
    """
    speech = np.asarray(speech, dtype=np.float32)
    n = speech.size + rir.size - 1
    size = 1 << max(0, (n - 1).bit_length())
    y = np.fft.irfft(np.fft.rfft(speech, size) * np.fft.rfft(rir, size), size)[:speech.size]
    return y.astype(np.float32)


def rt60_from_rir(rir: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """RT60 (seconds) of a response by Schroeder's backward integration, from the -5 to the -25 dB
    points of the decay curve (T20, extrapolated to 60 dB); ``nan`` when it does not decay 25 dB."""
    energy = np.cumsum(np.asarray(rir, dtype=np.float64)[::-1] ** 2)[::-1]
    if energy[0] <= 0:
        return math.nan
    curve = 10.0 * np.log10(np.maximum(energy / energy[0], 1e-30))
    below5 = np.nonzero(curve <= -5.0)[0]
    below25 = np.nonzero(curve <= -25.0)[0]
    if not below5.size or not below25.size:
        return math.nan
    return 3.0 * (below25[0] - below5[0]) / sample_rate


def _place(rng: np.random.Generator, dims: np.ndarray, margin: float = 0.5) -> np.ndarray:
    return np.array([rng.uniform(margin, d - margin) for d in dims])


def simulate_rir(rng: np.random.Generator, rt60: float, sample_rate: int = SAMPLE_RATE,
                 max_order: Optional[int] = 60) -> np.ndarray:
    """The RIR of a random shoebox room with reverberation time ``rt60`` (image method,
    pyroomacoustics), aligned by :func:`align_rir`.

    Args:
        rng: draws the room, the source and the microphone.
        rt60: target reverberation time (seconds, > 0).
        sample_rate: Hz.
        max_order: cap on the image order (the order Sabine's formula asks for grows with RT60;
            the cap bounds the time per room; ``None`` = uncapped).

    Raises:
        ValueError: for a non-positive ``rt60`` or one the drawn room cannot reach.
        ImportError: naming the package when pyroomacoustics is not installed.
    """
    if not rt60 > 0:
        raise ValueError(f"rt60: expected > 0 seconds, found {rt60}")
    try:
        import pyroomacoustics as pra
    except ImportError as err:  # pragma: no cover - installed with xtrans
        raise ImportError("simulated rooms need pyroomacoustics: pip install pyroomacoustics") from err
    dims = np.array([rng.uniform(3.0, 10.0), rng.uniform(3.0, 8.0), rng.uniform(2.5, 4.0)])
    absorption, order = pra.inverse_sabine(rt60, dims)
    if max_order is not None:
        order = min(order, max_order)
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=order)
    room.add_source(_place(rng, dims))
    room.add_microphone(_place(rng, dims))
    room.compute_rir()
    return align_rir(np.asarray(room.rir[0][0]), sample_rate=sample_rate)


def room_cache_dir() -> Optional[Path]:
    """The folder of simulated rooms kept on disk (see :data:`CACHE_ENV`), or ``None`` when turned off."""
    root = os.environ.get(CACHE_ENV)
    if root is None:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xtrans")
    return Path(root) / "rooms" if root else None


def cached_rooms(key: str, simulate: Callable[[], Sequence[np.ndarray]]) -> Tuple[np.ndarray, ...]:
    """The responses ``simulate()`` returns, kept on disk under ``key`` (see :func:`room_cache_dir`).

    Simulating a bank of rooms takes seconds per room, and every training process of a recipe
    (each stage, each variant) and every robustness table asks for the same rooms: the first
    one simulates and writes them, the others read them back bit for bit. ``key`` must name
    everything the rooms depend on; the version of pyroomacoustics is added to it. A file that
    cannot be read is simulated again; a folder that cannot be written only costs the time.
    """
    folder = room_cache_dir()
    if folder is None:
        return tuple(simulate())
    try:
        import pyroomacoustics
        version = pyroomacoustics.__version__
    except ImportError:  # pragma: no cover - installed with xtrans
        version = "none"
    path = folder / (hashlib.sha1(f"{key}|pyroomacoustics {version}".encode()).hexdigest()[:20] + ".npz")
    try:
        with np.load(path) as data:
            return tuple(data[f"room{k}"] for k in range(len(data.files)))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # a cut or foreign file: simulate again
        logger.warning("ignoring the room cache %s: %s", path, err)
    rooms = tuple(simulate())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **{f"room{k}": r for k, r in enumerate(rooms)})
        os.replace(tmp.name, path)  # atomic: a reader sees the whole file or none
    except OSError as err:
        logger.warning("could not keep the simulated rooms in %s: %s", folder, err)
    return rooms


@functools.lru_cache(maxsize=8)
def room_bank(count: int, rt60_range: Tuple[float, float], seed: int,
              sample_rate: int = SAMPLE_RATE) -> Tuple[np.ndarray, ...]:
    """``count`` simulated rooms, RT60 uniform in ``rt60_range``, from ``seed`` (cached per process
    and on disk: :func:`cached_rooms`).

    Room ``k`` is drawn from ``numpy.random.default_rng([seed, k])``, so a bank is the same in every
    process and a bank of more rooms starts with the rooms of a smaller one.
    """
    low, high = float(rt60_range[0]), float(rt60_range[1])

    def simulate() -> list:
        rooms = []
        for k in range(count):
            rng = np.random.default_rng([seed, k])
            rooms.append(simulate_rir(rng, float(rng.uniform(low, high)), sample_rate))
        return rooms
    return cached_rooms(f"room_bank v1: {count} rooms, rt60 {low!r}-{high!r}, seed {seed}, {sample_rate} Hz", simulate)


def check_rt60_range(rt60: Sequence[float], name: str = "rt60") -> Tuple[float, float]:
    """``[low, high]`` seconds, ``0 < low <= high``.

    Raises:
        ValueError: naming ``name`` otherwise.
    """
    if len(rt60) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in rt60) \
            or not 0 < rt60[0] <= rt60[1]:
        raise ValueError(f"{name}: expected [low, high] seconds with 0 < low <= high, found {list(rt60)}")
    return float(rt60[0]), float(rt60[1])
