"""The synthetic demo corpus: spoken digit strings and short commands from eSpeak NG voices.

Content: digit strings (``ONE FOUR NINE ZERO``, 1..6 digits) and short command phrases
(``TURN ON THE LIGHT``), uppercase transcripts. Speakers are eSpeak voices
``<accent>+<variant>`` (:class:`xtrans.synth.espeak.Voice`). The split is by voice *variant*
(the timbre): the variants of dev and test are never heard in training, in any accent, so dev
and test measure generalisation to new voices.

Determinism: texts, voices and per-utterance seeds are drawn from ``seed`` up front. eSpeak
keeps internal state across calls in a process (e.g. the phase of its pitch flutter), so audio
also depends on what the process synthesised before; utterances are therefore rendered in
fixed shards of :data:`SHARD_SIZE`, each in a fresh process forked from a parent that has
synthesised nothing. The corpus is then identical for any number of jobs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile

from xtrans.data.kaldi_dir import DataDir, write_data_dir
from xtrans.synth.espeak import ENGLISH_LANGUAGES, SAMPLE_RATE, Variation, Voice, list_variants, render_utterance

logger = logging.getLogger(__name__)

DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")

COMMANDS = (
    "STOP", "GO", "YES", "NO", "UP", "DOWN", "LEFT", "RIGHT", "ON", "OFF", "GO LEFT", "GO RIGHT",
    "GO UP", "GO DOWN", "GO BACK", "GO FORWARD", "TURN LEFT", "TURN RIGHT", "TURN ON THE LIGHT",
    "TURN OFF THE LIGHT", "TURN ON THE RADIO", "TURN OFF THE RADIO", "OPEN THE DOOR",
    "CLOSE THE DOOR", "OPEN THE WINDOW", "CLOSE THE WINDOW", "VOLUME UP", "VOLUME DOWN",
    "PLAY MUSIC", "STOP MUSIC", "NEXT SONG", "PREVIOUS SONG", "CALL HOME", "CANCEL", "REPEAT",
    "START", "PAUSE", "WAKE UP", "GOOD NIGHT", "WHAT TIME IS IT", "SET AN ALARM",
    "MAKE IT WARMER", "MAKE IT COOLER", "LOCK THE DOOR", "HELP")
"""Command phrases; with :data:`DIGITS` the whole word vocabulary of the corpus."""

SPLITS = ("train", "dev", "test")
SHARD_SIZE = 50
"""Utterances rendered per fresh worker process (fixed, so the corpus does not depend on ``nj``)."""


@dataclass(frozen=True)
class UttSpec:
    """What to render for one utterance (everything random already drawn)."""

    utt_id: str
    voice: Voice
    text: str
    seed: int


def random_text(rng: np.random.Generator, command_prob: float = 0.3, max_digits: int = 6) -> str:
    """A digit string of 1..``max_digits`` digits, or a command with probability ``command_prob``."""
    if rng.random() < command_prob:
        return COMMANDS[int(rng.integers(len(COMMANDS)))]
    n = int(rng.integers(1, max_digits + 1))
    return " ".join(DIGITS[int(d)] for d in rng.integers(0, 10, size=n))


def split_variants(variants: Sequence[str], seed: int, num_dev: int, num_test: int
                   ) -> Dict[str, List[str]]:
    """Partitions variant names into train/dev/test, shuffled by ``seed``.

    Raises:
        ValueError: when fewer than ``num_dev + num_test + 1`` variants are given.
    """
    variants = sorted(variants)
    if len(variants) < num_dev + num_test + 1:
        raise ValueError(f"num_dev_variants + num_test_variants: {num_dev} + {num_test} leaves no "
                         f"training variant out of {len(variants)}")
    order = np.random.default_rng([seed, 1]).permutation(len(variants))
    shuffled = [variants[i] for i in order]
    return {"dev": sorted(shuffled[:num_dev]), "test": sorted(shuffled[num_dev:num_dev + num_test]),
            "train": sorted(shuffled[num_dev + num_test:])}


def plan_corpus(counts: Dict[str, int], seed: int, languages: Sequence[str] = ENGLISH_LANGUAGES,
                variants: Optional[Sequence[str]] = None, num_dev_variants: int = 10,
                num_test_variants: int = 10, command_prob: float = 0.3) -> Dict[str, List[UttSpec]]:
    """Draws text, voice and seed of every utterance of every split (no audio yet).

    Args:
        counts: utterances per split, e.g. ``{"train": 3000, "dev": 200, "test": 200}``.
        seed: the corpus seed.
        languages: accents (eSpeak language voices).
        variants: variant names (default: all bundled ones).
        num_dev_variants, num_test_variants: variants held out for dev and for test.
        command_prob: share of command phrases (the rest are digit strings).
    """
    variants = list_variants() if variants is None else list(variants)
    by_split = split_variants(variants, seed, num_dev_variants, num_test_variants)
    plan = {}
    for code, split in enumerate(SPLITS):
        voices = [Voice(lang, var) for var in by_split[split] for lang in languages]
        rng = np.random.default_rng([seed, 2, code])
        specs = []
        for i in range(counts.get(split, 0)):
            voice = voices[int(rng.integers(len(voices)))]
            text = random_text(rng, command_prob)
            specs.append(UttSpec(f"{voice.speaker_id}-{split}{i:06d}", voice, text,
                                 int(rng.integers(0, 2**31 - 1))))
        plan[split] = specs
    return plan


def _render_shard(job: Tuple[List[UttSpec], str, Variation]) -> List[Tuple[str, int]]:
    """Worker: renders and writes the WAV files of one shard -> [(utt_id, num_samples)]."""
    specs, wav_dir, variation = job
    import torch

    torch.set_num_threads(1)
    out = []
    for spec in specs:
        audio = render_utterance(spec.text, spec.voice, np.random.default_rng(spec.seed), variation)
        soundfile.write(os.path.join(wav_dir, f"{spec.utt_id}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        out.append((spec.utt_id, int(audio.shape[0])))
    return out


def synthesize_corpus(outdir: str | os.PathLike, plan: Dict[str, List[UttSpec]], nj: int = 1,
                      variation: Variation = Variation(),
                      on_progress: Optional[Callable[[int], None]] = None) -> Dict[str, DataDir]:
    """Renders ``plan`` to ``<outdir>/wavs/<split>/*.wav`` and writes ``<outdir>/<split>/``.

    Each data directory gets ``wav.scp`` (absolute paths to 16 kHz 16-bit WAV files), ``text``,
    ``utt2spk`` (speaker = voice), ``spk2utt``, ``utt2num_samples`` and ``utt2dur``.

    Args:
        outdir: the output folder.
        plan: from :func:`plan_corpus`.
        nj: worker processes (the result does not depend on it).
        variation: the random variation ranges.
        on_progress: called with the number of utterances just finished.
    """
    if nj < 1:
        raise ValueError(f"nj: expected >= 1, found {nj}")
    from xtrans.synth import espeak

    if espeak._ENGINE is not None:
        logger.warning("this process has synthesised before; eSpeak's carried-over state makes the "
                       "corpus differ from one made by a fresh process")
    root = Path(outdir).resolve()
    jobs = []
    for split, specs in plan.items():
        wav_dir = root / "wavs" / split
        wav_dir.mkdir(parents=True, exist_ok=True)
        jobs += [(specs[i:i + SHARD_SIZE], str(wav_dir), variation) for i in range(0, len(specs), SHARD_SIZE)]
    lengths: Dict[str, int] = {}
    # fork from this process (which never synthesises), one fresh process per shard; torch (the
    # resampler's) is imported here once, not by each shard's process (2-3 s each: 2 of the 2.5
    # minutes of the demo's 6300 utterances went to importing it 126 times)
    import torch  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(nj, maxtasksperchild=1) as pool:
        for shard in pool.imap_unordered(_render_shard, jobs):
            lengths.update(shard)
            if on_progress is not None:
                on_progress(len(shard))
    result = {}
    for split, specs in plan.items():
        wav_dir = root / "wavs" / split
        data = DataDir(
            wav_scp={s.utt_id: str(wav_dir / f"{s.utt_id}.wav") for s in specs},
            text={s.utt_id: s.text for s in specs},
            utt2spk={s.utt_id: s.voice.speaker_id for s in specs},
            utt2num_samples={s.utt_id: lengths[s.utt_id] for s in specs},
            utt2dur={s.utt_id: lengths[s.utt_id] / SAMPLE_RATE for s in specs})
        write_data_dir(data, root / split)
        result[split] = data
    return result
