"""Channels: what microphones, telephone lines and codecs do to the spectrum and the samples.

- :func:`random_eq`: a microphone's or a small loudspeaker's colouring: a high-pass (a small
  device loses the low frequencies), a low-pass (a cheap or distant channel loses the high
  ones) and a smooth random tilt-and-bumps response of up to +-``max_db``.
- :func:`telephone`: narrow-band telephony: down to 8 kHz, the 300-3400 Hz voice band, 8-bit
  mu-law companding (G.711), and back to the model's rate.
- :func:`codec_roundtrip`: a lossy codec's encode and decode (Ogg Vorbis or Opus through
  libsndfile, in memory), at a compression level drawn per call.

All take and return ``(S,)`` float numpy arrays of the same length.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np

from xtrans.data.resample import resample
from xtrans.frames import SAMPLE_RATE

TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)
MU = 255.0
CODECS = ("vorbis", "opus")


def _apply_response(x: np.ndarray, response_db, sample_rate: int) -> np.ndarray:
    """``x`` through the zero-phase amplitude response ``response_db(frequency in Hz)``."""
    x = np.asarray(x, dtype=np.float64)
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
    return np.fft.irfft(spec * 10.0 ** (response_db(freqs) / 20.0), n=x.size).astype(np.float32)


def band_response_db(freqs: np.ndarray, low_hz: Optional[float], high_hz: Optional[float],
                     order: int = 4) -> np.ndarray:
    """Butterworth-like magnitude (dB) of a high-pass at ``low_hz`` and a low-pass at ``high_hz``
    (``None`` = none) of the given order."""
    f = np.maximum(freqs, 1e-3)
    gain = np.ones_like(f)
    if low_hz is not None:
        gain = gain / np.sqrt(1.0 + (low_hz / f) ** (2 * order))
    if high_hz is not None:
        gain = gain / np.sqrt(1.0 + (f / high_hz) ** (2 * order))
    return 20.0 * np.log10(np.maximum(gain, 1e-6))


def random_eq(x: np.ndarray, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE, *,
              max_db: float = 10.0, low_hz=(20.0, 500.0), high_hz=(3000.0, 8000.0)) -> np.ndarray:
    """A random microphone colouring (see the module docstring).

    Args:
        x: ``(S,)`` samples.
        rng: draws the cut-offs and the response.
        max_db: largest boost or cut of the smooth response (dB).
        low_hz: range of the high-pass cut-off (Hz, log-uniform).
        high_hz: range of the low-pass cut-off (Hz, log-uniform; capped below Nyquist).
    """
    low = float(np.exp(rng.uniform(np.log(low_hz[0]), np.log(low_hz[1]))))
    high = float(np.exp(rng.uniform(np.log(high_hz[0]), np.log(high_hz[1]))))
    high = high if high < 0.48 * sample_rate else None
    # a smooth curve over log-frequency: a tilt and a few bumps, within +-max_db
    knots = np.log2(np.geomspace(50.0, sample_rate / 2, 8))
    values = np.clip(rng.normal(0.0, max_db / 2.5, knots.size) + np.linspace(-1, 1, knots.size)
                     * rng.uniform(-max_db / 2, max_db / 2), -max_db, max_db)

    def response(freqs):
        smooth = np.interp(np.log2(np.maximum(freqs, 50.0)), knots, values)
        return smooth + band_response_db(freqs, low, high)

    return _apply_response(x, response, sample_rate)


def mu_law(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """G.711-style mu-law companding: quantised to ``2**bits`` levels in the mu-law domain and
    expanded back (values clipped to [-1, 1] first)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    levels = 2 ** (bits - 1)
    y = np.round(y * levels) / levels
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


def telephone(x: np.ndarray, sample_rate: int = SAMPLE_RATE, rng: Optional[np.random.Generator] = None
              ) -> np.ndarray:
    """Narrow-band telephony (see the module docstring); same length as ``x``.

    The voice band is :data:`TELEPHONE_BAND` (300-3400 Hz); with ``rng`` its edges are drawn in
    200-400 Hz and 3000-3600 Hz, as lines and handsets differ. The level is brought near full
    scale before companding (a line's automatic gain) and restored after, so quiet inputs are not
    lost in mu-law's lowest steps.
    """
    x = np.asarray(x, dtype=np.float32)
    band = TELEPHONE_BAND if rng is None else (float(rng.uniform(200.0, 400.0)), float(rng.uniform(3000.0, 3600.0)))
    narrow = resample(x, sample_rate, TELEPHONE_RATE) if sample_rate != TELEPHONE_RATE else x
    narrow = _apply_response(narrow, lambda f: band_response_db(f, *band), TELEPHONE_RATE)
    peak = float(np.max(np.abs(narrow))) if narrow.size else 0.0
    scale = 0.9 / peak if peak > 0 else 1.0
    narrow = mu_law(narrow * scale) / scale
    out = resample(narrow, TELEPHONE_RATE, sample_rate) if sample_rate != TELEPHONE_RATE else narrow
    return _fit(np.asarray(out, dtype=np.float32), x.size)


def _fit(x: np.ndarray, size: int) -> np.ndarray:
    if x.size >= size:
        return x[:size]
    return np.concatenate([x, np.zeros(size - x.size, dtype=x.dtype)])


def codec_roundtrip(x: np.ndarray, codec: str, rng: np.random.Generator,
                    sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` encoded with ``codec`` (``vorbis`` or ``opus``) in memory and decoded again, at a
    compression level drawn uniformly in [0.3, 1.0] (libsndfile's scale: 1.0 = lowest bit rate).

    Raises:
        ValueError: for an unknown codec.
        RuntimeError: naming the codec when this libsndfile cannot write it.
    """
    import soundfile as sf

    if codec not in CODECS:
        raise ValueError(f"codec: expected one of {CODECS}, found {codec!r}")
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    level = float(rng.uniform(0.3, 1.0))
    buffer = io.BytesIO()
    try:
        sf.write(buffer, x, sample_rate, format="OGG", subtype=codec.upper(), compression_level=level)
    except (sf.LibsndfileError, TypeError, ValueError) as err:
        raise RuntimeError(f"codec {codec!r}: libsndfile {sf.__libsndfile_version__} cannot write it "
                           f"({err})") from err
    buffer.seek(0)
    y, _ = sf.read(buffer, dtype="float32")
    return _fit(np.asarray(y, dtype=np.float32).reshape(-1), x.size)
