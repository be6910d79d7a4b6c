"""One meaning per number: tiers read the numbers a decision shows, never a hidden rule.

* the tier a row lands in is the first whose conditions the row's shown
  confidence, credibility and set size meet (random policies, real models);
* an empty conformal set is a reason (``empty_set``), not an automatic abstain;
* ``min_credibility`` has the false-alarm rate it documents (many splits);
* the README / demo example policy has rows in every tier on realistic models.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import SafePredictor
from safepredict.config import Tier, TierPolicy
from safepredict.conformal import ClassificationConformal
from safepredict.exceptions import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def _split(X: Any, y: Any, model: Any, seed: int = 0) -> tuple[Any, ...]:
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.5, random_state=seed)
    X_cal, X_test, y_cal, y_test = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=seed
    )
    model.fit(X_train, y_train)
    return model, X_cal, y_cal, X_test, y_test


@pytest.fixture(scope="module")
def fitted() -> list[tuple[Any, ...]]:
    """Three real models: a smooth one, a boosted one with tied outputs, a k-NN (very tied)."""
    Xd, yd = load_digits(return_X_y=True)
    Xb, yb = load_breast_cancer(return_X_y=True)
    Xw, yw = load_wine(return_X_y=True)
    return [
        _split(Xd, yd, make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
        _split(Xb, yb, HistGradientBoostingClassifier(max_iter=50, random_state=0)),
        _split(Xw, yw, make_pipeline(StandardScaler(), KNeighborsClassifier(5))),
    ]


def _random_tier(rng: np.random.Generator, name: str, action: str) -> Tier:
    kwargs: dict[str, Any] = {}
    while not kwargs:
        if rng.uniform() < 0.6:
            kwargs["min_confidence"] = float(rng.choice([0.5, 0.8, 0.9, 0.95, 0.97, 0.99]))
        if rng.uniform() < 0.4:
            kwargs["min_credibility"] = float(rng.choice([0.02, 0.05, 0.1, 0.2, 0.5]))
        if rng.uniform() < 0.4:
            kwargs["max_set_size"] = int(rng.integers(1, 4))
    return Tier(name, action, **kwargs)  # type: ignore[arg-type]  # action is one of ACTIONS


def test_the_tier_never_contradicts_the_numbers_shown(fitted: list[tuple[Any, ...]]) -> None:
    """Random policies: every row is in the first tier its shown numbers satisfy."""
    rng = np.random.default_rng(18)
    n_checked = n_empty_accepted = 0
    for model, X_cal, y_cal, X_test, _ in fitted:
        for _ in range(12):
            k = int(rng.integers(1, 4))
            actions = rng.choice(["accept", "review", "abstain"], size=k)
            tiers = [_random_tier(rng, f"t{i}", str(a)) for i, a in enumerate(actions)]
            policy = TierPolicy((*tiers, Tier("rest", "abstain")))
            level = float(rng.choice([0.8, 0.9, 0.95]))
            sp = SafePredictor(
                model, confidence_level=level, tiers=policy, guards="off", log="off"
            ).calibrate(X_cal, y_cal)
            batch = sp.decide(X_test)
            assert isinstance(sp.conformal_, ClassificationConformal)
            cred = sp.conformal_.credibility(batch.probabilities)
            conf, size = batch.confidence, batch.set_sizes
            expected = np.full(len(batch), len(tiers))
            for index in reversed(range(len(tiers))):
                t = tiers[index]
                ok = np.ones(len(batch), dtype=bool)
                if t.min_confidence is not None:
                    ok &= conf >= t.min_confidence
                if t.min_credibility is not None:
                    ok &= cred >= t.min_credibility
                if t.max_set_size is not None:
                    ok &= size <= t.max_set_size
                expected[ok] = index
            names = np.array(policy.names, dtype=object)
            np.testing.assert_array_equal(batch.tiers, names[expected])
            # and confidence is the level up to which the set holds nothing but the prediction
            np.testing.assert_array_equal(conf >= level, size <= 1)
            empty = size == 0
            assert all(("empty_set" in batch.reasons[i]) == empty[i] for i in range(len(batch)))
            n_empty_accepted += int((empty & (batch.actions == "accept")).sum())
            n_checked += len(batch)
    assert n_checked > 5000
    assert n_empty_accepted > 0  # empty sets reached accept tiers whose conditions they met


def test_an_empty_set_is_a_reason_not_an_abstain(fitted: list[tuple[Any, ...]]) -> None:
    """The issue's case: confidence 0.96-0.99 with an empty set, under min_confidence = 0.95."""
    model, X_cal, y_cal, X_test, _ = fitted[0]
    policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "min_confidence": 0.95},
            {"name": "human", "action": "abstain"},
        ]
    }
    sp = SafePredictor(model, tiers=policy, guards="off", log="off").calibrate(X_cal, y_cal)
    batch = sp.decide(X_test)
    empty = batch.set_sizes == 0
    assert empty.sum() >= 5
    high = empty & (batch.confidence >= 0.95)
    assert high.any()
    assert set(batch.tiers[high]) == {"auto"}
    assert all("empty_set" in batch.reasons[i] for i in np.flatnonzero(empty))
    # a row's credibility is at most 1 - level exactly when its set is empty
    assert isinstance(sp.conformal_, ClassificationConformal)
    cred = sp.conformal_.credibility(batch.probabilities)
    np.testing.assert_array_equal(cred <= 1 - 0.9 + 1e-12, empty)


def test_min_credibility_is_validated_and_classification_only() -> None:
    with pytest.raises(ConfigError, match="min_credibility"):
        Tier("auto", "accept", min_credibility=1.5)
    policy = {
        "tiers": [
            {"name": "a", "action": "accept", "min_credibility": 0.1},
            {"name": "h", "action": "abstain"},
        ]
    }
    assert TierPolicy.from_dict(policy).tiers[0].conditions == {"min_credibility": 0.1}
    X, y = load_diabetes(return_X_y=True)
    reg = Ridge().fit(X[:200], y[:200])
    with pytest.raises(ConfigError, match="min_credibility"):
        SafePredictor(reg, tiers=policy, log="off").calibrate(X[200:400], y[200:400])


# ------------------------------------------------------- credibility false alarms


def _credibility(cal_scores: NDArray[np.float64], proba: NDArray[np.float64]) -> Any:
    """LAC credibility of every row against sorted calibration scores (the library's rule)."""
    n = cal_scores.shape[-1]
    cp = ClassificationConformal("lac", 0.9, np.arange(proba.shape[1]), cal_scores, 0.5)
    out = cp.credibility(proba)
    assert out.shape == (len(proba),)
    return out, n


K_SPLITS = 200


def test_min_credibility_false_alarm_rate_over_many_splits() -> None:
    """On rows like the calibration rows, P(credibility < a) <= a, and close to it.

    Per split: n_cal calibration rows and the rest of the pool as test rows;
    the split's false-alarm rate r_s is the share of test rows with
    credibility < a. Under exchangeability E[r_s] <= a (the true label's
    p-value is super-uniform, and credibility >= it when the prediction is
    right; when it is wrong credibility may be lower, hence the error-rate
    slack below). Lower side: credibility < a holds for every correctly
    predicted row whose true-label p-value is < a, and P(p_true < a) >=
    a - 1/(n_cal + 1), so E[r_s] >= a - 1/(n_cal + 1) - err. The mean over K
    splits has Monte-Carlo standard error sd(r_s) / sqrt(K) (splits are
    independent draws); we allow 4 of them (false alarm ~6e-5 per check).
    Negative control: test rows from a shifted population (each image blended
    half and half with another digit) fail the check far more often than a, so
    the bound is not vacuous.
    """
    X, y = load_digits(return_X_y=True)
    X_tr, X_pool, y_tr, y_pool = train_test_split(X, y, train_size=0.4, random_state=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    proba = model.predict_proba(X_pool)
    scores = 1.0 - proba[np.arange(len(y_pool)), y_pool]
    err = float((proba.argmax(axis=1) != y_pool).mean())
    rng = np.random.default_rng(5)
    blended = 0.5 * X_pool + 0.5 * X_pool[rng.permutation(len(X_pool))]
    noisy = model.predict_proba(blended)
    n_cal = 300
    for a in (0.05, 0.1, 0.2):
        rates, shifted = [], []
        for _ in range(K_SPLITS):
            perm = rng.permutation(len(y_pool))
            cal, test = perm[:n_cal], perm[n_cal:]
            cred, _ = _credibility(np.sort(scores[cal]), proba[test])
            rates.append(float((cred < a).mean()))
            cred_s, _ = _credibility(np.sort(scores[cal]), noisy[test])
            shifted.append(float((cred_s < a).mean()))
        r = np.asarray(rates)
        mc = 4 * r.std(ddof=1) / math.sqrt(K_SPLITS)
        assert r.mean() <= a + mc, (a, r.mean())
        assert r.mean() >= a - 1 / (n_cal + 1) - err - mc, (a, r.mean())
        assert np.mean(shifted) > a + 10 * mc  # the check has teeth


# ------------------------------------------------------- the example policy


def _readme_policy() -> TierPolicy:
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    return TierPolicy.from_toml(block.group(1))


def test_example_policy_tiers_all_fire() -> None:
    """README's (and the demo's) auto / suggest / human each get rows on realistic models."""
    policy = _readme_policy()
    demo = (Path(__file__).resolve().parents[1] / "examples" / "demo.py").read_text()
    assert TierPolicy.from_toml(demo.split('POLICY = """', 1)[1].split('"""', 1)[0]).tiers == (
        policy.tiers
    )
    Xb, yb = load_breast_cancer(return_X_y=True, as_frame=True)
    Xd, yd = load_digits(return_X_y=True)
    cases = [  # the demo's split and model, and a multiclass one
        _split(Xb, yb, HistGradientBoostingClassifier(random_state=0)),
        _split(Xd, yd, make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
    ]
    for model, X_cal, y_cal, X_test, y_test in cases:
        sp = SafePredictor(model, tiers=policy, guards="off", log="off").calibrate(X_cal, y_cal)
        batch = sp.decide(X_test)
        counts = {t: int((batch.tiers == t).sum()) for t in policy.names}
        assert min(counts.values()) >= 1, counts
        wrong = batch.predictions.astype(int) != np.asarray(y_test)
        # the tiers order the risk: mistakes concentrate outside auto
        assert wrong[batch.tiers == "auto"].mean() < wrong[batch.tiers != "auto"].mean()
