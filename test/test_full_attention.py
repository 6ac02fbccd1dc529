"""One definition of full attention: ``chunk_size=None``, whatever the left context and sinks.

With ``C = None`` the whole utterance is one chunk (docs/streaming.md, "The rule"): the left
context only restricts keys before a chunk's start and the sinks only add keys, so every
frame attends every frame. Every part of the project must agree.
"""

import pytest
import torch

from xtrans.masks import StreamingConfig, chunk_attention_mask
from xtrans.models.attention import dense_attention_mask, streaming_attention
from xtrans.models.wav2vec2 import StreamingNotSupportedError, tiny, wav2vec2_base
from xtrans.streaming.encoder import StreamingEncoder
from xtrans.train.config import MaskConfig

FULL = [StreamingConfig(), StreamingConfig(None, None, 4), StreamingConfig(None, 0, 0),
        StreamingConfig(None, 8, 2), StreamingConfig(None, 0, 16)]
STREAMING = [StreamingConfig(16), StreamingConfig(16, None, 4), StreamingConfig(1, 0, 0),
             StreamingConfig(1000, None, 0)]


def label(cfg: StreamingConfig) -> str:
    return f"C{cfg.chunk_size}-L{cfg.left_context}-S{cfg.num_sinks}"


@pytest.mark.parametrize("cfg", FULL, ids=label)
def test_chunk_none_is_full_whatever_the_sinks_and_left_context(cfg):
    assert cfg.is_full
    assert cfg.describe() == "full attention"
    for T in (0, 1, 5, 23):
        assert chunk_attention_mask(T, cfg.chunk_size, cfg.left_context, cfg.num_sinks).all()
    assert MaskConfig(cfg.chunk_size, cfg.left_context, cfg.num_sinks).fixed() is None


@pytest.mark.parametrize("cfg", STREAMING, ids=label)
def test_a_chunk_size_is_never_full(cfg):
    assert not cfg.is_full
    assert cfg.describe() != "full attention"
    assert MaskConfig(cfg.chunk_size, cfg.left_context, cfg.num_sinks).fixed() == cfg


def test_the_sink_mask_of_the_issue_is_all_true():
    mask = chunk_attention_mask(40, None, None, 4)
    assert mask.shape == (40, 40) and mask.dtype == torch.bool and mask.all()


@pytest.mark.parametrize("cfg", FULL, ids=label)
def test_attention_treats_full_configs_as_no_config(cfg):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 4, generator=g) for _ in range(3))
    lengths = torch.tensor([9, 6])
    assert torch.equal(dense_attention_mask(lengths, 9, cfg), dense_attention_mask(lengths, 9, None))
    assert dense_attention_mask(torch.tensor([9, 9]), 9, cfg) is None
    assert torch.equal(streaming_attention(q, k, v, lengths, cfg), streaming_attention(q, k, v, lengths, None))


@pytest.mark.parametrize("cfg", FULL, ids=label)
def test_full_pos_conv_encoder_accepts_full_configs_and_matches_none(cfg):
    torch.manual_seed(0)
    model = tiny(pos_conv="full", waveform_norm="utterance", num_layers=2).eval()
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(2, 12000, generator=g)
    lengths = torch.tensor([12000, 9000])
    with torch.no_grad():
        ref, ref_n = model(wave, lengths, streaming=None)
        out, n = model(wave, lengths, streaming=cfg)
    assert torch.equal(n, ref_n)
    assert torch.equal(out, ref)
    model.check_streaming(cfg)  # no error


def test_full_configs_accepted_by_every_layout_streaming_ones_refused():
    base = wav2vec2_base(num_layers=1, embed_dim=32, num_heads=2, ffn_dim=32)  # group norm, pos_conv full
    wave = torch.randn(1, 8000)
    base(wave, streaming=StreamingConfig(None, None, 4))
    with pytest.raises(StreamingNotSupportedError, match="group_norm"):
        base(wave, streaming=StreamingConfig(16, None, 4))
    with pytest.raises(StreamingNotSupportedError, match="pos_conv='full'"):
        tiny(pos_conv="full")(wave, streaming=StreamingConfig(16, None, 4))


def test_real_streaming_needs_a_chunk_size():
    with pytest.raises(ValueError, match="streaming.chunk_size: expected a chunk size"):
        StreamingEncoder(tiny(pos_conv="chunk"), StreamingConfig(None, None, 4))
