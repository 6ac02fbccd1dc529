"""Generated noise, for recipes that have no recorded noise corpus.

Each family is a random process drawn from a ``numpy.random.Generator`` and stands in for a kind
of everyday sound that stationary white or coloured noise does not cover:

==========  =====================================================  ==============================
family      what is generated                                      stands in for
==========  =====================================================  ==============================
colored     stationary noise with a spectral slope of -6..+3 dB     hiss, air conditioning, the
            per octave (brown .. white .. blue)                     recording chain's own noise
bursts      band-limited noise (random band of 1-4 octaves) under   traffic passing, wind gusts,
            a random on/off envelope of 80-800 ms segments          running water, a crowd's rumble
tones       harmonic tones (1-8 harmonics, 80-1000 Hz) changing     music, singing, phone rings,
            note every 100-600 ms, with vibrato and decays          TV jingles
clicks      decaying resonant impulses (0.5-20 per second) at       dishes, cutlery, keyboards,
            random pitches, plus a floor of soft noise              doors, footsteps
hum         mains hum (50/60 Hz and harmonics), a motor's whine     fridges, fans, cars, engines,
            drifting in pitch, and slowly modulated fan noise       ventilation
sweeps      tones gliding up and down (1-4 voices)                  sirens, alarms, whistles
crackle     dense random impulses through a resonant band with a    rain, frying, vinyl and radio
            slowly changing rate                                    static
==========  =====================================================  ==============================

:data:`TRAIN_FAMILIES` are what the recipes train with; :data:`HELD_OUT_FAMILIES` are never drawn
in training, so the robustness table's generated noise (``python -m xtrans.bin.make_noise``)
measures a noise the model has not heard.

All functions return ``(S,)`` float32 arrays with unit RMS (0.0 only for an empty request).
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import numpy as np

from xtrans.frames import SAMPLE_RATE

TRAIN_FAMILIES = ("colored", "bursts", "tones", "clicks", "hum")
HELD_OUT_FAMILIES = ("sweeps", "crackle")


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    return (x / rms if rms > 0 else x).astype(np.float32)


def _spectral_shape(x: np.ndarray, gain: Callable[[np.ndarray], np.ndarray], sample_rate: int) -> np.ndarray:
    """``x`` filtered by the zero-phase amplitude response ``gain(frequencies in Hz)``."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate)
    return np.fft.irfft(spec * gain(freqs), n=x.size)


def _segments(num_samples: int, rng: np.random.Generator, low_s: float, high_s: float,
              sample_rate: int) -> list:
    """Consecutive ``(start, stop)`` segments of random durations in ``[low_s, high_s]`` seconds."""
    out, start = [], 0
    while start < num_samples:
        stop = min(num_samples, start + max(1, int(rng.uniform(low_s, high_s) * sample_rate)))
        out.append((start, stop))
        start = stop
    return out


def colored(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    slope = rng.uniform(-6.0, 3.0)  # dB per octave
    white = rng.standard_normal(num_samples)
    return _unit_rms(_spectral_shape(
        white, lambda f: np.maximum(f, 20.0) ** (slope / (20.0 * np.log10(2.0))), sample_rate))


def bursts(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    low = rng.uniform(50.0, 2000.0)
    high = min(low * 2.0 ** rng.uniform(1.0, 4.0), 0.45 * sample_rate)
    band = _spectral_shape(rng.standard_normal(num_samples),
                           lambda f: ((f >= low) & (f <= high)).astype(float), sample_rate)
    envelope = np.zeros(num_samples)
    for start, stop in _segments(num_samples, rng, 0.08, 0.8, sample_rate):
        envelope[start:stop] = rng.uniform(0.05, 1.0) if rng.random() < 0.6 else rng.uniform(0.0, 0.05)
    ramp = max(1, int(0.02 * sample_rate))  # 20 ms fades between segments
    envelope = np.convolve(envelope, np.ones(ramp) / ramp, mode="same")
    return _unit_rms(band * envelope)


def tones(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    out = np.zeros(num_samples)
    num_harmonics = int(rng.integers(1, 9))
    rolloff = rng.uniform(0.3, 0.9)
    phase = 0.0
    for start, stop in _segments(num_samples, rng, 0.1, 0.6, sample_rate):
        t = np.arange(stop - start) / sample_rate
        f0 = 80.0 * 2.0 ** rng.uniform(0.0, np.log2(1000.0 / 80.0))
        vibrato = 1.0 + rng.uniform(0.0, 0.02) * np.sin(2 * np.pi * rng.uniform(4.0, 7.0) * t)
        inst = phase + 2 * np.pi * np.cumsum(f0 * vibrato) / sample_rate
        phase = float(inst[-1])
        note = sum(rolloff ** k * np.sin((k + 1) * inst) for k in range(num_harmonics)
                   if (k + 1) * f0 < 0.45 * sample_rate)
        decay = np.exp(-t * rng.uniform(0.0, 6.0))
        out[start:stop] = note * decay * (rng.random() < 0.85)
    return _unit_rms(out)


def clicks(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    out = 0.01 * rng.standard_normal(num_samples)
    rate = rng.uniform(0.5, 20.0)
    count = int(rng.poisson(rate * num_samples / sample_rate)) + 1
    for _ in range(count):
        start = int(rng.integers(0, num_samples))
        length = min(num_samples - start, int(rng.uniform(0.005, 0.15) * sample_rate))
        t = np.arange(length) / sample_rate
        freq = rng.uniform(300.0, 0.4 * sample_rate)
        ring = np.sin(2 * np.pi * freq * t) * np.exp(-t * rng.uniform(30.0, 400.0))
        ring += 0.3 * rng.standard_normal(length) * np.exp(-t * 300.0)
        out[start:start + length] += rng.uniform(0.1, 1.0) * ring
    return _unit_rms(out)


def hum(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    mains = 50.0 if rng.random() < 0.5 else 60.0
    out = sum(rng.uniform(0.0, 1.0) / k * np.sin(2 * np.pi * k * mains * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, 6))
    whine = rng.uniform(150.0, 3000.0) * (1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t))
    out = out + rng.uniform(0.0, 0.7) * np.sin(2 * np.pi * np.cumsum(whine) / sample_rate)
    cutoff = rng.uniform(300.0, 3000.0)
    fan = _spectral_shape(rng.standard_normal(num_samples), lambda f: 1.0 / (1.0 + (f / cutoff) ** 2), sample_rate)
    fan = fan / (np.std(fan) + 1e-12) * (1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * t))
    return _unit_rms(out + rng.uniform(0.2, 1.5) * fan)


def sweeps(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    out = np.zeros(num_samples)
    for _ in range(int(rng.integers(1, 5))):
        low = rng.uniform(300.0, 1200.0)
        high = low * rng.uniform(1.3, 2.5)
        period = rng.uniform(0.3, 3.0)
        shape = np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        freq = low + (high - low) * (0.5 + 0.5 * shape)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
    return _unit_rms(out)


def crackle(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    rate = rng.uniform(100.0, 2000.0) * (1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t))
    impulses = (rng.random(num_samples) < rate / sample_rate) * rng.standard_normal(num_samples)
    center = rng.uniform(1000.0, 0.4 * sample_rate)
    width = center * rng.uniform(0.3, 1.0)
    return _unit_rms(_spectral_shape(impulses, lambda f: np.exp(-0.5 * ((f - center) / width) ** 2), sample_rate))


FAMILIES: Dict[str, Callable[[int, np.random.Generator, int], np.ndarray]] = {
    "colored": colored, "bursts": bursts, "tones": tones, "clicks": clicks, "hum": hum,
    "sweeps": sweeps, "crackle": crackle,
}


def check_families(families: Sequence[str], name: str = "families") -> tuple:
    """The families as a tuple, checked against :data:`FAMILIES`.

    Raises:
        ValueError: for an empty list or an unknown family, naming ``name``.
    """
    families = tuple(families)
    if not families:
        raise ValueError(f"{name}: expected at least one noise family of {sorted(FAMILIES)}, found none")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"{name}: expected noise families of {sorted(FAMILIES)}, found {unknown[0]!r}")
    return families


def generate_noise(family: str, num_samples: int, rng: np.random.Generator,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``num_samples`` of generated noise of ``family`` (unit RMS, float32).

    Raises:
        ValueError: for an unknown family or a negative length.
    """
    check_families([family], "family")
    if num_samples < 0:
        raise ValueError(f"num_samples: expected >= 0, found {num_samples}")
    if num_samples == 0:
        return np.zeros(0, dtype=np.float32)
    return FAMILIES[family](num_samples, rng, sample_rate)
