"""Helpers for ``to_state`` / ``from_state`` of fitted objects (layer 0).

Fitted state is saved as plain JSON (see :mod:`safepredict.persistence`), so
arrays of labels and floats are turned into lists with an explicit, whitelisted
dtype name. Restoring never evaluates or imports anything named in the state:
a dtype name is looked up in a fixed table, not parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["array_from_state", "array_to_state", "check_array", "check_unit_level", "require_keys"]

#: dtype names a saved array may declare; anything else is refused on load.
_NUMERIC_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)


def array_to_state(values: Any) -> dict[str, Any]:
    """A 1-D array of labels or numbers as ``{"dtype": name, "values": [...]}``.

    Parameters
    ----------
    values : array-like of shape (n,)
        Booleans, integers, floats, strings, or an object array holding those.

    Returns
    -------
    dict
        JSON-safe; ``dtype`` is a numeric dtype name, ``"str"`` or ``"object"``.

    Raises
    ------
    ValueError
        If the array is not 1-D or holds values JSON cannot carry.

    Examples
    --------
    >>> array_to_state(np.array([0, 2, 1]))
    {'dtype': 'int64', 'values': [0, 2, 1]}
    >>> array_to_state(np.array(["a", "b"]))
    {'dtype': 'str', 'values': ['a', 'b']}
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array; got shape {arr.shape}.")
    kind = arr.dtype.kind
    if kind in "biuf" and arr.dtype.name in _NUMERIC_DTYPES:
        return {"dtype": arr.dtype.name, "values": arr.tolist()}
    if kind == "U":
        return {"dtype": "str", "values": arr.tolist()}
    if kind == "O":
        out = [v.item() if isinstance(v, np.generic) else v for v in arr.tolist()]
        for v in out:
            if v is not None and not isinstance(v, bool | int | float | str):
                raise ValueError(
                    f"cannot save a value of type {type(v).__name__} ({v!r}); labels must be "
                    "booleans, numbers or strings."
                )
        return {"dtype": "object", "values": out}
    raise ValueError(f"cannot save an array of dtype {arr.dtype}; use numbers or strings.")


def array_from_state(state: Mapping[str, Any]) -> NDArray[Any]:
    """Inverse of :func:`array_to_state`.

    Examples
    --------
    >>> array_from_state({"dtype": "int64", "values": [0, 2, 1]})
    array([0, 2, 1])
    >>> array_from_state({"dtype": "numpy.core.evil", "values": []})
    Traceback (most recent call last):
    ...
    ValueError: unknown array dtype 'numpy.core.evil'; expected one of ...
    """
    require_keys(state, ("dtype", "values"), "array")
    name, values = state["dtype"], state["values"]
    if not isinstance(values, list):
        raise ValueError(f"array values must be a list; got {type(values).__name__}.")
    if name in _NUMERIC_DTYPES:
        return np.asarray(values, dtype=np.dtype(str(name)))
    if name == "str":
        return np.asarray([str(v) for v in values], dtype=str)
    if name == "object":
        return np.asarray(values, dtype=object)
    allowed = ", ".join(sorted(_NUMERIC_DTYPES | {"str", "object"}))
    raise ValueError(f"unknown array dtype {name!r}; expected one of {allowed}.")


def require_keys(state: Any, keys: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError`` unless ``state`` is a mapping holding every key in ``keys``.

    Examples
    --------
    >>> require_keys({"a": 1}, ("a", "b"), "conformal state")
    Traceback (most recent call last):
    ...
    ValueError: conformal state is missing key(s) ['b'].
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{what} must be a JSON object; got {type(state).__name__}.")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{what} is missing key(s) {missing}.")


def check_array(
    values: Any,
    what: str,
    *,
    length: int | None = None,
    finite: bool = True,
    allow_nan: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``values`` is a 1-D float array of the expected length.

    ``finite=False`` allows infinities (e.g. an uncertified threshold); ``allow_nan``
    allows NaN.

    Examples
    --------
    >>> check_array(np.array([1.0, 2.0]), "scores", length=2)
    >>> check_array(np.array([[1.0]]), "scores")
    Traceback (most recent call last):
    ...
    ValueError: scores must be a 1-D array of numbers; got shape (1, 1).
    >>> check_array(np.array([1.0, np.inf]), "scores")
    Traceback (most recent call last):
    ...
    ValueError: scores must hold finite numbers only.
    """
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{what} must be a 1-D array of numbers; got shape {arr.shape}"
            + ("." if arr.dtype.kind in "biuf" else f" of dtype {arr.dtype}.")
        )
    if length is not None and len(arr) != length:
        raise ValueError(f"{what} must have {length} values (one per feature); got {len(arr)}.")
    a = arr.astype(np.float64)
    bad = np.isnan(a) if not allow_nan else np.zeros(len(a), dtype=bool)
    if finite:
        bad |= np.isinf(a)
    if bad.any():
        raise ValueError(f"{what} must hold {'finite numbers' if finite else 'numbers'} only.")


def check_unit_level(value: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a number strictly between 0 and 1.

    Examples
    --------
    >>> check_unit_level(0.9, "confidence_level")
    >>> check_unit_level(1.5, "confidence_level")
    Traceback (most recent call last):
    ...
    ValueError: confidence_level must be a number in (0, 1); got 1.5.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{what} must be a number in (0, 1); got {value!r}.")
