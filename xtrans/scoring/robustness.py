"""Robustness to noise, rooms and channels: word error rate under test conditions (issue 19).

The test set is decoded again under each condition, applied to every utterance on the fly
(``python -m xtrans.bin.robustness``), with the functions that training augmentation uses
(:mod:`xtrans.data.augment`) but with draws that training never makes:

==========  ===========  =================================================================
condition   levels       what is done to each utterance
==========  ===========  =================================================================
clean       -            nothing: the recording as it is
gain        dB           scaled and clipped at full scale (:func:`~xtrans.data.augment.apply_gain`,
                         the level table's copies)
noise       SNR (dB)     a noise added at the SNR (:func:`~xtrans.data.augment.mix_at_snr`, then
                         :func:`~xtrans.data.augment.limit_peak`): a recording of ``--noise_scp``
                         cropped or repeated to the utterance's length, or without a list, generated
                         noise of the held-out families :data:`~xtrans.data.augment.HELD_OUT_FAMILIES`
babble      SNR (dB)     :data:`BABBLE_TALKERS` other utterances of the test set summed at equal level
                         (:func:`~xtrans.data.augment.babble_mix`) and added at the SNR
reverb      RT60 (s)     convolved with one of :data:`ROOMS_PER_RT60` rooms simulated by the image
                         method for the RT60, taken in turn over the utterances
rir         -            convolved with a measured impulse response of ``--rir_scp`` (e.g. the real
                         rooms of RIRS_NOISES), one drawn per utterance, aligned on its direct path
                         (:func:`~xtrans.data.augment.align_rir`)
telephone   -            8 kHz, 300-3400 Hz, 8-bit mu-law (:func:`~xtrans.data.augment.telephone`)
==========  ===========  =================================================================

Determinism: every draw for utterance ``i`` (position in ``data.utt_ids``) under a condition at
a level comes from ``numpy.random.default_rng([seed, crc32(condition), crc32(level), i])``
(:func:`utterance_rng`; noise and babble leave the level out, so every SNR mixes the same noise
segment or talkers and the curves over SNR are paired), never from training's ``(seed, epoch, index)`` scheme; the rooms from
``[ROOM_SEED_OFFSET + seed, ...]``, never from training's small ``room_seed``
(:func:`~xtrans.data.augment.room_bank`). Every model hears the same audio, and a rerun hears it
again, in any number of processes.

The conditions are frozen dataclasses called as ``transform(samples, index)`` (see
:data:`xtrans.decoding.data_dir.Transform`), so the decoder's worker processes receive them pickled.

``python -m xtrans.bin.robustness`` writes the report as JSON::

    {"data": "dump/test", "num_utts": 6, "seed": 12345,
     "conditions": [{"name": "clean", "levels": [null], "unit": null, "description": "..."},
                    {"name": "noise", "levels": [20, 10, 5, 0], "unit": "dB", "source": "generated",
                     "families": ["sweeps", "crackle"], "held_out": true, "noise_scp": null,
                     "description": "..."}, ...],
     "models": [{"tag": "stage5a", "checkpoint": "exp/stage5/5a/best.pt", "streaming": {...},
                 "search": "greedy", "beam": null,
                 "wer": {"clean": {"-": {"wer": 12.5, "errors": 5, "words": 40, ...}},
                         "noise": {"20": {...}, "10": {...}, ...}, ...}}]}

(level keys are :func:`level_key` strings, ``"-"`` for a condition without levels), and recipe
stage 12 adds :func:`results_section` to ``RESULTS.md``.
"""

from __future__ import annotations

import functools
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from xtrans.data.augment import (HELD_OUT_FAMILIES, align_rir, babble_mix, fit_length, generate_noise, limit_peak,
                                 mix_at_snr, read_scp, reverberate, rt60_from_rir, simulate_rir, telephone)
from xtrans.data.augment.reverb import cached_rooms
from xtrans.data.audio import BadAudioError, load_waveform
from xtrans.data.kaldi_dir import read_data_dir
from xtrans.frames import SAMPLE_RATE
from xtrans.scoring.level import DEFAULT_GAINS, gain_key, gain_value, parse_levels, render_table

logger = logging.getLogger(__name__)

CONDITIONS = ("clean", "gain", "noise", "babble", "reverb", "rir", "telephone")
"""Every condition, in the order of tables and plots."""

DEFAULT_CONDITIONS = ("clean", "gain", "noise", "babble", "reverb", "telephone")
"""Measured without ``--conditions``; ``rir`` too when a ``--rir_scp`` is given."""

DEFAULT_SNRS = (20.0, 10.0, 5.0, 0.0)
DEFAULT_BABBLE_SNRS = (20.0, 10.0, 5.0)
DEFAULT_RT60S = (0.3, 0.6, 0.9)

DEFAULT_SEED = 12345
"""The conditions' seed (training seeds its augmentation from the training config's seed and the epoch)."""

ROOM_SEED_OFFSET = 10_000
"""Rooms are drawn from ``ROOM_SEED_OFFSET + seed``; training's ``room_seed`` is a small integer."""

ROOMS_PER_RT60 = 8
"""Simulated rooms per RT60, taken in turn over the utterances (``index % rooms``)."""

MAX_ROOM_DRAWS = 100
"""Rooms drawn at most for one of them: a drawn room too large for a short RT60 is drawn again."""

BABBLE_TALKERS = 3
"""Other talkers of a babble (fewer when the test set has fewer other utterances)."""

ROBUSTNESS_JSON = "robustness.json"
"""The report's name under ``exp/`` (recipe stage 12)."""


@dataclass(frozen=True)
class LevelSpec:
    """How a condition's levels are given and shown.

    Attributes:
        option: the command-line option (``--snrs``).
        noun: one level, for messages (``SNR``).
        unit: for messages (``dB``, ``seconds``).
        example: a valid value of the option.
        positive: levels must be ``> 0``.
        suffix: after a level in column headers (``dB``, ``s``).
        axis: the plot's axis label.
        mildest: ``"max"`` or ``"min"``: which level changes the audio least.
    """

    option: str
    noun: str
    unit: str
    example: str
    positive: bool
    suffix: str
    axis: str
    mildest: str


LEVELS: Dict[str, LevelSpec] = {
    "gain": LevelSpec("--gains", "gain", "dB", "-30,-20,-10,0,6", False, "dB", "input gain (dB, 0 = as recorded)",
                      "max"),
    "noise": LevelSpec("--snrs", "SNR", "dB", "20,10,5,0", False, "dB", "SNR (dB)", "max"),
    "babble": LevelSpec("--babble_snrs", "SNR", "dB", "20,10,5", False, "dB", "SNR (dB)", "max"),
    "reverb": LevelSpec("--rt60s", "RT60", "seconds", "0.3,0.6,0.9", True, "s", "RT60 (s)", "min"),
}
"""The conditions that have levels; ``clean`` and ``telephone`` have one, ``None``."""

DEFAULT_LEVELS: Dict[str, Tuple[float, ...]] = {"gain": DEFAULT_GAINS, "noise": DEFAULT_SNRS,
                                                "babble": DEFAULT_BABBLE_SNRS, "reverb": DEFAULT_RT60S}


# ---------------------------------------------------------------------------- options

def parse_conditions(text: str) -> Tuple[str, ...]:
    """``"clean,noise,reverb"`` -> ``("clean", "noise", "reverb")``, in :data:`CONDITIONS` order.

    Raises:
        ValueError: naming ``--conditions`` for an empty list or an unknown condition.
    """
    words = [w.strip() for w in str(text).split(",") if w.strip()]
    if not words:
        raise ValueError(f"--conditions: expected comma-separated conditions of {', '.join(CONDITIONS)}, "
                         f"found {text!r}")
    unknown = [w for w in words if w not in CONDITIONS]
    if unknown:
        raise ValueError(f"--conditions: expected conditions of {', '.join(CONDITIONS)}, found {unknown[0]!r}")
    return tuple(c for c in CONDITIONS if c in words)


def parse_condition_levels(conditions: Sequence[str], texts: Mapping[str, str]
                           ) -> Dict[str, Tuple[Optional[float], ...]]:
    """The levels of each condition: ``texts[condition]`` (the option's value) parsed for the
    conditions of :data:`LEVELS`, ``(None,)`` for the others.

    Raises:
        ValueError: naming the option of a malformed list (see :func:`~xtrans.scoring.level.parse_levels`).
    """
    levels: Dict[str, Tuple[Optional[float], ...]] = {}
    for c in conditions:
        spec = LEVELS.get(c)
        levels[c] = (None,) if spec is None else parse_levels(texts[c], spec.option, spec.noun, spec.unit,
                                                              spec.example, positive=spec.positive)
    return levels


def level_key(level: Optional[float]) -> str:
    """The JSON key of a level: ``20.0`` -> ``"20"``, ``0.3`` -> ``"0.3"``, ``None`` -> ``"-"``."""
    return "-" if level is None else gain_key(level)


def utterance_rng(seed: int, condition: str, level: Optional[float], index: int) -> np.random.Generator:
    """The generator of every draw for utterance ``index`` under ``condition`` at ``level``
    (see the module docstring); the same in every process (CRC-32, not Python's salted ``hash``)."""
    return np.random.default_rng([seed, _code(condition), _code(level_key(level)), index])


def _code(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


# ---------------------------------------------------------------------------- conditions

@functools.lru_cache(maxsize=16)
def _noise_list(path: str) -> Tuple[Tuple[str, str], ...]:
    return tuple(read_scp(path))


@functools.lru_cache(maxsize=64)
def _noise_samples(key: str, entry: str) -> np.ndarray:
    return load_waveform(entry, utt_id=key, sample_rate=SAMPLE_RATE).numpy()


@functools.lru_cache(maxsize=4)
def _data_dir(path: str):
    return read_data_dir(path)


def _mixed(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    return limit_peak(mix_at_snr(speech, noise, snr_db)).astype(np.float32)


@dataclass(frozen=True)
class NoiseAt:
    """Noise at ``snr_db``: a recording of ``noise_scp`` per utterance, cropped or repeated to its
    length, or generated noise of one of ``families`` when ``noise_scp`` is None."""

    snr_db: float
    seed: int = DEFAULT_SEED
    noise_scp: Optional[str] = None
    families: Tuple[str, ...] = HELD_OUT_FAMILIES

    def __call__(self, speech: np.ndarray, index: int) -> np.ndarray:
        """``(S,)`` float32 speech at 16 kHz -> ``(S,)`` float32 mix within full scale."""
        rng = utterance_rng(self.seed, "noise", None, index)  # the same noise at every SNR: paired curves
        if self.noise_scp is None:
            family = self.families[int(rng.integers(len(self.families)))]
            noise = generate_noise(family, speech.size, rng)
        else:
            entries = _noise_list(self.noise_scp)
            key, entry = entries[int(rng.integers(len(entries)))]
            noise = fit_length(_noise_samples(key, entry), speech.size, rng)
        return _mixed(speech, noise, self.snr_db)


@dataclass(frozen=True)
class BabbleAt:
    """Babble at ``snr_db``: ``talkers`` other utterances of ``data_dir`` (never the utterance
    itself, at most all the others), summed at equal level."""

    snr_db: float
    data_dir: str
    seed: int = DEFAULT_SEED
    talkers: int = BABBLE_TALKERS

    def __call__(self, speech: np.ndarray, index: int) -> np.ndarray:
        """``(S,)`` float32 speech at 16 kHz of ``data_dir``'s utterance ``index`` -> ``(S,)`` float32 mix."""
        rng = utterance_rng(self.seed, "babble", None, index)  # the same talkers at every SNR
        data = _data_dir(self.data_dir)
        others = len(data.utt_ids) - 1
        if others < 1:
            raise ValueError(f"babble: expected a data directory of at least 2 utterances, found {self.data_dir} "
                             f"with {others + 1}")
        picks = rng.choice(others, size=min(self.talkers, others), replace=False)
        talkers = []
        for j in picks:
            utt = data.utt_ids[int(j) + (int(j) >= index)]  # skips the utterance itself
            entry, segment = data.wav_entry(utt)
            talkers.append(load_waveform(entry, utt_id=utt, segment=segment, sample_rate=SAMPLE_RATE).numpy())
        return _mixed(speech, babble_mix(talkers, speech.size, rng), self.snr_db)


@functools.lru_cache(maxsize=16)
def held_out_rooms(rt60: float, seed: int = DEFAULT_SEED, count: int = ROOMS_PER_RT60) -> Tuple[np.ndarray, ...]:
    """``count`` aligned impulse responses of rooms simulated for ``rt60`` seconds (cached per process
    and on disk: :func:`~xtrans.data.augment.reverb.cached_rooms`).

    Room ``k`` is drawn from ``default_rng([ROOM_SEED_OFFSET + seed, crc32("reverb"), crc32(rt60), k,
    draw])`` with the first ``draw`` whose room can reach the RT60.

    Raises:
        ValueError: naming ``--rt60s`` when no room of :func:`~xtrans.data.augment.simulate_rir`'s
            sizes reaches ``rt60`` in :data:`MAX_ROOM_DRAWS` draws.
    """
    def simulate() -> list:
        logger.info("simulating %d rooms of RT60 %g s from seed %d", count, rt60, ROOM_SEED_OFFSET + seed)
        rooms = []
        for k in range(count):
            for draw in range(MAX_ROOM_DRAWS):
                rng = np.random.default_rng([ROOM_SEED_OFFSET + seed, _code("reverb"), _code(level_key(rt60)), k, draw])
                try:
                    rooms.append(simulate_rir(rng, rt60))
                    break
                except ValueError:  # the drawn room is too large for this RT60
                    continue
            else:
                raise ValueError(f"--rt60s: expected RT60s that simulated rooms of 3-10 x 3-8 x 2.5-4 m reach, "
                                 f"found {rt60:g} s (none in {MAX_ROOM_DRAWS} draws)")
        return rooms
    return cached_rooms(f"held_out_rooms v1: rt60 {level_key(rt60)}, seed {ROOM_SEED_OFFSET + seed}, {count} rooms, "
                        f"{MAX_ROOM_DRAWS} draws", simulate)


@dataclass(frozen=True)
class RoomAt:
    """Reverberation of ``rt60`` seconds: room ``index % rooms`` of :func:`held_out_rooms`."""

    rt60: float
    seed: int = DEFAULT_SEED
    rooms: int = ROOMS_PER_RT60

    def __call__(self, speech: np.ndarray, index: int) -> np.ndarray:
        """``(S,)`` float32 speech at 16 kHz -> ``(S,)`` float32 reverberant speech within full scale."""
        rirs = held_out_rooms(self.rt60, self.seed, self.rooms)
        return limit_peak(reverberate(speech, rirs[index % len(rirs)])).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _aligned_rir(key: str, entry: str) -> np.ndarray:
    try:  # read here, not through _noise_samples: only the aligned response is kept
        return align_rir(load_waveform(entry, utt_id=key, sample_rate=SAMPLE_RATE).numpy())
    except ValueError as err:
        raise ValueError(f"--rir_scp: impulse response {key!r} ({entry}): {err}") from err


@dataclass(frozen=True)
class MeasuredRoom:
    """Reverberation by a measured impulse response: an entry of ``rir_scp`` drawn per utterance,
    from its direct path on and scaled so that the direct path is 1 (the words keep their times)."""

    rir_scp: str
    seed: int = DEFAULT_SEED

    def __call__(self, speech: np.ndarray, index: int) -> np.ndarray:
        """``(S,)`` float32 speech at 16 kHz -> ``(S,)`` float32 reverberant speech within full scale."""
        entries = _noise_list(self.rir_scp)
        key, entry = entries[int(utterance_rng(self.seed, "rir", None, index).integers(len(entries)))]
        return limit_peak(reverberate(speech, _aligned_rir(key, entry))).astype(np.float32)


@dataclass(frozen=True)
class TelephoneLine:
    """Narrow-band telephony (:func:`~xtrans.data.augment.telephone`); draws nothing."""

    def __call__(self, speech: np.ndarray, index: int) -> np.ndarray:
        """``(S,)`` float32 speech at 16 kHz -> ``(S,)`` float32 speech within full scale."""
        return limit_peak(telephone(speech)).astype(np.float32)


@dataclass(frozen=True)
class Setup:
    """What the conditions draw from.

    Attributes:
        data_dir: the data directory decoded (babble's talkers are its other utterances).
        seed: of :func:`utterance_rng` and :func:`held_out_rooms` (>= 0).
        noise_scp: a Kaldi-style ``<id> <wav entry>`` list of noises; None = generated noise of
            :data:`~xtrans.data.augment.HELD_OUT_FAMILIES`.
        rooms: simulated rooms per RT60 (>= 1).
        talkers: babble's other talkers (>= 1).
        rir_scp: a Kaldi-style ``<id> <wav entry>`` list of measured impulse responses (the ``rir``
            condition; e.g. RIRS_NOISES' real rooms); None = no ``rir`` condition.

    Raises:
        ValueError: naming the option of a value out of range.
    """

    data_dir: str
    seed: int = DEFAULT_SEED
    noise_scp: Optional[str] = None
    rooms: int = ROOMS_PER_RT60
    talkers: int = BABBLE_TALKERS
    rir_scp: Optional[str] = None

    def __post_init__(self):
        bounds = (("--seed", self.seed, 0), ("--rooms", self.rooms, 1), ("--talkers", self.talkers, 1))
        for option, value, low in bounds:
            if value < low:
                raise ValueError(f"{option}: expected an integer >= {low}, found {value}")

    def check(self, conditions: Sequence[str], levels: Mapping[str, Sequence[Optional[float]]],
              num_utts: int) -> None:
        """Checks that the conditions can be made: the noise list reads, babble has other talkers,
        every RT60 has its rooms (simulated here, so they are cached for decoding in this process).

        Raises:
            ValueError: naming the option to change.
        """
        if self.noise_scp is not None:
            if "noise" not in conditions:
                raise ValueError(f"--noise_scp: expected the noise condition in --conditions, found "
                                 f"{','.join(conditions)}")
            try:
                _noise_list(self.noise_scp)  # a malformed list: ValueError naming its line
            except OSError as err:
                raise ValueError(f"--noise_scp: expected a readable '<id> <wav entry>' list, found {self.noise_scp} "
                                 f"({err.strerror or err})") from err
        if self.rir_scp is not None and "rir" not in conditions:
            raise ValueError(f"--rir_scp: expected the rir condition in --conditions, found {','.join(conditions)}")
        if "rir" in conditions:
            if self.rir_scp is None:
                raise ValueError("--conditions: the rir condition needs --rir_scp, a list of measured impulse responses")
            try:
                entries = _noise_list(self.rir_scp)
            except OSError as err:
                raise ValueError(f"--rir_scp: expected a readable '<id> <wav entry>' list, found {self.rir_scp} "
                                 f"({err.strerror or err})") from err
            if not entries:
                raise ValueError(f"--rir_scp: expected at least one impulse response, found none in {self.rir_scp}")
            for key, entry in entries:  # every response reads and has a direct path, before decoding
                try:
                    _aligned_rir(key, entry)
                except (OSError, BadAudioError) as err:
                    raise ValueError(f"--rir_scp: impulse response {key!r}: cannot read {entry} ({err})") from err
        if "babble" in conditions and num_utts < 2:
            raise ValueError(f"--conditions: babble draws its talkers from the other utterances of --data; "
                             f"expected at least 2, found {num_utts} in {self.data_dir}")
        for rt60 in levels.get("reverb", ()):
            held_out_rooms(rt60, self.seed, self.rooms)

    def options(self, condition: str, level: Optional[float]) -> Dict[str, Any]:
        """The options of :func:`xtrans.decoding.data_dir.run` that decode under ``condition`` at ``level``."""
        if condition == "clean":
            return {}
        if condition == "gain":
            return {"gain_db": level}
        if condition == "noise":
            return {"transform": NoiseAt(level, self.seed, self.noise_scp)}
        if condition == "babble":
            return {"transform": BabbleAt(level, self.data_dir, self.seed, self.talkers)}
        if condition == "reverb":
            return {"transform": RoomAt(level, self.seed, self.rooms)}
        if condition == "rir":
            return {"transform": MeasuredRoom(str(self.rir_scp), self.seed)}
        if condition == "telephone":
            return {"transform": TelephoneLine()}
        raise ValueError(f"condition: expected one of {', '.join(CONDITIONS)}, found {condition!r}")

    def describe(self, condition: str, levels: Sequence[Optional[float]]) -> Dict[str, Any]:
        """A condition's entry of the report: ``name``, ``levels``, ``unit``, what it draws from,
        and a ``description`` sentence for ``RESULTS.md``."""
        spec = LEVELS.get(condition)
        entry: Dict[str, Any] = {"name": condition, "levels": [None if v is None else gain_value(v) for v in levels],
                                 "unit": spec.suffix if spec else None}
        snr = "added at the SNR (dB; the speech's power over its active frames against the noise's)"
        if condition == "clean":
            entry["description"] = "the recordings as they are."
        elif condition == "gain":
            entry["description"] = ("every waveform scaled by the gain (dB) and clipped at full scale "
                                    "(`apply_gain`, as in the level table).")
        elif condition == "noise" and self.noise_scp is None:
            families = list(HELD_OUT_FAMILIES)
            entry.update(source="generated", families=families, held_out=True, noise_scp=None)
            entry["description"] = (f"generated noise of the held-out families {' and '.join(families)} (never "
                                    f"drawn in training), one per utterance, {snr}.")
        elif condition == "noise":
            count = len(_noise_list(self.noise_scp))
            entry.update(source="noise_scp", families=None, held_out=None, noise_scp=str(self.noise_scp))
            entry["description"] = (f"a noise of `{self.noise_scp}` ({count} recordings) per utterance, cropped or "
                                    f"repeated to its length, {snr}.")
        elif condition == "babble":
            entry["talkers"] = self.talkers
            entry["description"] = (f"{self.talkers} other utterances of the test set summed at equal level, {snr}.")
        elif condition == "reverb":
            entry.update(rooms=self.rooms, room_seed=ROOM_SEED_OFFSET + self.seed)
            entry["description"] = (f"convolved with one of {self.rooms} rooms per RT60 (s), simulated by the image "
                                    f"method from seed {ROOM_SEED_OFFSET + self.seed} (training's rooms come from "
                                    "small seeds), taken in turn over the utterances; the direct path stays "
                                    "in place.")
        elif condition == "rir":
            rt60s = [rt60_from_rir(_aligned_rir(k, e)) for k, e in _noise_list(self.rir_scp)]
            known = [t for t in rt60s if math.isfinite(t)]
            entry.update(rir_scp=str(self.rir_scp), responses=len(rt60s),
                         rt60_median=float(np.median(known)) if known else None)
            spread = (f"; RT60 {min(known):.2f}-{max(known):.2f} s, median {np.median(known):.2f} s"
                      if known else "")
            entry["description"] = (f"convolved with a measured impulse response of `{self.rir_scp}` ({len(rt60s)} "
                                    f"responses{spread}) drawn per utterance, from its direct path on (the direct "
                                    "path stays in place).")
        elif condition == "telephone":
            entry["description"] = "down to 8 kHz, the 300-3400 Hz band and 8-bit mu-law (G.711), back at 16 kHz."
        else:
            raise ValueError(f"condition: expected one of {', '.join(CONDITIONS)}, found {condition!r}")
        return entry


# ---------------------------------------------------------------------------- tables

def _pct(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _wer(model: Mapping[str, Any], condition: str, level: Optional[float]) -> Optional[float]:
    entry = model["wer"].get(condition, {}).get(level_key(level))
    return None if entry is None else entry["wer"]


def cell_label(condition: str, level: Optional[float]) -> str:
    """A column header: ``clean``, ``noise 20 dB``, ``reverb 0.3 s``, ``telephone``."""
    spec = LEVELS.get(condition)
    return condition if spec is None or level is None else f"{condition} {level_key(level)} {spec.suffix}"


def _levels(report: Mapping[str, Any]) -> List[Tuple[str, List[Optional[float]]]]:
    return [(c["name"], list(c["levels"])) for c in report["conditions"]]


def format_table(report: Mapping[str, Any], markdown: bool = False) -> str:
    """All of a report in one table: one row per model, WER (%) per condition and level."""
    cells = [(c, v) for c, levels in _levels(report) for v in levels]
    rows = [["model", "streaming", *(cell_label(c, v) for c, v in cells)]]
    for m in report["models"]:
        rows.append([m["tag"], m["streaming"]["description"], *(_pct(_wer(m, c, v)) for c, v in cells)])
    return render_table(rows, markdown)


def change(wer: Optional[float], clean: Optional[float]) -> str:
    """``WER - clean`` in percentage points with the ratio of the two: ``+3.10 (x1.25)``; ``-``
    where either is missing, no ratio for a clean WER of 0."""
    if wer is None or clean is None or not math.isfinite(wer) or not math.isfinite(clean):
        return "-"
    return f"{wer - clean:+.2f}" + (f" (x{wer / clean:.2f})" if clean > 0 else "")


def condition_table(report: Mapping[str, Any], condition: str) -> str:
    """The Markdown table of one condition: one row per model, its clean WER (when measured), WER (%)
    at each level and the change against clean at the mildest level (largest SNR, shortest RT60)
    or, for gain, the largest change at any gain (percentage points and ratio, :func:`change`)."""
    levels = dict(_levels(report))[condition]
    has_clean = "clean" in dict(_levels(report)) and condition != "clean"
    spec = LEVELS.get(condition)
    label = (lambda v: condition) if spec is None else (lambda v: f"{level_key(v)} {spec.suffix}")
    mild = None if spec is None else (max if spec.mildest == "max" else min)(levels)
    header = ["model", "streaming"] + (["clean"] if has_clean else []) + [label(v) for v in levels]
    if has_clean:
        header.append("max |WER(g) - clean|" if condition == "gain" else f"{label(mild)} - clean")
    rows = [header]
    for m in report["models"]:
        clean = _wer(m, "clean", None)
        wers = [_wer(m, condition, v) for v in levels]
        row = [m["tag"], m["streaming"]["description"]] + ([_pct(clean)] if has_clean else [])
        row += [_pct(w) for w in wers]
        if has_clean and condition == "gain":
            known = [w for w in wers if w is not None]
            row.append(_pct(max(abs(w - clean) for w in known)) if known and clean is not None else "-")
        elif has_clean:
            row.append(change(_wer(m, condition, mild), clean))
        rows.append(row)
    return render_table(rows, markdown=True)


def results_section(report: Mapping[str, Any], plot: Optional[str] = None) -> str:
    """The ``## Robustness`` section of ``RESULTS.md``: what was measured, one sentence and one
    table per condition (clean WER, WER per level, change against clean) and, when given, a link
    to the plot (a path relative to the Markdown file)."""
    search = {f"{m['search']}" + (f" {m['beam']}" if m.get("beam") else "") for m in report["models"]}
    names = [c["name"] for c in report["conditions"]]
    text = ["## Robustness\n",
            f"WER (%) on `{Path(str(report.get('data', '?'))).name}` ({report.get('num_utts', '?')} utterances) "
            f"under test conditions, simulated decoding, {', '.join(sorted(search))} search, each model under "
            f"the streaming rule of its row (`python -m xtrans.bin.robustness`). The draws of every utterance "
            f"come from a generator seeded with (seed {report.get('seed', '?')}, condition, level, utterance "
            "index), which training never uses: every model hears the same audio."
            + (" The last column is the change against clean speech in percentage points (and the ratio "
               "of the WERs)." if "clean" in names and len(names) > 1 else "") + "\n"]
    for c in report["conditions"]:
        if c["name"] == "clean" and len(names) > 1:
            continue  # its WER is a column of every other table
        text.append(f"**{c['name']}**: {c['description']}\n")
        text.append(condition_table(report, c["name"]))
    if plot:
        text.append(f"![robustness]({plot})\n")
    return "\n".join(text)


def check_report(report: Any, source: str = "<report>") -> Dict[str, Any]:
    """Checks the shape of a report read from JSON (``conditions`` with ``name``, ``levels`` and
    ``description``; ``models`` with ``tag``, ``streaming`` and ``wer``).

    Raises:
        ValueError: naming ``source`` and what is missing.
    """
    if not isinstance(report, dict) or not isinstance(report.get("conditions"), list) \
            or not isinstance(report.get("models"), list):
        raise ValueError(f"{source}: expected a robustness report with 'conditions' and 'models', "
                         f"found {type(report).__name__}")
    for n, c in enumerate(report["conditions"]):
        if not isinstance(c, dict) or not {"name", "levels", "description"} <= set(c) \
                or c["name"] not in CONDITIONS or not isinstance(c["levels"], list):
            raise ValueError(f"{source}: conditions[{n}]: expected 'name' (one of {', '.join(CONDITIONS)}), "
                             "'levels' and 'description'")
    for n, m in enumerate(report["models"]):
        if not isinstance(m, dict) or not {"tag", "streaming", "wer"} <= set(m):
            raise ValueError(f"{source}: models[{n}]: expected 'tag', 'streaming' and 'wer'")
    return report
