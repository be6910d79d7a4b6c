"""Where the fallback's anchors go when a tie block inflates the first candidate (#18).

A forest's probabilities are coarse: on breast cancer about half the rows have
``p_1 = 1`` (every tree agrees). The certification grid starts at the strictest
candidate accepting ``rows_needed(max_error, delta / 4)`` rows, snapped up to the
end of that tie block. The anchors of the fallback procedure used to double from
the *snapped* count, so the only anchor landed near "accept everything", where the
error is close to ``max_error``: one misclassified ``p_1 = 1`` row in the
calibration sample then certified nothing. Anchors now double from the planned
start (a label-free number), which is the same rule when there is no tie.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

from safepredict.conformal import ClassificationConformal
from safepredict.tiers import accept_at, binomial_p_value, certify_threshold, rows_needed
from safepredict.tiers.certify import anchor_weights, sort_keys, threshold_grid

MAX_ERROR, DELTA = 0.05, 0.1


def _tied_top(n_block: int = 94) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """200 rows: a tie block of ``n_block`` best rows holding one error, then clean rows
    down to 150, then a tail of errors (the shape of a forest on an easy binary task)."""
    scores = np.concatenate([np.ones(n_block), np.linspace(0.99, 0.5, 200 - n_block)])
    errors = np.zeros(200, dtype=bool)
    errors[0] = True  # a confident mistake inside the tie block
    errors[160:] = np.arange(40) % 4 != 0  # the tail: 75% errors
    return scores, errors


def test_a_tie_block_at_the_top_does_not_push_the_anchor_out_of_reach() -> None:
    scores, errors = _tied_top()
    res = certify_threshold(scores, errors, max_error=MAX_ERROR, delta=DELTA)
    assert res.certified
    assert res.n_accepted >= 2 * rows_needed(MAX_ERROR, DELTA / 4)  # the planned anchor
    assert res.upper_bound <= MAX_ERROR
    # Without the tie the first candidate is the planned start: nothing moves.
    counts = np.array([72, 91, 144, 150, 300])
    assert np.array_equal(
        anchor_weights(counts, 0.25, 2.0), anchor_weights(counts, 0.25, 2.0, start=72)
    )


def _old_anchor_rule(keys: NDArray[np.float64], errors: NDArray[np.bool_]) -> bool:
    """Whether the former rule (anchors doubling from the snapped first count) certifies."""
    order, sorted_keys, accepts = sort_keys(keys)
    _, counts = threshold_grid(sorted_keys, accepts, rows_needed(MAX_ERROR, DELTA / 4), 50)
    weights = anchor_weights(counts, 0.25, 2.0)  # no planned start: the old placement
    if len(counts) == 0 or weights[0] == 1.0:
        _, counts = threshold_grid(sorted_keys, accepts, rows_needed(MAX_ERROR, DELTA), 50)
        weights = np.zeros(len(counts))
        weights[:1] = 1.0
    k = np.concatenate([[0], np.cumsum(errors[order])])[counts]
    carry, rejected = 0.0, False
    for p, w in zip(binomial_p_value(k, counts, MAX_ERROR), weights * DELTA, strict=True):
        level = w + carry  # Wiens' fallback: a rejection passes its level on
        rejected |= bool(p <= level)
        carry = level if p <= level else 0.0
    return rejected


@pytest.fixture(scope="module")
def forest_pool() -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """The validity study's breast-cancer forest (tests/test_tiers.py), scored once."""
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_pool, y_tr, y_pool = train_test_split(X, y, train_size=0.4, random_state=0)
    rf = RandomForestClassifier(n_estimators=50, min_samples_leaf=2, random_state=0, n_jobs=1)
    return rf.fit(X_tr, y_tr).predict_proba(X_pool), np.asarray(y_pool)


def test_tie_breaking_certifies_a_forest_as_often_as_the_coarse_score(
    forest_pool: tuple[NDArray[np.float64], NDArray[np.intp]],
) -> None:
    """Over 200 calibration draws of 200 rows from the pool (the population, as in the
    validity study): the finest-grained ranking certifies at least as often as the
    confidence alone, stays valid, and the former anchor rule fails the same check."""
    proba, y = forest_pool
    wrong = proba.argmax(axis=1) != y
    top2 = np.sort(proba, axis=1)[:, -2:]
    rng = np.random.default_rng(2026)
    k_splits = 200
    fine, coarse, old, violated = (np.zeros(k_splits, dtype=bool) for _ in range(4))
    for s in range(k_splits):
        cal = rng.integers(0, len(y), size=200)
        cal_scores = np.sort(1.0 - proba[cal, y[cal]])
        q = float(cal_scores[min(math.ceil(201 * 0.9), 200) - 1])
        conf = ClassificationConformal("lac", 0.9, np.arange(2), cal_scores, q).confidence(proba)
        keys = np.column_stack([conf, 1.0 - top2[:, 0], top2[:, 1]])
        res = certify_threshold(keys[cal], wrong[cal], max_error=MAX_ERROR, delta=DELTA)
        fine[s] = res.certified
        coarse[s] = certify_threshold(
            conf[cal], wrong[cal], max_error=MAX_ERROR, delta=DELTA
        ).certified
        old[s] = _old_anchor_rule(keys[cal], wrong[cal])
        if res.certified:  # the realized error on the population the rows come from
            hit = accept_at(keys, np.asarray(res.key))
            violated[s] = wrong[hit].mean() > MAX_ERROR

    def worse(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> bool:
        # Paired splits: D_s = b_s - a_s in {-1, 0, 1}; mean(D) has standard error
        # sqrt(Var(D) / K) <= sqrt(mean(D^2) / K), so "a certifies less often than
        # b" needs mean(D) above 3 of those (a ~0.13% false alarm, normal tail).
        d = b.astype(float) - a.astype(float)
        return bool(d.mean() > 3.0 * math.sqrt(max(np.mean(d**2), 1.0 / k_splits) / k_splits))

    assert not worse(fine, coarse), (fine.mean(), coarse.mean())
    assert worse(old, coarse), (old.mean(), coarse.mean())  # negative control: the defect
    # validity on the same draws: P(violation) <= delta + 3 sqrt(delta (1 - delta) / K)
    assert violated.mean() <= DELTA + 3.0 * math.sqrt(DELTA * (1 - DELTA) / k_splits)
