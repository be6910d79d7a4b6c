"""Per-feature drift from aggregated bins: PSI and KS per input column (layer 2, pure).

At calibration, :func:`feature_bins` summarises each numeric input column by the
counts in its calibration deciles (the edges and counts only: no raw rows are
kept). In production, :func:`feature_counts` counts a batch's values in the same
bins; counts from many batches add up (:func:`merge_counts`); and
:func:`feature_drift` compares a window's counts with the calibration's, column
by column, with the population stability index and a two-sample
Kolmogorov-Smirnov test evaluated at the bin edges.

Missing values have their own bin, so a column that starts arriving empty
drifts too.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> cal = rng.normal(size=(2000, 2))
>>> snap = feature_bins(cal, ["age", "income"])
>>> new = rng.normal(size=(500, 2)) + [0.0, 1.0]  # income shifts by one sd
>>> counts = feature_counts(new, snap, ["age", "income"])
>>> [(d["feature"], d["flagged"]) for d in feature_drift(snap, counts)]
[('income', True), ('age', False)]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict.exceptions import ConfigError

__all__ = ["feature_bins", "feature_counts", "feature_drift", "merge_counts"]


def _matrix(X: Any, names: Sequence[str] | None) -> tuple[NDArray[np.float64], list[str]]:
    columns = getattr(X, "columns", None)
    if names is None:
        names = [str(c) for c in columns] if columns is not None else None
    values = X.to_numpy() if hasattr(X, "to_numpy") else X
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ConfigError(
            f"feature drift needs a 2-d table of rows and columns; got {arr.ndim} dimension(s). "
            "Pass the model's input frame or array."
        )
    if names is None:
        names = [f"x{j}" for j in range(arr.shape[1])]
    if len(names) != arr.shape[1]:
        raise ConfigError(
            f"names has {len(names)} entries but the table has {arr.shape[1]} columns; pass "
            "one name per column."
        )
    out = np.full(arr.shape, np.nan)
    for j in range(arr.shape[1]):
        # a text column is not binned: left all-missing, it is dropped from the snapshot
        with contextlib.suppress(TypeError, ValueError):
            out[:, j] = arr[:, j].astype(np.float64)
    return out, list(names)


def feature_bins(X: Any, names: Sequence[str] | None = None, *, bins: int = 10) -> dict[str, Any]:
    """Calibration snapshot: per numeric column, quantile bin edges and the counts in them.

    Parameters
    ----------
    X : DataFrame or 2-d array
        Calibration (or reference) input rows.
    names : sequence of str, optional
        Column names (default: the frame's columns, or ``x0, x1, ...``).
    bins : int, default=10
        Number of quantile bins per column (fewer when values repeat).

    Returns
    -------
    dict
        ``{"bins": bins, "columns": {name: {"edges", "counts", "missing", "n"}}}``,
        JSON-safe: ``counts`` has ``len(edges) + 1`` entries, for the bins
        ``(-inf, e1], (e1, e2], ..., (ek, inf)``. Text columns are left out.
    """
    if bins < 2:
        raise ConfigError(f"bins must be at least 2; got {bins!r}.")
    arr, names = _matrix(X, names)
    columns: dict[str, Any] = {}
    for j, name in enumerate(names):
        col = arr[:, j]
        present = col[~np.isnan(col)]
        if len(present) == 0:
            continue
        inner = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
        edges = np.unique(np.round(inner, 10))
        counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
        columns[name] = {
            "edges": edges.tolist(),
            "counts": counts.astype(int).tolist(),
            "missing": int(len(col) - len(present)),
            "n": len(col),
        }
    return {"bins": int(bins), "columns": columns}


def feature_counts(
    X: Any, snapshot: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, list[int]]:
    """Counts of new rows in the snapshot's bins, per column (the missing bin last).

    Returns
    -------
    dict of str to list of int
        Per snapshot column present in ``X``: ``len(edges) + 2`` counts (the
        value bins, then missing values). Summable across batches.
    """
    arr, names = _matrix(X, names)
    index = {n: j for j, n in enumerate(names)}
    out: dict[str, list[int]] = {}
    for name, snap in snapshot["columns"].items():
        if name not in index:
            continue
        col = arr[:, index[name]]
        missing = np.isnan(col)
        edges = np.asarray(snap["edges"], dtype=np.float64)
        counts = np.bincount(
            np.searchsorted(edges, col[~missing], side="left"), minlength=len(edges) + 1
        )
        out[name] = [*counts.astype(int).tolist(), int(missing.sum())]
    return out


def merge_counts(*parts: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Add per-column counts from several batches.

    Examples
    --------
    >>> merge_counts({"a": [1, 2, 0]}, {"a": [0, 1, 1], "b": [3, 0, 0]})
    {'a': [1, 3, 1], 'b': [3, 0, 0]}
    """
    out: dict[str, list[int]] = {}
    for part in parts:
        for name, counts in part.items():
            if name in out:
                out[name] = [a + int(b) for a, b in zip(out[name], counts, strict=True)]
            else:
                out[name] = [int(c) for c in counts]
    return out


def _psi(expected: ArrayLike, actual: ArrayLike) -> float:
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.sum() <= 0 or a.sum() <= 0:
        return math.nan
    pe = np.maximum(e / e.sum(), 1e-4)
    pa = np.maximum(a / a.sum(), 1e-4)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def feature_drift(
    snapshot: Mapping[str, Any],
    counts: Mapping[str, Sequence[int]],
    *,
    psi_threshold: float = 0.2,
    ks_alpha: float = 0.01,
    min_rows: int = 50,
) -> list[dict[str, Any]]:
    """PSI and KS per column of a window vs the calibration snapshot, worst first.

    Parameters
    ----------
    snapshot : dict
        What :func:`feature_bins` returned at calibration.
    counts : dict of str to list of int
        The window's :func:`feature_counts` (merged over its batches).
    psi_threshold : float, default=0.2
        PSI at or above which a column is flagged (0.1-0.2 is the usual "watch"
        band, above 0.2 a shift).
    ks_alpha : float, default=0.01
        Flag when the KS p-value is below this.
    min_rows : int, default=50
        Windows with fewer rows in a column are reported but never flagged.

    Returns
    -------
    list of dict
        Per column: ``feature``, ``n``, ``psi``, ``ks_d``, ``ks_pvalue``,
        ``missing_rate`` and ``missing_rate_calibration``, ``tested``,
        ``flagged``. The KS statistic compares both CDFs at the bin edges (the
        calibration deciles), so it is a lower bound of the exact one and its
        p-value (Kolmogorov limit, effective size ``n m / (n + m)``) is
        conservative.
    """
    from scipy.special import kolmogorov

    out = []
    for name, snap in snapshot["columns"].items():
        if name not in counts:
            continue
        window = np.asarray(counts[name], dtype=np.float64)
        values, missing = window[:-1], float(window[-1])
        cal = np.asarray(snap["counts"], dtype=np.float64)
        cal_missing = float(snap["missing"])
        n, m = float(values.sum()), float(cal.sum())
        psi = _psi(np.r_[cal, cal_missing], np.r_[values, missing])
        ks_d = ks_p = math.nan
        if n > 0 and m > 0:
            ks_d = float(np.max(np.abs(np.cumsum(values)[:-1] / n - np.cumsum(cal)[:-1] / m),
                                initial=0.0))  # fmt: skip
            ks_p = float(kolmogorov(ks_d * math.sqrt(n * m / (n + m))))
        tested = n + missing >= min_rows
        flagged = bool(tested and (psi >= psi_threshold or ks_p < ks_alpha))
        out.append(
            {
                "feature": name,
                "n": int(n + missing),
                "psi": psi,
                "ks_d": ks_d,
                "ks_pvalue": ks_p,
                "missing_rate": missing / (n + missing) if n + missing else None,
                "missing_rate_calibration": cal_missing / snap["n"] if snap["n"] else None,
                "tested": bool(tested),
                "flagged": flagged,
            }
        )
    return sorted(out, key=lambda d: -(d["psi"] if not math.isnan(d["psi"]) else -1.0))
