"""The XLSR-Transducer: encoder + prediction network + joiner, trained with the RNN-T loss.

``Transducer.forward`` is the training forward under a streaming mask::

    enc (B, T, D) = encoder(waveform (B, S), lengths, streaming)
    pred (B, U+1, D_pred) = predictor(targets (B, U))
    logits (B, T, U+1, V) = joiner(enc[:, :, None], pred[:, None])
    loss = rnnt_loss(logits, targets, ...)  [+ ctc_weight * CTC(enc)]

The architecture is kept as a plain dict (``arch``) so that a checkpoint rebuilds the model
without the pretrained file it started from (:meth:`Transducer.from_arch`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.losses import rnnt_loss
from xtrans.masks import StreamingConfig
from xtrans.models.joiner import Joiner
from xtrans.models.predictor import LSTMPredictor, StatelessPredictor
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder


@dataclass
class TransducerOutput:
    """Losses of one batch, each averaged over the utterances of the batch.

    Attributes:
        loss: the training objective (RNN-T + ctc_weight * CTC).
        rnnt: the RNN-T negative log-likelihood per utterance, (B,), detached.
        ctc: the CTC negative log-likelihood, averaged over the utterances (not per token), or None.
        encoder_lengths: frames per utterance (B,).
    """

    loss: torch.Tensor
    rnnt: torch.Tensor
    ctc: Optional[torch.Tensor]
    encoder_lengths: torch.Tensor


def build_predictor(kind: str, vocab_size: int, blank: int, **kwargs: Any) -> nn.Module:
    """``stateless`` -> :class:`StatelessPredictor`, ``lstm`` -> :class:`LSTMPredictor`."""
    if kind == "stateless":
        return StatelessPredictor(vocab_size=vocab_size, blank=blank, **kwargs)
    if kind == "lstm":
        return LSTMPredictor(vocab_size=vocab_size, blank=blank, **kwargs)
    raise ValueError(f"predictor kind: expected 'stateless' or 'lstm', found {kind!r}")


class Transducer(nn.Module):
    """Encoder, prediction network, joiner and (optionally) an auxiliary CTC head.

    Args:
        encoder: a :class:`Wav2Vec2Encoder`.
        predictor: a stateless or LSTM prediction network.
        joiner: the :class:`Joiner`.
        vocab_size: ``V`` including blank.
        blank: blank id (0 in xtrans tokenizers).
        ctc_weight: weight of the auxiliary CTC loss on the encoder output (0 = no CTC head).
        arch: the plain-dict architecture (set by :func:`build_transducer`).
    """

    def __init__(self, *, encoder: Wav2Vec2Encoder, predictor: nn.Module, joiner: Joiner,
                 vocab_size: int, blank: int = 0, ctc_weight: float = 0.0,
                 arch: Optional[Dict[str, Any]] = None):
        super().__init__()
        if not 0 <= blank < vocab_size:
            raise ValueError(f"blank: expected in [0, {vocab_size}), found {blank}")
        self.encoder = encoder
        self.predictor = predictor
        self.joiner = joiner
        self.vocab_size = vocab_size
        self.blank = blank
        self.ctc_weight = ctc_weight
        self.ctc_head = nn.Linear(encoder.embed_dim, vocab_size) if ctc_weight > 0 else None
        self.arch = arch

    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor,
               streaming: Optional[StreamingConfig] = None):
        """(B, S), (B,) -> encoder frames (B, T, D), frame lengths (B,)."""
        return self.encoder(waveform, lengths, streaming=streaming)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor, streaming: Optional[StreamingConfig] = None) -> TransducerOutput:
        """The training forward.

        Args:
            waveform: (B, S) float, 16 kHz, zero-padded.
            lengths: (B,) samples.
            targets: (B, U) token ids (no blank), padded with anything.
            target_lengths: (B,) tokens.
            streaming: the mask to train under (None = full attention).
        """
        enc, enc_lengths = self.encode(waveform, lengths, streaming)
        U = int(target_lengths.max()) if targets.numel() else 0
        targets = targets[:, :U]
        pad = ~(torch.arange(U, device=targets.device)[None, :] < target_lengths[:, None])
        targets = targets.masked_fill(pad, 1 if self.blank == 0 else 0).long()  # any non-blank id
        pred = self.predictor(targets)  # (B, U+1, D_pred)
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
        return TransducerOutput(loss=loss, rnnt=nll.detach(), ctc=ctc, encoder_lengths=enc_lengths)

    @classmethod
    def from_arch(cls, arch: Dict[str, Any]) -> "Transducer":
        """Rebuilds a (randomly initialised) model from :attr:`arch` (e.g. from a checkpoint)."""
        return build_transducer(encoder=Wav2Vec2Encoder(**arch["encoder"]), **{
            k: copy.deepcopy(v) for k, v in arch.items() if k != "encoder"}, encoder_kwargs=arch["encoder"])


def build_transducer(*, encoder: Wav2Vec2Encoder, vocab_size: int, predictor: Dict[str, Any],
                     joiner_dim: int, blank: int = 0, ctc_weight: float = 0.0,
                     encoder_kwargs: Dict[str, Any]) -> Transducer:
    """Assembles a :class:`Transducer` and records its plain-dict architecture.

    Args:
        encoder: the encoder module (already built or loaded).
        vocab_size: ``V`` including blank.
        predictor: ``{"kind": "stateless" | "lstm", ...}`` keyword arguments of the predictor.
        joiner_dim: ``J``.
        blank: blank id.
        ctc_weight: auxiliary CTC weight.
        encoder_kwargs: the keyword arguments that rebuild ``encoder``.
    """
    pred_kwargs = dict(predictor)
    kind = pred_kwargs.pop("kind")
    pred = build_predictor(kind, vocab_size, blank, **pred_kwargs)
    joiner = Joiner(encoder_dim=encoder.embed_dim, predictor_dim=pred.output_dim, joiner_dim=joiner_dim,
                    vocab_size=vocab_size)
    arch = dict(encoder=dict(encoder_kwargs), vocab_size=vocab_size, predictor=dict(predictor),
                joiner_dim=joiner_dim, blank=blank, ctc_weight=ctc_weight)
    return Transducer(encoder=encoder, predictor=pred, joiner=joiner, vocab_size=vocab_size, blank=blank,
                      ctc_weight=ctc_weight, arch=arch)
