"""The encoder's transformer layer: self-attention under the streaming rule, feed-forward, pre/post-LN.

Shape legend: B batch, T frames, D model dim, H heads. :class:`TransformerLayer` streams itself:
``forward_chunk`` attends one chunk over its cached keys and values
(:class:`~xtrans.models.attention.AttentionCache`), the full pass over the whole utterance under
the same rule (:func:`~xtrans.models.attention.streaming_attention`).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import StreamingConfig
from xtrans.models.attention import AttentionCache, RelativePositionBias, biased_scores_mask, streaming_attention


class SelfAttention(nn.Module):
    """Multi-head self-attention under the streaming rule (:func:`~xtrans.models.attention.streaming_attention`).

    :meth:`forward` attends a whole padded batch under the rule, at a cost linear in ``T`` for
    bounded left context; :meth:`attend` takes explicit keys/values and a boolean mask (True = may
    attend), for the streaming encoder's cached keys.

    With a relative position bias (WavLM, :class:`~xtrans.models.attention.RelativePositionBias`,
    shared by all layers and passed in), ``gated=True`` scales it per query and head by WavLM's
    gate (:meth:`bias_gate`); its weights keep WavLM's names ``gru_rel_pos_linear`` and
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

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Queries from ``x`` (B, Tq, D) over keys/values (B, H, Tk, D/H) -> (B, Tq, D).

        ``mask`` broadcasts to (B, H, Tq, Tk), True = may attend; ``None`` = attend to all; or a
        float mask added to the scores (``-inf`` = may not attend).
        """
        q = self.split_heads(self.q_proj(x))
        return self.merge_heads(F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0))

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Heads (B, H, Tq, D/H) -> output projection (B, Tq, D)."""
        B, H, Tq, Dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, Tq, H * Dh))  # (B, H, Tq, D/H) -> (B, Tq, D)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, streaming: Optional[StreamingConfig],
                position_bias: Optional[RelativePositionBias] = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), frames past ``lengths`` (B,) never attended, under ``streaming``.

        Rows of padded frames hold finite values of no meaning. ``position_bias`` (WavLM) is added
        to the scores, gated by :meth:`bias_gate`.
        """
        q = self.split_heads(self.q_proj(x))
        k, v = self.project_kv(x)
        bias = {} if position_bias is None else dict(position_bias=position_bias, bias_gate=self.bias_gate(x))
        return self.merge_heads(streaming_attention(q, k, v, lengths, streaming,
                                                    dropout_p=self.dropout if self.training else 0.0, **bias))


class FeedForward(nn.Module):
    """Linear(D, F) -> GELU -> dropout -> Linear(F, D) -> dropout."""

    def __init__(self, *, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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

    def forward_with_kv(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The layer with the attention's keys/values given (B, H, Tk, D/H): (B, Tq, D) -> (B, Tq, D)."""
        return self.around(x, lambda h: self.attention.attend(h, k, v, mask))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, streaming: Optional[StreamingConfig],
                position_bias: Optional[RelativePositionBias] = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), attending under ``streaming`` to the ``lengths`` (B,) valid frames
        (with the encoder's relative ``position_bias``, WavLM)."""
        return self.around(x, lambda h: self.attention(h, lengths, streaming, position_bias))

    def init_state(self, batch_size: int, streaming: StreamingConfig, device=None,
                   dtype: Optional[torch.dtype] = None) -> AttentionCache:
        """The empty key/value cache of this layer's attention under ``streaming``."""
        attn = self.attention
        return AttentionCache.zeros(batch_size, attn.num_heads, attn.head_dim, streaming.num_sinks,
                                    streaming.left_context, device, dtype)

    def forward_chunk(self, x: torch.Tensor, state: AttentionCache, start: torch.Tensor, lengths: torch.Tensor,
                      left_context: Optional[int], position_bias: Optional[RelativePositionBias] = None
                      ) -> Tuple[torch.Tensor, AttentionCache]:
        """One chunk (B, n, D) at frames ``start`` (B,) .. ``start + n - 1`` -> (B, n, D), new cache.

        Each query attends the cached sinks and window and the whole chunk (the rule's key set,
        :func:`~xtrans.models.attention.chunk_key_mask`), never a key at or past ``lengths`` (B,);
        the cache then keeps the last ``left_context`` frames (all when None). A relative
        ``position_bias`` sees every cached key at its absolute frame (sink slot ``i`` = frame
        ``i``, window slot ``w`` = frame ``start - L + w``), as the full pass does.
        """
        n = x.shape[1]
        k, v = self.attention.project_kv(self.attention_input(x))  # (B, H, n, D/H)
        keys, values = state.keys_values(k, v)
        mask = state.mask(start, n, lengths)  # (B, 1, n, K)

        def attention(h: torch.Tensor) -> torch.Tensor:
            scores_mask = mask
            if position_bias is not None:
                query_pos = start[:, None] + torch.arange(n, device=x.device)  # (B, n)
                scores_mask = biased_scores_mask(position_bias, query_pos, state.key_positions(start, n),
                                                 self.attention.bias_gate(h), mask)  # (B, H, n, K)
            return self.attention.attend(h, keys, values, scores_mask)

        y = self.around(x, attention)
        return y, state.append(k, v, start, bounded=left_context is not None)
