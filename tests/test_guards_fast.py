"""The plain-Python path of small batches agrees exactly with the vectorized guards.

``InputGuards.check`` sends batches of at most ``FAST_ROWS`` rows
(``FAST_NUMERIC_ROWS`` for an all-numeric batch) through plain Python (numpy's
per-call cost dominates a single row). These properties check, over generated
rows (finite, NaN, infinite, out of range, huge, unseen categories, missing,
None, strings, unhashable values), that it gives the same reasons, ranks, skip
flags and OOD p-values (bit for bit) as the vectorized path, on several fitted
guard sets.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_wine

from safepredict import GuardConfig
from safepredict.guards import InputGuards, tabular
from safepredict.guards.result import GuardResult
from safepredict.ood import CentroidDetector

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same cases on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def vectorized() -> Iterator[None]:
    """Every batch through the numpy path (restored afterwards)."""
    saved = tabular.FAST_ROWS, tabular.FAST_NUMERIC_ROWS
    tabular.FAST_ROWS = tabular.FAST_NUMERIC_ROWS = 0
    try:
        yield
    finally:
        tabular.FAST_ROWS, tabular.FAST_NUMERIC_ROWS = saved


def same(a: GuardResult, b: GuardResult) -> bool:
    """Equal reasons, ranks, skips, and OOD p-values bit for bit."""
    if a.reasons != b.reasons or a.rank.dtype != b.rank.dtype or a.skip.dtype != b.skip.dtype:
        return False
    if not (np.array_equal(a.rank, b.rank) and np.array_equal(a.skip, b.skip)):
        return False
    if a.ood is None or b.ood is None:
        return a.ood is None and b.ood is None
    return a.ood.dtype == b.ood.dtype and a.ood.tobytes() == b.ood.tobytes()


def both(guards: InputGuards, X: Any) -> tuple[GuardResult, GuardResult]:
    fast = guards.check(X)
    with vectorized():
        slow = guards.check(X)
    return fast, slow


@functools.cache
def wine() -> tuple[np.ndarray, pd.DataFrame]:
    data = load_wine(as_frame=True)
    X = data.frame.drop(columns="target").iloc[:, :6]
    return X.to_numpy(), X


@functools.cache
def numeric_guards() -> dict[str, InputGuards]:
    X, _ = wine()
    configs = {
        "centroids": GuardConfig(),
        "no ood, minmax": GuardConfig(ood_method="none", range_method="minmax"),
        "knn": GuardConfig(ood_method="knn"),
        "ignore missing, review range": GuardConfig(missing="ignore", out_of_range="review"),
    }
    return {k: InputGuards.fit(X, c, random_state=0) for k, c in configs.items()}


@functools.cache
def mixed_guards() -> dict[str, InputGuards]:
    _, frame = wine()
    ref = frame.iloc[:, :3].copy()
    rng = np.random.default_rng(0)
    ref["colour"] = rng.choice(["red", "white", "rose"], size=len(ref))
    ref["grade"] = rng.choice([1, 2, 3], size=len(ref))
    ref["flag"] = pd.Categorical(rng.choice(["y", "n"], size=len(ref)))
    configs = {
        "centroids": GuardConfig(),
        "no ood": GuardConfig(ood_method="none", unseen_category="review"),
        "type ignored": GuardConfig(type="ignore", non_finite="review"),
    }
    return {k: InputGuards.fit(ref, c, random_state=1) for k, c in configs.items()}


def floats_near(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Values inside, near and far outside ``[lo, hi]``, and the special ones."""
    span = hi - lo
    return st.one_of(
        st.floats(lo - 0.1 * span, hi + 0.1 * span),
        st.floats(lo - 10 * span, hi + 10 * span),
        st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0, -0.0, lo, hi]),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def numeric_rows(n_max: int) -> st.SearchStrategy[np.ndarray]:
    X, _ = wine()
    cols = [floats_near(float(X[:, j].min()), float(X[:, j].max())) for j in range(X.shape[1])]
    row = st.tuples(*cols)
    return st.lists(row, min_size=1, max_size=n_max).map(lambda r: np.array(r, dtype=float))


ANY_VALUE = st.one_of(
    st.none(),
    st.just(np.nan),
    st.just(pd.NA),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**400), 10**400),
    st.sampled_from(["red", "white", "rose", "blue", "", "1"]),
    st.sampled_from([1, 2, 3, 4, True, 2.0]),
    st.text(max_size=3),
    st.just(["red"]),
)


def mixed_frames(n_max: int) -> st.SearchStrategy[pd.DataFrame]:
    _, frame = wine()
    names = [*frame.columns[:3], "colour", "grade", "flag"]
    numeric = [
        st.one_of(floats_near(float(frame[c].min()), float(frame[c].max())), ANY_VALUE)
        for c in frame.columns[:3]
    ]
    row = st.tuples(*numeric, ANY_VALUE, ANY_VALUE, ANY_VALUE)
    return st.lists(row, min_size=1, max_size=n_max).map(
        lambda rows: pd.DataFrame(list(rows), columns=names, dtype=object)
    )


@SETTINGS
@given(X=numeric_rows(tabular.FAST_NUMERIC_ROWS), name=st.sampled_from(sorted(numeric_guards())))
def test_numeric_rows_agree(X: np.ndarray, name: str) -> None:
    fast, slow = both(numeric_guards()[name], X)
    assert same(fast, slow), (fast, slow)


@SETTINGS
@given(X=mixed_frames(tabular.FAST_ROWS), name=st.sampled_from(sorted(mixed_guards())))
def test_mixed_frames_agree(X: pd.DataFrame, name: str) -> None:
    fast, slow = both(mixed_guards()[name], X)
    assert same(fast, slow), (fast, slow)


@SETTINGS
@given(X=numeric_rows(tabular.FAST_ROWS))
def test_numeric_frames_and_object_arrays_agree(X: np.ndarray) -> None:
    guards = numeric_guards()["centroids"]
    _, frame = wine()
    with np.errstate(over="ignore"):  # 1e300 as float32 is inf: still a valid batch
        as_f32 = X.astype(np.float32)
    for batch in (pd.DataFrame(X, columns=frame.columns), X.astype(object), as_f32):
        fast, slow = both(guards, batch)
        assert same(fast, slow), (fast, slow)


def test_fast_path_is_taken_and_the_comparison_can_fail() -> None:
    guards = numeric_guards()["centroids"]
    X, _ = wine()
    rows = X[:2].copy()
    rows[1, 2] = np.nan
    fast, slow = both(guards, rows)
    assert same(fast, slow)
    assert fast.reasons == {1: ("missing:" + guards.columns[2],)}
    # negative control: a row that differs in one value gives a different result
    other = rows.copy()
    other[0, 0] = 1e6
    assert not same(fast, guards.check(other))
    # and the small path is really a different code path: the vectorized guards
    # with an injected fault disagree with it while the small path stays right
    broken = InputGuards.from_state(guards.to_state())
    broken._hi = broken._hi - 1e9  # every finite value now out of range, numpy path only
    assert not same(broken.check(rows), both(broken, rows)[1])


def test_pvalues_rows_on_held_out_rows_tie_with_their_calibration_scores() -> None:
    # held-out rows score exactly their own calibration score: a p-value there is
    # only right if the score is bit for bit the one pvalues computes
    X, _ = wine()
    rng = np.random.default_rng(3)
    order = rng.permutation(len(X))
    fit_part, cal_part = X[order[:100]], X[order[100:]]
    det = CentroidDetector.fit_split(fit_part, cal_part, rng=rng)
    for batch in (cal_part[:1], cal_part[:5], fit_part[:8]):
        assert det.pvalues_rows(batch.tolist()) == det.pvalues(batch).tolist()


@pytest.mark.parametrize(
    "n",
    [1, tabular.FAST_NUMERIC_ROWS, tabular.FAST_NUMERIC_ROWS + 1, tabular.FAST_ROWS + 1],
)
@pytest.mark.parametrize("as_object", [False, True])
def test_batch_sizes_around_the_switch(n: int, as_object: bool) -> None:
    X, _ = wine()
    guards = numeric_guards()["centroids"]
    batch = X[:n] * np.linspace(3.0, 0.5, n)[:, None]  # some rows out of range and OOD
    fast, slow = both(guards, batch.astype(object) if as_object else batch)
    assert same(fast, slow)
    assert fast.reasons  # the batch does exercise the reasons
