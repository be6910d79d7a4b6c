"""The single-row hash twin gives exactly the digest of the batch hash, for every input kind.

``row_hash`` (one row: ``decide_one``, a service request) takes shortcuts that
``row_hashes`` (a batch) does not: one ``float64`` conversion of a numeric row,
the values of a one-row object row without a column each, one conversion of a
numeric one-row frame. The digest is the row's identity in the audit sample and
in every event, so the twin must agree with the batch hash on every container and
dtype: pinned here by properties over generated rows.
"""

from __future__ import annotations

import math
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safepredict._hashing import _numeric_frame, row_hash, row_hashes

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMERIC = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
]
#: One-row shapes: a 1-D row, a 2-D row, an N-D row (an image), an empty row.
SHAPES = st.one_of(
    st.tuples(st.integers(0, 12)),
    st.tuples(st.just(1), st.integers(0, 12)),
    st.tuples(st.just(1), st.integers(1, 4), st.integers(1, 4)),
)
#: Odd column names: spaces, commas, quotes, non-ASCII, format characters.
ODD_NAMES = ["a b", "x,y", 'q"uote', "é", "%s", "0", "", "ssn", "col\n2", "ünï"]

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.just(float("nan")),
    st.just(10**400),  # beyond float64: hashed by repr
    st.complex_numbers(max_magnitude=10, allow_nan=False),
)


def numeric_rows() -> st.SearchStrategy[np.ndarray]:
    def build(dtype: Any, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
        return hnp.arrays(np.dtype(dtype), shape)

    rows = st.tuples(st.sampled_from(NUMERIC), SHAPES).flatmap(lambda a: build(*a))
    layouts = st.sampled_from(["c", "f", "strided"])
    return st.tuples(rows, layouts).map(lambda a: relayout(*a))


def relayout(row: np.ndarray, layout: str) -> np.ndarray:
    """The same values in a Fortran-ordered or a strided (non-contiguous) array."""
    if layout == "f":
        return np.asfortranarray(row)
    if layout == "strided" and row.size:
        wide = np.repeat(row, 2, axis=-1)
        return wide[..., ::2]
    return row


@SETTINGS
@given(numeric_rows())
def test_numeric_rows_of_any_dtype_and_layout_hash_like_the_batch(row: np.ndarray) -> None:
    assert row_hash(row) == row_hashes(row)[0]
    assert len(row_hashes(row)) == 1


@SETTINGS
@given(st.lists(VALUES, min_size=1, max_size=8))
def test_object_rows_with_none_text_nan_bool_int_hash_like_the_batch(values: list[Any]) -> None:
    row = np.empty((1, len(values)), dtype=object)
    row[0, :] = values
    assert row_hash(row) == row_hashes(row)[0]
    one = np.empty(1, dtype=object)  # a text batch of one: one value, one row
    one[0] = values[0]
    assert row_hash(one) == row_hashes(one)[0]


@SETTINGS
@given(st.lists(st.text(max_size=6), min_size=1, max_size=6), st.sampled_from(["U", "S"]))
def test_string_rows_hash_like_the_batch(values: list[str], kind: str) -> None:
    if kind == "S":
        values = [v.encode("utf-8", "surrogatepass") for v in values]  # type: ignore[misc]
    row = np.array([values])
    assert row.dtype.kind == kind
    assert row_hash(row) == row_hashes(row)[0]


@SETTINGS
@given(
    st.lists(st.sampled_from(NUMERIC), min_size=1, max_size=len(ODD_NAMES), unique=True),
    st.data(),
)
def test_one_row_frames_numeric_or_mixed_hash_like_the_batch(dtypes: list[Any], data: Any) -> None:
    names = ODD_NAMES[: len(dtypes)]
    columns = {
        name: data.draw(hnp.arrays(np.dtype(t), (1,)), label=name)
        for name, t in zip(names, dtypes, strict=True)
    }
    frame = pd.DataFrame(columns)
    assert row_hash(frame) == row_hashes(frame)[0]
    mixed = frame.assign(**{"text col": [data.draw(VALUES, label="text")]})
    assert row_hash(mixed) == row_hashes(mixed)[0]
    for f in (frame, mixed, mixed.convert_dtypes()):  # the dtypes pandas' own way
        want = all(isinstance(t, np.dtype) and t.kind in "biuf" for t in f.dtypes)
        assert _numeric_frame(f) is want


@SETTINGS
@given(st.dictionaries(st.sampled_from(ODD_NAMES), VALUES, min_size=1, max_size=6))
def test_dict_rows_as_frames_hash_like_the_batch(row: dict[str, Any]) -> None:
    frame = pd.DataFrame([row])
    assert row_hash(frame) == row_hashes(frame)[0]
    nullable = frame.convert_dtypes()  # pandas' nullable and string dtypes
    assert row_hash(nullable) == row_hashes(nullable)[0]


def test_the_digest_is_the_row_whatever_its_container() -> None:
    """Numbers hash by float64 value: the same row as ints, floats, object, frame agrees."""
    values = [3, -1, 0, 7]
    forms: list[Any] = [
        np.array(values),
        np.array([values], dtype=np.int8),
        np.array([values], dtype=np.float32),
        np.array([values], dtype=object),
        pd.DataFrame([dict(zip(ODD_NAMES, values, strict=False))]),
    ]
    digests = {row_hash(f) for f in forms}
    assert digests == {row_hashes(np.array([values], dtype=float))[0]}


def test_a_changed_value_changes_the_digest() -> None:
    """Negative control: the property above would fail for a twin hashing anything else."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 6))
    digests = {row_hash(r) for r in rows}
    assert len(digests) == 200
    row = rows[0].copy()
    row[3] = np.nextafter(row[3], math.inf)  # the smallest change float64 can hold
    assert row_hash(row) != row_hash(rows[0])
    obj = np.array([[1.0, "a", None]], dtype=object)
    assert row_hash(obj) != row_hash(np.array([[1.0, "b", None]], dtype=object))
    assert row_hash(obj) != row_hash(np.array([[1.0, "a", 0.0]], dtype=object))


def test_a_batch_of_several_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="one row; got 2"):
        row_hash(np.array(["two", "texts"], dtype=object))
    with pytest.raises(ValueError, match="one row; got 3"):
        row_hash(np.zeros((3, 2)))


def test_the_twin_takes_its_shortcuts_for_arrays_object_rows_and_numeric_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without this, the properties above would hold for a twin that always asked the batch."""
    import safepredict._hashing as hashing

    rows: list[Any] = [
        np.arange(5),
        np.ones((1, 4), dtype=np.float32),
        np.zeros((1, 2, 3)),
        np.array([[1.5, None, "a", True]], dtype=object),
        np.array(["a text"], dtype=object),
        pd.DataFrame({"a b": [1.0], "x,y": [2]}),
    ]
    want = [row_hashes(r)[0] for r in rows]

    def refuse(X: Any) -> Any:
        raise AssertionError("the batch hash was asked")

    monkeypatch.setattr(hashing, "row_hashes", refuse)
    assert [row_hash(r) for r in rows] == want
    with pytest.raises(AssertionError, match="batch hash was asked"):
        row_hash(pd.DataFrame({"a": ["text"]}))  # a mixed frame: the batch path
