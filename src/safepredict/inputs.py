"""The inputs stage of ``decide`` (layer 2): a batch's schema, names and coercion.

Turns what a caller sends (array, masked array, DataFrame, dict, list of dicts)
into what the model receives, or raises :class:`~safepredict.InputSchemaError`
for a caller bug that concerns the whole batch. Inputs are matched **by name,
never by position**, whenever the caller gives names (DataFrame columns, dict
keys): a predictor calibrated on an unnamed array names its features
``x0 .. x{n-1}`` (or the ``feature_names`` given at calibration) and accepts
exactly those keys (DESIGN.md, trust contract 2). Masked cells of a masked array
are missing values (``nan``), never the values underneath.

Besides tables, two modalities are recognised at calibration (the schema keeps
which): **text** -- a 1-D sequence of strings, one per row, for a model that
takes raw strings (a scikit-learn text ``Pipeline``) -- and **arrays** -- an
``(n, h, w[, c])`` numeric array whose rows the model takes whole (images,
embeddings). At ``decide`` a batch of another modality or another item shape
is a caller bug for the whole batch (:class:`~safepredict.InputSchemaError`);
a row that is not a string in a text batch is judged on its own by the text
guards (``missing:text``, ``type:text``).

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
from numpy.typing import NDArray

from safepredict._frames import default_feature_names, is_frame
from safepredict._jsonl import safe_text
from safepredict.exceptions import InputSchemaError

__all__ = [
    "ARRAY",
    "TEXT",
    "InputSchema",
    "modality_schema",
    "prepare",
    "schema_from_calibration",
]


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
    modality : {"table", "text", "array"}, default="table"
        What one row is: a table row (the default), one string (the model
        receives a 1-D sequence of strings, e.g. a text ``Pipeline``), or one
        N-D array of ``item_shape`` (the model receives ``(n, *item_shape)``).
    item_shape : tuple of int, default=()
        ``modality="array"``: the shape of one row.
    dtype : str or None, default=None
        ``modality="array"``: the calibration dtype (``"float64"``, ``"uint8"``).

    Examples
    --------
    >>> InputSchema(("a", "b")).n_features
    2
    >>> InputSchema(("array",), modality="array", item_shape=(8, 8), dtype="float64").describe()
    'arrays of shape (8, 8), dtype float64'
    """

    feature_names: tuple[str, ...]
    frames_to_model: bool = False
    arrays_to_frame: bool = False
    modality: str = "table"
    item_shape: tuple[int, ...] = ()
    dtype: str | None = None

    @property
    def n_features(self) -> int:
        """Number of input features (1 for text and arrays: one input per row)."""
        return len(self.feature_names)

    def describe(self) -> str:
        """What one row of this schema is, in words (for messages)."""
        if self.modality == "text":
            return "one string per row"
        if self.modality == "array":
            return f"arrays of shape {self.item_shape}, dtype {self.dtype}"
        return f"table rows with {self.n_features} features"

    def to_dict(self) -> dict[str, Any] | None:
        """The modality as a JSON-safe dict (``None`` for tables, saved by their names).

        Examples
        --------
        >>> InputSchema(("text",), modality="text").to_dict()
        {'modality': 'text', 'item_shape': [], 'dtype': None}
        """
        if self.modality == "table":
            return None
        return {"modality": self.modality, "item_shape": list(self.item_shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSchema:
        """The schema of a non-tabular modality saved with :meth:`to_dict`."""
        modality = str(data["modality"])
        if modality not in (TEXT, ARRAY):
            raise InputSchemaError(
                f"input modality must be 'text' or 'array'; got {modality!r}.",
                problems=[f"modality={modality}"],
            )
        return modality_schema(
            modality, tuple(int(v) for v in data.get("item_shape", ())), data.get("dtype")
        )


#: The modalities a schema may have besides tables, and their single input name.
TEXT, ARRAY = "text", "array"


def modality_schema(
    modality: str, item_shape: tuple[int, ...] = (), dtype: str | None = None
) -> InputSchema:
    """The schema of a text or array modality (its one input is named after it).

    Examples
    --------
    >>> modality_schema("text").feature_names
    ('text',)
    """
    return InputSchema((modality,), modality=modality, item_shape=item_shape, dtype=dtype)


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
    modal = _modality_of(X)
    if modal is not None:
        if feature_names is not None:
            raise InputSchemaError(
                f"feature_names= names the columns of a table; the calibration X is "
                f"{modal.describe()}. Drop feature_names=.",
                problems=["feature_names"],
            )
        return modal
    arr = _as_array(X)
    if arr.ndim != 2:
        raise InputSchemaError(
            f"calibration X must be 2-D (rows x features), a 1-D sequence of strings (text) "
            f"or an array of at least 3 dimensions (rows x item shape); got {arr.ndim}-D "
            f"{arr.dtype} data. Reshape it, or pass a list of strings.",
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
    >>> prepare(["good", None], modality_schema("text")).tolist()
    ['good', None]
    """
    if schema.modality == TEXT:
        return _prepare_text(X, schema)
    if schema.modality == ARRAY:
        return _prepare_array(X, schema)
    if type(X) is np.ndarray and X.ndim in (1, 2):  # the common case: no container checks
        arr = X
    elif isinstance(X, Mapping):
        return _from_records([X], schema)
    elif isinstance(X, list | tuple) and X and all(isinstance(r, Mapping) for r in X):
        return _from_records(X, schema)
    elif is_frame(X):
        return _from_frame(X, schema)
    else:
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


def _is_text_value(v: Any) -> bool:
    return isinstance(v, str | np.str_)


def _modality_of(X: Any) -> InputSchema | None:
    """The text or array schema of a calibration batch, ``None`` for a table."""
    if isinstance(X, str | bytes | Mapping) or is_frame(X):
        return None
    if hasattr(X, "to_numpy") and getattr(X, "ndim", 0) == 1:  # a pandas Series
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.ndim == 1 and X.dtype.kind in "OUS":
            values = X.tolist()
        elif X.ndim >= 3 and X.dtype.kind in "biuf":
            return modality_schema(ARRAY, tuple(int(v) for v in X.shape[1:]), str(X.dtype))
        else:
            return None
    elif isinstance(X, list | tuple):
        values = list(X)
    else:
        return None
    if values and all(_is_text_value(v) for v in values):
        return modality_schema(TEXT)
    if values and all(isinstance(v, np.ndarray) for v in values):
        arr = _as_array(values)
        if arr.ndim >= 3 and arr.dtype.kind in "biuf":
            return modality_schema(ARRAY, tuple(int(v) for v in arr.shape[1:]), str(arr.dtype))
    return None


def _prepare_text(X: Any, schema: InputSchema) -> NDArray[Any]:
    """A text batch as a 1-D object array (a lone string is one row).

    Rows that are not strings (``None``, a number) stay as they are: the text
    guards flag each of them (``missing:text``, ``type:text``) and the model
    never sees them. A batch that is not a sequence of rows at all (a 2-D
    array, a frame, a dict) is a caller bug: :class:`InputSchemaError`.
    """
    if _is_text_value(X):
        return np.array([str(X)], dtype=object)
    if hasattr(X, "to_numpy") and getattr(X, "ndim", 0) == 1:  # a pandas Series
        X = X.to_numpy()
    if isinstance(X, np.ndarray) and X.ndim == 1:
        values = X.tolist()
    elif isinstance(X, list | tuple) and not any(
        isinstance(v, Mapping | list | tuple | np.ndarray) for v in X
    ):
        values = list(X)
    else:
        shown = f"a {type(X).__name__}" + (
            f" of shape {X.shape}" if isinstance(X, np.ndarray) else ""
        )
        raise InputSchemaError(
            f"X must be text: a string or a 1-D sequence of strings (one per row), as at "
            f"calibration; got {shown}. Pass a list of strings.",
            problems=["modality=text"],
        )
    out = np.empty(len(values), dtype=object)
    out[:] = [safe_text(v) if isinstance(v, str) else v for v in values]
    return out


def _prepare_array(X: Any, schema: InputSchema) -> NDArray[Any]:
    """An array batch of shape ``(n, *item_shape)`` (one item alone is one row)."""
    shape = schema.item_shape
    arr = _as_array(X)
    if arr.shape == shape:
        arr = arr.reshape((1, *shape))
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
        raise InputSchemaError(
            f"X must be {schema.describe()}: a batch of shape (n, {', '.join(map(str, shape))}) "
            f"or one item of shape {shape}, as at calibration; got shape {arr.shape}. "
            "Reshape the batch (every row must have the calibration shape).",
            problems=[f"shape={arr.shape}, expected (n, *{shape})"],
        )
    if arr.dtype.kind not in "biuf":
        raise InputSchemaError(
            f"X must be a numeric array ({schema.describe()}); got dtype {arr.dtype}. "
            "Convert it with np.asarray(X, dtype=float).",
            problems=[f"dtype={arr.dtype}"],
        )
    wanted = np.dtype(schema.dtype or "float64")
    if arr.dtype != wanted and np.can_cast(arr.dtype, wanted, "safe"):
        return arr.astype(wanted)
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
