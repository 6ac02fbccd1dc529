"""Torch dataset of (waveform, token targets) pairs from a data directory, and its collate.

Shapes use the project legend: ``B`` batch, ``S`` waveform samples, ``U`` target tokens.

Augmentation is seeded per item: item ``i`` in epoch ``e`` draws its speed factor, time masks
and gain from ``numpy.random.default_rng([seed, e, i])``, so it is the same whichever worker
process loads it and whatever the batch order. Call :meth:`AsrDataset.set_epoch` before each
epoch's ``DataLoader`` iterator is created (with ``persistent_workers=False``, the default, the
workers receive the new epoch).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from xtrans.data.audio import load_waveform
from xtrans.data.augment.pipeline import AugmentContext, Pipeline, combined_entries
from xtrans.data.kaldi_dir import DataDir, read_data_dir
from xtrans.frames import SAMPLE_RATE

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Example:
    """One utterance.

    Attributes:
        utt_id: the utterance id.
        waveform: ``(S,)`` float32 at the dataset's rate, augmented if configured.
        targets: ``(U,)`` int64 token ids (never the blank 0).
    """

    utt_id: str
    waveform: torch.Tensor
    targets: torch.Tensor


@dataclasses.dataclass
class Batch:
    """A padded batch.

    Attributes:
        waveforms: ``(B, S)`` float32, zero padded after each utterance.
        waveform_lengths: ``(B,)`` int64 samples per utterance.
        targets: ``(B, U)`` int64, padded with 0 (the blank id; masked by ``target_lengths``).
        target_lengths: ``(B,)`` int64 tokens per utterance.
        utt_ids: the ``B`` utterance ids.
    """

    waveforms: torch.Tensor
    waveform_lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    utt_ids: list[str]

    def to(self, device: torch.device | str) -> "Batch":
        """The batch with every tensor on ``device``."""
        return Batch(
            self.waveforms.to(device),
            self.waveform_lengths.to(device),
            self.targets.to(device),
            self.target_lengths.to(device),
            self.utt_ids,
        )

    def pin_memory(self) -> "Batch":
        """Pinned copy (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(
            self.waveforms.pin_memory(),
            self.waveform_lengths.pin_memory(),
            self.targets.pin_memory(),
            self.target_lengths.pin_memory(),
            self.utt_ids,
        )


def collate(examples: Sequence[Example]) -> Batch:
    """Pad examples into a :class:`Batch` (order kept).

    Raises:
        ValueError: when ``examples`` is empty.
    """
    if not examples:
        raise ValueError("examples must hold at least one Example, found none")
    wave_lengths = torch.tensor([len(e.waveform) for e in examples], dtype=torch.int64)
    target_lengths = torch.tensor([len(e.targets) for e in examples], dtype=torch.int64)
    waveforms = torch.zeros(len(examples), int(wave_lengths.max()), dtype=torch.float32)
    targets = torch.zeros(len(examples), int(target_lengths.max()), dtype=torch.int64)
    for b, e in enumerate(examples):
        waveforms[b, : len(e.waveform)] = e.waveform
        targets[b, : len(e.targets)] = e.targets
    return Batch(waveforms, wave_lengths, targets, target_lengths, [e.utt_id for e in examples])


def utterance_durations(data: DataDir, sample_rate: int = SAMPLE_RATE) -> list[float]:
    """Seconds per utterance in ``data.utt_ids`` order, for :class:`DurationBatchSampler`.

    Uses ``utt2num_samples`` (taken to be at ``sample_rate``, as ``prepare_audio`` writes it),
    else ``utt2dur``.

    Raises:
        ValueError: when neither table covers every utterance.
    """
    for table, scale in ((data.utt2num_samples, 1.0 / sample_rate), (data.utt2dur, 1.0)):
        if table is not None:
            missing = [u for u in data.utt_ids if u not in table]
            if not missing:
                return [table[u] * scale for u in data.utt_ids]
    raise ValueError(
        "data needs utt2num_samples or utt2dur covering every utterance to batch by duration; "
        "run python -m xtrans.bin.prepare_audio on it first"
    )


def check_gain_range(gain_db: Sequence[float]) -> None:
    """Checks a gain-perturbation range ``(low, high)`` in dB.

    Raises:
        ValueError: unless it is two finite numbers with ``low <= high``.
    """
    if len(gain_db) != 2 or not all(isinstance(g, (int, float)) and np.isfinite(g) for g in gain_db):
        raise ValueError(f"gain_db: expected two finite numbers [low, high] in dB, found {list(gain_db)}")
    if gain_db[0] > gain_db[1]:
        raise ValueError(f"gain_db: expected low <= high, found [{gain_db[0]}, {gain_db[1]}]")


class AsrDataset(torch.utils.data.Dataset):
    """Utterances of a data directory as :class:`Example` s, indexed ``0..N-1`` in sorted id order.

    Args:
        data: a :class:`DataDir` or the path of one; needs ``text`` for every utterance.
        tokenizer: text -> token ids (e.g. :class:`xtrans.tokenizer.Tokenizer`).
        sample_rate: rate the waveforms are returned at (audio at other rates is resampled).
        speed_factors: speed perturbation factors drawn uniformly per item, e.g.
            ``(0.9, 1.0, 1.1)``; ``None`` disables it.
        num_time_masks: spans zeroed per item (0 disables time masking).
        time_mask_seconds: longest span, seconds.
        gain_db: ``(low, high)``: each item is scaled by a gain drawn uniformly in
            ``[low, high]`` dB and saturated at full scale (:func:`~xtrans.data.augment.apply_gain`),
            before anything else the model does to it (waveform normalisation included), so that
            training sees other microphone levels; ``None`` disables it.
        augment: the augmentation pipeline (:class:`~xtrans.data.augment.Pipeline`, or its
            ``{kind: ...}`` entries), applied to every item; the three options above are the
            entries ``speed`` and ``time_mask`` before it and ``gain`` after it.
            Babble draws its other talkers from this data set, as recorded.
        seed: augmentation seed: item ``index`` of epoch ``e`` draws everything from
            ``numpy.random.default_rng([seed, e, index])``.

    Raises:
        ValueError: when ``data`` has no transcript for some utterance, a speed factor is
            not positive, or ``gain_db`` is not an ordered pair of finite numbers.
    """

    def __init__(
        self,
        data: DataDir | str | os.PathLike,
        tokenizer: Callable[[str], Sequence[int]],
        *,
        sample_rate: int = SAMPLE_RATE,
        speed_factors: Sequence[float] | None = None,
        num_time_masks: int = 0,
        time_mask_seconds: float = 0.05,
        gain_db: tuple[float, float] | None = None,
        augment: Pipeline | Sequence[Mapping[str, Any]] | None = None,
        seed: int = 0,
    ):
        self.data = data if isinstance(data, DataDir) else read_data_dir(data)
        self.utt_ids = self.data.utt_ids
        texts = self.data.text or {}
        missing = [u for u in self.utt_ids if u not in texts]
        if missing:
            raise ValueError(
                f"data has no transcript for {len(missing)} utterances (first: {missing[0]!r}); "
                "clean it with python -m xtrans.bin.validate_data --clean-dir"
            )
        if speed_factors is not None and not all(f > 0 for f in speed_factors):
            raise ValueError(f"speed_factors: expected positive factors, found {list(speed_factors)}")
        if num_time_masks < 0 or time_mask_seconds < 0:
            raise ValueError(
                f"num_time_masks, time_mask_seconds: expected >= 0, found {num_time_masks} "
                f"and {time_mask_seconds}"
            )
        if gain_db is not None:
            check_gain_range(gain_db)
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        pipeline = augment if isinstance(augment, Pipeline) else Pipeline(augment or ())
        self.augment = Pipeline(combined_entries(pipeline.entries, speed_factors, num_time_masks,
                                                 time_mask_seconds, gain_db))
        self.augment.prepare(sample_rate)  # rooms simulated once, before DataLoader workers fork
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = epoch

    def durations(self) -> list[float]:
        """Seconds per item (before speed perturbation), for the batch sampler."""
        return utterance_durations(self.data, self.sample_rate)

    def __len__(self) -> int:
        return len(self.utt_ids)

    def recorded(self, index: int) -> np.ndarray:
        """Item ``index``'s waveform as recorded (no augmentation), (S,) float32 numpy."""
        return self._load(index).numpy()

    def _load(self, index: int) -> torch.Tensor:
        utt = self.utt_ids[index]
        entry, segment = self.data.wav_entry(utt)
        return load_waveform(entry, utt_id=utt, segment=segment, sample_rate=self.sample_rate)

    def __getitem__(self, index: int) -> Example:
        utt = self.utt_ids[index]
        waveform = self._load(index)
        if len(self.augment):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            context = AugmentContext(self.sample_rate, index, len(self.utt_ids), self.recorded, self.epoch)
            waveform = self.augment(waveform, rng, context)
        targets = torch.tensor(list(self.tokenizer(self.data.text[utt])), dtype=torch.int64)
        return Example(utt, waveform.to(torch.float32), targets)
