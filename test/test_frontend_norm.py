"""The streamable ``cumulative_norm`` front end: causal running statistics over conv-1 channels."""

import pytest
import torch

from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2 import StreamingNotSupportedError, Wav2Vec2Encoder
from xtrans.models.wav2vec2.frontend_norm import CumulativeChannelNorm, MaskedBatchNorm
from xtrans.models.wav2vec2.model import XLSR_CONV_LAYERS
from xtrans.models.wav2vec2.presets import mini, preset_kwargs


def small_encoder(mode: str = "cumulative_norm", **kw) -> Wav2Vec2Encoder:
    torch.manual_seed(0)
    conv = tuple((16, k, s) for _, k, s in XLSR_CONV_LAYERS)
    args = dict(conv_layers=conv, extractor_mode=mode, embed_dim=32, num_layers=2, num_heads=4,
                ffn_dim=64, pos_conv_kernel=16, pos_conv_groups=4, pos_conv="chunk", waveform_norm="none")
    args.update(kw)
    return Wav2Vec2Encoder(**args).eval()


def test_matches_loop_reference():
    torch.manual_seed(0)
    norm = CumulativeChannelNorm(3, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(2, 3, 17, dtype=torch.float64) * 3 + 1
    y = norm(x)
    for n in range(17):
        past = x[:, :, : n + 1]
        mean = past.mean(2)
        var = past.var(2, unbiased=False)
        ref = (x[:, :, n] - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
        torch.testing.assert_close(y[:, :, n], ref.to(y.dtype))


def test_chunks_equal_full_pass():
    torch.manual_seed(1)
    norm = CumulativeChannelNorm(8)
    x = torch.randn(3, 8, 100) * 0.1 + 0.3
    full = norm(x)
    state, pieces, start = norm.init_state(3), [], 0
    for size in (1, 7, 0, 30, 62):
        y, state = norm.forward_chunk(x[:, :, start:start + size], state)
        pieces.append(y)
        start += size
    torch.testing.assert_close(torch.cat(pieces, 2), full, rtol=1e-6, atol=1e-6)
    assert state.count.dtype == torch.float64 and float(state.count[0]) == 100
    assert state.total.shape == (3, 8, 1) and state.total_sq.shape == (3, 8, 1)


def test_bad_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"x: expected \(B, 4, N\)"):
        CumulativeChannelNorm(4)(torch.zeros(2, 5, 10))


def test_encoder_padding_invariant():
    enc = small_encoder()
    torch.manual_seed(2)
    a, b = torch.randn(8000) * 0.1, torch.randn(5000) * 0.3
    batch = torch.zeros(2, 8000)
    batch[0], batch[1, :5000] = a, b
    batch[1, 5000:] = 7.0  # garbage in the padding must not matter
    with torch.no_grad():
        out, lengths = enc(batch, torch.tensor([8000, 5000]))
        alone_b, len_b = enc(b[None], torch.tensor([5000]))
        alone_a, _ = enc(a[None], torch.tensor([8000]))
    T = int(len_b[0])
    torch.testing.assert_close(out[1, :T], alone_b[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0], alone_a[0], rtol=1e-5, atol=1e-5)
    assert torch.all(out[1, T:] == 0)


@pytest.mark.parametrize("mode", ["cumulative_norm", "layer_norm"])
def test_cnn_frames_do_not_read_the_future(mode):
    """Changing samples from ``cut`` on leaves every CNN frame that ends before ``cut`` unchanged."""
    enc = small_encoder(mode)
    torch.manual_seed(3)
    x = torch.randn(1, 16000) * 0.2
    cut = 9000
    y = x.clone()
    y[0, cut:] = torch.randn(16000 - cut) * 3.0
    lengths = torch.tensor([16000])
    with torch.no_grad():
        fx, _ = enc.feature_extractor(x, lengths)
        fy, _ = enc.feature_extractor(y, lengths)
    # frame k reads samples [320k, 320k + 400)
    last_past = (cut - 400) // 320
    torch.testing.assert_close(fx[:, : last_past + 1], fy[:, : last_past + 1], rtol=0, atol=0)
    assert not torch.allclose(fx[:, last_past + 1:], fy[:, last_past + 1:])


def test_group_norm_reads_the_future_but_cumulative_does_not():
    """The contrast that motivates the mode: wav2vec2-base's GroupNorm changes early frames."""
    torch.manual_seed(4)
    x = torch.randn(1, 8000) * 0.2
    y = x.clone()
    y[0, 6000:] *= 10
    lengths = torch.tensor([8000])
    outs = {}
    for mode in ("group_norm", "cumulative_norm"):
        enc = small_encoder(mode)
        with torch.no_grad():
            outs[mode] = (enc.feature_extractor(x, lengths)[0][:, :5], enc.feature_extractor(y, lengths)[0][:, :5])
    assert not torch.allclose(*outs["group_norm"])
    torch.testing.assert_close(*outs["cumulative_norm"], rtol=0, atol=0)


def test_masked_streaming_pass_ignores_future_chunks():
    """With a chunk mask, the whole encoder's frames of chunk c ignore samples after chunk c."""
    enc = small_encoder()
    cfg = StreamingConfig(chunk_size=4, left_context=8, num_sinks=1)
    enc.check_streaming(cfg)  # must not raise
    torch.manual_seed(5)
    x = torch.randn(1, 16000) * 0.2
    C = 4
    complete = 320 * 3 * C + 80  # samples that complete chunks 0..2
    y = x.clone()
    y[0, complete:] = torch.randn(16000 - complete)
    with torch.no_grad():
        ox, _ = enc(x, None, streaming=cfg)
        oy, _ = enc(y, None, streaming=cfg)
    torch.testing.assert_close(ox[:, : 3 * C], oy[:, : 3 * C], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(ox[:, 3 * C:], oy[:, 3 * C:])


def test_group_norm_still_refuses_streaming():
    with pytest.raises(StreamingNotSupportedError, match="group_norm"):
        small_encoder("group_norm").check_streaming(StreamingConfig(chunk_size=4))


def test_unknown_extractor_mode_names_the_choices():
    with pytest.raises(ValueError, match="cumulative_norm"):
        small_encoder("spectral_norm")


def test_mini_preset():
    kwargs = preset_kwargs("mini")
    assert kwargs["extractor_mode"] == "cumulative_norm"
    enc = mini()
    enc.check_streaming(StreamingConfig(chunk_size=16, left_context=32))
    assert isinstance(enc.feature_extractor.conv_layers[0].norm, CumulativeChannelNorm)
    assert all(layer.norm is None for layer in enc.feature_extractor.conv_layers[1:])
    with torch.no_grad():
        out, lengths = enc(torch.randn(1, 16000) * 0.1)
    assert out.shape == (1, 49, 192) and int(lengths[0]) == 49


@pytest.mark.parametrize("corpus_name", ["mini_synth", "fsdd"])
def test_mini_preset_is_what_the_demo_stages_use(corpus_name):
    """The demo confs' streamable settings are the preset's own; only the fitted, frozen
    batch_norm CNN (recipe stage 4), the regularisation and the depth (mini_synth trains 3 layers
    in its 15-minute budget) differ from it, and the depth is the same in every stage."""
    from pathlib import Path

    from xtrans.config import load_config
    from xtrans.train.config import TrainConfig

    confs = sorted((Path(__file__).resolve().parents[1] / "egs" / corpus_name / "asr1" / "conf")
                   .glob("train_stage*.yaml"))
    assert len(confs) == 11
    preset = preset_kwargs("mini")
    depths = set()
    for conf in confs:
        enc = load_config(conf, TrainConfig).model.encoder
        assert enc.preset == "mini", conf
        arch = preset_kwargs("mini", **enc.overrides())
        differ = {k for k in preset if arch[k] != preset[k]}
        assert differ <= {"extractor_mode", "dropout", "freeze_feature_extractor", "num_layers"}, (conf, differ)
        depths.add(arch["num_layers"])
    assert len(depths) == 1, depths


def test_batch_norm_training_statistics_skip_padding():
    torch.manual_seed(4)
    norm = MaskedBatchNorm(3).train()
    x = torch.randn(2, 3, 10) * 2 + 1
    x[1, :, 6:] = 50.0  # padding: must not enter the statistics
    y = norm(x, torch.tensor([10, 6]))
    valid = torch.cat([x[0], x[1, :, :6]], dim=1)  # (C, 16)
    mean, var = valid.mean(1), valid.var(1, unbiased=False)
    ref = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + 1e-5)
    torch.testing.assert_close(y[0], ref[0])
    torch.testing.assert_close(y[1, :, :6], ref[1, :, :6])
    torch.testing.assert_close(norm.running_mean, 0.1 * mean)
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * valid.var(1, unbiased=True))


def test_batch_norm_evaluation_is_a_fixed_per_position_map():
    norm = MaskedBatchNorm(2).eval()
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([1.0, -2.0]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25]))
    x = torch.randn(3, 2, 7)
    y = norm(x, torch.tensor([7, 3, 1]))
    ref = (x - norm.running_mean[None, :, None]) / torch.sqrt(norm.running_var[None, :, None] + 1e-5)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(norm(x[:, :, 2:5]), y[:, :, 2:5])  # no position reads another


def test_batch_norm_bad_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"x: expected \(B, 4, N\)"):
        MaskedBatchNorm(4)(torch.zeros(2, 5, 10))


def test_batch_norm_encoder_streams_exactly():
    """In evaluation, the batch_norm front end chunk by chunk equals the masked full pass."""
    from xtrans.streaming import StreamingEncoder
    enc = small_encoder("batch_norm").train()
    torch.manual_seed(5)
    with torch.no_grad():  # running statistics that differ from the init
        for _ in range(3):
            enc(torch.randn(2, 9000) * 0.3, torch.tensor([9000, 7000]))
    enc.eval()
    assert float(enc.feature_extractor.conv_layers[0].norm.running_var.sub(1).abs().max()) > 1e-3
    cfg = StreamingConfig(chunk_size=4, left_context=8, num_sinks=1)
    x = torch.randn(1, 20000) * 0.2
    with torch.no_grad():
        full, lengths = enc(x, None, streaming=cfg)
        streamer = StreamingEncoder(enc, cfg)
        state, pieces = streamer.init_state(1), []
        for start in range(0, 20000, 3333):
            frames, _, state = streamer.forward_chunk(x[:, start:start + 3333], state)
            pieces.append(frames)
        frames, _, state = streamer.finalize(state)
        pieces.append(frames)
    streamed = torch.cat(pieces, 1)
    assert streamed.shape[1] == int(lengths[0])
    torch.testing.assert_close(streamed, full, rtol=1e-5, atol=1e-5)
