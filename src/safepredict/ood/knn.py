"""The opt-in kNN OOD detector (it stores transformed reference rows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.ood.marginal import NORMAL, conformal_pvalues

__all__ = ["KnnDetector"]

#: Transformed values are clipped here so squared distances never overflow.
_CLIP = 1e6


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
        z_grid = np.array([NORMAL.inv_cdf(float(p)) for p in probs])
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
