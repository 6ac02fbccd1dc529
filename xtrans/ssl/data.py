"""Unlabelled audio of a Kaldi data directory: waveforms by utterance, durations for batching.

Only ``wav.scp`` (and ``segments`` when present) is read; ``text`` is not needed. Batches are the
trainer's: :class:`~xtrans.data.sampler.DurationBatchSampler` over the utterances' durations
(``utt2num_samples``, else ``utt2dur``, else measured by reading each utterance once), padded by
:func:`~xtrans.data.dataset.collate`.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch

from xtrans.data.audio import load_waveform
from xtrans.data.dataset import Example, utterance_durations
from xtrans.data.kaldi_dir import DataDir
from xtrans.frames import SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = ["AudioDataset", "audio_durations", "sampled_waveforms"]

_NO_TARGETS = torch.zeros(0, dtype=torch.int64)


class AudioDataset(torch.utils.data.Dataset):
    """Item ``i``: the waveform (S,) float32 at ``sample_rate`` of ``data.utt_ids[i]``, as an
    :class:`~xtrans.data.dataset.Example` without targets (so that ``collate`` pads it)."""

    def __init__(self, data: DataDir, sample_rate: int = SAMPLE_RATE):
        self.data, self.sample_rate = data, sample_rate

    def __len__(self) -> int:
        return len(self.data.utt_ids)

    def waveform(self, index: int) -> torch.Tensor:
        utt = self.data.utt_ids[index]
        entry, segment = self.data.wav_entry(utt)
        return load_waveform(entry, utt_id=utt, segment=segment, sample_rate=self.sample_rate)

    def __getitem__(self, index: int) -> Example:
        return Example(self.data.utt_ids[index], self.waveform(index), _NO_TARGETS)


def audio_durations(data: DataDir, sample_rate: int = SAMPLE_RATE,
                    on_measure: Optional[Callable[[int], None]] = None) -> List[float]:
    """Seconds per utterance in ``data.utt_ids`` order: from ``utt2num_samples`` / ``utt2dur``, else
    measured by reading every utterance (slow on a large corpus: run ``python -m
    xtrans.bin.prepare_audio`` first); ``on_measure(i)`` is called after each one read."""
    try:
        return utterance_durations(data, sample_rate)
    except ValueError:
        logger.warning("%s: no utt2num_samples or utt2dur covering every utterance; reading each utterance "
                       "to measure it", data.path)
    dataset, out = AudioDataset(data, sample_rate), []
    for i in range(len(dataset)):
        out.append(dataset.waveform(i).shape[0] / sample_rate)
        if on_measure is not None:
            on_measure(i + 1)
    return out


def sampled_waveforms(dataset: AudioDataset, seed: int, durations: Optional[Sequence[float]] = None,
                      min_seconds: float = 0.0) -> Iterator[torch.Tensor]:
    """The dataset's waveforms in a random order of ``numpy.random.default_rng(seed)`` (the k-means
    sample), skipping utterances shorter than ``min_seconds`` when ``durations`` are given."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    for i in order.tolist():
        if durations is not None and durations[i] < min_seconds:
            continue
        yield dataset.waveform(i)
