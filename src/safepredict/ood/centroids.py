"""The default OOD detector: distance to k-means centroids of reference rows (no row stored)."""

from __future__ import annotations

import math
import operator
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

__all__ = ["CentroidDetector", "float32_score_bound"]


def float32_score_bound(d: int) -> float:
    """Relative rounding bound of the float32 squared centroid score of ``d`` features.

    :meth:`CentroidDetector.scores_of` computes, in float32, ``h_k = z.m_k + |c_k|^2``
    per centroid (``m_k = -2 c_k``: a product of ``d`` terms in the BLAS's own order,
    then one add) and ``e = |z|^2``. With ``u = 2**-24`` and ``gamma_n = n u / (1 - n
    u)`` (Higham, *Accuracy and Stability of Numerical Algorithms*, eq. 3.5: an
    ``n``-term inner product summed in ANY order, with or without FMA), and ``z``
    itself rounded to float32 (relative ``u``):

    * ``|h_k - (z.m_k + |c_k|^2)| <= (gamma_(d+1) (1 + u) + u) (sum_j |z_j m_jk| + |c_k|^2)``
    * ``|e - |z|^2| <= (gamma_d (1 + u)**2 + 2u + u**2) |z|^2``

    Both factors are below ``1.01 (d + 2) u`` while ``(d + 2) u < 0.005`` (``d`` under
    80,000 features); the float64 twins of :meth:`CentroidDetector.pvalue_row` add about
    ``(d + 3) 2**-53``, a 2**-29 fraction of that. The bound returned, ``1.0625 (d + 2)
    u``, covers all of it.

    Examples
    --------
    >>> float32_score_bound(17) < 1.25e-6
    True
    """
    return 1.0625 * (d + 2) * 2.0**-24


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
        # pvalue_row: T_k - r B_k and T_k + r B_k (see _certified_pvalue) as rows acting
        # on [z, 1, |z|], from exact float64 copies of the float32 values scores_of uses
        r = float32_score_bound(self.centroids.shape[1])
        m64 = self._minus_2c.T.astype(np.float64)
        cn64 = self._c_norms.astype(np.float64)[:, None]
        self._bound_rows64 = np.ascontiguousarray(
            np.vstack(
                [
                    np.hstack([m64, cn64 * (1.0 - r), -r * np.abs(m64)]),
                    np.hstack([m64, cn64 * (1.0 + r), r * np.abs(m64)]),
                ]
            )
        )
        self._n_centroids = len(m64)
        self._score_bound = r

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
        cal = self._calibration_list()
        m = len(cal)
        # 1 + #{calibration scores >= s}, over m + 1, as conformal_pvalues computes it
        return [(1.0 + (m - bisect_left(cal, s))) / (m + 1.0) for s in self.scores_of(z).tolist()]

    def pvalue_row(self, row: Sequence[float]) -> float:
        """:meth:`pvalues` of one raw row, bit for bit, with one numpy call when it can.

        The p-value is a count, ``#{calibration scores >= score}``, so it only needs
        the score to within the gap to the nearest calibration score. The normal
        scores come from :meth:`MarginalScores.transform_rows` (plain Python, the
        same values); one float64 matrix-vector product then gives every centroid's
        ``|c|^2 - 2 z.c`` and a rigorous bound (:func:`float32_score_bound`) on how far the
        float32 arithmetic of :meth:`scores_of` can be from it, whatever the BLAS's
        summation order. When no calibration score lies within that bound, the
        count, hence the p-value, is the one :meth:`pvalues` gives; otherwise (a
        few rows in a hundred) :meth:`scores_of` itself decides.

        Examples
        --------
        >>> rng = np.random.default_rng(1)
        >>> det = CentroidDetector.fit(rng.normal(size=(800, 2)), max_fit=2000, rng=rng)
        >>> x = np.array([[0.3, -1.2]])
        >>> det.pvalue_row(x[0].tolist()) == det.pvalues(x).item()
        True
        """
        z = self.transform.transform_rows((row,))[0]
        certified = self._certified_pvalue(z)
        return self._exact_pvalue(z) if certified is None else certified

    def _certified_pvalue(self, z: list[float]) -> float | None:
        """The p-value of transformed row ``z`` when rounding cannot change it, else ``None``.

        With ``T_k = z.m_k + |c_k|^2``, ``B_k = sum_j |z_j m_jk| + |c_k|^2`` and ``r =
        float32_score_bound(d)``, the float32 ``min_k h_k + e`` of :meth:`scores_of` lies
        in ``[min_k (T_k - r B_k) + (1 - r) q, min_k (T_k + r B_k) + (1 + r) q]``
        (``q = |z|^2``; ``min`` is 1-Lipschitz). ``T_k -+ r B_k`` is linear in
        ``[z, 1, |z|]``: one float64 product gives both ends for every centroid. The
        square root and the rank count are monotone, so when no calibration score
        falls between the roots of the two ends the count is the one :meth:`pvalues`
        makes.
        """
        k = self._n_centroids
        ends = self._bound_rows64.dot([*z, 1.0, *map(abs, z)]).tolist()
        q = sum(map(operator.mul, z, z))
        rq = self._score_bound * q + 1e-30  # 1e-30: float32 underflow (2**-150 an operation)
        lo = min(ends[:k]) + q - rq
        hi = min(ends[k:]) + q + rq
        cal = self._calibration_list()
        m = len(cal)
        below = bisect_left(cal, math.sqrt(lo) if lo > 0.0 else 0.0)  # #{cal < sqrt(lo)}
        if below < m and cal[below] < (math.sqrt(hi) if hi > 0.0 else 0.0):
            return None  # a calibration score within rounding of the row's score
        return (1.0 + (m - below)) / (m + 1.0)

    def _exact_pvalue(self, z: list[float]) -> float:
        """The p-value of transformed row ``z`` through :meth:`scores_of` itself."""
        score = float(self.scores_of(np.array([z], dtype=np.float64))[0])
        cal = self._calibration_list()
        return (1.0 + (len(cal) - bisect_left(cal, score))) / (len(cal) + 1.0)

    def _calibration_list(self) -> list[float]:
        """The sorted calibration scores as a list (rebuilt if they are replaced)."""
        if self._fast_cal is None or self._fast_cal[0] is not self.calibration_scores:
            self._fast_cal = (self.calibration_scores, self.calibration_scores.tolist())
        return self._fast_cal[1]

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
