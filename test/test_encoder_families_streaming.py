"""Every streamable family obeys the streaming rule and streams exactly: HuBERT, WavLM, data2vec-audio.

The large layouts (layer-norm CNN) of the presets, shrunk to test size: the masked full pass shows
no future leak with ``pos_conv: chunk | causal`` (for data2vec at every layer of its positional conv
stack), and :class:`StreamingEncoder` fed random pieces equals the masked full pass, sinks included
with WavLM's relative position bias (cached keys keep their absolute frames). The bias itself is
checked against transformers' bucketing and against attention written out by hand.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from xtrans.masks import StreamingConfig, chunk_attention_mask, key_padding_mask
from xtrans.models.attention import RelativePositionBias, dense_attention, streaming_attention
from xtrans.models.wav2vec2 import presets
from xtrans.models.wav2vec2.model import PositionalConv
from xtrans.streaming import StreamingEncoder

TOL = 1e-4
TINY_CONV = tuple((32, k, s) for _, k, s in presets.XLSR_CONV_LAYERS)
FAMILIES = ["hubert_large", "wavlm_large", "data2vec_audio_large"]


def family_encoder(name: str, pos_conv: str, num_layers: int = 2, seed: int = 0) -> torch.nn.Module:
    """Preset ``name``'s layout at test size (D=64, 4 heads), streamable settings, every weight perturbed."""
    torch.manual_seed(seed)
    small = dict(conv_layers=TINY_CONV, embed_dim=64, num_layers=num_layers, num_heads=4, ffn_dim=128,
                 pos_conv=pos_conv, waveform_norm="cumulative")
    if not name.startswith("data2vec"):  # data2vec keeps its 5 layers of kernel 19, 16 groups
        small.update(pos_conv_kernel=16, pos_conv_groups=4)
    encoder = getattr(presets, name)(**small).eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return encoder


def speech_like(num: int, seed: int) -> torch.Tensor:
    """(num,) noise under a slow random envelope (bursts and pauses), so that chunks differ."""
    gen = torch.Generator().manual_seed(seed)
    envelope = torch.rand(num // 1600 + 2, generator=gen).repeat_interleave(1600)[:num]
    return 0.3 * envelope * torch.randn(num, generator=gen)


def test_family_layouts():
    wavlm, d2v = family_encoder("wavlm_large", "chunk"), family_encoder("data2vec_audio_large", "chunk")
    assert wavlm.rel_pos_bias is not None and wavlm.layers[1].attention.gated
    assert wavlm.feature_extractor.mode == "layer_norm" and wavlm.layer_norm_first
    assert (d2v.pos_conv.num_layers, d2v.pos_conv.kernel, d2v.pos_conv.norm) == (5, 19, "layer")
    assert d2v.pos_conv.history == 9 and not d2v.layer_norm_first


# --------------------------------------------------------------------------------------------
# the masked full pass: no future leak, per family


def chunk_future_starts(chunk_size: int, chunk: int) -> int:
    """First sample the frames of chunks <= ``chunk`` must not depend on (docs/streaming.md, "Frames")."""
    return 320 * (chunk + 1) * chunk_size + 80


CONFIGS = [StreamingConfig(8, 8), StreamingConfig(8, 16, 2), StreamingConfig(4, 0, 3), StreamingConfig(16, None, 4)]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("pos_conv", ["chunk", "causal"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"C{c.chunk_size}-L{c.left_context}-S{c.num_sinks}")
def test_no_future_leak(name, pos_conv, cfg):
    model = family_encoder(name, pos_conv, num_layers=3)
    g = torch.Generator().manual_seed(1)
    wave = speech_like(32000, seed=1)[None]
    with torch.no_grad():
        base, n = model(wave, streaming=cfg)
        last = int(n[0]) // cfg.chunk_size - 1
        for chunk in sorted({0, 1, last // 2, last - 1}):
            cut = chunk_future_starts(cfg.chunk_size, chunk)
            changed = wave.clone()
            changed[:, cut:] = torch.randn(1, wave.shape[1] - cut, generator=g) * 3
            out, _ = model(changed, streaming=cfg)
            done = (chunk + 1) * cfg.chunk_size
            assert (out[:, :done] - base[:, :done]).abs().max() <= 1e-5, chunk
            assert (out[:, done:] - base[:, done:]).abs().max() > 1e-3  # the change is seen later: the test can fail


@pytest.mark.parametrize("mode", ["chunk", "causal"])
def test_positional_conv_stack_hides_the_future_at_every_layer(mode):
    """data2vec's stack: frames of chunk c never depend on a frame after it; the full mode does (the test can fail)."""
    torch.manual_seed(0)
    stacks = {m: PositionalConv(embed_dim=16, kernel=5, groups=4, mode=m, num_layers=3, norm="layer")
              for m in (mode, "full")}
    stacks["full"].load_state_dict(stacks[mode].state_dict())
    C, T = 6, 36
    x = torch.randn(1, T, 16)
    with torch.no_grad():
        for c in range(T // C - 1):
            end = (c + 1) * C
            changed = x.clone()
            changed[:, end:] += torch.randn(1, T - end, 16)
            assert (stacks[mode](changed, C)[:, :end] - stacks[mode](x, C)[:, :end]).abs().max() <= 1e-6
            # the original stack reaches 3 layers x 2 frames ahead
            assert (stacks["full"](changed, C)[:, end - 6:end] - stacks["full"](x, C)[:, end - 6:end]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["chunk", "causal", "none"])
def test_positional_conv_stack_streams_itself(mode):
    """forward_chunk over whole chunks equals forward, with an utterance ending inside the last chunk."""
    torch.manual_seed(0)
    pc = PositionalConv(embed_dim=16, kernel=5, groups=4, mode=mode, num_layers=3, norm="layer")
    C, T, lengths = 6, 40, torch.tensor([40, 27])
    x = torch.randn(2, T, 16) * key_padding_mask(lengths, T)[:, :, None]
    with torch.no_grad():
        full = pc(x, C, lengths)
        state, outs = pc.init_state(2), []
        for c in range(0, T, C):
            valid = torch.arange(c, min(c + C, T))[None, :] < lengths[:, None]
            y, state = pc.forward_chunk(x[:, c:c + C], state, valid)
            outs.append(y)
    out = torch.cat(outs, 1)
    for b, n in enumerate(lengths.tolist()):
        assert (out[b, :n] - full[b, :n]).abs().max() <= 1e-5
    assert len(state.inner) == 2 and all(h.shape == (2, pc.history, 16) for h in (state.history, *state.inner))


# --------------------------------------------------------------------------------------------
# streaming equals the masked full pass


def stream(streamer: StreamingEncoder, wave: torch.Tensor, lengths, seed: int) -> torch.Tensor:
    """Feeds (B, S) in lockstep pieces of random sizes, each stream ending at its length."""
    rng = random.Random(seed)
    state = streamer.init_state(wave.shape[0])
    frames, fed = [], 0
    while fed < max(lengths):
        n = rng.randint(100, 12000)
        y, _, state = streamer.forward_chunk(wave[:, fed:fed + n], state,
                                             lengths=[min(max(length - fed, 0), n) for length in lengths])
        frames.append(y)
        fed += n
    y, _, state = streamer.finalize(state)
    return torch.cat(frames + [y], dim=1)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("pos_conv", ["chunk", "causal"])
@pytest.mark.parametrize("chunk,left,sinks", [(8, 16, 4), (4, 6, 9), (16, None, 0), (32, 32, 16)])
def test_stream_equals_masked_full_pass(name, pos_conv, chunk, left, sinks):
    encoder = family_encoder(name, pos_conv)
    cfg = StreamingConfig(chunk, left, sinks)
    lengths = [40000, 23333]
    wave = torch.stack([speech_like(40000, seed=2), speech_like(40000, seed=3)])
    wave[1, lengths[1]:] = 0
    with torch.no_grad():
        ref, ref_len = encoder(wave, torch.tensor(lengths), streaming=cfg)
    out = stream(StreamingEncoder(encoder, cfg), wave, lengths, seed=chunk + sinks)
    assert out.shape == ref.shape and ref_len.tolist() == [(n - 400) // 320 + 1 for n in lengths]
    assert (out - ref).abs().max().item() <= TOL


def test_the_bias_and_the_sinks_matter():
    """WavLM's bias changes the output, and so do sinks under it: agreement within 1e-4 is meaningful."""
    encoder = family_encoder("wavlm_large", "chunk")
    wave = speech_like(30000, seed=4)[None]
    cfg = StreamingConfig(8, 8, 4)
    with torch.no_grad():
        with_bias, _ = encoder(wave, streaming=cfg)
        without_sinks, _ = encoder(wave, streaming=StreamingConfig(8, 8, 0))
        encoder.rel_pos_bias.embedding.weight.zero_()
        without_bias, _ = encoder(wave, streaming=cfg)
    assert (with_bias - without_bias).abs().max().item() > 100 * TOL
    assert (with_bias - without_sinks).abs().max().item() > 100 * TOL


# --------------------------------------------------------------------------------------------
# the relative position bias


def test_buckets_equal_transformers_wavlm():
    transformers = pytest.importorskip("transformers")
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    for buckets, distance in [(320, 800), (32, 64), (12, 20)]:
        theirs = WavLMAttention(embed_dim=8, num_heads=2, num_buckets=buckets, max_distance=distance)
        ours = RelativePositionBias(num_heads=2, num_buckets=buckets, max_distance=distance)
        relative = torch.arange(-3000, 3001)
        assert torch.equal(ours.buckets(relative), theirs._relative_positions_bucket(relative))
        assert int(ours.buckets(relative).max()) == buckets - 1
    assert transformers is not None


@pytest.mark.parametrize("cfg", [None, StreamingConfig(4, 8, 3), StreamingConfig(4, None, 0), StreamingConfig(5, 0, 6)],
                         ids=str)
def test_biased_attention_equals_attention_written_out(cfg):
    """softmax(q k^T / sqrt(d) + gate * bias(key - query), masked by the rule) v, on every valid query row."""
    torch.manual_seed(0)
    B, H, T, Dh = 2, 3, 23, 8
    q, k, v = (torch.randn(B, H, T, Dh, dtype=torch.float64) for _ in range(3))
    lengths = torch.tensor([23, 14])
    bias = RelativePositionBias(num_heads=H, num_buckets=16, max_distance=20).double()
    with torch.no_grad():
        bias.embedding.weight.normal_()
    gate = 1 + torch.rand(B, H, T, dtype=torch.float64)
    frames = torch.arange(T)
    allowed = key_padding_mask(lengths, T)[:, None, None, :]  # (B, 1, 1, T)
    if cfg is not None:
        allowed = allowed & chunk_attention_mask(T, cfg.chunk_size, cfg.left_context, cfg.num_sinks)
    with torch.no_grad():
        scores = q @ k.transpose(-1, -2) / math.sqrt(Dh) + gate[..., None] * bias(frames[None, :] - frames[:, None])
        ref = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
        out = streaming_attention(q, k, v, lengths, cfg, position_bias=bias, bias_gate=gate)
        dense = dense_attention(q, k, v, lengths, cfg, position_bias=bias, bias_gate=gate)
    for b, n in enumerate(lengths.tolist()):
        assert (out[b, :, :n] - ref[b, :, :n]).abs().max().item() <= 1e-10
        assert (dense[b, :, :n] - ref[b, :, :n]).abs().max().item() <= 1e-10
