"""Dev WER during training: greedy hypotheses (``xtrans.search.greedy``, imported lazily);
the word errors come from :func:`xtrans.scoring.wer.align`."""

from __future__ import annotations

from typing import List, Optional

import torch

from xtrans.masks import StreamingConfig


@torch.no_grad()
def greedy_hypotheses(model, waveform: torch.Tensor, lengths: torch.Tensor,
                      streaming: Optional[StreamingConfig]) -> List[List[int]]:
    """Token ids per utterance of a padded batch (B, S) by greedy search under ``streaming``."""
    from xtrans.search.greedy import greedy_search  # optional dependency of training

    enc, enc_lengths = model.encode(waveform, lengths, streaming)
    return [list(h.tokens) for h in greedy_search(model, enc, enc_lengths)]
