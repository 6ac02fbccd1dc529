"""Prediction networks of the transducer: stateless (last tokens only) and LSTM.

Both map the label history to one vector per position, (B, U+1) tokens -> (B, U+1, D_pred),
where position 0 is the start (blank) symbol, and offer a one-step interface for search::

    state = predictor.init_state(batch_size, device)
    out, state = predictor.step(tokens (B,), state)      # (B, D_pred)

The state is a named tuple of tensors (no hidden caches on the module).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class StatelessState(NamedTuple):
    """The last ``context_size`` tokens, (B, context_size), oldest first (blank = none yet)."""

    context: torch.Tensor


class LSTMState(NamedTuple):
    """LSTM hidden and cell states, each (num_layers, B, hidden_dim)."""

    h: torch.Tensor
    c: torch.Tensor


class StatelessPredictor(nn.Module):
    """Stateless prediction network (Ghodsi et al., 2020; icefall's default).

    Embeds the last ``context_size`` tokens and mixes them with a grouped 1-D convolution over
    that short context, then ReLU. With ``context_size=2`` it is a bigram model of the labels.

    Args:
        vocab_size: ``V`` including blank.
        embed_dim: output dimension ``D_pred``.
        blank: the blank id, also the start symbol and the padding of the context.
        context_size: tokens of history (>= 1).
    """

    def __init__(self, *, vocab_size: int, embed_dim: int, blank: int = 0, context_size: int = 2):
        super().__init__()
        if context_size < 1:
            raise ValueError(f"context_size: expected >= 1, found {context_size}")
        self.blank = blank
        self.context_size = context_size
        self.embed_dim = embed_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.conv = (nn.Conv1d(embed_dim, embed_dim, context_size, groups=max(1, embed_dim // 4), bias=False)
                     if context_size > 1 else None)

    @property
    def output_dim(self) -> int:
        return self.embed_dim

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, U) tokens -> (B, U+1, D_pred); position u sees tokens < u (blank-padded)."""
        B = targets.shape[0]
        start = torch.full((B, self.context_size), self.blank, dtype=targets.dtype, device=targets.device)
        tokens = torch.cat([start, targets], dim=1)  # (B, U + context)
        return self._encode(tokens)

    def _encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens -> (B, L - context_size + 1, D_pred)."""
        emb = self.embedding(tokens)
        if self.conv is not None:
            emb = self.conv(emb.transpose(1, 2)).transpose(1, 2)
        else:
            emb = emb[:, self.context_size - 1:]
        return F.relu(emb)

    def init_state(self, batch_size: int, device=None) -> StatelessState:
        return StatelessState(torch.full((batch_size, self.context_size), self.blank, dtype=torch.long,
                                         device=device))

    def output(self, state: StatelessState) -> torch.Tensor:
        """The prediction for the current context, (B, D_pred)."""
        return self._encode(state.context)[:, -1]

    def step(self, tokens: torch.Tensor, state: StatelessState) -> Tuple[torch.Tensor, StatelessState]:
        """Appends ``tokens`` (B,) to the context -> (prediction (B, D_pred), new state)."""
        context = torch.cat([state.context[:, 1:], tokens[:, None].to(state.context.dtype)], dim=1)
        new = StatelessState(context)
        return self.output(new), new


class LSTMPredictor(nn.Module):
    """LSTM prediction network (Graves, 2012): embedding -> LSTM -> Linear.

    Args:
        vocab_size: ``V`` including blank.
        embed_dim: embedding size.
        hidden_dim: LSTM size.
        num_layers: LSTM layers.
        output_dim: ``D_pred``.
        dropout: between embedding/LSTM layers.
        blank: the blank id (start symbol).
    """

    def __init__(self, *, vocab_size: int, embed_dim: int, hidden_dim: int, num_layers: int = 1,
                 output_dim: Optional[int] = None, dropout: float = 0.0, blank: int = 0):
        super().__init__()
        self.blank = blank
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.out_dim = output_dim or hidden_dim
        self.proj = nn.Linear(hidden_dim, self.out_dim)

    @property
    def output_dim(self) -> int:
        return self.out_dim

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, U) tokens -> (B, U+1, D_pred); position u sees tokens < u."""
        B = targets.shape[0]
        start = torch.full((B, 1), self.blank, dtype=targets.dtype, device=targets.device)
        h, _ = self.lstm(self.dropout(self.embedding(torch.cat([start, targets], 1))))
        return self.proj(self.dropout(h))

    def init_state(self, batch_size: int, device=None) -> LSTMState:
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_dim, device=device)
        start = torch.full((batch_size,), self.blank, dtype=torch.long, device=device)
        _, (h, c) = self.lstm(self.embedding(start)[:, None], (zeros, zeros.clone()))
        return LSTMState(h, c)

    def output(self, state: LSTMState) -> torch.Tensor:
        """The prediction for the current history, (B, D_pred)."""
        return self.proj(state.h[-1])

    def step(self, tokens: torch.Tensor, state: LSTMState) -> Tuple[torch.Tensor, LSTMState]:
        """Feeds ``tokens`` (B,) -> (prediction (B, D_pred), new state)."""
        _, (h, c) = self.lstm(self.embedding(tokens)[:, None], (state.h, state.c))
        new = LSTMState(h, c)
        return self.output(new), new
