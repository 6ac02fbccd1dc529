"""Greedy search on a PyTorch transducer, offline (batched) and streaming.

The search is :class:`xtrans.search_core.greedy.GreedySearch` (the rule, the score, the
streaming state machine are documented there), run on the model's prediction network and
joiner (:class:`xtrans.search.ops.TorchTransducerOps`); the onnxruntime recognizer runs the same
search on an export (:mod:`xtrans.onnx.search`). The offline :func:`greedy_search` is one
:meth:`~xtrans.search_core.greedy.GreedySearch.step` over all the frames.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from xtrans.search.ops import TorchTransducerOps
from xtrans.search_core import greedy as core
from xtrans.search_core.greedy import GreedyState
from xtrans.search_core.ops import Hypothesis

__all__ = ["GreedySearch", "GreedyState", "greedy_search"]


class GreedySearch(core.GreedySearch):
    """Greedy search with a model's prediction network and joiner (streaming or offline).

    ``step`` takes (B, T, D) tensors and (B,) long lengths on the model's device.

    Args:
        model: a :class:`~xtrans.models.transducer.Transducer` (``.predictor``, ``.joiner``, ``.blank``).
        max_symbols: most tokens emitted per frame (>= 1).
    """

    def __init__(self, model, max_symbols: int = 3):
        super().__init__(TorchTransducerOps(model), max_symbols)
        self.model = model


def greedy_search(model, enc: torch.Tensor, enc_lengths: Optional[torch.Tensor] = None,
                  max_symbols: int = 3) -> List[Hypothesis]:
    """Offline greedy search of a batch of encoder outputs.

    Args:
        model: the transducer.
        enc: (B, T, D) encoder frames, padded.
        enc_lengths: (B,) valid frames (default all ``T``).
        max_symbols: most tokens per frame.

    Returns:
        one :class:`~xtrans.search_core.ops.Hypothesis` per utterance (score as in
        :mod:`xtrans.search_core.greedy`).
    """
    return GreedySearch(model, max_symbols)(enc, enc_lengths)
