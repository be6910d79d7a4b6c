"""Per-group guarantees: ``group_by`` on a ``max_error`` tier.

Unit behaviour (too-small and unseen groups, persistence), then a validity
study over many random calibration draws on real models with groups, and a
negative control where one group's error rate is three times the others'.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import safepredict as sp
from safepredict.config import Tier, TierPolicy
from safepredict.conformal import ClassificationConformal
from safepredict.exceptions import ConfigError
from safepredict.tiers import TierCalibration, TierInputs, assign_tiers, calibrate_tiers


def _policy(a: float, delta: float, group_by: str | None = "g") -> TierPolicy:
    return TierPolicy(
        (Tier("auto", "accept", max_error=a, group_by=group_by), Tier("human", "abstain")),
        delta=delta,
    )


def test_each_group_is_certified_and_small_or_unseen_groups_accept_nothing() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    groups = rng.choice(np.array(["a", "b", "tiny"], dtype=object), size=n, p=[0.6, 0.39, 0.01])
    s = rng.uniform(size=n)
    errors = rng.uniform(size=n) < np.where(groups == "b", 0.15, 0.03) * (1 - s)
    inputs = TierInputs("classification", s, scores={"conformal": s}, groups={"g": groups})
    cal = calibrate_tiers(_policy(0.05, 0.1), inputs, errors)
    t = cal.thresholds["auto"]
    assert math.isfinite(t["a"])
    assert math.isfinite(t["b"])
    assert t["b"] > t["a"]  # the less reliable group needs a higher score
    assert math.isinf(t["tiny"])  # ~60 rows < rows_needed(0.05, 0.1 / 3) = 67
    report = cal.report["auto"]
    assert report["groups"]["tiny"]["too_small"] is True
    assert report["groups"]["a"]["delta"] == pytest.approx(0.1 / 3)
    assert any(w.get("group") == "tiny" and w["reason"] == "budget" for w in cal.warnings)
    new = np.array(["a", "tiny", "never-seen"], dtype=object)
    test = TierInputs(
        "classification",
        np.array([0.99, 0.99, 0.99]),
        scores={"conformal": np.array([0.99, 0.99, 0.99])},
        groups={"g": new},
    )
    codes, reasons = assign_tiers(_policy(0.05, 0.1), test, cal)
    assert codes.tolist() == [0, 1, 1]
    assert reasons[1] == ("group_too_small:tiny",)
    assert reasons[2] == ("unseen_group:never-seen",)
    back = TierCalibration.from_state(cal.to_state())
    np.testing.assert_array_equal(assign_tiers(_policy(0.05, 0.1), test, back)[0], codes)


def test_group_by_is_validated() -> None:
    with pytest.raises(ConfigError, match="group_by"):
        Tier("auto", "accept", group_by="g")  # no max_error
    with pytest.raises(ConfigError, match="cannot be combined"):
        Tier("auto", "accept", max_error=0.05, group_by="g", per_class=True)
    with pytest.raises(ConfigError, match="column name"):
        Tier("auto", "accept", max_error=0.05, group_by="")


def test_predictor_groups_by_a_column_and_round_trips(tmp_path: Path) -> None:
    X, y = make_classification(
        n_samples=4000, n_features=6, n_informative=4, class_sep=2.0, flip_y=0.0, random_state=0
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    frame["region"] = np.where(X[:, 0] > 0, 1.0, 2.0)
    X_tr, X_rest, y_tr, y_rest = train_test_split(frame, y, train_size=0.4, random_state=0)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, train_size=0.6, random_state=0)
    model = LogisticRegression(max_iter=2000).fit(X_tr, y_tr)
    policy = {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.05, "group_by": "region"},
            {"name": "human", "action": "abstain"},
        ],
    }
    p = sp.SafePredictor(model, tiers=policy, guards="off", log="off").calibrate(X_cal, y_cal)
    report = p.calibration_report()["auto"]
    assert set(report["groups"]) == {"1.0", "2.0"}
    batch = p.decide(X_te)
    assert (batch.tiers == "auto").mean() > 0.2
    odd = X_te.iloc[:5].copy()
    odd["region"] = 3.0
    assert all("unseen_group:3.0" in d.reasons and d.tier == "human" for d in p.decide(odd))
    loaded = sp.SafePredictor.load(p.save(tmp_path / "cal.json"), model=model)
    np.testing.assert_array_equal(loaded.decide(X_te).tiers, batch.tiers)
    bad = {**policy, "tiers": [{**policy["tiers"][0], "group_by": "nope"}, policy["tiers"][1]]}
    with pytest.raises(ConfigError, match="not an input column"):
        sp.SafePredictor(model, tiers=bad, log="off").calibrate(X_cal, y_cal)


# ---------------------------------------------------------------- validity study

K_SPLITS = 200
DELTA = 0.1


def _mc_tolerance(delta: float, k: int) -> float:
    # Under validity the violation indicator of each split is Bernoulli(p <= delta),
    # independent across splits, so the observed rate has sd <= sqrt(delta (1 - delta) / k);
    # 3 sd: a false alarm ~0.13% per check (normal tail, k * delta = 20).
    return 3.0 * math.sqrt(delta * (1 - delta) / k)


def _keys(proba: NDArray[np.float64], cal: NDArray[np.intp], y: NDArray[np.intp]) -> Any:
    """Conformal confidence, top probability and margin of every pool row (conformalized on cal)."""
    cal_scores = np.sort(1.0 - proba[cal, y[cal]])
    cp = ClassificationConformal("lac", 0.9, np.arange(proba.shape[1]), cal_scores, 0.5)
    top2 = np.sort(proba, axis=1)[:, -2:]
    return {
        "conformal": cp.confidence(proba),
        "top_prob": top2[:, 1],
        "margin": top2[:, 1] - top2[:, 0],
    }


@pytest.fixture(scope="module")
def group_pools() -> list[tuple[str, NDArray[np.float64], NDArray[np.intp], Any, int, float]]:
    """Two real models with a group column, scored once: (name, proba, y, group, n_cal, a)."""
    Xd, yd = load_digits(return_X_y=True)
    ink = np.digitize(Xd.sum(axis=1), np.quantile(Xd.sum(axis=1), [1 / 3, 2 / 3]))
    Xs, ys = make_classification(
        n_samples=6000, n_features=20, n_informative=10, n_classes=5,
        n_clusters_per_class=1, class_sep=1.6, random_state=0,
    )  # fmt: skip
    side = (Xs[:, 0] > 0).astype(int)
    out = []
    for name, model, X, y, g, n_cal, a in (
        ("digits/LR by ink", make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
         Xd, yd, ink, 600, 0.05),
        ("synthetic5/RF by side",
         RandomForestClassifier(n_estimators=50, min_samples_leaf=2, random_state=0, n_jobs=1),
         Xs, ys, side, 1500, 0.05),
    ):  # fmt: skip
        X_tr, X_p, y_tr, y_p, _, g_p = train_test_split(X, y, g, train_size=0.4, random_state=0)
        model.fit(X_tr, y_tr)
        out.append((name, model.predict_proba(X_p), np.asarray(y_p), g_p.astype(str), n_cal, a))
    return out


@pytest.mark.slow
def test_validity_per_group_over_random_splits(group_pools: list[Any]) -> None:
    """P(any group's accepted error > max_error) <= delta (+ MC), and per group.

    As in tests/test_tiers.py: calibration rows are drawn with replacement from
    the pool of held-out rows and the pool is the population, so the realized
    error among accepted pool rows of a group is that group's true rate.
    """
    rng = np.random.default_rng(18)
    tol = _mc_tolerance(DELTA, K_SPLITS)
    total = 0
    for name, proba, y, g, n_cal, a in group_pools:
        wrong = proba.argmax(axis=1) != y
        policy = _policy(a, DELTA, group_by="g")
        values = sorted(set(g.tolist()))
        any_bad = 0
        per_group = dict.fromkeys(values, 0)
        accepted = []
        for _ in range(K_SPLITS):
            cal = rng.integers(0, len(y), size=n_cal)
            s = _keys(proba, cal, y)
            tc = calibrate_tiers(
                policy,
                TierInputs("classification", s["conformal"][cal],
                           scores={k: v[cal] for k, v in s.items()}, groups={"g": g[cal]}),
                wrong[cal],
            )  # fmt: skip
            codes, _ = assign_tiers(
                policy,
                TierInputs("classification", s["conformal"], scores=s, groups={"g": g}),
                tc,
            )
            bad = False
            for v in values:
                hit = (codes == 0) & (g == v)
                if hit.any() and wrong[hit].mean() > a:
                    per_group[v] += 1
                    bad = True
            any_bad += bad
            accepted.append((codes == 0).mean())
        assert any_bad / K_SPLITS <= DELTA + tol, (name, any_bad / K_SPLITS)
        for v, count in per_group.items():
            assert count / K_SPLITS <= DELTA + tol, (name, v, count / K_SPLITS)
        assert np.mean(accepted) > 0.3, name  # the guarantee is not bought by accepting nothing
        total += any_bad
    k_all = K_SPLITS * len(group_pools)
    assert total / k_all <= DELTA + _mc_tolerance(DELTA, k_all)


@pytest.mark.slow
def test_negative_control_a_group_with_three_times_the_error() -> None:
    """Without group_by the bad group breaks max_error in most splits; with it, <= delta.

    Generated data: 3 equal groups, score s ~ U(0, 1), error probability
    0.06 (1 - s) in groups a and b and three times that in group c. A 4% tier
    certified on everyone accepts a band whose error in group c is ~2x the
    others', above 4%; per-group certification holds every group to it.
    """
    rng = np.random.default_rng(3)
    n_pool, n_cal, a = 30_000, 3000, 0.04
    g = rng.choice(np.array(["a", "b", "c"]), size=n_pool)  # numpy strings: cheap to group
    s = rng.uniform(size=n_pool)
    wrong = rng.uniform(size=n_pool) < 0.06 * (1 - s) * np.where(g == "c", 3.0, 1.0)
    pooled, grouped = _policy(a, DELTA, group_by=None), _policy(a, DELTA, group_by="g")
    k = 200
    broken = {"pooled": 0, "grouped": 0}
    for _ in range(k):
        cal = rng.integers(0, n_pool, size=n_cal)
        for label, policy in (("pooled", pooled), ("grouped", grouped)):
            inputs_cal = TierInputs("classification", s[cal], scores={"conformal": s[cal]},
                                    groups={"g": g[cal]})  # fmt: skip
            tc = calibrate_tiers(policy, inputs_cal, wrong[cal])
            codes, _ = assign_tiers(
                policy, TierInputs("classification", s, scores={"conformal": s}, groups={"g": g}),
                tc,
            )  # fmt: skip
            hit = (codes == 0) & (g == "c")
            broken[label] += bool(hit.any() and wrong[hit].mean() > a)
    assert broken["pooled"] / k > 0.5  # without group_by: group c exceeds max_error mostly
    assert broken["grouped"] / k <= DELTA + _mc_tolerance(DELTA, k)
