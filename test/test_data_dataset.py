"""AsrDataset + collate + augmentation, fed by the duration sampler through a DataLoader."""

import numpy as np
import pytest
import soundfile
import torch

from xtrans.data.augment import speed_perturb, time_mask
from xtrans.data.dataset import AsrDataset, Batch, collate, utterance_durations
from xtrans.data.kaldi_dir import read_data_dir
from xtrans.data.sampler import DurationBatchSampler

LENGTHS = {"u1": 16000, "u2": 8000, "u3": 12000, "u4": 4000}
TEXTS = {"u1": "ABC", "u2": "A", "u3": "BB", "u4": "CAB"}


def char_ids(text):
    return [ord(c) - ord("A") + 1 for c in text]


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for utt, n in LENGTHS.items():
        soundfile.write(tmp_path / f"{utt}.wav", 0.1 * rng.standard_normal(n), 16000,
                        subtype="FLOAT")
        lines.append(f"{utt} {tmp_path / f'{utt}.wav'}\n")
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("".join(lines))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, t in TEXTS.items()))
    (d / "utt2num_samples").write_text("".join(f"{u} {n}\n" for u, n in LENGTHS.items()))
    return d


def test_collate_pads_and_keeps_lengths(data_dir):
    dataset = AsrDataset(data_dir, char_ids)
    batch = collate([dataset[0], dataset[1]])  # u1, u2
    assert isinstance(batch, Batch) and batch.utt_ids == ["u1", "u2"]
    assert batch.waveforms.shape == (2, 16000) and batch.waveforms.dtype == torch.float32
    assert batch.waveform_lengths.tolist() == [16000, 8000]
    assert torch.all(batch.waveforms[1, 8000:] == 0)
    assert batch.targets.tolist() == [[1, 2, 3], [1, 0, 0]]
    assert batch.target_lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="examples must hold at least one Example"):
        collate([])


def test_dataloader_with_duration_sampler(data_dir):
    dataset = AsrDataset(data_dir, char_ids)
    assert dataset.durations() == [1.0, 0.5, 0.75, 0.25]
    sampler = DurationBatchSampler(dataset.durations(), max_seconds=1.6, num_buckets=1, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    seen = []
    for batch in loader:
        assert batch.waveforms.shape[0] * batch.waveforms.shape[1] <= 1.6 * 16000
        seen += batch.utt_ids
    assert sorted(seen) == sorted(LENGTHS)


def test_augmentation_is_seeded_per_epoch_and_item(data_dir):
    def make(seed):
        return AsrDataset(data_dir, char_ids, speed_factors=(0.9, 1.0, 1.1), num_time_masks=2,
                          time_mask_seconds=0.05, seed=seed)

    a, b = make(1), make(1)
    for i in range(len(a)):
        assert torch.equal(a[i].waveform, b[i].waveform)
    draws = []
    for epoch in range(6):
        a.set_epoch(epoch)
        draws.append(len(a[0].waveform))
    assert set(draws) <= {14546, 16000, 17778} and len(set(draws)) > 1  # ceil(16000 / f)
    a.set_epoch(0)
    assert torch.equal(a[0].waveform, b[0].waveform)


def test_speed_perturb_changes_duration_and_pitch():
    t = torch.arange(16000, dtype=torch.float64) / 16000
    tone = torch.sin(2 * torch.pi * 400 * t)
    fast = speed_perturb(tone, 1.1)
    assert fast.shape == (14546,)
    spectrum = torch.fft.rfft(fast[1000:-1000] * torch.hann_window(len(fast) - 2000,
                                                                 dtype=torch.float64), n=1 << 18)
    peak_hz = int(spectrum.abs().argmax()) * 16000 / (1 << 18)
    assert peak_hz == pytest.approx(440, abs=0.5)
    assert speed_perturb(tone, 1.0) is tone
    with pytest.raises(ValueError, match="factor must be positive"):
        speed_perturb(tone, 0.0)


def test_time_mask_zeroes_bounded_spans():
    x = torch.ones(1000)
    y = time_mask(x, np.random.default_rng(0), num_masks=3, max_width=50)
    assert torch.all(x == 1) and 0 < int((y == 0).sum()) <= 150
    with pytest.raises(ValueError, match="num_masks must be >= 0"):
        time_mask(x, np.random.default_rng(0), num_masks=-1)


def test_dataset_errors(data_dir):
    (data_dir / "text").write_text("u1 A\n")
    with pytest.raises(ValueError, match=r"no transcript for 3 utterances \(first: 'u2'\)"):
        AsrDataset(data_dir, char_ids)
    data = read_data_dir(data_dir)
    data.utt2num_samples = None
    with pytest.raises(ValueError, match="needs utt2num_samples or utt2dur"):
        utterance_durations(data)


def test_augmentation_argument_errors(data_dir):
    """The messages name the argument, what was expected and what was found."""
    with pytest.raises(ValueError, match="max_width: expected >= 0 samples, found -2"):
        time_mask(torch.ones(10), np.random.default_rng(0), num_masks=1, max_width=-2)
    with pytest.raises(ValueError, match=r"speed_factors: expected positive factors, found \[0.9, 0.0\]"):
        AsrDataset(data_dir, char_ids, speed_factors=(0.9, 0.0))
    with pytest.raises(ValueError, match="num_time_masks, time_mask_seconds: expected >= 0, found 2 and -0.1"):
        AsrDataset(data_dir, char_ids, num_time_masks=2, time_mask_seconds=-0.1)
