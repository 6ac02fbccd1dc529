"""HuBERT's frame targets: k-means clusters of features framed like the encoder.

Iteration 1 clusters log-mel frames (:func:`xtrans.features.log_mel`) computed with the CNN's own
receptive field and stride (25 ms windows, 20 ms hop for XLSR's CNN), from the waveform after the
encoder's waveform normalisation (what the CNN reads), so that feature frame ``t`` and encoder
frame ``t`` read the same samples and an utterance of ``S`` samples has exactly the encoder's
``T = (S - 400) // 320 + 1`` frames (:func:`xtrans.frames.num_frames`). Iteration 2 clusters
the output of transformer layer ``N`` (1-based) of a model pretrained in iteration 1, run in
evaluation mode on each utterance (Hsu et al., 2021: layer 6 of HuBERT base)::

    x_t     = features of frame t          (F = n_mels, or the teacher's D)
    y_t     = (x_t - mu) / sigma           (mu, sigma per dimension, over the fitting sample)
    z_t     = argmin_k ||y_t - c_k||^2     (c: k-means++ / Lloyd on a sample of frames)

:class:`FrameTargets` holds the recipe (feature kind and options, ``mu``, ``sigma``, ``c``) as
plain values and tensors (:meth:`FrameTargets.state_dict`), so a checkpoint carries its own
codebook and a resumed run never refits it. Targets are computed batch by batch during training;
past each utterance's frames they are -1.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import torch

from xtrans.features import log_mel
from xtrans.masks import key_padding_mask
from xtrans.models.wav2vec2.frontend import WAVEFORM_NORMS, normalize_waveform
from xtrans.models.wav2vec2.model import Wav2Vec2Encoder
from xtrans.ssl.kmeans import KMeansResult, assign, kmeans

logger = logging.getLogger(__name__)

__all__ = ["FEATURE_KINDS", "IGNORE", "FeatureSpec", "FrameTargets", "cnn_framing", "fit_frame_targets",
           "frame_features", "layer_output", "log_mel_spec"]

FEATURE_KINDS = ("logmel", "layer")
"""What the targets cluster: log-mel frames (iteration 1) or a layer of a pretrained model (iteration 2)."""

IGNORE = -1
"""The target past each utterance's frames."""


@dataclass(frozen=True)
class FeatureSpec:
    """The features that the k-means clusters.

    Attributes:
        kind: ``logmel`` or ``layer``.
        window: samples per log-mel frame (the CNN's receptive field, 400).
        hop: samples between frames (the CNN's stride, 320).
        waveform_norm: the encoder's waveform normalisation, applied before the log-mel
            (``none | utterance | cumulative``).
        n_mels: mel filters (``logmel``).
        f_max: top of the highest mel filter in Hz (``None`` = Nyquist), e.g. 4000 for 8 kHz audio.
        features_from: the model whose layer is clustered (``layer``): a checkpoint or directory
            that :func:`xtrans.ssl.checkpoint.load_encoder` reads.
        layer: its transformer layer, 1-based (``layer``).
    """

    kind: str = "logmel"
    window: int = 400
    hop: int = 320
    waveform_norm: str = "none"
    n_mels: int = 80
    f_max: Optional[float] = None
    features_from: Optional[str] = None
    layer: Optional[int] = None

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"kind: expected one of {FEATURE_KINDS}, found {self.kind!r}")
        if self.waveform_norm not in WAVEFORM_NORMS:
            raise ValueError(f"waveform_norm: expected one of {WAVEFORM_NORMS}, found {self.waveform_norm!r}")
        if self.kind == "layer" and (self.features_from is None or self.layer is None or self.layer < 1):
            raise ValueError(f"features_from, layer: expected a model and a layer >= 1 for layer targets, found "
                             f"{self.features_from!r}, {self.layer!r}")
        if self.n_mels < 1:
            raise ValueError(f"n_mels: expected >= 1, found {self.n_mels}")


def cnn_framing(encoder: Wav2Vec2Encoder) -> Tuple[int, int]:
    """The (window, hop) of log-mel frames framed like ``encoder``'s CNN: its receptive field and stride.

    Such frames number exactly the CNN's for every waveform length ``S``: a stack of convolutions
    ``(k_i, s_i)`` gives ``floor((floor((S - k_1) / s_1) + 1 - k_2) / s_2) + 1 ...``, and as
    ``floor(floor(a / b) / c) = floor(a / (b c))`` for integers, that is ``(S - window) // hop + 1``
    with ``window`` the receptive field and ``hop`` the product of the strides (400 and 320 for
    XLSR's CNN: :func:`xtrans.frames.num_frames`).
    """
    fe = encoder.feature_extractor
    return fe.receptive_field, fe.stride


def log_mel_spec(encoder: Wav2Vec2Encoder, n_mels: int = 80, f_max: Optional[float] = None) -> FeatureSpec:
    """The iteration-1 :class:`FeatureSpec` framed like ``encoder``'s CNN (checked)."""
    window, hop = cnn_framing(encoder)
    return FeatureSpec(kind="logmel", window=window, hop=hop, waveform_norm=encoder.waveform_norm,
                       n_mels=n_mels, f_max=f_max)


def layer_output(encoder: Wav2Vec2Encoder, layer: int, waveform: torch.Tensor, lengths: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Output of transformer layer ``layer`` (1-based) of ``encoder`` (evaluation mode, full
    attention): (B, S), (B,) -> (B, T, D) zero past each length, frame lengths (B,)."""
    if not 1 <= layer <= len(encoder.layers):
        raise ValueError(f"layer: expected 1..{len(encoder.layers)} (the model's transformer layers), found {layer}")
    if encoder.training:
        raise ValueError("encoder: expected evaluation mode for layer features (no dropout, no masking)")
    captured = []
    handle = encoder.layers[layer - 1].register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        _, frame_lengths = encoder(waveform, lengths)
    finally:
        handle.remove()
    out = captured[0]
    valid = key_padding_mask(frame_lengths, out.shape[1])
    return out.masked_fill(~valid[:, :, None], 0.0), frame_lengths


def frame_features(spec: FeatureSpec, waveform: torch.Tensor, lengths: torch.Tensor,
                   teacher: Optional[Wav2Vec2Encoder] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The features of ``spec``: (B, S) raw waveform, (B,) lengths -> (B, T, F), frame lengths (B,).

    ``teacher`` is the model of a ``layer`` spec (:func:`xtrans.ssl.checkpoint.load_encoder`
    of ``spec.features_from``, in evaluation mode).
    """
    if spec.kind == "layer":
        if teacher is None:
            raise ValueError(f"teacher: expected the model of {spec.features_from} for layer targets, found None")
        with torch.no_grad():
            return layer_output(teacher, spec.layer, waveform, lengths)
    x = normalize_waveform(waveform, lengths, spec.waveform_norm)
    feats = log_mel(x, n_mels=spec.n_mels, window=spec.window, hop=spec.hop, f_max=spec.f_max)  # (B, T, F)
    frames = torch.where(lengths >= spec.window,
                         torch.div(lengths - spec.window, spec.hop, rounding_mode="floor") + 1, 0)
    valid = key_padding_mask(frames, feats.shape[1])
    return feats.masked_fill(~valid[:, :, None], 0.0), frames


class FrameTargets:
    """Cluster targets of every frame: features, standardisation, nearest centroid.

    Args:
        spec: the features.
        mean, std: (F,) standardisation.
        centroids: (K, F) in standardised units.
        teacher: the model of a ``layer`` spec (evaluation mode), else None.
        info: what fitting measured (sample frames, inertia, iterations), kept in the state.
    """

    def __init__(self, spec: FeatureSpec, mean: torch.Tensor, std: torch.Tensor, centroids: torch.Tensor,
                 teacher: Optional[Wav2Vec2Encoder] = None, info: Optional[Dict[str, Any]] = None):
        if centroids.dim() != 2 or mean.shape != (centroids.shape[1],) or std.shape != mean.shape:
            raise ValueError(f"mean, std, centroids: expected (F,), (F,), (K, F), found {tuple(mean.shape)}, "
                             f"{tuple(std.shape)}, {tuple(centroids.shape)}")
        self.spec, self.mean, self.std, self.centroids = spec, mean, std, centroids
        self.teacher = teacher
        self.info = dict(info or {})

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    def to(self, device: torch.device) -> "FrameTargets":
        self.mean, self.std, self.centroids = (t.to(device) for t in (self.mean, self.std, self.centroids))
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    @torch.no_grad()
    def __call__(self, waveform: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, S) raw waveform, (B,) lengths -> targets (B, T) int64 (-1 past each length), frame lengths (B,)."""
        feats, frames = frame_features(self.spec, waveform, lengths, self.teacher)
        B, T, F = feats.shape
        index, _ = assign(((feats - self.mean) / self.std).reshape(B * T, F), self.centroids)
        valid = key_padding_mask(frames, T)
        return index.reshape(B, T).masked_fill(~valid, IGNORE), frames

    def state_dict(self) -> Dict[str, Any]:
        """Plain values and CPU tensors (loads with ``torch.load(weights_only=True)``)."""
        return {"spec": asdict(self.spec), "mean": self.mean.cpu(), "std": self.std.cpu(),
                "centroids": self.centroids.cpu(), "info": dict(self.info)}

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any], teacher: Optional[Wav2Vec2Encoder] = None) -> "FrameTargets":
        return cls(FeatureSpec(**state["spec"]), state["mean"], state["std"], state["centroids"], teacher,
                   state.get("info"))


def fit_frame_targets(spec: FeatureSpec, utterances: Iterable[torch.Tensor], num_clusters: int, *,
                      max_frames: int = 100_000, seed: int = 0, max_iter: int = 100,
                      teacher: Optional[Wav2Vec2Encoder] = None, device: Optional[torch.device] = None,
                      on_utterance: Optional[Callable[[int], None]] = None) -> FrameTargets:
    """Fits the codebook on the frames of ``utterances`` (raw waveforms (S,), in the order to sample).

    Frames are collected utterance by utterance (each on its own: no padding) until ``max_frames``
    are reached; then ``max_frames`` of them are kept at random (``numpy.random.default_rng(seed)``,
    the same generator as the k-means++ seeding), standardised, and clustered by :func:`kmeans`.

    Args:
        on_utterance: called with the frames collected so far after each utterance (progress).

    Raises:
        ValueError: fewer frames than clusters.
    """
    if max_frames < num_clusters:
        raise ValueError(f"max_frames: expected >= num_clusters ({num_clusters}), found {max_frames}")
    chunks, total = [], 0
    for wave in utterances:
        wave = wave.to(device)[None, :]
        feats, frames = frame_features(spec, wave, torch.tensor([wave.shape[1]], device=wave.device), teacher)
        chunks.append(feats[0, :int(frames[0])].float())
        total += int(frames[0])
        if on_utterance is not None:
            on_utterance(total)
        if total >= max_frames:
            break
    if total < num_clusters:
        raise ValueError(f"num_clusters: the data has {total} frames, fewer than num_clusters={num_clusters}")
    x = torch.cat(chunks)                                                                   # (N, F)
    rng = np.random.default_rng(seed)
    if x.shape[0] > max_frames:
        keep = np.sort(rng.choice(x.shape[0], size=max_frames, replace=False))
        x = x[torch.from_numpy(keep).to(x.device)]
    mean, std = x.mean(0), x.std(0).clamp(min=1e-3)
    result: KMeansResult = kmeans((x - mean) / std, num_clusters, rng=rng, max_iter=max_iter)
    counts = torch.bincount(result.assignments, minlength=num_clusters)
    info = {"frames": int(x.shape[0]), "inertia": result.inertia, "iterations": result.iterations,
            "converged": result.converged, "smallest_cluster": int(counts.min()), "largest_cluster": int(counts.max())}
    logger.info("k-means of %s features: %d clusters of %d frames, %d iterations%s, inertia per frame %.4g, "
                "cluster sizes %d..%d", spec.kind, num_clusters, x.shape[0], result.iterations,
                "" if result.converged else " (not converged)", result.inertia / x.shape[0],
                info["smallest_cluster"], info["largest_cluster"])
    return FrameTargets(spec, mean, std, result.centroids, teacher, info)
