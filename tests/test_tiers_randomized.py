"""Randomized exact binomial tests behind ``max_error`` tiers (#18, power to the oracle).

The binomial is discrete, so the conservative p-value ``P(B <= k)`` has size below
its level; the randomized ``P(B < k) + U P(B = k)`` is exactly uniform at the
boundary and never larger, so the certification keeps every threshold the
conservative test certifies and often certifies a looser one. These tests check
the p-value (its size, statistically, with a negative control), the procedure
(never less acceptance, deterministic in the rows and not in their order, valid
over many calibration draws with a negative control), and the policy key.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from safepredict import ConfigError
from safepredict._binomial import (
    binomial_p_value,
    clopper_pearson,
    randomized_binomial_p_value,
    randomized_upper_bound,
)
from safepredict.config import Tier, TierPolicy
from safepredict.tiers import TierInputs, calibrate_tiers, certify_threshold, plan_calibration

R = 20_000  # draws of the p-value-level study
K = 2_000  # calibration draws of the procedure-level study


@pytest.mark.parametrize(("n", "max_error"), [(30, 0.1), (200, 0.05)])
def test_randomized_p_value_has_exact_size_at_the_boundary(n: int, max_error: float) -> None:
    """``P(p <= level) = level`` at ``rate = max_error``; the conservative one's size is lower.

    Each rate is a proportion over ``R`` independent draws: standard error
    ``sqrt(level (1 - level) / R)``, at most 0.0021 here; we allow 4 of them. The
    negative control drops the randomization's lower half (``U = 0``, i.e.
    ``P(B < k)``, an invalid p-value) and must be caught exceeding the level.
    """
    rng = np.random.default_rng(0)
    k = rng.binomial(n, max_error, size=R)
    u = rng.uniform(size=R)
    randomized = randomized_binomial_p_value(k, n, max_error, u)
    conservative = binomial_p_value(k, n, max_error)
    too_small = randomized_binomial_p_value(k, n, max_error, 0.0)
    for level in (0.01, 0.05, 0.1):
        tol = 4 * math.sqrt(level * (1 - level) / R)
        assert abs(float(np.mean(randomized <= level)) - level) <= tol, level
        # The conservative test's size is the binomial CDF at the largest count it
        # rejects: at most the level, and below it wherever the CDF jumps over it.
        size = float(stats.binom.cdf(stats.binom.ppf(level, n, max_error), n, max_error))
        if size > level:
            size = float(stats.binom.cdf(stats.binom.ppf(level, n, max_error) - 1, n, max_error))
        assert size <= level
        assert abs(float(np.mean(conservative <= level)) - size) <= tol, level
        assert float(np.mean(too_small <= level)) > level + tol, level  # negative control
    # Exactly uniform: a Kolmogorov-Smirnov test does not reject at 1% (the
    # conservative p-value, a step function, is rejected outright).
    assert stats.kstest(randomized, "uniform").pvalue > 0.01
    assert stats.kstest(conservative, "uniform").pvalue < 1e-6


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 400),
    frac=st.floats(0, 1),
    u=st.floats(0, 1),
    max_error=st.floats(0.005, 0.5),
)
def test_randomized_p_value_and_bound_never_exceed_the_conservative_ones(
    n: int, frac: float, u: float, max_error: float
) -> None:
    k = round(frac * n)
    p_rand = float(randomized_binomial_p_value(k, n, max_error, u))
    assert 0.0 <= p_rand <= float(binomial_p_value(k, n, max_error)) + 1e-12
    cp = clopper_pearson(k, n, 0.9)[1]
    bound = randomized_upper_bound(k, n, u, 0.9)
    assert 0.0 <= bound <= cp + 1e-9
    if k < n:  # at u = 1 it is the Clopper-Pearson bound
        assert randomized_upper_bound(k, n, 1.0, 0.9) == pytest.approx(cp, abs=1e-9)
    if bound < 1.0:  # the bound is where the p-value crosses 1 - level
        assert float(randomized_binomial_p_value(k, n, min(bound + 1e-6, 1.0), u)) <= 0.1 + 1e-6


def _rows(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Scores of odd shapes (ties, nan, a few distinct values, 2-D keys) and errors."""
    n = draw(st.integers(0, 600))
    levels = draw(st.sampled_from([3, 20, 10_000]))  # heavy ties .. distinct
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scores = np.round(rng.uniform(size=n) * levels) / levels
    if draw(st.booleans()) and n:
        scores[rng.uniform(size=n) < 0.05] = np.nan
    slope = draw(st.floats(0.0, 0.6))
    errors = rng.uniform(size=n) < 0.01 + slope * (1 - np.nan_to_num(scores))
    if draw(st.booleans()):
        return np.column_stack([scores, rng.uniform(size=n)]), errors
    return scores, errors


@settings(max_examples=120, deadline=None)
@given(rows=st.composite(_rows)(), max_error=st.sampled_from([0.02, 0.05, 0.1]))
def test_randomized_certification_keeps_every_conservative_threshold(
    rows: tuple[np.ndarray, np.ndarray], max_error: float
) -> None:
    scores, errors = rows
    exact = certify_threshold(scores, errors, max_error=max_error, delta=0.1, test="conservative")
    rand = certify_threshold(scores, errors, max_error=max_error, delta=0.1)
    assert rand.test == "randomized"
    assert exact.test == "conservative"
    assert rand.n_accepted >= exact.n_accepted
    assert rand.certified or not exact.certified
    if rand.certified:
        assert rand.upper_bound <= max_error + 1e-9


def test_the_draws_depend_on_the_rows_not_on_their_order() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.uniform(size=1500), 2)  # many ties
    errors = rng.uniform(size=1500) < 0.12 * (1 - scores)
    res = certify_threshold(scores, errors, max_error=0.04, delta=0.1)
    again = certify_threshold(scores, errors, max_error=0.04, delta=0.1)
    perm = rng.permutation(1500)
    shuffled = certify_threshold(scores[perm], errors[perm], max_error=0.04, delta=0.1)
    assert res == again == shuffled
    # A seed draws independently of the rows (simulation studies); same seed, same draws.
    seeded = [
        certify_threshold(scores, errors, max_error=0.04, delta=0.1, random_state=s) for s in (1, 1)
    ]
    assert seeded[0] == seeded[1]


def test_bad_test_names_say_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="randomized"):
        certify_threshold(np.ones(50), np.zeros(50, bool), max_error=0.05, delta=0.1, test="mid-p")
    with pytest.raises(ConfigError, match="certification_test"):
        TierPolicy.from_dict(
            {"certification_test": "exact", "tiers": [{"name": "human", "action": "abstain"}]}
        )
    with pytest.raises(ConfigError, match="test"):
        plan_calibration(
            max_error=0.05, delta=0.1, expected_error=0.01, target_accept=0.5, test="fast"
        )


def test_validity_at_the_boundary_over_many_calibration_draws() -> None:
    """No score information, every row wrong at rate ``max_error``: certifying is a violation
    for any rate just above it, so the certification rate must stay <= delta.

    Over ``K`` independent draws the rate is a binomial proportion; we allow 3
    standard errors at ``delta`` (0.020). The randomized test spends more of
    ``delta`` than the conservative one (that is its power), not more than
    ``delta``; the negative control runs the procedure at ``2 delta`` and must
    be caught above the tolerance, so the study can fail.
    """
    max_error, delta, n = 0.05, 0.1, 1000
    rng = np.random.default_rng(11)
    tol = 3 * math.sqrt(delta * (1 - delta) / K)
    hits = {"randomized": 0, "conservative": 0, "control": 0}
    for _ in range(K):
        scores = rng.uniform(size=n)
        errors = rng.uniform(size=n) < max_error
        for test in ("randomized", "conservative"):
            res = certify_threshold(scores, errors, max_error=max_error, delta=delta, test=test)
            hits[test] += res.certified
        res = certify_threshold(scores, errors, max_error=max_error, delta=2 * delta)
        hits["control"] += res.certified
    rate = {k: v / K for k, v in hits.items()}
    assert rate["randomized"] <= delta + tol, rate
    assert rate["conservative"] <= rate["randomized"], rate
    assert rate["control"] > delta + tol, rate  # negative control: 2 delta is caught


def test_policy_key_reaches_the_report_and_round_trips() -> None:
    rng = np.random.default_rng(5)
    conf = rng.uniform(size=2500)
    wrong = rng.uniform(size=2500) < 0.25 * (1 - conf)
    tiers = (Tier("auto", "accept", max_error=0.04), Tier("human", "abstain"))
    inputs = TierInputs("classification", conf)
    by_test = {}
    for test in ("randomized", "conservative"):
        policy = TierPolicy(tiers, delta=0.1, certification_test=test)
        assert TierPolicy.from_dict(policy.to_dict()) == policy
        cal = calibrate_tiers(policy, inputs, wrong)
        assert cal.report["auto"]["test"] == test
        by_test[test] = cal.report["auto"]["n_accepted"]
    assert by_test["randomized"] >= by_test["conservative"]
    # The default is randomized and is not written out (policy hashes do not move).
    assert TierPolicy(tiers).certification_test == "randomized"
    assert "certification_test" not in TierPolicy(tiers).to_dict()
