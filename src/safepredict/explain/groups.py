"""Which input column produced each transformed column of a ``Pipeline``."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import default_feature_names

__all__ = [
    "dense",
    "feature_groups",
    "input_names",
]


def input_names(X: Any) -> list[str]:
    """The input column names of a batch (a frame's columns, else ``x0 ..``)."""
    if hasattr(X, "columns"):
        return [str(c) for c in X.columns]
    return default_feature_names(np.shape(X)[1])


def dense(data: Any) -> NDArray[np.float64]:
    """A transformed batch as a dense float matrix."""
    if hasattr(data, "toarray"):
        data = data.toarray()
    elif hasattr(data, "to_numpy"):
        data = data.to_numpy()
    return np.asarray(data, dtype=np.float64)


def _structural_groups(pre: Any, names: list[str]) -> NDArray[np.intp] | None:
    """Map transformed columns to input columns from the preprocessor's structure."""
    pre_steps = getattr(pre, "steps", None)
    transformer = pre_steps[-1][1] if pre_steps and len(pre_steps) == 1 else pre
    if pre_steps and len(pre_steps) > 1:
        transformer = None
    if transformer is not None and hasattr(transformer, "transformers_"):
        return _column_transformer_groups(transformer, names)
    try:
        out = [str(c) for c in pre.get_feature_names_out(names)]
    except Exception:  # not every transformer can name its outputs
        return None
    if out == names:  # one-to-one (scalers, imputers, ...)
        return np.arange(len(names), dtype=np.intp)
    return None


def _column_transformer_groups(ct: Any, names: list[str]) -> NDArray[np.intp] | None:
    indices = getattr(ct, "output_indices_", None)
    if indices is None:
        return None
    n_out = max((s.stop for s in indices.values()), default=0)
    groups = np.full(n_out, -1, dtype=np.intp)
    for name, trans, cols in ct.transformers_:
        sl = indices.get(name)
        if sl is None or sl.stop <= sl.start or trans == "drop":
            continue
        col_idx = np.arange(len(names))[cols] if not _is_name_list(cols) else None
        col_names = [names[i] for i in np.atleast_1d(col_idx)] if col_idx is not None else cols
        col_names = [str(c) for c in col_names]
        if trans == "passthrough":
            sub = col_names
        else:
            try:
                sub = [str(c) for c in trans.get_feature_names_out(col_names)]
            except Exception:  # a transformer that cannot name outputs: no structural map
                return None
        if len(sub) != sl.stop - sl.start:
            return None
        for k, out_name in enumerate(sub):
            src = _source_column(out_name, col_names)
            if src is None:
                return None
            groups[sl.start + k] = names.index(src)
    return None if (groups < 0).any() else groups


def _is_name_list(cols: Any) -> bool:
    return isinstance(cols, list | tuple) and all(isinstance(c, str) for c in cols)


def _source_column(out_name: str, inputs: list[str]) -> str | None:
    if out_name in inputs:
        return out_name
    matches = [c for c in inputs if out_name.startswith(c + "_")]
    if not matches:
        return None
    return max(matches, key=len)


def _dependency(pre: Any, sample: Any, names: list[str]) -> NDArray[np.bool_]:
    """``D[k, j]``: transformed column ``k`` changed when input column ``j`` was perturbed."""
    base = dense(pre.transform(sample))
    n = len(sample)
    dep = np.zeros((base.shape[1], len(names)), dtype=bool)
    for j in range(len(names)):
        for shift in (1, 2, 3):
            if n < 2:
                break
            perturbed = _roll_column(sample, j, shift % n or 1)
            out = dense(pre.transform(perturbed))
            dep[:, j] |= ~np.isclose(out, base, equal_nan=True).all(axis=0)
    return dep


def _roll_column(sample: Any, j: int, shift: int) -> Any:
    if hasattr(sample, "iloc"):
        copy = sample.copy()
        col = copy.columns[j]
        copy[col] = np.roll(copy[col].to_numpy(), shift)
        return copy
    arr = np.array(sample, copy=True)
    arr[:, j] = np.roll(arr[:, j], shift)
    return arr


def feature_groups(pre: Any, sample: Any) -> NDArray[np.intp] | None:
    """For each column the preprocessor outputs, the input column it came from.

    The map is read from the preprocessor's structure (``ColumnTransformer``
    ``transformers_`` / ``output_indices_`` / ``get_feature_names_out``; one-to-one
    transformers) and checked by perturbing each input column of ``sample``: an
    output column that moves when another input column moves fails the check.
    Without a structural map, the perturbation map is used when every output
    depends on exactly one input.

    Returns
    -------
    ndarray of int or None
        ``None`` when the outputs cannot be attributed to single input columns
        (e.g. polynomial interactions); such pipelines are explained
        model-agnostically in their input columns.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn.compose import ColumnTransformer
    >>> from sklearn.preprocessing import OneHotEncoder
    >>> X = pd.DataFrame({"colour": ["red", "blue", "red"], "size": [1.0, 2.0, 3.0]})
    >>> ct = ColumnTransformer([("oh", OneHotEncoder(), ["colour"])], remainder="passthrough")
    >>> feature_groups(ct.fit(X), X).tolist()
    [0, 0, 1]
    """
    names = input_names(sample)
    structural = _structural_groups(pre, names)
    dep = _dependency(pre, sample, names)
    if structural is not None:
        if len(structural) != dep.shape[0]:
            return None
        wrong = dep & (np.arange(len(names))[None, :] != structural[:, None])
        return None if wrong.any() else structural
    deps = dep.sum(axis=1)
    if (deps != 1).any():
        return None
    return np.asarray(dep.argmax(axis=1), dtype=np.intp)
