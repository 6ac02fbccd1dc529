"""The transducer end to end: shapes, padding, LSTM/stateless predictors, and overfitting."""

import math
import time

import pytest
import torch

from xtrans.masks import StreamingConfig
from xtrans.models.config import EncoderConfig, ModelConfig, PredictorConfig, build_model

TONES = {1: 400.0, 2: 900.0, 3: 1500.0, 4: 2300.0}


def tone_utterance(tokens, seed):
    """Each token is a 0.16 s tone of its own frequency with short silences: a learnable toy task."""
    g = torch.Generator().manual_seed(seed)
    pieces = [torch.zeros(800)]
    for tok in tokens:
        t = torch.arange(1600) / 16000
        pieces += [0.5 * torch.sin(2 * math.pi * TONES[tok] * t), torch.zeros(480)]
    wave = torch.cat(pieces)
    return wave + 0.01 * torch.randn(wave.shape, generator=g)


def tiny_model(predictor="stateless", ctc_weight=0.0, **enc):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(preset="tiny", conv_channels=32, embed_dim=64, num_layers=2,
                                            num_heads=4, ffn_dim=128, **enc),
                      predictor=PredictorConfig(kind=predictor, embed_dim=32, hidden_dim=32),
                      joiner_dim=48, ctc_weight=ctc_weight)
    return build_model(cfg, vocab_size=5)


def batch(utts):
    waves = [tone_utterance(toks, i) for i, toks in enumerate(utts)]
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    U = max(len(t) for t in utts)
    targets = torch.tensor([t + [1] * (U - len(t)) for t in utts])
    return padded, lengths, targets, torch.tensor([len(t) for t in utts])


@pytest.mark.parametrize("predictor", ["stateless", "lstm"])
def test_forward_shapes_and_padding_invariance(predictor):
    model = tiny_model(predictor, ctc_weight=0.3, pos_conv="chunk").eval()
    utts = [[1, 2, 3], [4, 1]]
    wave, lengths, targets, tlens = batch(utts)
    cfg = StreamingConfig(8, 8, 2)
    with torch.no_grad():
        out = model(wave, lengths, targets, tlens, streaming=cfg)
        alone = model(wave[1:, : lengths[1]], lengths[1:], targets[1:, :2], tlens[1:], streaming=cfg)
    assert out.rnnt.shape == (2,) and torch.isfinite(out.loss) and out.ctc is not None
    assert torch.allclose(out.rnnt[1], alone.rnnt[0], atol=1e-4)
    assert int(out.encoder_lengths[0]) == (int(lengths[0]) - 400) // 320 + 1


def test_rebuild_from_arch():
    model = tiny_model("lstm", ctc_weight=0.2)
    copy = build_model(model.arch)
    copy.load_state_dict(model.state_dict())
    wave, lengths, targets, tlens = batch([[1, 2]])
    model.eval(), copy.eval()
    with torch.no_grad():
        assert torch.equal(model(wave, lengths, targets, tlens).loss, copy(wave, lengths, targets, tlens).loss)


def test_tiny_transducer_overfits_in_seconds():
    model = tiny_model(pos_conv="chunk")
    utts = [[1, 2, 3], [4, 3], [2, 2, 4, 1], [3, 1], [4, 4, 2]]
    wave, lengths, targets, tlens = batch(utts)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    start, losses = time.time(), []
    for _ in range(100):
        out = model(wave, lengths, targets, tlens, streaming=StreamingConfig(8, 16))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    # well below the ~5 nats of a model that only learned label statistics: it learned the sequences
    assert losses[-1] < 1.0, losses[-1]
    assert time.time() - start < 120
