"""``max_error`` tiers rank on the finest-grained order, consistently with what is shown."""

from __future__ import annotations

import json

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import SafePredictor
from safepredict.config import Tier, TierPolicy
from safepredict.tiers import (
    ACCEPT_ALL,
    TierCalibration,
    TierInputs,
    accept_at,
    assign_tiers,
    calibrate_tiers,
    certify_threshold,
    probability_tie_breaks,
)


def test_accepted_rows_never_show_less_confidence_than_rejected_ones() -> None:
    X, y = load_digits(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, random_state=0)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, train_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    split = 0
    for a in (0.005, 0.01, 0.02, 0.05):
        policy = {
            "delta": 0.1,
            "tiers": [
                {"name": "auto", "action": "accept", "max_error": a},
                {"name": "human", "action": "abstain"},
            ],
        }
        sp = SafePredictor(model, tiers=policy, guards="off", log="off").calibrate(X_cal, y_cal)
        batch = sp.decide(X_te)
        acc = batch.tiers == "auto"
        if 0 < acc.sum() < len(batch):
            split += 1
            assert batch.confidence[acc].min() >= batch.confidence[~acc].max()
    assert split >= 2  # the property was exercised


def test_tie_breakers_split_a_saturated_confidence() -> None:
    """Every row shows the same confidence; only the runner-up probability ranks them.

    Generated data: 2,000 rows, p_2 ~ U(0, 0.3), wrong with probability p_2 / 2
    (7.5% overall, above max_error = 5%). The confidence alone cannot split the
    block, so nothing is certified; its tie-breaker (1 - p_2) finds the clean top.
    """
    rng = np.random.default_rng(0)
    n = 2000
    p2 = rng.uniform(0, 0.3, size=n)
    top = 1 - p2
    wrong = rng.uniform(size=n) < p2 / 2
    conf = np.full(n, 0.99)
    coarse = certify_threshold(conf, wrong, max_error=0.05, delta=0.1)
    assert not coarse.certified
    scores = {"conformal": conf, "top_prob": top, "margin": top - p2}
    keys = np.column_stack([conf, probability_tie_breaks(scores)["conformal"]])
    fine = certify_threshold(keys, wrong, max_error=0.05, delta=0.1)
    assert fine.certified
    assert 0.3 < fine.acceptance_rate < 1
    policy = TierPolicy((Tier("auto", "accept", max_error=0.05), Tier("h", "abstain")), 0.1)
    inputs = TierInputs("classification", conf, scores=scores)
    cal = calibrate_tiers(policy, inputs, wrong)
    codes, _ = assign_tiers(policy, inputs, cal)
    assert (codes == 0).sum() == fine.n_accepted
    assert p2[codes == 0].max() < p2[codes == 1].min()  # the tie-breaker orders the block


def test_a_tier_certified_on_every_row_accepts_new_rows_below_them() -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(0.5, 1.0, size=500)
    res = certify_threshold(s, np.zeros(500, dtype=bool), max_error=0.05, delta=0.1)
    assert res.n_accepted == 500
    assert res.key == (ACCEPT_ALL,)
    assert accept_at(np.array([0.1, 0.9, np.nan]), res.key).tolist() == [True, True, False]
    policy = TierPolicy((Tier("auto", "accept", max_error=0.05), Tier("h", "abstain")), 0.1)
    cal = calibrate_tiers(
        policy, TierInputs("classification", s, scores={"conformal": s}), np.zeros(500, bool)
    )
    back = TierCalibration.from_state(json.loads(json.dumps(cal.to_state(), allow_nan=False)))
    low = TierInputs("classification", np.array([0.01]), scores={"conformal": np.array([0.01])})
    assert assign_tiers(policy, low, back)[0].tolist() == [0]
