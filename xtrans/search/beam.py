"""Modified beam search on a PyTorch transducer, offline and streaming, with a scorer hook.

The search is :class:`xtrans.search_core.beam.ModifiedBeamSearch` (the topology, the scores,
merging and the scorer hook are documented there), run on the model's prediction network and
joiner (:class:`xtrans.search.ops.TorchTransducerOps`); the onnxruntime recognizer runs the same
search on an export (:mod:`xtrans.onnx.search`).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch

from xtrans.search.ops import TorchTransducerOps
from xtrans.search_core import beam as core
from xtrans.search_core.beam import BeamState
from xtrans.search_core.ops import Hypothesis
from xtrans.search_core.scorer import Scorer

__all__ = ["BeamState", "ModifiedBeamSearch", "modified_beam_search"]


class ModifiedBeamSearch(core.ModifiedBeamSearch):
    """Modified beam search with a model's prediction network and joiner (streaming or offline).

    ``step`` takes (B, T, D) tensors and (B,) long lengths on the model's device.

    Args:
        model: a :class:`~xtrans.models.transducer.Transducer`.
        beam: hypotheses kept per frame (>= 1).
        merge: merge hypotheses with equal tokens by log-add.
    """

    def __init__(self, model, beam: int = 4, merge: bool = True):
        super().__init__(TorchTransducerOps(model), beam, merge)
        self.model = model


def modified_beam_search(model, enc: torch.Tensor, enc_lengths: Optional[torch.Tensor] = None,
                         beam: int = 4, nbest: Optional[int] = None, merge: bool = True,
                         scorer: Union[None, Scorer, Sequence[Optional[Scorer]]] = None
                         ) -> List[List[Hypothesis]]:
    """Offline modified beam search of a batch of encoder outputs.

    Args:
        model: the transducer.
        enc: (B, T, D) encoder frames, padded.
        enc_lengths: (B,) valid frames (default all ``T``).
        beam: hypotheses kept per frame.
        nbest: hypotheses returned per utterance (default all that the beam holds, <= ``beam``).
        merge: merge equal token sequences by log-add.
        scorer: context for every utterance, or one (or None) per utterance
            (:mod:`xtrans.search_core.scorer`).

    Returns:
        per utterance, its hypotheses best first (scores as in :mod:`xtrans.search_core.beam`).
    """
    if nbest is not None and nbest < 1:
        raise ValueError(f"nbest: expected >= 1 or None, found {nbest}")
    return ModifiedBeamSearch(model, beam, merge)(enc, enc_lengths, nbest, scorer)
