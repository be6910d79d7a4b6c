"""Column values as the tabular guards read them: missing, numeric, categorical (pure helpers)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import is_frame
from safepredict.exceptions import InputSchemaError

__all__ = [
    "CATEGORICAL",
    "CATEGORY_MISSING",
    "CATEGORY_OK",
    "CATEGORY_UNSEEN",
    "CATEGORY_WRONG",
    "NUMERIC",
    "category_key",
    "category_status",
    "check_categories",
    "infer_kind",
    "is_missing_scalar",
    "is_number",
    "numeric_column",
    "numeric_scalar",
    "split_columns",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
#: What :func:`category_status` finds in one categorical value.
CATEGORY_OK, CATEGORY_MISSING, CATEGORY_UNSEEN, CATEGORY_WRONG = 0, 1, 2, 3


def is_missing_scalar(v: Any) -> bool:
    """None, NaN, ``pd.NA`` or ``pd.NaT`` (without importing pandas)."""
    if v is None:
        return True
    if isinstance(v, float):
        return v != v
    return type(v).__name__ in ("NAType", "NaTType")


def is_number(v: Any) -> bool:
    """A real number (not a complex one)."""
    return isinstance(v, int | float | np.number) and not isinstance(
        v, complex | np.complexfloating
    )


def category_key(v: Any) -> Any:
    """A JSON-safe, hashable stand-in for a category value."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool | int | float | str):
        return v
    return str(v)


def numeric_column(col: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Float values of a column and where a value is not a number (``type``).

    Missing values (None, NaN, ``pd.NA``) become NaN; integers too large for a
    float become ``inf``; strings and other objects become NaN and are marked.
    """
    if col.dtype.kind in "biuf":
        return col.astype(np.float64, copy=False), np.zeros(len(col), dtype=bool)
    values = np.empty(len(col), dtype=np.float64)
    wrong = np.zeros(len(col), dtype=bool)
    for i, v in enumerate(col.tolist()):
        values[i], wrong[i] = numeric_scalar(v)
    return values, wrong


def numeric_scalar(v: Any) -> tuple[float, bool]:
    """One value of an object column as :func:`numeric_column` reads it: ``(float, wrong)``.

    Examples
    --------
    >>> numeric_scalar(3), numeric_scalar(None), numeric_scalar("a"), numeric_scalar(10**400)
    ((3.0, False), (nan, False), (nan, True), (inf, False))
    """
    if is_missing_scalar(v):
        return math.nan, False
    if is_number(v):
        try:
            return float(v), False
        except OverflowError:  # an int beyond float range is not finite for the model
            return (math.inf if v > 0 else -math.inf), False
    return math.nan, True


def split_columns(X: Any, d: int) -> tuple[NDArray[np.float64] | None, list[NDArray[Any]]]:
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


def infer_kind(col: NDArray[Any], dtype: Any) -> str:
    """``"numeric"`` or ``"categorical"`` from the dtype and the values."""
    kind = getattr(dtype, "kind", "O")
    if str(dtype) == "category":
        return CATEGORICAL
    if kind in "biuf":
        return NUMERIC
    values = [v for v in col.tolist() if not is_missing_scalar(v)]
    if values and all(is_number(v) for v in values):
        return NUMERIC
    return CATEGORICAL


def check_categories(
    allowed: frozenset[Any],
    str_cats: bool,
    j: int,
    col: NDArray[Any],
    missing: NDArray[np.bool_],
    unseen: NDArray[np.bool_],
    wrong: NDArray[np.bool_],
) -> None:
    """Mark column ``j``'s missing, unseen and wrongly typed category values in place."""
    for i, v in enumerate(col.tolist()):
        status = category_status(allowed, str_cats, v)
        if status == CATEGORY_MISSING:
            missing[i, j] = True
        elif status == CATEGORY_UNSEEN:
            unseen[i, j] = True
        elif status == CATEGORY_WRONG:
            wrong[i, j] = True


def category_status(allowed: frozenset[Any], str_cats: bool, v: Any) -> int:
    """:data:`CATEGORY_OK`, ``_MISSING``, ``_UNSEEN`` or ``_WRONG`` for one category value.

    ``str_cats``: every allowed category is a string, so a number is a wrong type.

    Examples
    --------
    >>> allowed = frozenset({"a", "b"})
    >>> [category_status(allowed, True, v) for v in ("a", None, "zz", 3, [1])]
    [0, 1, 2, 3, 3]
    """
    if is_missing_scalar(v):
        return CATEGORY_MISSING
    try:
        ok = v in allowed or category_key(v) in allowed
    except TypeError:  # unhashable (a list, a dict): not a category value
        return CATEGORY_WRONG
    if ok:
        return CATEGORY_OK
    if str_cats and (is_number(v) or not isinstance(v, str)):
        return CATEGORY_WRONG
    return CATEGORY_UNSEEN
