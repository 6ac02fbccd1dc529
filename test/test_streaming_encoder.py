"""Real chunk-by-chunk streaming of the encoder equals the masked full-utterance pass.

Reference: ``Wav2Vec2Encoder.forward(waveform, lengths, streaming=cfg)`` (the masked pass used
in training); the streamed frames must match it within 1e-4 for every training-stage rule
(docs/streaming.md), speech (the tests' spoken digits) fed in pieces of irregular sizes, single
streams and batches of unequal lengths.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F

from xtrans.masks import StreamingConfig
from xtrans.models.wav2vec2 import StreamingNotSupportedError, tiny
from xtrans.streaming import EncoderState, StreamingEncoder

TOL = 1e-4

# the training stages of docs/streaming.md: (chunk, left, sinks)
STAGE_CONFIGS = [
    (16, None, 0), (32, None, 0), (64, None, 0), (128, None, 0),  # stage 2 a-d
    (32, 32, 0), (32, 64, 0),  # stage 3 a b (3c = stage 2b)
    (16, 64, 0), (64, 64, 0),  # stage 4 run at chunk 16 / 64 (32 = stage 3b)
    (32, 32, 4), (32, 32, 16),  # stage 5 a b
]


def make_encoder(pos_conv: str = "chunk", waveform_norm: str = "cumulative", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"waveform_norm": waveform_norm, "num_layers": 2, **kw}
    return tiny(pos_conv=pos_conv, **kw).eval()


def load_speech(root: Path, num_utts: int, offset: int = 0) -> torch.Tensor:
    """Recordings ``offset ..`` of the spoken digits (8 kHz) concatenated and upsampled 2x to 16 kHz, (S,) float32."""
    import soundfile as sf

    lines = (root / "wav.scp").read_text().split("\n")[offset:offset + num_utts]
    pieces = []
    for line in lines:
        _, rel = line.split(maxsplit=1)
        audio, rate = sf.read(str(root / rel), dtype="float32", always_2d=True)
        assert rate == 8000, rate
        pieces.append(torch.from_numpy(audio[:, 0]))
    wave = torch.cat(pieces)
    return F.interpolate(wave[None, None], scale_factor=2, mode="linear", align_corners=False)[0, 0]


@pytest.fixture(scope="module")
def speech(spoken_digits) -> torch.Tensor:
    """About 7 s of speech at 16 kHz (16 digits of one voice), (1, S)."""
    return load_speech(spoken_digits, 16)[None]


def random_pieces(total: int, rng: random.Random, low: int = 160, high: int = 40000) -> List[int]:
    """Piece sizes (log-uniform in [low, high]) covering ``total`` samples."""
    sizes, done = [], 0
    while done < total:
        n = min(total - done, int(round(low * (high / low) ** rng.random())))
        sizes.append(n)
        done += n
    return sizes


def stream(streamer: StreamingEncoder, wave: torch.Tensor, lengths: Optional[Sequence[int]] = None,
           seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, EncoderState]:
    """Feeds (B, S) in lockstep pieces of random sizes, each stream ending at its length."""
    B, S = wave.shape
    lengths = [S] * B if lengths is None else list(lengths)
    state = streamer.init_state(B)
    frames, counts, fed = [], torch.zeros(B, dtype=torch.long), 0
    for n in random_pieces(max(lengths), random.Random(seed)):
        new = [min(max(length - fed, 0), n) for length in lengths]
        y, c, state = streamer.forward_chunk(wave[:, fed:fed + n], state, lengths=new)
        if any(end is None for end in state.stream_ends):
            assert y.shape[1] % streamer.streaming.chunk_size == 0
        frames.append(y)
        counts += c
        fed += n
    y, c, state = streamer.finalize(state)
    frames.append(y)
    return torch.cat(frames, dim=1), counts + c, state


@pytest.mark.parametrize("pos_conv", ["chunk", "causal"])
@pytest.mark.parametrize("chunk,left,sinks", STAGE_CONFIGS)
def test_stream_equals_masked_full_pass(speech, pos_conv, chunk, left, sinks):
    encoder = make_encoder(pos_conv)
    cfg = StreamingConfig(chunk, left, sinks)
    with torch.no_grad():
        ref, ref_len = encoder(speech, streaming=cfg)
    out, counts, state = stream(StreamingEncoder(encoder, cfg), speech, seed=chunk + (left or 7) + sinks)
    assert out.shape == ref.shape
    assert counts.tolist() == ref_len.tolist()
    assert (out - ref).abs().max().item() <= TOL
    assert state.finished


@pytest.mark.parametrize("pos_conv,waveform_norm,extra", [
    ("none", "cumulative", {}),
    ("chunk", "none", {}),
    ("chunk", "cumulative", {"layer_norm_first": False}),  # post-LN layout
    ("causal", "none", {"extractor_mode": "cumulative_norm"}),  # running per-channel CNN norm
    ("causal", "none", {"extractor_mode": "batch_norm", "pos_conv_kernel": 16,  # the demo's layout:
                        "pos_conv_groups": 96, "freeze_feature_extractor": True}),  # depthwise, short
    ("causal", "cumulative", {"extractor_mode": "batch_norm", "pos_conv_kernel": 32,  # the level-invariant
                              "freeze_feature_extractor": True}),  # demo layout (waveform at any level)
])
@pytest.mark.parametrize("chunk,left,sinks", [(4, 6, 9), (8, 0, 0), (16, 16, 20)])
def test_other_layouts_and_edge_rules(speech, pos_conv, waveform_norm, extra, chunk, left, sinks):
    """Sinks spanning several chunks, left context not a multiple of the chunk, no left context."""
    encoder = make_encoder(pos_conv, waveform_norm, **extra)
    cfg = StreamingConfig(chunk, left, sinks)
    wave = speech[:, :40000]
    with torch.no_grad():
        ref, _ = encoder(wave, streaming=cfg)
    out, _, _ = stream(StreamingEncoder(encoder, cfg), wave, seed=3)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL


def test_the_comparison_discriminates(speech):
    """The reference really depends on the rule, so agreement within 1e-4 is meaningful."""
    encoder = make_encoder()
    wave = speech[:, :60000]
    with torch.no_grad():
        with_sinks, _ = encoder(wave, streaming=StreamingConfig(32, 32, 4))
        without, _ = encoder(wave, streaming=StreamingConfig(32, 32, 0))
        full, _ = encoder(wave, streaming=StreamingConfig(32, None, 0))
    assert (with_sinks - without).abs().max().item() > 100 * TOL
    assert (without - full).abs().max().item() > 100 * TOL


@pytest.mark.parametrize("pos_conv,extra", [
    ("chunk", {}), ("causal", {}),
    ("chunk", {"extractor_mode": "cumulative_norm", "waveform_norm": "none"}),
])
def test_batch_of_unequal_streams(spoken_digits, pos_conv, extra):
    """Streams ending at different times (one inside a piece, one shorter than a frame)."""
    encoder = make_encoder(pos_conv, **extra)
    cfg = StreamingConfig(16, 32, 4)
    waves = [load_speech(spoken_digits, 12, 40), load_speech(spoken_digits, 5, 80), load_speech(spoken_digits, 9, 120),
             torch.randn(350) * 0.1]  # three voices and a stream shorter than a frame
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for b, w in enumerate(waves):
        batch[b, :len(w)] = w
    with torch.no_grad():
        ref, ref_len = encoder(batch, lengths, streaming=cfg)
    out, counts, _ = stream(StreamingEncoder(encoder, cfg), batch, lengths.tolist(), seed=5)
    assert out.shape == ref.shape
    assert counts.tolist() == ref_len.tolist()
    assert ref_len[-1] == 0
    assert (out - ref).abs().max().item() <= TOL


def test_stream_ending_at_a_piece_boundary():
    encoder = make_encoder()
    cfg = StreamingConfig(8, 8, 2)
    torch.manual_seed(1)
    batch = torch.randn(2, 20000) * 0.1
    lengths = [12000, 20000]
    with torch.no_grad():
        ref, _ = encoder(batch, torch.tensor(lengths), streaming=cfg)
    streamer = StreamingEncoder(encoder, cfg)
    state = streamer.init_state(2)
    outs = []
    for start in range(0, 20000, 4000):  # stream 0 ends exactly after the third piece
        new = [min(max(n - start, 0), 4000) for n in lengths]
        y, _, state = streamer.forward_chunk(batch[:, start:start + 4000], state, lengths=new)
        outs.append(y)
    assert state.stream_ends == (12000, None)
    y, _, state = streamer.finalize(state)
    out = torch.cat(outs + [y], dim=1)
    assert (out - ref).abs().max().item() <= TOL


def test_chunk_is_emitted_once_its_last_frame_is_complete():
    """Chunk c needs samples up to 320 (c+1) C + 80: one sample less emits nothing."""
    encoder = make_encoder()
    C = 16
    streamer = StreamingEncoder(encoder, StreamingConfig(C, 16, 0))
    state = streamer.init_state(1)
    wave = torch.randn(1, 320 * 2 * C + 80) * 0.1
    need = 320 * C + 80
    y, _, state = streamer.forward_chunk(wave[:, :need - 1], state)
    assert y.shape == (1, 0, encoder.embed_dim)
    y, counts, state = streamer.forward_chunk(wave[:, need - 1:need], state)
    assert y.shape == (1, C, encoder.embed_dim) and counts.tolist() == [C]
    y, _, state = streamer.forward_chunk(wave[:, need:], state)
    assert y.shape == (1, C, encoder.embed_dim)
    assert state.num_frames == 2 * C and state.pending.shape[1] == 0


def test_state_is_bounded_for_bounded_left_context():
    encoder = make_encoder()
    C, L, S = 16, 32, 4
    streamer = StreamingEncoder(encoder, StreamingConfig(C, L, S))
    state = streamer.init_state(2)
    torch.manual_seed(2)
    cache_bytes, total_bytes = {}, []
    for second in range(60):
        _, _, state = streamer.forward_chunk(torch.randn(2, 16000) * 0.1, state)
        total_bytes.append(state.num_bytes())
        if second + 1 in (10, 60):
            caches = [state.pos_history] + [t for c in state.layers for t in (c.sink_keys, c.left_keys)]
            cache_bytes[second + 1] = sum(t.numel() for t in caches)
    assert state.num_frames > 2900
    H, Dh = encoder.layers[0].attention.num_heads, encoder.layers[0].attention.head_dim
    for cache in state.layers:
        assert cache.sink_keys.shape == cache.sink_values.shape == (2, H, S, Dh)
        assert cache.left_keys.shape == cache.left_values.shape == (2, H, L, Dh)
    assert state.pos_history.shape == (2, encoder.pos_conv.history, encoder.embed_dim)
    assert state.pending.shape[1] < C
    for (_, kernel, _), carry in zip(encoder.feature_extractor.conv_layers_spec, state.frontend.carries):
        assert carry.shape[2] < kernel
    assert cache_bytes[10] == cache_bytes[60]
    assert max(total_bytes[10:]) == max(total_bytes[:10])  # bounded from the first seconds on


def test_unlimited_left_context_cache_grows():
    encoder = make_encoder()
    streamer = StreamingEncoder(encoder, StreamingConfig(16, None, 0))
    state = streamer.init_state(1)
    for _ in range(3):
        _, _, state = streamer.forward_chunk(torch.randn(1, 16000) * 0.1, state)
    assert state.layers[0].left_keys.shape[2] == state.num_frames == 144


@pytest.mark.parametrize("kwargs,match", [
    ({"extractor_mode": "group_norm"}, "group_norm"),
    ({"waveform_norm": "utterance"}, "waveform_norm='utterance'"),
    ({"pos_conv": "full"}, "pos_conv='full'"),
])
def test_unstreamable_encoders_refuse(kwargs, match):
    kwargs = {"pos_conv": "chunk", "waveform_norm": "cumulative", **kwargs}
    encoder = tiny(**kwargs).eval()
    with pytest.raises(StreamingNotSupportedError, match=match):
        StreamingEncoder(encoder, StreamingConfig(32, 32, 4))


def test_full_attention_refuses():
    with pytest.raises(ValueError, match="chunk_size: expected a chunk size"):
        StreamingEncoder(make_encoder(), StreamingConfig(None, 32, 0))


def test_bad_inputs_refuse():
    encoder = make_encoder()
    streamer = StreamingEncoder(encoder, StreamingConfig(16, 16, 0))
    state = streamer.init_state(2)
    with pytest.raises(ValueError, match=r"samples: expected \(2, n\)"):
        streamer.forward_chunk(torch.zeros(3, 100), state)
    with pytest.raises(ValueError, match="lengths: expected 2 values"):
        streamer.forward_chunk(torch.zeros(2, 100), state, lengths=[100, 101])
    _, _, state = streamer.forward_chunk(torch.zeros(2, 100), state, lengths=[50, 100])
    with pytest.raises(ValueError, match="stream 0 has ended"):
        streamer.forward_chunk(torch.zeros(2, 100), state, lengths=[10, 100])
    encoder.train()
    with pytest.raises(ValueError, match="eval mode"):
        streamer.forward_chunk(torch.zeros(2, 100), state)


def test_float64_stream_is_exact(speech):
    """In float64 the streamed frames equal the masked full pass to rounding (~1e-14)."""
    encoder = make_encoder("chunk").double()
    cfg = StreamingConfig(32, 32, 4)
    wave = speech[:, :50000].double()
    with torch.no_grad():
        ref, _ = encoder(wave, streaming=cfg)
    out, _, _ = stream(StreamingEncoder(encoder, cfg), wave, seed=11)
    assert out.dtype == torch.float64
    assert (out - ref).abs().max().item() <= 1e-10
