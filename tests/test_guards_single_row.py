"""One row through the input guards: the fused single-row path equals the vectorized one.

``InputGuards.check`` sends one all-numeric row whose values are all finite and in
range through ``RowChecker.check_row``, and the centroid OOD p-value of that row
through ``CentroidDetector.pvalue_row``, which certifies the rank of the row's
score from one float64 product and a rigorous bound on the float32 rounding of
``scores_of`` (``float32_score_bound``), falling back to the float32 calls when a
calibration score lies within that bound. These tests check, over generated rows
and containers, that reasons, ranks, skips and p-values are bit for bit those of
the vectorized path, that the bound holds, and that without it the answers differ.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import make_classification
from tests.test_guards_fast import SETTINGS, floats_near, same, vectorized

from safepredict import GuardConfig, SafePredictor
from safepredict.guards import InputGuards
from safepredict.ood import CentroidDetector, centroids

D = 17


@functools.cache
def table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 17-column table like the benchmarks': reference rows, test rows, labels."""
    X, y = make_classification(
        n_samples=4_000, n_features=D, n_informative=10, random_state=0, shift=0.5
    )
    return X[:3_000], X[3_000:], y


@functools.cache
def guard_sets() -> dict[str, InputGuards]:
    ref, _, _ = table()
    configs = {
        "centroids": GuardConfig(),
        "knn": GuardConfig(ood_method="knn"),
        "no ood": GuardConfig(ood_method="none"),
        "ood reviews, missing ignored": GuardConfig(ood="review", missing="ignore"),
    }
    return {k: InputGuards.fit(ref, c, random_state=0) for k, c in configs.items()}


def one_row() -> st.SearchStrategy[np.ndarray]:
    """Rows inside, near and far outside the reference ranges, and special values."""
    ref, test, _ = table()
    cols = [floats_near(float(ref[:, j].min()), float(ref[:, j].max())) for j in range(D)]
    typical = st.sampled_from(range(len(test))).map(lambda i: test[i].tolist())
    # mostly typical rows (the fused path), some with a value replaced by anything
    mixed = st.tuples(typical, st.integers(0, D - 1), st.one_of(*cols)).map(
        lambda t: [*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]]
    )
    return st.one_of(typical, mixed, st.tuples(*cols).map(list)).map(
        lambda r: np.array([r], dtype=np.float64)
    )


def containers(row: np.ndarray) -> list[Any]:
    """The same row as float64, float32, int and object arrays and as a frame."""
    names = list(guard_sets()["centroids"].columns)
    with np.errstate(over="ignore", invalid="ignore"):
        out: list[Any] = [row, row.astype(np.float32), row.astype(object)]
        if np.isfinite(row).all() and np.abs(row).max() < 2**62:
            out.append(row.astype(np.int64))
    out.append(pd.DataFrame(row, columns=names))
    return out


@SETTINGS
@given(row=one_row(), name=st.sampled_from(sorted(guard_sets())))
def test_one_row_agrees_with_the_vectorized_guards(row: np.ndarray, name: str) -> None:
    guards = guard_sets()[name]
    for batch in containers(row):
        fast = guards.check(batch)
        with vectorized():
            slow = guards.check(batch)
        assert same(fast, slow), (batch, fast, slow)


def test_the_fused_path_is_taken_and_the_comparison_can_fail() -> None:
    guards = guard_sets()["centroids"]
    _, test, _ = table()
    rows = [test[i : i + 1] for i in range(200)]
    fused = [guards._rows.check_row(r, guards.detector, guards.config.ood_alpha) for r in rows]
    assert sum(r is not None for r in fused) >= 150  # most test rows pass every value guard
    # a row the value guards flag leaves the fused path (the general one names reasons)
    flagged = test[:1].copy()
    flagged[0, 3] = np.inf
    assert guards._rows.check_row(flagged, guards.detector, 0.01) is None
    assert guards.check(flagged).reasons[0][0] == f"non_finite:{guards.columns[3]}"
    # negative control: bounds broken in the fused path only, the comparison catches it
    broken = InputGuards.from_state(guards.to_state())
    broken._rows.pass_high = [h - 1e9 for h in broken._rows.pass_high]
    fast, slow = broken.check(rows[0]), guards.check(rows[0])
    assert same(fast, slow)  # a row the broken bounds send back to the general path
    broken._rows.pass_high = [h + 1e9 for h in guards._rows.pass_high]
    broken._rows.pass_low = [lo - 1e9 for lo in guards._rows.pass_low]
    far = test[:1] * 50.0  # out of range: the general path flags it, the broken one passes
    assert guards.check(far).reasons
    assert not same(broken.check(far), guards.check(far))


# ---------------------------------------------------------------- the certified p-value
@functools.cache
def detectors() -> dict[int, tuple[CentroidDetector, np.ndarray, np.ndarray]]:
    """Per width: a detector, its held-out calibration rows and other rows."""
    out = {}
    for d in (2, 6, D, 60):
        X, _ = make_classification(
            n_samples=3_000, n_features=d, n_informative=min(d, 5), n_redundant=0, random_state=d
        )
        rng = np.random.default_rng(d)
        order = rng.permutation(len(X))
        fit_part, cal_part, other = X[order[:1000]], X[order[1000:2500]], X[order[2500:]]
        det = CentroidDetector.fit_split(fit_part, cal_part, rng=rng)
        out[d] = (det, cal_part, other)
    return out


def certified(det: CentroidDetector, X: np.ndarray) -> list[float | None]:
    return [det._certified_pvalue(z) for z in det.transform.transform_rows(X.tolist())]


@pytest.mark.parametrize("d", [2, 6, D, 60])
def test_pvalue_row_equals_pvalues_bit_for_bit(d: int) -> None:
    det, cal_part, other = detectors()[d]
    # held-out calibration rows score exactly their own calibration score: a tie the
    # certificate must refuse (the float32 calls decide); other rows mostly certified
    for rows in (cal_part[:300], other, other * 3.0, other + 1e5):
        expected = [det.pvalues(r[None]).item() for r in rows]  # the one-row batch
        got = [det.pvalue_row(r) for r in rows.tolist()]
        assert got == expected
        # a certified p-value is also the one the row gets inside any batch (BLAS
        # kernels round a row differently by block shape; the certificate covers all)
        in_batch = det.pvalues(rows).tolist()
        for p, b in zip(certified(det, rows), in_batch, strict=True):
            assert p is None or p == b
    assert all(p is None for p in certified(det, cal_part[:300]))
    assert sum(p is not None for p in certified(det, other)) >= 0.8 * len(other)


def test_without_the_rounding_bound_the_certificate_would_be_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    det, cal_part, _ = detectors()[D]
    monkeypatch.setattr(centroids, "float32_score_bound", lambda d: 0.0)
    naive = CentroidDetector.from_state(det.to_state())
    rows = cal_part[:300]
    got = certified(naive, rows)
    assert all(p is not None for p in got)  # no margin: every row "certified"
    # ties broken by float64 rounding: some p-values are one rank off
    assert got != [det.pvalues(r[None]).item() for r in rows]


@pytest.mark.parametrize("d", [2, 6, D, 60])
def test_the_float32_scores_stay_inside_the_bound(d: int) -> None:
    det, cal_part, other = detectors()[d]
    rng = np.random.default_rng(d)
    # typical rows, scaled ones (large |z| and cancellation) and extreme values
    rows = np.vstack([other, other * 5.0, cal_part[:200], rng.normal(scale=1e3, size=(200, d))])
    z = det.transform.transform(rows)
    s2 = det.scores_of(z).astype(np.float64) ** 2  # what scores_of squared, float32 path
    k = det._n_centroids
    ends = np.hstack([z, np.ones((len(z), 1)), np.abs(z)]) @ det._bound_rows64.T
    q = (z * z).sum(axis=1)
    r = det._score_bound
    lo = ends[:, :k].min(axis=1) + q * (1 - r)
    hi = ends[:, k:].min(axis=1) + q * (1 + r)
    # s2 went through one more sqrt and square: allow 4 float64 ulps of slack
    slack = 4 * np.spacing(np.maximum(np.abs(lo), np.abs(hi)))
    assert np.all(lo - slack <= s2)
    assert np.all(s2 <= hi + slack)
    # and the bound is not vacuous: the interval is a few millionths of the score
    assert np.median((hi - lo) / s2) < 1e-4


# ---------------------------------------------------------------- through decide_one
@functools.cache
def predictor() -> SafePredictor:
    from sklearn.linear_model import LogisticRegression

    ref, test, y = table()
    model = LogisticRegression(max_iter=500).fit(ref, y[:3_000])
    cal = test[:600]
    return SafePredictor(model, log="off", random_state=0).calibrate(
        cal, y[3_000:3_600], reference=ref
    )


@SETTINGS
@given(row=one_row(), as_dict=st.booleans())
def test_decide_one_is_the_same_with_and_without_the_small_paths(
    row: np.ndarray, as_dict: bool
) -> None:
    sp = predictor()
    names = sp.guards_.columns
    x: Any = dict(zip(names, row[0].tolist(), strict=True)) if as_dict else row[0]
    fast = sp.decide_one(x)
    with vectorized():
        slow = sp.decide_one(x)
    assert fast.reasons == slow.reasons
    assert fast.action == slow.action
    assert fast.prediction_set == slow.prediction_set
    assert fast.tier == slow.tier
    assert fast.confidence == slow.confidence
