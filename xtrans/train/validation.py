"""Validation during training: dev loss under the stage's validation mask, and the dev WER.

Every rank scores its share of the dev batches; the sums are all-reduced, so every rank gets
the same numbers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch

from xtrans.data.dataset import AsrDataset, Batch, collate
from xtrans.data.sampler import DurationBatchSampler
from xtrans.masks import StreamingConfig
from xtrans.models.transducer import Transducer
from xtrans.train.config import TrainConfig
from xtrans.train.runtime import Runtime

if TYPE_CHECKING:
    from xtrans.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@torch.no_grad()
def validate(model: Transducer, dev_set: AsrDataset, tokenizer: "Tokenizer", cfg: TrainConfig,
             runtime: Runtime) -> Dict[str, float]:
    """Dev loss (mean RNN-T NLL per utterance, and per token) under ``cfg.mask.for_validation()``.

    Also ``dev_wer`` (percent, greedy search of the first ``checkpoint.wer_max_utts`` utterances)
    when ``checkpoint.best_metric`` is ``dev_wer``. Utterances whose loss is not finite are left
    out (a warning names them).
    """
    model.eval()
    d = cfg.data
    sampler = DurationBatchSampler(dev_set.durations(), d.dev_max_seconds or d.max_seconds,
                                   num_buckets=1, shuffle=False, max_batch_size=d.max_batch_size)
    batches = list(iter(sampler))[runtime.dist.rank::runtime.dist.world_size]
    streaming = cfg.mask.for_validation()
    nll, utts, tokens = 0.0, 0, 0
    want_wer = cfg.checkpoint.best_metric == "dev_wer"
    errors, words, decoded = 0, 0, 0
    max_wer_utts = cfg.checkpoint.wer_max_utts
    for idx in batches:
        batch = collate([dev_set[i] for i in idx]).to(runtime.device)
        with runtime.autocast():
            out = model(batch.waveforms, batch.waveform_lengths, batch.targets, batch.target_lengths,
                        streaming=streaming)
        rnnt = out.rnnt.float()
        finite = torch.isfinite(rnnt)
        if not bool(finite.all()):
            logger.warning("dev: non-finite loss for %s; left out",
                           " ".join(u for u, f in zip(batch.utt_ids, finite.tolist()) if not f))
        nll += float(rnnt[finite].sum())
        utts += int(finite.sum())
        tokens += int(batch.target_lengths[finite].sum())
        if want_wer and (max_wer_utts is None or decoded < max_wer_utts):
            e, w = batch_word_errors(model, tokenizer, batch, streaming)
            errors, words, decoded = errors + e, words + w, decoded + len(batch.utt_ids)
    nll, utts, tokens, errors, words = runtime.all_reduce([nll, float(utts), float(tokens), float(errors),
                                                           float(words)])
    result = {"dev_loss": nll / max(utts, 1.0), "dev_loss_per_token": nll / max(tokens, 1.0)}
    if want_wer:
        result["dev_wer"] = 100.0 * errors / max(words, 1.0)
    return result


def batch_word_errors(model: Transducer, tokenizer: "Tokenizer", batch: Batch,
                      streaming: Optional[StreamingConfig]) -> Tuple[int, int]:
    """Word errors and reference words of a dev batch by greedy search (xtrans.search.greedy)."""
    from xtrans.scoring.wer import align
    from xtrans.train.dev_decode import greedy_hypotheses

    hyps = greedy_hypotheses(model, batch.waveforms, batch.waveform_lengths, streaming)
    errors = words = 0
    for b, hyp in enumerate(hyps):
        ref = tokenizer.decode(batch.targets[b, : int(batch.target_lengths[b])].tolist()).split()
        errors += align(ref, tokenizer.decode(hyp).split()).counts.errors
        words += len(ref)
    return errors, words
