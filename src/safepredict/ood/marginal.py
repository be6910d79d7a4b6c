"""Conformal p-values and the per-column normal-score map the OOD detectors share."""

from __future__ import annotations

import functools
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._cluster import MIN_GROUP

__all__ = [
    "BLOCK_ROWS",
    "MAX_CENTROIDS",
    "MAX_KNOTS",
    "NORMAL",
    "ROWS_PER_CENTROID",
    "TAIL_LINEAR",
    "MarginalScores",
    "conformal_pvalues",
    "sorted_scores",
]

#: The standard normal distribution (its quantile function maps ranks to scores).
NORMAL = NormalDist()
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
    return tuple(NORMAL.inv_cdf((i + 0.5) / n) for i in range(n))


def _rank_scores(n: int) -> NDArray[np.float64]:
    """Normal scores ``Phi^-1((r - 0.5) / n)`` of the ranks ``r = 1 .. n``."""
    return np.array(_rank_scores_cached(n))


def sorted_scores(values: Any) -> NDArray[np.float64]:
    """``values`` as a sorted float array (calibration scores)."""
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
        # plain-Python copies for :meth:`transform_rows` (a handful of rows)
        # per column: (knots, a per segment, b per segment, low cut, high cut)
        seg = n_seg + 1
        a_list, b_list = self._a.tolist(), self._b.tolist()
        self._py_columns = [
            (
                tuple(k.tolist()),
                a_list[j * seg : (j + 1) * seg],
                b_list[j * seg : (j + 1) * seg],
                float(self._low_cut[j]),
                float(self._high_cut[j]),
            )
            for j, k in enumerate(self._knot_list)
        ]

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

    def transform_rows(self, rows: Sequence[Sequence[float]]) -> list[list[float]]:
        """:meth:`transform` of a few rows in plain Python, bit for bit the same values.

        For one row numpy's per-call cost dominates :meth:`transform`; this walks
        the same segments (``#{knots <= x}`` by bisection), the same ``b * x + a``
        and the same tails (``numpy.log1p``, as :meth:`transform` uses).

        Examples
        --------
        >>> m = MarginalScores.fit(np.random.default_rng(0).normal(size=(500, 2)))
        >>> X = np.array([[0.3, np.nan], [1e300, -7.0]])
        >>> m.transform_rows(X.tolist()) == m.transform(X).tolist()
        True
        """
        columns = self._py_columns
        out: list[list[float]] = []
        for row in rows:
            z_row: list[float] = []
            append = z_row.append
            for x, (knots, a, b, low_cut, high_cut) in zip(row, columns, strict=True):
                if x - x != 0.0:  # NaN or infinite: the median (their own guards flag them)
                    append(0.0)
                    continue
                k = bisect_right(knots, x)
                z = b[k] * x
                z += a[k]
                if z < low_cut:
                    u = low_cut - z
                    z = low_cut - float(np.log1p(u if u < 1e300 else 1e300))
                elif z > high_cut:
                    u = z - high_cut
                    z = high_cut + float(np.log1p(u if u < 1e300 else 1e300))
                append(z)
            out.append(z_row)
        return out

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
