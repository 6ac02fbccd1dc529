"""The streaming rule: hand-drawn masks, properties over random configurations, helpers."""

import random

import pytest
import torch

from xtrans.masks import StreamingConfig, chunk_attention_mask, frames_to_ms, ms_to_frames
from xtrans.train.multichunk import MultiChunkConfig, MultiChunkSampler, sample_configs


def picture(rows):
    """Rows of 'x'/'.' -> BoolTensor."""
    return torch.tensor([[c == "x" for c in r.replace(" ", "")] for r in rows])


def test_design_md_picture():
    # T=8, C=2, L=2, S=1 exactly as drawn in docs/streaming.md and xtrans/masks.py
    expected = picture([
        "x x . . . . . .",
        "x x . . . . . .",
        "x x x x . . . .",
        "x x x x . . . .",
        "x . x x x x . .",
        "x . x x x x . .",
        "x . . . x x x x",
        "x . . . x x x x",
    ])
    assert torch.equal(chunk_attention_mask(8, chunk_size=2, left_context=2, num_sinks=1), expected)


def test_full_attention_and_unlimited_left():
    assert chunk_attention_mask(5).all()
    expected = picture([
        "x x x . . . .",
        "x x x . . . .",
        "x x x . . . .",
        "x x x x x x .",
        "x x x x x x .",
        "x x x x x x .",
        "x x x x x x x",
    ])
    assert torch.equal(chunk_attention_mask(7, chunk_size=3), expected)


def test_no_left_context_and_sinks_inside_chunk():
    expected = picture([
        "x x x . . .",
        "x x x . . .",
        "x x x . . .",
        "x x . x x x",
        "x x . x x x",
        "x x . x x x",
    ])
    assert torch.equal(chunk_attention_mask(6, chunk_size=3, left_context=0, num_sinks=2), expected)
    # a short last chunk: T not a multiple of C
    expected = picture([
        "x x . . .",
        "x x . . .",
        ". . x x .",
        ". . x x .",
        ". . . . x",
    ])
    assert torch.equal(chunk_attention_mask(5, chunk_size=2, left_context=0), expected)


@pytest.mark.parametrize("seed", range(40))
def test_rule_holds_for_random_configurations(seed):
    rng = random.Random(seed)
    T = rng.randint(1, 70)
    C = rng.choice([None, rng.randint(1, 20)])
    L = rng.choice([None, rng.randint(0, 40)])
    S = rng.randint(0, 6)
    mask = chunk_attention_mask(T, C, L, S)
    assert mask.shape == (T, T) and mask.dtype == torch.bool
    for i in range(T):
        c = 0 if C is None else i // C
        end = T if C is None else (c + 1) * C
        start = 0 if C is None else c * C
        for j in range(T):
            allowed = j < end and (L is None or j >= start - L or j < S)
            assert bool(mask[i, j]) == allowed, (T, C, L, S, i, j)
    # properties: every query sees its own chunk; nobody sees the future of its chunk;
    # queries of one chunk share one row
    assert mask.diagonal().all()
    if C is not None:
        for i in range(T):
            assert torch.equal(mask[i], mask[(i // C) * C])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_attention_mask(4, chunk_size=0)
    with pytest.raises(ValueError, match="left_context"):
        chunk_attention_mask(4, chunk_size=2, left_context=-1)
    with pytest.raises(ValueError, match="num_sinks"):
        chunk_attention_mask(4, num_sinks=-2)
    with pytest.raises(ValueError, match="num_frames"):
        chunk_attention_mask(-1)


def test_ms_frames_helpers():
    assert ms_to_frames(640) == 32 and ms_to_frames(320) == 16 and ms_to_frames(None) is None
    assert frames_to_ms(128) == 2560
    assert StreamingConfig.from_ms(640, 1280, 4) == StreamingConfig(32, 64, 4)
    with pytest.raises(ValueError, match="multiple of 20 ms"):
        ms_to_frames(650)
    assert StreamingConfig(32, 32, 4).describe() == "chunk 640 ms, left 640 ms, sinks 4"


def test_multi_chunk_sampler_is_deterministic_and_varied():
    cfg = MultiChunkConfig(chunk_sizes=(16, 32, 64), left_context=64)
    draws = [c.chunk_size for c in sample_configs(cfg, 50, seed=3)]
    assert set(draws) == {16, 32, 64}
    assert draws == [c.chunk_size for c in sample_configs(cfg, 50, seed=3)]
    assert draws != [c.chunk_size for c in sample_configs(cfg, 50, seed=4)]
    # resume: a restored sampler continues with the same draws
    a = MultiChunkSampler(cfg, seed=7)
    for _ in range(10):
        a.draw()
    b = MultiChunkSampler(cfg, seed=0)
    b.load_state_dict(a.state_dict())
    assert [a.draw() for _ in range(5)] == [b.draw() for _ in range(5)]


def test_multi_chunk_range_probabilities_and_full_share():
    cfg = MultiChunkConfig(chunk_sizes=None, chunk_range=(16, 64), full_context_prob=0.25, left_context=64)
    draws = sample_configs(cfg, 400, seed=0)
    full = sum(d.chunk_size is None for d in draws)
    assert 60 < full < 140
    sizes = {d.chunk_size for d in draws if d.chunk_size is not None}
    assert min(sizes) >= 16 and max(sizes) <= 64 and len(sizes) > 20
    weighted = MultiChunkConfig(chunk_sizes=(16, 32), probabilities=(0.0, 1.0))
    assert {d.chunk_size for d in sample_configs(weighted, 30)} == {32}
    with pytest.raises(ValueError, match="exactly one"):
        MultiChunkConfig(chunk_sizes=(16,), chunk_range=(16, 32))
    with pytest.raises(ValueError, match="probabilities"):
        MultiChunkConfig(chunk_sizes=(16, 32), probabilities=(1.0,))
