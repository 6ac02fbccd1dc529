"""Dev WER during training: greedy search (``xtrans.search.greedy``, imported lazily) and edit distance."""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from xtrans.masks import StreamingConfig


def word_errors(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between word sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


@torch.no_grad()
def greedy_hypotheses(model, waveform: torch.Tensor, lengths: torch.Tensor,
                      streaming: Optional[StreamingConfig]) -> List[List[int]]:
    """Token ids per utterance of a padded batch (B, S) by greedy search under ``streaming``."""
    from xtrans.search.greedy import greedy_search  # optional dependency of training

    enc, enc_lengths = model.encode(waveform, lengths, streaming)
    return [list(h.tokens) for h in greedy_search(model, enc, enc_lengths)]
