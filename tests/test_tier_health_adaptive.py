"""Issue 22 (c): the realized error among *all* accepted rows of an ``adapt = true`` tier.

The threshold update bounds the *weighted* error over the audited outcomes
deterministically (:func:`safepredict.adaptive.long_run_bound`); with audit
sampling the realized error over every accepted row differs from it by sampling
noise, which :func:`safepredict.adaptive.realized_error_bound` covers with
probability ``1 - delta`` (Freedman's inequality on the audit-sampling
martingale, :func:`safepredict._stats.freedman_lines`).

The study: ``RUNS`` streams of ``N`` rows of a real model's scores on generated
data whose labels drift (the flip probability rises from 4% to 30%, so the
certified threshold breaks its promise almost at once), each stream with its own
rows, label flips and Bernoulli audit draws; all streams are run side by side in
numpy, one row at a time (decide, then learn the audited outcome at once, as the
bound assumes).

Tolerances: a share ``p`` estimated from ``R`` independent streams is allowed three
binomial Monte-Carlo standard errors, ``3 * sqrt(p (1 - p) / R)`` (a spurious
failure about once in 700 runs); every claim has a negative control.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from safepredict._stats import freedman_lines
from safepredict.adaptive import long_run_bound, realized_error_bound
from safepredict.exceptions import ConfigError

MAX_ERROR, STEP, DELTA_AUDIT = 0.05, 0.005, 0.05
RUNS, N = 200, 40_000


def three_se(p: float, runs: int = RUNS) -> float:
    return 3.0 * math.sqrt(p * (1.0 - p) / runs)


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray, float]:
    """Top-class probabilities and errors of a real model, and its certified threshold."""
    from safepredict.tiers import certify_threshold

    X, y = make_classification(n_samples=26000, n_features=8, n_informative=5,
                               n_clusters_per_class=1, class_sep=2.0, random_state=23)  # fmt: skip
    model = LogisticRegression(max_iter=500).fit(X[:3000], y[:3000])
    proba = model.predict_proba(X[3000:])
    score = proba.max(axis=1)
    wrong = (proba.argmax(axis=1) != y[3000:]).astype(np.float64)
    cal = certify_threshold(score[:3000], wrong[:3000], max_error=MAX_ERROR, delta=0.1)
    return score[3000:], wrong[3000:], float(cal.threshold)


def simulate(scores: tuple[np.ndarray, np.ndarray, float], rate: float, seed: int) -> Any:
    """``RUNS`` drifting streams side by side: per stream, the sums the bounds need."""
    pool_score, pool_wrong, tau0 = scores
    rng = np.random.default_rng(seed)
    w = 1.0 / rate
    tau = np.full(RUNS, max(0.0, tau0))  # a certificate to accept every row starts at 0
    n_acc, n_err, n_aud, n_aud_err, n_static, n_static_err = (np.zeros(RUNS) for _ in range(6))
    flip_p = np.linspace(0.04, 0.30, N)
    block = 2000
    for start in range(0, N, block):  # draw a block of rows for all streams at once
        idx = rng.integers(0, len(pool_score), (RUNS, block))
        s = pool_score[idx]
        flip = rng.random((RUNS, block)) < flip_p[start : start + block]
        e = np.where(flip, 1.0 - pool_wrong[idx], pool_wrong[idx])
        audit = rng.random((RUNS, block)) < rate  # Bernoulli, independent of the outcome
        n_static += (s >= tau0).sum(axis=1)
        n_static_err += ((s >= tau0) * e).sum(axis=1)
        for t in range(block):  # decide with the current threshold, then learn at once
            acc = s[:, t] >= tau
            learn = acc & audit[:, t]
            n_acc += acc
            n_err += acc * e[:, t]
            n_aud += learn
            n_aud_err += learn * e[:, t]
            tau = np.where(learn, np.maximum(0.0, tau + STEP * w * (e[:, t] - MAX_ERROR)), tau)
    weight = n_aud * w
    bounds = [
        realized_error_bound(
            start=tau0,
            step=STEP,
            max_error=MAX_ERROR,
            n_accepted=int(n),
            min_audit_probability=rate,
            delta=DELTA_AUDIT,
        )
        for n in n_acc
    ]
    old = [long_run_bound(start=tau0, step=STEP, total_weight=x, max_weight=w) for x in weight]
    return {
        "realized": n_err / n_acc,
        "weighted": n_aud_err * w / weight,
        "acceptance": n_acc / N,
        "static_error": n_static_err / n_static,
        "static_acceptance": n_static / N,
        "old": MAX_ERROR + np.array(old),
        "deterministic": MAX_ERROR + np.array([b.deterministic for b in bounds]),
        "total": np.array([b.total for b in bounds]),
    }


@pytest.fixture(scope="module")
def streams(scores: tuple[np.ndarray, np.ndarray, float]) -> dict[float, Any]:
    return {rate: simulate(scores, rate, seed=int(rate * 1000)) for rate in (0.05, 0.2)}


@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_realized_error_stays_within_the_stated_bound_under_drift(
    streams: dict[float, Any], rate: float
) -> None:
    r = streams[rate]
    # the deterministic part: the weighted error keeps the old bound in every stream
    assert np.all(r["weighted"] <= r["old"] + 1e-12)
    # realized error over all accepted rows <= max_error + deterministic + sampling term,
    # in at least 1 - delta_audit of the streams (minus three Monte-Carlo SEs)
    violated = float((r["realized"] > r["total"]).mean())
    assert violated <= DELTA_AUDIT + three_se(DELTA_AUDIT)
    # the drift breaks the static certified threshold; the adaptive tier pays in acceptance
    assert np.all(r["static_error"] > 3 * MAX_ERROR)
    assert np.all(r["realized"] < r["static_error"])
    assert np.all(r["acceptance"] < r["static_acceptance"])
    # and the bound is informative here: below the error the static tier makes
    assert np.median(r["total"]) < np.median(r["static_error"])


def test_the_deterministic_term_alone_does_not_cover_the_realized_error(
    streams: dict[float, Any],
) -> None:
    """Negative control: without the sampling term the realized error escapes (old failure)."""
    r = streams[0.05]
    alone = float((r["realized"] > r["deterministic"]).mean())
    assert alone > DELTA_AUDIT + three_se(DELTA_AUDIT)  # clearly more than delta_audit
    assert alone > float((r["realized"] > r["total"]).mean()) + three_se(alone)
    # the failure seen before this bound: realized > max_error + the weighted-error bound
    old_failures = np.flatnonzero(r["realized"] > r["old"])
    assert len(old_failures) > 0
    assert np.all(r["realized"][old_failures] <= r["total"][old_failures])  # now covered


def test_realized_error_bound_terms() -> None:
    kw: dict[str, Any] = {"start": 0.8, "step": 0.01, "max_error": 0.05, "delta": 0.05}
    every = realized_error_bound(n_accepted=10_000, min_audit_probability=1.0, **kw)
    assert every.sampling == 0.0  # every accepted row audited: realized = weighted
    assert every.deterministic == long_run_bound(start=0.8, step=0.01, total_weight=10_000)
    small = realized_error_bound(n_accepted=10_000, min_audit_probability=0.05, **kw)
    large = realized_error_bound(n_accepted=160_000, min_audit_probability=0.05, **kw)
    assert small.total == pytest.approx(small.deterministic + small.sampling + 0.05)
    # the sampling term shrinks at least like 1 / sqrt(n) (16x the rows: a quarter or
    # less; faster while n is small, as the variance is evaluated at the bound itself)
    assert 0.1 < large.sampling / small.sampling <= 0.25
    assert realized_error_bound(n_accepted=0, min_audit_probability=0.2, **kw).total == math.inf
    with pytest.raises(ConfigError, match="min_audit_probability"):
        realized_error_bound(n_accepted=10, min_audit_probability=0.0, **kw)


def test_freedman_lines_hold_time_uniformly() -> None:
    """P(any line crossed at any time) <= delta on a martingale with the stated range.

    Increments ``(1 - A / p)`` with ``A ~ Bernoulli(p)``: mean 0, at most 1, variance
    ``(1 - p) / p``; 2,000 paths of 2,000 steps, three binomial SEs.
    """
    rng = np.random.default_rng(7)
    p, delta, paths = 0.1, 0.1, 2000
    x = 1.0 - (rng.random((paths, 2000)) < p) / p
    s = np.cumsum(x, axis=1)
    v = np.arange(1, 2001) * (1 - p) / p
    slopes, intercepts = freedman_lines(delta, bound=1.0)
    lines = slopes[:, None] * v + intercepts[:, None]
    crossed = float((s[:, None, :] > lines).any(axis=(1, 2)).mean())
    assert crossed <= delta + 3 * math.sqrt(delta * (1 - delta) / paths)
    # negative control: lines a quarter as high are crossed far more often
    low = float((s[:, None, :] > lines / 4).any(axis=(1, 2)).mean())
    assert low > delta + 3 * math.sqrt(delta * (1 - delta) / paths)
    with pytest.raises(ConfigError, match="bound must be"):
        freedman_lines(0.1, bound=0.0)
    with pytest.raises(ConfigError, match="lambdas must be"):
        freedman_lines(0.1, bound=1.0, lambdas=[0.0])
