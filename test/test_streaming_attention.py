"""``streaming_attention`` equals dense masked SDPA, at a cost that never sees more than S + L + C keys.

Reference: ``F.scaled_dot_product_attention`` on each utterance cut to its length, under
``chunk_attention_mask`` (the rule of docs/streaming.md, True = may attend), in float64. Values and
gradients w.r.t. q, k, v must agree within 1e-6 on the valid query rows, over chunk sizes that
do not divide T, unequal lengths, L = 0, sinks inside and outside the window, C = None, L = None.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import xtrans.models.attention as attention
from xtrans.masks import StreamingConfig, chunk_attention_mask, key_padding_mask
from xtrans.models.attention import streaming_attention
from xtrans.models.wav2vec2 import tiny

TOL = 1e-6
H, DH = 3, 4


def reference(q, k, v, lengths, cfg):
    """Dense masked SDPA per utterance over its ``n`` valid frames; padded rows are zero."""
    out = torch.zeros_like(q)
    C, L, S = (None, None, 0) if cfg is None else (cfg.chunk_size, cfg.left_context, cfg.num_sinks)
    for b, n in enumerate(lengths.tolist()):
        if n:
            mask = chunk_attention_mask(n, C, L, S)  # (n, n)
            out[b, :, :n] = F.scaled_dot_product_attention(q[b, :, :n], k[b, :, :n], v[b, :, :n], attn_mask=mask)
    return out


def inputs(B, T, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, DH, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def check_against_reference(T, lengths, cfg, seed=0):
    q, k, v = inputs(len(lengths), T, seed)
    lengths = torch.tensor(lengths)
    valid = key_padding_mask(lengths, T)[:, None, :, None]  # (B, 1, T, 1) valid query rows
    weight = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)

    out = streaming_attention(q, k, v, lengths, cfg)
    assert out.shape == q.shape and out.dtype == torch.float64
    assert torch.isfinite(out).all()  # padded rows included
    grads = torch.autograd.grad((out * weight * valid).sum(), (q, k, v))

    ref = reference(q, k, v, lengths, cfg)
    ref_grads = torch.autograd.grad((ref * weight * valid).sum(), (q, k, v))
    assert (out - ref).masked_fill(~valid, 0).abs().max() <= TOL
    for name, g, r in zip("qkv", grads, ref_grads):
        assert (g - r).abs().max() <= TOL, name


# (chunk, left, sinks): C not dividing T, L = 0, sinks inside / outside the window, C / L = None
CONFIGS = [
    (3, 0, 0), (3, 0, 2), (5, 4, 0), (5, 4, 3), (4, 2, 1),  # sink 0 inside chunk 0's window only
    (7, 3, 9),  # more sinks than a chunk: partly inside, partly outside the window
    (6, 100, 2),  # left context longer than the utterance
    (1, 1, 1), (4, None, 0), (4, None, 2), (None, None, 0), (None, None, 3), (None, 5, 2),
]


@pytest.mark.parametrize("C,L,S", CONFIGS)
def test_equals_dense_masked_sdpa(C, L, S):
    check_against_reference(23, [23, 17, 9, 1], StreamingConfig(C, L, S))


@pytest.mark.parametrize("T", [1, 2, 31, 32, 33, 64, 100])
def test_lengths_around_chunk_borders(T):
    lengths = sorted({T, max(1, T - 1), max(1, T // 2), max(1, T - 32)}, reverse=True)
    check_against_reference(T, lengths, StreamingConfig(32, 64, 4), seed=T)


def test_full_attention_without_padding_and_none():
    check_against_reference(11, [11, 11], None)
    check_against_reference(11, [11, 4], None)


def test_utterance_of_no_frames_is_finite():
    for cfg in (None, StreamingConfig(4, 2, 1), StreamingConfig(4, None, 1)):
        check_against_reference(9, [9, 0], cfg)


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Records (Tq, Tk, dropout_p) of every SDPA call made through ``xtrans.models.attention``."""
    calls = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, dropout_p=0.0, **kw):
        calls.append((q.shape[-2], k.shape[-2], dropout_p, None if attn_mask is None else tuple(attn_mask.shape)))
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", recording)
    return calls


def test_bounded_left_context_sees_only_its_keys(sdpa_calls):
    """No SDPA call and no mask of the gather path is larger than C x (S + L + C) per chunk."""
    C, L, S, T = 8, 16, 4, 1000
    q, k, v = (t.detach().float() for t in inputs(2, T))
    streaming_attention(q, k, v, torch.tensor([T, 700]), StreamingConfig(C, L, S))
    assert sdpa_calls and all(tq == C and tk <= S + L + C and mask[-2:] == (C, tk)
                              for tq, tk, _, mask in sdpa_calls)


def test_encoder_layers_use_the_linear_path(sdpa_calls):
    """The encoder's layers attend each chunk to its S + L + C keys, and equal the dense mask."""
    torch.manual_seed(0)
    enc = tiny(pos_conv="chunk", waveform_norm="cumulative").double().eval()
    cfg = StreamingConfig(8, 16, 4)
    wave = torch.randn(2, 320 * 150 + 80, dtype=torch.float64)
    lengths = torch.tensor([wave.shape[1], 320 * 101])
    out, n = enc(wave, lengths, streaming=cfg)
    assert len(sdpa_calls) == len(enc.layers)
    assert all(tq == 8 and tk <= 4 + 16 + 8 for tq, tk, _, _ in sdpa_calls)

    def dense(q, k, v, plan, bias_gate=None, dropout_p=0.0):  # the encoder's attention before the gather path
        lengths, streaming = n, cfg  # every layer's attention: the rule written out, not the layers' plan
        T = q.shape[2]
        rule = chunk_attention_mask(T, streaming.chunk_size, streaming.left_context, streaming.num_sinks)
        valid = key_padding_mask(lengths, T)
        mask = (rule & valid[:, None, None, :]) | ~valid[:, None, :, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)

    import xtrans.models.wav2vec2.transformer as transformer
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformer, "planned_attention", dense)
        ref, m = enc(wave, lengths, streaming=cfg)
    assert torch.equal(n, m)
    assert (out - ref).abs().max() <= TOL


def test_dropout_reaches_attention_in_training_only(sdpa_calls):
    enc = tiny(pos_conv="chunk", waveform_norm="cumulative", attention_dropout=0.25)
    wave = torch.randn(1, 320 * 40 + 80)
    enc.train()(wave, streaming=StreamingConfig(8, 8, 2))
    enc.eval()(wave, streaming=StreamingConfig(8, 8, 2))
    assert [p for _, _, p, _ in sdpa_calls] == [0.25] * len(enc.layers) + [0.0] * len(enc.layers)


def test_dropout_in_gather_path_is_a_dropout():
    """With dropout the weights of every valid row are kept or zeroed and rescaled by 1/(1-p)."""
    T, p = 20, 0.5
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 1, T, DH, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 1, T, DH, generator=gen, dtype=torch.float64)
    cfg = StreamingConfig(4, 4, 1)
    lengths = torch.tensor([T])
    # one-hot values (D/H = T), so that out[i, j] is the weight of key j for query i
    qT, kT = F.pad(q, (0, T - DH)), F.pad(k, (0, T - DH))
    v = torch.eye(T, dtype=torch.float64)[None, None]
    plain = streaming_attention(qT, kT, v, lengths, cfg)
    torch.manual_seed(0)
    dropped = streaming_attention(qT, kT, v, lengths, cfg, dropout_p=p)
    kept = dropped != 0
    assert torch.allclose(dropped[kept], plain[kept] / (1 - p))
    assert 0 < kept.sum() < (plain != 0).sum()
    assert not dropped[plain == 0].any()  # a masked key stays masked


@pytest.mark.parametrize("q,k,v,lengths,match", [
    ((2, 3, 5), (2, 3, 5), (2, 3, 5), (2,), r"q: expected \(B, H, T, D/H\), found shape \(2, 3, 5\)"),
    ((2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 5, 4), (2,),
     r"k: expected the shape of q \(2, 3, 5, 4\), found \(2, 3, 6, 4\)"),
    ((2, 3, 5, 4), (2, 3, 5, 4), (2, 1, 5, 4), (2,), r"v: expected the shape of q"),
    ((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4), (3,), r"lengths: expected shape \(2,\), found \(3,\)"),
    ((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4), (2, 1), r"lengths: expected shape \(2,\), found \(2, 1\)"),
])
def test_bad_shapes_raise(q, k, v, lengths, match):
    with pytest.raises(ValueError, match=match):
        streaming_attention(torch.zeros(q), torch.zeros(k), torch.zeros(v), torch.ones(lengths, dtype=torch.long),
                            StreamingConfig(2, 2, 1))


def test_bad_lengths_and_config_raise():
    q = torch.zeros(2, 1, 5, 4)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\] \(T frames\), found \[6, 2\]"):
        streaming_attention(q, q, q, torch.tensor([6, 2]), StreamingConfig(2, 2))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\].*found \[5, -1\]"):
        streaming_attention(q, q, q, torch.tensor([5, -1]), None)
    with pytest.raises(ValueError, match="lengths: expected an integer tensor, found torch.float32"):
        streaming_attention(q, q, q, torch.tensor([5.0, 2.0]), None)
    with pytest.raises(TypeError, match="streaming: expected a StreamingConfig or None, found dict"):
        streaming_attention(q, q, q, torch.tensor([5, 2]), {"chunk_size": 2})


def test_all_configs_of_small_sizes():
    """Every (C, L, S) on a grid of small sizes, T = 13 with unequal lengths."""
    for C, L, S in itertools.product([1, 2, 5, 13, 20, None], [0, 1, 6, None], [0, 1, 7]):
        check_against_reference(13, [13, 12, 6], StreamingConfig(C, L, S), seed=C or 0)
