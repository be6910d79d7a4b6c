"""``per_class`` and ``group_by`` ``max_error`` tiers under shift (weighted, per stratum).

Unit behaviour of :func:`safepredict.shift.weighted_tiers.calibrate_tiers_weighted`
on strata (the same multiplicity correction as the unweighted path), ``adapt_to``
end to end with both kinds of tier, and a study: under covariate shift the
per-group weighted certificates hold in production while the unweighted ones do
not (the negative control).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import SafePredictor
from safepredict.config import Tier, TierPolicy
from safepredict.shift.weighted_tiers import calibrate_tiers_weighted
from safepredict.tiers import TierCalibration, TierInputs, assign_tiers, calibrate_tiers


def _policy(max_error: float, delta: float, **stratum: Any) -> TierPolicy:
    return TierPolicy(
        (Tier("auto", "accept", max_error=max_error, **stratum), Tier("human", "abstain")),
        delta=delta,
    )


def test_weighted_group_tier_splits_delta_per_group_and_blocks_small_or_unseen_groups() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    groups = rng.choice(np.array(["a", "b", "tiny"], dtype=object), size=n, p=[0.6, 0.39, 0.01])
    s = rng.uniform(size=n)
    errors = rng.uniform(size=n) < np.where(groups == "b", 0.15, 0.03) * (1 - s)
    inputs = TierInputs("classification", s, scores={"conformal": s}, groups={"g": groups})
    policy = _policy(0.05, 0.1, group_by="g")
    cal = calibrate_tiers_weighted(policy, inputs, errors, np.ones(n), max_weight=1.0)
    plain = calibrate_tiers(policy, inputs, errors)
    t = cal.thresholds["auto"]
    assert set(t) == set(plain.thresholds["auto"]) == {"a", "b", "tiny"}
    assert math.isfinite(t["a"])
    assert math.isfinite(t["b"])
    assert t["b"] > t["a"]  # the less reliable group needs a higher score
    assert math.isinf(t["tiny"])  # ~60 rows: too few at delta / 3
    report = cal.report["auto"]
    # the unweighted path's Bonferroni split: delta over tiers, then over the groups
    assert report["groups"]["a"]["delta"] == pytest.approx(0.1 / 3)
    assert report["groups"]["a"]["delta"] == pytest.approx(
        plain.report["auto"]["groups"]["a"]["delta"]
    )
    assert any(w.get("group") == "tiny" for w in cal.warnings)
    # each group's accepted rows: weighted error below max_error
    assert report["groups"]["a"]["weighted_error"] <= 0.05
    assert report["groups"]["b"]["weighted_error"] <= 0.05
    test = TierInputs(
        "classification",
        np.full(3, 0.999),
        scores={"conformal": np.full(3, 0.999)},
        groups={"g": np.array(["a", "tiny", "never-seen"], dtype=object)},
    )
    codes, reasons = assign_tiers(policy, test, cal)
    assert codes.tolist() == [0, 1, 1]
    assert reasons[2] == ("unseen_group:never-seen",)
    back = TierCalibration.from_state(cal.to_state())
    np.testing.assert_array_equal(assign_tiers(policy, test, back)[0], codes)


def test_weighted_per_class_tier_certifies_each_predicted_class() -> None:
    rng = np.random.default_rng(1)
    n = 8000
    s = rng.uniform(size=n)
    cls = rng.integers(0, 2, size=n)
    errors = rng.uniform(size=n) < np.where(cls == 1, 0.3, 0.05) * (1 - s)
    inputs = TierInputs("classification", s, scores={"conformal": s}, predicted_class=cls)
    policy = _policy(0.05, 0.1, per_class=True)
    cal = calibrate_tiers_weighted(
        policy, inputs, errors, np.ones(n), max_weight=1.0, n_classes=2, class_labels=["no", "yes"]
    )
    t = cal.thresholds["auto"]
    assert t.shape == (2,)
    assert np.isfinite(t).all()
    assert t[1] > t[0]  # the noisier predicted class needs a higher score
    assert cal.keys["auto"].shape == (2, 1)
    assert cal.report["auto"]["classes"]["yes"]["delta"] == pytest.approx(0.1 / 2)
    codes = assign_tiers(policy, inputs, cal)[0]
    for k in (0, 1):
        accepted = (codes == 0) & (cls == k)
        assert accepted.any()
        assert float(s[accepted].min()) >= t[k]
    # a regressor has no predicted class: the same clear error as the unweighted path
    reg = TierInputs("regression", s, scores={"conformal": s})
    with pytest.raises(Exception, match="per_class = true needs a classifier"):
        calibrate_tiers_weighted(policy, reg, errors, np.ones(n), max_weight=1.0)


def test_adapt_to_with_per_class_and_group_tiers() -> None:
    X, y = load_digits(return_X_y=True)
    cols = [f"p{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=cols)
    frame["site"] = np.where(X[:, 20] > 8, "north", "south")
    scale = ColumnTransformer([("pixels", StandardScaler(), cols)])  # "site" is not a feature
    model = make_pipeline(scale, LogisticRegression(C=0.05)).fit(frame.iloc[::3], y[::3])
    for tier, key, n_strata in (
        ({"per_class": True}, "classes", 10),
        ({"group_by": "site"}, "groups", 2),
    ):
        tiers = {
            "delta": 0.1,
            "tiers": [
                {"name": "auto", "action": "accept", "max_error": 0.1, **tier},
                {"name": "human", "action": "review"},
            ],
        }
        idx = np.arange(len(y))
        sp = SafePredictor(model, log="off", guards="off", tiers=tiers).calibrate(
            frame.iloc[1::3], y[1::3]
        )
        prod_rows = idx[2::3][X[2::3, 20] > 4]
        domain = make_pipeline(clone(scale), LogisticRegression(max_iter=1000))
        adapted = sp.adapt_to(frame.iloc[prod_rows], domain_classifier=domain)
        report = adapted.shift_.tiers["auto"]
        assert report["weighted"] is True
        assert len(report[key]) == n_strata
        share = 0.1 / n_strata  # policy delta 0.1, one risk tier, split over the strata
        assert all(v["delta"] == pytest.approx(share) for v in report[key].values())
        d = adapted.decide(frame.iloc[prod_rows])
        auto = np.asarray(d.tier_names)[d.tier_codes] == "auto"
        # fail closed: a row is accepted only in a stratum the weighted test certified
        if "group_by" in tier:
            strata = frame["site"].to_numpy()[prod_rows]
        else:
            strata = np.asarray(d.predictions).astype(str)
        certified = {label for label, v in report[key].items() if v["certified"]}
        assert set(strata[auto].tolist()) <= certified
        assert any(w["tier"] == "auto" for w in adapted.tier_calibration_.warnings) == (
            len(certified) < n_strata
        )


# ------------------------------------------------------------------ the study
RUNS, N_CAL, MAX_ERROR, DELTA, SHIFT, BOUND = 100, 8000, 0.1, 0.1, 1.0, 10.0


def _generate(
    g: np.random.Generator, n: int, shift: float
) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[Any]]:
    """Linear labels flipped w.p. 0.1 where x4 > 1; production x4 ~ N(shift, 1); group by x3.

    The true likelihood ratio of production to calibration is
    exp(shift * x4 - shift^2 / 2) (exponential tilting of N(0, 1)); P(y | x) is
    the same in both (covariate shift).
    """
    X = g.normal(size=(n, 5))
    X[:, 4] += shift
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.5 * g.normal(size=n) > 0).astype(np.intp)
    flip = (X[:, 4] > 1) & (g.uniform(size=n) < 0.1)
    return X, np.where(flip, 1 - y, y), np.where(X[:, 3] > 0, "g1", "g0").astype(object)


def _inputs(p: NDArray[np.float64], groups: NDArray[Any]) -> TierInputs:
    top = p.max(axis=1)
    return TierInputs("classification", top, scores={"conformal": top}, groups={"g": groups})


@pytest.mark.slow
def test_weighted_group_certificates_hold_in_production() -> None:
    """Family-wise: P(some group's production error among accepted rows > max_error) <= delta.

    Violation frequencies over RUNS runs are binomial: MC standard error
    sqrt(delta (1 - delta) / RUNS) (0.03 at 100 runs); the weighted check is
    rate <= delta + 3 se, the unweighted (control) rate > delta + 3 se.
    """
    g0 = np.random.default_rng(0)
    model = LogisticRegression().fit(*_generate(g0, 5000, 0.0)[:2])
    X_prod, y_prod, g_prod = _generate(g0, 40_000, SHIFT)
    p_prod = model.predict_proba(X_prod)
    prod_inputs = _inputs(p_prod, g_prod)
    wrong_prod = p_prod.argmax(axis=1) != y_prod
    policy = _policy(MAX_ERROR, DELTA, group_by="g")

    def violated(cal: TierCalibration) -> bool:
        accepted = assign_tiers(policy, prod_inputs, cal)[0] == 0
        return any(
            float(wrong_prod[accepted & (g_prod == v)].mean()) > MAX_ERROR
            for v in ("g0", "g1")
            if (accepted & (g_prod == v)).any()
        )

    viol: dict[str, list[bool]] = {"plain": [], "weighted": []}
    certified: list[bool] = []
    for r in range(RUNS):
        g = np.random.default_rng(100 + r)
        X_cal, y_cal, g_cal = _generate(g, N_CAL, 0.0)
        p_cal = model.predict_proba(X_cal)
        inputs = _inputs(p_cal, g_cal)
        wrong = p_cal.argmax(axis=1) != y_cal
        w = np.minimum(np.exp(SHIFT * X_cal[:, 4] - SHIFT**2 / 2), BOUND)
        weighted = calibrate_tiers_weighted(policy, inputs, wrong, w, max_weight=BOUND)
        viol["weighted"].append(violated(weighted))
        viol["plain"].append(violated(calibrate_tiers(policy, inputs, wrong)))
        certified.append(weighted.is_certified("auto"))
    rate = {k: float(np.mean(v)) for k, v in viol.items()}
    tolerance = 3 * math.sqrt(DELTA * (1 - DELTA) / RUNS)
    print(f"\ngroup tiers: violation rate {rate}, certified {np.mean(certified):.2f}, "
          f"tolerance {tolerance:.3f}")  # fmt: skip
    assert rate["plain"] > DELTA + tolerance  # the control: without weights it fails
    assert rate["weighted"] <= DELTA + tolerance
    assert float(np.mean(certified)) >= 0.5  # not vacuous
