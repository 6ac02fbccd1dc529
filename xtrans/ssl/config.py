"""The settings of a HuBERT-style pretraining run (:mod:`xtrans.ssl.trainer`).

One frozen dataclass, :class:`PretrainConfig`; ``python -m xtrans.bin.pretrain_ssl`` has one
option per field (``--num_clusters 100 --mask_prob 0.8 ...``). The encoder's architecture is not
here: it comes from a recipe's ``model.encoder`` section or a preset
(:class:`~xtrans.models.config.EncoderConfig`), with its time masking replaced by ``mask_prob``
and ``mask_length`` below. Defaults are HuBERT base's where they carry over (Hsu et al., 2021:
mask 0.8 x 10 frames, final projection 256, temperature 0.1, Adam betas 0.9/0.98, weight decay
0.01, warm-up then linear decay); sizes (batch seconds, updates, clusters) are for small runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from xtrans.ssl.targets import FEATURE_KINDS
from xtrans.train.scheduler import DECAYS

__all__ = ["PretrainConfig"]


@dataclass(frozen=True)
class PretrainConfig:
    """How the encoder is pretrained.

    Attributes:
        iteration: 1 = targets from log-mel frames; 2 = from layer ``layer`` of ``features_from``.
        features_from: with iteration 2, the model whose layer is clustered (a checkpoint or
            ``encoder.pt`` of an iteration-1 run, a Hugging Face directory, ...).
        layer: with iteration 2, its transformer layer, 1-based (HuBERT base: 6 of 12).
        num_clusters: ``K`` (HuBERT: 100 in iteration 1, 500 in iteration 2).
        n_mels: log-mel filters of the iteration-1 features.
        f_max: top of the highest mel filter in Hz (None = Nyquist; 4000 for audio upsampled from 8 kHz).
        kmeans_max_frames: frames the k-means is fitted on (a random sample).
        kmeans_max_iter: Lloyd iterations at most.
        mask_prob, mask_length: the time masking of pretraining (the encoder's ``mask_prob`` and
            ``mask_length``; see :mod:`xtrans.models.wav2vec2.feature_masking`).
        proj_dim: ``P``, the projection before the cosine logits.
        temperature: ``tau`` of the logits.
        unmasked_weight: weight of the loss on unmasked frames (0 = masked frames only).
        max_seconds: padded seconds per batch (:class:`~xtrans.data.sampler.DurationBatchSampler`).
        num_buckets: its duration buckets.
        num_workers: data loading processes (0 = in the training process).
        max_updates: optimizer updates.
        lr: peak learning rate (AdamW).
        betas: AdamW's betas.
        weight_decay: AdamW's decoupled weight decay.
        warmup_updates: linear warm-up, then ``decay`` (``xtrans.train.scheduler``).
        decay: ``cosine | linear | noam | constant``, ending at ``max_updates``.
        min_lr_ratio: the decay's floor, relative to ``lr``.
        grad_clip: gradient-norm clip.
        save_interval_updates: a checkpoint every so many updates (and at the end).
        keep_last: checkpoints kept.
        seed: everything random (initialisation, k-means, batches, masks, dropout) follows from it.
    """

    iteration: int = 1
    features_from: Optional[str] = None
    layer: Optional[int] = None
    num_clusters: int = 100
    n_mels: int = 80
    f_max: Optional[float] = None
    kmeans_max_frames: int = 100_000
    kmeans_max_iter: int = 100
    mask_prob: float = 0.8
    mask_length: int = 10
    proj_dim: int = 256
    temperature: float = 0.1
    unmasked_weight: float = 0.0
    max_seconds: float = 60.0
    num_buckets: int = 5
    num_workers: int = 0
    max_updates: int = 1000
    lr: float = 5.0e-4
    betas: Tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_updates: int = 100
    decay: str = "linear"
    min_lr_ratio: float = 0.0
    grad_clip: float = 10.0
    save_interval_updates: int = 200
    keep_last: int = 2
    seed: int = 1

    def __post_init__(self):
        if self.iteration not in (1, 2):
            raise ValueError(f"iteration: expected 1 (log-mel targets) or 2 (layer targets), found {self.iteration}")
        if self.iteration == 2 and (self.features_from is None or self.layer is None):
            raise ValueError("features_from, layer: expected both with iteration 2 (the model whose layer is "
                             f"clustered), found {self.features_from!r}, {self.layer!r}")
        if self.iteration == 1 and (self.features_from is not None or self.layer is not None):
            raise ValueError("features_from, layer: expected neither with iteration 1 (log-mel targets), found "
                             f"{self.features_from!r}, {self.layer!r}; pass iteration 2")
        if self.layer is not None and self.layer < 1:
            raise ValueError(f"layer: expected >= 1 (1-based transformer layer), found {self.layer}")
        for name in ("num_clusters",):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}: expected >= 2, found {getattr(self, name)}")
        for name in ("n_mels", "kmeans_max_frames", "mask_length", "proj_dim", "num_buckets", "max_updates",
                     "save_interval_updates", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, found {getattr(self, name)}")
        for name in ("kmeans_max_iter", "num_workers", "warmup_updates"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, found {getattr(self, name)}")
        if self.kmeans_max_frames < self.num_clusters:
            raise ValueError(f"kmeans_max_frames: expected >= num_clusters ({self.num_clusters}), found "
                             f"{self.kmeans_max_frames}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob: expected in (0, 1] (masked prediction needs masks), found {self.mask_prob}")
        for name in ("temperature", "max_seconds", "lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, found {getattr(self, name)}")
        for name in ("unmasked_weight", "weight_decay", "min_lr_ratio"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected >= 0, found {getattr(self, name)}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay: expected one of {DECAYS}, found {self.decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: expected two values in [0, 1), found {self.betas}")

    @property
    def feature_kind(self) -> str:
        """What the targets cluster (:data:`~xtrans.ssl.targets.FEATURE_KINDS`)."""
        return FEATURE_KINDS[self.iteration - 1]
