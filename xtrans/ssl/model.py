"""HuBERT's masked prediction around an encoder: the pretraining head and its loss.

Hsu et al. (2021), "HuBERT: Self-Supervised Speech Representation Learning by Masked Prediction
of Hidden Units". Every frame ``t`` of an utterance has a target cluster ``z_t`` in ``1..K``
(:mod:`xtrans.ssl.targets`). Time spans of the projected CNN features are replaced by the
encoder's learned ``mask_emb`` (the encoder's own feature masking,
:mod:`xtrans.models.wav2vec2.feature_masking`: ``mask_prob``, ``mask_length``, at least 2 spans
per utterance, never in padding); the transformer sees the masked sequence and its output
``o_t`` (D,) predicts ``z_t`` through a projection ``A`` (D -> P) and one embedding ``e_c`` (P,)
per cluster::

    logit_t(c) = cos(A o_t, e_c) / tau                                    (tau = 0.1)
    loss = mean_{t in M} CE(logit_t, z_t) + w * mean_{t in U} CE(logit_t, z_t)

``M`` the masked frames, ``U`` the unmasked valid frames, ``w`` the unmasked weight (HuBERT's
``pred_nomask_weight``, 0 by default); padded frames are in neither. Shapes: ``B`` batch,
``S`` samples, ``T`` frames, ``D`` model dim, ``K`` clusters, ``P`` projection dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xtrans.masks import key_padding_mask
from xtrans.models.attention import attention_plan
from xtrans.models.wav2vec2.feature_masking import MIN_TIME_MASKS, mask_features, span_mask
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder

__all__ = ["MaskedPredictionOutput", "MaskedPredictionModel"]


@dataclass
class MaskedPredictionOutput:
    """One batch's masked prediction.

    Attributes:
        loss: the training loss (scalar tensor, with gradient).
        masked_loss: mean CE over masked frames (float; 0.0 when none).
        unmasked_loss: mean CE over unmasked valid frames (float; 0.0 when none).
        masked_accuracy: share of masked frames whose best cluster is the target.
        unmasked_accuracy: the same over unmasked valid frames.
        masked_frames: frames in ``M``.
        unmasked_frames: frames in ``U``.
    """

    loss: torch.Tensor
    masked_loss: float
    unmasked_loss: float
    masked_accuracy: float
    unmasked_accuracy: float
    masked_frames: int
    unmasked_frames: int


class MaskedPredictionModel(nn.Module):
    """An encoder with HuBERT's prediction head: ``final_proj`` (D -> P) and ``label_embs`` (K, P).

    Args:
        encoder: the encoder to pretrain; its time masking must be on (``mask_prob > 0``, which
            gives it ``mask_emb``): its ``mask_prob`` and ``mask_length`` are the pretraining's
            (HuBERT: 0.8 and 10).
        num_clusters: ``K``.
        proj_dim: ``P`` (HuBERT base: 256).
        temperature: ``tau`` of the cosine logits (HuBERT: 0.1).
        unmasked_weight: ``w``, the weight of the unmasked frames' loss (HuBERT: 0).

    Raises:
        ValueError: an encoder without time masking, or an option out of range (named).
    """

    def __init__(self, *, encoder: Wav2Vec2Encoder, num_clusters: int, proj_dim: int = 256,
                 temperature: float = 0.1, unmasked_weight: float = 0.0):
        super().__init__()
        if encoder.mask_prob <= 0 or encoder.mask_emb is None:
            raise ValueError(f"encoder: expected time masking on (mask_prob > 0) for masked prediction, found "
                             f"mask_prob={encoder.mask_prob}; build it with mask_prob (e.g. 0.8)")
        if num_clusters < 2:
            raise ValueError(f"num_clusters: expected >= 2, found {num_clusters}")
        if proj_dim < 1:
            raise ValueError(f"proj_dim: expected >= 1, found {proj_dim}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected > 0, found {temperature}")
        if not unmasked_weight >= 0:
            raise ValueError(f"unmasked_weight: expected >= 0, found {unmasked_weight}")
        self.encoder = encoder
        self.num_clusters, self.temperature, self.unmasked_weight = num_clusters, temperature, unmasked_weight
        self.final_proj = nn.Linear(encoder.embed_dim, proj_dim)
        self.label_embs = nn.Parameter(torch.randn(num_clusters, proj_dim))

    def encode_masked(self, waveform: torch.Tensor, lengths: torch.Tensor,
                      generator: Optional[torch.Generator] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's forward pass (full attention) with its time masking drawn here, in any mode.

        :meth:`Wav2Vec2Encoder.forward` masks in training only and does not say where; this is
        the same computation (extract, mask, positional convolution, layers), with the same draws
        from the same generator in training, and the time mask returned. Channel masking
        (``mask_channel_prob``) applies in training only, as in the encoder.

        Args:
            waveform: (B, S) float, 16 kHz, zero-padded.
            lengths: (B,) valid samples.
            generator: the masks' random source; ``None`` = torch's default one (the training
                run's, saved in its checkpoints); a seeded one gives a fixed validation mask.

        Returns:
            features (B, T, D) zero past each length, frame lengths (B,), time mask (B, T)
            (True = replaced by ``mask_emb``; never in padding).
        """
        enc = self.encoder
        x, frame_lengths = enc.extract(waveform, lengths)                              # (B, T, D)
        T = x.shape[1]
        time = span_mask(frame_lengths, T, enc.mask_prob, enc.mask_length, MIN_TIME_MASKS, generator)  # (B, T)
        x = torch.where(time[:, :, None], enc.mask_emb.to(x.dtype), x)
        if self.training and enc.mask_channel_prob > 0:
            x = mask_features(x, frame_lengths, None, mask_prob=0.0, mask_length=enc.mask_length,
                              mask_channel_prob=enc.mask_channel_prob,
                              mask_channel_length=enc.mask_channel_length, generator=generator)
        plan = attention_plan(frame_lengths, T, None, enc.rel_pos_bias)
        # the tail of Wav2Vec2Encoder.forward (positional convolution, pre/post-LN, layer drop, layers)
        h = enc._contextualize(x, enc.pos_conv(x, None, frame_lengths), lambda layer, y: layer(y, plan))
        valid = key_padding_mask(frame_lengths, T)
        return h.masked_fill(~valid[:, :, None], 0.0), frame_lengths, time

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine logits over the clusters: (..., D) -> (..., K), ``cos(A o, e_c) / tau``."""
        proj = F.normalize(self.final_proj(features), dim=-1)
        return proj @ F.normalize(self.label_embs, dim=-1).T / self.temperature

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> MaskedPredictionOutput:
        """The masked prediction loss of a batch.

        Args:
            waveform: (B, S) float, zero-padded; lengths: (B,) valid samples.
            targets: (B, T) int64 cluster of every frame (values past each utterance's frames
                are ignored), ``T`` the encoder's frames for ``S`` samples.
            generator: as in :meth:`encode_masked`.

        Raises:
            ValueError: targets of another frame count than the encoder's.
        """
        h, frame_lengths, time = self.encode_masked(waveform, lengths, generator)
        if targets.shape != time.shape:
            raise ValueError(f"targets: expected (B, T) = {tuple(time.shape)} (the encoder's frames), found "
                             f"{tuple(targets.shape)}")
        valid = key_padding_mask(frame_lengths, time.shape[1])
        masked, unmasked = time & valid, valid & ~time
        loss_m, acc_m, n_m = self._term(h, targets, masked)
        loss = loss_m
        loss_u, acc_u, n_u = torch.zeros((), device=h.device), 0.0, int(unmasked.sum())
        if self.unmasked_weight > 0:
            loss_u, acc_u, n_u = self._term(h, targets, unmasked)
            loss = loss + self.unmasked_weight * loss_u
        return MaskedPredictionOutput(loss=loss, masked_loss=float(loss_m.detach()),
                                      unmasked_loss=float(loss_u.detach()), masked_accuracy=acc_m,
                                      unmasked_accuracy=acc_u, masked_frames=n_m, unmasked_frames=n_u)

    def _term(self, h: torch.Tensor, targets: torch.Tensor, select: torch.Tensor
              ) -> Tuple[torch.Tensor, float, int]:
        """Mean CE and accuracy over the frames ``select`` (B, T) marks; zero loss (with a graph) when none."""
        n = int(select.sum())
        if n == 0:
            return h.sum() * 0.0, 0.0, 0
        logits = self.logits(h[select])                                                  # (n, K)
        goal = targets[select]
        loss = F.cross_entropy(logits.float(), goal)
        accuracy = float((logits.argmax(-1) == goal).float().mean())
        return loss, accuracy, n
