"""The mask and WavLM's relative position bias are made once per pass and once per chunk, not per layer.

Counted on a 3-layer tiny WavLM: one bias lookup (bucketing + embedding) and one chunk key mask
per full pass, whatever the number of layers, on the gather path and the dense path; one of each
per streamed chunk. The results are those of the per-layer computation: streaming equals the
masked full pass, and each layer's attention equals :func:`streaming_attention` under the same
bias and the layer's own gate.
"""

from __future__ import annotations

import pytest
import torch

import xtrans.models.attention as attention
from xtrans.masks import StreamingConfig
from xtrans.models.attention import RelativePositionBias, attention_plan, streaming_attention
from xtrans.models.wav2vec2 import presets
from xtrans.streaming import StreamingEncoder

LAYERS = 3


def wavlm(seed: int = 0):
    torch.manual_seed(seed)
    encoder = presets.tiny(num_layers=LAYERS, rel_pos_buckets=16, rel_pos_max_distance=40, rel_pos_gated=True,
                           pos_conv="chunk", waveform_norm="cumulative").double().eval()
    with torch.no_grad():
        encoder.rel_pos_bias.embedding.weight.normal_()
        for layer in encoder.layers:
            layer.attention.gru_rel_pos_const.uniform_(0.5, 1.5)
    return encoder


@pytest.fixture
def counts(monkeypatch):
    """Calls of the bias lookup and of the chunk key mask, by anything in the process."""
    calls = {"bias": 0, "mask": 0}
    lookup, key_mask = RelativePositionBias.forward, attention.chunk_key_mask

    def counted_lookup(self, relative):
        calls["bias"] += 1
        return lookup(self, relative)

    def counted_mask(*args, **kwargs):
        calls["mask"] += 1
        return key_mask(*args, **kwargs)

    monkeypatch.setattr(RelativePositionBias, "forward", counted_lookup)
    monkeypatch.setattr(attention, "chunk_key_mask", counted_mask)
    return calls


@pytest.mark.parametrize("cfg, masks", [(StreamingConfig(8, 16, 2), 1), (StreamingConfig(8, None, 0), 0), (None, 0)],
                         ids=["gather", "unlimited-left", "full"])
def test_one_bias_and_one_mask_per_full_pass(counts, cfg, masks):
    encoder = wavlm()
    wave = torch.randn(2, 320 * 50 + 80, dtype=torch.float64)
    with torch.no_grad():
        encoder(wave, torch.tensor([wave.shape[1], 320 * 31]), streaming=cfg)
    assert counts == {"bias": 1, "mask": masks}


def test_one_bias_and_one_mask_per_streamed_chunk(counts):
    encoder = wavlm()
    cfg = StreamingConfig(8, 16, 2)
    wave = torch.randn(1, 320 * 8 * 5 + 80, dtype=torch.float64)
    with torch.no_grad():
        ref, _ = encoder(wave, streaming=cfg)
        counts.update(bias=0, mask=0)
        streamer = StreamingEncoder(encoder, cfg)
        frames, _, state = streamer.forward_chunk(wave, streamer.init_state(1))
        last, _, _ = streamer.finalize(state)
    out = torch.cat([frames, last], dim=1)
    chunks = -(-ref.shape[1] // 8)
    assert counts == {"bias": chunks, "mask": chunks}
    assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-10


@pytest.mark.parametrize("cfg", [StreamingConfig(4, 8, 3), StreamingConfig(4, None, 0), None], ids=str)
def test_a_layer_under_the_shared_plan_equals_its_own_biased_attention(cfg):
    """Each layer's gate over the one plan's bias = streaming_attention with the bias module and that gate."""
    encoder = wavlm()
    B, T = 2, 23
    lengths = torch.tensor([23, 14])
    x = torch.randn(B, T, encoder.embed_dim, dtype=torch.float64)
    plan = attention_plan(lengths, T, cfg, encoder.rel_pos_bias)
    with torch.no_grad():
        for layer in encoder.layers:
            attn = layer.attention
            q = attn.split_heads(attn.q_proj(x))
            k, v = attn.project_kv(x)
            alone = attn.merge_heads(streaming_attention(q, k, v, lengths, cfg, position_bias=encoder.rel_pos_bias,
                                                         bias_gate=attn.bias_gate(x)))
            shared = attn(x, plan)
            for b, n in enumerate(lengths.tolist()):
                assert torch.equal(shared[b, :n], alone[b, :n])
