"""Out-of-distribution detectors with conformal p-values, and the marginal transform.

Two detectors score a row's numeric features; both turn the score into a
conformal p-value on held-out reference rows, so that for a row drawn like
the reference ``P(p <= alpha) <= alpha``:

* :class:`CentroidDetector` (default, ``ood_method="centroids"``): the distance
  to the nearest of a few k-means centroids, each the mean of at least
  :data:`~safepredict._cluster.MIN_GROUP` reference rows. It stores **no
  reference row** and nothing that rebuilds one: aggregated per-column knots
  (:class:`MarginalScores`, each the mean of >= 20 values), the centroids (each
  the mean of >= 20 rows, with their member counts) and one scalar score per
  held-out row.
* :class:`KnnDetector` (opt-in, ``ood_method="knn"``): the mean distance to the
  ``k`` nearest reference rows. It **stores up to** ``ood_reference_size``
  **transformed reference rows** (the transform is invertible, so they are the
  rows); saved states name them ``raw_reference_rows``.

The module is pure (no logging, no other stage imported) and never touches
numpy's global random generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._cluster import MIN_GROUP, min_size_kmeans

__all__ = [
    "BLOCK_ROWS",
    "CentroidDetector",
    "KnnDetector",
    "MarginalScores",
    "conformal_pvalues",
    "detector_from_state",
]

#: Transformed values are clipped here so squared distances never overflow.
_CLIP = 1e6
_NORMAL = NormalDist()
#: Beyond the outer knots a value's normal score grows linearly (the outer segment's
#: slope) for this many units, then logarithmically: one extreme value counts, but
#: does not swamp the joint pattern of the other features.
TAIL_LINEAR = 1.0
#: Most knots per column.
MAX_KNOTS = 41
#: Grid cells per knot of the segment lookup (see ``MarginalScores._compile_grid``).
_GRID_PER_KNOT = 8
#: Average reference rows per centroid, and the most centroids.
ROWS_PER_CENTROID = 40
MAX_CENTROIDS = 64
#: Fewest rows per distance block. OpenBLAS runs a product of at most 2**18
#: multiply-adds on the calling thread; blocks are sized to stay under 2**17 (at
#: least this many rows), so the OOD guard's latency does not depend on the BLAS
#: thread setting (which the library never changes).
BLOCK_ROWS = 64


def conformal_pvalues(
    calibration_scores: NDArray[np.float64], scores: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``(1 + #{calibration scores >= s}) / (m + 1)`` for each score ``s``.

    ``calibration_scores`` must be sorted ascending.

    Examples
    --------
    >>> conformal_pvalues(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 9.0])).tolist()
    [1.0, 0.75, 0.25]
    """
    cal = calibration_scores
    at_least = len(cal) - np.searchsorted(cal, scores, side="left")
    return np.asarray((1.0 + at_least) / (len(cal) + 1.0), dtype=np.float64)


@functools.lru_cache(maxsize=8)
def _rank_scores_cached(n: int) -> tuple[float, ...]:
    return tuple(_NORMAL.inv_cdf((i + 0.5) / n) for i in range(n))


def _rank_scores(n: int) -> NDArray[np.float64]:
    """Normal scores ``Phi^-1((r - 0.5) / n)`` of the ranks ``r = 1 .. n``."""
    return np.array(_rank_scores_cached(n))


def _sorted_scores(values: Any) -> NDArray[np.float64]:
    return np.sort(np.asarray(values, dtype=np.float64))


# ---------------------------------------------------------------- marginal transform
class MarginalScores:
    """Per-column monotone map to normal scores, learned from aggregated knots.

    Each column's finite reference values are sorted and cut into consecutive
    bins of at least :data:`~safepredict._cluster.MIN_GROUP` values (at most
    :data:`MAX_KNOTS` bins); a knot is the mean of a bin's values and its normal
    score the mean of the bin's rank normal scores ``Phi^-1((r - 0.5) / n)``.
    Between knots the map is linear; beyond the outer knots it continues with
    the outer segment's slope for :data:`TAIL_LINEAR` units, then grows
    logarithmically. Missing and infinite values map to 0 (the median): they
    have guards of their own. No knot is a single reference value.

    Parameters
    ----------
    knots : ndarray of shape (n_knots, d)
        Increasing knots per column, padded with ``+inf``.
    scores : ndarray of shape (n_knots, d)
        Normal score of each knot (padding repeats the last).
    n_knots : ndarray of int, shape (d,)
        Number of knots per column.
    slope_low, slope_high : ndarray of shape (d,)
        Slope of the map beyond the lowest and the highest knot.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> m = MarginalScores.fit(rng.normal(size=(1000, 2)))
    >>> z = m.transform(np.array([[0.0, 0.0], [4.0, -9.0]]))
    >>> bool(abs(z[0, 0]) < 0.1), bool(z[1, 0] > 2.5), bool(z[1, 1] < -4)
    (True, True, True)
    >>> bool(np.allclose(m.transform(m.inverse(np.array([2.0, -2.0]))[None, :]), [2, -2]))
    True
    """

    def __init__(
        self,
        knots: NDArray[np.float64],
        scores: NDArray[np.float64],
        n_knots: NDArray[np.intp],
        slope_low: NDArray[np.float64],
        slope_high: NDArray[np.float64],
    ) -> None:
        self.knots = np.ascontiguousarray(knots, dtype=np.float64)
        self.scores = np.ascontiguousarray(scores, dtype=np.float64)
        self.n_knots = np.asarray(n_knots, dtype=np.intp)
        self.slope_low = np.asarray(slope_low, dtype=np.float64)
        self.slope_high = np.asarray(slope_high, dtype=np.float64)
        self._compile()

    def _compile(self) -> None:
        """Per segment and column, ``z = a + b * x`` (segment 0 and n_knots: the tails)."""
        n_seg, d = self.knots.shape
        cols = np.arange(d)
        last = self.n_knots - 1
        a = np.zeros((n_seg + 1, d))
        b = np.zeros((n_seg + 1, d))
        first_x, first_z = self.knots[0], self.scores[0]
        last_x, last_z = self.knots[last, cols], self.scores[last, cols]
        b[0] = self.slope_low
        a[0] = first_z - self.slope_low * first_x
        for s in range(1, n_seg):
            inner = s <= last
            x0, x1 = self.knots[s - 1], np.where(inner, self.knots[s], 1.0)
            z0, z1 = self.scores[s - 1], self.scores[s]
            with np.errstate(all="ignore"):
                slope = np.where(inner, (z1 - z0) / np.where(inner, x1 - x0, 1.0), 0.0)
            with np.errstate(all="ignore"):  # padded knots are +inf
                b[s] = np.where(inner, slope, self.slope_high)
                a[s] = np.where(inner, z0 - slope * x0, last_z - self.slope_high * last_x)
        b[n_seg] = self.slope_high
        a[n_seg] = last_z - self.slope_high * last_x
        # the tail rows of columns with fewer knots: segment n_knots is the upper tail
        for j in range(d):
            b[last[j] + 1 :, j] = self.slope_high[j]
            a[last[j] + 1 :, j] = last_z[j] - self.slope_high[j] * last_x[j]
        self._a = np.ascontiguousarray(a.T).ravel()  # column-major: index j*(n_seg+1)+s
        self._b = np.ascontiguousarray(b.T).ravel()
        self._offset = np.arange(d, dtype=np.intp) * (n_seg + 1)
        self._first_z = first_z
        self._last_z = last_z
        self._low_cut = first_z - TAIL_LINEAR
        self._high_cut = last_z + TAIL_LINEAR
        self._knot_list = [self.knots[: int(n), j].copy() for j, n in enumerate(self.n_knots)]
        self._compile_grid(first_x, last_x)

    def _compile_grid(self, first_x: NDArray[np.float64], last_x: NDArray[np.float64]) -> None:
        """A uniform grid per column that finds a value's segment without a binary search.

        Cell ``c`` (1..G) nominally covers ``[e_{c-1}, e_c)`` of the ``G`` equal cells
        between the outer knots (0: below, G+1: above). ``table[c]`` counts the
        knots at or below the lower edge of cell ``c - 1`` (one cell of slack for
        rounding), and at most ``steps`` comparisons with the next knot finish
        the count exactly: the same few elementwise passes for every batch size.
        """
        n_seg, d = self.knots.shape
        cells = _GRID_PER_KNOT * n_seg
        span = last_x - first_x
        h = np.where(span > 0, span / cells, 1.0)
        edges = first_x[None, :] + np.arange(cells + 1)[:, None] * h[None, :]
        table = np.zeros((d, cells + 2), dtype=np.intp)
        steps = 1
        for j, k in enumerate(self._knot_list):
            lower = np.concatenate([[-np.inf, -np.inf], edges[:cells, j]])
            upper = np.concatenate([edges[1:, j], [np.inf, np.inf]])
            table[j] = np.searchsorted(k, lower, side="right")
            most = np.searchsorted(k, upper, side="right")
            steps = max(steps, int((most - table[j]).max()))
        pad = n_seg + steps + 2
        knext = np.full((d, pad), np.inf)
        for j, k in enumerate(self._knot_list):
            knext[j, : len(k)] = k
        self._g0 = first_x.copy()
        self._inv_h = 1.0 / h
        self._cells = float(cells)
        self._table = table.ravel()
        self._cell_offset = np.arange(d, dtype=np.intp) * (cells + 2)
        self._steps = steps
        self._knext = knext.ravel()
        self._knext_offset = np.arange(d, dtype=np.intp) * pad

    @classmethod
    def fit(cls, X: NDArray[np.float64], *, min_group: int = MIN_GROUP) -> MarginalScores:
        """Learn the knots from reference rows (NaN and infinite values are skipped)."""
        X = np.asarray(X, dtype=np.float64)
        d = X.shape[1]
        per_col: list[tuple[NDArray[np.float64], NDArray[np.float64], float, float]] = []
        for j in range(d):
            col = np.sort(X[np.isfinite(X[:, j]), j])
            n = len(col)
            if n == 0:
                per_col.append((np.zeros(1), np.zeros(1), 1.0, 1.0))
                continue
            z = _rank_scores(n)
            bins = np.array_split(np.arange(n), max(1, min(MAX_KNOTS, n // min_group)))
            sizes = np.array([len(b) for b in bins], dtype=np.float64)
            kx = np.array([col[b].mean() for b in bins])
            kz = np.array([z[b].mean() for b in bins])
            # equal means (a run of ties) become one knot with the pooled normal score
            kx_unique, inverse = np.unique(kx, return_inverse=True)
            kz = np.bincount(inverse, weights=kz * sizes) / np.bincount(inverse, weights=sizes)
            if len(kx_unique) > 1:
                low = (kz[1] - kz[0]) / (kx_unique[1] - kx_unique[0])
                high = (kz[-1] - kz[-2]) / (kx_unique[-1] - kx_unique[-2])
            else:
                sd = float(np.std(col))
                low = high = 1.0 / sd if sd > 0 else 1.0
            per_col.append((kx_unique, kz, float(low), float(high)))
        n_seg = max(len(p[0]) for p in per_col)
        knots = np.full((n_seg, d), np.inf)
        scores = np.empty((n_seg, d))
        for j, (kx, kz, _, _) in enumerate(per_col):
            knots[: len(kx), j] = kx
            scores[: len(kz), j] = kz
            scores[len(kz) :, j] = kz[-1]
        return cls(
            knots,
            scores,
            np.array([len(p[0]) for p in per_col], dtype=np.intp),
            np.array([p[2] for p in per_col]),
            np.array([p[3] for p in per_col]),
        )

    def segments(self, X: NDArray[np.float64]) -> NDArray[np.intp]:
        """Index of the segment each value falls in (0: below the lowest knot).

        Equals ``#{knots <= x}`` per column (NaN: 0); see :meth:`_compile_grid`.
        """
        with np.errstate(all="ignore"):  # a huge value overflows to inf: the last cell
            return self._segments(X)

    def _segments(self, X: NDArray[np.float64]) -> NDArray[np.intp]:
        t = X - self._g0
        t *= self._inv_h
        np.fmax(t, -1.0, out=t)  # NaN -> -1 (cell 0)
        np.fmin(t, self._cells, out=t)
        t += 1.0
        cell = t.astype(np.intp)
        cell += self._cell_offset
        seg = self._table[cell]
        for _ in range(self._steps):
            seg += self._knext[seg + self._knext_offset] <= X
        return np.asarray(np.minimum(seg, self.n_knots, out=seg), dtype=np.intp)

    def transform(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Normal scores ``(n, d)``; missing and infinite values map to 0."""
        X = np.asarray(X, dtype=np.float64)
        with np.errstate(all="ignore"):
            flat = self._segments(X)
            flat += self._offset
            z = self._b[flat]
            z *= X
            z += self._a[flat]
            low = z < self._low_cut
            if np.count_nonzero(low):
                r, c = np.nonzero(low)
                u = np.minimum(self._low_cut[c] - z[r, c], 1e300)
                z[r, c] = self._low_cut[c] - np.log1p(u)
            high = z > self._high_cut
            if np.count_nonzero(high):
                r, c = np.nonzero(high)
                u = np.minimum(z[r, c] - self._high_cut[c], 1e300)
                z[r, c] = self._high_cut[c] + np.log1p(u)
            bad = ~np.isfinite(X)
            if np.count_nonzero(bad):
                z[bad] = 0.0
        return np.asarray(z, dtype=np.float64)

    def inverse(self, z: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per column, the value whose normal score is ``z[j]`` (the map is increasing)."""
        z = np.asarray(z, dtype=np.float64)
        out = np.empty(len(z))
        for j, k in enumerate(self._knot_list):
            zj, lo_z, hi_z = float(z[j]), float(self._first_z[j]), float(self._last_z[j])
            if zj < lo_z:
                u = lo_z - zj
                u = u if u <= TAIL_LINEAR else TAIL_LINEAR + math.expm1(min(u - TAIL_LINEAR, 700.0))
                out[j] = k[0] - u / self.slope_low[j]
            elif zj > hi_z:
                u = zj - hi_z
                u = u if u <= TAIL_LINEAR else TAIL_LINEAR + math.expm1(min(u - TAIL_LINEAR, 700.0))
                out[j] = k[-1] + u / self.slope_high[j]
            else:
                out[j] = float(np.interp(zj, self.scores[: len(k), j], k))
        return out

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (knots are means of >= 20 values)."""
        return {
            "knots": [k.tolist() for k in self._knot_list],
            "scores": [self.scores[: len(k), j].tolist() for j, k in enumerate(self._knot_list)],
            "slope_low": self.slope_low.tolist(),
            "slope_high": self.slope_high.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MarginalScores:
        """Restore from :meth:`to_state`."""
        cols = [np.asarray(k, dtype=np.float64) for k in state["knots"]]
        zs = [np.asarray(z, dtype=np.float64) for z in state["scores"]]
        n_seg, d = max(len(k) for k in cols), len(cols)
        knots = np.full((n_seg, d), np.inf)
        scores = np.empty((n_seg, d))
        for j, (k, z) in enumerate(zip(cols, zs, strict=True)):
            knots[: len(k), j] = k
            scores[: len(z), j] = z
            scores[len(z) :, j] = z[-1]
        return cls(
            knots,
            scores,
            np.array([len(k) for k in cols], dtype=np.intp),
            np.asarray(state["slope_low"], dtype=np.float64),
            np.asarray(state["slope_high"], dtype=np.float64),
        )


# ---------------------------------------------------------------- centroid detector
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
        self.calibration_scores = _sorted_scores(calibration_scores)
        c32 = np.ascontiguousarray(self.centroids.T, dtype=np.float32)
        self._c_norms = (c32 * c32).sum(axis=0)
        self._minus_2c = -2.0 * c32  # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c)
        # rows per block: the product stays under 2**17 multiply-adds (see BLOCK_ROWS)
        work = max(1, self.centroids.shape[0] * self.centroids.shape[1])
        self._block = int(max(BLOCK_ROWS, min(1024, (1 << 17) // work)))

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
        det.calibration_scores = _sorted_scores(det.scores(cal_part))
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


# ---------------------------------------------------------------- kNN detector (opt-in)
class KnnDetector:
    """kNN-distance OOD detector with conformal p-values (opt-in: it stores reference rows).

    Each numeric feature is first mapped to normal scores through its reference
    quantiles (so a heavy-tailed feature does not dominate the distance), with
    logarithmic extension beyond the reference range in robust standard
    deviations (values past anything seen keep growing, without swamping the
    other features). The score of a row is the mean
    Euclidean distance to its ``k`` nearest rows of a fit set. The reference is
    split at random: one part fits the transform and holds the neighbours, the
    held-out part gives calibration scores, and the p-value of a row is
    ``(1 + #{calibration scores >= its score}) / (m + 1)``. For a row
    exchangeable with the reference, ``P(p <= alpha) <= alpha``.

    Parameters
    ----------
    knots : ndarray of shape (n_knots, d)
        Per feature, increasing reference quantiles (padded with the last).
    normal_scores : ndarray of shape (n_knots, d)
        Normal score of each knot.
    n_knots : ndarray of int, shape (d,)
        Number of distinct knots per feature.
    tail_scale : ndarray of shape (d,)
        Robust standard deviation used beyond the outer knots.
    fit_rows : ndarray of shape (n_fit, d)
        Transformed reference rows the neighbours are searched in.
    calibration_scores : ndarray of shape (m,)
        Scores of the held-out reference rows.
    k : int
        Number of neighbours.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> det = KnnDetector.fit(rng.normal(size=(400, 2)), k=5, max_fit=1000, rng=rng)
    >>> p = det.pvalues(np.array([[0.0, 0.0], [8.0, 8.0]]))
    >>> bool(p[0] > 0.1), bool(p[1] == det.min_pvalue)
    (True, True)
    """

    kind = "knn"

    def __init__(
        self,
        knots: NDArray[np.float64],
        normal_scores: NDArray[np.float64],
        n_knots: NDArray[np.intp],
        tail_scale: NDArray[np.float64],
        fit_rows: NDArray[np.float64],
        calibration_scores: NDArray[np.float64],
        k: int,
    ) -> None:
        self.knots = np.ascontiguousarray(knots, dtype=np.float64)
        self.normal_scores = np.ascontiguousarray(normal_scores, dtype=np.float64)
        self.n_knots = np.asarray(n_knots, dtype=np.intp)
        self.tail_scale = np.asarray(tail_scale, dtype=np.float64)
        self.fit_rows = np.ascontiguousarray(fit_rows, dtype=np.float64)
        self.calibration_scores = np.sort(np.asarray(calibration_scores, dtype=np.float64))
        self.k = int(min(k, len(self.fit_rows))) if len(self.fit_rows) else int(k)
        # Distances are computed in float32: half the memory traffic of the block
        # products and partitions, and ~1e-7 relative error, far below what matters for
        # a neighbour distance. Calibration and test rows go through the same path.
        self._fit32 = self.fit_rows.astype(np.float32)
        self._sq_norms = np.einsum("ij,ij->i", self._fit32, self._fit32)
        d = self.knots.shape[1]
        self._cols = np.arange(d)
        self._first_x = self.knots[0]
        self._first_z = self.normal_scores[0]
        last = self.n_knots - 1
        self._last_x = self.knots[last, self._cols]
        self._last_z = self.normal_scores[last, self._cols]
        self._max_seg = np.maximum(last, 1)

    @classmethod
    def fit(
        cls, X: NDArray[np.float64], *, k: int, max_fit: int, rng: np.random.Generator
    ) -> KnnDetector:
        """Fit on raw numeric reference rows (NaN allowed), splitting them in two.

        The fit part (half the rows, at most ``max_fit``) fits the transform and
        holds the neighbours; every other row is a calibration row.
        """
        order = rng.permutation(len(X))
        n_fit = min((len(X) + 1) // 2, max_fit)
        fit_part, cal_part = X[order[:n_fit]], X[order[n_fit:]]
        d = X.shape[1]
        probs = np.linspace(0.5, n_fit - 0.5, min(n_fit, 41)) / n_fit
        z_grid = np.array([_NORMAL.inv_cdf(float(p)) for p in probs])
        knots = np.empty((len(probs), d))
        scores = np.empty((len(probs), d))
        n_knots = np.empty(d, dtype=np.intp)
        tail = np.empty(d)
        for j in range(d):
            col = fit_part[:, j]
            col = col[np.isfinite(col)]
            if len(col) == 0:
                col = np.zeros(1)
            q = np.quantile(col, probs)
            uniq, inverse = np.unique(q, return_inverse=True)
            z = np.bincount(inverse, weights=z_grid) / np.bincount(inverse)
            n = len(uniq)
            knots[:n, j], scores[:n, j] = uniq, z
            knots[n:, j], scores[n:, j] = uniq[-1], z[-1]
            n_knots[j] = n
            iqr = float(np.subtract(*np.quantile(col, [0.75, 0.25])))
            std = float(np.std(col))
            tail[j] = iqr / 1.349 if iqr > 0 else (std if std > 0 else 1.0)
        det = cls(knots, scores, n_knots, tail, np.zeros((0, d)), np.zeros(0), k)
        det = cls(knots, scores, n_knots, tail, det.transform(fit_part), np.zeros(0), k)
        det.calibration_scores = np.sort(det.scores(cal_part))
        return det

    @property
    def min_pvalue(self) -> float:
        """The smallest p-value the detector can give: ``1 / (m + 1)``."""
        return 1.0 / (len(self.calibration_scores) + 1)

    def transform(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Normal scores per feature; missing and infinite values map to 0 (the median).

        Missing and infinite values have guards of their own; the OOD score
        judges the row's other values.
        """
        X = np.asarray(X, dtype=np.float64)
        knots, zs = self.knots, self.normal_scores
        out = np.empty_like(X)
        for start in range(0, len(X), 256):
            x = X[start : start + 256]
            seg = (knots[None, :, :] <= x[:, None, :]).sum(axis=1)
            seg = np.clip(seg, 1, self._max_seg)
            x0 = knots[seg - 1, self._cols]
            x1 = knots[seg, self._cols]
            z0 = zs[seg - 1, self._cols]
            z1 = zs[seg, self._cols]
            with np.errstate(all="ignore"):
                width = x1 - x0
                t = np.where(width > 0, (x - x0) / np.where(width > 0, width, 1.0), 0.0)
                z = z0 + t * (z1 - z0)
                # beyond the outer knots: log-growth in robust sds, so one extreme value
                # counts but does not swamp the joint pattern of the other features
                below = np.log1p(np.maximum(self._first_x - x, 0.0) / self.tail_scale)
                above = np.log1p(np.maximum(x - self._last_x, 0.0) / self.tail_scale)
                z = np.where(x < self._first_x, self._first_z - below, z)
                z = np.where(x > self._last_x, self._last_z + above, z)
            out[start : start + 256] = z
        out = np.where(np.isfinite(out), out, 0.0)
        return np.clip(out, -_CLIP, _CLIP)

    def _scores(self, X_scaled: NDArray[np.float64]) -> NDArray[np.float64]:
        k = self.k
        fit = self._fit32
        # One formula for every batch size, a single row included (the expansion with
        # the cached squared norms is also the fastest for one row).
        out = np.empty(len(X_scaled), dtype=np.float64)
        for start in range(0, len(X_scaled), 128):
            block = np.ascontiguousarray(X_scaled[start : start + 128], dtype=np.float32)
            # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, in place (fresh large arrays cost page faults)
            d2 = block @ fit.T
            d2 *= -2.0
            d2 += np.einsum("ij,ij->i", block, block)[:, None]
            d2 += self._sq_norms[None, :]
            np.maximum(d2, 0.0, out=d2)
            near = np.partition(d2, k - 1, axis=1)[:, :k]
            out[start : start + 128] = np.sqrt(near).mean(axis=1)
        return out

    def scores(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Mean distance to the ``k`` nearest fit rows (higher is more unusual)."""
        return self._scores(self.transform(X))

    def pvalues(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Conformal p-values of raw numeric rows."""
        return conformal_pvalues(self.calibration_scores, self.scores(X))

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state; it holds the transformed reference rows (``raw_reference_rows``)."""
        return {
            "kind": self.kind,
            "stores_raw_rows": True,
            "knots": self.knots.tolist(),
            "normal_scores": self.normal_scores.tolist(),
            "n_knots": self.n_knots.tolist(),
            "tail_scale": self.tail_scale.tolist(),
            "raw_reference_rows": self.fit_rows.tolist(),
            "calibration_scores": self.calibration_scores.tolist(),
            "k": self.k,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> KnnDetector:
        """Restore from :meth:`to_state`."""
        d = len(state["tail_scale"])
        return cls(
            np.asarray(state["knots"], dtype=np.float64).reshape(-1, d),
            np.asarray(state["normal_scores"], dtype=np.float64).reshape(-1, d),
            np.asarray(state["n_knots"], dtype=np.intp),
            np.asarray(state["tail_scale"], dtype=np.float64),
            # "fit_rows" in files written by safepredict 0.1.0
            np.asarray(
                state["raw_reference_rows"] if "raw_reference_rows" in state else state["fit_rows"],
                dtype=np.float64,
            ).reshape(-1, d),
            np.asarray(state["calibration_scores"], dtype=np.float64),
            int(state["k"]),
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.to_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(KnnDetector.from_state(state).__dict__)


def detector_from_state(state: Mapping[str, Any]) -> CentroidDetector | KnnDetector:
    """Restore either detector; a state without ``kind`` (safepredict 0.1.0) is a kNN one."""
    if state.get("kind", "knn") == "centroids":
        return CentroidDetector.from_state(state)
    return KnnDetector.from_state(state)
