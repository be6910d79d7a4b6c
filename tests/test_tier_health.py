"""Tier health (issue 22): anytime-valid, audit-weighted tier alarms.

Statistical tests use Monte-Carlo studies over many independent streams; every
tolerance is three binomial standard errors, ``3 * sqrt(p (1 - p) / R)`` for a
rate ``p`` estimated from ``R`` runs (about a 0.1% chance of a spurious failure
each), and every claim has a negative control that shows the test can fail.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from prometheus_client import CollectorRegistry
from scipy import stats
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from safepredict import SafePredictor
from safepredict._stats import BettingConfidenceSequence, betting_alarm_times, betting_log_capital
from safepredict.config import Tier, TierPolicy
from safepredict.exceptions import ConfigError
from safepredict.monitoring.prometheus import PrometheusMetrics
from safepredict.monitoring.tier_health import (
    TierHealthTracker,
    audits_per_day,
    effective_audit_rates,
    outcomes_to_detect,
    tier_health,
    tier_outcomes,
)
from safepredict.review import SQLiteReviewQueue

DELTA = 0.05
MAX_ERROR = 0.05
RUNS = 400


def three_se(p: float, runs: int = RUNS) -> float:
    """Three binomial Monte-Carlo standard errors of a rate ``p`` from ``runs`` runs."""
    return 3.0 * math.sqrt(p * (1.0 - p) / runs)


def naive_alarm(errors: np.ndarray, threshold: float, delta: float) -> np.ndarray:
    """Repeated one-sided Clopper-Pearson check after every outcome (not anytime-valid).

    The CP lower bound exceeds ``threshold`` exactly when the exact binomial test
    of ``rate <= threshold`` rejects: ``P(Bin(t, threshold) >= k_t) <= delta``.
    """
    k = np.cumsum(errors, axis=-1)
    t = np.arange(1, errors.shape[-1] + 1)
    p = stats.binom.sf(k - 1, t, threshold)
    return np.asarray((p <= delta).any(axis=-1))


# ----------------------------------------------------------------- (a) validity
def test_no_shift_false_alarm_rate_is_at_most_delta_under_continuous_monitoring() -> None:
    rng = np.random.default_rng(2201)
    n = 2000  # outcomes per stream, checked after every one
    # the hardest null: the true error rate sits exactly at the promise
    errors = (rng.random((RUNS, n)) < MAX_ERROR).astype(np.float64)
    alarms = betting_alarm_times(errors, threshold=MAX_ERROR, delta=DELTA) > 0
    # theory: P(ever alarm) <= delta / 2 (lower half of the two-sided sequence)
    assert alarms.mean() <= DELTA / 2 + three_se(DELTA / 2)
    # negative control: the same data checked with a fresh Clopper-Pearson bound after
    # every outcome alarms far more often than delta (repeated looks inflate it)
    naive = naive_alarm(errors, MAX_ERROR, DELTA)
    assert naive.mean() > DELTA + three_se(DELTA)
    # ...and the alarm is not silent: at twice the promise it fires in (nearly) every run
    bad = (rng.random((RUNS, n)) < 2 * MAX_ERROR).astype(np.float64)
    assert (betting_alarm_times(bad, threshold=MAX_ERROR, delta=DELTA) > 0).mean() > 0.95


def test_confidence_sequence_covers_at_every_time_and_its_grid_bounds_too() -> None:
    rng = np.random.default_rng(2202)
    theta, n, runs = 0.2, 600, 200
    errors = (rng.random((runs, n)) < theta).astype(np.float64)
    lp, lm = betting_log_capital(errors, m=[theta])
    level = math.log(2 / DELTA)
    missed = ((lp[..., 0] >= level) | (lm[..., 0] >= level)).any(axis=-1)
    assert missed.mean() <= DELTA + three_se(DELTA, runs)
    # negative control: a rate 0.05 away is excluded at some time in most runs
    lp2, _ = betting_log_capital(errors, m=[theta - 0.1])
    assert ((lp2[..., 0] >= level).any(axis=-1)).mean() > 0.9
    # the grid bounds of the stateful sequence contain the rate in (nearly) every run
    covered = 0
    for stream in errors[:40]:
        cs = BettingConfidenceSequence(DELTA, grid=200)
        cs.update(stream)
        covered += cs.lower <= theta <= cs.upper
    assert covered >= 40 * (1 - DELTA) - 3 * math.sqrt(40 * DELTA * (1 - DELTA))


# -------------------------------------------------------------- (c) weighting
def stratified_audits(rng: np.random.Generator, runs: int, n: int) -> tuple[np.ndarray, ...]:
    """Audited outcomes of a tier with two equal strata audited at 8% and 2% (5% overall).

    Stratum A errs 2% of the time, stratum B 12%: the tier's error over all accepted
    rows is 7%. An audited row is from A with probability 0.08 / (0.08 + 0.02) = 0.8,
    so the plain mean of audited outcomes targets 0.8 * 0.02 + 0.2 * 0.12 = 4%.
    """
    in_a = rng.random((runs, n)) < 0.8
    errors = (rng.random((runs, n)) < np.where(in_a, 0.02, 0.12)).astype(np.float64)
    weights = np.where(in_a, 1 / 0.08, 1 / 0.02)
    return errors, weights


def test_weighted_estimate_is_unbiased_where_the_unweighted_is_not() -> None:
    rng = np.random.default_rng(2203)
    theta, runs, n = 0.07, RUNS, 1000
    errors, weights = stratified_audits(rng, runs, n)
    weighted = (weights * errors).sum(-1) / weights.sum(-1)
    plain = errors.mean(-1)
    # tolerance: 3 standard errors of the mean over runs, plus the Hajek ratio bias,
    # which is O(1/n) = 0.001
    tol_w = 3 * weighted.std(ddof=1) / math.sqrt(runs) + 1 / n
    assert abs(weighted.mean() - theta) <= tol_w
    # negative control: the unweighted mean misses the tier's error by ~0.03
    tol_p = 3 * plain.std(ddof=1) / math.sqrt(runs) + 1 / n
    assert abs(plain.mean() - theta) > 10 * tol_p
    # the tracker reports the same weighted (Hajek) estimate
    policy = TierPolicy(
        [Tier("auto", "accept", max_error=0.1, audit_rate=0.02), Tier("h", "review")]
    )
    rows = [
        {"tier": "auto", "action": "accept", "error": int(e), "audit_probability": 1 / w}
        for e, w in zip(errors[0], weights[0], strict=True)
    ]
    h = tier_health(rows, policy)["auto"]
    assert h.estimate == pytest.approx(weighted[0])
    assert h.n_outcomes == n
    assert h.n_errors == int(errors[0].sum())


def test_weighted_sequence_covers_the_tier_error_the_unweighted_one_does_not() -> None:
    rng = np.random.default_rng(2204)
    theta, runs, n = 0.07, 300, 1500
    errors, weights = stratified_audits(rng, runs, n)
    level = math.log(2 / DELTA)
    lp, lm = betting_log_capital(errors, weights, m=[theta], max_weight=50.0)
    missed = ((lp[..., 0] >= level) | (lm[..., 0] >= level)).any(axis=-1)
    assert missed.mean() <= DELTA + three_se(DELTA, runs)
    # negative control: without weights the sequence excludes 7% in most runs
    lp0, lm0 = betting_log_capital(errors, m=[theta])
    missed0 = ((lp0[..., 0] >= level) | (lm0[..., 0] >= level)).any(axis=-1)
    assert missed0.mean() > 0.5


# ------------------------------------------------------- (b) detection delay
@pytest.mark.parametrize("audit_rate", [0.01, 0.05, 0.20])
def test_detection_delay_at_twice_max_error(audit_rate: float) -> None:
    """Uniform audits: the outcome stream is i.i.d.; accepted rows per outcome ~ Geometric."""
    rng = np.random.default_rng(int(2205 + 1000 * audit_rate))
    n = 4000
    errors = (rng.random((RUNS, n)) < 2 * MAX_ERROR).astype(np.float64)
    delay = betting_alarm_times(errors, threshold=MAX_ERROR, delta=DELTA)
    assert (delay > 0).mean() > 0.99
    median = float(np.median(delay[delay > 0]))
    # the helper's prediction (its own seed) of the median delay: within MC error.
    # The empirical median's rank is within 3 binomial SEs of R/2 (3 * sqrt(R/4) = 30
    # runs); compare through the empirical CDF at the predicted value.
    predicted = outcomes_to_detect(MAX_ERROR, 2 * MAX_ERROR, delta=DELTA, power=0.5, seed=7)
    frac = float((delay[delay > 0] <= predicted).mean())
    assert abs(frac - 0.5) <= three_se(0.5)
    # in accepted rows the delay scales as 1 / audit_rate: the k-th audited row comes
    # after k + NegativeBinomial(k, rate) accepted rows
    k = delay[delay > 0]
    rows = k + rng.negative_binomial(k, audit_rate)
    ratio = float(np.median(rows)) * audit_rate / median
    assert 0.85 < ratio < 1.15


def test_audits_per_day_helper_delivers_its_power_by_simulation() -> None:
    error = 2.5 * MAX_ERROR
    plan = audits_per_day(MAX_ERROR, error, within_days=7, accepted_per_day=5000, power=0.9)
    budget = plan["audits_per_day"] * 7
    assert plan["audit_rate"] == pytest.approx(plan["audits_per_day"] / 5000)
    rng = np.random.default_rng(2206)  # independent of the helper's seed
    errors = (rng.random((RUNS, int(budget))) < error).astype(np.float64)
    detected = (betting_alarm_times(errors, threshold=MAX_ERROR, delta=DELTA) > 0).mean()
    assert detected >= 0.9 - three_se(0.9)
    # negative control: half the audits detect far less often than promised
    half = errors[:, : int(budget) // 2]
    detected_half = (betting_alarm_times(half, threshold=MAX_ERROR, delta=DELTA) > 0).mean()
    assert detected_half < 0.9 - three_se(0.9)
    with pytest.raises(ConfigError, match="must exceed max_error"):
        outcomes_to_detect(0.05, 0.05)
    with pytest.raises(ConfigError, match="within_days"):
        audits_per_day(0.05, 0.1, within_days=0)


# ------------------------------------------------------------------ mechanics
def test_tracker_in_chunks_equals_the_pure_function() -> None:
    rng = np.random.default_rng(2207)
    policy = TierPolicy(
        [Tier("auto", "accept", max_error=0.05, audit_rate=0.1), Tier("human", "review")]
    )
    rows = [
        {"tier": "auto", "action": "accept", "prediction": 1, "outcome": int(rng.random() > 0.1)}
        for _ in range(1500)
    ]
    rows += [{"tier": "human", "action": "review", "prediction": 0, "outcome": 1}] * 5
    whole = tier_health(rows, policy)
    tracker = TierHealthTracker(policy)
    raised: list[str] = []
    for start in range(0, len(rows), 97):
        raised += tracker.update(rows[start : start + 97])
    assert tracker.report() == whole
    assert list(whole) == ["auto"]  # only accepting tiers
    h = whole["auto"]
    assert h.alarm
    assert raised == ["auto"]
    assert h.lower > 0.05
    assert h.lower <= h.estimate <= h.upper
    assert h.to_dict()["max_error"] == 0.05
    # the grid bounds agree with the capital processes: lower is rejected, lower+step not
    cs = BettingConfidenceSequence(DELTA)
    cs.update([1 - (r["outcome"] == 1) for r in rows[:1500]])
    assert cs.lower == pytest.approx(h.lower)
    assert cs.upper == pytest.approx(h.upper)


def test_bad_inputs_raise_config_errors_that_say_what_to_do() -> None:
    policy = TierPolicy([Tier("auto", "accept", max_error=0.05), Tier("h", "review")])
    with pytest.raises(ConfigError, match=r"'error'.*'prediction' and 'outcome'"):
        tier_health([{"tier": "auto"}], policy)
    with pytest.raises(ConfigError, match="must be a table"):
        tier_health({"tier": "auto"}, policy)
    with pytest.raises(ConfigError, match="audit_probability must be in"):
        tier_health([{"tier": "auto", "error": 0, "audit_probability": 0}], policy)
    with pytest.raises(ConfigError, match="max_weight must bound"):
        betting_log_capital([0, 1], [1, 100], m=[0.5], max_weight=10)
    with pytest.raises(ConfigError, match="errors must be numbers in"):
        betting_log_capital([0, 2], m=[0.5])
    with pytest.raises(ConfigError, match="audit_rate samples accepted rows"):
        Tier("h", "review", audit_rate=0.1)
    tier = Tier.from_dict({"name": "a", "action": "accept", "max_error": 0.1, "audit_rate": 0.3})
    assert Tier.from_dict(tier.to_dict()) == tier
    pol = TierPolicy([tier, Tier("b", "accept"), Tier("h", "review")], audit_rate=0.05)
    assert effective_audit_rates(pol) == {"a": 0.3, "b": 0.05}


# ----------------------------------------------------------- end to end
def resolve_audits(queue: SQLiteReviewQueue, decisions: Any, truth: np.ndarray) -> None:
    """Outcomes of the audited rows arrive; so do a few review cases' (not audits)."""
    for i in np.flatnonzero(decisions.audit):
        queue.record_outcome(str(decisions.decision_ids[i]), int(truth[i]), source="audit")
    for i in np.flatnonzero(decisions.actions != "accept")[:20]:
        queue.record_outcome(str(decisions.decision_ids[i]), int(truth[i]), source="review")


def test_end_to_end_through_the_review_queue_alarm_event_and_gauge(tmp_path: Path) -> None:
    X, y = make_classification(
        n_samples=16000,
        n_features=8,
        n_informative=5,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=22,
    )
    model = LogisticRegression(max_iter=500).fit(X[:3000], y[:3000])
    policy = {
        "delta": 0.1,
        "tiers": [
            {
                "name": "auto",
                "action": "accept",
                "max_error": 0.05,
                "score": "top_prob",
                "audit_rate": 0.1,
            },
            {"name": "human", "action": "review"},
        ],
    }
    out = io.StringIO()
    metrics = PrometheusMetrics(registry=CollectorRegistry())
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[metrics, structlog.processors.JSONRenderer()],
    )
    db = tmp_path / "reviews.db"
    sp = SafePredictor(model, log="off", tiers=policy, router=str(db), logger=logger)
    sp.calibrate(X[3000:6000], y[3000:6000])
    queue = SQLiteReviewQueue(db)

    # the review cases (action "review") are not audits: their outcomes must not count
    d = sp.decide(X[6000:11000])
    resolve_audits(queue, d, y[6000:11000])
    accepted = d.actions == "accept"
    assert abs(d.audit[accepted].mean() - 0.1) < three_se(0.1, int(accepted.sum()))
    assert not d.audit[~accepted].any()
    health = sp.tier_health()
    h = health["auto"]
    assert h["n_outcomes"] == int(d.audit.sum()) > 200
    assert h["audit_rate"] == 0.1
    assert not h["alarm"]
    assert h["lower"] <= 0.05
    assert h["upper"] >= h["estimate"]
    realized = float((d.predictions[accepted] != y[6000:11000][accepted]).mean())
    assert h["lower"] <= realized <= h["upper"]
    assert '"safepredict.tier_alarm"' not in out.getvalue()

    # injected shift: the label of 25% of the next rows flips (concept drift), so the
    # tier's error rises well above 5%; a window starting now sees only the new rows
    since = datetime.now(UTC)
    d2 = sp.decide(X[11000:16000])
    rng = np.random.default_rng(2208)
    shifted = np.where(rng.random(5000) < 0.25, 1 - y[11000:16000], y[11000:16000])
    resolve_audits(queue, d2, shifted)
    window = sp.tier_health(since=since)["auto"]
    assert window["alarm"]
    assert window["lower"] > 0.05
    assert window["n_outcomes"] == int(d2.audit.sum())
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    alarms = [e for e in events if e["event"] == "safepredict.tier_alarm"]
    assert alarms
    assert alarms[-1]["tier"] == "auto"
    assert alarms[-1]["alarm"] is True
    labels = {"model": "", "tier": "auto"}
    assert metrics.registry.get_sample_value("safepredict_tier_alarm", labels) == 1.0
    lower = metrics.registry.get_sample_value(
        "safepredict_tier_error", {**labels, "bound": "lower"}
    )
    assert lower == pytest.approx(window["lower"])
    with pytest.raises(ConfigError, match="since must be"):
        sp.tier_health(since="yesterday")
    iso = since.isoformat().replace("+00:00", "Z")
    assert sp.tier_health(since=iso)["auto"] == window
    bare = SafePredictor(model, log="off", tiers=policy).calibrate(X[3000:6000], y[3000:6000])
    with pytest.raises(ConfigError, match="tier_health needs the review queue"):
        bare.tier_health()
    assert bare.tier_health(queue=db)["auto"]["n_outcomes"] > 0


# ----------------------------------------------------------- adaptive thresholds
@pytest.fixture(scope="module")
def drifting_stream() -> tuple[np.ndarray, np.ndarray, float]:
    """Top-class probabilities of a real model on a stream whose labels drift.

    The flip probability of the labels rises linearly from 0 to 0.2 over the stream
    (concept drift), so a threshold certified at the start stops keeping max_error.
    """
    X, y = make_classification(
        n_samples=26000,
        n_features=8,
        n_informative=5,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=23,
    )
    model = LogisticRegression(max_iter=500).fit(X[:3000], y[:3000])
    from safepredict.tiers import certify_threshold

    proba = model.predict_proba(X[3000:])
    score = proba.max(axis=1)
    wrong = (proba.argmax(axis=1) != y[3000:]).astype(np.float64)
    cal = certify_threshold(score[:3000], wrong[:3000], max_error=0.05, delta=0.1)
    rng = np.random.default_rng(2209)
    flip = rng.random(20000) < np.linspace(0.0, 0.2, 20000)
    stream_wrong = np.where(flip, 1.0 - wrong[3000:], wrong[3000:])
    return score[3000:], stream_wrong, float(cal.threshold)


def run_adaptive(
    score: np.ndarray, wrong: np.ndarray, tau0: float, rate: float, step: float, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    audited = rng.random(len(score)) < rate
    tau, taus, acc = tau0, [], np.zeros(len(score), dtype=bool)
    errs, weights = [], []
    for i in range(len(score)):  # decide, then (if audited) learn the outcome at once
        if score[i] >= tau:
            acc[i] = True
            if audited[i]:
                errs.append(wrong[i])
                weights.append(1 / rate)
                tau = max(0.0, tau + step * (1 / rate) * (wrong[i] - 0.05))
                taus.append(tau)
    return {"accepted": acc, "errors": np.array(errs), "weights": np.array(weights), "taus": taus}


@pytest.mark.parametrize("rate", [1.0, 0.2])
def test_adaptive_threshold_keeps_the_long_run_bound_under_drift(
    drifting_stream: tuple[np.ndarray, np.ndarray, float], rate: float
) -> None:
    from safepredict.adaptive import long_run_bound, realized_error_bound, threshold_path

    score, wrong, tau0 = drifting_stream
    step = 0.005
    run = run_adaptive(score, wrong, tau0, rate, step, seed=int(rate * 10))
    acc, e, w = run["accepted"], run["errors"], run["weights"]
    bound = long_run_bound(start=tau0, step=step, total_weight=w.sum(), max_weight=1 / rate)
    weighted = float((w * e).sum() / w.sum())
    assert weighted <= 0.05 + bound  # deterministic, whatever the drift
    realized = float(wrong[acc].mean())
    # the realized error among all accepted rows: the stated bound (deterministic term
    # plus, under audit sampling, a term that holds with probability 1 - 0.05; its rate
    # over many streams is tested in tests/test_tier_health_adaptive.py)
    stated = realized_error_bound(start=tau0, step=step, max_error=0.05,
                                  n_accepted=int(acc.sum()), min_audit_probability=rate,
                                  delta=0.05)  # fmt: skip
    assert (stated.sampling == 0.0) == (rate == 1.0)
    assert realized <= stated.total
    assert bound < 0.025  # the bound is informative on this stream (half of max_error)
    # the threshold path is reproducible from the outcome log alone
    replay = threshold_path(e, w, start=tau0, max_error=0.05, step=step)
    np.testing.assert_allclose(replay[1:], run["taus"])
    # negative control: the static certified threshold breaks its promise on this stream
    static = score >= tau0
    assert float(wrong[static].mean()) > stated.total
    # the price: the adaptive tier accepts less than the static one
    assert acc.mean() < static.mean()


def test_adapt_thresholds_on_a_predictor_replays_the_queue_and_emits_events(
    tmp_path: Path,
) -> None:
    X, y = make_classification(
        n_samples=9000,
        n_features=8,
        n_informative=5,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=24,
    )
    model = LogisticRegression(max_iter=500).fit(X[:3000], y[:3000])
    tier = {"name": "auto", "action": "accept", "max_error": 0.05, "score": "top_prob"}
    policy = {
        "delta": 0.1,
        "tiers": [{**tier, "adapt": True, "audit_rate": 0.5}, {"name": "h", "action": "review"}],
    }
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out), processors=[structlog.processors.JSONRenderer()]
    )
    db = tmp_path / "reviews.db"
    sp = SafePredictor(model, log="off", tiers=policy, router=str(db), logger=logger)
    sp.calibrate(X[3000:6000], y[3000:6000])
    start = sp.tier_calibration_.thresholds["auto"]
    d = sp.decide(X[6000:9000])
    rng = np.random.default_rng(2210)
    shifted = np.where(rng.random(3000) < 0.2, 1 - y[6000:9000], y[6000:9000])
    queue = SQLiteReviewQueue(db)
    resolve_audits(queue, d, shifted)
    first = sp.adapt_thresholds()["auto"]
    assert first["start"] == start
    assert first["threshold"] > start  # too many errors: the tier gets stricter
    assert sp.tier_calibration_.thresholds["auto"] == first["threshold"]
    assert first["n_outcomes"] == int(d.audit.sum())
    changes = [json.loads(x) for x in out.getvalue().splitlines()]
    changes = [c for c in changes if c["event"] == "safepredict.threshold_change"]
    assert len(changes) == 1
    assert changes[0]["old"] == start
    assert changes[0]["new"] == first["threshold"]
    # replaying the same log again changes nothing and emits nothing
    assert sp.adapt_thresholds()["auto"] == first
    assert out.getvalue().count("safepredict.threshold_change") == 1
    assert (sp.decide(X[6000:9000]).actions == "accept").mean() < (d.actions == "accept").mean()
    with pytest.raises(ConfigError, match="adapt = true moves a single max_error threshold"):
        Tier("a", "accept", adapt=True)
    plain = SafePredictor(
        model, log="off", tiers={**policy, "tiers": [tier, {"name": "h", "action": "review"}]}
    )
    plain.calibrate(X[3000:6000], y[3000:6000])
    with pytest.raises(ConfigError, match="no tier has adapt = true"):
        plain.adapt_thresholds(queue=db)


def test_adapt_thresholds_refuses_regressors(diabetes_ridge: Any) -> None:
    s = diabetes_ridge
    policy = {
        "tiers": [
            {
                "name": "auto",
                "action": "accept",
                "max_error": 0.3,
                "tolerance": 50.0,
                "adapt": True,
            },
            {"name": "h", "action": "review"},
        ]
    }
    sp = SafePredictor(s.model, log="off", tiers=policy).calibrate(s.X_cal, s.y_cal)
    with pytest.raises(ConfigError, match="supports classification tiers"):
        sp.adapt_thresholds()


# ------------------------------------------------- audit probability with the case
def test_audit_probability_is_stored_with_the_case_and_weights_its_outcome(
    tmp_path: Path,
) -> None:
    """The weight is the probability the row was sampled with, not today's policy rate."""
    X, y = make_classification(n_samples=6000, n_features=6, class_sep=2.0, random_state=24)
    model = LogisticRegression(max_iter=500).fit(X[:2000], y[:2000])
    tiers = [
        {"name": "auto", "action": "accept", "max_error": 0.1, "audit_rate": 0.2},
        {"name": "human", "action": "review"},
    ]
    db = tmp_path / "reviews.db"
    sp = SafePredictor(model, log="off", tiers={"delta": 0.1, "tiers": tiers}, router=str(db))
    d = sp.calibrate(X[2000:4000], y[2000:4000]).decide(X[4000:])
    queue = SQLiteReviewQueue(db)
    audited = [c for c in queue.cases() if c["audit"]]
    assert len(audited) == int(d.audit.sum()) > 50
    assert {c["audit_probability"] for c in audited} == {0.2}
    assert all(c["audit_probability"] is None for c in queue.cases() if not c["audit"])
    for c in audited:
        queue.claim_case(c["decision_id"], "ann")
        queue.resolve(
            c["decision_id"], int(y[4000 + int(c["decision_id"].rsplit("-", 1)[1])]), "ann"
        )
    outcomes = list(queue.outcomes(audited_only=True))
    assert {o["audit_probability"] for o in outcomes} == {0.2}
    # the policy's rate changed since (0.2 -> 0.05): the stored probability still rules
    later = TierPolicy(
        [Tier("auto", "accept", max_error=0.1, audit_rate=0.05), Tier("h", "review")]
    )
    _, weights = tier_outcomes(outcomes, later)["auto"]
    assert set(weights.tolist()) == {5.0}
    # negative control: without the stored probability the new rate (1 / 0.05) is used
    bare = [{k: v for k, v in o.items() if k != "audit_probability"} for o in outcomes]
    assert set(tier_outcomes(bare, later)["auto"][1].tolist()) == {20.0}
    with pytest.raises(ConfigError, match=r"audit_probability.*\(0, 1\]"):
        queue.enqueue({"decision_id": "x", "tier": "auto", "action": "accept", "audit": True,
                       "audit_probability": 1.5})  # fmt: skip


def test_a_version_2_queue_gains_the_audit_probability_column(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    SQLiteReviewQueue(db).enqueue({"decision_id": "a", "tier": "t", "action": "accept"})
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE cases DROP COLUMN audit_probability")
    conn.execute("DELETE FROM schema_version WHERE version = 3")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    queue = SQLiteReviewQueue(db)
    queue.enqueue({"decision_id": "b", "tier": "t", "action": "accept", "audit": True,
                   "audit_probability": 0.25})  # fmt: skip
    assert [c["audit_probability"] for c in queue.cases()] == [None, 0.25]
