"""The augmentation pipeline: an ordered list of transforms configured per training stage.

A stage's ``data.augment`` is a list of entries, each a ``kind`` and its options, applied in
order to every training utterance; ``prob`` (default 1) is the chance that an entry applies, and
``from_epoch`` (default 0) the first epoch (0-based) in which it does — a curriculum: a model
trained from scratch can learn the clean task before it meets the noise::

    data:
      augment:
        - {kind: reverb, prob: 0.3, rooms: 64, rt60: [0.2, 1.0]}       # simulated rooms
        - kind: one_of                                                  # at most one noise
          prob: 0.6
          of:
            - {kind: generated_noise, families: [bursts, tones, clicks, hum, colored], snr_db: [0, 25]}
            - {kind: babble, talkers: [1, 4], snr_db: [5, 25]}
            - {kind: noise, scp: data/musan_noise.scp, snr_db: [0, 20]}
        - {kind: one_of, prob: 0.3, of: [{kind: eq}, {kind: telephone}, {kind: codec}]}
        - {kind: gain, db: [-35, 10]}

(``from_epoch: 1`` in an entry holds it back for the first epoch; ``docs/robustness.md`` has what
that measured on the demo.)

Kinds (:data:`KINDS`): ``speed``, ``time_mask``, ``gain`` (the older ``speed_factors``,
``num_time_masks`` and ``gain_db`` keys become these, see :func:`legacy_entries`), ``noise``
(a Kaldi-style ``noise.scp``: ``<id> <wav entry>`` per line, e.g. MUSAN), ``generated_noise``
(:mod:`~xtrans.data.augment.generated`), ``babble`` (other utterances of the same data set),
``reverb`` (an ``rir_scp`` list or ``rooms`` simulated by the image method,
:mod:`~xtrans.data.augment.reverb`), ``eq``, ``telephone``, ``codec``
(:mod:`~xtrans.data.augment.channel`) and ``one_of`` (one of its entries, by ``weights``).

Determinism: every draw, including whether an entry applies, comes from the one generator that
:class:`~xtrans.data.dataset.AsrDataset` seeds per item with ``(seed, epoch, index)``, so a
resumed run sees the same audio as an uninterrupted one, and an entry with ``prob: 1`` draws
nothing for its probability (the older keys give exactly the waveforms they gave before); an
entry before its ``from_epoch`` draws nothing at all.
Additive noise is mixed at the drawn SNR (:mod:`~xtrans.data.augment.mix`), after which the
mix is scaled down if it would pass full scale.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from xtrans.config import ConfigError, from_dict
from xtrans.data.augment.basic import apply_gain, speed_perturb, time_mask
from xtrans.data.augment.channel import CODECS, codec_roundtrip, random_eq, telephone
from xtrans.data.augment.generated import TRAIN_FAMILIES, check_families, generate_noise
from xtrans.data.augment.mix import fit_length, limit_peak, mix_at_snr
from xtrans.data.augment.reverb import align_rir, check_rt60_range, reverberate, room_bank
from xtrans.frames import SAMPLE_RATE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentContext:
    """What a transform may need beside the waveform.

    Attributes:
        sample_rate: Hz of the waveform.
        index: the item being augmented.
        num_items: items in the data set.
        load_item: ``index -> (S,)`` float32 waveform of another item, as recorded (for babble);
            ``None`` where no data set is at hand.
        epoch: the training epoch (0-based), for entries' ``from_epoch``.
    """

    sample_rate: int = SAMPLE_RATE
    index: int = 0
    num_items: int = 0
    load_item: Optional[Callable[[int], np.ndarray]] = None
    epoch: int = 0


def _check_common(prob: float, from_epoch: int) -> None:
    """The options every entry has: ``prob`` and ``from_epoch``."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob: expected a probability in [0, 1], found {prob}")
    if isinstance(from_epoch, bool) or not isinstance(from_epoch, int) or from_epoch < 0:
        raise ValueError(f"from_epoch: expected a whole number of epochs >= 0, found {from_epoch!r}")


def _check_range(values: Sequence[float], name: str) -> Tuple[float, float]:
    if len(values) != 2 or not all(np.isfinite(v) for v in values) or values[0] > values[1]:
        raise ValueError(f"{name}: expected [low, high] finite numbers with low <= high, found {list(values)}")
    return float(values[0]), float(values[1])


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class Speed:
    """Speed perturbation by a factor drawn from ``factors`` (:func:`~xtrans.data.augment.basic.speed_perturb`)."""

    factors: Tuple[float, ...] = (0.9, 1.0, 1.1)
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        if not self.factors or not all(f > 0 for f in self.factors):
            raise ValueError(f"factors: expected positive speed factors, found {list(self.factors)}")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        return speed_perturb(x, self.factors[int(rng.integers(len(self.factors)))], ctx.sample_rate)


@dataclass(frozen=True)
class TimeMask:
    """``num_masks`` zeroed spans of up to ``max_seconds`` (:func:`~xtrans.data.augment.basic.time_mask`)."""

    num_masks: int = 2
    max_seconds: float = 0.05
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        if self.num_masks < 0 or self.max_seconds < 0:
            raise ValueError(f"num_masks, max_seconds: expected >= 0, found {self.num_masks} and {self.max_seconds}")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        return time_mask(x, rng, num_masks=self.num_masks, max_width=round(self.max_seconds * ctx.sample_rate))


@dataclass(frozen=True)
class Gain:
    """A gain drawn uniformly in ``db`` = ``[low, high]``, saturating at full scale."""

    db: Tuple[float, float] = (-35.0, 10.0)
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        _check_range(self.db, "db")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        return apply_gain(x, float(rng.uniform(*self.db)))


def read_scp(path: str) -> List[Tuple[str, str]]:
    """``(id, entry)`` pairs of a Kaldi-style list (``<id> <wav entry>`` per line; blank lines skipped).

    Raises:
        FileNotFoundError: naming the list when it does not exist.
        ValueError: for a line without an entry or a list without lines.
    """
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected '<id> <wav entry>', found {line.strip()!r}")
            pairs.append((parts[0], parts[1]))
    if not pairs:
        raise ValueError(f"{path}: expected at least one '<id> <wav entry>' line, found none")
    return pairs


@functools.lru_cache(maxsize=256)
def _load_entry(key: str, entry: str, sample_rate: int) -> np.ndarray:
    from xtrans.data.audio import load_waveform  # audio reading is only needed once a list is used

    return _as_numpy(load_waveform(entry, utt_id=key, sample_rate=sample_rate))


@functools.lru_cache(maxsize=16)
def _cached_scp(path: str) -> Tuple[Tuple[str, str], ...]:
    return tuple(read_scp(path))


@dataclass(frozen=True)
class Noise:
    """A recording drawn from the list ``scp`` (e.g. MUSAN's noise and music), cropped or repeated
    to the utterance's length, added at an SNR drawn uniformly in ``snr_db``."""

    scp: str
    snr_db: Tuple[float, float] = (0.0, 20.0)
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        _check_range(self.snr_db, "snr_db")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        entries = _cached_scp(self.scp)
        key, entry = entries[int(rng.integers(len(entries)))]
        noise = fit_length(_load_entry(key, entry, ctx.sample_rate), x.shape[-1], rng)
        return _mixed(x, noise, float(rng.uniform(*self.snr_db)), ctx)


def _mixed(x: torch.Tensor, noise: np.ndarray, snr_db: float, ctx: AugmentContext) -> torch.Tensor:
    return torch.from_numpy(limit_peak(mix_at_snr(_as_numpy(x), noise, snr_db, ctx.sample_rate)).astype(np.float32))


@dataclass(frozen=True)
class GeneratedNoise:
    """Noise of a family drawn from ``families`` (:mod:`~xtrans.data.augment.generated`) at an SNR
    drawn in ``snr_db``."""

    families: Tuple[str, ...] = TRAIN_FAMILIES
    snr_db: Tuple[float, float] = (0.0, 25.0)
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        _check_range(self.snr_db, "snr_db")
        check_families(self.families)

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        family = self.families[int(rng.integers(len(self.families)))]
        noise = generate_noise(family, x.shape[-1], rng, ctx.sample_rate)
        return _mixed(x, noise, float(rng.uniform(*self.snr_db)), ctx)


def babble_mix(others: Sequence[np.ndarray], num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Other talkers summed at equal RMS, each cropped or repeated to ``num_samples`` (see
    :func:`~xtrans.data.augment.mix.fit_length`)."""
    out = np.zeros(num_samples, dtype=np.float64)
    for other in others:
        seg = fit_length(np.asarray(other, dtype=np.float64), num_samples, rng)
        rms = float(np.sqrt(np.mean(seg ** 2)))
        if rms > 0:
            out += seg / rms
    return out.astype(np.float32)


@dataclass(frozen=True)
class Babble:
    """1 to k other utterances of the same data set (drawn ``talkers`` = ``[low, high]``), summed
    at equal level and added at an SNR drawn in ``snr_db``."""

    talkers: Tuple[int, int] = (1, 4)
    snr_db: Tuple[float, float] = (5.0, 25.0)
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        _check_range(self.snr_db, "snr_db")
        if len(self.talkers) != 2 or not 1 <= self.talkers[0] <= self.talkers[1]:
            raise ValueError(f"talkers: expected [low, high] with 1 <= low <= high, found {list(self.talkers)}")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        if ctx.load_item is None or ctx.num_items < 2:
            raise ValueError("babble: expected a data set of at least 2 utterances to draw other talkers from")
        count = int(rng.integers(self.talkers[0], self.talkers[1] + 1))
        others = []
        for _ in range(count):
            j = int(rng.integers(ctx.num_items - 1))
            others.append(ctx.load_item(j if j < ctx.index else j + 1))  # never the utterance itself
        noise = babble_mix(others, x.shape[-1], rng)
        return _mixed(x, noise, float(rng.uniform(*self.snr_db)), ctx)


@functools.lru_cache(maxsize=8)
def _rir_list(path: str, sample_rate: int) -> Tuple[np.ndarray, ...]:
    return tuple(align_rir(_load_entry(key, entry, sample_rate), sample_rate=sample_rate)
                 for key, entry in _cached_scp(path))


@dataclass(frozen=True)
class Reverb:
    """Convolution with a room impulse response from the list ``rir_scp`` (e.g. RIRS_NOISES), or
    from a bank of ``rooms`` simulated rooms with RT60 uniform in ``rt60`` (drawn once per process
    from ``room_seed``; the robustness tool simulates its rooms from other seeds). The direct
    path stays at time 0 (:mod:`~xtrans.data.augment.reverb`)."""

    rir_scp: Optional[str] = None
    rooms: int = 0
    rt60: Tuple[float, float] = (0.2, 1.0)
    room_seed: int = 1
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        check_rt60_range(self.rt60)
        if (self.rir_scp is None) == (self.rooms == 0):
            raise ValueError(f"reverb: expected either rir_scp or rooms > 0, found rir_scp={self.rir_scp!r} "
                             f"and rooms={self.rooms}")
        if self.rooms < 0:
            raise ValueError(f"rooms: expected >= 0, found {self.rooms}")

    def responses(self, sample_rate: int) -> Tuple[np.ndarray, ...]:
        if self.rir_scp is not None:
            return _rir_list(self.rir_scp, sample_rate)
        return room_bank(self.rooms, tuple(self.rt60), self.room_seed, sample_rate)

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        rirs = self.responses(ctx.sample_rate)
        y = reverberate(_as_numpy(x), rirs[int(rng.integers(len(rirs)))])
        return torch.from_numpy(limit_peak(y))


@dataclass(frozen=True)
class Eq:
    """A random microphone colouring (:func:`~xtrans.data.augment.channel.random_eq`)."""

    max_db: float = 10.0
    low_hz: Tuple[float, float] = (20.0, 500.0)
    high_hz: Tuple[float, float] = (3000.0, 8000.0)
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        for name in ("low_hz", "high_hz"):
            low, _ = _check_range(getattr(self, name), name)
            if low <= 0:
                raise ValueError(f"{name}: expected positive frequencies, found {list(getattr(self, name))}")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        y = random_eq(_as_numpy(x), rng, ctx.sample_rate, max_db=self.max_db, low_hz=self.low_hz,
                      high_hz=self.high_hz)
        return torch.from_numpy(limit_peak(y))


@dataclass(frozen=True)
class Telephone:
    """Narrow-band telephony (:func:`~xtrans.data.augment.channel.telephone`), band edges drawn per item."""

    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        return torch.from_numpy(telephone(_as_numpy(x), ctx.sample_rate, rng))


@dataclass(frozen=True)
class Codec:
    """A lossy codec's round trip, the codec drawn from ``codecs``
    (:func:`~xtrans.data.augment.channel.codec_roundtrip`)."""

    codecs: Tuple[str, ...] = CODECS
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        if not self.codecs or any(c not in CODECS for c in self.codecs):
            raise ValueError(f"codecs: expected some of {CODECS}, found {list(self.codecs)}")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        codec = self.codecs[int(rng.integers(len(self.codecs)))]
        return torch.from_numpy(codec_roundtrip(_as_numpy(x), codec, rng, ctx.sample_rate))


@dataclass(frozen=True)
class OneOf:
    """One of the entries ``of``, drawn with ``weights`` (equal by default); the chosen entry's own
    ``prob`` still applies."""

    of: Tuple[Any, ...] = ()
    weights: Optional[Tuple[float, ...]] = None
    prob: float = 1.0
    from_epoch: int = 0

    def __post_init__(self):
        _check_common(self.prob, self.from_epoch)
        if not self.of:
            raise ValueError("of: expected at least one entry, found none")
        if self.weights is not None and (len(self.weights) != len(self.of) or min(self.weights) < 0
                                         or sum(self.weights) <= 0):
            raise ValueError(f"weights: expected {len(self.of)} non-negative weights with a positive sum, "
                             f"found {list(self.weights)}")

    def apply(self, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
        if self.weights is None:
            entry = self.of[int(rng.integers(len(self.of)))]
        else:
            p = np.asarray(self.weights, dtype=np.float64)
            entry = self.of[int(rng.choice(len(self.of), p=p / p.sum()))]
        return _apply_entry(entry, x, rng, ctx)


KINDS: Dict[str, type] = {
    "speed": Speed, "time_mask": TimeMask, "gain": Gain, "noise": Noise, "generated_noise": GeneratedNoise,
    "babble": Babble, "reverb": Reverb, "eq": Eq, "telephone": Telephone, "codec": Codec, "one_of": OneOf,
}


def _apply_entry(entry, x: torch.Tensor, rng: np.random.Generator, ctx: AugmentContext) -> torch.Tensor:
    if ctx.epoch < entry.from_epoch:
        return x  # not yet: draws nothing
    if entry.prob < 1.0 and not rng.random() < entry.prob:
        return x
    return entry.apply(x, rng, ctx)


def parse_entry(entry: Mapping[str, Any], source: str = "<dict>", key: str = "augment[0]"):
    """One ``{kind: ..., ...}`` entry -> its transform (one of :data:`KINDS`).

    Raises:
        ConfigError: naming ``key`` and ``source`` for an unknown kind, an unknown option or a bad value.
    """
    if not isinstance(entry, Mapping) or "kind" not in entry:
        raise ConfigError(key, source, f"expected a mapping with a 'kind' (one of {', '.join(KINDS)}), "
                                       f"found {entry!r}")
    kind = entry["kind"]
    if kind not in KINDS:
        raise ConfigError(f"{key}.kind", source, f"unknown augmentation {kind!r} (known: {', '.join(KINDS)})")
    options = {k: v for k, v in entry.items() if k != "kind"}
    if kind == "one_of":
        inner = options.get("of")
        if not isinstance(inner, (list, tuple)):
            raise ConfigError(f"{key}.of", source, f"expected a list of entries, found {inner!r}")
        options["of"] = tuple(parse_entry(e, source, f"{key}.of[{i}]") for i, e in enumerate(inner))
        weights = options.get("weights")
        options["weights"] = None if weights is None else tuple(float(w) for w in weights)
        try:
            return OneOf(**options)
        except (TypeError, ValueError) as err:
            raise ConfigError(key, source, str(err)) from None
    return from_dict(KINDS[kind], options, source, prefix=f"{key}.")


class Pipeline:
    """An ordered list of transforms applied to one utterance (see the module docstring).

    Args:
        entries: parsed transforms (:func:`parse_entry`) or ``{kind: ...}`` mappings.
        source: where the entries came from, for error messages.
    """

    def __init__(self, entries: Sequence[Any], source: str = "<dict>"):
        self.entries = tuple(e if dataclasses.is_dataclass(e) else parse_entry(e, source, f"augment[{i}]")
                             for i, e in enumerate(entries))

    def __len__(self) -> int:
        return len(self.entries)

    def prepare(self, sample_rate: int = SAMPLE_RATE) -> None:
        """Loads or simulates every reverberation entry's responses now, in this process.

        A data set prepares its pipeline when it is made, so DataLoader workers forked later share
        the responses instead of simulating the rooms again at the start of every epoch.
        """
        pending = list(self.entries)
        while pending:
            entry = pending.pop()
            if isinstance(entry, OneOf):
                pending.extend(entry.of)
            elif isinstance(entry, Reverb):
                entry.responses(sample_rate)

    def __repr__(self) -> str:
        return f"Pipeline({list(self.entries)!r})"

    def __call__(self, waveform: torch.Tensor, rng: np.random.Generator,
                 ctx: AugmentContext = AugmentContext()) -> torch.Tensor:
        """``waveform`` (S,) float32 through every entry in order, all draws from ``rng``."""
        x = waveform
        for entry in self.entries:
            x = _apply_entry(entry, x, rng, ctx)
        return x.to(torch.float32)


def legacy_entries(speed_factors: Optional[Sequence[float]] = None, num_time_masks: int = 0,
                   time_mask_seconds: float = 0.05, gain_db: Optional[Sequence[float]] = None) -> List[Dict[str, Any]]:
    """The entries the older ``data`` keys stand for, in the order they were applied: speed, time
    masks, gain (each with ``prob: 1``, so the draws are those of before)."""
    entries: List[Dict[str, Any]] = []
    if speed_factors is not None:
        entries.append({"kind": "speed", "factors": tuple(float(f) for f in speed_factors)})
    if num_time_masks:
        entries.append({"kind": "time_mask", "num_masks": int(num_time_masks), "max_seconds": float(time_mask_seconds)})
    if gain_db is not None:
        entries.append({"kind": "gain", "db": tuple(float(g) for g in gain_db)})
    return entries


def combined_entries(augment: Sequence[Any], speed_factors: Optional[Sequence[float]] = None,
                     num_time_masks: int = 0, time_mask_seconds: float = 0.05,
                     gain_db: Optional[Sequence[float]] = None) -> Tuple[Any, ...]:
    """The older options around ``augment``: speed and time masks first, ``augment``'s entries,
    the gain last (a microphone's level applies to everything it picks up)."""
    legacy = legacy_entries(speed_factors, num_time_masks, time_mask_seconds, gain_db)
    gain = [e for e in legacy if e["kind"] == "gain"]
    return tuple([e for e in legacy if e["kind"] != "gain"] + list(augment) + gain)
