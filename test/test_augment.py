"""The augmentation pipeline: determinism per (seed, epoch, index), SNR, alignment, channels, config."""

import numpy as np
import pytest
import soundfile as sf
import torch

from xtrans.config import ConfigError
from xtrans.data.augment import (FAMILIES, HELD_OUT_FAMILIES, KINDS, TRAIN_FAMILIES, AugmentContext, Pipeline,
                                 active_power, align_rir, apply_gain, babble_mix, codec_roundtrip, fit_length,
                                 generate_noise, legacy_entries, measured_snr, mix_at_snr, mu_law, random_eq,
                                 reverberate, room_bank, rt60_from_rir, scale_to_snr, simulate_rir, speed_perturb,
                                 telephone, time_mask)
from xtrans.data.augment.reverb import check_rt60_range
from xtrans.data.dataset import AsrDataset
from xtrans.testing.train_fixtures import make_tiny_corpus
from xtrans.tokenizer import Tokenizer

SR = 16000


def speech_like(seconds=1.5, seed=0):
    """Voiced bursts with pauses: a harmonic source under a syllable envelope, silence between words."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 2 * (t > 0.2) * (t < seconds - 0.2)
    return (0.3 * voice * envelope + 1e-4 * rng.standard_normal(t.size)).astype(np.float32)


def rng_for(epoch, index, seed=7):
    return np.random.default_rng([seed, epoch, index])


def write_noise_scp(root, count=3):
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(count):
        path = root / f"n{k}.wav"
        sf.write(path, generate_noise("bursts", SR // 2 + 1000 * k, np.random.default_rng(k)) * 0.1, SR)
        lines.append(f"noise{k} {path}")
    scp = root / "noise.scp"
    scp.write_text("\n".join(lines) + "\n")
    return scp


def every_kind(tmp_path):
    """One entry of every kind (prob 1), each alone in a pipeline."""
    scp = write_noise_scp(tmp_path / "noise")
    rirs = tmp_path / "rirs"
    rirs.mkdir(exist_ok=True)
    sf.write(rirs / "r0.wav", room_bank(1, (0.4, 0.4), 3)[0], SR)
    (rirs / "rir.scp").write_text(f"r0 {rirs / 'r0.wav'}\n")
    return {
        "speed": {"kind": "speed", "factors": [0.9, 1.1]},
        "time_mask": {"kind": "time_mask", "num_masks": 2},
        "gain": {"kind": "gain", "db": [-20, 5]},
        "noise": {"kind": "noise", "scp": str(scp), "snr_db": [0, 20]},
        "generated_noise": {"kind": "generated_noise", "snr_db": [0, 20]},
        "babble": {"kind": "babble", "talkers": [1, 3], "snr_db": [5, 20]},
        "reverb": {"kind": "reverb", "rooms": 3, "rt60": [0.3, 0.8], "room_seed": 5},
        "reverb_scp": {"kind": "reverb", "rir_scp": str(rirs / "rir.scp")},
        "eq": {"kind": "eq"},
        "telephone": {"kind": "telephone"},
        "codec": {"kind": "codec"},
        "one_of": {"kind": "one_of", "of": [{"kind": "eq"}, {"kind": "generated_noise"}], "weights": [1, 3]},
    }


def context(index, others):
    return AugmentContext(SR, index, len(others), lambda j: others[j])


@pytest.fixture(scope="module")
def others():
    return [speech_like(1.0 + 0.2 * k, seed=10 + k) for k in range(5)]


def test_every_kind_is_covered(tmp_path):
    assert {e["kind"] for e in every_kind(tmp_path).values()} == set(KINDS)


@pytest.mark.parametrize("name", ["speed", "time_mask", "gain", "noise", "generated_noise", "babble", "reverb",
                                  "reverb_scp", "eq", "telephone", "codec", "one_of"])
def test_transform_deterministic_per_seed_and_differs_across_items(tmp_path, others, name):
    pipeline = Pipeline([every_kind(tmp_path)[name]])
    x = torch.from_numpy(speech_like())
    a = pipeline(x, rng_for(0, 1), context(1, others))
    b = pipeline(x, rng_for(0, 1), context(1, others))
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, x)
    outputs = [pipeline(x, rng_for(e, i), context(i, others)) for e, i in [(0, 2), (1, 1), (3, 4), (2, 0), (0, 3)]]
    differs = [out.shape != a.shape or not torch.equal(out, a) for out in outputs]
    if name in ("speed", "reverb", "reverb_scp"):  # a draw among 2 factors / 3 rooms / 1 response: items repeat
        assert any(differs) or name == "reverb_scp"
    else:
        assert all(differs)
    if name not in ("speed",):
        assert a.shape == x.shape  # everything but speed keeps the length


def test_prob_skips_and_draws_come_from_the_item_generator(others):
    pipeline = Pipeline([{"kind": "generated_noise", "prob": 0.5}])
    x = torch.from_numpy(speech_like())
    applied = [not torch.equal(pipeline(x, rng_for(0, i), context(i, others)), x) for i in range(40)]
    assert 8 < sum(applied) < 32


def test_from_epoch_holds_an_entry_back_until_its_epoch(others):
    pipeline = Pipeline([{"kind": "generated_noise", "from_epoch": 2}, {"kind": "gain", "db": [-6, 6]}])
    gain_only = Pipeline([{"kind": "gain", "db": [-6, 6]}])
    x = torch.from_numpy(speech_like())
    for epoch in range(4):
        for index in range(3):
            ctx = AugmentContext(SR, index, len(others), lambda j: others[j], epoch)
            got = pipeline(x, rng_for(epoch, index), ctx)
            if epoch < 2:  # held back and drawing nothing: the later entries draw what they draw alone
                assert torch.equal(got, gain_only(x, rng_for(epoch, index), ctx))
            else:
                assert not torch.equal(got, gain_only(x, rng_for(epoch, index), ctx))
                assert torch.equal(got, pipeline(x, rng_for(epoch, index), ctx))
    nested = Pipeline([{"kind": "one_of", "of": [{"kind": "eq", "from_epoch": 1}]}])
    assert torch.equal(nested(x, rng_for(0, 0), context(0, others)), x)


def test_legacy_keys_give_the_same_draws_as_the_older_code():
    entries = legacy_entries([0.9, 1.0, 1.1], 2, 0.05, (-35.0, 10.0))
    assert [e["kind"] for e in entries] == ["speed", "time_mask", "gain"]
    x = torch.from_numpy(speech_like())
    for index in range(5):
        got = Pipeline(entries)(x, rng_for(2, index))
        rng = rng_for(2, index)  # the order of draws the dataset made before the pipeline existed
        want = speed_perturb(x, (0.9, 1.0, 1.1)[int(rng.integers(3))])
        want = time_mask(want, rng, num_masks=2, max_width=800)
        want = apply_gain(want, float(rng.uniform(-35.0, 10.0)))
        assert torch.equal(got, want)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0, 35.0])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mix_has_the_drawn_snr(snr, family):
    speech = speech_like()
    noise = generate_noise(family, speech.size, np.random.default_rng(3))
    mix = mix_at_snr(speech, noise, snr)
    assert abs(measured_snr(speech, mix - speech) - snr) < 0.1


def test_pipeline_noise_entry_mixes_within_the_range(tmp_path, others):
    speech = speech_like()
    for kind in ("noise", "generated_noise", "babble"):
        entry = dict(every_kind(tmp_path)[kind], snr_db=[12.0, 12.0])
        out = Pipeline([entry])(torch.from_numpy(speech), rng_for(0, 0), context(0, others)).numpy()
        scale = 1.0  # peaks stay below full scale here, so the mix is not rescaled
        assert abs(measured_snr(speech * scale, out - speech * scale) - 12.0) < 0.1, kind


def test_active_power_ignores_pauses():
    speech = speech_like()
    padded = np.concatenate([np.zeros(3 * SR, np.float32), speech])
    assert active_power(padded) == pytest.approx(active_power(speech), rel=1e-6)
    assert active_power(np.zeros(100)) == 0.0
    assert np.all(scale_to_snr(np.zeros(100), np.ones(100), 10.0) == 0)


def test_fit_length_crops_and_repeats():
    rng = np.random.default_rng(0)
    noise = np.arange(10, dtype=np.float32)
    long = fit_length(noise, 25, rng)
    assert long.shape == (25,) and np.all(np.diff(long)[np.diff(long) != 1] == -9)
    short = fit_length(np.arange(100.0), 7, rng)
    assert np.all(np.diff(short) == 1)
    with pytest.raises(ValueError, match="noise: expected at least one sample"):
        fit_length(np.zeros(0), 5, rng)


def test_generated_families_unit_rms_and_held_out_never_in_training():
    assert set(TRAIN_FAMILIES).isdisjoint(HELD_OUT_FAMILIES)
    assert set(TRAIN_FAMILIES) | set(HELD_OUT_FAMILIES) == set(FAMILIES)
    for family in FAMILIES:
        x = generate_noise(family, SR * 2, np.random.default_rng(1))
        assert x.dtype == np.float32 and x.shape == (2 * SR,)
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
        assert np.array_equal(x, generate_noise(family, SR * 2, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="family: expected noise families"):
        generate_noise("whale", 10, np.random.default_rng(0))


def test_bursts_are_not_stationary():
    x = generate_noise("bursts", 4 * SR, np.random.default_rng(2)).astype(np.float64)
    frame_power = (x[: 4 * SR // 800 * 800].reshape(-1, 800) ** 2).mean(axis=1)
    assert frame_power.max() / np.median(frame_power) > 3


def test_reverberation_keeps_length_and_alignment():
    speech = speech_like()
    for rt60 in (0.3, 0.6, 1.0):
        rir = simulate_rir(np.random.default_rng(4), rt60)
        assert rir[0] == pytest.approx(1.0) and np.all(np.abs(rir) <= 1.0 + 1e-6)
        out = reverberate(speech, rir)
        assert out.shape == speech.shape
        white = np.random.default_rng(5).standard_normal(SR).astype(np.float32)
        wet = reverberate(white, rir)
        lags = np.arange(-200, 201)
        xcorr = [np.dot(wet[max(0, k):len(wet) + min(0, k)], white[max(0, -k):len(white) - max(0, k)])
                 for k in lags]
        assert lags[int(np.argmax(xcorr))] == 0  # the dry path is at lag 0: alignments do not move
        assert 0.5 * rt60 < rt60_from_rir(rir) < 2.0 * rt60


def test_reverberate_is_a_convolution():
    x = np.random.default_rng(0).standard_normal(300).astype(np.float32)
    h = align_rir(np.array([0.0, 0.0, 2.0, -0.5, 0.25]))
    assert np.array_equal(h, np.array([1.0, -0.25, 0.125], np.float32))
    assert np.allclose(reverberate(x, h), np.convolve(x, h)[:300], atol=1e-5)
    with pytest.raises(ValueError, match="rir: expected a non-zero"):
        align_rir(np.zeros(4))


def test_room_bank_is_reproducible():
    a, b = room_bank(2, (0.3, 0.5), 11), room_bank(3, (0.3, 0.5), 11)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="rt60: expected"):
        check_rt60_range([0.5, 0.2])


def test_rooms_are_kept_on_disk_between_processes(monkeypatch, tmp_path):
    """The first process simulates a bank and writes it; the next reads the same floats back; a cut
    file is simulated again; XTRANS_CACHE_DIR="" keeps nothing."""
    from xtrans.data.augment import reverb

    calls = []
    original = reverb.simulate_rir
    monkeypatch.setattr(reverb, "simulate_rir", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setenv("XTRANS_CACHE_DIR", str(tmp_path))
    reverb.room_bank.cache_clear()
    first = room_bank(2, (0.3, 0.5), 12)
    files = list((tmp_path / "rooms").glob("*.npz"))
    assert len(calls) == 2 and len(files) == 1
    reverb.room_bank.cache_clear()  # a new process: only the disk remains
    again = room_bank(2, (0.3, 0.5), 12)
    assert len(calls) == 2 and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(first, again))
    reverb.room_bank.cache_clear()
    assert len(room_bank(3, (0.3, 0.5), 12)) == 3 and len(calls) == 5  # another bank, another file
    files[0].write_bytes(files[0].read_bytes()[:100])
    reverb.room_bank.cache_clear()
    assert all(np.array_equal(x, y) for x, y in zip(room_bank(2, (0.3, 0.5), 12), first)) and len(calls) == 7
    monkeypatch.setenv("XTRANS_CACHE_DIR", "")
    assert reverb.room_cache_dir() is None
    monkeypatch.delenv("XTRANS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert reverb.room_cache_dir() == tmp_path / "xdg" / "xtrans" / "rooms"
    reverb.room_bank.cache_clear()


def band_energy(x, low, high):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return spec[(f >= low) & (f < high)].sum() / spec.sum()


def test_telephone_band_and_length():
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    y = telephone(x)
    assert y.shape == x.shape
    assert band_energy(y, 4200, 8000) < 1e-3 and band_energy(y, 0, 150) < 0.01
    levels = np.unique(mu_law(np.linspace(-1, 1, 10001)))
    assert len(levels) <= 257


def test_eq_and_codec_keep_length_and_content():
    x = speech_like()
    rng = np.random.default_rng(5)
    for y in (random_eq(x, rng), codec_roundtrip(x, "vorbis", rng), codec_roundtrip(x, "opus", rng)):
        assert y.shape == x.shape
        assert np.corrcoef(x, y)[0, 1] > 0.5
    with pytest.raises(ValueError, match="codec: expected one of"):
        codec_roundtrip(x, "mp3", rng)


def test_babble_never_draws_the_item_itself(others):
    seen = []
    ctx = AugmentContext(SR, 2, len(others), lambda j: seen.append(j) or others[j])
    pipeline = Pipeline([{"kind": "babble", "talkers": [4, 4]}])
    for k in range(20):
        pipeline(torch.from_numpy(speech_like()), np.random.default_rng(k), ctx)
    assert 2 not in seen and set(seen) == {0, 1, 3, 4}
    mix = babble_mix(others[:2], 5000, np.random.default_rng(0))
    assert mix.shape == (5000,)


@pytest.mark.parametrize("entry, match", [
    ({"kind": "nois"}, "unknown augmentation 'nois'"),
    ({"kind": "noise", "snr": [0, 1], "scp": "x"}, "augment\\[0\\].snr.*unknown key"),
    ({"kind": "gain", "prob": 1.5}, "prob: expected a probability"),
    ({"kind": "generated_noise", "snr_db": [20, 0]}, "snr_db: expected \\[low, high\\]"),
    ({"kind": "generated_noise", "families": ["whale"]}, "families: expected noise families"),
    ({"kind": "reverb"}, "reverb: expected either rir_scp or rooms"),
    ({"kind": "one_of", "of": [{"kind": "eq"}], "weights": [1, 2]}, "weights: expected 1"),
    ({"kind": "one_of", "of": [{"kind": "telephon"}]}, "augment\\[0\\].of\\[0\\].kind"),
    ({"prob": 0.5}, "expected a mapping with a 'kind'"),
    ({"kind": "eq", "from_epoch": -1}, "from_epoch: expected a whole number"),
    ({"kind": "eq", "from_epoch": 1.5}, "augment\\[0\\].from_epoch.: wrong type"),
])
def test_bad_entries_are_refused_by_name(entry, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline([entry])


def test_train_config_takes_augment_and_refuses_both_forms(tmp_path):
    from xtrans.config import from_dict
    from xtrans.train.config import DataConfig

    cfg = from_dict(DataConfig, {"augment": [{"kind": "gain", "db": [-35, 10]},
                                             {"kind": "one_of", "of": [{"kind": "eq"}, {"kind": "telephone"}]}]})
    assert [e["kind"] for e in cfg.augment_entries()] == ["gain", "one_of"]
    assert DataConfig(gain_db=(-35, 10)).augment_entries() == ({"kind": "gain", "db": (-35.0, 10.0)},)
    both = from_dict(DataConfig, {"gain_db": [-3, 3], "speed_factors": [0.9, 1.1], "augment": [{"kind": "eq"}]})
    assert [e["kind"] for e in both.augment_entries()] == ["speed", "eq", "gain"]  # the level comes last
    with pytest.raises(ConfigError, match="unknown augmentation"):
        from_dict(DataConfig, {"augment": [{"kind": "echo"}]}, source="conf/train.yaml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("augment_corpus"), num_train=6, num_dev=2)


def test_dataset_items_follow_seed_epoch_index(corpus, tmp_path):
    entries = [e for name, e in every_kind(tmp_path).items() if name not in ("speed",)]
    tok = Tokenizer(corpus.tokenizer)

    def items(epoch, seed=3):
        ds = AsrDataset(corpus.train_dir, tok, augment=entries, seed=seed)
        ds.set_epoch(epoch)
        return [ds[i].waveform for i in range(len(ds))]

    first, again, other_epoch = items(0), items(0), items(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(not torch.equal(a, b) for a, b in zip(first, other_epoch))
    ds = AsrDataset(corpus.train_dir, tok)
    assert all(a.shape == ds[i].waveform.shape for i, a in enumerate(first))  # speed left out: same lengths
    both = AsrDataset(corpus.train_dir, tok, gain_db=(-3, 3), augment=[{"kind": "eq"}])
    assert [type(e).__name__ for e in both.augment.entries] == ["Eq", "Gain"]


def test_dataset_passes_its_epoch_to_from_epoch(corpus):
    tok = Tokenizer(corpus.tokenizer)
    later = AsrDataset(corpus.train_dir, tok, augment=[{"kind": "eq", "from_epoch": 1}], seed=3)
    recorded = AsrDataset(corpus.train_dir, tok)
    assert all(torch.equal(later[i].waveform, recorded[i].waveform) for i in range(len(later)))
    later.set_epoch(1)
    assert all(not torch.equal(later[i].waveform, recorded[i].waveform) for i in range(len(later)))


def test_noise_and_rir_lists_of_the_recipes_become_entries(tmp_path):
    from xtrans.config import from_dict
    from xtrans.train.config import DataConfig

    scp = write_noise_scp(tmp_path / "noise")
    cfg = from_dict(DataConfig, {"noise_scp": str(scp), "noise_prob": 1.0, "noise_snr_db": [5, 5],
                                 "rir_scp": str(scp), "gain_db": [-3, 3], "augment": [{"kind": "eq"}]})
    kinds = [e["kind"] for e in cfg.augment_entries()]
    assert kinds == ["reverb", "eq", "noise", "gain"]  # rooms first, the list's noise after, the level last
    speech = speech_like()
    noisy = Pipeline([cfg.augment_entries()[2]])(torch.from_numpy(speech), rng_for(0, 0)).numpy()
    assert abs(measured_snr(speech, noisy - speech) - 5.0) < 0.1
    with pytest.raises(ConfigError, match="prob: expected a probability"):
        from_dict(DataConfig, {"noise_scp": str(scp), "noise_prob": 2.0})


def test_dataset_prepares_rooms_once_before_workers_fork(corpus, monkeypatch, tmp_path):
    from xtrans.data.augment import reverb

    monkeypatch.setenv("XTRANS_CACHE_DIR", str(tmp_path))  # nothing simulated before
    calls = []
    original = reverb.simulate_rir
    monkeypatch.setattr(reverb, "simulate_rir", lambda *a, **k: calls.append(1) or original(*a, **k))
    reverb.room_bank.cache_clear()
    entries = [{"kind": "one_of", "of": [{"kind": "reverb", "rooms": 3, "rt60": [0.3, 0.5], "room_seed": 77}]}]
    ds = AsrDataset(corpus.train_dir, Tokenizer(corpus.tokenizer), augment=entries)
    assert len(calls) == 3  # simulated when the data set is made
    for i in range(len(ds)):
        ds[i]
    assert len(calls) == 3  # and never again (workers forked later share the cache)
