"""Shift-aware calibration: behaviour of adapt_to, estimate_performance and the weights.

The statistical studies are in tests/test_shift_studies.py.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import SafePredictor
from safepredict.conformal import EPSILON, ClassificationConformal, RegressionConformal
from safepredict.exceptions import (
    CalibrationError,
    ConfigError,
    NotCalibratedError,
    PersistenceError,
    SafePredictError,
)
from safepredict.shift import (
    CalibrationRowsMissingError,
    DomainWeights,
    ShiftTooLargeError,
    WeightedClassificationConformal,
    estimate_label_shift,
    weighted_p_values,
    weighted_quantiles,
)

TIERS = {
    "tiers": [
        {"name": "auto", "action": "accept", "max_error": 0.05},
        {"name": "human", "action": "review"},
    ]
}


@pytest.fixture(scope="module")
def cancer() -> dict[str, Any]:
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[::3], y[::3])
    return {"X": X, "y": y, "model": model}


@pytest.fixture(scope="module")
def digits_sp() -> tuple[SafePredictor, Any, Any]:
    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(X[::3], y[::3])
    sp = SafePredictor(model, log="off", tiers=TIERS).calibrate(X[1::3], y[1::3])
    return sp, X[2::3], y[2::3]


# ------------------------------------------------------------------ the weighted primitives
@pytest.mark.parametrize("method", ["lac", "aps"])
def test_equal_weights_give_back_split_conformal_p_values(method: str) -> None:
    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(X[::3], y[::3])
    base = ClassificationConformal.calibrate(model, X[1::3], y[1::3], method=method, random_state=0)
    proba_cal = model.predict_proba(X[1::3])
    weighted = WeightedClassificationConformal.from_base(
        base, proba_cal, y[1::3], np.ones(len(y[1::3])), class_weights=np.ones(10)
    )
    proba = model.predict_proba(X[2::3])
    if method == "lac":  # same scores as MAPIE's (1 - p_y): the same p-values, bit for bit
        np.testing.assert_array_equal(weighted.p_values(proba), base.p_values(proba))
        np.testing.assert_array_equal(weighted.predict_set(proba), base.predict_set(proba))
    else:  # non-randomized APS scores: (1 + #{s_i >= t}) / (n + 1), top label always kept
        p = weighted.p_values(proba)
        n = len(y[1::3])
        np.testing.assert_allclose(p * (n + 1), np.round(p * (n + 1)), atol=1e-9)
        assert (p[np.arange(len(p)), proba.argmax(axis=1)] == 1.0).all()


def test_equal_weights_give_back_the_regression_quantile() -> None:
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X[:200], y[:200])
    base = RegressionConformal.calibrate(
        model, X[200:400], y[200:400], method="absolute", confidence_level=0.9
    )
    scores = np.abs(y[200:400] - model.predict(X[200:400]))
    q = weighted_quantiles(scores, np.ones(200), np.ones(3), 0.9)
    np.testing.assert_array_equal(q, np.full(3, base.quantile))


def test_weighted_p_value_counts_the_test_weight_and_tolerance() -> None:
    s = np.array([0.1, 0.2, 0.3])
    w = np.array([1.0, 2.0, 3.0])
    # t = 0.2: scores >= 0.2 weigh 5, test weight 4: (5 + 4) / (6 + 4)
    assert weighted_p_values(s, w, np.array([0.2]), np.array([4.0]))[0] == pytest.approx(0.9)
    # a score within the tolerance below t counts (MAPIE's LAC rule)
    p = weighted_p_values(s, w, np.array([0.1 + EPSILON / 2]), np.ones(1), tolerance=EPSILON)
    assert p[0] == pytest.approx(1.0)


def test_domain_weights_are_clipped_normalized_and_follow_the_shift() -> None:
    g = np.random.default_rng(0)
    cal, prod = g.normal(size=(3000, 2)), g.normal(size=(3000, 2)) + np.array([1.0, 0.0])
    dw = DomainWeights.fit(cal, prod, max_weight=4.0)
    w = dw.calibration_weights
    assert w.max() <= 4.0
    assert dw.n_clipped > 0
    # true ratio exp(x0 - 1/2): the weights grow with x0 and not with x1
    assert np.corrcoef(w, cal[:, 0])[0, 1] > 0.7
    assert abs(np.corrcoef(w, cal[:, 1])[0, 1]) < 0.1
    assert dw.effective_sample_size < 0.8 * len(cal)
    with pytest.raises(ConfigError, match="max_weight"):
        DomainWeights.fit(cal, prod, max_weight=1.0)
    with pytest.raises(ConfigError, match="production rows"):
        DomainWeights.fit(cal, prod[:1])


@pytest.mark.parametrize("method", ["bbse", "em"])
def test_label_shift_priors_recovered(method: str) -> None:
    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(X[::3], y[::3])
    g = np.random.default_rng(0)
    pool = np.arange(len(y))[2::3]
    factor = np.where(y[pool] < 3, 3.0, 1.0)  # classes 0-2 three times as frequent
    prod = g.choice(pool, size=3000, p=factor / factor.sum())
    ls = estimate_label_shift(
        model.predict_proba(X[1::3]), y[1::3], model.predict_proba(X[prod]), method=method
    )
    truth = np.bincount(y[prod], minlength=10) / len(prod)
    # the sampled priors are known exactly; the estimate's error is driven by the
    # confusion matrix of 599 calibration rows: a loose 0.15 in L1 (study: 0.2 for 400 rows)
    assert np.abs(ls.production_priors - truth).sum() < 0.15
    # true ratios: 3 / 16 over 1 / 10 = 1.875 for classes 0-2, 1 / 16 over 1 / 10 for the rest
    assert (ls.ratios[:3] > 1.5).all()
    assert (ls.ratios[3:] < 0.9).all()
    with pytest.raises(ConfigError, match="bbse"):
        estimate_label_shift(model.predict_proba(X[1::3]), y[1::3], X[:1], method="kmm")


# ------------------------------------------------------------------ adapt_to
def test_adapt_to_returns_a_new_predictor_and_leaves_the_original(
    digits_sp: tuple[SafePredictor, Any, Any],
) -> None:
    sp, X, _ = digits_sp
    before = sp.decide(X[:50])
    conformal, tiers = sp.conformal_, sp.tier_calibration_
    prod = X[X[:, 20] > 8]
    adapted = sp.adapt_to(prod)
    assert adapted is not sp
    assert sp.conformal_ is conformal
    assert sp.tier_calibration_ is tiers
    assert not hasattr(sp, "shift_")
    np.testing.assert_array_equal(sp.decide(X[:50]).confidence, before.confidence)
    report = adapted.shift_
    assert report.shift == "covariate"
    assert report.n_production == len(prod)
    assert 0 < report.effective_sample_size < report.n_calibration
    assert report.tiers["auto"]["weighted"] is True
    json.dumps(report.to_dict())
    d = adapted.decide(prod)
    # one meaning per number: the set holds no label but the prediction <=> confidence >= level
    only_pred = ~(d.set_mask & ~np.eye(10, dtype=bool)[np.argmax(d.probabilities, 1)]).any(1)
    np.testing.assert_array_equal(only_pred, d.confidence >= sp.confidence_level)
    # the shifted rows get different confidence from the unweighted state
    assert not np.allclose(d.confidence, sp.decide(prod).confidence)


def test_adapt_to_label_shift_reports_priors(cancer: dict[str, Any]) -> None:
    X, y, model = cancer["X"], cancer["y"], cancer["model"]
    sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    pool = np.arange(len(y))[2::3]
    g = np.random.default_rng(0)
    odds = np.where(y[pool] == 0, 3.0, 1.0)  # malignant three times as frequent
    prod = g.choice(pool, size=600, p=odds / odds.sum())
    adapted = sp.adapt_to(X[prod], shift="label", label_method="em")
    priors = adapted.shift_.production_priors
    assert priors is not None
    assert priors["0"] > adapted.shift_.calibration_priors["0"] + 0.15
    assert adapted.shift_.method == "em"
    assert len(adapted.decide(X[prod[:20]])) == 20


def test_adapt_to_regression_gives_per_row_intervals() -> None:
    X, y = load_diabetes(return_X_y=True)
    sp = SafePredictor(Ridge().fit(X[:150], y[:150]), log="off").calibrate(X[150:350], y[150:350])
    prod = X[350:][X[350:, 2] > 0]  # heavier patients
    adapted = sp.adapt_to(prod)
    widths = np.diff(adapted.decide(prod).intervals, axis=1).ravel()
    plain = np.diff(sp.decide(prod).intervals, axis=1).ravel()
    assert np.ptp(plain) < 1e-9  # absolute score: one width for every row
    assert np.ptp(widths[np.isfinite(widths)]) > 0  # weighted: a quantile per row
    with pytest.raises(ConfigError, match="classifier"):
        sp.adapt_to(prod, shift="label")


def test_adapt_to_refuses_a_shift_too_large(cancer: dict[str, Any]) -> None:
    X, y, model = cancer["X"], cancer["y"], cancer["model"]
    tiers = {"tiers": [{"name": "auto", "action": "accept", "max_error": 0.01},
                       {"name": "human", "action": "review"}]}  # fmt: skip
    sp = SafePredictor(model, log="off", tiers=tiers).calibrate(X[1::3], y[1::3])
    with pytest.raises(ShiftTooLargeError, match=r"worth .* rows") as info:
        sp.adapt_to(X[2::3])
    assert isinstance(info.value, CalibrationError)
    assert "need at least 299" in str(info.value)


def test_adapt_to_needs_the_calibration_rows_which_are_never_saved(
    cancer: dict[str, Any], tmp_path: Path
) -> None:
    X, y, model = cancer["X"], cancer["y"], cancer["model"]
    sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    path = sp.save(tmp_path / "sp.json")
    assert b"_calibration_rows" not in pickle.dumps(sp)
    loaded = SafePredictor.load(path, model=model)
    for call in (lambda: loaded.adapt_to(X[2::3]), lambda: loaded.estimate_performance(X[:5])):
        with pytest.raises(CalibrationRowsMissingError, match=r"calibrate\(X_cal, y_cal\)"):
            call()
    assert issubclass(CalibrationRowsMissingError, NotCalibratedError)
    adapted = sp.adapt_to(X[2::3])
    with pytest.raises(PersistenceError, match="adapt_to again"):
        adapted.save(tmp_path / "adapted.json")
    with pytest.raises(NotCalibratedError):
        SafePredictor(model, log="off").adapt_to(X[:10])


def test_adapt_to_rejects_bad_arguments(cancer: dict[str, Any]) -> None:
    X, y, model = cancer["X"], cancer["y"], cancer["model"]
    sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    with pytest.raises(ConfigError, match="'covariate'"):
        sp.adapt_to(X[2::3], shift="concept")
    with pytest.raises(ConfigError, match="max_weight"):
        sp.adapt_to(X[2::3], max_weight=0.5)
    with pytest.raises(SafePredictError, match="could not be fitted"):
        sp.adapt_to(X[2::3], domain_classifier=Ridge())  # no predict_proba


# ------------------------------------------------------------------ estimate_performance
def test_estimate_performance_per_tier(digits_sp: tuple[SafePredictor, Any, Any]) -> None:
    sp, X, _ = digits_sp
    est = sp.estimate_performance(X)
    assert est.assumption.startswith("no concept shift")
    assert set(est.tiers) == {"auto", "human", "guard"}
    d = sp.decide(X)
    names = np.asarray(d.tier_names, dtype=object)[d.tier_codes]
    for tier, t in est.tiers.items():
        assert t.n_rows == int((names == tier).sum())
        if t.n_rows:
            assert t.estimated_error is not None
            assert t.interval is not None
            assert t.interval[0] <= t.estimated_error <= t.interval[1]
    json.dumps(est.to_dict())
    temp = sp.estimate_performance(X, recalibration="temperature")
    assert temp.method == "temperature"
    with pytest.raises(ConfigError, match="isotonic"):
        sp.estimate_performance(X, recalibration="platt")
    with pytest.raises(ConfigError, match="level"):
        sp.estimate_performance(X, level=95)


def test_estimate_performance_of_a_regressor_needs_a_max_error_tier() -> None:
    """A regression error is |y - y_hat| > tolerance: only max_error tiers define one.

    The regression estimates themselves: tests/test_shift_regression.py.
    """
    X, y = load_diabetes(return_X_y=True)
    sp = SafePredictor(Ridge().fit(X[:150], y[:150]), log="off").calibrate(X[150:350], y[150:350])
    with pytest.raises(ConfigError, match="max_error tiers"):
        sp.estimate_performance(X[350:])


def test_adapt_to_regression_cqr_and_residual_normalized() -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    X, y = load_diabetes(return_X_y=True)
    quantiles = [
        GradientBoostingRegressor(loss="quantile", alpha=a, n_estimators=50, random_state=0).fit(
            X[:150], y[:150]
        )
        for a in (0.05, 0.5, 0.95)
    ]
    cqr = SafePredictor(
        quantiles[1], log="off", conformity_score="cqr", quantile_models=quantiles
    ).calibrate(X[150:350], y[150:350])
    prod = X[350:][X[350:, 2] > 0]
    bounds = cqr.adapt_to(prod).decide(prod).intervals
    base = cqr.decide(prod).intervals
    ok = np.isfinite(bounds).all(axis=1)
    assert ok.any()
    # same quantile models: the weighted interval differs from the unweighted by a shift
    # of both ends, never by reordering them
    assert (bounds[ok, 0] <= bounds[ok, 1]).all()
    assert not np.allclose(bounds[ok], base[ok])
    normalized = SafePredictor(
        Ridge().fit(X[:150], y[:150]), log="off", conformity_score="residual_normalized"
    ).calibrate(X[150:350], y[150:350])
    with pytest.raises(ConfigError, match="'absolute' and 'cqr'"):
        normalized.adapt_to(prod)


def test_adapt_to_refuses_what_it_cannot_weight() -> None:
    """Mondrian/smoothed sets and non-tabular inputs are refused, never silently unweighted."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from safepredict import SafePredictor
    from safepredict.exceptions import ConfigError

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    for kwargs in ({"conditional": "class"}, {"smoothed": True}):
        sp = SafePredictor(model, log="off", guards="off", **kwargs).calibrate(X[1::2], y[1::2])
        with pytest.raises(ConfigError, match="Mondrian"):
            sp.adapt_to(X[1::2])


def test_correctness_map_isotonic_matches_scikit_learn_and_bootstrap_varies() -> None:
    """The weighted PAV fit equals IsotonicRegression(clip); bootstrap refits differ, seeded."""
    from sklearn.isotonic import IsotonicRegression

    from safepredict.shift.performance import CorrectnessMap

    rng = np.random.default_rng(3)
    top = np.round(rng.uniform(0.5, 1.0, size=2000), 3)  # ties, as real scores have
    right = rng.uniform(size=2000) < top**2
    proba = np.column_stack([top, 1 - top])
    y_index = np.where(right, 0, 1)
    grid = np.column_stack([np.linspace(0.4, 1.0, 61), 1 - np.linspace(0.4, 1.0, 61)])
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(top, right)
    ours = CorrectnessMap.fit(proba, y_index).correct(grid)
    np.testing.assert_allclose(ours, iso.predict(grid.max(axis=1)), atol=1e-12)
    draws = CorrectnessMap.bootstrap(proba, y_index, n_boot=5, seed=1)
    again = CorrectnessMap.bootstrap(proba, y_index, n_boot=5, seed=1)
    values = np.stack([d.correct(grid) for d in draws])
    np.testing.assert_array_equal(values, np.stack([d.correct(grid) for d in again]))
    assert float(values.std(axis=0).max()) > 0.01  # the refits move
    with pytest.raises(ConfigError, match="isotonic"):
        CorrectnessMap.fit(proba, y_index, method="platt")
