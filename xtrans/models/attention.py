"""Self-attention under the streaming rule, at a cost linear in ``T`` for bounded left context.

The rule (docs/streaming.md, :mod:`xtrans.masks`): with chunk size ``C``, left context ``L`` and ``S``
sink frames, query frame ``i`` in chunk ``c = i // C`` may attend key ``j`` exactly when::

    j < (c + 1) * C    and    ( j >= c * C - L    or    j < S )

and never a key past its utterance's length. The dense way builds this as a (T, T) mask for
``torch.nn.functional.scaled_dot_product_attention``: time and memory grow with ``T^2`` although
each query sees at most ``S + L + C`` keys. For bounded ``L`` :func:`streaming_attention`
instead attends every chunk to its own keys only, the same key set the streaming encoder
(:mod:`xtrans.streaming.encoder`) caches::

    keys of chunk c = [sinks 0..S-1 not already in the window] + [frames cC-L .. cC-1] + [chunk]

    T=8, C=2, L=2, S=1      dense (T, T) mask             gathered per chunk (K = S + L + C = 5)
                      key   0 1 2 3 4 5 6 7           key   sink | window     (- = before frame 0,
                q=0,1       x x . . . . . .        c=0      .    | - - 0 1      . = masked)
                q=2,3       x x x x . . . .        c=1      .    | 0 1 2 3
                q=4,5       x . x x x x . .        c=2      0    | 2 3 4 5
                q=6,7       x . . . x x x x        c=3      0    | 4 5 6 7

Each chunk is one small batch element of SDPA with a (C, S + L + C) mask (True = may attend):
time and memory are ``O(T (S + L + C))``. Full attention (``chunk_size=None``) and unlimited
left context keep the dense SDPA call, with a mask only where one is needed.

Nothing of this depends on the layer: the mask (and WavLM's relative position bias, which depends
on ``key - query`` only) is an :class:`AttentionPlan`, made once per pass (:func:`attention_plan`)
or once per streamed chunk (:meth:`AttentionCache.plan`) and handed to every layer, which applies
it with :func:`planned_attention` (scaling the bias by its own gate).

FlexAttention (``torch.nn.attention.flex_attention`` with a block mask) could serve the same rule
on CUDA; it is not used: no GPU was available to measure it against this gather path, and on
CPU it needs ``torch.compile``. Reference: Kumar et al., "XLSR-Transducer: Streaming ASR for
Self-Supervised Pretrained Models", ICASSP 2025.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import StreamingConfig, chunk_attention_mask, key_padding_mask


def dense_attention_mask(lengths: torch.Tensor, num_frames: int,
                         streaming: Optional[StreamingConfig]) -> Optional[torch.Tensor]:
    """The streaming rule combined with key padding, as a mask for SDPA (True = may attend).

    Args:
        lengths: (B,) valid frames per utterance.
        num_frames: ``T``.
        streaming: the rule; ``None`` or ``chunk_size=None`` = full attention (sinks and left
            context change nothing then: the whole utterance is one chunk).

    Returns:
        ``None`` when every frame may see every frame; (B, 1, 1, T) for full attention over a
        padded batch (key padding only; an utterance of 0 frames sees every key, so that no row
        is empty); else (B, 1, T, T), where the rows of padded query frames see every key (their
        output is discarded).
    """
    valid = key_padding_mask(lengths, num_frames)  # (B, T)
    if streaming is None or streaming.is_full:
        if bool(valid.all()):
            return None
        return (valid | (lengths == 0)[:, None])[:, None, None, :]  # (B, 1, 1, T)
    rule = chunk_attention_mask(num_frames, streaming.chunk_size, streaming.left_context,
                                streaming.num_sinks, device=lengths.device)  # (T, T)
    return (rule[None, None] & valid[:, None, None, :]) | ~valid[:, None, :, None]  # (B, 1, T, T)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                  streaming: Optional[StreamingConfig]) -> None:
    if q.dim() != 4:
        raise ValueError(f"q: expected (B, H, T, D/H), found shape {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name}: expected the shape of q {tuple(q.shape)}, found {tuple(t.shape)}")
    B, _, T, _ = q.shape
    if lengths.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), found {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise ValueError(f"lengths: expected an integer tensor, found {lengths.dtype}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths: expected values in [0, {T}] (T frames), found {lengths.tolist()}")
    if streaming is not None and not isinstance(streaming, StreamingConfig):
        raise TypeError(f"streaming: expected a StreamingConfig or None, found {type(streaming).__name__}")


def streaming_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                        streaming: Optional[StreamingConfig], dropout_p: float = 0.0,
                        position_bias: Optional["RelativePositionBias"] = None,
                        bias_gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scaled dot-product self-attention under the streaming rule and key padding.

    Equals ``F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)``
    with ``mask = chunk_attention_mask(T, C, L, S) & key_padding_mask(lengths, T)`` (True = may
    attend) on every valid query row; a padded query row (frame ``>= lengths[b]``) returns some
    finite value. With bounded left context (``C`` and ``L`` set) each chunk of ``C`` queries
    attends only its ``S + L + C`` keys (sinks not in the window, the ``L`` frames before the
    chunk, the chunk), so time and memory grow linearly with ``T``; otherwise (full attention,
    ``L = None``) this is the dense SDPA call.

    One call of :func:`attention_plan` and :func:`planned_attention`; an encoder makes the plan
    once per pass and hands it to every layer.

    Args:
        q: (B, H, T, D/H) queries.
        k: (B, H, T, D/H) keys of the same frames.
        v: (B, H, T, D/H) values.
        lengths: (B,) integer, valid frames per utterance (``0 <= lengths[b] <= T``).
        streaming: the rule; ``None`` = full attention.
        dropout_p: dropout on the attention weights (pass 0 in evaluation).
        position_bias: a bias added to the scores that depends only on ``key - query`` (frame
            indices; WavLM's :class:`RelativePositionBias`), the same in every path.
        bias_gate: (B, H, T), scales the bias per query (WavLM's gate); ``None`` = 1.

    Returns:
        (B, H, T, D/H), in the dtype of ``q``.

    Raises:
        ValueError: on badly shaped ``q``/``k``/``v``/``lengths``, non-integer ``lengths`` or
            lengths outside ``[0, T]``.
        TypeError: when ``streaming`` is neither None nor a :class:`~xtrans.masks.StreamingConfig`.
    """
    _check_inputs(q, k, v, lengths, streaming)
    plan = attention_plan(lengths.to(q.device), q.shape[2], streaming, position_bias)
    return planned_attention(q, k, v, plan, bias_gate=bias_gate, dropout_p=dropout_p)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                    streaming: Optional[StreamingConfig], dropout_p: float = 0.0,
                    position_bias: Optional["RelativePositionBias"] = None,
                    bias_gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`streaming_attention` as one SDPA call under :func:`dense_attention_mask`, at any ``L``.

    The quadratic reference (what the encoder computed before the gather path); same arguments,
    result and errors as :func:`streaming_attention`.
    """
    _check_inputs(q, k, v, lengths, streaming)
    plan = attention_plan(lengths.to(q.device), q.shape[2], streaming, position_bias, gather=False)
    return planned_attention(q, k, v, plan, bias_gate=bias_gate, dropout_p=dropout_p)


@dataclass(frozen=True)
class AttentionPlan:
    """What every attention layer of one pass shares: the keys each query may attend, and the position bias.

    Neither depends on the layer: the mask follows from the frames' positions, the rule and the
    lengths; WavLM's relative position bias (:class:`RelativePositionBias`, one module for all
    layers) from ``key - query``, each layer only scaling it by a gate of its own queries. An
    encoder therefore builds a plan once per pass (:func:`attention_plan`) or once per streamed
    chunk (:meth:`AttentionCache.plan`) and hands it to every layer (:func:`planned_attention`),
    instead of every layer bucketing distances, looking up the bias and building the mask again.

    Two layouts of the scores ``(..., Tq, Tk)``:

    - keys as given (``gather`` is None): the queries attend the ``Tk`` keys passed to
      :func:`planned_attention`, the frames themselves (dense path: ``mask`` None, (B, 1, 1, T) or
      (B, 1, T, T), ``bias`` (H, T, T)) or a chunk after its cache (``mask`` (B, 1, n, K),
      ``bias`` (B, H, n, K));
    - gathered (``gather = (C, L, S)``): the frames cut into ``N`` chunks of ``C``, each attending
      its ``S + L + C`` keys (:func:`streaming_attention`'s gather path): ``mask`` (B, N, 1, C, S + L + C),
      ``bias`` (N, H, C, S + L + C).

    Attributes:
        mask: bool, True = may attend; None = every key.
        bias: float, the position bias before any gate; None = no bias.
        gather: ``(C, L, S)`` of the gathered layout (``L`` and ``S`` cut to what the utterance
            can use), or None.
    """

    mask: Optional[torch.Tensor] = None
    bias: Optional[torch.Tensor] = None
    gather: Optional[Tuple[int, int, int]] = None

    def scores_mask(self, gate: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """What SDPA adds to the scores: the bool ``mask`` alone, or ``gate * bias`` with ``-inf`` where not allowed.

        ``gate`` (..., H, Tq) scales the bias per query (WavLM's gate, in the layout's leading
        axes); ``None`` = 1.
        """
        if self.bias is None:
            return self.mask
        bias = self.bias if gate is None else gate[..., None] * self.bias
        return bias if self.mask is None else bias.masked_fill(~self.mask, float("-inf"))


def attention_plan(lengths: torch.Tensor, num_frames: int, streaming: Optional[StreamingConfig],
                   position_bias: Optional["RelativePositionBias"] = None, *, gather: bool = True) -> AttentionPlan:
    """The :class:`AttentionPlan` of a pass over ``T`` frames under ``streaming``.

    Gathered (linear in ``T``) when the left context is bounded and ``gather`` is True; else the
    dense :func:`dense_attention_mask`.

    Args:
        lengths: (B,) valid frames per utterance, on the device of the pass.
        num_frames: ``T``.
        streaming: the rule; ``None`` = full attention.
        position_bias: WavLM's bias module, or None.
        gather: False forces the dense layout at any ``L`` (:func:`dense_attention`).
    """
    T, device = num_frames, lengths.device
    if (not gather or streaming is None or streaming.is_full or streaming.left_context is None or T == 0):
        mask = dense_attention_mask(lengths, T, streaming)  # None, (B, 1, 1, T) or (B, 1, T, T)
        if position_bias is None:
            return AttentionPlan(mask)
        frames = torch.arange(T, device=device)
        return AttentionPlan(mask, position_bias.between(frames, frames))  # (H, T, T)
    C = streaming.chunk_size
    N = -(-T // C)  # chunks
    # Nothing before frame 0 exists: a window longer than the last chunk's start sees the same
    # frames, and sinks are needed only where they lie before some chunk's window (s < cC - L).
    L = min(streaming.left_context, (N - 1) * C)
    S = min(streaming.num_sinks, max(0, (N - 1) * C - L))
    chunk_start = torch.arange(N, device=device) * C  # (N,)
    mask = chunk_key_mask(chunk_start[None, :], C, S, L, lengths[:, None])[:, :, None]  # (B, N, 1, C, S + L + C)
    bias = None
    if position_bias is not None:
        query_pos = chunk_start[:, None] + torch.arange(C, device=device)  # (N, C)
        bias = position_bias.between(query_pos, chunk_key_positions(chunk_start, C, S, L))  # (N, H, C, S + L + C)
    return AttentionPlan(mask, bias, gather=(C, L, S))


def planned_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
                      bias_gate: Optional[torch.Tensor] = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Queries (B, H, Tq, D/H) over keys and values (B, H, Tk, D/H) under ``plan`` -> (B, H, Tq, D/H).

    The inputs are the layer's own (no checks: :func:`streaming_attention` is the checked entry).

    Args:
        q, k, v: for a gathered plan the frames of the pass (``Tq = Tk = T``); else the queries
            and the keys the plan's mask was made for.
        plan: from :func:`attention_plan` or :meth:`AttentionCache.plan`.
        bias_gate: (B, H, Tq), the layer's scale of the position bias (WavLM); ``None`` = 1.
        dropout_p: dropout on the attention weights (pass 0 in evaluation).
    """
    if plan.gather is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=plan.scores_mask(bias_gate), dropout_p=dropout_p)
    return _gathered_attention(q, k, v, plan, bias_gate, dropout_p)


def _gathered_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
                        bias_gate: Optional[torch.Tensor], dropout_p: float) -> torch.Tensor:
    """The gather path of :func:`streaming_attention`: each chunk over its own ``S + L + C`` keys."""
    B, H, T, Dh = q.shape
    C, L, S = plan.gather
    N = -(-T // C)  # chunks
    Tp = N * C
    W = L + C  # window: the L frames before a chunk and the chunk
    assert plan.mask.shape[1] == N, "the plan was made for another number of frames"

    # (B, H, T, D/H) -> (B, N, H, C, D/H) -> (B*N, H, C, D/H): chunks become batch elements
    qc = F.pad(q, (0, 0, 0, Tp - T)).view(B, H, N, C, Dh).transpose(1, 2).reshape(B * N, H, C, Dh)

    def gather(x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D/H) -> (B*N, H, S + W, D/H): per chunk its sinks, then its window."""
        padded = F.pad(x, (0, 0, L, Tp - T))  # (B, H, L + Tp, D/H); frame t at index L + t
        window = padded.unfold(2, W, C).permute(0, 2, 1, 4, 3)  # (B, H, N, D/H, W) -> (B, N, H, W, D/H)
        if S:
            sinks = x[:, None, :, :S].expand(B, N, H, S, Dh)  # (B, N, H, S, D/H)
            window = torch.cat([sinks, window], dim=3)
        return window.reshape(B * N, H, S + W, Dh)

    gate = None
    if bias_gate is not None:  # (B, H, T) -> (B, H, N, C) -> (B, N, H, C)
        gate = F.pad(bias_gate, (0, Tp - T)).view(B, H, N, C).transpose(1, 2)
    mask = plan.scores_mask(gate)  # (B, N, 1, C, S + W), or with a bias (B, N, H, C, S + W)
    if plan.bias is not None:
        mask = mask.expand(B, N, H, C, S + W)
    out = F.scaled_dot_product_attention(qc, gather(k), gather(v), dropout_p=dropout_p,
                                         attn_mask=mask.reshape(B * N, -1, C, S + W))  # (B*N, H, C, D/H)
    # (B*N, H, C, D/H) -> (B, N, H, C, D/H) -> (B, H, N*C, D/H) -> (B, H, T, D/H)
    return out.view(B, N, H, C, Dh).transpose(1, 2).reshape(B, H, Tp, Dh)[:, :, :T]


def chunk_key_mask(chunk_start: torch.Tensor, chunk_len: int, num_sinks: int, left: int,
                   lengths: torch.Tensor) -> torch.Tensor:
    """Which gathered keys each query of a chunk may attend (True = may attend).

    The keys of a chunk starting at frame ``s`` are laid out as ``[sinks 0 .. S-1] + [frames
    s - L .. s + n - 1]`` (``S = num_sinks``, ``L = left``, ``n = chunk_len``), the layout of
    both :func:`streaming_attention`'s gather path and :class:`AttentionCache`. A sink is
    attended only when it lies before the window (``j < s - L``: otherwise it is in the window
    already), a window key only when it exists (``0 <= j``); no key at or past its utterance's
    length is attended. Query rows of padded frames (``s + i >= length``) see every key: their
    output is discarded, and no row may be empty::

        s=4, n=2, S=1, L=2, length=5     keys: sink0 | 2 3 4 5
                              query 4 ->   x   | x x x .
                              query 5 ->   x   | x x x x   (padded row: all)

    Args:
        chunk_start: chunk start frames ``s``, any shape broadcastable with ``lengths``.
        chunk_len: ``n``, queries per chunk.
        num_sinks: ``S``.
        left: ``L``, window frames before the chunk.
        lengths: valid frames per utterance, broadcastable with ``chunk_start``.

    Returns:
        bool (..., n, S + L + n), ``...`` the broadcast shape of ``chunk_start`` and ``lengths``.
    """
    device = chunk_start.device
    start, length = chunk_start[..., None], lengths[..., None]  # (..., 1)
    window_pos = chunk_key_positions(chunk_start, chunk_len, 0, left)  # (..., L + n)
    key_valid = (window_pos >= 0) & (window_pos < length)
    if num_sinks:
        sink_pos = torch.arange(num_sinks, device=device)
        sink_valid = (sink_pos < start - left) & (sink_pos < length)  # (..., S)
        key_valid = torch.cat([sink_valid.expand(*key_valid.shape[:-1], num_sinks), key_valid], dim=-1)
    query_valid = start + torch.arange(chunk_len, device=device) < length  # (..., n)
    return key_valid[..., None, :] | ~query_valid[..., :, None]


def chunk_key_positions(chunk_start: torch.Tensor, chunk_len: int, num_sinks: int, left: int) -> torch.Tensor:
    """The frame index of every key slot of :func:`chunk_key_mask`'s layout (long).

    Sink slot ``i`` holds frame ``i``, window slot ``w`` frame ``s - L + w`` (negative before
    the utterance starts: such slots are masked), so ``[0 .. S-1] + [s - L .. s + n - 1]``.

    Args:
        chunk_start: chunk start frames ``s``, any shape ``...``.
        chunk_len: ``n``; num_sinks: ``S``; left: ``L``.

    Returns:
        (..., S + L + n).
    """
    device = chunk_start.device
    window = chunk_start[..., None] - left + torch.arange(left + chunk_len, device=device)  # (..., L + n)
    if not num_sinks:
        return window
    sinks = torch.arange(num_sinks, device=device).expand(*window.shape[:-1], num_sinks)
    return torch.cat([sinks, window], dim=-1)


class RelativePositionBias(nn.Module):
    """WavLM's bucketed relative position bias: a learned bias per head and bucket of ``key - query``.

    Relative positions ``r`` (in frames) fall into ``num_buckets`` buckets (Raffel et al., T5;
    Chen et al., "WavLM", 2022, eq. 4), half for keys after the query (``r > 0``), half for the
    rest: ``|r| < m`` each in its own bucket, larger ``|r|``
    logarithmically up to ``max_distance``, beyond which they share the last bucket::

        b(r) = (r > 0) * n + (|r|                                                   if |r| < m
                              min(n - 1, floor(m + log(|r| / m) / log(M / m) * (n - m)))  else)

    with ``n = num_buckets // 2``, ``m = n // 2``, ``M = max_distance``. The bias depends on ``key - query``
    only, so under the streaming rule a cached key keeps the bias of its absolute frame.
    WavLM computes it once (in its first layer) and every layer scales it by a gate of its
    queries (:meth:`~xtrans.models.wav2vec2.transformer.SelfAttention.bias_gate`); the
    encoder looks it up once per pass or chunk (:class:`AttentionPlan`).

    Args:
        num_heads: ``H``.
        num_buckets: buckets (320 in WavLM).
        max_distance: ``M`` (800 in WavLM).
    """

    def __init__(self, *, num_heads: int, num_buckets: int = 320, max_distance: int = 800):
        super().__init__()
        if num_buckets < 4:
            raise ValueError(f"rel_pos_buckets: expected at least 4 buckets, found {num_buckets}")
        if max_distance <= num_buckets // 4:
            raise ValueError(f"rel_pos_max_distance: expected more than rel_pos_buckets / 4 = {num_buckets // 4}, "
                             f"found {max_distance}")
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def buckets(self, relative: torch.Tensor) -> torch.Tensor:
        """Relative positions ``key - query`` (any shape, long) -> bucket indices (same shape)."""
        n = self.num_buckets // 2
        exact = n // 2
        side = (relative > 0).long() * n
        distance = relative.abs()
        # log(0) = -inf for r = 0: never selected (|r| < exact), cast without effect
        far = (exact + torch.log(distance.float() / exact) / math.log(self.max_distance / exact)
               * (n - exact)).long()
        far = torch.clamp(far, max=n - 1)
        return side + torch.where(distance < exact, distance, far)

    def forward(self, relative: torch.Tensor) -> torch.Tensor:
        """Relative positions (..., Tq, Tk) long -> bias (..., H, Tq, Tk) float."""
        bias = self.embedding(self.buckets(relative))  # (..., Tq, Tk, H)
        d = bias.dim()  # explicit axes: ONNX refuses negative ones in Transpose
        return bias.permute(*range(d - 3), d - 1, d - 3, d - 2)

    def between(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """The bias of keys at frames ``key_pos`` (..., Tk) for queries at ``query_pos`` (..., Tq):
        (..., H, Tq, Tk)."""
        return self(key_pos[..., None, :] - query_pos[..., :, None])


@dataclass(frozen=True)
class AttentionCache:
    """Keys and values one attention layer keeps between chunks, each (B, H, K, D/H).

    The streaming side of :func:`chunk_key_mask`'s layout: ``S`` sink slots holding frames
    ``0 .. S-1`` and a window of the last ``L`` frames before the next chunk. With a bounded
    left context every slot exists from the start (zeros, masked until its frame exists), so
    the shapes never change (what an exported graph needs); with ``L = None`` the window keeps
    every frame and grows, and there are no sink slots (every sink is in the window).

    Attributes:
        sink_keys: (B, H, S, D/H) keys of frames ``0 .. S-1`` (zero until computed).
        sink_values: their values.
        left_keys: (B, H, L, D/H) keys of the ``L`` frames before the next chunk (all frames so
            far when ``L`` is None).
        left_values: their values.
    """

    sink_keys: torch.Tensor
    sink_values: torch.Tensor
    left_keys: torch.Tensor
    left_values: torch.Tensor

    @staticmethod
    def zeros(batch_size: int, num_heads: int, head_dim: int, num_sinks: int, left: Optional[int],
              device=None, dtype: Optional[torch.dtype] = None) -> "AttentionCache":
        """The cache before the first frame: ``S`` and ``L`` zero slots (none when ``L`` is None)."""
        S, L = (0, 0) if left is None else (num_sinks, left)

        def empty(n: int) -> torch.Tensor:
            return torch.zeros(batch_size, num_heads, n, head_dim, device=device, dtype=dtype)

        return AttentionCache(empty(S), empty(S), empty(L), empty(L))

    def keys_values(self, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """A chunk's keys and values (B, H, n, D/H) after the cached ones, in :func:`chunk_key_mask`'s layout."""
        return (torch.cat([self.sink_keys, self.left_keys, k], dim=2),
                torch.cat([self.sink_values, self.left_values, v], dim=2))

    def mask(self, start: torch.Tensor, chunk_len: int, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 1, n, K) attention mask of a chunk at frames ``start`` (B,), valid ``lengths`` (B,)."""
        S, L = self.sink_keys.shape[2], self.left_keys.shape[2]
        return chunk_key_mask(start, chunk_len, S, L, lengths)[:, None]

    def key_positions(self, start: torch.Tensor, chunk_len: int) -> torch.Tensor:
        """(B, K) frame index of every key of a chunk at frames ``start`` (B,): sinks, window, chunk."""
        S, L = self.sink_keys.shape[2], self.left_keys.shape[2]
        return chunk_key_positions(start, chunk_len, S, L)

    def plan(self, start: torch.Tensor, chunk_len: int, lengths: torch.Tensor,
             position_bias: Optional[RelativePositionBias] = None) -> AttentionPlan:
        """The :class:`AttentionPlan` of a chunk of ``n`` queries at frames ``start`` (B,) over this cache's keys.

        Every layer's cache has the same slots, so one plan serves all layers of the chunk: the
        mask (B, 1, n, K) of :meth:`mask` and, with ``position_bias``, the bias (B, H, n, K) of
        every key at its absolute frame (:meth:`key_positions`), as the full pass has it.
        """
        bias = None
        if position_bias is not None:
            query_pos = start[:, None] + torch.arange(chunk_len, device=start.device)  # (B, n)
            bias = position_bias.between(query_pos, self.key_positions(start, chunk_len))  # (B, H, n, K)
        return AttentionPlan(self.mask(start, chunk_len, lengths), bias)

    def append(self, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor, bounded: bool) -> "AttentionCache":
        """The cache after a chunk with keys/values (B, H, n, D/H) at frames ``start .. start + n - 1``.

        Sink slot ``i`` takes frame ``i`` when the chunk holds it; the window keeps its last
        ``L`` frames (``bounded``) or every frame.
        """
        n, S = k.shape[2], self.sink_keys.shape[2]
        sink_k, sink_v = self.sink_keys, self.sink_values
        if S:
            offset = torch.arange(S, device=k.device)[None, :] - start[:, None]  # (B, S) index in the chunk
            inside = ((offset >= 0) & (offset < n))[:, None, :, None]  # (B, 1, S, 1)
            index = offset.clamp(0, n - 1)[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
            sink_k = torch.where(inside, k.gather(2, index), sink_k)
            sink_v = torch.where(inside, v.gather(2, index), sink_v)
        left_k = torch.cat([self.left_keys, k], dim=2)
        left_v = torch.cat([self.left_values, v], dim=2)
        if bounded:
            L = self.left_keys.shape[2]
            left_k, left_v = left_k[:, :, left_k.shape[2] - L:], left_v[:, :, left_v.shape[2] - L:]
        return AttentionCache(sink_k, sink_v, left_k, left_v)
