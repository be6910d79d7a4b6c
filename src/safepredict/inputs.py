"""The inputs stage of ``decide`` (layer 2): a batch's schema, names and coercion.

Turns what a caller sends (array, masked array, DataFrame, dict, list of dicts)
into what the model receives, or raises :class:`~safepredict.InputSchemaError`
for a caller bug that concerns the whole batch. Inputs are matched **by name,
never by position**, whenever the caller gives names (DataFrame columns, dict
keys): a predictor calibrated on an unnamed array names its features
``x0 .. x{n-1}`` (or the ``feature_names`` given at calibration) and accepts
exactly those keys (DESIGN.md, trust contract 2). Masked cells of a masked array
are missing values (``nan``), never the values underneath.

Examples
--------
>>> import numpy as np
>>> schema = InputSchema(("x0", "x1"))
>>> prepare({"x1": 2.0, "x0": 1.0}, schema).tolist()
[[1.0, 2.0]]
>>> prepare({"x0": 1.0, "x2": 2.0}, schema)
Traceback (most recent call last):
...
safepredict.exceptions.InputSchemaError: X does not have the keys ... missing keys ['x1']; ...
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from safepredict._frames import default_feature_names, is_frame
from safepredict._jsonl import safe_text
from safepredict.exceptions import InputSchemaError

__all__ = ["InputSchema", "prepare", "schema_from_calibration"]


@dataclass(frozen=True)
class InputSchema:
    """The inputs a calibrated predictor accepts.

    Parameters
    ----------
    feature_names : tuple of str
        The input names, in the order the model receives them (``x0 ..`` for a
        predictor calibrated on an unnamed array).
    frames_to_model : bool, default=False
        The model receives a DataFrame with these columns (it was calibrated on
        a frame, or the model knows feature names); otherwise a 2-D array.
    arrays_to_frame : bool, default=False
        Unnamed arrays are wrapped into a DataFrame before the model sees them
        (the model was fitted with feature names).

    Examples
    --------
    >>> InputSchema(("a", "b")).n_features
    2
    """

    feature_names: tuple[str, ...]
    frames_to_model: bool = False
    arrays_to_frame: bool = False

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return len(self.feature_names)


def schema_from_calibration(
    X: Any, model: Any, feature_names: Sequence[str] | None = None
) -> InputSchema:
    """The schema of the calibration batch ``X`` (what ``decide`` will accept).

    Parameters
    ----------
    X : array-like or DataFrame
        The calibration rows.
    model : object
        The wrapped model (its ``feature_names_in_``, if any, names unnamed arrays).
    feature_names : sequence of str, optional
        Names for the columns of an unnamed array (default ``x0 ..``).

    Returns
    -------
    InputSchema

    Raises
    ------
    InputSchemaError
        If ``X`` is not 2-D, or ``feature_names`` does not name every column once.

    Examples
    --------
    >>> schema_from_calibration(np.zeros((3, 2)), object()).feature_names
    ('x0', 'x1')
    """
    if is_frame(X):
        names = tuple(str(c) for c in X.columns)
        if feature_names is not None and list(feature_names) != list(names):
            raise InputSchemaError(
                f"feature_names={list(feature_names)} differ from the calibration frame's "
                f"columns {list(names)}; a frame names its own columns, so drop feature_names=.",
                problems=["feature_names"],
            )
        _check_unique(names)
        return InputSchema(names, frames_to_model=True, arrays_to_frame=_model_named(model))
    arr = _as_array(X)
    if arr.ndim != 2:
        raise InputSchemaError(
            f"calibration X must be 2-D (rows x features); got {arr.ndim}-D.",
            problems=[f"ndim={arr.ndim}"],
        )
    model_names = getattr(model, "feature_names_in_", None)
    if feature_names is not None:
        names = tuple(str(c) for c in feature_names)
        if isinstance(feature_names, str) or len(names) != arr.shape[1]:
            raise InputSchemaError(
                f"feature_names must name each of the {arr.shape[1]} columns; got "
                f"{feature_names!r}. Pass a list of {arr.shape[1]} distinct names.",
                problems=["feature_names"],
            )
        _check_unique(names)
        return InputSchema(names)
    if model_names is not None and len(model_names) == arr.shape[1]:
        names = tuple(str(c) for c in model_names)
        return InputSchema(names, frames_to_model=True, arrays_to_frame=True)
    return InputSchema(tuple(default_feature_names(arr.shape[1])))


def prepare(X: Any, schema: InputSchema) -> Any:
    """Check a batch's structure and return what the model receives.

    Parameters
    ----------
    X : array-like, masked array, DataFrame, dict or list of dicts
        The batch (a 1-D array or a dict is one row).
    schema : InputSchema
        What the predictor was calibrated on.

    Returns
    -------
    ndarray or DataFrame
        A 2-D array (masked cells as ``nan``), or a DataFrame with exactly the
        schema's columns in order (see :attr:`InputSchema.frames_to_model`).

    Raises
    ------
    InputSchemaError
        Missing, unknown or duplicated names (with the closest known name), a
        wrong feature count or an unreadable container.

    Examples
    --------
    >>> prepare(np.ma.masked_array([[1.0, 2.0]], mask=[[False, True]]), InputSchema(("a", "b")))
    array([[ 1., nan]])
    """
    if isinstance(X, Mapping):
        return _from_records([X], schema)
    if isinstance(X, list | tuple) and X and all(isinstance(r, Mapping) for r in X):
        return _from_records(X, schema)
    if is_frame(X):
        return _from_frame(X, schema)
    arr = _as_array(X)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InputSchemaError(
            f"X must be 2-D (rows x features); got an array with {arr.ndim} dimensions.",
            problems=[f"ndim={arr.ndim}"],
        )
    if arr.shape[1] != schema.n_features:
        raise InputSchemaError(
            f"X has {arr.shape[1]} features but the predictor was calibrated on "
            f"{schema.n_features}. Pass rows with the calibration features in the same order, "
            f"or a dict / DataFrame keyed by name ({_names_hint(schema.feature_names)}).",
            problems=[f"n_features={arr.shape[1]}, expected {schema.n_features}"],
        )
    if schema.arrays_to_frame:
        import pandas as pd

        return pd.DataFrame(arr, columns=list(schema.feature_names))
    return arr


def _as_array(X: Any) -> np.ndarray[Any, Any]:
    """``X`` as an ndarray; masked cells become ``nan`` (missing), never their values."""
    if isinstance(X, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(X)
        data = np.asarray(X.data)
        if not mask.any():
            return data
        out = data.astype(np.float64) if data.dtype.kind in "biuf" else data.astype(object)
        out[mask] = np.nan
        return out
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged rows, unconvertible objects
        raise InputSchemaError(
            f"X cannot be read as a 2-D table of rows x features ({exc}); pass an array, "
            "a DataFrame, a dict or a list of dicts with equally long rows.",
            problems=["ragged"],
        ) from exc
    if arr.dtype == object and arr.ndim == 0:
        raise InputSchemaError(
            f"X cannot be read as a 2-D table of rows x features (got {type(X).__name__}); "
            "pass an array, a DataFrame, a dict or a list of dicts (sparse input: call "
            ".toarray() first).",
            problems=["not_a_table"],
        )
    return arr


def _from_records(records: Sequence[Mapping[Any, Any]], schema: InputSchema) -> Any:
    """Rows given as dicts: every key must be an input name, every input present."""
    import pandas as pd

    expected = schema.feature_names
    wanted = set(expected)
    for record in records:
        keys = [str(k) for k in record]
        if len(keys) != len(expected) or set(keys) != wanted:
            _raise_names(keys, expected, "keys")
    columns = {name: [_value(r, name) for r in records] for name in expected}
    frame = pd.DataFrame(columns, columns=list(expected))
    return frame if schema.frames_to_model else frame.to_numpy()


def _value(record: Mapping[Any, Any], name: str) -> Any:
    try:
        value = record[name]
    except KeyError:  # non-string keys that print as the name (e.g. numpy strings)
        value = next(v for k, v in record.items() if str(k) == name)
    # a lone surrogate (valid JSON "\ud800") fits no string column: escaped, never dropped
    return safe_text(value) if isinstance(value, str) else value


def _from_frame(X: Any, schema: InputSchema) -> Any:
    """A DataFrame: columns matched by name (an unnamed ``RangeIndex`` by position)."""
    cols = [str(c) for c in X.columns]
    expected = list(schema.feature_names)
    if _is_unnamed(X) and not schema.frames_to_model and len(cols) == len(expected):
        return _as_array(X.to_numpy())  # the caller gave no names: positions it is
    if cols != expected:
        if len(cols) != len(expected) or set(cols) != set(expected):
            _raise_names(cols, tuple(expected), "columns")
        X = X.iloc[:, [cols.index(c) for c in expected]]
    if not schema.frames_to_model:
        return X.to_numpy()
    if list(X.columns) != expected:  # non-string labels: rename to the strings
        X = X.set_axis(expected, axis=1)
    return X


def _is_unnamed(X: Any) -> bool:
    """Columns are pandas' default ``0 .. n-1`` labels (no names were given)."""
    labels = list(X.columns)
    return all(isinstance(c, int | np.integer) and int(c) == j for j, c in enumerate(labels))


def _raise_names(given: Sequence[str], expected: Sequence[str], what: str) -> None:
    missing = [c for c in expected if c not in given]
    extra = [c for c in given if c not in expected]
    dupes = sorted({c for c in given if list(given).count(c) > 1})
    kind = "keys" if what == "keys" else "columns"
    parts = []
    if missing:
        parts.append(f"missing {kind} {missing}")
    if extra:
        hints = []
        for name in extra:
            close = difflib.get_close_matches(name, missing or list(expected), n=1)
            if close:
                hints.append(f"did you mean {close[0]!r} for {name!r}?")
        parts.append(f"extra {kind} {extra}" + (f" ({'; '.join(hints)})" if hints else ""))
    if dupes:
        parts.append(f"duplicated {kind} {dupes}")
    raise InputSchemaError(
        f"X does not have the {kind} the predictor was calibrated on: "
        + "; ".join(parts)
        + f". Pass exactly the calibration inputs by name (order does not matter): "
        f"{_names_hint(expected)}.",
        missing=missing,
        extra=extra,
        problems=[f"duplicated:{c}" for c in dupes],
    )


def _names_hint(feature_names: Sequence[str]) -> str:
    names = list(feature_names)
    return f"{names}" if len(names) <= 8 else f"{names[:4]} ... {names[-2:]}"


def _check_unique(names: Sequence[str]) -> None:
    dupes = sorted({c for c in names if list(names).count(c) > 1})
    if dupes:
        raise InputSchemaError(
            f"the calibration inputs have duplicated names {dupes}; give every column a "
            "distinct name.",
            problems=[f"duplicated:{c}" for c in dupes],
        )


def _model_named(model: Any) -> bool:
    return getattr(model, "feature_names_in_", None) is not None
