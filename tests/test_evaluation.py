"""Offline benchmark: curves and AURC against brute force, tiers, costs, replay."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import safepredict as sp
from safepredict.evaluation import (
    CostModel,
    ScoredData,
    apply_threshold,
    benchmark,
    binomial_interval,
    calibrate_policy,
    certified_threshold,
    certify_threshold,
    compare_policies,
    cost_curve,
    evaluate,
    evaluate_policy,
    load_decision_log,
    reliability,
    replay,
    risk_coverage,
    score_predictor,
    threshold_policies,
)
from safepredict.exceptions import ConfigError, InputSchemaError
from safepredict.tiers import certify_threshold as tiers_certify_threshold

# ----------------------------------------------------------------- brute force


def brute_curve(scores: np.ndarray, errors: np.ndarray) -> list[tuple[float, int, int]]:
    """(threshold, n_accepted, n_errors) for every distinct score, by direct counting."""
    out = []
    for t in sorted(set(scores.tolist()), reverse=True):
        acc = scores >= t
        out.append((t, int(acc.sum()), int(errors[acc].sum())))
    return out


def brute_aurc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Mean over rows of the selective risk when accepting every row scored >= its own."""
    return float(np.mean([errors[scores >= s].mean() for s in scores]))


def brute_optimal_aurc(errors: np.ndarray) -> float:
    """AURC of the oracle order (correct rows first), one row at a time."""
    ordered = np.sort(errors.astype(int))  # zeros (correct) first
    n = len(ordered)
    return float(np.mean([ordered[: k + 1].mean() for k in range(n)]))


small_inputs = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(
        # few distinct values, so ties are frequent
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(small_inputs)
def test_curve_and_aurc_match_brute_force_with_ties(data: tuple[list[int], list[bool]]) -> None:
    scores = np.array(data[0], dtype=float) / 6
    errors = np.array(data[1])
    curve = risk_coverage(scores, errors)
    expected = brute_curve(scores, errors)
    assert curve.thresholds.tolist() == [t for t, _, _ in expected]
    assert curve.n_accepted.tolist() == [k for _, k, _ in expected]
    assert curve.n_errors.tolist() == [e for _, _, e in expected]
    assert curve.aurc == pytest.approx(brute_aurc(scores, errors), abs=1e-12)
    assert curve.optimal_aurc == pytest.approx(brute_optimal_aurc(errors), abs=1e-12)
    assert curve.eaurc >= -1e-12


def test_aurc_without_ties_is_mean_of_top_k_risks() -> None:
    rng = np.random.default_rng(3)
    s = rng.permutation(50).astype(float)
    e = rng.uniform(size=50) < 0.3
    order = np.argsort(-s)
    expected = np.mean([e[order[: k + 1]].mean() for k in range(50)])
    assert risk_coverage(s, e).aurc == pytest.approx(expected)


def test_perfect_ranking_has_zero_eaurc_and_random_ranking_does_not() -> None:
    rng = np.random.default_rng(0)
    e = rng.uniform(size=2000) < 0.2
    assert risk_coverage(-e.astype(float) + rng.uniform(0, 0.1, 2000), e).eaurc == pytest.approx(
        0.0, abs=1e-12
    )
    assert risk_coverage(rng.uniform(size=2000), e).eaurc > 0.05


def test_nan_scores_rank_last() -> None:
    curve = risk_coverage([np.nan, 0.5, 0.9], [True, False, False])
    assert curve.n_accepted.tolist() == [1, 2, 3]
    assert curve.n_errors.tolist() == [0, 0, 1]


def test_tied_scores_are_accepted_together() -> None:
    curve = risk_coverage([0.8, 0.8, 0.8, 0.2], [0, 1, 0, 1])
    assert curve.coverage.tolist() == [0.75, 1.0]
    # a coverage target inside a tie never accepts more than asked
    assert curve.at_coverage([0.5])[0].coverage == 0.0
    assert curve.at_coverage([0.75])[0].risk == pytest.approx(1 / 3)


def test_at_coverage_and_at_risk_match_brute_force() -> None:
    rng = np.random.default_rng(5)
    s = rng.integers(0, 20, 300).astype(float)
    e = rng.uniform(size=300) < 0.4 * (1 - s / 20)
    curve = risk_coverage(s, e)
    points = brute_curve(s, e)
    for target in (0.1, 0.33, 0.5, 0.9, 1.0):
        ok = [p for p in points if p[1] / 300 <= target + 1e-12]
        got = curve.at_coverage([target])[0]
        assert got.n_accepted == (ok[-1][1] if ok else 0)
    for target in (0.05, 0.1, 0.2):
        ok = [p for p in points if p[2] / p[1] <= target + 1e-12]
        got = curve.at_risk([target])[0]
        assert got.n_accepted == (ok[-1][1] if ok else 0)


def test_bad_errors_are_rejected() -> None:
    with pytest.raises(ConfigError, match="errors must be booleans"):
        risk_coverage([0.1, 0.2], [0.5, 2])
    with pytest.raises(ConfigError, match="one value per row"):
        risk_coverage([0.1, 0.2], [True])


# ----------------------------------------------------------------- bands


@pytest.mark.parametrize(
    ("method", "scipy_method"), [("wilson", "wilson"), ("clopper-pearson", "exact")]
)
def test_bands_match_scipy(method: str, scipy_method: str) -> None:
    for k, n in [(0, 10), (3, 10), (10, 10), (7, 250), (1, 1)]:
        lo, hi = binomial_interval([k], [n], method=method)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method=scipy_method)
        assert lo[0] == pytest.approx(ci.low, abs=1e-9)
        assert hi[0] == pytest.approx(ci.high, abs=1e-9)
    lo, hi = binomial_interval([0], [0])
    assert math.isnan(lo[0])
    assert math.isnan(hi[0])


@pytest.mark.slow
def test_pointwise_band_covers_true_risk() -> None:
    # Scores uniform, P(error | s) = 0.4 (1 - s): the true risk of accepting s >= t is
    # 0.2 (1 - t). At t = 0.5 (about 250 of 500 rows accepted) the 95% Clopper-Pearson band
    # covers the truth with probability >= 0.95. Over 400 independent draws the observed
    # miss rate has sd <= sqrt(0.05 * 0.95 / 400) = 0.011, so 0.05 + 3 sd = 0.083 bounds it.
    rng = np.random.default_rng(11)
    misses = 0
    for _ in range(400):
        s = rng.uniform(size=500)
        e = rng.uniform(size=500) < 0.4 * (1 - s)
        curve = risk_coverage(s, e, band="clopper-pearson")
        j = int(np.searchsorted(-curve.thresholds, -0.5, side="right")) - 1
        t = curve.thresholds[j]
        truth = 0.2 * (1 - t)
        misses += not (curve.risk_lower[j] <= truth <= curve.risk_upper[j])
    assert misses / 400 <= 0.083


# ----------------------------------------------------------------- certification


@pytest.mark.slow
def test_certified_threshold_controls_risk_over_many_splits() -> None:
    # P(error | s) = 0.3 (1 - s) with s ~ U(0, 1): the true selective risk of s >= t is
    # 0.15 (1 - t). Learn-then-Test promises P(true risk > max_error) <= delta = 0.1.
    # Over 300 independent calibration sets the violation frequency has
    # sd <= sqrt(0.1 * 0.9 / 300) = 0.017; we allow delta + 3 sd = 0.152.
    rng = np.random.default_rng(2)
    violations = 0
    finite = 0
    for _ in range(300):
        s = rng.uniform(size=1000)
        e = rng.uniform(size=1000) < 0.3 * (1 - s)
        t = certify_threshold(s, e, max_error=0.05, delta=0.1).threshold
        if math.isfinite(t):
            finite += 1
            violations += 0.15 * (1 - t) > 0.05
    assert violations / 300 <= 0.152
    # not vacuous: many draws certify (measured 165/300 with the fallback-procedure LTT of
    # tiers.certify_threshold; power is the risk-tiers module's business, tested there)
    assert finite >= 100


def test_certify_threshold_is_the_tiers_procedure() -> None:
    rng = np.random.default_rng(9)
    s = rng.uniform(size=3000)
    e = rng.uniform(size=3000) < 0.3 * (1 - s)
    expected = tiers_certify_threshold(s, e, max_error=0.04, delta=0.05)
    assert certify_threshold(s, e, max_error=0.04, delta=0.05) == expected


def test_certify_threshold_refuses_on_tiny_data() -> None:
    cert = certify_threshold([0.9, 0.8], [False, False], max_error=0.05, delta=0.05)
    assert cert.threshold == math.inf
    assert not cert.certified


def test_certified_threshold_is_a_deprecated_alias() -> None:
    rng = np.random.default_rng(9)
    s = rng.uniform(size=3000)
    e = rng.uniform(size=3000) < 0.3 * (1 - s)
    expected = certify_threshold(s, e, max_error=0.04, delta=0.05).threshold
    with pytest.warns(DeprecationWarning, match=r"certify_threshold\(scores, errors"):
        assert certified_threshold(s, e, max_error=0.04, delta=0.05) == expected


# ----------------------------------------------------------------- costs


def test_cost_curve_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    s = rng.integers(0, 10, 200).astype(float)
    e = rng.uniform(size=200) < 0.5 * (1 - s / 10)
    cost = CostModel(cost_error=50, cost_review=2, cost_accept=0.1)
    cc = cost_curve(risk_coverage(s, e), cost)
    for t, value in zip(cc.thresholds, cc.cost_per_1000, strict=True):
        acc = s >= t
        expected = (0.1 * acc.sum() + 50 * e[acc].sum() + 2 * (~acc).sum()) / 200 * 1000
        assert value == pytest.approx(expected)
    best = cc.optimal()
    assert best["cost_per_1000"] == pytest.approx(cc.cost_per_1000.min())


def test_cost_model_validates() -> None:
    with pytest.raises(ConfigError, match="cost_error must be a finite number >= 0"):
        CostModel(cost_error=-1, cost_review=2)
    with pytest.raises(ConfigError, match="tier_costs"):
        CostModel(cost_error=1, cost_review=2, tier_costs={"auto": float("nan")})


def test_reliability_diagram() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1, 20000)
    correct = rng.uniform(size=20000) < p  # perfectly calibrated
    r = reliability(p, correct)
    assert r["ece"] < 0.02
    assert sum(r["count"]) == 20000


# ----------------------------------------------------------------- real predictor


@pytest.fixture(scope="module")
def wine_predictor(wine_hgb: Any) -> sp.SafePredictor:
    policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "min_confidence": 0.9},
            {"name": "maybe", "action": "review", "max_set_size": 2},
            {"name": "human", "action": "abstain"},
        ]
    }
    return sp.SafePredictor(wine_hgb.model, tiers=policy, log="off", random_state=0).calibrate(
        wine_hgb.X_cal, wine_hgb.y_cal
    )


def test_score_predictor_on_real_model(wine_predictor: sp.SafePredictor, wine_hgb: Any) -> None:
    data = score_predictor(wine_predictor, wine_hgb.X_test, wine_hgb.y_test)
    decisions = wine_predictor.decide(wine_hgb.X_test)
    y = wine_hgb.y_test.to_numpy()
    assert np.array_equal(data.errors, decisions.predictions.astype(int) != y)
    assert np.allclose(data.scores["conformal"], decisions.confidence)
    proba = wine_hgb.model.predict_proba(wine_hgb.X_test)
    assert np.allclose(data.scores["top_prob"], proba.max(axis=1))
    entropy = -(proba * np.log(np.clip(proba, 1e-300, 1))).sum(axis=1)
    assert np.allclose(data.scores["entropy"], -entropy)
    sizes = decisions.set_sizes
    assert sizes is not None
    assert np.array_equal(data.set_size, sizes)
    covered = [yt in d.prediction_set for yt, d in zip(y, decisions, strict=True)]
    assert np.array_equal(data.covered, covered)


def test_policy_evaluation_reproduces_the_predictors_tiers(
    wine_predictor: sp.SafePredictor, wine_hgb: Any
) -> None:
    data = score_predictor(wine_predictor, wine_hgb.X_test, wine_hgb.y_test)
    decisions = wine_predictor.decide(wine_hgb.X_test)
    result = evaluate_policy(wine_predictor.policy_, data)
    counts = {row.tier: row.n for row in result.tiers if row.n}
    assert counts == decisions.counts()["tier"]
    accepted = decisions.actions == "accept"
    assert result.coverage == pytest.approx(accepted.mean())
    wrong = data.errors
    if accepted.any():
        assert result.accepted_error == pytest.approx(wrong[accepted].mean())


def test_benchmark_end_to_end(wine_predictor: sp.SafePredictor, wine_hgb: Any) -> None:
    ev = benchmark(
        wine_predictor,
        wine_hgb.X_test,
        wine_hgb.y_test,
        X_cal=wine_hgb.X_cal,
        y_cal=wine_hgb.y_cal,
        policies=threshold_policies([0.5, 0.8, 0.95]),
        cost=CostModel(cost_error=50, cost_review=2),
    )
    assert set(ev.curves) == {"conformal", "top_prob", "margin", "entropy"}
    assert ev.policies.results[0].name == "current"
    assert len(ev.policies.results) == 4
    frame = ev.policies.to_frame()
    assert list(frame["policy"])[1:] == [
        "min_confidence=0.5",
        "min_confidence=0.8",
        "min_confidence=0.95",
    ]
    assert frame["coverage"].is_monotonic_decreasing
    summary = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
    assert summary["conformal"]["coverage"] == pytest.approx(
        np.mean(score_predictor(wine_predictor, wine_hgb.X_test, wine_hgb.y_test).covered)
    )
    assert summary["conformal"]["sweep"][0]["confidence_level"] == 0.5
    assert not ev.in_sample


def test_policy_with_max_error_uses_certification(iris_lr: Any) -> None:
    rng = np.random.default_rng(0)
    n = 6000
    s = rng.uniform(size=n)
    data = ScoredData.from_arrays(
        rng.uniform(size=n) < 0.3 * (1 - s), {"conformal": s}, set_size=np.ones(n, dtype=int)
    )
    cal, test = data.take(np.arange(3000)), data.take(np.arange(3000, n))
    policy = sp.TierPolicy.from_dict(
        {
            "delta": 0.05,
            "tiers": [
                {"name": "auto", "action": "accept", "max_error": 0.05},
                {"name": "human", "action": "review"},
            ],
        }
    )
    tier_cal = calibrate_policy(policy, cal)
    t = tier_cal.thresholds["auto"]
    cert = certify_threshold(s[:3000], data.errors[:3000], max_error=0.05, delta=0.05)
    assert t == cert.threshold
    result = evaluate_policy(policy, test, calibration=tier_cal)
    assert result.coverage == pytest.approx(np.mean(s[3000:] >= t))
    auto = result.tiers[0]
    assert auto.certified is True
    assert auto.max_error == 0.05
    # uncalibrated: the risk-controlled tier accepts nothing
    assert evaluate_policy(policy, test).coverage == 0.0


def test_evaluate_reports_naive_next_to_certified() -> None:
    rng = np.random.default_rng(4)
    s = rng.uniform(size=8000)
    data = ScoredData.from_arrays(rng.uniform(size=8000) < 0.3 * (1 - s), {"top_prob": s})
    ev = evaluate(
        data.take(np.arange(4000, 8000)),
        calibration=data.take(np.arange(4000)),
        error_targets=[0.02, 0.05],
        cost=CostModel(50, 2),
    )
    for op in ev.operating_points:
        assert op["certified"]["coverage"] <= op["empirical"]["coverage"]
        assert op["certified"]["method"] == "certified"
    naive = apply_threshold(
        s[4000:], data.errors[4000:], ev.operating_points[0]["empirical"]["threshold"]
    )
    assert naive.coverage == ev.operating_points[0]["empirical"]["coverage"]
    assert "top_prob" in ev.cost_curves


def test_compare_policies_table_from_toml_files(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text(
        '[[tiers]]\nname="auto"\naction="accept"\nmin_confidence=0.9\n[[tiers]]\nname="h"\naction="review"\n'
    )
    b = tmp_path / "b.toml"
    b.write_text(
        '[[tiers]]\nname="auto"\naction="accept"\nmax_set_size=1\n[[tiers]]\nname="h"\naction="abstain"\n'
    )
    data = ScoredData.from_arrays(
        [0, 0, 1, 1], {"conformal": [0.99, 0.95, 0.8, 0.4]}, set_size=[1, 1, 1, 2]
    )
    table = compare_policies(
        {"a": sp.TierPolicy.from_path(a), "b": sp.TierPolicy.from_path(b)},
        data,
        cost=CostModel(cost_error=10, cost_review=1),
    )
    frame = table.to_frame()
    assert frame["coverage"].tolist() == [0.5, 0.75]
    assert frame["cost_per_1000"].tolist() == [500.0, pytest.approx((10 + 1) / 4 * 1000)]
    tiers = table.tiers_frame()
    assert set(tiers["policy"]) == {"a", "b"}
    assert json.dumps(table.to_dict())


# ----------------------------------------------------------------- replay


@pytest.fixture
def wine_log(tmp_path: Path, wine_predictor: sp.SafePredictor, wine_hgb: Any) -> tuple[Path, Path]:
    """A real decision log, written by the library's event emitter through structlog."""
    import copy

    import structlog

    log = tmp_path / "decisions.jsonl"
    with log.open("w") as fh:
        fh.write(json.dumps({"event": "other.app.event", "n": 3}) + "\n")
        logging_predictor = copy.copy(wine_predictor)
        logging_predictor.log = "decision"
        logging_predictor.logger = structlog.wrap_logger(
            structlog.WriteLogger(fh), processors=[structlog.processors.JSONRenderer()]
        )
        decisions = logging_predictor.decide(wine_hgb.X_test)
        assert logging_predictor.events.dropped == 0
    outcomes = tmp_path / "outcomes.csv"
    with outcomes.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["decision_id", "y_true"])
        for d, y in zip(decisions, wine_hgb.y_test.to_numpy(), strict=True):
            w.writerow([d.decision_id, int(y)])
    return log, outcomes


def test_log_replay_matches_direct_scoring(
    wine_log: tuple[Path, Path], wine_predictor: sp.SafePredictor, wine_hgb: Any
) -> None:
    log, outcomes = wine_log
    replayed = load_decision_log(log, outcomes)
    direct = score_predictor(wine_predictor, wine_hgb.X_test, wine_hgb.y_test)
    assert np.array_equal(replayed.errors, direct.errors)
    assert np.array_equal(replayed.set_size, direct.set_size)
    assert np.array_equal(replayed.covered, direct.covered)
    for name in ("conformal", "top_prob", "margin", "entropy"):
        assert np.allclose(replayed.scores[name], direct.scores[name])
    # what-if: the same policy on the replayed log gives the logged tiers
    result = evaluate_policy(wine_predictor.policy_, replayed)
    assert {r.tier: r.n for r in result.tiers if r.n} == wine_predictor.decide(
        wine_hgb.X_test
    ).counts()["tier"]
    # a gzip-compressed log (rotated logs often are) replays to the same data
    import gzip

    packed = log.with_name(log.name + ".gz")
    packed.write_bytes(gzip.compress(log.read_bytes()))
    unpacked = load_decision_log(packed, outcomes)
    assert np.array_equal(unpacked.errors, replayed.errors)
    assert np.allclose(unpacked.scores["conformal"], replayed.scores["conformal"])


def test_replay_what_if(wine_log: tuple[Path, Path]) -> None:
    log, outcomes = wine_log
    ev = replay(
        log,
        outcomes,
        policies=threshold_policies([0.5, 0.99]),
        cost=CostModel(50, 2),
        calibration_fraction=0,
    )
    names = [r.name for r in ev.policies.results]
    assert names == ["as logged", "min_confidence=0.5", "min_confidence=0.99"]
    assert ev.in_sample
    assert ev.policies.results[1].coverage >= ev.policies.results[2].coverage
    ev_split = replay(log, outcomes, calibration_fraction=0.5)
    assert ev_split.n_test + ev_split.n_calibration == ev.n_test


def test_replay_reports_bad_lines_and_missing_outcomes(tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_text(
        '{"decision_id": "a", "prediction": 1, "tier": "t", "action": "accept"}\nnot json\n'
    )
    with pytest.raises(InputSchemaError, match="line 2"):
        load_decision_log(log, {"a": 1})
    log.write_text('{"decision_id": "a", "prediction": 1, "tier": "t", "action": "accept"}\n')
    with pytest.raises(InputSchemaError, match="none of the 1 logged decisions has an outcome"):
        load_decision_log(log, {"b": 1})
    log.write_text('{"decision_id": "a", "prediction": 1}\n')
    with pytest.raises(InputSchemaError, match=r"lacks \['tier', 'action'\]"):
        load_decision_log(log, {"a": 1})


# ----------------------------------------------------------------- regression


def test_regression_benchmark_with_tolerance(diabetes_rf: Any) -> None:
    predictor = sp.SafePredictor(diabetes_rf.model, log="off").calibrate(
        diabetes_rf.X_cal, diabetes_rf.y_cal
    )
    data = score_predictor(predictor, diabetes_rf.X_test, diabetes_rf.y_test, tolerance=50.0)
    y = diabetes_rf.y_test.to_numpy()
    y_hat = diabetes_rf.model.predict(diabetes_rf.X_test)
    assert np.array_equal(data.errors, np.abs(y - y_hat) > 50.0)
    decisions = predictor.decide(diabetes_rf.X_test)
    lo, hi = decisions.intervals[:, 0], decisions.intervals[:, 1]
    assert np.array_equal(data.covered, (lo <= y) & (y <= hi))
    ev = evaluate(data, policies={"default": predictor.policy_})
    assert ev.conformal["mean_interval_width"] == pytest.approx(np.mean(hi - lo))
    assert ev.conformal["coverage"] == pytest.approx(np.mean((lo <= y) & (y <= hi)))
    assert ev.policies.results[0].coverage == pytest.approx(np.mean(decisions.actions == "accept"))
    with pytest.raises(ConfigError, match="tolerance"):
        evaluate(score_predictor(predictor, diabetes_rf.X_test, diabetes_rf.y_test))


def test_regression_max_error_policy_matches_the_predictor(diabetes_rf: Any) -> None:
    # A risk-controlled regression tier, certified by the predictor and by the evaluation
    # on the same calibration rows, must give the same threshold and the same tiers.
    policy = {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.5, "tolerance": 60.0},
            {"name": "human", "action": "review"},
        ],
    }
    predictor = sp.SafePredictor(diabetes_rf.model, tiers=policy, log="off").calibrate(
        diabetes_rf.X_cal, diabetes_rf.y_cal
    )
    cal = score_predictor(predictor, diabetes_rf.X_cal, diabetes_rf.y_cal, tolerance=60.0)
    test = score_predictor(predictor, diabetes_rf.X_test, diabetes_rf.y_test, tolerance=60.0)
    tier_cal = calibrate_policy(predictor.policy_, cal)
    assert math.isfinite(predictor.tier_calibration_.thresholds["auto"])
    assert tier_cal.thresholds["auto"] == predictor.tier_calibration_.thresholds["auto"]
    result = evaluate_policy(predictor.policy_, test, calibration=tier_cal)
    counts = predictor.decide(diabetes_rf.X_test).counts()["tier"]
    assert {r.tier: r.n for r in result.tiers if r.n} == counts


def test_classification_max_error_policy_matches_the_predictor(wine_hgb: Any) -> None:
    policy = {
        "delta": 0.2,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.3},
            {"name": "human", "action": "review"},
        ],
    }
    predictor = sp.SafePredictor(wine_hgb.model, tiers=policy, log="off").calibrate(
        wine_hgb.X_cal, wine_hgb.y_cal
    )
    cal = score_predictor(predictor, wine_hgb.X_cal, wine_hgb.y_cal)
    tier_cal = calibrate_policy(predictor.policy_, cal)
    expected = predictor.tier_calibration_.thresholds["auto"]
    assert math.isfinite(expected)
    assert tier_cal.thresholds["auto"] == expected
    test = score_predictor(predictor, wine_hgb.X_test, wine_hgb.y_test)
    result = evaluate_policy(predictor.policy_, test, calibration=tier_cal)
    counts = predictor.decide(wine_hgb.X_test).counts()["tier"]
    assert {r.tier: r.n for r in result.tiers if r.n} == counts
