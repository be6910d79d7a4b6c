"""Tabular input guards: what a table row must look like before the model's answer can be trusted.

:class:`InputGuards` learns, from reference data (the training set, or the
calibration set by default), each column's kind (numeric or categorical), its
numeric range, its allowed categories and whether it may be missing, plus an
out-of-distribution (OOD) detector (:mod:`safepredict.ood`). The reference is
split at random: one part learns the per-column normal-score map and the OOD
centroids, the held-out part calibrates both the ranges (their combined per-row
false-alarm rate is at most ``guard_alpha``) and the OOD p-values (at most
``ood_alpha``). No reference row is stored unless ``ood_method="knn"`` opts in.

:meth:`InputGuards.check` then gives, per row, the reason codes

``missing:<col>``, ``non_finite:<col>``, ``type:<col>``, ``unseen_category:<col>``,
``out_of_range:<col>`` and ``ood``

with the action rank the :class:`~safepredict.config.GuardConfig` assigns
(0 = none or ``"ignore"``, 1 = ``"review"``, 2 = ``"abstain"``), the OOD p-values and
which rows must not be sent to the model at all (a string where a number belongs,
an unseen category, a missing or infinite value). The core works on numpy arrays;
a pandas DataFrame is only split into its columns at the edge. The module is pure:
it never logs, routes or imports other layer-2 stage modules.

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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import is_frame
from safepredict._validation import describe
from safepredict.config import GuardConfig
from safepredict.exceptions import CalibrationError, ConfigError, InputSchemaError
from safepredict.guards.ranges import (
    MIN_FIT,
    WIDE_NET,
    allow_missing_for,
    bound,
    fit_size,
    json_float,
    numeric_range,
    range_bounds,
    range_threshold,
)
from safepredict.guards.result import MODEL_UNSAFE, RANK, GuardResult, collect_columns
from safepredict.guards.rows import RowChecker
from safepredict.guards.values import (
    CATEGORICAL,
    NUMERIC,
    category_key,
    check_categories,
    infer_kind,
    is_missing_scalar,
    numeric_column,
    split_columns,
)
from safepredict.ood import CentroidDetector, KnnDetector, MarginalScores, detector_from_state

__all__ = ["InputGuards"]

#: Batches of at most this many rows are checked in plain Python (:meth:`InputGuards.check`):
#: for them numpy's per-call cost, not arithmetic, is the guards' whole latency. A
#: batch with non-numeric columns pays a Python loop per value on either path.
FAST_ROWS = 8
#: The same for an all-numeric batch: numpy's cost is per call, Python's per value, and
#: measured side by side (``benchmarks/bench_guards_small.py``, 18 columns) plain
#: Python wins for one or two rows only.
FAST_NUMERIC_ROWS = 2

_FLOAT64 = np.dtype(np.float64)

#: Guard state format written by :meth:`InputGuards.to_state` (1: safepredict 0.1.0).
STATE_VERSION = 2


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
    detector : CentroidDetector or KnnDetector, optional
        OOD detector over the numeric columns.
    range_threshold : float, optional
        ``range_method="calibrated"``: the normal-score level ``t`` the ranges
        were set at (``inf`` without held-out reference rows).
    range_held_out : int, optional
        Number of held-out reference rows the ranges were calibrated on.

    Examples
    --------
    >>> import pandas as pd
    >>> ref = pd.DataFrame({"age": [20, 35, 50, 64], "city": ["a", "b", "a", "c"]})
    >>> g = InputGuards.fit(ref, GuardConfig(ood_method="none", range_method="minmax"))
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
        detector: CentroidDetector | KnnDetector | None = None,
        range_threshold: float | None = None,
        range_held_out: int | None = None,
    ) -> None:
        self.config = config
        self.columns = tuple(columns)
        self.kinds = tuple(kinds)
        self.low = tuple(low)
        self.high = tuple(high)
        self.allow_missing = tuple(bool(a) for a in allow_missing)
        self.categories = tuple(None if c is None else list(c) for c in categories)
        self.detector = detector
        self.range_threshold = None if range_threshold is None else float(range_threshold)
        self.range_held_out = None if range_held_out is None else int(range_held_out)
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
        guards = [g for g in GuardConfig.GUARDS if g != "ood"]
        self._codes = {g: [f"{g}:{c}" for c in self.columns] for g in guards}
        self._action_rank = {g: RANK[self.config.action_for(g)] for g in GuardConfig.GUARDS}
        self._unsafe = tuple(g for g in MODEL_UNSAFE if self.config.action_for(g) != "ignore")
        self._d = d
        self._one_row = (1, d) if self._all_numeric else None
        # the plain-Python path of small batches (safepredict.guards.rows)
        self._rows = RowChecker(
            numeric=self._numeric.tolist(),
            low=self._lo.tolist(),
            high=self._hi.tolist(),
            allow_missing=list(self.allow_missing),
            sets=self._sets,
            str_cats=self._str_cats,
            codes=self._codes,
            action_rank=self._action_rank,
            unsafe=self._unsafe,
        )

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
            kind = infer_kind(col, dtype)
            if "categories" in override:
                kind = CATEGORICAL
            kinds.append(kind)
            missing = np.array([is_missing_scalar(v) for v in col.tolist()], dtype=bool)
            if col.dtype.kind == "f":
                missing = np.isnan(col)
            allow.append(allow_missing_for(config, override, bool(missing.any())))
            if kind == NUMERIC:
                values, _ = numeric_column(col)
                numeric_values.append(values)
                if config.range_method == "calibrated":
                    lo, hi = -math.inf, math.inf  # set below, on held-out rows
                else:
                    lo, hi = numeric_range(values, config)
                low.append(bound(override.get("min", lo), name, "min"))
                high.append(bound(override.get("max", hi), name, "max"))
                cats.append(None)
            else:
                low.append(None)
                high.append(None)
                if "categories" in override:
                    allowed = [category_key(v) for v in override["categories"]]
                else:
                    seen = {category_key(v) for v in col[~missing].tolist()}
                    allowed = sorted(seen, key=lambda v: (str(type(v)), v))
                cats.append(allowed)
        detector: CentroidDetector | KnnDetector | None = None
        threshold: float | None = None
        held_out: int | None = None
        rng = np.random.default_rng(random_state)
        if numeric_values:
            X_num = np.column_stack(numeric_values)
            order = rng.permutation(len(X_num))
            n_fit = fit_size(len(X_num), config)
            fit_part, cal_part = X_num[order[:n_fit]], X_num[order[n_fit:]]
            transform = MarginalScores.fit(fit_part) if len(fit_part) else None
            if config.range_method == "calibrated":
                numeric_cols = [j for j, k in enumerate(kinds) if k == NUMERIC]
                learned = [
                    i
                    for i, j in enumerate(numeric_cols)
                    if not {"min", "max"} & set(config.columns.get(names[j], {}))
                ]
                threshold, held_out = math.inf, len(cal_part)
                if transform is not None and learned:
                    threshold = range_threshold(transform, cal_part, learned, config.guard_alpha)
                    lo_hi = range_bounds(transform, threshold)
                    for i in learned:
                        j = numeric_cols[i]
                        lo, hi = float(lo_hi[0][i]), float(lo_hi[1][i])
                        if math.isinf(threshold):  # too few rows for guard_alpha: a wide net
                            lo, hi = numeric_range(numeric_values[i], WIDE_NET)
                        low[j] = None if math.isinf(lo) else lo
                        high[j] = None if math.isinf(hi) else hi
            if config.ood_method == "centroids" and transform is not None:
                if len(fit_part) >= MIN_FIT and len(cal_part):
                    detector = CentroidDetector.fit_split(
                        fit_part, cal_part, rng=rng, transform=transform
                    )
            elif config.ood_method == "knn" and len(X_num) >= 2 * (config.ood_neighbors + 1):
                detector = KnnDetector.fit(
                    X_num, k=config.ood_neighbors, max_fit=config.ood_reference_size, rng=rng
                )
        return cls(config, names, kinds, low, high, allow, cats, detector, threshold, held_out)

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
        alpha = self.config.ood_alpha
        one_row = type(X) is np.ndarray and X.shape == self._one_row and X.dtype is _FLOAT64
        if one_row and FAST_NUMERIC_ROWS:  # the common single row, as split_columns gives it
            passed = self._rows.check_row(X, self.detector, alpha)
            if passed is not None:
                return passed
        matrix, cols = split_columns(X, self._d)
        n = len(matrix) if matrix is not None else (len(cols[0]) if cols else len(X))
        if 0 < n <= (FAST_ROWS if matrix is None else FAST_NUMERIC_ROWS) and self._d:
            if n == 1 and matrix is not None and self._all_numeric and matrix is not X:
                passed = self._rows.check_row(matrix, self.detector, alpha)
                if passed is not None:
                    return passed
            return self._rows.check(matrix, cols, n, self.detector, alpha)
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
                    values[:, j], wrong[:, j] = numeric_column(col)
                else:
                    allowed = self._sets[j]
                    assert allowed is not None
                    check_categories(
                        allowed, self._str_cats[j], j, col, cat_missing, cat_unseen, cat_wrong
                    )
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
            ood = self.detector.pvalues(
                values if self._all_numeric else values[:, self._numeric_idx]
            )
        return collect_columns(
            n, masks, ood, self._codes, self._action_rank, self._unsafe, self.config.ood_alpha
        )

    # ------------------------------------------------------------ state
    @property
    def ood_min_pvalue(self) -> float | None:
        """Smallest OOD p-value possible; if above ``ood_alpha`` the OOD guard never fires."""
        return None if self.detector is None else self.detector.min_pvalue

    @property
    def ranges_calibrated(self) -> bool | None:
        """Whether the learned ranges are finite and hold ``guard_alpha``.

        ``False`` when the reference left fewer than ``1/guard_alpha - 1``
        held-out rows (a reference under about ``1/guard_alpha + 40`` rows):
        no range then has the guarantee, so the learned ranges fall back to a
        wide net -- the reference's min/max widened by its whole span on each
        side -- that still stops gross values (a never silent answer on a
        value far outside anything seen) at a false-alarm rate that is not
        certified. Column ``min``/``max`` overrides still apply. ``None``
        unless ``range_method="calibrated"``.

        Examples
        --------
        >>> InputGuards.fit(np.random.default_rng(0).normal(size=(200, 2))).ranges_calibrated
        True
        >>> InputGuards.fit(np.random.default_rng(0).normal(size=(100, 2))).ranges_calibrated
        False
        """
        if self.range_threshold is None:
            return None
        return not math.isinf(self.range_threshold)

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
            "version": STATE_VERSION,
            "stores_raw_rows": bool(getattr(self.detector, "kind", None) == "knn"),
            "range_threshold": json_float(self.range_threshold),
            "range_held_out": self.range_held_out,
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
        if not isinstance(state, Mapping) or state.get("version") not in (1, STATE_VERSION):
            raise ConfigError(
                "guard state must be a dict written by InputGuards.to_state() (version 1 or "
                f"{STATE_VERSION}); got {describe(state)}."
            )
        det = state.get("detector")
        threshold = state.get("range_threshold")
        n_held_out = state.get("range_held_out")
        return cls(
            GuardConfig.from_dict(state["config"]),
            state["columns"],
            state["kinds"],
            state["low"],
            state["high"],
            state["allow_missing"],
            state["categories"],
            None if det is None else detector_from_state(det),
            None if threshold is None else float(threshold),
            None if n_held_out is None else int(n_held_out),
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.to_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(InputGuards.from_state(state).__dict__)
