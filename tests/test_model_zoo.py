"""Model zoo: every kind of model safepredict wraps, through the whole lifecycle (#19).

For each kind: conformal coverage within bounds on held-out rows, guards (a row
with a missing value and a far out-of-distribution row are never accepted),
tiers (every action is a policy action; model failures abstain), a persistence
round trip that decides identically, and, where the kind supports it,
explanations whose contributions add up to the explained output. The non-tabular
kinds (a TF-IDF text pipeline on a generated corpus, an MLP on (n, 8, 8) digit
arrays) go through the same lifecycle with their own guards and explanations.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from safepredict import SafePredictor
from safepredict.adapters import AsyncModel
from safepredict.explain import margin_output

LEVEL = 0.9
N_TRAIN, N_CAL, N_TEST = 1200, 800, 800


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    X, y = make_classification(
        n_samples=N_TRAIN + N_CAL + N_TEST,
        n_features=6,
        n_informative=4,
        n_redundant=0,
        n_classes=3,
        class_sep=1.0,
        random_state=0,
    )
    a, b = N_TRAIN, N_TRAIN + N_CAL
    return {"train": (X[:a], y[:a]), "cal": (X[a:b], y[a:b]), "test": (X[b:], y[b:])}


def _coverage_bound(n_cal: int, n_test: int, alpha: float) -> float:
    """Four standard errors of the test coverage of one calibration split.

    Split-conformal coverage given the calibration set is Beta-distributed with
    variance ~ alpha (1 - alpha) / (n_cal + 2); the test share adds the binomial
    alpha (1 - alpha) / n_test. Four standard errors: a false failure ~ 6e-5.
    """
    var = alpha * (1 - alpha) * (1 / (n_cal + 2) + 1 / n_test)
    return 4 * math.sqrt(var)


def _covered(sp: SafePredictor, X: Any, y: Any) -> float:
    d = sp.decide(X)
    assert d.set_mask is not None
    idx = np.searchsorted(np.asarray(sp.classes_), y)
    return float(d.set_mask[np.arange(len(y)), idx].mean())


def _fitted(kind: str, X: Any, y: Any) -> tuple[Any, dict[str, Any], bool]:
    """(model given to SafePredictor, extra SafePredictor params, explainable)."""
    if kind == "linear":
        return LogisticRegression(max_iter=1000).fit(X, y), {}, True
    if kind == "tree":
        return DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y), {}, True
    if kind == "forest":
        return RandomForestClassifier(30, max_depth=6, random_state=0).fit(X, y), {}, True
    if kind == "pipeline":
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        return pipe.fit(X, y), {}, True
    if kind == "xgboost":
        xgb = pytest.importorskip("xgboost")
        return xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(X, y), {}, True
    if kind == "lightgbm":
        lgb = pytest.importorskip("lightgbm")
        model = lgb.LGBMClassifier(n_estimators=30, verbose=-1, random_state=0)
        return model.fit(X, y), {}, True
    if kind == "catboost":
        cb = pytest.importorskip("catboost")
        model = cb.CatBoostClassifier(
            iterations=30, depth=4, verbose=0, random_seed=0, allow_writing_files=False
        )
        return model.fit(X, y), {}, True
    inner = LogisticRegression(max_iter=1000).fit(X, y)
    classes = {"classes": inner.classes_.tolist(), "task": "classification"}
    if kind == "no_classes":
        return _OnlyProba(inner), classes, False
    if kind == "function":
        return _Function(inner), classes, False
    assert kind == "async"
    return AsyncModel(_Remote(inner), timeout_s=2.0, retries=1), classes, False


class _OnlyProba:
    """A client for a remote model: predict_proba, no classes_."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict_proba(self, X: Any) -> Any:
        return self.inner.predict_proba(X)


class _Function:
    """A plain function (a class only so that the persistence fingerprint can name it)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, X: Any) -> Any:
        return self.inner.predict_proba(X)


class _Remote:
    """An async remote model with latency that fails on rows whose first value is > 3."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, X: Any) -> Any:
        await asyncio.sleep(0.001)
        if np.any(np.asarray(X)[:, 0] > 3.0):
            raise ConnectionError("remote model refused the batch")
        return self.inner.predict_proba(X)


KINDS = [
    "linear",
    "tree",
    "forest",
    "pipeline",
    "xgboost",
    "lightgbm",
    "catboost",
    "no_classes",
    "function",
    "async",
]


@pytest.mark.parametrize("kind", KINDS)
def test_model_zoo(kind: str, data: dict[str, Any], tmp_path: Path) -> None:
    X_tr, y_tr = data["train"]
    X_cal, y_cal = data["cal"]
    X_te, y_te = data["test"]
    model, params, explainable = _fitted(kind, X_tr, y_tr)
    if kind == "async":  # the remote model refuses some rows: keep calibration on the others
        keep = X_cal[:, 0] <= 3.0
        X_cal, y_cal = X_cal[keep], y_cal[keep]
    explainer = "auto" if explainable else None
    sp = SafePredictor(
        model, log="off", random_state=0, explainer=explainer, confidence_level=LEVEL, **params
    ).calibrate(X_cal, y_cal, reference=X_tr)

    # coverage within bounds (rows the model failed on have empty sets: count as misses)
    alpha = 1 - LEVEL
    cov = _covered(sp, X_te, y_te)
    assert abs(cov - LEVEL) <= _coverage_bound(len(y_cal), len(y_te), alpha)

    # guards: a missing value and a far-away row are never accepted
    odd = np.vstack([X_te[:2], X_te[:1] * 0 + 1e3])
    odd[0, 1] = np.nan
    d = sp.decide(odd)
    assert d.actions[0] != "accept"
    assert d.actions[2] != "accept"
    assert d.guard_flagged[0]
    assert d.guard_flagged[2]

    # tiers: every action is a policy action; a row the model fails on abstains
    d = sp.decide(X_te[:50])
    assert set(d.actions.tolist()) <= {"accept", "review", "abstain"}
    if kind == "async":
        bad = X_te[:3].copy()
        bad[1, 0] = 5.0
        db = sp.decide(bad)
        assert db.actions[1] == "abstain"
        assert "model_error" in db.reasons[1]
        assert db.actions[0] == d.actions[0]

    # persistence round trip: the same decisions
    path = sp.save(tmp_path / "sp.json")
    back = SafePredictor.load(path, model=model)
    d2 = back.decide(X_te[:50])
    assert d2.actions.tolist() == d.actions.tolist()
    assert np.array_equal(d2.set_mask, d.set_mask)

    # explanations: contributions add up to the explained output (margin or probability)
    if explainable:
        explained = [(i, e) for i, e in enumerate(d.explanations or []) if e is not None]
        assert explained, "no row was explained"
        i, e = explained[0]
        row = X_te[i : i + 1]
        assert sp.explainer_.state.method in ("tree", "linear")
        k = int(np.searchsorted(sp.classes_, d.predictions[i]))
        if sp.explainer_.state.space == "margin":
            margin = margin_output(model, row)
            assert margin is not None
            ref = float(margin.reshape(1, -1)[0, k if margin.size > 1 else 0])
        else:
            ref = float(model.predict_proba(row)[0, k])
        assert e.output_value == pytest.approx(ref, abs=1e-4)


def test_coverage_check_can_fail(data: dict[str, Any]) -> None:
    """Negative control: sets calibrated for 60 % coverage fail the 90 % bound."""
    X_tr, y_tr = data["train"]
    X_cal, y_cal = data["cal"]
    X_te, y_te = data["test"]
    model = LogisticRegression(max_iter=1000).fit(X_tr, y_tr)
    sp = SafePredictor(model, log="off", confidence_level=0.6, guards="off")
    sp.calibrate(X_cal, y_cal)
    cov = _covered(sp, X_te, y_te)
    assert abs(cov - LEVEL) > _coverage_bound(len(y_cal), len(y_te), 1 - LEVEL)


# ------------------------------------------------------------ non-tabular kinds (#19)
def _flatten(a: Any) -> Any:
    """(n, 8, 8) digits -> (n, 64): the MLP pipeline's first step."""
    arr = np.asarray(a)
    return arr.reshape(len(arr), -1)


def _nontabular(kind: str, corpus: Any) -> dict[str, Any]:
    """Model, splits, rows the guards must stop, and whether explanations are tokens."""
    if kind == "text":
        X_tr, y_tr = corpus.make(1200, seed=11)
        X_cal, y_cal = corpus.make(800, seed=12)
        X_te, y_te = corpus.make(800, seed=13)
        model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
        odd: Any = ["", "   ", *corpus.gibberish(6, seed=14)]
    else:
        X, y = load_digits(return_X_y=True)
        X = X.reshape(-1, 8, 8)
        order = np.random.default_rng(0).permutation(len(X))
        tr, cal, te = order[:800], order[800:1300], order[1300:]
        X_tr, y_tr, X_cal, y_cal, X_te, y_te = X[tr], y[tr], X[cal], y[cal], X[te], y[te]
        model = make_pipeline(
            FunctionTransformer(_flatten),
            MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0),
        )
        odd = np.random.default_rng(5).uniform(0, 16, size=(4, 8, 8))
        odd[0, 0, 0] = np.nan
    return {
        "model": model.fit(X_tr, y_tr),
        "cal": (X_cal, y_cal),
        "test": (X_te, y_te),
        "odd": odd,
    }


@pytest.mark.parametrize("kind", ["text", "mlp_arrays"])
def test_model_zoo_nontabular(kind: str, corpus: Any, tmp_path: Path) -> None:
    case = _nontabular(kind, corpus)
    model = case["model"]
    X_cal, y_cal = case["cal"]
    X_te, y_te = case["test"]
    sp = SafePredictor(
        model, log="off", random_state=0, explainer="auto", confidence_level=LEVEL
    ).calibrate(X_cal, y_cal)

    # coverage within bounds
    cov = _covered(sp, X_te, y_te)
    assert abs(cov - LEVEL) <= _coverage_bound(len(y_cal), len(y_te), 1 - LEVEL)

    # guards: empty / gibberish text, a NaN or noise image is never accepted
    d_odd = sp.decide(case["odd"])
    assert not (d_odd.actions == "accept").any()
    assert d_odd.guard_flagged.all()

    # tiers: every action is a policy action
    d = sp.decide(X_te[:50])
    assert set(d.actions.tolist()) <= {"accept", "review", "abstain"}

    # persistence round trip: the same decisions
    back = SafePredictor.load(sp.save(tmp_path / "sp.json"), model=model)
    d2 = back.decide(X_te[:50])
    assert d2.actions.tolist() == d.actions.tolist()
    assert np.array_equal(d2.set_mask, d.set_mask)

    # explanations: tokens adding up to the logit (text), a named skip (arrays)
    rows = [i for i, e in enumerate(d.explanations or []) if e is not None]
    if kind == "text":
        assert rows, "no row was explained"
        i = rows[0]
        e = d.explanations[i]  # type: ignore[index]
        k = int(np.searchsorted(sp.classes_, d.predictions[i]))
        logit = model.decision_function(X_te[i : i + 1])[0, k]
        assert e.method == "tokens"
        assert e.output_value == pytest.approx(logit, abs=1e-9)
    else:  # the noise images were scored, flagged and so explained: unsupported
        assert not rows
        assert all("explanation_skipped:unsupported" in d_odd.reasons[i] for i in (1, 2, 3))
