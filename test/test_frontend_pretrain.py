"""Front-end pretraining (recipe stage 4 without pretrained weights): the log-mel target against a
float64 NumPy DFT, its framing against the CNN's, the fit itself (only the CNN changes and it learns),
the command-line tool's files, and a frozen CNN keeping its batch-norm statistics."""

import json

import numpy as np
import pytest
import torch

from xtrans.bin.pretrain_frontend import main as pretrain_main
from xtrans.data.kaldi_dir import read_data_dir
from xtrans.features import hz_to_mel, log_mel, mel_filterbank, mel_to_hz
from xtrans.models.arch import ModelArch, StatelessPredictorArch
from xtrans.models.config import build_model
from xtrans.models.wav2vec2.model import XLSR_CONV_LAYERS, Wav2Vec2Encoder, conv_output_lengths
from xtrans.models.wav2vec2.presets import preset_kwargs
from xtrans.testing.train_fixtures import make_tiny_corpus
from xtrans.train.checkpoint import load_init
from xtrans.train.frontend_pretrain import FrontendPretrainConfig, pretrain_frontend


def small_encoder(**overrides):
    torch.manual_seed(0)
    kw = preset_kwargs("mini", extractor_mode="batch_norm", pos_conv="none", waveform_norm="none",
                       conv_layers=tuple((16, k, s) for _, k, s in XLSR_CONV_LAYERS), embed_dim=32,
                       num_layers=1, num_heads=2, ffn_dim=64)
    kw.update(overrides)
    return Wav2Vec2Encoder(**kw)


def test_mel_filterbank_shape_and_triangles():
    fb = mel_filterbank(40, 400, 16000)
    assert fb.shape == (201, 40) and fb.dtype == torch.float32
    assert (fb >= 0).all() and fb.max() <= 1.0
    bins = np.arange(201) * 16000 / 400
    peaks = bins[fb.argmax(0).numpy()]
    centres = [mel_to_hz(hz_to_mel(20) + (hz_to_mel(8000) - hz_to_mel(20)) * (i + 1) / 41) for i in range(40)]
    assert np.all(np.abs(peaks - centres) <= 16000 / 400 / 2 + 1e-6)  # each filter peaks at its centre bin
    assert np.all(np.diff(peaks) >= 0)
    with pytest.raises(ValueError, match="f_min, f_max"):
        mel_filterbank(40, 400, 16000, f_max=9000)
    with pytest.raises(ValueError, match="n_mels and n_fft"):
        mel_filterbank(0, 400, 16000)


def test_log_mel_matches_numpy_dft_and_cnn_framing():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3000))
    got = log_mel(torch.tensor(x, dtype=torch.float32), n_mels=24, window=400, hop=320)
    n = np.arange(400)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 400)  # periodic Hann
    T = (3000 - 400) // 320 + 1
    frames = np.stack([x[:, t * 320:t * 320 + 400] * hann for t in range(T)], axis=1)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    want = np.log(power @ mel_filterbank(24, 400, 16000).double().numpy() + 1e-6)
    assert got.shape == (2, T, 24)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)
    lengths = torch.arange(400, 5000, 37)
    assert torch.equal(conv_output_lengths(lengths, XLSR_CONV_LAYERS), (lengths - 400) // 320 + 1)
    assert log_mel(torch.zeros(1, 399)).shape == (1, 0, 80)
    with pytest.raises(ValueError, match=r"expected \(B, S\)"):
        log_mel(torch.zeros(400))


def test_a_tone_peaks_in_its_mel_filter():
    t = np.arange(16000) / 16000
    for f in (300.0, 1000.0, 4000.0):
        feats = log_mel(torch.tensor(np.sin(2 * np.pi * f * t)[None], dtype=torch.float32), n_mels=40)
        best = int(feats[0].mean(0).argmax())
        centres = [mel_to_hz(hz_to_mel(20) + (hz_to_mel(8000) - hz_to_mel(20)) * (i + 1) / 41) for i in range(40)]
        assert abs(hz_to_mel(centres[best]) - hz_to_mel(f)) <= (hz_to_mel(8000) - hz_to_mel(20)) / 41


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("fp"), num_train=24, num_dev=6)


def test_pretraining_fits_only_the_cnn(corpus):
    torch.set_num_threads(1)
    encoder = small_encoder(freeze_feature_extractor=True,
                            conv_layers=tuple((32, k, s) for _, k, s in XLSR_CONV_LAYERS))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    cfg = FrontendPretrainConfig(train_dir=str(corpus.train_dir), max_seconds=4.0, num_buckets=1,
                                 max_updates=100, lr=3e-3, warmup_updates=5, n_mels=24, stats_batches=3)
    result = pretrain_frontend(encoder, read_data_dir(corpus.train_dir), cfg, dev=read_data_dir(corpus.dev_dir),
                               dev_batches=2)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 100 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])  # 1.0 = predicting the mean
    assert result.dev_loss is not None and result.dev_loss < 0.75
    after = encoder.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("feature_extractor.") for k in changed)
    assert any("running_mean" in k for k in changed)  # batch-norm statistics follow the data
    assert not any(q.requires_grad for q in encoder.feature_extractor.parameters())  # frozen again


def test_learning_rate_warms_up_then_follows_its_decay(corpus):
    torch.set_num_threads(1)
    cfg = FrontendPretrainConfig(train_dir=str(corpus.train_dir), max_seconds=4.0, num_buckets=1, max_updates=12,
                                 lr=1e-2, warmup_updates=4, decay="cosine", min_lr_ratio=0.1, n_mels=24,
                                 stats_batches=2)
    result = pretrain_frontend(small_encoder(), read_data_dir(corpus.train_dir), cfg)
    lrs = [h["lr"] for h in result.history]
    assert lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # linear warm-up to the peak
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))  # then down
    assert lrs[-1] == pytest.approx(1e-3)  # to min_lr_ratio at max_updates
    constant = FrontendPretrainConfig(max_updates=3, lr=1e-2, warmup_updates=0, stats_batches=1,
                                      train_dir=str(corpus.train_dir), max_seconds=4.0, num_buckets=1, n_mels=24)
    assert [h["lr"] for h in pretrain_frontend(small_encoder(), read_data_dir(corpus.train_dir), constant).history] \
        == [1e-2] * 3  # the default: constant after warm-up, as before
    with pytest.raises(ValueError, match="decay: expected one of"):
        FrontendPretrainConfig(decay="step")
    with pytest.raises(ValueError, match="min_lr_ratio"):
        FrontendPretrainConfig(min_lr_ratio=1.5)


def test_command_line_tool_writes_an_encoder_stage_1_loads(corpus, tmp_path, capsys):
    encoder = small_encoder()
    path = tmp_path / "encoder.pt"
    torch.save({"encoder": encoder.state_dict(), "arch": encoder.arch.to_dict(), "source": "random:test"}, path)
    conf = tmp_path / "pretrain_frontend.yaml"
    conf.write_text("max_seconds: 4.0\nnum_buckets: 1\nmax_updates: 5\nn_mels: 16\nstats_batches: 2\n")
    assert pretrain_main(["--config", str(conf), "--encoder", str(path), "--train_dir", str(corpus.train_dir),
                          "--dev_dir", str(corpus.dev_dir), "--set", "lr=0.002", "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "CNN fitted to 16 log-mel filters in 5 updates" in out and "dev" in out
    saved = torch.load(path, weights_only=True)
    assert saved["source"] == "random:test+frontend_logmel16:5"
    assert not torch.equal(saved["encoder"]["feature_extractor.conv_layers.0.conv.weight"],
                           encoder.state_dict()["feature_extractor.conv_layers.0.conv.weight"])
    report = json.loads((tmp_path / "frontend_pretrain.json").read_text())
    assert len(report["history"]) == 5 and report["config"]["lr"] == 0.002 and report["dev_loss"] > 0
    assert (tmp_path / "frontend_pretrain.png").stat().st_size > 1000
    fresh = small_encoder()
    model = build_model(ModelArch(encoder=fresh.arch, predictor=StatelessPredictorArch(embed_dim=8, context_size=2),
                                  vocab_size=10, joiner_dim=8))
    assert load_init(model, path) == "encoder"
    assert torch.equal(model.encoder.state_dict()["feature_extractor.conv_layers.0.conv.weight"],
                       saved["encoder"]["feature_extractor.conv_layers.0.conv.weight"])

    conf.write_text("max_update: 5\n")
    assert pretrain_main(["--config", str(conf), "--encoder", str(path), "--no_progress"]) == 2
    assert "max_update" in capsys.readouterr().err
    conf.write_text("max_updates: 0\n")
    assert pretrain_main(["--config", str(conf), "--encoder", str(path), "--no_progress"]) == 2
    assert "max_updates: expected >= 1" in capsys.readouterr().err
    torch.save({"model": {}}, tmp_path / "other.pt")
    conf.write_text("max_updates: 1\n")
    assert pretrain_main(["--config", str(conf), "--encoder", str(tmp_path / "other.pt"), "--no_progress"]) == 2
    assert "expected an encoder-only file" in capsys.readouterr().err


def test_frozen_cnn_keeps_its_batch_norm_statistics():
    encoder = small_encoder(freeze_feature_extractor=True).train()
    assert encoder.training and not encoder.feature_extractor.training
    stats = {k: v.clone() for k, v in encoder.feature_extractor.state_dict().items()}
    wave = torch.randn(2, 8000)
    out_train, _ = encoder(wave, torch.tensor([8000, 6000]))
    assert all(torch.equal(v, stats[k]) for k, v in encoder.feature_extractor.state_dict().items())
    out_eval, _ = encoder.eval()(wave, torch.tensor([8000, 6000]))
    torch.testing.assert_close(out_train, out_eval)
    unfrozen = small_encoder().train()
    assert unfrozen.feature_extractor.training
