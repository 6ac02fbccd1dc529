"""Gain perturbation (``data.gain_db``) and the level invariance of the streamable front end."""

import numpy as np
import pytest
import soundfile
import torch

from xtrans.data.augment import apply_gain
from xtrans.data.dataset import AsrDataset
from xtrans.models.wav2vec2.model import normalize_waveform
from xtrans.models.wav2vec2.presets import preset_kwargs
from xtrans.models.wav2vec2 import Wav2Vec2Encoder
from xtrans.train.config import DataConfig


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        wav = 0.2 * np.sin(np.arange(8000) * (0.05 + 0.01 * i)) + 0.01 * rng.standard_normal(8000)
        soundfile.write(tmp_path / f"u{i}.wav", wav, 16000, subtype="FLOAT")
        lines.append(f"u{i} {tmp_path / f'u{i}.wav'}\n")
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("".join(lines))
    (d / "text").write_text("".join(f"u{i} AB\n" for i in range(6)))
    return d


def ids(text):
    return [ord(c) - ord("A") + 1 for c in text]


def gains_of(dataset, clean):
    """The gain in dB each item got, read off the waveform (no clipping at these levels)."""
    return [20 * np.log10(float(dataset[i].waveform.abs().max() / clean[i].waveform.abs().max()))
            for i in range(len(dataset))]


def test_apply_gain_scales_and_saturates():
    x = torch.tensor([0.6, -0.05, 0.25])
    torch.testing.assert_close(apply_gain(x, -20.0), x / 10)
    y = apply_gain(x, 6.0)
    assert y[0] == 1.0 and y[1] == pytest.approx(-0.05 * 10 ** 0.3) and y[2] == pytest.approx(0.25 * 10 ** 0.3)
    assert torch.equal(x, torch.tensor([0.6, -0.05, 0.25]))  # not modified
    with pytest.raises(ValueError, match="gain_db: expected a finite number"):
        apply_gain(x, float("nan"))


def test_gain_perturbation_is_seeded_per_item_and_epoch(data_dir):
    clean = AsrDataset(data_dir, ids)
    a = AsrDataset(data_dir, ids, gain_db=(-35.0, 10.0), seed=3)
    gains = gains_of(a, clean)
    assert all(-35.0 - 1e-3 <= g <= 10.0 + 1e-3 for g in gains)
    assert max(gains) - min(gains) > 5.0  # really drawn, not one fixed gain
    again = AsrDataset(data_dir, ids, gain_db=(-35.0, 10.0), seed=3)
    assert [again[i].waveform.tolist() for i in (4, 0)] == [a[i].waveform.tolist() for i in (4, 0)]  # any order
    other_seed = AsrDataset(data_dir, ids, gain_db=(-35.0, 10.0), seed=4)
    assert gains_of(other_seed, clean) != pytest.approx(gains)
    a.set_epoch(1)
    assert gains_of(a, clean) != pytest.approx(gains)
    a.set_epoch(0)
    assert gains_of(a, clean) == pytest.approx(gains)


def test_gain_is_drawn_after_the_other_augmentations(data_dir):
    """Turning gain perturbation on keeps every other draw (speed, time masks) as it was."""
    plain = AsrDataset(data_dir, ids, speed_factors=(0.9, 1.1), num_time_masks=2, seed=0)
    gained = AsrDataset(data_dir, ids, speed_factors=(0.9, 1.1), num_time_masks=2, seed=0, gain_db=(-6.0, -6.0))
    for i in range(len(plain)):
        torch.testing.assert_close(gained[i].waveform, apply_gain(plain[i].waveform, -6.0))


def test_gain_range_is_checked(data_dir):
    with pytest.raises(ValueError, match=r"gain_db: expected low <= high, found \[10.0, -35.0\]"):
        AsrDataset(data_dir, ids, gain_db=(10.0, -35.0))
    with pytest.raises(ValueError, match="gain_db: expected two finite numbers"):
        DataConfig(gain_db=(-35.0, float("inf")))
    assert DataConfig(gain_db=(-35, 10)).gain_db == (-35, 10)


@pytest.fixture(scope="module")
def utterance(spoken_digits) -> torch.Tensor:
    """About 2.5 s of speech: one voice's digits 0-6 of one take joined, at 16 kHz, (S,)."""
    from xtrans.data.resample import resample
    from xtrans.testing.speech_fixtures import SPEAKERS

    speaker = next(iter(SPEAKERS))
    files = [spoken_digits / "recordings" / f"{digit}_{speaker}_5.wav" for digit in range(7)]
    pieces = [torch.from_numpy(soundfile.read(f, dtype="float32")[0]) for f in files]
    wave = resample(torch.cat(pieces), 8000, 16000)
    assert wave.shape[0] > 32000
    return wave.float()


@pytest.fixture(scope="module")
def demo_encoder():
    """The demo's front end (cumulative waveform normalisation, batch-norm CNN with fixed statistics
    that are not the identity) under a random, small transformer."""
    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(**preset_kwargs("mini", extractor_mode="batch_norm", waveform_norm="cumulative",
                                          pos_conv="causal", pos_conv_kernel=16, num_layers=2))
    bn = enc.feature_extractor.conv_layers[0].norm
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return enc.eval()


@pytest.mark.parametrize("scale", [0.03, 2.0])
def test_encoder_output_is_invariant_to_the_input_level(demo_encoder, utterance, scale):
    wave = utterance[None]
    with torch.no_grad():
        ref, _ = demo_encoder(wave)
        got, _ = demo_encoder(wave * scale)
    after_1s = slice(50, None)  # frames are 20 ms
    change = (got[0, after_1s] - ref[0, after_1s]).norm(dim=-1) / ref[0, after_1s].norm(dim=-1)
    assert float(change.max()) < 1e-3


def test_level_invariance_needs_the_normalisation(demo_encoder, utterance):
    """The comparison discriminates: without waveform normalisation the same encoder is not invariant."""
    wave = utterance[None]
    lengths = torch.tensor([wave.shape[1]])
    x = normalize_waveform(wave, lengths, "none")
    with torch.no_grad():
        a, _ = demo_encoder.feature_extractor(x, lengths)
        b, _ = demo_encoder.feature_extractor(x * 0.03, lengths)
    assert float((a - b).norm() / a.norm()) > 0.1
