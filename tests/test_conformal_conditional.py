"""Class- and group-conditional (Mondrian) conformal sets and smoothed p-values.

The studies draw many random calibration/test splits of one pool of scored rows (model
outputs computed once per module); for a random permutation of a fixed pool, split
conformal's guarantees hold exactly in expectation over the permutations, so the
splits are i.i.d. draws of the quantity whose mean the guarantee bounds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from safepredict import SafePredictor
from safepredict.config import Tier, TierPolicy
from safepredict.conformal import ClassificationConformal
from safepredict.exceptions import ConfigError

LEVEL = 0.9
ALPHA = 0.1
SPLITS = 200


def _mc(n_cal: float, n_test: float, splits: int = SPLITS) -> float:
    """Four Monte-Carlo standard errors of a coverage averaged over ``splits`` splits.

    Per split, coverage = (conformal quantile's coverage, Beta-distributed with variance
    ~ alpha (1 - alpha) / (n_cal + 2)) + (binomial noise of n_test rows, variance
    ~ alpha (1 - alpha) / n_test); the mean over independent splits has standard error
    sqrt(alpha (1 - alpha) (1 / (n_cal + 2) + 1 / n_test) / splits).
    """
    return 4 * math.sqrt(ALPHA * (1 - ALPHA) * (1 / (n_cal + 2) + 1 / n_test) / splits)


def _state(scores: NDArray[np.float64], classes: int, **kw: object) -> ClassificationConformal:
    """A LAC state from calibration scores (1 - p of the true label), as calibrate keeps it."""
    return ClassificationConformal(
        method="lac",
        confidence_level=LEVEL,
        classes=np.arange(classes),
        calibration_scores=np.sort(scores),
        quantile=float(np.sort(scores)[math.ceil((len(scores) + 1) * LEVEL) - 1]),
        **kw,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ Mondrian study
def _blobs(n: int, rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Three classes; class 2 (20% of rows) sits between the others with a wider spread."""
    y = rng.choice(3, size=n, p=[0.4, 0.4, 0.2])
    centers = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    scale = np.array([1.0, 1.0, 1.6])
    return centers[y] + rng.normal(size=(n, 2)) * scale[y, None], y


@pytest.fixture(scope="module")
def hard_class() -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    rng = np.random.default_rng(0)
    X_train, y_train = _blobs(3000, rng)
    model = LogisticRegression().fit(X_train, y_train)
    X, y = _blobs(6000, rng)
    return model.predict_proba(X), y


def _per_class_coverage(
    proba: NDArray[np.float64], y: NDArray[np.intp], n_cal: int, conditional: bool
) -> NDArray[np.float64]:
    cover = np.zeros((SPLITS, 3))
    scores = 1 - proba[np.arange(len(y)), y]
    for s in range(SPLITS):
        perm = np.random.default_rng(s).permutation(len(y))
        cal, test = perm[:n_cal], perm[n_cal:]
        strata = {str(k): np.sort(scores[cal][y[cal] == k]) for k in range(3)}
        state = _state(scores[cal], 3, conditional="class" if conditional else None, strata=strata)
        sets = state.predict_set(proba[test])
        for k in range(3):
            cover[s, k] = sets[y[test] == k, k].mean()
    return cover.mean(axis=0)


def test_class_conditional_sets_cover_every_class(
    hard_class: tuple[NDArray[np.float64], NDArray[np.intp]],
) -> None:
    proba, y = hard_class
    n_cal = 2000
    share = np.bincount(y, minlength=3) / len(y)
    mc = np.array([_mc(n_cal * p, (len(y) - n_cal) * p) for p in share])
    mondrian = _per_class_coverage(proba, y, n_cal, conditional=True)
    marginal = _per_class_coverage(proba, y, n_cal, conditional=False)
    # Label-conditional validity: LEVEL <= E[coverage of class k] <= LEVEL + 1 / (n_k + 1).
    assert (mondrian >= LEVEL - mc).all(), (mondrian, mc)
    assert (mondrian <= LEVEL + 1 / (n_cal * share + 1) + mc).all(), (mondrian, mc)
    # Negative control: marginal sets under-cover the hard class by far more than MC.
    assert marginal[2] < LEVEL - mc[2], (marginal, mc)
    assert marginal @ share >= LEVEL - _mc(n_cal, len(y) - n_cal)  # still valid marginally


def test_calibrate_keeps_each_class_scores_and_full_sets_for_small_classes() -> None:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    cal_X, cal_y = X[1::2], y[1::2]
    cp = ClassificationConformal.calibrate(model, cal_X, cal_y, conditional="class")
    assert {k: len(v) for k, v in cp.strata.items()} == {
        str(k): int((cal_y == k).sum()) for k in range(3)
    }
    assert cp.small_strata == []
    # 8 rows of class 2 are too few at level 0.9 (need ceil(1/alpha - 1) = 9): label 2 is
    # then in every set, while the other classes still exclude it.
    keep = (cal_y != 2) | (np.cumsum(cal_y == 2) <= 8)
    small = ClassificationConformal.calibrate(model, cal_X[keep], cal_y[keep], conditional="class")
    assert small.small_strata == ["2"]
    sets = small.predict_set(model.predict_proba(X))
    assert sets[:, 2].all()
    assert not sets[:, 0].all()
    reasons = small.stratum_reasons(None, 2)
    assert reasons == {0: ("small_stratum:2",), 1: ("small_stratum:2",)}


# ------------------------------------------------------------------ group-conditional
@pytest.fixture(scope="module")
def grouped() -> tuple[pd.DataFrame, NDArray[np.intp], LogisticRegression]:
    rng = np.random.default_rng(3)
    n = 4000
    site = rng.choice(["a", "b"], size=n, p=[0.7, 0.3])
    X, y = _blobs(n, rng)
    flip = (site == "b") & (rng.uniform(size=n) < 0.25)  # site b: a quarter of labels noisy
    y = np.where(flip, rng.choice(3, size=n), y)
    frame = pd.DataFrame({"f0": X[:, 0], "f1": X[:, 1], "site": (site == "b").astype(float)})
    model = LogisticRegression().fit(frame.iloc[:1500], y[:1500])
    return frame, y, model


def test_group_conditional_sets_cover_each_group(
    grouped: tuple[pd.DataFrame, NDArray[np.intp], LogisticRegression],
) -> None:
    frame, y, model = grouped
    proba = model.predict_proba(frame.iloc[1500:])
    y, site = y[1500:], frame["site"].to_numpy()[1500:]
    scores = 1 - proba[np.arange(len(y)), y]
    n_cal = 1200
    cover = np.zeros((SPLITS, 2, 2))  # split, conditional?, site
    for s in range(SPLITS):
        perm = np.random.default_rng(s).permutation(len(y))
        cal, test = perm[:n_cal], perm[n_cal:]
        strata = {str(g): np.sort(scores[cal][site[cal] == g]) for g in (0.0, 1.0)}
        for j, state in enumerate(
            (_state(scores[cal], 3), _state(scores[cal], 3, conditional="site", strata=strata))
        ):
            hit = state.predict_set(proba[test], groups={"site": site[test]})
            hit = hit[np.arange(len(test)), y[test]]
            cover[s, j] = [hit[site[test] == g].mean() for g in (0.0, 1.0)]
    marginal, mondrian = cover.mean(axis=0)
    share_b = site.mean()
    mc_b = _mc(n_cal * share_b, (len(y) - n_cal) * share_b)
    mc_a = _mc(n_cal * (1 - share_b), (len(y) - n_cal) * (1 - share_b))
    assert mondrian[0] >= LEVEL - mc_a, mondrian
    assert mondrian[1] >= LEVEL - mc_b, mondrian
    # Negative control: marginal sets under-cover the noisy site.
    assert marginal[1] < LEVEL - mc_b, marginal


def test_safepredictor_conditional_on_a_column_names_unseen_groups(
    grouped: tuple[pd.DataFrame, NDArray[np.intp], LogisticRegression],
) -> None:
    frame, y, model = grouped
    sp = SafePredictor(model, conditional="site", log="off", guards="off")
    sp.calibrate(frame.iloc[1500:3000], y[1500:3000])
    assert sp.conformal_.conditional == "site"
    assert set(sp.conformal_.strata) == {"0.0", "1.0"}
    rows = frame.iloc[3000:3004].copy()
    rows.loc[rows.index[0], "site"] = 7.0  # a site the calibration never saw
    decisions = sp.decide(rows)
    d0 = decisions[0]
    assert "unseen_stratum:7.0" in d0.reasons
    assert d0.prediction_set is not None
    assert len(d0.prediction_set) == 3
    assert d0.action != "accept"
    proba = model.predict_proba(rows)
    expected = sp.conformal_.predict_set(proba, groups={"site": rows["site"].to_numpy()})
    for i, d in enumerate(decisions):
        assert d.prediction_set is not None
        assert sorted(d.prediction_set) == sorted(np.flatnonzero(expected[i]).tolist())
    # With a max_error tier the calibration rows are scored per site too.
    policy = TierPolicy(
        (Tier("auto", "accept", max_error=0.2), Tier("human", "abstain")), delta=0.1
    )
    tiered = SafePredictor(model, conditional="site", tiers=policy, log="off", guards="off")
    tiered.calibrate(frame.iloc[1500:3000], y[1500:3000])
    assert tiered.tier_calibration_.is_certified("auto")
    assert "unseen_stratum:7.0" in tiered.decide(rows)[0].reasons
    # The saved state keeps the strata; an old state without them still loads (marginal).
    again = ClassificationConformal.from_state(json.loads(json.dumps(sp.conformal_.to_state())))
    assert again.strata.keys() == sp.conformal_.strata.keys()
    old = {k: v for k, v in sp.conformal_.to_state().items() if k not in ("conditional", "strata")}
    assert ClassificationConformal.from_state(old).conditional is None


def test_conditional_and_smoothed_bad_input_says_what_to_do(
    grouped: tuple[pd.DataFrame, NDArray[np.intp], LogisticRegression],
) -> None:
    frame, y, model = grouped
    X, yy = frame.iloc[1500:2500], y[1500:2500]
    with pytest.raises(ConfigError, match="not an input column"):
        SafePredictor(model, conditional="region", log="off").calibrate(X, yy)
    with pytest.raises(ConfigError, match="smoothed p-values break ties of the 'lac' score"):
        SafePredictor(model, conformity_score="aps", smoothed=True, log="off").calibrate(X, yy)
    with pytest.raises(ConfigError, match="'raps' holds some out"):
        SafePredictor(model, conformity_score="raps", conditional="class", log="off").calibrate(
            X, yy
        )
    with pytest.raises(ConfigError, match="smoothed must be True or False"):
        SafePredictor(model, smoothed="yes", log="off").calibrate(X, yy)  # type: ignore[arg-type]
    cp = ClassificationConformal.calibrate(model, X, yy, conditional="site", groups=X["site"])
    with pytest.raises(ConfigError, match="pass its 2 values"):
        cp.predict_set(model.predict_proba(X.iloc[:2]))


# ------------------------------------------------------------------ smoothed p-values
@pytest.fixture(scope="module")
def tied() -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """A depth-2 tree: its probabilities take 4 distinct rows, so conformity scores tie."""
    X, y = make_classification(
        n_samples=12000, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X[:4000], y[:4000])
    proba = tree.predict_proba(X[4000:])
    assert len(np.unique(proba.round(12), axis=0)) <= 4
    return proba, y[4000:]


def _coverage(
    proba: NDArray[np.float64],
    y: NDArray[np.intp],
    n_cal: int,
    make: Callable[[NDArray[np.float64], int], ClassificationConformal],
) -> float:
    scores = 1 - proba[np.arange(len(y)), y]
    out = np.zeros(SPLITS)
    for s in range(SPLITS):
        perm = np.random.default_rng(s).permutation(len(y))
        cal, test = perm[:n_cal], perm[n_cal:]
        sets = make(scores[cal], s).predict_set(proba[test])
        out[s] = sets[np.arange(len(test)), y[test]].mean()
    return float(out.mean())


def test_smoothed_coverage_is_exact_with_tied_scores(
    tied: tuple[NDArray[np.float64], NDArray[np.intp]],
) -> None:
    proba, y = tied
    n_cal = 1000
    mc = _mc(n_cal, len(y) - n_cal)
    smoothed = _coverage(
        proba, y, n_cal, lambda s, seed: _state(s, 3, smoothed=True, random_state=seed)
    )
    plain = _coverage(proba, y, n_cal, lambda s, seed: _state(s, 3))
    assert LEVEL - mc <= smoothed <= LEVEL + mc, (smoothed, mc)
    assert plain > LEVEL + mc, (plain, mc)  # negative control: ties make plain sets over-cover


def test_smoothed_is_reproducible_and_persisted(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])

    def fitted(seed: int) -> SafePredictor:
        sp = SafePredictor(model, smoothed=True, random_state=seed, log="off", guards="off")
        return sp.calibrate(X[1::2], y[1::2])

    a, b, c = fitted(1), fitted(1), fitted(2)
    conf = [np.array([d.confidence for d in sp.decide(X)]) for sp in (a, b, c)]
    assert np.array_equal(conf[0], conf[1])
    assert not np.array_equal(conf[0], conf[2])
    a.save(tmp_path / "smoothed")  # a saved predictor restarts the draws from its seed
    loaded = SafePredictor.load(tmp_path / "smoothed", model=model)
    assert loaded.smoothed is True
    assert np.array_equal([d.confidence for d in loaded.decide(X)], conf[0])
    state = json.loads(json.dumps(a.conformal_.to_state()))
    assert state["smoothed"] is True
    assert state["random_state"] == 1
    restored = ClassificationConformal.from_state(state)
    fresh = fitted(1).conformal_
    proba = model.predict_proba(X)
    assert np.array_equal(restored.confidence(proba), fresh.confidence(proba))
    # Smoothed p-values lie between the plain p-value's tie-free part and the plain value.
    plain = ClassificationConformal.from_state({**state, "smoothed": False})
    p_plain, p_smooth = plain.p_values(proba), restored.p_values(proba)
    assert (p_smooth <= p_plain + 1e-12).all()
    assert (p_smooth > 0).all()
