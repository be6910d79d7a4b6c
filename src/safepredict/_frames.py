"""Rows and feature names of the batches users send (layer 0).

One home for what every layer needs to know about a batch: whether it is a frame,
how to take some of its rows, the default feature names of unnamed arrays
(``x0 .. x{n-1}``), which columns ``redact`` hides (given by name or by 0-based
position) and the raw inputs of some rows as JSON-safe dicts without the hidden
columns. Every writer (events, review cases, spool, exports, console) reads inputs
through :func:`input_rows`, so redaction has exactly one implementation. Text and
array inputs (one input per row, named ``text`` / ``array``) are written only when
the user opts in with ``log_inputs``; by default events carry their hash alone.

Examples
--------
>>> import numpy as np
>>> X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
>>> names = default_feature_names(3)
>>> hidden = resolve_redact([0, "x2"], names)
>>> input_rows(X, np.array([1]), names, hidden)
[{'x1': 5.0}]
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._jsonl import to_builtin
from safepredict._validation import describe
from safepredict.exceptions import ConfigError

__all__ = [
    "check_redact",
    "default_feature_names",
    "group_labels",
    "input_rows",
    "is_frame",
    "resolve_redact",
    "take_rows",
]


def is_frame(X: Any) -> bool:
    """Whether ``X`` is a pandas-like frame (has ``columns`` and ``iloc``).

    Examples
    --------
    >>> is_frame(np.zeros((2, 2)))
    False
    """
    return hasattr(X, "columns") and hasattr(X, "iloc")


def default_feature_names(n_features: int) -> list[str]:
    """The names of an unnamed array's columns: ``x0 .. x{n-1}``.

    Examples
    --------
    >>> default_feature_names(3)
    ['x0', 'x1', 'x2']
    """
    return [f"x{j}" for j in range(int(n_features))]


def take_rows(X: Any, rows: Any) -> Any:
    """Rows ``rows`` (positions or a boolean mask) of a frame or an array-like.

    Examples
    --------
    >>> take_rows(np.arange(6).reshape(3, 2), [2, 0]).tolist()
    [[4, 5], [0, 1]]
    """
    if is_frame(X):
        return X.iloc[rows]
    if isinstance(X, np.ndarray):
        return X[rows]
    return np.asarray(X)[rows]


def resolve_redact(redact: Sequence[Any], feature_names: Sequence[str]) -> frozenset[str]:
    """The column names ``redact`` hides; each entry a name or a 0-based position.

    Parameters
    ----------
    redact : sequence of str or int
        What the user asked to hide.
    feature_names : sequence of str
        The predictor's input columns.

    Returns
    -------
    frozenset of str
        The hidden column names.

    Raises
    ------
    ConfigError
        If an entry is neither an input column nor a valid position (a typo would
        otherwise leak the column it meant), with the closest column name.

    Examples
    --------
    >>> sorted(resolve_redact(["income", 0], ["age", "income"]))
    ['age', 'income']
    >>> resolve_redact(["incme"], ["age", "income"])
    Traceback (most recent call last):
    ...
    safepredict.exceptions.ConfigError: redact: 'incme' is not an input column. Did you mean ...?
    """
    if isinstance(redact, str | bytes) or not isinstance(redact, Collection):
        raise ConfigError(
            f"redact must be a list of column names or 0-based positions; got "
            f"{describe(redact)}. Write redact=[{redact!r}] for a single column."
        )
    names = [str(c) for c in feature_names]
    hidden: set[str] = set()
    for entry in redact:
        if isinstance(entry, bool) or not isinstance(entry, str | int | np.integer):
            raise ConfigError(
                f"redact entries are column names (str) or 0-based positions (int); got "
                f"{describe(entry)}."
            )
        if isinstance(entry, str):
            if entry not in names:
                close = difflib.get_close_matches(entry, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else f" The inputs are {names}."
                raise ConfigError(f"redact: {entry!r} is not an input column.{hint}")
            hidden.add(entry)
            continue
        position = int(entry)
        if not 0 <= position < len(names):
            raise ConfigError(
                f"redact: position {position} is out of range; the predictor has "
                f"{len(names)} input columns (positions 0..{len(names) - 1})."
            )
        hidden.add(names[position])
    return frozenset(hidden)


def input_rows(
    X: Any,
    rows: NDArray[np.intp] | None,
    feature_names: Sequence[str],
    hidden: Collection[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The raw inputs of ``rows`` as JSON-safe dicts, without the ``hidden`` columns.

    The one function every writer uses to put inputs anywhere (events, review
    cases, spool, exports, console), so a redacted column never leaks.

    Parameters
    ----------
    X : ndarray or DataFrame
        The batch as the model received it (columns in ``feature_names`` order);
        a text batch (1-D, one string per row) or an N-D array batch has one
        input name, and each row's whole string or array is its value.
    rows : ndarray of int or None
        Row positions to extract (``None``: every row).
    feature_names : sequence of str
        The column names (:func:`default_feature_names` for unnamed arrays).
    hidden : collection of str
        Column names never written (from :func:`resolve_redact`).

    Returns
    -------
    list of dict
        One dict per row, column name to a JSON-safe value (non-finite floats are
        ``None``; strings the UTF-8 codec cannot encode are escaped).

    Examples
    --------
    >>> input_rows(np.array([[1.0, np.nan]]), None, ["a", "b"])
    [{'a': 1.0, 'b': None}]
    >>> input_rows(np.array(["a text", "another"], dtype=object), np.array([1]), ["text"])
    [{'text': 'another'}]
    >>> input_rows(np.zeros((2, 2, 2)), None, ["array"], {"array"})
    [{}, {}]
    """
    names = [str(c) for c in feature_names]
    if not is_frame(X) and len(names) == 1 and np.ndim(X) > 2:  # N-D array rows (one input)
        arr = np.asarray(X)
        items = arr if rows is None else arr[rows]
        if names[0] in hidden:
            return [{} for _ in range(len(items))]
        return [{names[0]: to_builtin(item)} for item in items]
    if is_frame(X):
        values = (X if rows is None else X.iloc[rows]).to_numpy(dtype=object)
    else:
        arr = np.asarray(X, dtype=object)
        values = arr if rows is None else arr[rows]
    if values.ndim == 1:
        values = values.reshape(-1, 1) if len(names) == 1 else values.reshape(1, -1)
    keep = [j for j, name in enumerate(names) if name not in hidden]
    columns = [(names[j], [to_builtin(v) for v in values[:, j].tolist()]) for j in keep]
    out: list[dict[str, Any]] = [{} for _ in range(values.shape[0])]
    for name, column in columns:
        for row, value in zip(out, column, strict=True):
            row[name] = value
    return out


def group_labels(values: Any) -> NDArray[Any]:
    """Group values as strings (the form per-group thresholds and strata are stored under).

    Examples
    --------
    >>> group_labels([1, "a", None]).tolist()
    ['1', 'a', 'None']
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "fiubU":  # numbers and strings: vectorized, same text as str()
        return np.asarray(arr.astype(str), dtype=object)
    return np.array([str(v) for v in arr.astype(object).tolist()], dtype=object)


def check_redact(redact: Any, names: Sequence[str] | None) -> None:
    """``redact`` must name input columns (by name or position); ConfigError otherwise.

    Before the names are known only the entries' types are checked (the names and
    positions are checked again at calibration).
    """
    if names is not None:
        resolve_redact(redact, [str(c) for c in names])
        return
    if isinstance(redact, str | bytes) or not isinstance(redact, Sequence | set | frozenset):
        resolve_redact(redact, ())  # raises the message for a non-list
    known = [e for e in redact if isinstance(e, str)]
    positions = [int(e) for e in redact if isinstance(e, int | np.integer)]
    width = max([p + 1 for p in positions if p >= 0], default=0)
    resolve_redact(redact, [*known, *(f"\x00{j}" for j in range(width))])
