"""Label-free error estimates of a regressor's ``max_error`` tiers (issue #23, item 3).

Behaviour through the public API, and two studies (>= 200 runs each, marked
slow) on generated data with heteroscedastic noise and covariate shift, in the
structure of the classifier studies in ``tests/test_shift_studies.py``:

* one calibration set, 200 shifted windows: per-tier MAE of the estimate
  against the realized error is below the naive calibration rate's, and within
  what an exact estimate would give; concept-shift windows (the noise scaled
  up, the inputs unchanged) are the negative control;
* fresh calibration sets: the interval covers the realized error at its level
  within binomial Monte-Carlo error; without the map's bootstrap variance (the
  control) it does not.

Setting: ``y = x @ coef + sigma(x) * eps`` with ``log sigma(x)`` linear in two
inputs (the coefficients from ``make_regression``), a linear model and a linear
model of ``log |residual|`` (what ``conformity_score="residual_normalized"``
fits); the tiers rank rows by minus the predicted noise scale (the interval
width up to a positive factor, so the same order and the same isotonic map).
Covariate shift moves the mean of the first input (a Gaussian tilted by
``exp(beta * x0)`` is the same Gaussian shifted by ``beta``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.datasets import make_regression
from sklearn.linear_model import LinearRegression
from tests.label_free_study import assert_beats_naive, assert_mae_near_floor, exact_floor

from safepredict import SafePredictor
from safepredict.config import TierPolicy
from safepredict.exceptions import ConfigError
from safepredict.shift import REGRESSION_ASSUMPTION, CalibrationRowsMissingError, ToleranceErrors
from safepredict.shift.performance import estimate_tiers
from safepredict.tiers import TierInputs, assign_tiers, calibrate_tiers

RUNS = 200
TOLERANCES = {"auto": 1.0, "quick": 1.5}  # each max_error tier has its own
NAMES = ["auto", "quick", "human"]
POLICY = {
    "delta": 0.1,
    "tiers": [
        {"name": "auto", "action": "accept", "max_error": 0.05, "tolerance": TOLERANCES["auto"]},
        {"name": "quick", "action": "accept", "max_error": 0.15, "tolerance": TOLERANCES["quick"]},
        {"name": "human", "action": "review"},
    ],
}
_, _, COEF = make_regression(n_samples=10, n_features=5, n_informative=5, coef=True, random_state=0)
COEF = COEF / np.abs(COEF).max() * 3  # mean effects of a few units


def _draw(
    g: np.random.Generator, n: int, shift: float = 0.0, noise: float = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``n`` rows, the first input's mean moved by ``shift``, the noise scaled by ``noise``."""
    X = g.normal(size=(n, 5))
    X[:, 0] += shift
    sigma = 0.8 * np.exp(0.5 * X[:, 0] + 0.3 * X[:, 1])
    return X, X @ COEF + noise * sigma * g.normal(size=n)


class Setting:
    """The model and its noise-scale model, fitted once; rows scored as at decide time."""

    def __init__(self) -> None:
        g = np.random.default_rng(0)
        self.model = LinearRegression().fit(*_draw(g, 5000))
        X, y = _draw(g, 5000)
        self.scale = LinearRegression().fit(X, np.log(np.abs(y - self.model.predict(X))))
        self.policy = TierPolicy.from_dict(POLICY)

    def score(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(-np.exp(self.scale.predict(X)), dtype=np.float64)

    def rows(
        self, g: np.random.Generator, n: int, shift: float = 0.0, noise: float = 1.0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Score and ``|y - y_hat|`` of ``n`` fresh rows."""
        X, y = _draw(g, n, shift, noise)
        return self.score(X), np.abs(y - self.model.predict(X))

    def tiers(self, score: NDArray[np.float64], abs_residual: NDArray[np.float64]) -> Any:
        """Certify the policy's tiers on calibration rows (the library's own calibration)."""
        inputs = TierInputs("regression", np.full(len(score), np.nan), scores={"conformal": score})
        errors = {t: abs_residual > tol for t, tol in TOLERANCES.items()}
        return calibrate_tiers(self.policy, inputs, errors)

    def codes(self, calibration: Any, score: NDArray[np.float64]) -> NDArray[np.intp]:
        inputs = TierInputs("regression", np.full(len(score), np.nan), scores={"conformal": score})
        return assign_tiers(self.policy, inputs, calibration)[0]


@pytest.fixture(scope="module")
def setting() -> Setting:
    return Setting()


def _fit(
    setting: Setting, g: np.random.Generator, n_cal: int, n_boot: int, seed: int
) -> tuple[Any, ToleranceErrors]:
    score, residual = setting.rows(g, n_cal)
    calibration = setting.tiers(score, residual)
    errors = ToleranceErrors.fit(
        NAMES,
        TOLERANCES,
        score,
        residual,
        setting.codes(calibration, score),
        n_boot=n_boot,
        seed=seed,
    )
    return calibration, errors


# ------------------------------------------------------------------ the public API
@pytest.fixture(scope="module")
def regressor() -> tuple[SafePredictor, Any, Any]:
    g = np.random.default_rng(5)
    model = LinearRegression().fit(*_draw(g, 2000))
    sp = SafePredictor(
        model,
        tiers=POLICY,
        guards="off",
        log="off",
        conformity_score="residual_normalized",
        random_state=0,
    ).calibrate(*_draw(g, 3000))
    return sp, *_draw(g, 3000, shift=1.0)


def test_estimate_performance_of_a_regressor_per_max_error_tier(
    regressor: tuple[SafePredictor, Any, Any],
) -> None:
    sp, X, y = regressor
    est = sp.estimate_performance(X)
    d = sp.decide(X)
    names = np.asarray(d.tier_names, dtype=object)[d.tier_codes]
    residual = np.abs(y - d.predictions.astype(float))
    assert est.assumption == REGRESSION_ASSUMPTION
    assert "no concept shift" in est.assumption
    assert est.n_rows == len(X)
    for name in ("auto", "quick"):
        t = est.tiers[name]
        rows = names == name
        assert t.n_rows == int(rows.sum()) > 50
        assert t.estimated_error is not None
        assert t.interval is not None
        assert t.interval[0] <= t.estimated_error <= t.interval[1]
        assert t.calibration_error is not None
        # one batch of >= 50 rows: a realized rate within 0.15 of the estimate (a 3 se
        # binomial bound at e <= 0.25 for n >= 75 is 0.15); the tier's max_error is not it
        assert abs(t.estimated_error - float((residual[rows] > TOLERANCES[name]).mean())) < 0.15
    human = est.tiers["human"]
    assert human.n_rows == int((names == "human").sum()) > 0
    assert human.estimated_error is None
    assert human.interval is None
    json_dict = est.to_dict()
    assert json_dict["tiers"]["human"]["estimated_error"] is None
    assert sp.estimate_performance(X) == est  # seeded bootstrap: reproducible


def test_regressor_naive_estimate_is_the_calibration_rate(
    regressor: tuple[SafePredictor, Any, Any],
) -> None:
    sp, _, _ = regressor
    core = sp.__dict__["_calibration_rows"]
    est = sp.estimate_performance(core.X_model)
    d = sp.decide(core.X_model)
    residual = np.abs(np.asarray(core.y) - d.predictions.astype(float))
    for code, name in enumerate(d.tier_names[:2]):
        rows = d.tier_codes == code
        assert rows.sum() > 50
        realized = float((residual[rows] > TOLERANCES[name]).mean())
        assert est.tiers[name].calibration_error == pytest.approx(realized)


def test_regressor_estimate_refuses_what_it_cannot_estimate(
    regressor: tuple[SafePredictor, Any, Any], tmp_path: Path
) -> None:
    sp, X, _ = regressor
    with pytest.raises(ConfigError, match="isotonic"):
        sp.estimate_performance(X, recalibration="temperature")
    g = np.random.default_rng(6)
    plain = SafePredictor(LinearRegression().fit(*_draw(g, 500)), log="off").calibrate(
        *_draw(g, 500)
    )
    with pytest.raises(ConfigError, match="max_error") as info:
        plain.estimate_performance(X)
    assert "tolerance" in str(info.value)
    sp.save(tmp_path / "state.json")
    loaded = SafePredictor.load(tmp_path / "state.json", model=sp.model)
    with pytest.raises(CalibrationRowsMissingError, match="calibrate"):
        loaded.estimate_performance(X)


# ------------------------------------------------------------------ studies
@pytest.mark.slow
def test_regression_estimates_track_realized_error_per_tier(setting: Setting) -> None:
    """One calibration set, 200 windows with the first input's mean moved by U(-1.5, 1.5).

    Every tenth window is a concept-shift window (the noise scaled by 1.6, the
    inputs unchanged): the negative control.
    """
    g = np.random.default_rng(11)
    calibration, errors = _fit(setting, g, 4000, 100, 0)
    dev: dict[str, list[float]] = {"auto": [], "quick": []}
    naive_dev: dict[str, list[float]] = {"auto": [], "quick": []}
    floor: dict[str, list[float]] = {"auto": [], "quick": []}
    concept: list[float] = []
    for k in range(RUNS):
        control = k % 10 == 0
        score, residual = setting.rows(g, 1000, float(g.uniform(-1.5, 1.5)), 1.6 if control else 1)
        codes = setting.codes(calibration, score)
        est = errors.estimate(score, codes)
        for code, tier in enumerate(("auto", "quick")):
            t = est.tiers[tier]
            rows = codes == code
            if t.estimated_error is None or rows.sum() < 30:
                continue
            assert t.interval is not None
            assert t.calibration_error is not None
            realized = float((residual[rows] > TOLERANCES[tier]).mean())
            if control:
                concept.append(abs(t.estimated_error - realized))
                continue
            dev[tier].append(abs(t.estimated_error - realized))
            naive_dev[tier].append(abs(t.calibration_error - realized))
            floor[tier].append(exact_floor(t.interval))
    assert_mae_near_floor(dev, naive_dev, floor, concept, ("auto", "quick"))
    for tier in ("auto", "quick"):
        assert len(dev[tier]) >= 100
        assert_beats_naive(dev[tier], naive_dev[tier])
    print(f"concept-shift control: MAE {float(np.mean(concept)):.4f} over {len(concept)}")


@pytest.mark.slow
def test_regression_interval_covers_over_calibration_draws(setting: Setting) -> None:
    """The interval's coverage over fresh calibration sets and shifted windows.

    Each run draws 3000 calibration rows (tiers certified, maps and their
    bootstrap refitted) and one window of 2000 rows with the first input's mean
    moved by U(-1.5, 1.5). Coverage is a mean of K Bernoulli indicators: its
    binomial Monte-Carlo standard error is sqrt(0.95 * 0.05 / K), so the check is
    coverage >= 0.95 - 3 se. Negative control: the same interval without the
    map's bootstrap variance (outcome noise only) falls below that bound.
    """
    g = np.random.default_rng(12)
    inside: dict[bool, list[bool]] = {True: [], False: []}
    for run in range(RUNS):
        calibration, errors = _fit(setting, g, 3000, 50, run)
        score, residual = setting.rows(g, 2000, float(g.uniform(-1.5, 1.5)))
        codes = setting.codes(calibration, score)
        correct, draws = errors.probabilities(score, codes)
        for with_map in (True, False):
            est = estimate_tiers(NAMES, codes, correct, correct_draws=draws if with_map else None)
            for code, name in enumerate(("auto", "quick")):
                rows = codes == code
                interval = est.tiers[name].interval
                if rows.sum() < 30 or interval is None:
                    continue
                realized = float((residual[rows] > TOLERANCES[name]).mean())
                inside[with_map].append(interval[0] <= realized <= interval[1])
    coverage = {k: float(np.mean(v)) for k, v in inside.items()}
    k = len(inside[True])
    bound = 0.95 - 3 * math.sqrt(0.95 * 0.05 / k)
    print(f"\ninterval coverage {coverage[True]:.3f} (outcome noise only: {coverage[False]:.3f}), "
          f"{k} window-tiers, bound {bound:.3f}")  # fmt: skip
    assert k >= 200
    assert coverage[True] >= bound
    assert coverage[False] < bound  # the map's own error matters: the check has teeth


def test_tolerance_errors_need_scored_calibration_rows() -> None:
    from safepredict.exceptions import CalibrationError

    nan = np.full(5, np.nan)
    with pytest.raises(CalibrationError, match="every row failed"):
        ToleranceErrors.fit(NAMES, TOLERANCES, nan, np.ones(5), np.zeros(5, dtype=np.intp))
