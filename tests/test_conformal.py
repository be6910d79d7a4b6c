"""The conformal adapter reproduces MAPIE exactly, and its confidence agrees with the sets.

Every reference value comes from a real MAPIE object (never mocked) calibrated on the
same rows with the same seed; our per-row path only sees the model output.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from mapie.classification import SplitConformalClassifier
from mapie.conformity_scores import ResidualNormalisedScore
from mapie.regression import ConformalizedQuantileRegressor, SplitConformalRegressor
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
    make_regression,
)
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, QuantileRegressor, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from safepredict import SafePredictor
from safepredict.conformal import ClassificationConformal, RegressionConformal
from safepredict.conformal._mapie import PrefitClassifier as _PrefitClassifier
from safepredict.conformal._mapie import PrefitRegressor as _PrefitRegressor
from safepredict.conformal._mapie import alpha_of as _alpha
from safepredict.conformal._mapie import classifier_backend as _classifier_backend
from safepredict.conformal._mapie import raps_regularized as _raps_regularized
from safepredict.conformal._mapie import regressor_backend as _regressor_backend
from safepredict.conformal.regression import regression_quantile as _regression_quantile
from safepredict.exceptions import CalibrationError, ConfigError

LEVELS = (0.8, 0.9, 0.95)


def _make_clf() -> tuple[Any, Any]:
    return make_classification(
        n_samples=2400, n_features=12, n_informative=8, n_classes=5, random_state=0
    )


def _make_reg() -> tuple[Any, Any]:
    return make_regression(n_samples=1500, n_features=8, noise=20.0, random_state=0)


CLF_DATA: dict[str, Callable[[], tuple[Any, Any]]] = {
    "iris": lambda: load_iris(return_X_y=True),
    "wine": lambda: load_wine(return_X_y=True),
    "digits": lambda: load_digits(return_X_y=True),
    "breast_cancer": lambda: load_breast_cancer(return_X_y=True),
    "make_classification": _make_clf,
}
CLF_MODELS: dict[str, Callable[[], Any]] = {
    "logreg": lambda: LogisticRegression(max_iter=5000),
    "hgb": lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0),
    "rf": lambda: RandomForestClassifier(n_estimators=40, random_state=0),
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    "knn": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=7)),
}
REG_DATA: dict[str, Callable[[], tuple[Any, Any]]] = {
    "diabetes": lambda: load_diabetes(return_X_y=True),
    "make_regression": _make_reg,
}
REG_MODELS: dict[str, Callable[[], Any]] = {
    "ridge": lambda: Ridge(),
    "hgb": lambda: HistGradientBoostingRegressor(max_iter=40, random_state=0),
    "rf": lambda: RandomForestRegressor(n_estimators=40, random_state=0),
    "pipeline": lambda: make_pipeline(StandardScaler(), Ridge()),
    "knn": lambda: make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=7)),
}

_CACHE: dict[tuple[str, str], tuple[Any, ...]] = {}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads thrash on a shared 2-core machine."""
    with threadpool_limits(limits=1):
        yield


def _split(data: str, model: str, *, classification: bool) -> tuple[Any, ...]:
    """(model, X_cal, y_cal, X_test, y_test): fitted on 40%, calibrated on 30%."""
    key = (data, model)
    if key not in _CACHE:
        X, y = (CLF_DATA if classification else REG_DATA)[data]()
        strat = y if classification else None
        X_tr, X_rest, y_tr, y_rest = train_test_split(
            X, y, train_size=0.4, random_state=0, stratify=strat
        )
        strat = y_rest if classification else None
        X_cal, X_te, y_cal, y_te = train_test_split(
            X_rest, y_rest, test_size=0.5, random_state=0, stratify=strat
        )
        est = (CLF_MODELS if classification else REG_MODELS)[model]().fit(X_tr, y_tr)
        _CACHE[key] = (est, X_cal, y_cal, X_te, y_te)
    return _CACHE[key]


def _mapie_sets(model: Any, X_cal: Any, y_cal: Any, X: Any, method: str, levels: Any) -> Any:
    ref = SplitConformalClassifier(
        _PrefitClassifier(model),
        confidence_level=levels,
        conformity_score=method,
        prefit=True,
        random_state=7,
    ).conformalize(X_cal, y_cal)
    return ref.predict_set(X)[1]


@contextmanager
def _root_logging_restored() -> Iterator[None]:
    """MAPIE's CQR calls ``logging.basicConfig`` on ill-sorted bounds; undo it after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in root.handlers:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)


# --------------------------------------------------------------------------- sets
CLASSIFICATION_CASES = [
    (data, model, method)
    for data in ("iris", "wine", "digits", "make_classification")
    for model in CLF_MODELS
    for method in ("lac", "aps", "raps")
    if not (method == "raps" and data in ("iris", "wine"))  # too few rows for RAPS's split
] + [("breast_cancer", model, "lac") for model in CLF_MODELS]


@pytest.mark.parametrize(("data", "model", "method"), CLASSIFICATION_CASES)
def test_sets_identical_to_mapie(data: str, model: str, method: str) -> None:
    est, X_cal, y_cal, X_te, _ = _split(data, model, classification=True)
    cp = ClassificationConformal.calibrate(
        est, X_cal, y_cal, method=method, confidence_level=0.9, random_state=7
    )
    expected = _mapie_sets(est, X_cal, y_cal, X_te, method, 0.9)[:, :, 0]
    ours = cp.predict_set(est.predict_proba(X_te))
    assert ours.dtype == bool
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize(
    ("data", "model"),
    [("diabetes", m) for m in REG_MODELS] + [("make_regression", m) for m in REG_MODELS],
)
@pytest.mark.parametrize("method", ["absolute", "residual_normalized"])
def test_intervals_identical_to_mapie(data: str, model: str, method: str) -> None:
    est, X_cal, y_cal, X_te, _ = _split(data, model, classification=False)
    cp = RegressionConformal.calibrate(
        est, X_cal, y_cal, method=method, confidence_level=0.9, random_state=3
    )
    score: Any = ResidualNormalisedScore(random_state=3) if method != "absolute" else method
    ref = SplitConformalRegressor(
        _PrefitRegressor(est), confidence_level=0.9, conformity_score=score, prefit=True
    ).conformalize(X_cal, y_cal)
    expected = ref.predict_interval(X_te)[1][:, :, 0]
    ours = cp.interval(X_te, est.predict(X_te))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert np.array_equal(ours, expected)


def _quantile_models(kind: str, X: Any, y: Any, level: float) -> list[Any]:
    alphas = ((1 - level) / 2, 0.5, (1 + level) / 2)
    if kind == "gbr":
        return [
            GradientBoostingRegressor(
                loss="quantile", alpha=a, n_estimators=60, random_state=0
            ).fit(X, y)
            for a in alphas
        ]
    if kind == "hgb":
        return [
            HistGradientBoostingRegressor(
                loss="quantile", quantile=a, max_iter=40, random_state=0
            ).fit(X, y)
            for a in alphas
        ]
    return [QuantileRegressor(quantile=a, alpha=0.0, solver="highs").fit(X, y) for a in alphas]


@pytest.mark.parametrize("data", list(REG_DATA))
@pytest.mark.parametrize("kind", ["gbr", "hgb", "linear"])
def test_cqr_identical_to_mapie(data: str, kind: str) -> None:
    X, y = REG_DATA[data]()
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, random_state=1)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=1)
    lower, median, upper = _quantile_models(kind, X_tr, y_tr, 0.9)
    cp = RegressionConformal.calibrate(
        median, X_cal, y_cal, method="cqr", quantile_models=(lower, median, upper)
    )
    ref = ConformalizedQuantileRegressor(
        [lower, upper, median], confidence_level=0.9, prefit=True
    ).conformalize(X_cal, y_cal)
    with _root_logging_restored():
        points, intervals = ref.predict_interval(X_te)
    ours = cp.interval(X_te, median.predict(X_te))
    assert np.array_equal(ours, intervals[:, :, 0])
    assert np.array_equal(median.predict(X_te), points)


# ------------------------------------------------------------------- via decide()
@pytest.mark.parametrize(
    ("data", "model", "method"),
    [
        ("digits", "hgb", "aps"),
        ("digits", "rf", "raps"),
        ("wine", "pipeline", "lac"),
        ("breast_cancer", "knn", "lac"),
        ("make_classification", "logreg", "raps"),
    ],
)
def test_decide_set_mask_identical_to_mapie(data: str, model: str, method: str) -> None:
    est, X_cal, y_cal, X_te, _ = _split(data, model, classification=True)
    sp = SafePredictor(
        est, conformity_score=method, confidence_level=0.9, random_state=7, log="off"
    ).calibrate(X_cal, y_cal)
    decisions = sp.decide(X_te)
    expected = _mapie_sets(est, X_cal, y_cal, X_te, method, 0.9)[:, :, 0]
    assert decisions.set_mask is not None
    assert np.array_equal(decisions.set_mask, expected)
    assert np.array_equal(decisions.predictions.astype(int), est.predict(X_te))
    one = sp.decide_one(X_te[3])
    assert one.prediction_set == tuple(sp.classes_[expected[3]].tolist())


@pytest.mark.parametrize(
    ("model", "method"), [("ridge", "absolute"), ("rf", "absolute"), ("hgb", "residual_normalized")]
)
def test_decide_intervals_identical_to_mapie(model: str, method: str) -> None:
    est, X_cal, y_cal, X_te, _ = _split("diabetes", model, classification=False)
    sp = SafePredictor(est, conformity_score=method, random_state=3, log="off")
    sp.calibrate(X_cal, y_cal)
    score: Any = ResidualNormalisedScore(random_state=3) if method != "absolute" else method
    ref = SplitConformalRegressor(
        _PrefitRegressor(est), confidence_level=0.9, conformity_score=score, prefit=True
    ).conformalize(X_cal, y_cal)
    decisions = sp.decide(X_te)
    assert decisions.intervals is not None
    assert np.array_equal(decisions.intervals, ref.predict_interval(X_te)[1][:, :, 0])


def test_decide_cqr_uses_the_quantile_models() -> None:
    X, y = load_diabetes(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, random_state=2)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=2)
    models = _quantile_models("gbr", X_tr, y_tr, 0.9)
    sp = SafePredictor(models[1], quantile_models=tuple(models), log="off")
    sp.calibrate(X_cal, y_cal)
    assert sp.conformity_score_ == "cqr"
    ref = ConformalizedQuantileRegressor(
        [models[0], models[2], models[1]], confidence_level=0.9, prefit=True
    ).conformalize(X_cal, y_cal)
    with _root_logging_restored():
        expected = ref.predict_interval(X_te)[1][:, :, 0]
    decisions = sp.decide(X_te)
    assert decisions.intervals is not None
    assert np.array_equal(decisions.intervals, expected)


# ------------------------------------------------------- confidence and p-values
@pytest.mark.parametrize(
    ("data", "model", "method"),
    [
        ("digits", "hgb", "lac"),
        ("digits", "rf", "aps"),
        ("digits", "logreg", "lac"),
        ("make_classification", "hgb", "aps"),
        ("iris", "rf", "lac"),
        ("wine", "knn", "aps"),
    ],
)
def test_confidence_matches_mapie_sets_at_every_level(data: str, model: str, method: str) -> None:
    """set at level L == {prediction}  <=>  confidence >= L and prediction in set."""
    est, X_cal, y_cal, X_te, _ = _split(data, model, classification=True)
    cp = ClassificationConformal.calibrate(
        est, X_cal, y_cal, method=method, confidence_level=0.9, random_state=7
    )
    proba = est.predict_proba(X_te)
    rows = np.arange(len(proba))
    pred = np.argmax(proba, axis=1)
    conf = cp.confidence(proba)
    p = cp.p_values(proba)
    sets = _mapie_sets(est, X_cal, y_cal, X_te, method, list(LEVELS))
    n_singletons = 0
    for j, level in enumerate(LEVELS):
        s = sets[:, :, j]
        singleton = (s.sum(axis=1) == 1) & s[rows, pred]
        assert np.array_equal(singleton, (conf >= level) & s[rows, pred]), level
        # and every label: in the set iff its p-value exceeds 1 - level (exact decimal)
        assert np.array_equal(s, p > float(Decimal(1) - Decimal(str(level)))), level
        n_singletons += int(singleton.sum())
    assert n_singletons > 0  # the property was exercised on both sides
    assert ((conf >= 0) & (conf <= 1)).all()


@pytest.mark.parametrize(("data", "model"), [("digits", "rf"), ("make_classification", "hgb")])
def test_raps_confidence_matches_its_sets_at_every_quantile(data: str, model: str) -> None:
    """RAPS keeps the regularization of the calibrated level; the quantile varies."""
    est, X_cal, y_cal, X_te, _ = _split(data, model, classification=True)
    cp = ClassificationConformal.calibrate(
        est, X_cal, y_cal, method="raps", confidence_level=0.9, random_state=7
    )
    proba = est.predict_proba(X_te)
    rows = np.arange(len(proba))
    pred = np.argmax(proba, axis=1)
    conf, p = cp.confidence(proba), cp.p_values(proba)
    n = len(cp.calibration_scores)
    # integer forms: p = (c + 1) / (n + 1), confidence = (n - c_other) / (n + 1)
    count = np.rint(p * (n + 1)).astype(int) - 1
    conf_k = np.rint(conf * (n + 1)).astype(int)
    for k in range(1, n + 1, max(1, n // 25)):
        # the set at any level L with ceil((n + 1) * L) == k
        s = cp.set_at(proba, float(cp.calibration_scores[k - 1]))
        singleton = (s.sum(axis=1) == 1) & s[rows, pred]
        assert np.array_equal(singleton, (conf_k >= k) & s[rows, pred]), k
        assert np.array_equal(s, count >= n - k + 1), k
    assert np.array_equal(cp.set_at(proba, cp.quantile), cp.predict_set(proba))


def test_confidence_is_high_for_easy_rows_and_low_for_ambiguous_ones() -> None:
    est, X_cal, y_cal, X_te, y_te = _split("digits", "logreg", classification=True)
    cp = ClassificationConformal.calibrate(est, X_cal, y_cal, method="lac", confidence_level=0.9)
    proba = est.predict_proba(X_te)
    conf = cp.confidence(proba)
    correct = np.argmax(proba, axis=1) == y_te
    assert 5 <= (~correct).sum() < correct.sum()
    # AUC of confidence for separating right from wrong predictions.
    auc = (conf[correct][:, None] > conf[~correct][None, :]).mean()
    assert auc > 0.8


# ----------------------------------------------------------------- errors/state
def test_binary_targets_support_lac_only() -> None:
    est, X_cal, y_cal, _, _ = _split("breast_cancer", "logreg", classification=True)
    for method in ("aps", "raps"):
        with pytest.raises(ConfigError, match="binary targets support 'lac' only"):
            ClassificationConformal.calibrate(est, X_cal, y_cal, method=method)
        with pytest.raises(ConfigError, match="binary targets support 'lac' only"):
            SafePredictor(est, conformity_score=method, log="off").calibrate(X_cal, y_cal)


def test_raps_with_too_few_rows_is_a_calibration_error() -> None:
    est, X_cal, y_cal, _, _ = _split("wine", "logreg", classification=True)
    with pytest.raises(CalibrationError, match="raps"):
        ClassificationConformal.calibrate(est, X_cal, y_cal, method="raps", random_state=0)


def test_cqr_needs_three_quantile_models() -> None:
    est, X_cal, y_cal, _, _ = _split("diabetes", "ridge", classification=False)
    with pytest.raises(ConfigError, match="quantile_models=\\(lower, median, upper\\)"):
        RegressionConformal.calibrate(est, X_cal, y_cal, method="cqr")
    with pytest.raises(ConfigError, match="needs quantile_models"):
        SafePredictor(est, conformity_score="cqr", log="off").calibrate(X_cal, y_cal)


def test_unknown_scores_are_config_errors() -> None:
    est, X_cal, y_cal, _, _ = _split("iris", "logreg", classification=True)
    with pytest.raises(ConfigError, match="not a classification score"):
        ClassificationConformal.calibrate(est, X_cal, y_cal, method="absolute")
    reg, Xr, yr, _, _ = _split("diabetes", "ridge", classification=False)
    with pytest.raises(ConfigError, match="not a regression score"):
        RegressionConformal.calibrate(reg, Xr, yr, method="lac")


def test_too_few_calibration_rows() -> None:
    est, X_cal, y_cal, _, _ = _split("iris", "logreg", classification=True)
    with pytest.raises(CalibrationError, match="at least 19 rows"):
        ClassificationConformal.calibrate(est, X_cal[:10], y_cal[:10], confidence_level=0.95)


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_classification_state_round_trips_through_json(method: str) -> None:
    est, X_cal, y_cal, X_te, _ = _split("digits", "hgb", classification=True)
    cp = ClassificationConformal.calibrate(
        est, X_cal, y_cal, method=method, confidence_level=0.9, random_state=1
    )
    back = ClassificationConformal.from_state(json.loads(json.dumps(cp.to_state())))
    proba = est.predict_proba(X_te)
    assert np.array_equal(back.predict_set(proba), cp.predict_set(proba))
    assert np.array_equal(back.confidence(proba), cp.confidence(proba))
    again = pickle.loads(pickle.dumps(cp))
    assert np.array_equal(again.p_values(proba), cp.p_values(proba))


@pytest.mark.parametrize("method", ["absolute", "residual_normalized", "cqr"])
def test_regression_state_round_trips_through_json(method: str) -> None:
    X, y = load_diabetes(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, random_state=4)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=4)
    models = _quantile_models("linear", X_tr, y_tr, 0.9)
    est = Ridge().fit(X_tr, y_tr)
    cp = RegressionConformal.calibrate(
        est, X_cal, y_cal, method=method, random_state=2, quantile_models=models
    )
    state = json.loads(json.dumps(cp.to_state()))
    back = RegressionConformal.from_state(state, quantile_models=models)
    y_pred = est.predict(X_te)
    assert np.array_equal(back.interval(X_te, y_pred), cp.interval(X_te, y_pred))
    again = pickle.loads(pickle.dumps(cp))
    assert np.array_equal(again.interval(X_te, y_pred), cp.interval(X_te, y_pred))


def test_cqr_state_without_models_says_how_to_restore() -> None:
    X, y = load_diabetes(return_X_y=True)
    models = _quantile_models("linear", X[:200], y[:200], 0.9)
    cp = RegressionConformal.calibrate(
        models[1], X[200:400], y[200:400], method="cqr", quantile_models=models
    )
    back = RegressionConformal.from_state(cp.to_state())
    with pytest.raises(CalibrationError, match="quantile_models"):
        back.interval(X[400:], models[1].predict(X[400:]))


def test_pipelines_on_frames_are_not_probed_by_mapie() -> None:
    """The wrappers keep MAPIE from predicting on a zero row of a DataFrame pipeline."""
    X, y = load_wine(return_X_y=True, as_frame=True)
    X_tr, X_cal, y_tr, y_cal = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    cp = ClassificationConformal.calibrate(est, X_cal, y_cal, method="aps", random_state=0)
    assert cp.predict_set(est.predict_proba(X_cal)).any(axis=1).all()


# --------------------------------------------------------------- coverage study
# Split-conformal coverage, derived tolerance.
#
# With n calibration rows and distinct scores, the set/interval at level 1 - a covers a
# fresh row with probability C ~ Beta(k, n + 1 - k), k = ceil((n + 1)(1 - a)), over the
# calibration draw, so E[C] = k / (n + 1) lies in [1 - a, 1 - a + 1 / (n + 1)]. This only
# uses ranks of exchangeable values, so it holds exactly for a uniformly random split of a
# fixed pool of rows the model never saw (the model is trained once on other rows). The
# fraction covered among m test rows is then Beta-Binomial(m, k, n + 1 - k) / m, with
#     Var = p (1 - p) (n + 1 + m) / ((n + 2) m),   p = k / (n + 1).
# The mean over K independent random splits has sd = sqrt(Var / K); we accept
#     1 - a - 4 sd  <=  mean coverage  <=  1 - a + 1 / (n + 1) + 4 sd
# (z = 4: a false alarm has probability < 1e-4 per bound). Ties in the scores or a
# conservative score (APS with include_last_label=True, CQR's two one-sided corrections)
# only raise coverage, so those are held to the lower bound only.
N_SPLITS = 200


def _coverage_bounds(n: int, m: int, alpha: float, splits: int) -> tuple[float, float]:
    k = int(np.ceil((n + 1) * (1 - alpha)))
    p = k / (n + 1)
    sd = np.sqrt(p * (1 - p) * (n + 1 + m) / ((n + 2) * m) / splits)
    return 1 - alpha - 4 * sd, 1 - alpha + 1 / (n + 1) + 4 * sd


def _pool(X: Any, y: Any, model: Any, seed: int = 0) -> tuple[Any, Any, Any]:
    X_tr, X_pool, y_tr, y_pool = train_test_split(X, y, train_size=0.4, random_state=seed)
    return model.fit(X_tr, y_tr), X_pool, y_pool


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "method", "upper"),
    [
        ("digits", "lac", True),
        ("breast_cancer", "lac", True),
        ("wine", "lac", True),
        ("digits", "aps", False),
    ],
)
def test_classification_coverage_over_random_splits(data: str, method: str, upper: bool) -> None:
    X, y = CLF_DATA[data]()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model, X_pool, y_pool = _pool(X, y, model)
    proba_pool = model.predict_proba(X_pool)
    rng = np.random.default_rng(12345)
    alpha = 0.1
    n = len(y_pool) // 2
    m = len(y_pool) - n
    covered = np.empty(N_SPLITS)
    for s in range(N_SPLITS):
        perm = rng.permutation(len(y_pool))
        cal, test = perm[:n], perm[n:]
        cp = ClassificationConformal.calibrate(
            model,
            X_pool[cal],
            y_pool[cal],
            method=method,
            confidence_level=1 - alpha,
            random_state=s,
        )
        sets = cp.predict_set(proba_pool[test])
        covered[s] = sets[np.arange(m), np.searchsorted(cp.classes, y_pool[test])].mean()
    low, high = _coverage_bounds(n, m, alpha, N_SPLITS)
    assert covered.mean() >= low, (covered.mean(), low)
    if upper:
        assert covered.mean() <= high, (covered.mean(), high)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "method", "upper"),
    [
        ("diabetes", "absolute", True),
        ("make_regression", "absolute", True),
        ("diabetes", "residual_normalized", True),
        ("diabetes", "cqr", False),
    ],
)
def test_regression_coverage_over_random_splits(data: str, method: str, upper: bool) -> None:
    X, y = REG_DATA[data]()
    X_tr, X_pool, y_tr, y_pool = train_test_split(X, y, train_size=0.4, random_state=0)
    model = Ridge().fit(X_tr, y_tr)
    models = _quantile_models("gbr", X_tr, y_tr, 0.9) if method == "cqr" else None
    y_hat = model.predict(X_pool)
    rng = np.random.default_rng(54321)
    alpha = 0.1
    n = len(y_pool) // 2
    m = len(y_pool) - n
    covered = np.empty(N_SPLITS)
    for s in range(N_SPLITS):
        perm = rng.permutation(len(y_pool))
        cal, test = perm[:n], perm[n:]
        cp = RegressionConformal.calibrate(
            model,
            X_pool[cal],
            y_pool[cal],
            method=method,
            confidence_level=1 - alpha,
            random_state=s,
            quantile_models=models,
        )
        bounds = cp.interval(X_pool[test], y_hat[test])
        covered[s] = ((bounds[:, 0] <= y_pool[test]) & (y_pool[test] <= bounds[:, 1])).mean()
    # residual_normalized spends a quarter of the calibration rows on its residual model.
    n_eff = len(cp.calibration_scores)
    low, high = _coverage_bounds(n_eff, m, alpha, N_SPLITS)
    assert covered.mean() >= low, (covered.mean(), low)
    if upper:
        assert covered.mean() <= high, (covered.mean(), high)


@pytest.mark.parametrize(
    ("data", "model", "method"),
    [
        ("digits", "rf", "lac"),
        ("digits", "hgb", "lac"),
        ("breast_cancer", "logreg", "lac"),
        ("digits", "hgb", "aps"),
        ("make_classification", "rf", "raps"),
    ],
)
def test_single_row_path_equals_batch_path(data: str, model: str, method: str) -> None:
    """Small batches count in plain Python; the results must be the numpy path's, bit for bit."""
    est, X_cal, y_cal, X_te, _ = _split(data, model, classification=True)
    sp = SafePredictor(est, conformity_score=method, random_state=7, log="off")
    sp.calibrate(X_cal, y_cal)
    batch = sp.decide(X_te[:120])
    for i in range(120):
        one = sp.decide(X_te[i : i + 1])
        assert one.confidence[0] == batch.confidence[i]
        assert np.array_equal(one.set_mask, batch.set_mask[i : i + 1])
        assert one.actions[0] == batch.actions[i]
    for i in range(0, 120, 3):  # small multi-row batches take the same plain-Python path
        few = sp.decide(X_te[i : i + 3])
        assert np.array_equal(few.confidence, batch.confidence[i : i + 3])
        assert np.array_equal(few.set_mask, batch.set_mask[i : i + 3])


def test_cqr_quantile_model_failure_fails_closed_per_row() -> None:
    """A quantile model that raises on one row abstains that row only (model_error)."""
    X, y = load_diabetes(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, random_state=5)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=5)
    models = _quantile_models("gbr", X_tr, y_tr, 0.9)  # GradientBoosting rejects NaN
    median = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X_tr, y_tr)
    sp = SafePredictor(median, quantile_models=tuple(models), guards="off", log="off")
    sp.calibrate(X_cal, y_cal)
    X_bad = X_te[:20].copy()
    X_bad[7, 2] = np.nan  # the HGB point model scores it; the quantile models cannot
    decisions = sp.decide(X_bad)
    assert decisions.actions[7] == "abstain"
    assert "model_error" in decisions.reasons[7]
    assert decisions[7].interval is None
    ok = np.arange(20) != 7
    assert decisions.intervals is not None
    expected = sp.conformal_.interval(X_te[:20][ok], median.predict(X_te[:20][ok]))
    assert np.array_equal(decisions.intervals[ok], expected)


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_empty_batch_gives_empty_decisions(method: str) -> None:
    est, X_cal, y_cal, X_te, _ = _split("iris", "logreg", classification=True)
    sp = SafePredictor(est, conformity_score=method, random_state=0, log="off")
    decisions = sp.calibrate(X_cal, y_cal).decide(X_te[:0])
    assert len(decisions) == 0
    assert decisions.set_mask is not None
    assert decisions.set_mask.shape == (0, 3)


# ----------------------------------------------------- MAPIE private API, wrapped
def test_each_wrapped_mapie_private_name_still_works() -> None:
    """One wrapper per private MAPIE name, exercised on real MAPIE objects.

    If a MAPIE upgrade renames one of them, this test fails with the message of
    ``conformal._mapie.mapie_private`` (naming the MAPIE version and the missing name).
    """
    X, y = _make_clf()
    X_fit, X_cal, y_fit, y_cal = train_test_split(X, y, test_size=0.5, random_state=0)
    clf = LogisticRegression(max_iter=1000).fit(X_fit, y_fit)
    split = SplitConformalClassifier(
        estimator=_PrefitClassifier(clf),
        confidence_level=0.9,
        conformity_score="raps",
        prefit=True,
        random_state=0,
    )
    split.conformalize(X_cal, y_cal)
    inner = _classifier_backend(split)
    raw = np.asarray(inner.conformity_scores_, dtype=np.float64)
    assert 0 < raw.shape[0] <= len(y_cal)  # RAPS holds some rows out to choose k_star
    score_fn = inner.conformity_score_function_
    # choosing k_star / lambda_star is part of the public quantile step, as in calibrate
    score_fn.get_conformity_score_quantiles(
        raw, np.array([0.1]), "prefit", agg_scores="mean", include_last_label=True
    )
    regularized = _raps_regularized(score_fn, raw)
    assert regularized.size == raw.size  # one score per calibration row
    # RAPS adds lambda_star * max(0, rank - k_star) >= 0 to every score.
    flat_raw, flat_reg = raw.ravel(), regularized.ravel()
    kept = ~np.isnan(flat_raw)
    assert np.all(flat_reg[kept] >= flat_raw[kept] - 1e-12)

    Xr, yr = load_diabetes(return_X_y=True)
    Xr_fit, Xr_cal, yr_fit, yr_cal = train_test_split(Xr, yr, test_size=0.5, random_state=0)
    reg = Ridge().fit(Xr_fit, yr_fit)
    rsplit = SplitConformalRegressor(
        estimator=_PrefitRegressor(reg), confidence_level=0.9, prefit=True
    )
    rsplit.conformalize(Xr_cal, yr_cal)
    residuals = np.asarray(_regressor_backend(rsplit).conformity_scores_, dtype=np.float64)
    np.testing.assert_allclose(residuals, np.abs(yr_cal - reg.predict(Xr_cal)))


@pytest.mark.parametrize(
    ("wrapper", "name"),
    [
        (_classifier_backend, "_mapie_classifier"),
        (_regressor_backend, "_mapie_regressor"),
        (lambda obj: _raps_regularized(obj, np.zeros(3)), "_regularize_conformity_score"),
    ],
)
def test_a_changed_mapie_private_name_fails_loudly(
    wrapper: Callable[[Any], Any], name: str
) -> None:
    import mapie

    class Changed:  # what a MAPIE object looks like after the private name is renamed
        pass

    with pytest.raises(
        CalibrationError, match=rf"MAPIE {mapie.__version__} has no Changed\.{name}"
    ):
        wrapper(Changed())


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95, 0.99, 0.333, 0.7])
def test_alpha_is_mapies(level: float) -> None:
    # MAPIE keeps its alpha privately; compare with it here so a change shows up.
    assert _alpha(level) == SplitConformalClassifier(confidence_level=level)._alphas[0]
    assert _alpha(level) == ConformalizedQuantileRegressor(confidence_level=level)._alpha


def test_regression_quantile_is_mapies() -> None:
    from mapie.utils import _compute_regression_quantile  # the reference it replaces

    rng = np.random.default_rng(0)
    for n in (9, 10, 57, 200):
        scores = rng.exponential(size=n)
        scores[rng.random(n) < 0.1] = np.nan  # MAPIE ignores NaN scores; so do we
        for level in (0.5, 0.8, 0.9, 0.97):
            valid = int(np.sum(~np.isnan(scores)))
            if np.ceil(level * (valid + 1)) > valid:  # no finite quantile: both refuse
                with pytest.raises(ValueError, match="too low"):
                    _compute_regression_quantile(scores[:, np.newaxis], np.array([level]))
                with pytest.raises(CalibrationError, match="too few"):
                    _regression_quantile(scores, level)
                continue
            expected = _compute_regression_quantile(
                scores[:, np.newaxis], np.array([level]), axis=0
            )
            assert _regression_quantile(scores, level) == float(np.ravel(expected)[0])
    with pytest.raises(CalibrationError, match="too few"):
        _regression_quantile(np.arange(5.0), 0.9)
