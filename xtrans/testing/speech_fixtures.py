"""Speech the tests make themselves: isolated spoken digits from eSpeak NG voices, laid out like FSDD.

The streaming, export and serving tests want speech rather than tones or noise (a waveform with
voicing, formants and pauses exercises the normalisations and the chunk edges the way a
microphone does), and a tiny model that emits tokens on it. The Free Spoken Digit Dataset cannot
ship with the repository, so :func:`write_spoken_digits` synthesises a small stand-in in the
layout of FSDD's training split (the one :mod:`xtrans.recipes.fsdd` reads)::

    <root>/recordings/<digit>_<speaker>_<take>.wav   one digit, 8 kHz mono 16-bit PCM
    <root>/wav.scp    enusm3-3_05 recordings/3_enusm3_5.wav       (paths relative to <root>)
    <root>/text       enusm3-3_05 THREE
    <root>/utt2spk, spk2utt, utt2dur

so ``<root>`` is at once an FSDD folder and a Kaldi data directory (:func:`read_data_dir`).
Speakers are the :data:`VOICES` (an accent and a timbre each), named by the letters and digits
of the voice (``en-us+m3`` -> ``enusm3``: FSDD's file names allow no other characters). Every
speaker says every digit once per take of :data:`TAKES`; like the developers' FSDD copy there
are no test takes (0-4), so the FSDD recipe finds train (5-7) and dev (45) takes only.

Each recording draws its own speaking rate, pitch and intonation range, silent margins, a
background noise floor and a peak level (FSDD's speakers were recorded at different levels),
from a generator seeded by (speaker, digit, take). eSpeak keeps state between calls in a
process (:mod:`xtrans.synth.corpus`), so the folder is rendered by a fresh Python process
(``python -m xtrans.testing.speech_fixtures ROOT [--seed N]``) in a fixed order: on one platform
and with the same package versions it gives the same bytes, whatever the calling process
synthesised before. It takes about a second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np

from xtrans.synth.espeak import Voice

RATE = 8000
"""Sample rate of the recordings (Hz), FSDD's."""

DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")

VOICES: Tuple[Voice, ...] = (
    Voice("en-us", "m3"), Voice("en-gb-x-rp", "f2"), Voice("en-029", "m7"), Voice("en-gb-scotland", "f4"))
"""The speakers: four accents, two male and two female timbres."""

TAKES: Tuple[int, ...] = (5, 6, 7, 45)
"""Takes per speaker and digit: training takes 5-7 and one dev take of the FSDD recipe (45-49)."""


def speaker_name(voice: Voice) -> str:
    """The FSDD speaker name of a voice: its letters and digits, lower case (``enusm3``)."""
    return "".join(c for c in voice.name.lower() if c.isalnum())


SPEAKERS: Dict[str, Voice] = {speaker_name(v): v for v in VOICES}
"""Speaker name -> voice."""


def _to_8khz(x: np.ndarray, orig_rate: int) -> np.ndarray:
    """(S,) float64 at ``orig_rate`` -> 8 kHz, by the streaming resampler (numpy, no torch import)."""
    from xtrans.data.resample import init_resample_state, resample_chunk, resample_flush

    head, state = resample_chunk(x, init_resample_state(orig_rate, RATE))
    tail, _ = resample_flush(state)
    return np.concatenate([head, tail])


def render_digit(digit: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """One recording: ``digit`` said by ``voice`` with the variation drawn from ``rng``.

    Speaking rate 150-220 words per minute, pitch 35-65 and intonation range 30-70 (eSpeak's
    0..100 scales), 10-50 ms of margin before and after the word (FSDD's recordings are cut
    tightly too), white noise 30-45 dB below the word's mean power over the whole recording,
    and a peak of 0.3-0.9 (full scale 1).

    Returns:
        (S,) float32 at :data:`RATE`, quantised to 16 bits (what the WAV file holds).
    """
    from xtrans.synth.espeak import get_engine

    engine = get_engine()
    rate, pitch, pitch_range = rng.integers(150, 221), rng.integers(35, 66), rng.integers(30, 71)
    samples = engine.synthesize(DIGIT_WORDS[digit].lower(), voice, rate=int(rate), pitch=int(pitch),
                                pitch_range=int(pitch_range), seed=int(rng.integers(2 ** 31 - 1)))
    word = _to_8khz(samples.astype(np.float64) / 32768.0, engine.sample_rate)
    lead, trail = (int(rng.uniform(0.01, 0.05) * RATE) for _ in range(2))
    x = np.concatenate([np.zeros(lead), word, np.zeros(trail)])
    noise_db = rng.uniform(30.0, 45.0)
    x += rng.standard_normal(x.size) * np.sqrt(np.mean(word ** 2) / 10 ** (noise_db / 10))
    x *= rng.uniform(0.3, 0.9) / np.abs(x).max()
    return (np.round(x * 32768.0) / 32768.0).astype(np.float32)


def _render_folder(root: Path, seed: int) -> None:
    """Writes the recordings and the tables in this process (see :func:`write_spoken_digits`)."""
    import soundfile

    from xtrans.data.kaldi_dir import DataDir, write_data_dir

    recordings = root / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    wav_scp, text, utt2spk, utt2dur = {}, {}, {}, {}
    for k, (speaker, voice) in enumerate(SPEAKERS.items()):
        for digit in range(10):
            for take in TAKES:
                x = render_digit(digit, voice, np.random.default_rng([seed, k, digit, take]))
                name = f"{digit}_{speaker}_{take}.wav"
                soundfile.write(recordings / name, x, RATE, subtype="PCM_16")
                utt = f"{speaker}-{digit}_{take:02d}"
                wav_scp[utt], text[utt], utt2spk[utt] = f"recordings/{name}", DIGIT_WORDS[digit], speaker
                utt2dur[utt] = len(x) / RATE
    write_data_dir(DataDir(wav_scp=wav_scp, text=text, utt2spk=utt2spk, utt2dur=utt2dur), root)


def write_spoken_digits(root: Union[str, os.PathLike], seed: int = 0) -> Path:
    """Synthesises the folder described in the module docstring into ``root`` (created).

    ``len(VOICES) * 10 * len(TAKES)`` recordings of 0.25-0.7 s each, rendered by a fresh Python
    process so that the audio depends only on ``seed`` and the installed eSpeak NG.

    Returns:
        ``root``.

    Raises:
        RuntimeError: when the synthesis fails (e.g. ``espeakng-loader`` is not installed: it
            comes with ``make install``, or ``pip install -e '.[synth]'``), with its error output.
    """
    root = Path(root)
    proc = subprocess.run([sys.executable, "-m", "xtrans.testing.speech_fixtures", str(root), "--seed", str(seed)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"synthesising spoken digits into {root} failed (exit code {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m xtrans.testing.speech_fixtures",
                                description="Synthesise the tests' spoken digits into ROOT (in this process).")
    p.add_argument("root", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _render_folder(args.root, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
