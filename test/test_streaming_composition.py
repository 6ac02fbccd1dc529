"""Every time-mixing module of the encoder streams itself, and batched states join and split.

Each module's ``forward_chunk`` fed an utterance in pieces equals its ``forward`` on the whole
utterance; the streaming encoder only composes them. ``stack_states``/``split_states`` let
streams join and leave a batch: a stream's frames do not depend on the batch it ran in.
"""

from __future__ import annotations

import random

import pytest
import torch

from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2 import tiny
from xtrans.models.wav2vec2.model import PositionalConv, WaveformNorm
from xtrans.streaming import StreamingEncoder, flatten_state, split_states, stack_states, unflatten_state

TOL = 1e-5


def pieces(total: int, seed: int, low: int = 1, high: int = 900):
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < total:
        n = min(rng.randint(low, high), total - pos)
        out.append((pos, pos + n))
        pos += n
    return out


def test_waveform_norm_streams_itself():
    norm = WaveformNorm("cumulative")
    x = torch.randn(2, 5000) * 0.3
    full = norm(x, torch.tensor([5000, 5000]))
    state, outs = norm.init_state(2), []
    for a, b in pieces(5000, 0):
        y, state = norm.forward_chunk(x[:, a:b], state)
        outs.append(y)
    assert (torch.cat(outs, 1) - full).abs().max() <= TOL


@pytest.mark.parametrize("mode", ["layer_norm", "cumulative_norm", "batch_norm"])
def test_cnn_streams_itself(mode):
    torch.manual_seed(0)
    fe = tiny(extractor_mode=mode).feature_extractor.eval()
    x = torch.randn(2, 9000)
    with torch.no_grad():
        full, _ = fe(x, torch.tensor([9000, 9000]))
        state, outs = fe.init_state(2), []
        for a, b in pieces(9000, 1):
            y, state = fe.forward_chunk(x[:, a:b], state)
            outs.append(y)
    out = torch.cat(outs, 1)
    assert out.shape == full.shape and (out - full).abs().max() <= 1e-4
    assert all(layer.carry.shape[2] < layer_module.conv.kernel_size[0]
               for layer, layer_module in zip(state, fe.conv_layers))


@pytest.mark.parametrize("mode", ["chunk", "causal", "none"])
def test_positional_conv_streams_itself(mode):
    torch.manual_seed(0)
    pc = PositionalConv(embed_dim=32, kernel=16, groups=4, mode=mode)
    C, T = 6, 40
    x = torch.randn(2, T, 32)
    with torch.no_grad():
        full = pc(x, C)
        state, outs = pc.init_state(2), []
        for c in range(0, T, C):
            y, state = pc.forward_chunk(x[:, c:c + C], state)
            outs.append(y)
    assert (torch.cat(outs, 1) - full).abs().max() <= TOL
    assert state.history.shape == (2, pc.history, 32)


def test_full_positional_conv_refuses_to_stream():
    pc = PositionalConv(embed_dim=32, kernel=16, groups=4, mode="full")
    with pytest.raises(ValueError, match="pos_conv='full'"):
        pc.forward_chunk(torch.zeros(1, 4, 32), pc.init_state(1))


def run(streamer, state, wave, n_pieces: int):
    outs = []
    for piece in wave.chunk(n_pieces, dim=1):
        y, _, state = streamer.forward_chunk(piece, state)
        outs.append(y)
    return torch.cat(outs, 1), state


def test_stacked_streams_equal_streams_alone_and_split_back():
    torch.manual_seed(0)
    encoder = tiny(pos_conv="chunk").eval()
    cfg = StreamingConfig(8, 16, 2)
    streamer = StreamingEncoder(encoder, cfg)
    waves = torch.randn(3, 12800) * 0.1
    with torch.no_grad():
        alone = [run(streamer, streamer.init_state(1), waves[b:b + 1], 4)[1] for b in range(3)]
        # streams 0 and 1 go on together, then stream 2 (one chunk behind them) joins the batch
        _, s01 = run(streamer, stack_states(alone[:2]), waves[:2], 1)
        before = split_states(s01) + [alone[2]]
        more = torch.randn(3, 6400) * 0.1
        y, counts, joined = streamer.forward_chunk(more, stack_states(before))
        assert joined.frames.tolist() == [96, 96, 56] and counts.tolist() == [24, 24, 24]
        for b in range(3):
            ref, _, _ = streamer.forward_chunk(more[b:b + 1], before[b])
            assert (y[b:b + 1] - ref).abs().max() <= TOL
    parts = split_states(joined)
    assert [p.batch_size for p in parts] == [1, 1, 1]
    for b, part in enumerate(parts):
        for (name, t), (name2, u) in zip(flatten_state(part), flatten_state(joined)):
            assert name == name2 and torch.equal(t, u[b:b + 1])


def test_stack_refuses_streams_at_different_points():
    encoder = tiny(pos_conv="chunk").eval()
    streamer = StreamingEncoder(encoder, StreamingConfig(8, 16, 0))
    a = streamer.init_state(1)
    _, _, b = streamer.forward_chunk(torch.randn(1, 4000) * 0.1, streamer.init_state(1))
    with pytest.raises(ValueError, match="equal pending frames and CNN carries"):
        stack_states([a, b])
    with pytest.raises(ValueError, match="at least one"):
        stack_states([])


def test_flatten_names_are_stable_and_round_trip():
    encoder = tiny(pos_conv="chunk").eval()
    streamer = StreamingEncoder(encoder, StreamingConfig(8, 16, 2))
    _, _, state = streamer.forward_chunk(torch.randn(2, 6000) * 0.1, streamer.init_state(2))
    flat = flatten_state(state)
    names = [n for n, _ in flat]
    assert names[:3] == ["state.frontend.wave.count", "state.frontend.wave.total", "state.frontend.wave.total_sq"]
    assert "state.layers.1.left_keys" in names and "state.positional.history" in names
    assert len(names) == len(set(names))
    back = unflatten_state(state, [t.clone() for _, t in flat])
    assert back.num_frames == state.num_frames and back.stream_ends == state.stream_ends
    assert all(torch.equal(t, u) for (_, t), (_, u) in zip(flatten_state(back), flat))
    with pytest.raises(ValueError, match="expected"):
        unflatten_state(state, [t for _, t in flat][:-1])
