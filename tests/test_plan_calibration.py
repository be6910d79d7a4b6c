"""``sp.plan_calibration``: checked by simulation with the real certification procedure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import safepredict as sp
from safepredict.tiers import certify_threshold
from safepredict.tiers.planner import _grid_counts

R = 300  # simulated calibration sets per size


def _certification_rate(
    n: int,
    *,
    max_error: float,
    delta: float,
    expected_error: float,
    target_accept: float,
    seed: int,
    test: str = "randomized",
) -> float:
    """Share of ``R`` simulated calibration sets on which ``certify_threshold`` certifies.

    The planner's model, run through the library's real procedure (not the
    planner's vectorized copy): distinct random scores; the best
    ``target_accept * n`` rows are wrong with probability ``expected_error``,
    the others always; success = a certified threshold accepting at least 90%
    of the target rows (of the largest candidate within them if the grid is
    coarser).
    """
    rng = np.random.default_rng(seed)
    band = math.floor(target_accept * n)
    counts, _ = _grid_counts(n, max_error, delta)
    goal = 0.9 * min(band, int(counts[counts <= band][-1]) / 0.9)
    hits = 0
    for _ in range(R):
        scores = rng.permutation(n).astype(np.float64)  # distinct; higher = better
        rank = n - 1 - scores  # 0 = best
        errors = np.where(rank < band, rng.uniform(size=n) < expected_error, True)
        res = certify_threshold(scores, errors, max_error=max_error, delta=delta, test=test)
        hits += bool(res.certified and res.n_accepted >= goal)
    return hits / R


@pytest.mark.parametrize(
    ("max_error", "delta", "expected_error", "target_accept"),
    [(0.05, 0.1, 0.02, 0.8), (0.1, 0.05, 0.04, 0.5)],
)
@pytest.mark.parametrize("test", ["randomized", "conservative"])
def test_planned_rows_certify_with_the_asked_power(
    max_error: float, delta: float, expected_error: float, target_accept: float, test: str
) -> None:
    """Rate >= power at n (MC), and below power at 0.7 n (the plan is not padded).

    Each rate is a binomial proportion over R independent simulated
    calibration sets: standard error sqrt(p (1 - p) / R) <= 0.017 at p = 0.9;
    we allow 3 of them below the target. The planner's own Monte Carlo
    (2,000 draws) adds ~0.007 of noise to where n lands.
    """
    power = 0.9
    kwargs = {
        "max_error": max_error,
        "delta": delta,
        "expected_error": expected_error,
        "target_accept": target_accept,
    }
    n = sp.plan_calibration(**kwargs, power=power, test=test)
    assert n > sp.plan_calibration(**kwargs, power=0.5, test=test)
    mc = 3 * math.sqrt(power * (1 - power) / R)
    at_n = _certification_rate(n, **kwargs, seed=1, test=test)
    below = _certification_rate(math.floor(0.7 * n), **kwargs, seed=2, test=test)
    assert at_n >= power - mc, (n, at_n)
    assert below < power, (n, below)  # negative control: fewer rows do not reach the power


def test_zero_errors_needs_the_budget_gate_rows() -> None:
    n = sp.plan_calibration(max_error=0.05, delta=0.1, expected_error=0.0, target_accept=1.0)
    assert n == 45  # rows_needed(0.05, 0.1): (1 - 0.05) ** 45 <= 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"expected_error": 0.06}, "not below max_error"),
        ({"target_accept": 0.0}, "target_accept"),
        ({"delta": 1.0}, "delta"),
        ({"power": 1.2}, "power"),
        ({"max_error": "5%"}, "max_error"),
    ],
)
def test_bad_arguments_say_what_to_do(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "max_error": 0.05,
        "delta": 0.1,
        "expected_error": 0.02,
        "target_accept": 0.5,
    }
    args.update(kwargs)
    with pytest.raises(sp.ConfigError, match=match):
        sp.plan_calibration(**args)  # type: ignore[arg-type]  # deliberately wrong types


def test_report_says_how_many_rows_an_uncertified_tier_needs() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(X[:250], y[:250])
    policy = {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.02},
            {"name": "human", "action": "abstain"},
        ],
    }
    small = sp.SafePredictor(model, tiers=policy, log="off").calibrate(X[250:330], y[250:330])
    report = small.calibration_report()["auto"]
    assert report["certified"] is False
    planned = report["calibration_rows_planned"]
    assert planned is not None
    assert planned > 80
    assert str(planned) in report["warning"]
