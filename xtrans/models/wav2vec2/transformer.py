"""The transformer layer of the wav2vec 2.0 family: self-attention under the streaming rule, feed-forward.

Shape legend: B batch, T frames (20 ms), D model dim, H heads; a chunk has ``n`` query frames
and ``K`` keys (its cached sinks and window, then itself)::

    pre-LN  (XLSR-53):       x = x + dropout(attn(LN(x)));  x = x + FFN(LN_f(x))
    post-LN (wav2vec2-base): x = LN(x + dropout(attn(x)));  x = LN_f(x + FFN(x))

Attention never builds its mask or position bias itself: the encoder makes an
:class:`~xtrans.models.attention.AttentionPlan` once per pass (over the whole utterance) or once
per streamed chunk (over the cache's keys) and every layer applies it through
:func:`~xtrans.models.attention.planned_attention`, scaling WavLM's bias by a gate of its own
queries (:meth:`SelfAttention.bias_gate`). A layer streams itself: :meth:`TransformerLayer.init_state`
and :meth:`TransformerLayer.forward_chunk` beside :meth:`TransformerLayer.forward`, on one code path.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import StreamingConfig
from xtrans.models.attention import AttentionCache, AttentionPlan, planned_attention

__all__ = ["FeedForward", "SelfAttention", "TransformerLayer"]


class SelfAttention(nn.Module):
    """Multi-head self-attention under an :class:`~xtrans.models.attention.AttentionPlan`.

    :meth:`forward` attends the frames to themselves (the plan of a whole pass: the streaming
    rule at a cost linear in ``T`` for bounded left context); :meth:`attend` takes explicit
    keys/values (a streamed chunk after its cache).

    With a relative position bias in the plan (WavLM, :class:`~xtrans.models.attention.RelativePositionBias`,
    shared by all layers), ``gated=True`` scales it per query and head by WavLM's gate
    (:meth:`bias_gate`); its weights keep WavLM's names ``gru_rel_pos_linear`` and
    ``gru_rel_pos_const``.
    """

    def __init__(self, *, embed_dim: int, num_heads: int, dropout: float, gated: bool = False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide embed_dim {embed_dim}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.gated = gated
        if gated:
            self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def bias_gate(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """WavLM's gate of the position bias from the attention input (B, T, D) -> (B, H, T), or None.

        Per head, the query frame's slice ``x_h`` (D/H values) gives two gates
        ``a, b = sigmoid(sum over 4 of W x_h + w)`` and the bias is scaled by
        ``a (b c_h - 1) + 2`` (``c_h`` learned; with ``c_h = 1`` the scale lies in (1, 2)).
        """
        if not self.gated:
            return None
        h = self.split_heads(x)  # (B, H, T, D/H)
        gates = torch.sigmoid(self.gru_rel_pos_linear(h).unflatten(-1, (2, 4)).sum(-1))  # (B, H, T, 2)
        gate_a, gate_b = gates[..., 0], gates[..., 1]
        return gate_a * (gate_b * self.gru_rel_pos_const[..., 0] - 1.0) + 2.0  # (B, H, T)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of frames ``x`` (B, T, D) -> two (B, H, T, D/H) (cached when streaming)."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        """Queries from ``x`` (B, Tq, D) over keys/values (B, H, Tk, D/H) under ``plan`` -> (B, Tq, D).

        The plan's position bias, if any, is scaled by :meth:`bias_gate` of ``x``.
        """
        q = self.split_heads(self.q_proj(x))
        gate = None if plan.bias is None else self.bias_gate(x)
        out = planned_attention(q, k, v, plan, bias_gate=gate, dropout_p=self.dropout if self.training else 0.0)
        return self.merge_heads(out)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Heads (B, H, Tq, D/H) -> output projection (B, Tq, D)."""
        B, H, Tq, Dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, Tq, H * Dh))  # (B, H, Tq, D/H) -> (B, Tq, D)

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        """The frames ``x`` (B, T, D) attending each other under ``plan`` (a whole pass's) -> (B, T, D).

        Rows of padded frames hold finite values of no meaning.
        """
        return self.attend(x, *self.project_kv(x), plan)


class FeedForward(nn.Module):
    """Linear(D, F) -> GELU -> dropout -> Linear(F, D) -> dropout."""

    def __init__(self, *, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), each frame alone."""
        return self.dropout(self.output_dense(self.activation_dropout(F.gelu(self.intermediate_dense(x)))))


class TransformerLayer(nn.Module):
    """One transformer layer, pre-LN (XLSR-53) or post-LN (wav2vec2-base)."""

    def __init__(self, *, embed_dim: int, num_heads: int, ffn_dim: int, layer_norm_first: bool,
                 dropout: float, attention_dropout: float, activation_dropout: float, gated_bias: bool = False):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(embed_dim=embed_dim, num_heads=num_heads, dropout=attention_dropout,
                                       gated=gated_bias)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.feed_forward = FeedForward(embed_dim=embed_dim, ffn_dim=ffn_dim,
                                        activation_dropout=activation_dropout, dropout=dropout)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def attention_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the attention's keys/values are computed from (normed input for pre-LN)."""
        return self.layer_norm(x) if self.layer_norm_first else x

    def around(self, x: torch.Tensor, attention: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The layer around ``attention`` (its input (B, Tq, D) -> (B, Tq, D)): (B, Tq, D) -> (B, Tq, D)."""
        if self.layer_norm_first:
            x = x + self.dropout(attention(self.layer_norm(x)))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(attention(x)))
        return self.final_layer_norm(x + self.feed_forward(x))

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), attending under the pass's ``plan`` (the streaming rule over the
        valid frames, and the encoder's relative position bias, WavLM)."""
        return self.around(x, lambda h: self.attention(h, plan))

    def init_state(self, batch_size: int, streaming: StreamingConfig, device=None,
                   dtype: Optional[torch.dtype] = None) -> AttentionCache:
        """The empty key/value cache of this layer's attention under ``streaming``."""
        attn = self.attention
        return AttentionCache.zeros(batch_size, attn.num_heads, attn.head_dim, streaming.num_sinks,
                                    streaming.left_context, device, dtype)

    def forward_chunk(self, x: torch.Tensor, state: AttentionCache, start: torch.Tensor, plan: AttentionPlan,
                      left_context: Optional[int]) -> Tuple[torch.Tensor, AttentionCache]:
        """One chunk (B, n, D) at frames ``start`` (B,) .. ``start + n - 1`` -> (B, n, D), new cache.

        Each query attends the cached sinks and window and the whole chunk, as ``plan``
        (:meth:`~xtrans.models.attention.AttentionCache.plan` of the chunk, the same for every
        layer) allows: the rule's key set, never a key past its stream's length, and the relative
        position bias of every key at its absolute frame (sink slot ``i`` = frame ``i``, window slot
        ``w`` = frame ``start - L + w``), as the full pass has it. The cache then keeps the last
        ``left_context`` frames (all when None).
        """
        k, v = self.attention.project_kv(self.attention_input(x))  # (B, H, n, D/H)
        keys, values = state.keys_values(k, v)  # (B, H, K, D/H)
        y = self.around(x, lambda h: self.attention.attend(h, keys, values, plan))
        return y, state.append(k, v, start, bounded=left_context is not None)
