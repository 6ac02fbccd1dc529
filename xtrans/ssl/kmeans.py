"""k-means with k-means++ seeding: the codebook of HuBERT's frame targets.

Lloyd's algorithm (Lloyd, 1982) from the k-means++ seeding of Arthur and Vassilvitskii (2007),
in torch, on one device, in the dtype of the data (float64 in the tests, float32 for features).
For frames ``x_1 .. x_N`` (N, F) and ``K`` centroids ``c_1 .. c_K`` (K, F):

    seeding:  c_1 = x_i, i uniform; then c_j = x_i with probability D(x_i)^2 / sum_n D(x_n)^2,
              D(x) = distance from x to the nearest centroid chosen so far
    assign:   a_n = argmin_k ||x_n - c_k||^2          (ties: the lowest k)
    update:   c_k = mean of {x_n : a_n = k}
    repeat    until no assignment changes, or the inertia sum_n ||x_n - c_{a_n}||^2 falls by
              less than ``tol`` of itself, or ``max_iter`` updates

A cluster left empty by an assignment takes the frame farthest from its centroid (that frame
then forms a cluster of its own), so exactly ``K`` centroids always come back. Every random
draw comes from a ``numpy.random.Generator`` seeded by the caller; torch's and numpy's global
generators are not touched.

Squared distances are ``||x||^2 - 2 x.c + ||c||^2``, computed ``chunk_size`` frames at a time so
that the (N, K) matrix never has to exist at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["KMeansResult", "assign", "kmeans", "kmeans_plusplus", "lloyd", "squared_distances"]

CHUNK_FRAMES = 16384
"""Frames per block of the distance computation."""


@dataclass(frozen=True)
class KMeansResult:
    """What :func:`kmeans` found.

    Attributes:
        centroids: (K, F), the dtype and device of the data.
        assignments: (N,) int64, the nearest centroid of every frame.
        inertia: sum of squared distances of the frames to their centroids.
        iterations: Lloyd updates done.
        converged: True when it stopped before ``max_iter``.
    """

    centroids: torch.Tensor
    assignments: torch.Tensor
    inertia: float
    iterations: int
    converged: bool


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``||x_n - c_k||^2`` (N, K) for frames (N, F) and centroids (K, F), clamped at 0."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(1)[None, :]
    return d.clamp_(min=0.0)


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int = CHUNK_FRAMES
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest centroid of every frame: (N, F), (K, F) -> indices (N,) int64, squared distances (N,)."""
    if x.dim() != 2 or centroids.dim() != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(f"x, centroids: expected (N, F) and (K, F), found {tuple(x.shape)} and "
                         f"{tuple(centroids.shape)}")
    index = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        d = squared_distances(x[start:start + chunk_size], centroids)
        dist[start:start + chunk_size], index[start:start + chunk_size] = d.min(1)
    return index, dist


def kmeans_plusplus(x: torch.Tensor, num_clusters: int, rng: np.random.Generator) -> torch.Tensor:
    """k-means++ seeding: ``num_clusters`` distinct frames of ``x`` (N, F) -> initial centroids (K, F).

    The first is uniform; each next one is drawn with probability proportional to its squared
    distance to the nearest centroid so far (a frame already chosen has probability 0). When
    every remaining frame coincides with a chosen one, the rest are drawn uniformly among the
    frames not chosen yet.

    Raises:
        ValueError: when ``x`` has fewer than ``num_clusters`` frames or ``num_clusters < 1``.
    """
    n = x.shape[0]
    if num_clusters < 1:
        raise ValueError(f"num_clusters: expected >= 1, found {num_clusters}")
    if n < num_clusters:
        raise ValueError(f"x: expected at least num_clusters={num_clusters} frames to seed from, found {n}")
    chosen = [int(rng.integers(n))]
    nearest = squared_distances(x, x[chosen[0]][None, :])[:, 0]  # (N,)
    for _ in range(1, num_clusters):
        weights = nearest.double().cpu().numpy()
        weights[chosen] = 0.0
        total = weights.sum()
        if total > 0:
            i = int(np.searchsorted(np.cumsum(weights), rng.random() * total, side="right"))
            i = min(i, n - 1)
        else:  # all frames left coincide with centroids: any frame not taken
            free = np.setdiff1d(np.arange(n), chosen)
            i = int(free[rng.integers(len(free))])
        chosen.append(i)
        nearest = torch.minimum(nearest, squared_distances(x, x[i][None, :])[:, 0])
    return x[chosen].clone()


def lloyd(x: torch.Tensor, init: torch.Tensor, *, max_iter: int = 100, tol: float = 1e-6,
          chunk_size: int = CHUNK_FRAMES) -> KMeansResult:
    """Lloyd's iterations from centroids ``init`` (K, F) over frames ``x`` (N, F).

    Each iteration assigns every frame, then moves every centroid to the mean of its frames (an
    empty cluster takes the frame farthest from its centroid). Stops when no assignment changes
    or the inertia improves by less than ``tol`` (relative); the result's assignments and
    inertia are those of its centroids.
    """
    if not 1 <= init.shape[0] <= x.shape[0]:
        raise ValueError(f"init: expected 1..{x.shape[0]} centroids (the frames), found {init.shape[0]}")
    if max_iter < 0:
        raise ValueError(f"max_iter: expected >= 0, found {max_iter}")
    K = init.shape[0]
    centroids = init.to(device=x.device, dtype=x.dtype).clone()
    index, dist = assign(x, centroids, chunk_size)
    inertia = float(dist.sum())
    iterations, converged = 0, False
    while iterations < max_iter:
        centroids = _means(x, index, dist, centroids)
        iterations += 1
        new_index, dist = assign(x, centroids, chunk_size)
        new_inertia = float(dist.sum())
        unchanged = torch.equal(new_index, index)
        index, improvement = new_index, inertia - new_inertia
        inertia = new_inertia
        if unchanged or improvement <= tol * max(new_inertia, 1e-30):
            converged = True
            break
    logger.debug("k-means: K=%d, N=%d, %d iterations, inertia %.6g", K, x.shape[0], iterations, inertia)
    return KMeansResult(centroids, index, inertia, iterations, converged)


def _means(x: torch.Tensor, index: torch.Tensor, dist: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The mean of every cluster's frames (K, F); an empty cluster gets the farthest frame not yet taken."""
    K = centroids.shape[0]
    sums = torch.zeros_like(centroids).index_add_(0, index, x)
    counts = torch.bincount(index, minlength=K)
    means = sums / counts.clamp(min=1)[:, None].to(x.dtype)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        far = torch.argsort(dist, descending=True, stable=True)[:len(empty)]
        means[empty] = x[far]
        logger.debug("k-means: %d empty clusters re-seeded with the farthest frames", len(empty))
    return means


def kmeans(x: torch.Tensor, num_clusters: int, *, seed: int = 0, max_iter: int = 100, tol: float = 1e-6,
           rng: Optional[np.random.Generator] = None) -> KMeansResult:
    """k-means of frames ``x`` (N, F): k-means++ seeding (``numpy.random.default_rng(seed)``, or
    ``rng``), then :func:`lloyd`. Deterministic for a seed (on one device and dtype).

    Raises:
        ValueError: for a non-2-D ``x``, non-finite values, or fewer frames than clusters.
    """
    if x.dim() != 2:
        raise ValueError(f"x: expected frames (N, F), found shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x: expected finite features, found NaN or inf")
    rng = np.random.default_rng(seed) if rng is None else rng
    return lloyd(x, kmeans_plusplus(x, num_clusters, rng), max_iter=max_iter, tol=tol)
