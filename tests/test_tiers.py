"""Risk-controlled (``max_error``) tiers: certification, sharing of delta, budget gate.

The validity study at the bottom checks the finite-sample guarantee over many
random calibration draws on real models and bundled/generated data.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    make_classification,
)
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import SafePredictor
from safepredict.config import Tier, TierPolicy
from safepredict.conformal import ClassificationConformal
from safepredict.exceptions import ConfigError, NotCalibratedError
from safepredict.tiers import (
    CertifiedThreshold,
    TierCalibration,
    TierInputs,
    assign_tiers,
    binomial_p_value,
    calibrate_tiers,
    certify_threshold,
    clopper_pearson,
    rows_needed,
)

# ---------------------------------------------------------------- the bound


@pytest.mark.parametrize("a", [0.005, 0.01, 0.02, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("delta", [0.01, 0.05, 0.1, 0.2])
def test_rows_needed_is_the_smallest_n_that_certifies_with_zero_errors(
    a: float, delta: float
) -> None:
    n = rows_needed(a, delta)
    assert float(binomial_p_value(0, n, a)) <= delta
    assert float(binomial_p_value(0, n - 1, a)) > delta
    # the Clopper-Pearson bound after 0 errors in n rows is <= a exactly then
    assert clopper_pearson(0, n, 1 - delta)[1] <= a + 1e-12


def test_upper_bound_and_p_value_agree() -> None:
    # p-value <= delta  <=>  one-sided (1 - delta) Clopper-Pearson bound <= a
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(20, 2000))
        k = int(rng.integers(0, max(1, n // 10)))
        a, delta = 0.05, 0.1
        p_ok = float(binomial_p_value(k, n, a)) <= delta
        ub_ok = clopper_pearson(k, n, 1 - delta)[1] <= a
        assert p_ok == ub_ok


def _synthetic(n: int, seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=n)
    errors = rng.uniform(size=n) < 0.25 * (1 - scores) ** 2
    return scores, errors


def test_certified_threshold_keeps_the_bound_on_calibration_rows() -> None:
    scores, errors = _synthetic(3000)
    res = certify_threshold(scores, errors, max_error=0.05, delta=0.1)
    assert res.certified
    accepted = scores >= res.threshold
    assert accepted.sum() == res.n_accepted
    assert errors[accepted].sum() == res.n_errors
    assert res.upper_bound <= 0.05
    assert res.n_errors / res.n_accepted < 0.05


def test_threshold_grid_does_not_depend_on_labels() -> None:
    # The candidates are built from the scores only: whatever the labels, the
    # chosen threshold is one of the score values, and relabelling never
    # produces a threshold outside the label-free candidate list.
    scores, errors = _synthetic(2000)
    rng = np.random.default_rng(3)
    chosen = set()
    for _ in range(30):
        res = certify_threshold(scores, rng.permutation(errors), max_error=0.1, delta=0.1)
        if res.certified:
            chosen.add(res.threshold)
    assert chosen <= set(scores.tolist())


def test_clean_top_rows_give_power_from_the_start() -> None:
    # A 97%-accurate model whose errors sit at low scores: the first
    # hypothesis is testable (enough rows), so most rows are accepted.
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=1000)
    errors = scores < 0.03
    res = certify_threshold(scores, errors, max_error=0.02, delta=0.1)
    assert res.certified
    assert res.acceptance_rate > 0.9


def test_an_error_among_the_most_confident_rows_does_not_block_everything() -> None:
    # Fixed-sequence testing from the strictest threshold would stop at once
    # if the most confident rows hold an error; the fallback procedure still
    # certifies looser thresholds from the next anchor.
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=2000)
    errors = rng.uniform(size=2000) < 0.01
    top = np.argsort(-scores)[:3]
    errors[top] = True
    res = certify_threshold(scores, errors, max_error=0.05, delta=0.1)
    assert res.certified
    assert res.acceptance_rate > 0.8


def test_too_few_rows_cannot_certify_and_reports_rows_needed() -> None:
    scores, _ = _synthetic(100)
    res = certify_threshold(scores, np.zeros(100, bool), max_error=0.01, delta=0.05)
    assert not res.certified
    assert math.isinf(res.threshold)
    assert res.needed_n == rows_needed(0.01, 0.05) == 299
    assert res.n_accepted == 0


def test_non_finite_scores_are_never_accepted() -> None:
    scores, _ = _synthetic(1000)
    scores[:50] = np.nan
    res = certify_threshold(scores, np.zeros(1000, bool), max_error=0.05, delta=0.1)
    assert res.certified
    assert res.n_accepted == 950


def test_certified_threshold_state_round_trip() -> None:
    scores, errors = _synthetic(500)
    for res in (
        certify_threshold(scores, errors, max_error=0.1, delta=0.1),
        certify_threshold(scores[:10], errors[:10], max_error=0.1, delta=0.1),
    ):
        state = json.loads(json.dumps(res.to_state()))
        assert CertifiedThreshold.from_state(state) == res


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="same length"):
        certify_threshold(np.ones(3), np.ones(4, bool), max_error=0.1, delta=0.1)


# ---------------------------------------------------------------- several tiers


def _two_tier_policy(delta: float = 0.1) -> TierPolicy:
    return TierPolicy(
        (
            Tier("auto", "accept", max_error=0.02),
            Tier("suggest", "review", max_error=0.10),
            Tier("human", "abstain"),
        ),
        delta=delta,
    )


def test_later_tier_is_calibrated_on_the_rows_earlier_tiers_leave() -> None:
    scores, errors = _synthetic(4000, seed=2)
    inputs = TierInputs("classification", scores, scores={"conformal": scores})
    cal = calibrate_tiers(_two_tier_policy(), inputs, errors)
    auto, suggest = cal.report["auto"], cal.report["suggest"]
    assert auto["certified"]
    assert suggest["certified"]
    # Bonferroni: each of the two risk-controlled tiers gets delta / 2
    assert auto["delta"] == pytest.approx(0.05)
    assert suggest["delta"] == pytest.approx(0.05)
    assert suggest["n_reaching"] == 4000 - auto["n_accepted"]
    # the suggest band: rows below the auto threshold, above its own
    codes, _ = assign_tiers(_two_tier_policy(), inputs, cal)
    in_suggest = codes == 1
    assert in_suggest.sum() == suggest["n_accepted"]
    assert errors[in_suggest].sum() == suggest["n_errors"]
    assert suggest["upper_bound"] <= 0.10
    assert np.all(scores[in_suggest] < cal.thresholds["auto"])


def test_per_class_certifies_each_predicted_class() -> None:
    rng = np.random.default_rng(4)
    n = 6000
    predicted = rng.choice(3, size=n, p=[0.6, 0.392, 0.008])  # class 2 is rare
    scores = rng.uniform(size=n)
    # class 1 is much less reliable than class 0
    p_err = np.where(predicted == 0, 0.02, 0.15) * (1 - scores)
    errors = rng.uniform(size=n) < p_err
    policy = TierPolicy(
        (Tier("auto", "accept", max_error=0.05, per_class=True), Tier("human", "abstain")),
        delta=0.1,
    )
    inputs = TierInputs(
        "classification", scores, scores={"conformal": scores}, predicted_class=predicted
    )
    cal = calibrate_tiers(policy, inputs, errors, n_classes=3, class_labels=["a", "b", "c"])
    t = cal.thresholds["auto"]
    assert t.shape == (3,)
    assert np.isfinite(t[0])
    assert np.isfinite(t[1])
    assert t[1] > t[0]  # the less reliable class needs a higher score
    assert np.isinf(t[2])  # ~48 rows < rows_needed(0.05, 0.1 / 3) = 67
    report = cal.report["auto"]
    assert report["classes"]["c"]["certified"] is False
    assert report["classes"]["a"]["delta"] == pytest.approx(0.1 / 3)
    assert any(w["class"] == "c" and w["reason"] == "budget" for w in cal.warnings)
    codes, reasons = assign_tiers(policy, inputs, cal)
    rare = np.flatnonzero(predicted == 2)
    assert np.all(codes[rare] == 1)
    assert all("uncertified:auto" in reasons[int(r)] for r in rare)
    for c in (0, 1):
        acc = (codes == 0) & (predicted == c)
        assert errors[acc].mean() <= 0.05


def test_tier_calibration_state_round_trip_and_pickle() -> None:
    scores, errors = _synthetic(3000, seed=5)
    predicted = (scores * 1000).astype(int) % 2
    inputs = TierInputs(
        "classification", scores, scores={"conformal": scores}, predicted_class=predicted
    )
    policy = TierPolicy(
        (
            Tier("auto", "accept", max_error=0.02, per_class=True),
            Tier("suggest", "review", max_error=0.2),
            Tier("human", "abstain"),
        )
    )
    cal = calibrate_tiers(policy, inputs, errors, n_classes=2)
    state = json.loads(json.dumps(cal.to_state(), allow_nan=False))
    back = TierCalibration.from_state(state)
    for name in cal.thresholds:
        np.testing.assert_array_equal(back.thresholds[name], cal.thresholds[name])
    assert back.report == state["report"]
    np.testing.assert_array_equal(
        assign_tiers(policy, inputs, back)[0], assign_tiers(policy, inputs, cal)[0]
    )
    again = pickle.loads(pickle.dumps(cal))
    assert again.report == cal.report


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cancer() -> tuple[Any, ...]:
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, random_state=0)
    X_cal, X_te, y_cal, y_te = train_test_split(X_rest, y_rest, train_size=0.6, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    return model, X_cal, y_cal, X_te, y_te


def test_predictor_certifies_and_reports(cancer: tuple[Any, ...]) -> None:
    model, X_cal, y_cal, X_te, _ = cancer
    policy = {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.05},
            {"name": "human", "action": "abstain"},
        ],
    }
    sp = SafePredictor(model, tiers=policy, log="off").calibrate(X_cal, y_cal)
    report = sp.calibration_report()["auto"]
    assert report["certified"]
    assert report["upper_bound"] <= 0.05
    lo, hi = report["acceptance_interval"]
    assert lo <= report["acceptance_rate"] <= hi
    assert report["n_errors"] <= report["n_accepted"] <= report["n_reaching"] == len(y_cal)
    json.dumps(report, allow_nan=False)
    decisions = sp.decide(X_te)
    accepted = decisions.actions == "accept"
    assert accepted.mean() > 0.5
    proba = model.predict_proba(X_te)
    conformal = sp.conformal_
    assert isinstance(conformal, ClassificationConformal)
    assert np.all(conformal.confidence(proba)[accepted] >= report["threshold"])


def test_budget_gate_accepts_nothing_and_says_how_many_rows(cancer: tuple[Any, ...]) -> None:
    model, X_cal, y_cal, X_te, _ = cancer
    policy = {
        "delta": 0.05,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.01},
            {"name": "human", "action": "abstain"},
        ],
    }
    sp = SafePredictor(model, tiers=policy, log="off").calibrate(X_cal[:120], y_cal[:120])
    report = sp.calibration_report()["auto"]
    assert report["certified"] is False
    assert report["rows_needed"] == rows_needed(0.01, 0.05) == 299
    assert report["calibration_rows_needed"] >= 299
    assert "299" in report["warning"]
    assert sp.tier_calibration_.warnings[0]["reason"] == "budget"
    decisions = sp.decide(X_te)
    assert not np.any(decisions.actions == "accept")
    assert all("uncertified:auto" in d.reasons for d in decisions)


def test_regression_max_error_tier() -> None:
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X[:200], y[:200])
    policy = {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.5, "tolerance": 60.0},
            {"name": "human", "action": "abstain"},
        ],
    }
    sp = SafePredictor(model, tiers=policy, log="off").calibrate(X[200:400], y[200:400])
    report = sp.calibration_report()["auto"]
    residual = np.abs(y[200:400] - model.predict(X[200:400]))
    # the absolute conformity score gives every row the same interval width,
    # so the tier accepts all rows or none; here ~25% of rows miss by > 60
    assert report["n_errors"] == int((residual > 60).sum())
    assert report["certified"]
    d = sp.decide(X[400:])
    assert np.all(d.actions[~d.guard_flagged] == "accept")  # guard-flagged rows never accept
    strict = {**policy, "tiers": [{**policy["tiers"][0], "max_error": 0.05}, policy["tiers"][1]]}
    sp2 = SafePredictor(model, tiers=strict, log="off").calibrate(X[200:400], y[200:400])
    assert not sp2.calibration_report()["auto"]["certified"]
    assert sp2.tier_calibration_.warnings[0]["reason"] == "not_certified"
    d = sp2.decide(X[400:])
    assert not np.any(d.actions == "accept")


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("tier", "match"),
    [
        ({"max_error": 2}, "not a percentage"),
        ({"max_error": 0}, "max_error"),
        ({"max_error": 0.05, "score": "proba"}, "score"),
        ({"max_error": 0.05, "per_class": "yes"}, "per_class must be true or false"),
        ({"tolerance": 3.0}, "only applies to a 'max_error' tier"),
        ({"max_error": 0.05, "tolerance": -1.0}, "tolerance"),
        ({"per_class": True}, "only apply to a 'max_error' tier"),
    ],
)
def test_tier_keys_are_validated(tier: dict[str, Any], match: str) -> None:
    data = {
        "tiers": [{"name": "auto", "action": "accept", **tier}, {"name": "h", "action": "abstain"}]
    }
    with pytest.raises(ConfigError, match=match):
        TierPolicy.from_dict(data)


def test_policy_delta_is_validated() -> None:
    toml = """
delta = 1.5
[[tiers]]
name = "auto"
action = "accept"
max_error = 0.02
[[tiers]]
name = "human"
action = "abstain"
"""
    with pytest.raises(ConfigError, match="delta"):
        TierPolicy.from_toml(toml)


def test_toml_risk_tier_round_trip() -> None:
    toml = """
delta = 0.05
[[tiers]]
name = "auto"
action = "accept"
max_error = 0.02
score = "margin"
per_class = true
[[tiers]]
name = "human"
action = "abstain"
"""
    policy = TierPolicy.from_toml(toml)
    auto = policy.tiers[0]
    assert (auto.max_error, auto.score, auto.per_class) == (0.02, "margin", True)
    assert TierPolicy.from_dict(policy.to_dict()) == policy


def test_tolerance_on_a_classifier_and_scores_on_a_regressor_are_rejected(
    cancer: tuple[Any, ...],
) -> None:
    model, X_cal, y_cal, _, _ = cancer
    tol = {
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.05, "tolerance": 1.0},
            {"name": "human", "action": "abstain"},
        ]
    }
    with pytest.raises(ConfigError, match="tolerance"):
        SafePredictor(model, tiers=tol, log="off").calibrate(X_cal, y_cal)
    X, y = load_diabetes(return_X_y=True)
    reg = Ridge().fit(X[:200], y[:200])
    for extra, match in (
        ({"score": "top_prob"}, "not available"),
        ({"per_class": True}, "per_class"),
    ):
        bad = {
            "tiers": [
                {"name": "auto", "action": "accept", "max_error": 0.3, "tolerance": 50.0, **extra},
                {"name": "human", "action": "abstain"},
            ]
        }
        with pytest.raises(ConfigError, match=match):
            SafePredictor(reg, tiers=bad, log="off").calibrate(X[200:400], y[200:400])


# ---------------------------------------------------------------- validity study


@dataclass
class _Pool:
    name: str
    proba: NDArray[np.float64]
    y: NDArray[np.intp]
    n_cal: int
    max_error: float


def _fit_pool(name: str, model: Any, X: Any, y: Any, n_cal: int, a: float) -> _Pool:
    X_tr, X_pool, y_tr, y_pool = train_test_split(X, y, train_size=0.4, random_state=0)
    model.fit(X_tr, y_tr)
    return _Pool(name, np.asarray(model.predict_proba(X_pool)), np.asarray(y_pool), n_cal, a)


@pytest.fixture(scope="module")
def pools() -> list[_Pool]:
    """Model outputs computed once per dataset/model; the study only redraws rows."""
    lr = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))  # noqa: E731  # a tiny factory
    rf = lambda: RandomForestClassifier(  # noqa: E731  # a tiny factory
        n_estimators=50, min_samples_leaf=2, random_state=0, n_jobs=1
    )
    Xd, yd = load_digits(return_X_y=True)
    Xb, yb = load_breast_cancer(return_X_y=True)
    Xs, ys = make_classification(
        n_samples=6000, n_features=20, n_informative=10, n_classes=5,
        n_clusters_per_class=1, class_sep=1.15, random_state=0,
    )  # fmt: skip
    Xi, yi = load_iris(return_X_y=True)
    return [
        _fit_pool("digits/LR", lr(), Xd, yd, 400, 0.02),
        _fit_pool("digits/RF", rf(), Xd, yd, 400, 0.05),
        _fit_pool("cancer/LR", lr(), Xb, yb, 200, 0.05),
        _fit_pool("cancer/RF", rf(), Xb, yb, 200, 0.05),
        _fit_pool("synthetic5/LR", lr(), Xs, ys, 1000, 0.05),
        _fit_pool("synthetic5/RF", rf(), Xs, ys, 1000, 0.05),
        _fit_pool("iris/LR", lr(), Xi, yi, 150, 0.1),
    ]


def _conformal_scores(
    proba: NDArray[np.float64], cal: NDArray[np.intp], y: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Conformal confidence of every pool row, conformalized on the rows ``cal``."""
    cal_scores = np.sort(1.0 - proba[cal, y[cal]])
    n = len(cal_scores)
    quantile = float(cal_scores[min(int(np.ceil((n + 1) * 0.9)), n) - 1])
    cp = ClassificationConformal("lac", 0.9, np.arange(proba.shape[1]), cal_scores, quantile)
    return cp.confidence(proba)


K_SPLITS = 200
DELTA = 0.1


def _mc_tolerance(delta: float, k: int) -> float:
    # Under validity each split violates independently with probability
    # p <= delta, so the violation count over k splits is Binomial(k, p) and
    # the observed frequency has standard deviation sqrt(p (1 - p) / k) <=
    # sqrt(delta (1 - delta) / k). Allowing 3 standard deviations makes a false
    # alarm of one check ~0.13% (normal tail; the binomial is close to normal
    # here: k * delta >= 20), ~1% over the 7 pools and the pooled check.
    return 3.0 * math.sqrt(delta * (1 - delta) / k)


@pytest.mark.slow
def test_validity_of_max_error_tiers_over_random_splits(pools: list[_Pool]) -> None:
    """P(error among accepted test rows > max_error) <= delta (+ MC tolerance).

    Each split draws ``n_cal`` calibration rows at random (with replacement)
    from the pool of held-out rows, and the test rows are the whole pool: the
    pool *is* the population the calibration rows come from, so the realized
    error among accepted test rows is the exact error rate the guarantee is
    about. (On a small disjoint test set the realized error also fluctuates by
    sqrt(a (1 - a) / m) around the true rate, and a valid method whose true
    rate sits just below ``a`` would "violate" about half the time.)

    Checked per split: a single ``max_error`` tier (conformal score), and a
    two-tier policy (its own violation = either tier's band exceeds its
    max_error; delta is shared by Bonferroni), and, as a control that the
    study can fail, the naive rule "largest acceptance whose empirical error
    on the calibration rows is <= max_error" must violate far more often.
    """
    rng = np.random.default_rng(2026)
    total_single = total_joint = 0
    tol = _mc_tolerance(DELTA, K_SPLITS)
    naive_rates = []
    for pool in pools:
        wrong = pool.proba.argmax(axis=1) != pool.y
        n = len(pool.y)
        a = pool.max_error
        single = TierPolicy((Tier("auto", "accept", max_error=a), Tier("h", "abstain")), DELTA)
        joint = TierPolicy(
            (
                Tier("auto", "accept", max_error=a / 2),
                Tier("suggest", "review", max_error=2 * a),
                Tier("h", "abstain"),
            ),
            DELTA,
        )
        v_single = v_joint = v_naive = 0
        for _ in range(K_SPLITS):
            cal = rng.integers(0, n, size=pool.n_cal)
            conf = _conformal_scores(pool.proba, cal, pool.y)
            # with top_prob and margin the tier ranks by its finest-grained keys
            # (confidence, then 1 - p_2, then p_1), as SafePredictor does
            top2 = np.sort(pool.proba, axis=1)[:, -2:]
            scores = {"conformal": conf, "top_prob": top2[:, 1], "margin": top2[:, 1] - top2[:, 0]}
            inputs_all = TierInputs("classification", conf, scores=scores)
            inputs_cal = TierInputs(
                "classification", conf[cal], scores={k: v[cal] for k, v in scores.items()}
            )
            for policy, is_joint in ((single, False), (joint, True)):
                tc = calibrate_tiers(policy, inputs_cal, wrong[cal])
                codes, _ = assign_tiers(policy, inputs_all, tc)
                bad = False
                for index, tier in enumerate(policy.tiers[:-1]):
                    hit = codes == index
                    assert tier.max_error is not None
                    if hit.any() and wrong[hit].mean() > tier.max_error:
                        bad = True
                if is_joint:
                    v_joint += bad
                else:
                    v_single += bad
            # naive: no confidence correction at all
            order = np.argsort(-conf[cal], kind="stable")
            cum = np.cumsum(wrong[cal][order]) / np.arange(1, pool.n_cal + 1)
            ok = np.flatnonzero(cum <= a)
            if len(ok):
                t = conf[cal][order][ok[-1]]
                hit = conf >= t
                v_naive += bool(wrong[hit].mean() > a)
        rate_single, rate_joint = v_single / K_SPLITS, v_joint / K_SPLITS
        naive_rates.append(v_naive / K_SPLITS)
        assert rate_single <= DELTA + tol, (pool.name, rate_single)
        assert rate_joint <= DELTA + tol, (pool.name, rate_joint)
        total_single += v_single
        total_joint += v_joint
    k_all = K_SPLITS * len(pools)
    assert total_single / k_all <= DELTA + _mc_tolerance(DELTA, k_all)
    assert total_joint / k_all <= DELTA + _mc_tolerance(DELTA, k_all)
    # the study has teeth: ignoring the calibration noise breaks the guarantee
    assert max(naive_rates) > DELTA + tol


@pytest.mark.slow
def test_validity_of_per_class_tiers(pools: list[_Pool]) -> None:
    """Per-class tiers: P(any predicted class's accepted error > max_error) <= delta."""
    rng = np.random.default_rng(7)
    tol = _mc_tolerance(DELTA, K_SPLITS)
    for pool in pools:
        if pool.name not in ("digits/RF", "synthetic5/LR", "cancer/LR"):
            continue
        wrong = pool.proba.argmax(axis=1) != pool.y
        pred = pool.proba.argmax(axis=1)
        k = pool.proba.shape[1]
        a = pool.max_error * 2
        policy = TierPolicy(
            (Tier("auto", "accept", max_error=a, per_class=True), Tier("h", "abstain")), DELTA
        )
        top = pool.proba.max(axis=1)
        violations = 0
        for _ in range(K_SPLITS):
            cal = rng.integers(0, len(pool.y), size=pool.n_cal)
            inputs_cal = TierInputs(
                "classification",
                top[cal],
                scores={"conformal": top[cal]},
                predicted_class=pred[cal],
            )
            tc = calibrate_tiers(policy, inputs_cal, wrong[cal], n_classes=k)
            inputs_all = TierInputs(
                "classification", top, scores={"conformal": top}, predicted_class=pred
            )
            codes, _ = assign_tiers(policy, inputs_all, tc)
            bad = False
            for c in range(k):
                hit = (codes == 0) & (pred == c)
                if hit.any() and wrong[hit].mean() > a:
                    bad = True
            violations += bad
        assert violations / K_SPLITS <= DELTA + tol, (pool.name, violations / K_SPLITS)


def test_calibration_report_needs_calibration_and_is_empty_without_risk_tiers(
    cancer: tuple[Any, ...],
) -> None:
    model, X_cal, y_cal, _, _ = cancer
    sp = SafePredictor(model, log="off")
    with pytest.raises(NotCalibratedError, match="calibrate"):
        sp.calibration_report()
    assert sp.calibrate(X_cal, y_cal).calibration_report() == {}


def test_risk_tier_after_a_plain_tier_sees_only_the_rows_left() -> None:
    scores, errors = _synthetic(3000, seed=8)
    policy = TierPolicy(
        (
            Tier("sure", "accept", min_confidence=0.9),
            Tier("auto", "review", max_error=0.05),
            Tier("human", "abstain"),
        ),
        delta=0.1,
    )
    inputs = TierInputs("classification", scores, scores={"conformal": scores})
    cal = calibrate_tiers(policy, inputs, errors)
    report = cal.report["auto"]
    assert report["n_reaching"] == int((scores < 0.9).sum())
    assert report["delta"] == pytest.approx(0.1)  # the only risk-controlled tier
    codes, _ = assign_tiers(policy, inputs, cal)
    assert (codes == 1).sum() == report["n_accepted"]
    assert errors[codes == 1].sum() == report["n_errors"]
