"""The XLSR-Transducer: encoder + prediction network + joiner, trained with the RNN-T loss.

``Transducer.forward`` is the training forward under a streaming mask::

    enc (B, T, D) = encoder(waveform (B, S), lengths, streaming)
    pred (B, U+1, D_pred) = predictor(targets (B, U))
    logits (B, T, U+1, V) = joiner(enc[:, :, None], pred[:, None])
    loss = rnnt_loss(logits, targets, ...)  [+ ctc_weight * CTC(enc)]

or, with the pruned loss (Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR training",
Interspeech 2022; icefall's pruned_transducer_stateless recipes)::

    am (B, T, V), lm (B, U+1, V) = simple_am_proj(enc), simple_lm_proj(pred)
    simple = simple_rnnt_loss(am, lm, ...)            # trivial joiner am + lm
    ranges (B, T, R) = prune_ranges(am, lm, ..., R)   # R label positions per frame
    logits (B, T, R, V) = joiner(*prune_joiner_inputs(enc_proj, pred_proj, ranges))
    loss = simple_scale * simple + pruned_scale * pruned_rnnt_loss(logits, ...)

with icefall's warm-up: over the first ``warmup_updates`` updates ``simple_scale`` falls
linearly from 1.0 to ``simple_loss_scale`` and ``pruned_scale`` rises from 0.1 to 1.0.

:attr:`Transducer.arch` is the typed :class:`~xtrans.models.arch.ModelArch` it was built from
(:func:`xtrans.models.config.build_model`), so that a checkpoint rebuilds the model without the
pretrained file it started from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.losses import prune_joiner_inputs, prune_ranges, pruned_rnnt_loss, rnnt_loss, simple_rnnt_loss
from xtrans.masks import StreamingConfig
from xtrans.models.arch import LOSS_KINDS, ModelArch
from xtrans.models.encoder import Encoder, check_encoder
from xtrans.models.joiner import Joiner


@dataclass
class TransducerOutput:
    """Losses of one batch, each averaged over the utterances of the batch.

    Attributes:
        loss: the training objective (RNN-T + ctc_weight * CTC; with the pruned loss, the
            scheduled sum of the simple and pruned terms + ctc_weight * CTC).
        rnnt: the RNN-T negative log-likelihood per utterance, (B,), detached; with the pruned
            loss that of the pruned lattice (an upper bound of the full one).
        ctc: the CTC negative log-likelihood, averaged over the utterances (not per token), or None.
        encoder_lengths: frames per utterance (B,).
        simple: the simple (trivial-joiner) loss averaged over the utterances, detached, or None
            (full loss).
    """

    loss: torch.Tensor
    rnnt: torch.Tensor
    ctc: Optional[torch.Tensor]
    encoder_lengths: torch.Tensor
    simple: Optional[torch.Tensor] = None


def pruned_loss_scales(updates: Optional[int], simple_loss_scale: float, warmup_updates: int):
    """icefall's warm-up of the pruned RNN-T loss: ``(simple_scale, pruned_scale)`` at an update.

    ``simple_scale`` goes linearly from 1.0 to ``simple_loss_scale`` and ``pruned_scale`` from
    0.1 to 1.0 over ``warmup_updates`` updates, then both stay; ``updates=None`` (evaluation)
    gives the final scales. (icefall zipformer ``train.py``, ``compute_loss``.)
    """
    if updates is None or updates >= warmup_updates:
        return simple_loss_scale, 1.0
    progress = updates / warmup_updates
    return 1.0 - progress * (1.0 - simple_loss_scale), 0.1 + 0.9 * progress


class Transducer(nn.Module):
    """Encoder, prediction network, joiner and (optionally) an auxiliary CTC head.

    Args:
        encoder: an :class:`~xtrans.models.encoder.Encoder` (an ``nn.Module``).
        predictor: a stateless or LSTM prediction network.
        joiner: the :class:`Joiner`.
        vocab_size: ``V`` including blank.
        blank: blank id (0 in xtrans tokenizers).
        ctc_weight: weight of the auxiliary CTC loss on the encoder output (0 = no CTC head).
        arch: the architecture it was built from (set by :func:`xtrans.models.config.build_model`;
            None for a module assembled by hand, which a checkpoint cannot rebuild).
        loss_kind: ``full`` (the exact RNN-T loss on the (B, T, U+1, V) lattice) or ``pruned``
            (simple + pruned RNN-T; adds the ``simple_am_proj``/``simple_lm_proj`` layers).
        prune_range: ``R``, label positions per frame of the pruned loss (raised for a batch
            where ``T_b (R - 1) < U_b``, so that a path fits).
        simple_loss_scale: weight of the simple loss after warm-up.
        warmup_updates: updates over which the pruned loss is phased in.

    Raises:
        TypeError: when ``encoder`` lacks a member of :class:`~xtrans.models.encoder.Encoder`.
        ValueError: a ``blank`` outside the vocabulary, an unknown ``loss_kind``.
    """

    def __init__(self, *, encoder: Encoder, predictor: nn.Module, joiner: Joiner,
                 vocab_size: int, blank: int = 0, ctc_weight: float = 0.0,
                 arch: Optional[ModelArch] = None, loss_kind: str = "full", prune_range: int = 5,
                 simple_loss_scale: float = 0.5, warmup_updates: int = 2000):
        super().__init__()
        check_encoder(encoder)
        if not 0 <= blank < vocab_size:
            raise ValueError(f"blank: expected in [0, {vocab_size}), found {blank}")
        if loss_kind not in LOSS_KINDS:
            raise ValueError(f"loss_kind: expected one of {LOSS_KINDS}, found {loss_kind!r}")
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        self.vocab_size = vocab_size
        self.blank = blank
        self.ctc_weight = ctc_weight
        self.ctc_head = nn.Linear(encoder.embed_dim, vocab_size) if ctc_weight > 0 else None
        self.arch = arch
        self.loss_kind = loss_kind
        self.prune_range = prune_range
        self.simple_loss_scale = simple_loss_scale
        self.warmup_updates = warmup_updates
        if loss_kind == "pruned":  # the trivial joiner of the simple loss (icefall's names)
            self.simple_am_proj = nn.Linear(encoder.embed_dim, vocab_size)
            self.simple_lm_proj = nn.Linear(predictor.output_dim, vocab_size)

    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor,
               streaming: Optional[StreamingConfig] = None):
        """(B, S), (B,) -> encoder frames (B, T, D), frame lengths (B,)."""
        return self.encoder(waveform, lengths, streaming=streaming)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor, streaming: Optional[StreamingConfig] = None,
                updates: Optional[int] = None) -> TransducerOutput:
        """The training forward.

        Args:
            waveform: (B, S) float, 16 kHz, zero-padded.
            lengths: (B,) samples.
            targets: (B, U) token ids (no blank), padded with anything.
            target_lengths: (B,) tokens.
            streaming: the mask to train under (None = full attention).
            updates: optimizer updates done so far, for the pruned loss's warm-up (None = after
                warm-up); unused by the full loss.
        """
        enc, enc_lengths = self.encode(waveform, lengths, streaming)
        U = int(target_lengths.max()) if targets.numel() else 0
        targets = targets[:, :U]
        pad = ~(torch.arange(U, device=targets.device)[None, :] < target_lengths[:, None])
        targets = targets.masked_fill(pad, 1 if self.blank == 0 else 0).long()  # any non-blank id
        pred = self.predictor(targets)  # (B, U+1, D_pred)
        simple = None
        if self.loss_kind == "pruned":
            loss, nll, simple = self._pruned_loss(enc, enc_lengths, pred, targets, target_lengths, updates)
        else:
            logits = self.joiner(enc[:, :, None, :], pred[:, None, :, :])  # (B, T, U+1, V)
            nll = rnnt_loss(logits, targets.int(), enc_lengths.int(), target_lengths.int(), blank=self.blank,
                            reduction="none")
            loss = nll.mean()
        ctc = None
        if self.ctc_head is not None:
            log_probs = F.log_softmax(self.ctc_head(enc).float(), dim=-1).transpose(0, 1)  # (T, B, V)
            ctc = F.ctc_loss(log_probs, targets, enc_lengths, target_lengths, blank=self.blank,
                             reduction="none", zero_infinity=True)
            ctc = ctc.mean()  # per utterance, like the RNN-T term, so ctc_weight compares like with like
            loss = loss + self.ctc_weight * ctc
        return TransducerOutput(loss=loss, rnnt=nll.detach(), ctc=ctc, encoder_lengths=enc_lengths,
                                simple=simple)

    def _pruned_loss(self, enc, enc_lengths, pred, targets, target_lengths, updates):
        """(scheduled loss, pruned NLL (B,), simple loss mean) from enc (B, T, D), pred (B, U+1, D_pred)."""
        am = self.simple_am_proj(enc)  # (B, T, V)
        lm = self.simple_lm_proj(pred)  # (B, U+1, V)
        simple = simple_rnnt_loss(am, lm, targets, enc_lengths, target_lengths, blank=self.blank,
                                  reduction="none").mean()
        # A path needs T_b (R - 1) >= U_b; widen R for a batch that would have none.
        needed = int(((target_lengths + enc_lengths - 1) // enc_lengths).max()) + 1
        ranges = prune_ranges(am, lm, targets, enc_lengths, target_lengths, max(self.prune_range, needed),
                              blank=self.blank)  # (B, T, R)
        enc_pruned, pred_pruned = prune_joiner_inputs(self.joiner.encoder_proj(enc),
                                                      self.joiner.predictor_proj(pred), ranges)
        logits = self.joiner(enc_pruned, pred_pruned, projected=True)  # (B, T, R, V)
        nll = pruned_rnnt_loss(logits, targets, ranges, enc_lengths, target_lengths, blank=self.blank,
                               reduction="none")
        simple_scale, pruned_scale = pruned_loss_scales(updates, self.simple_loss_scale, self.warmup_updates)
        loss = simple_scale * simple + pruned_scale * nll.mean()
        return loss, nll, simple.detach()
