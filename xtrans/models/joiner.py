"""The transducer joiner: ``logits = W_out tanh(W_enc e_t + W_pred p_u)``."""

from __future__ import annotations

import torch
from torch import nn


class Joiner(nn.Module):
    """Combines encoder frames and prediction-network outputs into logits over ``V``.

    The two projections are applied before broadcasting, so the (B, T, U+1, J) sum is the only
    large intermediate: ``enc (B, T, 1, J) + pred (B, 1, U+1, J) -> tanh -> Linear(J, V)``.

    Args:
        encoder_dim: ``D`` of the encoder.
        predictor_dim: output size of the prediction network.
        joiner_dim: ``J``.
        vocab_size: ``V`` including blank.
    """

    def __init__(self, *, encoder_dim: int, predictor_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joiner_dim)
        self.output = nn.Linear(joiner_dim, vocab_size)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor, projected: bool = False) -> torch.Tensor:
        """Logits for any broadcastable ``enc (..., D)`` and ``pred (..., D_pred)`` -> (..., V).

        For training: ``enc (B, T, 1, D)``, ``pred (B, 1, U+1, D_pred)`` -> (B, T, U+1, V).
        With ``projected=True`` both inputs are already projected to ``J`` (search caches them).
        """
        if not projected:
            enc, pred = self.encoder_proj(enc), self.predictor_proj(pred)
        return self.output(torch.tanh(enc + pred))
