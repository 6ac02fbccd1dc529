"""Audio and references for the live server's tests: spoken digit strings and Speech2Text results.

Digit strings join random recordings of an FSDD-shaped folder (``wav.scp`` of 8 kHz 16-bit WAV
files): the tests' own synthetic digits (:mod:`xtrans.testing.speech_fixtures`, the
``spoken_digits`` fixture), or a copy of the Free Spoken Digit Dataset (Zohar Jackson et al.,
CC BY-SA 4.0; strings made from it keep that attribution and licence).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import soundfile

FSDD_RATE = 8000


def fsdd_recordings(root: Path) -> List[Path]:
    """Every recording of ``wav.scp``, in its order."""
    lines = (root / "wav.scp").read_text().splitlines()
    return [root / line.split(maxsplit=1)[1] for line in lines if line.strip()]


def digit_string(root: Path, num_digits: int, seed: int, gap_s: float = 0.0) -> np.ndarray:
    """``num_digits`` random recordings of ``root`` joined (``gap_s`` of zeros between them): (S,) float32 at 8 kHz.

    The samples are 16-bit values / 32768, so s16le carries them exactly.
    """
    rng = random.Random(seed)
    files = fsdd_recordings(root)
    gap = np.zeros(int(round(gap_s * FSDD_RATE)), np.float32)
    parts: List[np.ndarray] = []
    for i in range(num_digits):
        samples, rate = soundfile.read(rng.choice(files), dtype="float32")
        assert rate == FSDD_RATE, rate
        parts += ([gap] if i and len(gap) else []) + [samples]
    return np.concatenate(parts)


def to_s16(samples: np.ndarray) -> np.ndarray:
    """The float samples a s16le client actually sends (rounded to 16 bits, clipped)."""
    return (np.clip(np.round(samples * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def stream_reference(s2t, samples: np.ndarray, sample_rate: int):
    """What :meth:`Speech2Text.stream` gives for the whole signal: the reference of a final."""
    session = s2t.stream()
    if len(samples):
        session.accept_waveform(samples, sample_rate)
    return session.finalize()


def batched_and_alone(backend, waves: Sequence[np.ndarray], seed: int = 0,
                      most: int = 5) -> Iterator[Tuple[int, list, list]]:
    """Advances 16 kHz ``waves`` through a server backend twice, chunk by chunk as the engine feeds
    them: each stream alone, and all of them in shuffled groups of 1 to ``most`` streams; yields
    ``(chunk, batched states, alone states)`` after each chunk (as many chunks as the shortest
    wave holds whole), for a test to compare."""
    g = backend.geometry
    calls = min(len(w) for w in waves) // g.samples_per_call - 1
    batched = [backend.advance([backend.init()], w[None, :g.prime_samples])[0] for w in waves]
    alone = list(batched)
    rng = random.Random(seed)
    for k in range(calls):
        chunk = np.stack([w[g.prime_samples + k * g.samples_per_call:][:g.samples_per_call] for w in waves])
        alone = [backend.advance([s], chunk[b:b + 1])[0] for b, s in enumerate(alone)]
        order = rng.sample(range(len(waves)), len(waves))
        while order:
            size = rng.randint(1, most)
            group, order = order[:size], order[size:]
            for b, state in zip(group, backend.advance([batched[b] for b in group], chunk[group])):
                batched[b] = state
        yield k, batched, alone
