"""Greedy hypotheses of a dev batch, for the dev WER the trainer reports.

The trainer scores them against the references with :func:`xtrans.scoring.wer.align`; this
module only decodes (:func:`xtrans.search.greedy.greedy_search`, imported when first used so that
training does not load the search modules unless a dev WER is asked for).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from xtrans.masks import StreamingConfig


@torch.no_grad()
def greedy_hypotheses(model, waveform: torch.Tensor, lengths: torch.Tensor,
                      streaming: Optional[StreamingConfig]) -> List[List[int]]:
    """Token ids per utterance of a padded batch (B, S) by greedy search under ``streaming``."""
    from xtrans.search.greedy import greedy_search

    enc, enc_lengths = model.encode(waveform, lengths, streaming)
    return [list(h.tokens) for h in greedy_search(model, enc, enc_lengths)]
