"""Free Spoken Digit Dataset (FSDD): download, and connected-digit utterances in Kaldi data dirs.

FSDD (Zohar Jackson et al., https://github.com/Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0)
holds isolated English digits, 8 kHz mono WAV, named ``<digit>_<speaker>_<take>.wav`` in one
``recordings/`` folder; takes 0-4 of every digit and speaker are the official test split, takes
5-49 the training split. Only the file names are read, so any folder of such recordings works
(the GitHub release, or a copy that lacks the test takes).

:func:`prepare` turns the isolated digits into a connected-digit corpus: each utterance joins
2-6 recordings of ONE speaker, each scaled to the same peak (FSDD's speakers were recorded at
very different levels), separated by pauses of 0.1-0.4 s of low white noise; it is resampled
8 kHz -> 16 kHz (:func:`xtrans.data.resample.resample`) and written as a 16-bit WAV::

    <out>/wavs/<split>/<speaker>-<split>-<index>.wav       16 kHz
    <out>/<split>/{wav.scp,text,utt2spk,spk2utt,utt2num_samples,utt2dur}
    text:     george-train-00007 THREE ONE FOUR

Splits are by take, so no recording is shared between them: ``test`` = takes 0-4 (only when the
folder has them), ``dev`` = held-out training takes (45-49 by default), ``train`` = the other
takes >= 5. The corpus depends only on the recordings, the options and the seed; each split has
its own random stream, so changing ``num_train`` leaves dev and test as they were.

The generated audio is derived from FSDD and keeps its licence: :func:`prepare` writes
``<out>/wavs/ATTRIBUTION.txt`` saying so.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile

from xtrans.data.kaldi_dir import DataDir, write_data_dir
from xtrans.data.resample import resample
from xtrans.frames import SAMPLE_RATE
from xtrans.recipes.download import download, extract_tar

logger = logging.getLogger(__name__)

VERSION = "v1.0.10"
"""The FSDD release downloaded by default (6 speakers, 3,000 recordings)."""

URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{VERSION}.tar.gz"
"""GitHub's archive of the release; it extracts to ``free-spoken-digit-dataset-1.0.10/``.
No checksum is published for it (GitHub generates tag archives on request), so the download is
not verified; pass ``sha256`` to :func:`download_fsdd` to pin one."""

SOURCE_RATE = 8000
"""FSDD's sample rate (Hz); utterances are written at the model's rate, ``SAMPLE_RATE`` (Hz)."""

DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")

TEST_TAKES = tuple(range(0, 5))
"""FSDD's official test split."""

DEV_TAKES = tuple(range(45, 50))
"""The training takes held out for dev by default."""

SPLITS = ("train", "dev", "test")

ATTRIBUTION = f"""\
These recordings are derived from the Free Spoken Digit Dataset (FSDD), Zohar Jackson et al.,
https://github.com/Jakobovski/free-spoken-digit-dataset, licensed under CC BY-SA 4.0
(https://creativecommons.org/licenses/by-sa/4.0/). Changes: isolated digits of one speaker were
concatenated with pauses of low noise and resampled from {SOURCE_RATE} Hz to {SAMPLE_RATE} Hz.
They are distributed under the same licence, CC BY-SA 4.0.
"""

_NAME_RE = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")


class FsddError(ValueError):
    """The FSDD folder is not usable; ``path`` and ``reason`` say where and why."""

    def __init__(self, path: Union[str, os.PathLike], reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Recording:
    """One FSDD file: ``<digit>_<speaker>_<take>.wav``."""

    digit: int
    speaker: str
    take: int
    path: Path


@dataclass(frozen=True)
class UttPlan:
    """One connected-digit utterance to render.

    Attributes:
        utt_id: ``<speaker>-<split>-<index>`` (starts with the speaker, as Kaldi wants).
        speaker: the FSDD speaker of every part.
        parts: the recordings, in spoken order.
        pauses_s: seconds of noise before, between and after the parts (``len(parts) + 1``).
        seed: seed of the pause noise.
    """

    utt_id: str
    speaker: str
    parts: Tuple[Recording, ...]
    pauses_s: Tuple[float, ...]
    seed: int

    @property
    def text(self) -> str:
        return " ".join(DIGIT_WORDS[r.digit] for r in self.parts)


def parse_takes(spec: Union[str, Iterable[int]]) -> Tuple[int, ...]:
    """``"45-49"``, ``"0,1,2"``, ``"40-42,47"`` or integers -> sorted unique takes.

    Raises:
        ValueError: on a malformed range or a negative take.
    """
    if not isinstance(spec, str):
        takes = {int(t) for t in spec}
    else:
        takes = set()
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
            if not m:
                raise ValueError(f"takes: expected numbers and ranges like '45-49' or '0,3', found {item!r}")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise ValueError(f"takes: range {item!r} ends before it starts")
            takes.update(range(lo, hi + 1))
    if any(t < 0 for t in takes):
        raise ValueError(f"takes: expected takes >= 0, found {sorted(takes)}")
    return tuple(sorted(takes))


def find_recordings_dir(root: Union[str, os.PathLike]) -> Path:
    """The folder of ``*.wav`` recordings under ``root``.

    Accepts the recordings folder itself, a folder holding ``recordings/`` (the repository or
    a local copy) or one holding the extracted ``free-spoken-digit-dataset-*/recordings``.

    Raises:
        FsddError: when none of these exists.
    """
    root = Path(root)
    candidates = [root / "recordings", root]
    candidates += sorted(root.glob("free-spoken-digit-dataset-*/recordings")) if root.is_dir() else []
    for folder in candidates:
        if folder.is_dir() and any(_NAME_RE.match(p.name) for p in folder.glob("*.wav")):
            return folder
    raise FsddError(root, "no <digit>_<speaker>_<take>.wav recordings here, in recordings/ or in "
                          "free-spoken-digit-dataset-*/recordings/; pass the FSDD folder as --fsdd_dir, "
                          "or leave it out to download the release")


def scan_recordings(root: Union[str, os.PathLike]) -> List[Recording]:
    """Every ``<digit>_<speaker>_<take>.wav`` of the FSDD folder, sorted by (speaker, digit, take).

    Other ``*.wav`` names are skipped with a warning.

    Raises:
        FsddError: see :func:`find_recordings_dir`.
    """
    folder = find_recordings_dir(root)
    out, skipped = [], []
    for path in sorted(folder.glob("*.wav")):
        m = _NAME_RE.match(path.name)
        if m is None:
            skipped.append(path.name)
            continue
        out.append(Recording(int(m.group(1)), m.group(2), int(m.group(3)), path.resolve()))
    if skipped:
        logger.warning("%s: skipped %d file(s) not named <digit>_<speaker>_<take>.wav, e.g. %s",
                       folder, len(skipped), skipped[0])
    out.sort(key=lambda r: (r.speaker, r.digit, r.take))
    return out


def split_recordings(recordings: Sequence[Recording], dev_takes: Iterable[int] = DEV_TAKES,
                     test_takes: Iterable[int] = TEST_TAKES) -> Dict[str, List[Recording]]:
    """Recordings by split: ``test`` = ``test_takes``, ``dev`` = ``dev_takes``, ``train`` = the rest.

    A split without recordings is left out of the result (e.g. ``test`` for a copy that holds
    only the training takes).

    Raises:
        ValueError: when ``dev_takes`` and ``test_takes`` overlap.
    """
    dev, test = set(dev_takes), set(test_takes)
    if dev & test:
        raise ValueError(f"dev_takes: takes {sorted(dev & test)} are also test takes")
    out: Dict[str, List[Recording]] = {s: [] for s in SPLITS}
    for r in recordings:
        out["test" if r.take in test else "dev" if r.take in dev else "train"].append(r)
    return {s: rs for s, rs in out.items() if rs}


def plan_split(split: str, recordings: Sequence[Recording], num_utts: int, seed: int,
               min_digits: int = 2, max_digits: int = 6, min_pause: float = 0.1,
               max_pause: float = 0.4) -> List[UttPlan]:
    """Draws ``num_utts`` connected-digit utterances from one split's recordings.

    Each utterance picks a speaker uniformly, then ``n ~ U{min_digits..max_digits}`` digits
    uniformly and, for each, one of that speaker's takes of the digit (a digit the speaker
    lacks in this split is not drawn). Pauses (also before the first and after the last digit)
    are ``U(min_pause, max_pause)`` seconds; the edges get half of that.

    Args:
        split: the name used in the utterance ids.
        recordings: that split's recordings.
        seed: with ``split``, determines the plan.

    Raises:
        ValueError: on bad counts or ranges.
    """
    if num_utts < 0:
        raise ValueError(f"num_utts: expected >= 0, found {num_utts}")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"min_digits/max_digits: expected 1 <= min <= max, found {min_digits}, {max_digits}")
    if not 0 <= min_pause <= max_pause:
        raise ValueError(f"min_pause/max_pause: expected 0 <= min <= max, found {min_pause}, {max_pause}")
    if num_utts and not recordings:
        raise ValueError(f"{split}: no recordings to draw {num_utts} utterances from")
    pool: Dict[str, Dict[int, List[Recording]]] = {}
    for r in recordings:
        pool.setdefault(r.speaker, {}).setdefault(r.digit, []).append(r)
    speakers = sorted(pool)
    rng = np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else len(SPLITS)])
    plans = []
    for i in range(num_utts):
        speaker = speakers[rng.integers(len(speakers))]
        digits = sorted(pool[speaker])
        n = int(rng.integers(min_digits, max_digits + 1))
        parts = []
        for _ in range(n):
            takes = pool[speaker][digits[rng.integers(len(digits))]]
            parts.append(takes[rng.integers(len(takes))])
        pauses = rng.uniform(min_pause, max_pause, size=n + 1)
        pauses[[0, -1]] *= 0.5
        plans.append(UttPlan(f"{speaker}-{split}-{i:05d}", speaker, tuple(parts),
                             tuple(float(p) for p in pauses), int(rng.integers(2 ** 31))))
    return plans


def _read_8k(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if rate != SOURCE_RATE:
        raise FsddError(path, f"expected {SOURCE_RATE} Hz, found {rate} Hz")
    return audio.mean(axis=1)


def render(plan: UttPlan, noise_level: float = 1e-3, part_peak: Optional[float] = 0.5,
           read: Callable[[Path], np.ndarray] = _read_8k) -> np.ndarray:
    """The 16 kHz float32 waveform ``(S,)`` of an utterance.

    The parts, each scaled to the peak ``part_peak`` (None = as recorded), and the pauses (white
    noise of standard deviation ``noise_level``, full scale 1) are joined at 8 kHz, then
    resampled to 16 kHz and clipped to [-1, 1].
    """
    rng = np.random.default_rng(plan.seed)
    pieces = []
    for k, pause in enumerate(plan.pauses_s):
        n = int(round(pause * SOURCE_RATE))
        pieces.append((noise_level * rng.standard_normal(n)).astype(np.float32))
        if k < len(plan.parts):
            part = read(plan.parts[k].path)
            if part_peak is not None:
                part = part * np.float32(part_peak / max(float(np.abs(part).max(initial=0.0)), 1e-4))
            pieces.append(part)
    audio_8k = np.concatenate(pieces)  # (S/2,)
    audio = resample(audio_8k, SOURCE_RATE, SAMPLE_RATE).numpy()  # (S,)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


@dataclass
class SplitSummary:
    """What :func:`prepare` wrote for one split."""

    split: str
    out: Path
    utterances: int
    speakers: int
    seconds: float
    recordings: int


def prepare(fsdd_dir: Union[str, os.PathLike], out: Union[str, os.PathLike], num_utts: Dict[str, int],
            seed: int = 0, dev_takes: Iterable[int] = DEV_TAKES, test_takes: Iterable[int] = TEST_TAKES,
            min_digits: int = 2, max_digits: int = 6, min_pause: float = 0.1, max_pause: float = 0.4,
            noise_level: float = 1e-3, part_peak: Optional[float] = 0.5,
            on_progress: Optional[Callable[[int], None]] = None) -> Dict[str, SplitSummary]:
    """Writes the connected-digit corpus (see the module docstring).

    Args:
        fsdd_dir: the FSDD folder (see :func:`find_recordings_dir`).
        out: the parent of the data directories (``data``).
        num_utts: utterances per split, e.g. ``{"train": 2000, "dev": 200, "test": 200}``; a
            split missing here or with 0 is not written.
        seed: the corpus depends only on the recordings, the options and this seed.
        dev_takes, test_takes: takes of the dev and test splits (train: all others).
        noise_level: standard deviation of the pause noise (full scale 1).
        part_peak: the peak every recording is scaled to (None = as recorded).
        on_progress: called with 1 after each utterance.

    Returns:
        split -> :class:`SplitSummary`, for the splits written. A split asked for whose takes the
        folder lacks (``test`` in a copy of the training split) is not written, and an older
        ``<out>/<split>`` of it is removed so that recipes see that there is none.

    Raises:
        FsddError: no recordings, or a recording not at 8 kHz.
        ValueError: bad counts, takes or ranges.
    """
    for split, n in num_utts.items():
        if split not in SPLITS:
            raise ValueError(f"num_utts: unknown split {split!r}; expected some of {', '.join(SPLITS)}")
        if n < 0:
            raise ValueError(f"num_utts: expected >= 0 utterances for {split}, found {n}")
    root = Path(out)
    by_split = split_recordings(scan_recordings(fsdd_dir), dev_takes, test_takes)
    cache: Dict[Path, np.ndarray] = {}

    def read(path: Path) -> np.ndarray:
        if path not in cache:
            cache[path] = _read_8k(path)
        return cache[path]

    (root / "wavs").mkdir(parents=True, exist_ok=True)
    (root / "wavs" / "ATTRIBUTION.txt").write_text(ATTRIBUTION, encoding="utf-8")
    summaries = {}
    for split in SPLITS:
        n = num_utts.get(split, 0)
        if not n:
            continue
        if split not in by_split:
            logger.warning("%s: no recordings of the %s takes; no data/%s written", fsdd_dir, split, split)
            _remove_split(root, split)
            continue
        plans = plan_split(split, by_split[split], n, seed, min_digits, max_digits, min_pause, max_pause)
        lengths = _write_split(root, split, plans, lambda plan: render(plan, noise_level, part_peak, read),
                               on_progress)
        summaries[split] = SplitSummary(split, root / split, len(plans), len({p.speaker for p in plans}),
                                        sum(lengths.values()) / SAMPLE_RATE, len(by_split[split]))
        logger.info("%s: %d utterances, %.2f h -> %s", split, len(plans), summaries[split].seconds / 3600,
                    root / split)
    return summaries


def _remove_split(root: Path, split: str) -> None:
    """Removes an older ``<root>/<split>`` data directory and its ``<root>/wavs/<split>`` audio."""
    for stale in (root / split, root / "wavs" / split):
        if (stale / "wav.scp").exists() or stale.parent.name == "wavs":
            shutil.rmtree(stale, ignore_errors=True)


def _write_split(root: Path, split: str, plans: Sequence[UttPlan], synthesize: Callable[[UttPlan], np.ndarray],
                 on_progress: Optional[Callable[[int], None]]) -> Dict[str, int]:
    """Renders ``plans`` to ``<root>/wavs/<split>/*.wav`` and writes the data directory ``<root>/<split>``.

    Returns:
        utterance id -> samples at 16 kHz.
    """
    wav_dir = (root / "wavs" / split).resolve()
    shutil.rmtree(wav_dir, ignore_errors=True)  # no stale files of a larger earlier corpus
    wav_dir.mkdir(parents=True)
    lengths = {}
    for plan in plans:
        audio = synthesize(plan)
        soundfile.write(str(wav_dir / f"{plan.utt_id}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        lengths[plan.utt_id] = int(audio.shape[0])
        if on_progress is not None:
            on_progress(1)
    write_data_dir(DataDir(
        wav_scp={p.utt_id: str(wav_dir / f"{p.utt_id}.wav") for p in plans},
        text={p.utt_id: p.text for p in plans},
        utt2spk={p.utt_id: p.speaker for p in plans},
        utt2num_samples=lengths,
        utt2dur={u: s / SAMPLE_RATE for u, s in lengths.items()}), root / split)
    return lengths


def download_fsdd(dest: Union[str, os.PathLike], url: str = URL, sha256: Optional[str] = None,
                  progress: bool = True) -> Path:
    """Downloads (resumable) and extracts the FSDD release into ``dest``.

    Args:
        dest: folder for the archive and the extracted tree.
        url: the archive (a ``.tar.gz``); default: the :data:`VERSION` release on GitHub.
        sha256: the archive's checksum if known; None = not verified (see :data:`URL`).

    Returns:
        the recordings folder, e.g. ``dest/free-spoken-digit-dataset-1.0.10/recordings``.
    """
    dest = Path(dest)
    name = url.rstrip("/").rsplit("/", 1)[-1]  # v1.0.10.tar.gz
    if not name.endswith((".tar.gz", ".tgz", ".tar")):
        raise ValueError(f"url: expected a .tar.gz archive, found {url!r}")
    archive = dest / f"fsdd-{name}"
    if not (dest / f".{archive.name}.done").exists():
        if sha256 is None:
            logger.warning("%s: no published checksum; the download is not verified", url)
        download(url, archive, sha256=sha256, progress=progress)
        extract_tar(archive, dest, progress=progress)
    return find_recordings_dir(dest)


__all__ = ["ATTRIBUTION", "DIGIT_WORDS", "FsddError", "Recording", "SplitSummary", "URL", "UttPlan", "VERSION",
           "download_fsdd", "find_recordings_dir", "parse_takes", "plan_split", "prepare", "render",
           "scan_recordings", "split_recordings"]
