"""The explainer's fitted state: method, background (aggregated by default), budget."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._cluster import MIN_GROUP, min_size_kmeans
from safepredict._validation import check_one_of
from safepredict.exceptions import CalibrationError
from safepredict.explain.groups import input_names
from safepredict.explain.select import (
    AGNOSTIC_BACKGROUND_SIZE,
    BACKGROUND_SIZE,
    BACKGROUNDS,
    REQUESTS,
)

__all__ = [
    "ExplainerState",
    "scalar",
]


# ---------------------------------------------------------------- fitted state
@dataclass
class ExplainerState:
    """What an explainer needs to be rebuilt: a background sample and timings.

    The live shap explainer is never part of the state; it is rebuilt lazily
    from the model and this state (so pickling and JSON persistence work).

    Parameters
    ----------
    requested : {"auto", "tree", "linear", "permutation"}
        What the user asked for.
    task : {"classification", "regression"}
        The predictor's task.
    feature_names : tuple of str
        The user's input columns.
    background : dict
        Column name -> list of values, JSON-safe: by default k-means centroids
        of the calibration rows (each the mean, or for a categorical column the
        mode, of >= 20 rows); with ``background_kind="sample"`` a seeded sample
        of raw calibration rows (opt-in).
    is_frame : bool
        Whether the model receives a pandas DataFrame.
    dtypes : dict
        Column name -> pandas dtype string (frames only).
    classes : list, optional
        Class labels (classification).
    budget_ms : float, optional
        Per-row budget.
    random_state : int, optional
        Seed of the background sample and permutation explainer.
    method : str, optional
        The chosen method (set on first use).
    per_row_ms : dict
        Measured per-row cost of each method tried.
    space : str, optional
        ``"proba"``, ``"margin"`` or ``"prediction"``: what the chosen method explains.
    errors : dict
        Method -> why it could not be used (set on first use).
    background_kind : {"kmeans", "sample"}
        How the background was kept (states saved by safepredict 0.1.0 hold a
        raw sample).
    background_weights : list of int, optional
        Calibration rows behind each centroid (``"kmeans"``).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> s = ExplainerState.fit(X, task="regression")
    >>> ExplainerState.from_state(s.to_state()) == s
    True
    >>> s.background_kind, sum(s.background_weights), min(s.background_weights) >= 20
    ('kmeans', 200, True)
    """

    requested: str
    task: str
    feature_names: tuple[str, ...]
    background: dict[str, list[Any]]
    is_frame: bool = False
    dtypes: dict[str, str] = field(default_factory=dict)
    classes: list[Any] | None = None
    budget_ms: float | None = None
    random_state: int | None = None
    method: str | None = None
    per_row_ms: dict[str, float] = field(default_factory=dict)
    space: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    background_kind: str = "sample"
    background_weights: list[int] | None = None

    @classmethod
    def fit(
        cls,
        X: Any,
        *,
        task: str,
        requested: str = "auto",
        classes: Sequence[Any] | None = None,
        budget_ms: float | None = None,
        random_state: int | None = None,
        size: int = BACKGROUND_SIZE,
        background: str = "kmeans",
    ) -> ExplainerState:
        """Summarise ``X`` (model input) as the explainers' background.

        ``background="kmeans"`` (default) keeps at most
        :data:`AGNOSTIC_BACKGROUND_SIZE` weighted centroids, each aggregating at
        least 20 rows (numeric columns: the mean; integer columns: the rounded
        mean; other columns: the most frequent value); no row is stored.
        ``background="sample"`` (opt-in) keeps a seeded sample of ``size`` raw rows.

        Raises
        ------
        CalibrationError
            If ``background="kmeans"`` and ``X`` has fewer than 20 rows.
        """
        check_one_of(requested, "explainer", REQUESTS)
        check_one_of(background, "explainer_background", BACKGROUNDS)
        n = len(X)
        rng = np.random.default_rng(random_state if random_state is not None else 0)
        names = input_names(X)
        is_frame = hasattr(X, "iloc")
        dtypes = {str(c): str(t) for c, t in X.dtypes.items()} if is_frame else {}
        weights: list[int] | None = None
        if background == "sample":
            idx = (
                np.sort(rng.choice(n, size=min(size, n), replace=False)) if n else np.zeros(0, int)
            )
            if is_frame:
                sub = X.iloc[idx]
                data = {str(c): _builtin_list(sub[c].to_numpy()) for c in sub.columns}
            else:
                arr = np.asarray(X)[idx]
                data = {name: _builtin_list(arr[:, j]) for j, name in enumerate(names)}
        else:
            if n < MIN_GROUP:
                raise CalibrationError(
                    f"the explainer's aggregated background needs at least {MIN_GROUP} "
                    f"calibration rows (each centroid summarises >= {MIN_GROUP}); got {n}. "
                    "Calibrate on more rows, or pass explainer_background='sample' to store "
                    "a raw sample of calibration rows instead (opt-in)."
                )
            data, weights = _centroid_background(X, names, rng)
        return cls(
            requested=requested,
            task=task,
            feature_names=tuple(names),
            background=data,
            is_frame=is_frame,
            dtypes=dtypes,
            classes=None if classes is None else _builtin_list(np.asarray(classes)),
            budget_ms=None if budget_ms is None else float(budget_ms),
            random_state=random_state,
            background_kind=background,
            background_weights=weights,
        )

    def background_data(self) -> Any:
        """The background as the model expects it (DataFrame or float array)."""
        if self.is_frame:
            import pandas as pd

            frame = pd.DataFrame({c: self.background[c] for c in self.feature_names})
            return frame.astype(self.dtypes) if self.dtypes else frame
        cols = [self.background[c] for c in self.feature_names]
        return np.asarray(cols, dtype=np.float64).T.reshape(-1, len(self.feature_names))

    def to_state(self) -> dict[str, Any]:
        """JSON-safe dict (restored exactly by :meth:`from_state`)."""
        return {
            "requested": self.requested,
            "task": self.task,
            "feature_names": list(self.feature_names),
            "background": {k: list(v) for k, v in self.background.items()},
            "is_frame": self.is_frame,
            "dtypes": dict(self.dtypes),
            "classes": None if self.classes is None else list(self.classes),
            "budget_ms": self.budget_ms,
            "random_state": self.random_state,
            "method": self.method,
            "per_row_ms": dict(self.per_row_ms),
            "space": self.space,
            "errors": dict(self.errors),
            "background_kind": self.background_kind,
            "background_weights": (
                None if self.background_weights is None else list(self.background_weights)
            ),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ExplainerState:
        """Rebuild from :meth:`to_state` output."""
        data = dict(state)
        data["feature_names"] = tuple(data["feature_names"])
        return cls(**data)


def _column_is_numeric(values: NDArray[Any], dtype: Any) -> bool:
    kind = getattr(dtype, "kind", "O")
    if str(dtype) in ("category", "bool", "boolean") or kind == "b":
        return False
    if kind in "iuf" or str(dtype) in ("Int8", "Int16", "Int32", "Int64", "Float32", "Float64"):
        return True
    if str(dtype).startswith(("UInt", "Int", "Float")):
        return True
    items = [v for v in values.tolist() if v is not None and v == v]
    return bool(items) and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in items
    )


def _centroid_background(
    X: Any, names: list[str], rng: np.random.Generator
) -> tuple[dict[str, list[Any]], list[int]]:
    """Weighted k-means centroids of ``X`` (each cluster >= MIN_GROUP rows), JSON-safe.

    Rows are clustered on standardised numeric columns plus one-hot codes of the
    other columns; a centroid holds each numeric column's mean (rounded for
    integer dtypes) and each other column's most frequent value.
    """
    is_frame = hasattr(X, "iloc")
    n = len(X)
    if is_frame:
        columns = [X.iloc[:, j].to_numpy() for j in range(X.shape[1])]
        kinds = list(X.dtypes)
    else:
        arr = np.asarray(X)
        columns = [arr[:, j] for j in range(arr.shape[1])]
        kinds = [arr.dtype] * arr.shape[1]
    numeric = [_column_is_numeric(c, t) for c, t in zip(columns, kinds, strict=True)]
    feats: list[NDArray[np.float64]] = []
    values: list[Any] = []
    for col, is_num in zip(columns, numeric, strict=True):
        if is_num:
            v = np.array([np.nan if x is None else x for x in col.tolist()], dtype=np.float64)
            v[~np.isfinite(v)] = np.nan
            values.append(v)
            mu = float(np.nanmean(v)) if np.isfinite(v).any() else 0.0
            sd = float(np.nanstd(v)) if np.isfinite(v).any() else 0.0
            z = (v - mu) / (sd if sd > 0 else 1.0)
            feats.append(np.where(np.isfinite(z), z, 0.0)[:, None])
        else:
            items = [str(x) for x in col.tolist()]
            values.append(col)
            uniq, inverse = np.unique(np.asarray(items, dtype=object), return_inverse=True)
            onehot = np.zeros((n, len(uniq)))
            onehot[np.arange(n), inverse] = 1.0 / math.sqrt(2.0)
            feats.append(onehot)
    feats_matrix = np.hstack(feats) if feats else np.zeros((n, 1))
    target = max(1, min(AGNOSTIC_BACKGROUND_SIZE, n // (3 * MIN_GROUP // 2)))
    labels, _ = min_size_kmeans(feats_matrix, target, rng)
    k = int(labels.max()) + 1
    out: dict[str, list[Any]] = {}
    for name, col, v, is_num, dtype in zip(names, columns, values, numeric, kinds, strict=True):
        cells: list[Any] = []
        for c in range(k):
            members = labels == c
            if is_num:
                mv = v[members]
                mv = mv[np.isfinite(mv)]
                if len(mv) == 0:
                    cells.append(None)
                    continue
                mean = float(mv.mean())
                integer = getattr(dtype, "kind", "") in "iu" or str(dtype).startswith(
                    ("Int", "UInt")
                )
                cells.append(round(mean) if integer else mean)
            else:
                cells.append(_mode(col[members]))
        out[name] = cells
    return out, np.bincount(labels, minlength=k).astype(int).tolist()


def _mode(values: NDArray[Any]) -> Any:
    """Most frequent non-missing value (ties: first seen); ``None`` if all are missing."""
    counts: dict[Any, int] = {}
    first: dict[Any, Any] = {}
    for v in values.tolist():
        if v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NAType":
            continue
        key = (type(v).__name__, str(v))
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, v)
    if not counts:
        return None
    best = max(counts, key=lambda key: counts[key])
    return scalar(first[best])


def _builtin_list(values: NDArray[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values.tolist():
        if isinstance(v, float) and not math.isfinite(v):
            out.append(None)  # JSON has no nan/inf; restored as nan
        else:
            out.append(v)
    return out


def scalar(x: Any) -> Any:
    """A numpy scalar as the Python value (anything else unchanged)."""
    return x.item() if isinstance(x, np.generic) else x
