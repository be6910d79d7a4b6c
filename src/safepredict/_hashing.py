"""Stable per-row hashes of input values (layer 0).

``inputs_hash`` identifies a row without logging it, and seeds the deterministic
audit sample, so the same row hashes the same way in any batch, process or
replay.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import is_frame

__all__ = ["row_hash", "row_hashes", "unit_interval"]


_NAN = np.float64(np.nan).tobytes()


def _value_bytes(v: Any) -> tuple[bytes, bool]:
    """Bytes of one value and whether it is numeric (missing counts as numeric NaN).

    A number hashes by its float64 value whatever the column's dtype, so a row hashes
    the same in a batch where its column is ``object`` (because another row holds a
    ``None`` or a string) as in a batch where the column is ``float64``.
    """
    if v is None:
        return _NAN, True
    if isinstance(v, int | float | np.number | np.bool_) and not isinstance(v, complex):
        try:
            return np.float64(v).tobytes(), True
        except (OverflowError, TypeError, ValueError):
            pass
    return repr(v).encode("utf-8", "surrogatepass"), False


def _column_bytes(col: Any) -> list[tuple[bytes, bool]]:
    arr = np.asarray(col)
    if arr.dtype.kind in "biuf":
        return [(v.tobytes(), True) for v in arr.astype(np.float64)]
    return [_value_bytes(v) for v in arr.tolist()]


def _numeric_frame(X: Any) -> bool:
    """Whether every column of the frame has a numpy numeric (or bool) dtype.

    pandas builds ``X.dtypes`` as a Series (about 90 µs, more than hashing a row);
    its block manager's ``get_dtypes()`` is the same dtypes as an array.
    """
    get_dtypes = getattr(getattr(X, "_mgr", None), "get_dtypes", None)
    dtypes = get_dtypes() if callable(get_dtypes) else X.dtypes
    return all(isinstance(t, np.dtype) and t.kind in "biuf" for t in dtypes)


def _row_digest(parts: list[tuple[bytes, bool]]) -> str:
    # all-numeric rows hash exactly like the numeric fast path (the float64 row bytes)
    if all(numeric for _, numeric in parts):
        data = b"".join(b for b, _ in parts)
    else:
        data = b"\x1f".join(b for b, _ in parts)
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def row_hashes(X: Any) -> NDArray[Any]:
    """Hex digest (16 chars) of each row's values.

    Numbers hash by their float64 value (so ``1`` and ``1.0`` agree, and a number
    hashes the same whether its column is numeric or ``object``); ``None`` as NaN;
    anything else by its ``repr``. Works on 2-D numpy arrays and pandas DataFrames,
    on a text batch (a 1-D object array of strings: one row each) and on N-D
    arrays (one row per item of the first axis).

    Examples
    --------
    >>> a = row_hashes(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> b = row_hashes(np.array([[3, 4]]))
    >>> bool(a[1] == b[0]), len(a[0])
    (True, 16)
    >>> len(row_hashes(np.array(["one text", "another"], dtype=object)))
    2
    """
    if is_frame(X):
        if _numeric_frame(X):
            return row_hashes(X.to_numpy(dtype=np.float64))
        cols = [_column_bytes(X[c].to_numpy()) for c in X.columns]
        n = len(X)
    else:
        arr = np.asarray(X)
        if arr.ndim == 1:  # one table row; a text batch (strings) is one value per row
            arr = arr.reshape(-1, 1) if arr.dtype.kind in "OUS" else arr.reshape(1, -1)
        n = arr.shape[0]
        if arr.dtype.kind in "biuf":
            rows = np.ascontiguousarray(arr.astype(np.float64))
            return np.array(
                [hashlib.blake2b(r.tobytes(), digest_size=8).hexdigest() for r in rows],
                dtype=object,
            )
        cols = [_column_bytes(arr[:, j]) for j in range(arr.shape[1])]
    return np.array([_row_digest([c[i] for c in cols]) for i in range(n)], dtype=object)


def row_hash(X: Any) -> str:
    """The digest :func:`row_hashes` gives the one row of ``X``, without its batch machinery.

    For a single-row call (``decide_one``, a service request): an all-numeric array
    is one ``float64`` conversion and one ``blake2b`` of its bytes; a 2-D one-row
    object or text array hashes its values as :func:`row_hashes` does, without a
    column per value; an all-numeric one-row frame is one conversion. Anything else
    (a mixed frame, a batch of several rows) takes :func:`row_hashes` itself, so the
    digest is always ``row_hashes(X)[0]``.

    Examples
    --------
    >>> row = np.array([[3, 4]])
    >>> row_hash(row) == row_hashes(row)[0] == row_hashes(np.array([[3.0, 4.0]]))[0]
    True
    >>> row_hash(np.array([[1.5, None, "a"]], dtype=object)) == row_hashes(
    ...     np.array([[1.5, None, "a"]], dtype=object))[0]
    True
    """
    if type(X) is np.ndarray:
        kind, ndim = X.dtype.kind, X.ndim
        if kind in "biuf" and (ndim == 1 or (ndim > 1 and X.shape[0] == 1)):
            data = np.asarray(X, dtype=np.float64).tobytes()
            return hashlib.blake2b(data, digest_size=8).hexdigest()
        if kind in "OUS" and ndim in (1, 2) and X.shape[0] == 1:
            values = X.tolist() if ndim == 1 else X[0].tolist()
            return _row_digest([_value_bytes(v) for v in values])
    elif is_frame(X) and len(X) == 1 and _numeric_frame(X):
        data = X.to_numpy(dtype=np.float64).tobytes()
        return hashlib.blake2b(data, digest_size=8).hexdigest()
    hashes = row_hashes(X)
    if len(hashes) != 1:
        raise ValueError(f"row_hash takes one row; got {len(hashes)}. Use row_hashes for a batch.")
    return str(hashes[0])


def unit_interval(hashes: NDArray[Any], seed: int) -> NDArray[np.float64]:
    """Map hex hashes and a seed to reproducible uniforms in [0, 1).

    Examples
    --------
    >>> u = unit_interval(np.array(["00ff00ff00ff00ff"], dtype=object), seed=3)
    >>> bool(0.0 <= u[0] < 1.0)
    True
    """
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.float64)
    # Parse every 16-hex-digit hash at once, then mix with the seed (splitmix64
    # finalizer, vectorized): no per-row Python work beyond one join.
    x = np.frombuffer(bytes.fromhex("".join(hashes)), dtype=">u8").astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return np.asarray((x >> np.uint64(11)).astype(np.float64) / 2.0**53, dtype=np.float64)
