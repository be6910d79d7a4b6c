"""The default OOD detector: distance to k-means centroids of reference rows (no row stored)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._cluster import min_size_kmeans
from safepredict.ood.marginal import (
    BLOCK_ROWS,
    MAX_CENTROIDS,
    ROWS_PER_CENTROID,
    MarginalScores,
    conformal_pvalues,
    sorted_scores,
)

__all__ = ["CentroidDetector"]


class CentroidDetector:
    """Distance to the nearest k-means centroid, with conformal p-values (no stored rows).

    The reference is split at random: the fit part (half the rows, at most
    ``max_fit``) learns the :class:`MarginalScores` transform and the centroids
    (about one per :data:`ROWS_PER_CENTROID` rows, at most :data:`MAX_CENTROIDS`,
    each the mean of >= 20 rows); the held-out part gives the calibration
    scores. The score of a row is the Euclidean distance from its normal scores
    to the nearest centroid (float32); the p-value is
    ``(1 + #{calibration scores >= score}) / (m + 1)``.

    Parameters
    ----------
    transform : MarginalScores
        Per-column normal-score map.
    centroids : ndarray of shape (k, d)
        Cluster means in normal-score space.
    counts : ndarray of int, shape (k,)
        Reference rows behind each centroid (each >= 20).
    calibration_scores : ndarray of shape (m,)
        Scores of the held-out reference rows.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> det = CentroidDetector.fit(rng.normal(size=(800, 2)), max_fit=2000, rng=rng)
    >>> p = det.pvalues(np.array([[0.0, 0.0], [8.0, 8.0]]))
    >>> bool(p[0] > 0.1), bool(p[1] == det.min_pvalue), bool(det.counts.min() >= 20)
    (True, True, True)
    """

    kind = "centroids"

    def __init__(
        self,
        transform: MarginalScores,
        centroids: NDArray[np.float64],
        counts: NDArray[np.intp],
        calibration_scores: NDArray[np.float64],
    ) -> None:
        self.transform = transform
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.intp)
        self.calibration_scores = sorted_scores(calibration_scores)
        c32 = np.ascontiguousarray(self.centroids.T, dtype=np.float32)
        self._c_norms = (c32 * c32).sum(axis=0)
        self._minus_2c = -2.0 * c32  # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c)
        # rows per block: the product stays under 2**17 multiply-adds (see BLOCK_ROWS)
        work = max(1, self.centroids.shape[0] * self.centroids.shape[1])
        self._block = int(max(BLOCK_ROWS, min(1024, (1 << 17) // work)))
        self._fast_cal: tuple[NDArray[np.float64], list[float]] | None = None

    @classmethod
    def fit(
        cls, X: NDArray[np.float64], *, max_fit: int, rng: np.random.Generator
    ) -> CentroidDetector:
        """Fit on raw numeric reference rows (NaN allowed), splitting them in two."""
        order = rng.permutation(len(X))
        n_fit = min((len(X) + 1) // 2, max_fit)
        return cls.fit_split(X[order[:n_fit]], X[order[n_fit:]], rng=rng)

    @classmethod
    def fit_split(
        cls,
        fit_part: NDArray[np.float64],
        cal_part: NDArray[np.float64],
        *,
        rng: np.random.Generator,
        transform: MarginalScores | None = None,
    ) -> CentroidDetector:
        """Fit the transform and centroids on ``fit_part``, calibrate on ``cal_part``."""
        transform = MarginalScores.fit(fit_part) if transform is None else transform
        z = transform.transform(fit_part)
        n_clusters = min(MAX_CENTROIDS, max(1, len(z) // ROWS_PER_CENTROID))
        labels, centroids = min_size_kmeans(z, n_clusters, rng)
        counts = np.bincount(labels, minlength=len(centroids))
        det = cls(transform, centroids, counts, np.zeros(0))
        det.calibration_scores = sorted_scores(det.scores(cal_part))
        return det

    @property
    def min_pvalue(self) -> float:
        """The smallest p-value the detector can give: ``1 / (m + 1)``."""
        return 1.0 / (len(self.calibration_scores) + 1)

    def scores_of(self, z: NDArray[np.float64]) -> NDArray[np.float64]:
        """Distance to the nearest centroid of already transformed rows."""
        n = len(z)
        out = np.empty(n, dtype=np.float64)
        minus_2c, c_norms, step = self._minus_2c, self._c_norms, self._block
        # Row-major whatever the input's layout (Arrow batches are column-major): BLAS
        # sums in a layout-dependent order, and a last-bit difference flips a row on the
        # threshold, so a row's decision would depend on how its batch was built.
        z32 = np.ascontiguousarray(z, dtype=np.float32)
        for start in range(0, n, step):
            block = z32[start : start + step]
            d2 = block @ minus_2c
            d2 += c_norms
            out[start : start + step] = d2.min(axis=1)
        out += np.einsum("ij,ij->i", z32, z32)
        return np.sqrt(np.maximum(out, 0.0, out=out), out=out)

    def scores(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Distance to the nearest centroid (higher is more unusual)."""
        return self.scores_of(self.transform.transform(X))

    def pvalues(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Conformal p-values of raw numeric rows."""
        return conformal_pvalues(self.calibration_scores, self.scores(X))

    def pvalues_of(self, z: NDArray[np.float64]) -> NDArray[np.float64]:
        """Conformal p-values of already transformed rows."""
        return conformal_pvalues(self.calibration_scores, self.scores_of(z))

    def pvalues_rows(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """:meth:`pvalues` of a few raw rows, bit for bit, with fewer numpy calls.

        The transform runs in plain Python (:meth:`MarginalScores.transform_rows`,
        the same values bit for bit), the distance through :meth:`scores_of` itself
        (so the same float32 arithmetic), and the count of calibration scores at or
        above each score by bisection of a cached list (``numpy.searchsorted``'s
        count, without its per-call cost).

        Examples
        --------
        >>> rng = np.random.default_rng(1)
        >>> det = CentroidDetector.fit(rng.normal(size=(800, 2)), max_fit=2000, rng=rng)
        >>> X = np.array([[0.0, 0.1], [8.0, 8.0]])
        >>> det.pvalues_rows(X.tolist()) == det.pvalues(X).tolist()
        True
        """
        if not len(rows):
            return []
        z = np.array(self.transform.transform_rows(rows), dtype=np.float64)
        if self._fast_cal is None or self._fast_cal[0] is not self.calibration_scores:
            # a list copy of the (sorted) calibration scores, rebuilt if they are replaced
            self._fast_cal = (self.calibration_scores, self.calibration_scores.tolist())
        cal = self._fast_cal[1]
        m = len(cal)
        # 1 + #{calibration scores >= s}, over m + 1, as conformal_pvalues computes it
        return [(1.0 + (m - bisect_left(cal, s))) / (m + 1.0) for s in self.scores_of(z).tolist()]

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: aggregates only (no reference row)."""
        return {
            "kind": self.kind,
            "stores_raw_rows": False,
            "transform": self.transform.to_state(),
            "centroids": self.centroids.tolist(),
            "counts": self.counts.tolist(),
            "calibration_scores": self.calibration_scores.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CentroidDetector:
        """Restore from :meth:`to_state`."""
        transform = MarginalScores.from_state(state["transform"])
        d = len(transform.n_knots)
        return cls(
            transform,
            np.asarray(state["centroids"], dtype=np.float64).reshape(-1, d),
            np.asarray(state["counts"], dtype=np.intp),
            np.asarray(state["calibration_scores"], dtype=np.float64),
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.to_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(CentroidDetector.from_state(state).__dict__)
