"""k-means whose every cluster has at least ``min_size`` members (the privacy floor).

The one home of the clustering behind the stored summaries that replace raw
rows: the OOD detector's centroids (:mod:`safepredict.ood`) and the explainer's
aggregated background (:mod:`safepredict.explain`). A centroid is the mean of
at least :data:`MIN_GROUP` rows, so it never is, nor rebuilds, one row (unless
at least that many rows are identical).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> Z = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal(8, 1, (60, 2))])
>>> labels, centroids = min_size_kmeans(Z, 4, rng)
>>> bool(np.bincount(labels).min() >= MIN_GROUP), centroids.shape[1]
(True, 2)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["MIN_GROUP", "min_size_kmeans"]

#: Every stored statistic that summarises rows aggregates at least this many of them.
MIN_GROUP = 20


def _sq_dist(z: NDArray[np.float64], centers: NDArray[np.float64]) -> NDArray[np.float64]:
    """Squared Euclidean distances ``(n, k)`` between rows of ``Z`` and ``centers``."""
    d = (
        (z * z).sum(axis=1)[:, None]
        - 2.0 * (z @ centers.T)
        + (centers * centers).sum(axis=1)[None, :]
    )
    return np.asarray(np.maximum(d, 0.0), dtype=np.float64)


def _means(z: NDArray[np.float64], labels: NDArray[np.intp], k: int) -> NDArray[np.float64]:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, z.shape[1]))
    np.add.at(sums, labels, z)
    return sums / np.maximum(counts, 1.0)[:, None]


def min_size_kmeans(
    z: NDArray[np.float64],
    n_clusters: int,
    rng: np.random.Generator,
    *,
    min_size: int = MIN_GROUP,
    max_iter: int = 30,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Cluster the rows of ``Z``; every cluster keeps at least ``min_size`` rows.

    k-means++ seeding from ``rng`` (never numpy's global generator), Lloyd
    iterations, and clusters that fall below ``min_size`` dissolved (their rows
    join the nearest remaining cluster) until every cluster is large enough.
    The centroids returned are the exact means of the members given by
    ``labels``.

    Parameters
    ----------
    z : ndarray of shape (n, d)
        Finite rows (``n >= min_size``).
    n_clusters : int
        Target number of clusters (fewer come back if some are too small).
    rng : numpy.random.Generator
        Source of every random draw.
    min_size : int, default=MIN_GROUP
        Smallest allowed cluster.
    max_iter : int, default=30
        Lloyd iterations.

    Returns
    -------
    labels : ndarray of int, shape (n,)
        Cluster of each row, ``0 .. k-1``.
    centroids : ndarray of shape (k, d)
        Mean of each cluster's rows.

    Raises
    ------
    ValueError
        If fewer than ``min_size`` rows are given.
    """
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    if n < min_size:
        raise ValueError(f"need at least {min_size} rows to cluster; got {n}")
    k = int(max(1, min(n_clusters, n // min_size)))
    first = int(rng.integers(n))
    picked = [z[first]]
    closest = ((z - z[first]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        total = float(closest.sum())
        if total <= 0.0:
            break
        pick = int(rng.choice(n, p=closest / total))
        picked.append(z[pick])
        closest = np.minimum(closest, ((z - z[pick]) ** 2).sum(axis=1))
    centers: NDArray[np.float64] = np.array(picked, dtype=np.float64)
    labels = np.zeros(n, dtype=np.intp)
    for _ in range(max_iter):
        new = np.asarray(_sq_dist(z, centers).argmin(axis=1), dtype=np.intp)
        counts = np.bincount(new, minlength=len(centers))
        if (counts < min_size).any():
            # dissolve the smallest cluster and reassign
            centers = np.delete(centers, int(np.argmin(counts)), axis=0)
            continue
        new_centers = _means(z, new, len(centers))
        done = bool(np.array_equal(new, labels)) and np.allclose(new_centers, centers)
        labels, centers = new, new_centers
        if done:
            break
    while True:
        labels = np.asarray(_sq_dist(z, centers).argmin(axis=1), dtype=np.intp)
        counts = np.bincount(labels, minlength=len(centers))
        if (counts >= min_size).all():
            break
        centers = np.delete(centers, int(np.argmin(counts)), axis=0)
        centers = _means(
            z, np.asarray(_sq_dist(z, centers).argmin(axis=1), dtype=np.intp), len(centers)
        )
    return labels, _means(z, labels, len(centers))
