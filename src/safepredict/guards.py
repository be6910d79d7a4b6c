"""Input guards: what a row must look like before the model's answer can be trusted.

:class:`InputGuards` learns, from reference data (the training set, or the
calibration set by default), each column's kind (numeric or categorical), its
numeric range, its allowed categories and whether it may be missing, plus an
out-of-distribution (OOD) detector: the mean distance to the ``k`` nearest
reference rows on robust-scaled numeric features, turned into a conformal
p-value on held-out reference rows.

:meth:`InputGuards.check` then gives, per row, the reason codes

``missing:<col>``, ``non_finite:<col>``, ``type:<col>``, ``unseen_category:<col>``,
``out_of_range:<col>`` and ``ood``

with the action rank the :class:`~safepredict.config.GuardConfig` assigns
(0 = none or ``"ignore"``, 1 = ``"review"``, 2 = ``"abstain"``), the OOD p-values and
which rows must not be sent to the model at all (a string where a number belongs,
an unseen category, a missing or infinite value). The core works on numpy arrays;
a pandas DataFrame is only split into its columns at the edge. The module is pure:
it never logs, routes or imports other layer-2 modules.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> guards = InputGuards.fit(rng.normal(size=(500, 3)), random_state=0)
>>> result = guards.check(np.array([[0.1, 0.2, 0.3], [np.nan, 0.0, 99.0]]))
>>> result.reasons[1]
('missing:x0', 'out_of_range:x2', 'ood')
>>> result.rank.tolist(), result.skip.tolist()
([0, 2], [False, True])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import is_frame
from safepredict._validation import describe
from safepredict.config import GuardConfig
from safepredict.exceptions import CalibrationError, ConfigError, InputSchemaError

__all__ = ["GuardResult", "InputGuards", "KnnDetector"]

NUMERIC = "numeric"
CATEGORICAL = "categorical"

#: Guards whose failure means the model may be unable to take the value at all.
_MODEL_UNSAFE = ("missing", "non_finite", "type", "unseen_category")
_RANK = {"ignore": 0, "review": 1, "abstain": 2}
#: Scaled feature values are clipped here so squared distances never overflow.
_CLIP = 1e6
_NORMAL = NormalDist()


@dataclass(frozen=True)
class GuardResult:
    """What the guards found in one batch.

    Attributes
    ----------
    reasons : dict of int to tuple of str
        Reason codes of every flagged row (rows that pass are absent), including
        reasons whose guard is configured to ``"ignore"``.
    rank : ndarray of int, shape (n,)
        Strongest configured action per row: 0 none/ignore, 1 review, 2 abstain.
    ood : ndarray of float, shape (n,), or None
        OOD conformal p-values (small means unusual); ``None`` without a detector.
    skip : ndarray of bool, shape (n,)
        Rows not to send to the model (a non-ignored missing, non-finite, type or
        unseen-category reason).
    """

    reasons: dict[int, tuple[str, ...]]
    rank: NDArray[np.intp]
    ood: NDArray[np.float64] | None
    skip: NDArray[np.bool_]


# ---------------------------------------------------------------- value helpers
def _is_missing_scalar(v: Any) -> bool:
    """None, NaN, ``pd.NA`` or ``pd.NaT`` (without importing pandas)."""
    if v is None:
        return True
    if isinstance(v, float):
        return v != v
    return type(v).__name__ in ("NAType", "NaTType")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.number) and not isinstance(
        v, complex | np.complexfloating
    )


def _key(v: Any) -> Any:
    """A JSON-safe, hashable stand-in for a category value."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool | int | float | str):
        return v
    return str(v)


def _numeric_column(col: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Float values of a column and where a value is not a number (``type``).

    Missing values (None, NaN, ``pd.NA``) become NaN; integers too large for a
    float become ``inf``; strings and other objects become NaN and are marked.
    """
    if col.dtype.kind in "biuf":
        return col.astype(np.float64, copy=False), np.zeros(len(col), dtype=bool)
    values = np.empty(len(col), dtype=np.float64)
    wrong = np.zeros(len(col), dtype=bool)
    for i, v in enumerate(col.tolist()):
        if _is_missing_scalar(v):
            values[i] = np.nan
        elif _is_number(v):
            try:
                values[i] = float(v)
            except OverflowError:  # an int beyond float range is not finite for the model
                values[i] = math.inf if v > 0 else -math.inf
        else:
            values[i] = np.nan
            wrong[i] = True
    return values, wrong


def _split_columns(X: Any, d: int) -> tuple[NDArray[np.float64] | None, list[NDArray[Any]]]:
    """A float matrix when every column is numeric, else the columns as arrays."""
    if is_frame(X):
        # Building the dtypes Series or per-column Series costs tens of microseconds, which
        # would dominate a single-row check: look at pandas' blocks (private, guarded).
        blocks = getattr(getattr(X, "_mgr", None), "blocks", None)
        if blocks is not None and all(
            isinstance(b.dtype, np.dtype) and b.dtype.kind in "biuf" for b in blocks
        ):
            return np.asarray(X.to_numpy(dtype=np.float64)), []
        getter = getattr(X, "_get_column_array", None)
        if getter is not None:
            raw = [getter(j) for j in range(X.shape[1])]
        else:  # pragma: no cover - pandas without the private accessor
            raw = [X.iloc[:, j].array for j in range(X.shape[1])]
        if raw and all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in raw):
            if len(raw[0]) == 1:
                return np.array([[a[0] for a in raw]], dtype=np.float64), []
            return np.column_stack(raw).astype(np.float64, copy=False), []
        return None, [np.asarray(a) for a in raw]
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[1] != d:
        raise InputSchemaError(
            f"the guards expect a 2-D batch with {d} features; got shape {arr.shape}.",
            problems=[f"shape={arr.shape}"],
        )
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64, copy=False), []
    return None, [arr[:, j] for j in range(d)]


def _infer_kind(col: NDArray[Any], dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    if str(dtype) == "category":
        return CATEGORICAL
    if kind in "biuf":
        return NUMERIC
    values = [v for v in col.tolist() if not _is_missing_scalar(v)]
    if values and all(_is_number(v) for v in values):
        return NUMERIC
    return CATEGORICAL


# ---------------------------------------------------------------- OOD detector
class KnnDetector:
    """kNN-distance OOD detector with conformal p-values.

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
            block = X_scaled[start : start + 128].astype(np.float32)
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
        s = self.scores(X)
        cal = self.calibration_scores
        at_least = len(cal) - np.searchsorted(cal, s, side="left")
        return np.asarray((1.0 + at_least) / (len(cal) + 1.0), dtype=np.float64)

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "knots": self.knots.tolist(),
            "normal_scores": self.normal_scores.tolist(),
            "n_knots": self.n_knots.tolist(),
            "tail_scale": self.tail_scale.tolist(),
            "fit_rows": self.fit_rows.tolist(),
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
            np.asarray(state["fit_rows"], dtype=np.float64).reshape(-1, d),
            np.asarray(state["calibration_scores"], dtype=np.float64),
            int(state["k"]),
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.to_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(KnnDetector.from_state(state).__dict__)


# ---------------------------------------------------------------- the guards
class InputGuards:
    """Fitted input guards for one feature schema.

    Build with :meth:`fit`; use :meth:`check` on batches whose columns are
    already in the fitted order (``SafePredictor`` checks the batch structure
    first and raises :class:`~safepredict.exceptions.InputSchemaError` there).

    Parameters
    ----------
    config : GuardConfig
        Actions per guard and fitting options.
    columns : sequence of str
        Feature names in model order.
    kinds : sequence of {"numeric", "categorical"}
        Kind of each column.
    low, high : sequence of float or None
        Allowed numeric range per column (``None``: unbounded or categorical).
    allow_missing : sequence of bool
        Whether a missing value is allowed per column.
    categories : sequence of list or None
        Allowed categories per categorical column.
    detector : KnnDetector, optional
        OOD detector over the numeric columns.

    Examples
    --------
    >>> import pandas as pd
    >>> ref = pd.DataFrame({"age": [20, 35, 50, 64], "city": ["a", "b", "a", "c"]})
    >>> g = InputGuards.fit(ref, GuardConfig(ood_method="none"))
    >>> g.check(pd.DataFrame({"age": [30, 130], "city": ["b", "zz"]})).reasons
    {1: ('unseen_category:city', 'out_of_range:age')}
    """

    def __init__(
        self,
        config: GuardConfig,
        columns: Sequence[str],
        kinds: Sequence[str],
        low: Sequence[float | None],
        high: Sequence[float | None],
        allow_missing: Sequence[bool],
        categories: Sequence[list[Any] | None],
        detector: KnnDetector | None = None,
    ) -> None:
        self.config = config
        self.columns = tuple(columns)
        self.kinds = tuple(kinds)
        self.low = tuple(low)
        self.high = tuple(high)
        self.allow_missing = tuple(bool(a) for a in allow_missing)
        self.categories = tuple(None if c is None else list(c) for c in categories)
        self.detector = detector
        self._compile()

    def _compile(self) -> None:
        """Precompute the arrays and reason strings the hot path uses."""
        d = len(self.columns)
        self._numeric = np.array([k == NUMERIC for k in self.kinds], dtype=bool)
        self._numeric_idx = np.flatnonzero(self._numeric)
        self._all_numeric = bool(self._numeric.all())
        self._lo = np.array([-np.inf if v is None else v for v in self.low], dtype=np.float64)
        self._hi = np.array([np.inf if v is None else v for v in self.high], dtype=np.float64)
        self._miss_ok = np.array(self.allow_missing, dtype=bool)
        self._sets = [None if c is None else frozenset(c) for c in self.categories]
        self._str_cats = [
            c is not None and all(isinstance(v, str) for v in c) for c in self.categories
        ]
        guards = GuardConfig.GUARDS[:-1]
        self._codes = {g: [f"{g}:{c}" for c in self.columns] for g in guards}
        self._action_rank = {g: _RANK[self.config.action_for(g)] for g in GuardConfig.GUARDS}
        self._unsafe = tuple(g for g in _MODEL_UNSAFE if self.config.action_for(g) != "ignore")
        self._d = d

    # ------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        reference: Any,
        config: GuardConfig | None = None,
        *,
        feature_names: Sequence[str] | None = None,
        random_state: int | None = None,
    ) -> InputGuards:
        """Learn the guards from reference rows (numpy array or DataFrame).

        Parameters
        ----------
        reference : array-like or DataFrame of shape (n, d)
            Rows that look like the data the model should be trusted on.
        config : GuardConfig, optional
            Default: ``GuardConfig()``.
        feature_names : sequence of str, optional
            Column names; default the frame's columns or ``x0 .. x{d-1}``.
        random_state : int, optional
            Seed of the OOD detector's fit/calibration split.

        Returns
        -------
        InputGuards
        """
        config = GuardConfig() if config is None else config
        if is_frame(reference):
            names = [str(c) for c in reference.columns]
            dtypes = list(reference.dtypes)
            cols = [np.asarray(reference.iloc[:, j].to_numpy()) for j in range(len(names))]
        else:
            arr = np.asarray(reference)
            if arr.ndim != 2:
                raise InputSchemaError(
                    f"reference data must be 2-D (rows x features); got {arr.ndim}-D.",
                    problems=[f"ndim={arr.ndim}"],
                )
            names = [f"x{j}" for j in range(arr.shape[1])]
            dtypes = [arr.dtype] * arr.shape[1]
            cols = [arr[:, j] for j in range(arr.shape[1])]
        if feature_names is not None:
            if len(feature_names) != len(names):
                raise InputSchemaError(
                    f"{len(feature_names)} feature names for {len(names)} reference columns.",
                    problems=[f"n_features={len(names)}, expected {len(feature_names)}"],
                )
            names = [str(c) for c in feature_names]
        if not cols or len(cols[0]) == 0:
            raise CalibrationError(
                "the guards need reference rows with at least one feature; got an empty "
                "reference. Pass reference=X_train (or calibration rows)."
            )
        unknown = sorted(set(config.columns) - set(names))
        if unknown:
            raise ConfigError(
                f"[guards.columns] names columns {unknown} that the data does not have; "
                f"known columns: {names}."
            )
        kinds: list[str] = []
        low: list[float | None] = []
        high: list[float | None] = []
        allow: list[bool] = []
        cats: list[list[Any] | None] = []
        numeric_values: list[NDArray[np.float64]] = []
        for name, col, dtype in zip(names, cols, dtypes, strict=True):
            override = dict(config.columns.get(name, {}))
            kind = _infer_kind(col, dtype)
            if "categories" in override:
                kind = CATEGORICAL
            kinds.append(kind)
            missing = np.array([_is_missing_scalar(v) for v in col.tolist()], dtype=bool)
            if col.dtype.kind == "f":
                missing = np.isnan(col)
            allow.append(_allow_missing(config, override, bool(missing.any())))
            if kind == NUMERIC:
                values, _ = _numeric_column(col)
                numeric_values.append(values)
                lo, hi = _numeric_range(values, config)
                low.append(_bound(override.get("min", lo), name, "min"))
                high.append(_bound(override.get("max", hi), name, "max"))
                cats.append(None)
            else:
                low.append(None)
                high.append(None)
                if "categories" in override:
                    allowed = [_key(v) for v in override["categories"]]
                else:
                    allowed = sorted(
                        {_key(v) for v in col[~missing].tolist()}, key=lambda v: (str(type(v)), v)
                    )
                cats.append(allowed)
        detector = None
        if config.ood_method == "knn" and numeric_values:
            X_num = np.column_stack(numeric_values)
            if len(X_num) >= 2 * (config.ood_neighbors + 1):
                detector = KnnDetector.fit(
                    X_num,
                    k=config.ood_neighbors,
                    max_fit=config.ood_reference_size,
                    rng=np.random.default_rng(random_state),
                )
        return cls(config, names, kinds, low, high, allow, cats, detector)

    # ------------------------------------------------------------ checking
    def check(self, X: Any) -> GuardResult:
        """Check a batch whose columns are in the fitted order.

        Parameters
        ----------
        X : ndarray or DataFrame of shape (n, d)

        Returns
        -------
        GuardResult
        """
        matrix, cols = _split_columns(X, self._d)
        n = len(matrix) if matrix is not None else (len(cols[0]) if cols else len(X))
        if matrix is not None and self._all_numeric:
            values = matrix
            wrong = None
            cat_unseen = cat_wrong = cat_missing = None
        else:
            if matrix is not None:
                cols = [matrix[:, j] for j in range(self._d)]
            values = np.full((n, self._d), np.nan)
            wrong = np.zeros((n, self._d), dtype=bool)
            cat_missing = np.zeros((n, self._d), dtype=bool)
            cat_unseen = np.zeros((n, self._d), dtype=bool)
            cat_wrong = np.zeros((n, self._d), dtype=bool)
            for j, col in enumerate(cols):
                if self._numeric[j]:
                    values[:, j], wrong[:, j] = _numeric_column(col)
                else:
                    self._check_categories(j, col, cat_missing, cat_unseen, cat_wrong)
        num = self._numeric
        nan = np.isnan(values) & num
        if wrong is not None:
            nan &= ~wrong
        masks: dict[str, NDArray[np.bool_]] = {}
        miss = nan & ~self._miss_ok
        if cat_missing is not None:
            miss |= cat_missing & ~self._miss_ok
        masks["missing"] = miss
        inf = np.isinf(values)
        masks["non_finite"] = inf
        if wrong is not None and cat_wrong is not None:
            masks["type"] = wrong | cat_wrong
        if cat_unseen is not None:
            masks["unseen_category"] = cat_unseen
        masks["out_of_range"] = ((values < self._lo) | (values > self._hi)) & ~inf

        ood = None
        if self.detector is not None and n:
            ood = self.detector.pvalues(values[:, self._numeric_idx])
        return self._collect(n, masks, ood)

    def _check_categories(
        self,
        j: int,
        col: NDArray[Any],
        missing: NDArray[np.bool_],
        unseen: NDArray[np.bool_],
        wrong: NDArray[np.bool_],
    ) -> None:
        allowed = self._sets[j]
        assert allowed is not None
        str_cats = self._str_cats[j]
        for i, v in enumerate(col.tolist()):
            if _is_missing_scalar(v):
                missing[i, j] = True
                continue
            try:
                ok = v in allowed or _key(v) in allowed
            except TypeError:  # unhashable (a list, a dict): not a category value
                wrong[i, j] = True
                continue
            if ok:
                continue
            if str_cats and (_is_number(v) or not isinstance(v, str)):
                wrong[i, j] = True
            else:
                unseen[i, j] = True

    def _collect(
        self, n: int, masks: dict[str, NDArray[np.bool_]], ood: NDArray[np.float64] | None
    ) -> GuardResult:
        rank = np.zeros(n, dtype=np.intp)
        skip = np.zeros(n, dtype=bool)
        row_hit: dict[str, NDArray[np.bool_]] = {}
        for guard, mask in masks.items():
            hit = np.asarray(mask.any(axis=1), dtype=bool)
            if hit.any():
                row_hit[guard] = hit
                np.maximum(rank, np.where(hit, self._action_rank[guard], 0), out=rank)
                if guard in self._unsafe:
                    skip |= hit
        ood_hit = None
        if ood is not None:
            ood_hit = np.asarray(ood <= self.config.ood_alpha, dtype=bool)
            if ood_hit.any():
                np.maximum(rank, np.where(ood_hit, self._action_rank["ood"], 0), out=rank)
            else:
                ood_hit = None
        reasons: dict[int, tuple[str, ...]] = {}
        if row_hit or ood_hit is not None:
            flagged = np.zeros(n, dtype=bool)
            for hit in row_hit.values():
                flagged |= hit
            if ood_hit is not None:
                flagged |= ood_hit
            order = [g for g in GuardConfig.GUARDS if g in row_hit]
            for i in np.flatnonzero(flagged).tolist():
                why: list[str] = []
                for guard in order:
                    if row_hit[guard][i]:
                        codes = self._codes[guard]
                        why.extend(codes[j] for j in np.flatnonzero(masks[guard][i]).tolist())
                if ood_hit is not None and ood_hit[i]:
                    why.append("ood")
                reasons[i] = tuple(why)
        return GuardResult(reasons, rank, ood, skip)

    # ------------------------------------------------------------ state
    @property
    def ood_min_pvalue(self) -> float | None:
        """Smallest OOD p-value possible; if above ``ood_alpha`` the OOD guard never fires."""
        return None if self.detector is None else self.detector.min_pvalue

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state; :meth:`from_state` restores it exactly.

        Examples
        --------
        >>> import json
        >>> g = InputGuards.fit(np.arange(40.0).reshape(20, 2), random_state=0)
        >>> twin = InputGuards.from_state(json.loads(json.dumps(g.to_state())))
        >>> twin.to_state() == g.to_state()
        True
        """
        return {
            "version": 1,
            "config": self.config.to_dict(),
            "columns": list(self.columns),
            "kinds": list(self.kinds),
            "low": list(self.low),
            "high": list(self.high),
            "allow_missing": list(self.allow_missing),
            "categories": [None if c is None else list(c) for c in self.categories],
            "detector": None if self.detector is None else self.detector.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> InputGuards:
        """Restore guards saved with :meth:`to_state`."""
        if not isinstance(state, Mapping) or state.get("version") != 1:
            raise ConfigError(
                "guard state must be a dict written by InputGuards.to_state() (version 1); "
                f"got {describe(state)}."
            )
        det = state.get("detector")
        return cls(
            GuardConfig.from_dict(state["config"]),
            state["columns"],
            state["kinds"],
            state["low"],
            state["high"],
            state["allow_missing"],
            state["categories"],
            None if det is None else KnnDetector.from_state(det),
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.to_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(InputGuards.from_state(state).__dict__)


def _allow_missing(config: GuardConfig, override: Mapping[str, Any], seen: bool) -> bool:
    if "allow_missing" in override:
        return bool(override["allow_missing"])
    if config.missing_policy == "always":
        return True
    if config.missing_policy == "never":
        return False
    return seen


def _numeric_range(values: NDArray[np.float64], config: GuardConfig) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return -math.inf, math.inf
    if config.range_method == "quantile":
        lo, hi = (float(v) for v in np.quantile(finite, config.range_quantiles))
    else:
        lo, hi = float(finite.min()), float(finite.max())
    pad = config.range_margin * (hi - lo)
    return lo - pad, hi + pad


def _bound(value: Any, column: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not _is_number(value):
        raise ConfigError(
            f"[guards.columns.{column}] {key} must be a number; got {describe(value)}."
        )
    v = float(value)
    return None if math.isinf(v) else v
