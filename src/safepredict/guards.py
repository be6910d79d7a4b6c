"""Input guards: what a row must look like before the model's answer can be trusted.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import is_frame
from safepredict._validation import describe
from safepredict.config import GuardConfig
from safepredict.exceptions import CalibrationError, ConfigError, InputSchemaError
from safepredict.ood import CentroidDetector, KnnDetector, MarginalScores, detector_from_state

__all__ = ["CentroidDetector", "GuardResult", "InputGuards", "KnnDetector"]

NUMERIC = "numeric"
CATEGORICAL = "categorical"

#: Guards whose failure means the model may be unable to take the value at all.
_MODEL_UNSAFE = ("missing", "non_finite", "type", "unseen_category")
_RANK = {"ignore": 0, "review": 1, "abstain": 2}
#: Guard state format written by :meth:`InputGuards.to_state` (1: safepredict 0.1.0).
STATE_VERSION = 2
#: Fewest rows the OOD detector and the range calibration fit on.
_MIN_FIT = 20


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
                if config.range_method == "calibrated":
                    lo, hi = -math.inf, math.inf  # set below, on held-out rows
                else:
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
        detector: CentroidDetector | KnnDetector | None = None
        threshold: float | None = None
        held_out: int | None = None
        rng = np.random.default_rng(random_state)
        if numeric_values:
            X_num = np.column_stack(numeric_values)
            order = rng.permutation(len(X_num))
            n_fit = _fit_size(len(X_num), config)
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
                    threshold = _range_threshold(transform, cal_part, learned, config.guard_alpha)
                    lo_hi = _range_bounds(transform, threshold)
                    for i in learned:
                        j = numeric_cols[i]
                        lo, hi = float(lo_hi[0][i]), float(lo_hi[1][i])
                        if math.isinf(threshold):  # too few rows for guard_alpha: a wide net
                            lo, hi = _numeric_range(numeric_values[i], _WIDE_NET)
                        low[j] = None if math.isinf(lo) else lo
                        high[j] = None if math.isinf(hi) else hi
            if config.ood_method == "centroids" and transform is not None:
                if len(fit_part) >= _MIN_FIT and len(cal_part):
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
            ood = self.detector.pvalues(
                values if self._all_numeric else values[:, self._numeric_idx]
            )
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
            "range_threshold": _json_float(self.range_threshold),
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


def _fit_size(n: int, config: GuardConfig) -> int:
    """Reference rows that fit the transform and centroids; the rest calibrate.

    Half the rows (at most ``ood_reference_size``); a small reference keeps
    ``1/alpha - 1`` held-out rows when it can (with at least 40 fit rows), so
    that the ranges and the OOD p-values can reach their false-alarm rates.
    """
    n_fit = min((n + 1) // 2, config.ood_reference_size)
    needed = math.ceil(1.0 / min(config.guard_alpha, config.ood_alpha) - 1.0 - 1e-9)
    if n - n_fit < needed:
        n_fit = min(n_fit, max(2 * _MIN_FIT, n - needed))
    return n_fit


def _range_threshold(
    transform: MarginalScores, held_out: NDArray[np.float64], learned: list[int], alpha: float
) -> float:
    """Split-conformal level ``t`` of the per-row score ``max_j |z_j|`` over learned columns.

    ``t`` is the ``ceil((m + 1)(1 - alpha))``-th smallest of the ``m`` held-out
    scores, so a row exchangeable with the reference exceeds it (some column out
    of range) with probability at most ``alpha``. With too few held-out rows for
    ``alpha`` (``m < 1/alpha - 1``) no finite level has that guarantee: ``inf``
    (the learned ranges are unbounded).
    """
    m = len(held_out)
    rank = math.ceil((m + 1) * (1.0 - alpha) - 1e-9)
    if m == 0 or rank > m:
        return math.inf
    z = transform.transform(held_out)[:, learned]
    scores = np.sort(np.abs(z).max(axis=1))
    return float(scores[rank - 1])


def _range_bounds(
    transform: MarginalScores, threshold: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per numeric column, the values whose normal score is ``-t`` and ``+t``."""
    d = len(transform.n_knots)
    if math.isinf(threshold):
        return np.full(d, -np.inf), np.full(d, np.inf)
    low = transform.inverse(np.full(d, -threshold))
    high = transform.inverse(np.full(d, threshold))
    # widen by far more than the inverse's rounding, so that a value whose score is
    # exactly t (common in discrete columns) stays in range, as the score says
    return low - 1e-9 * np.maximum(np.abs(low), 1.0), high + 1e-9 * np.maximum(np.abs(high), 1.0)


def _json_float(v: float | None) -> float | str | None:
    if v is None or math.isfinite(v):
        return v
    return "inf"


def _allow_missing(config: GuardConfig, override: Mapping[str, Any], seen: bool) -> bool:
    if "allow_missing" in override:
        return bool(override["allow_missing"])
    if config.missing_policy == "always":
        return True
    if config.missing_policy == "never":
        return False
    return seen


#: The uncalibrated fallback of ``range_method="calibrated"`` on a small reference.
_WIDE_NET = GuardConfig(range_method="minmax", range_margin=1.0)


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
