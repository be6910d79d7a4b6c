"""Model adapters (#19): what a wrapped object is and how it is called."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier

from safepredict import ConfigError, SafePredictor
from safepredict.adapters import AsyncModel, adapt


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any, Any]:
    X, y = load_iris(return_X_y=True)
    return X, y, LogisticRegression(max_iter=1000).fit(X[::2], y[::2])


class OnlyProba:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict_proba(self, X: Any) -> Any:
        return self.inner.predict_proba(X)


class OnlyPredict:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict(self, X: Any) -> Any:
        return self.inner.predict(X)


def test_sklearn_models_are_called_as_they_are(iris: tuple[Any, Any, Any]) -> None:
    _, _, model = iris
    assert adapt(model, "classification") is model


def test_object_without_classes_needs_classes(iris: tuple[Any, Any, Any]) -> None:
    """The issue's reproduction: predict_proba without classes_ was refused."""
    X, y, model = iris
    with pytest.raises(ConfigError, match="classes="):
        SafePredictor(OnlyProba(model), log="off").calibrate(X[1::2], y[1::2])
    sp = SafePredictor(OnlyProba(model), classes=[0, 1, 2], log="off")
    sp.calibrate(X[1::2], y[1::2])
    ref = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    assert sp.decide(X).actions.tolist() == ref.decide(X).actions.tolist()


def test_classes_contradicting_the_model_is_refused(iris: tuple[Any, Any, Any]) -> None:
    X, y, model = iris
    with pytest.raises(ConfigError, match="differs from the model's classes_"):
        SafePredictor(model, classes=[2, 1, 0], log="off").calibrate(X[1::2], y[1::2])
    with pytest.raises(ConfigError, match="distinct labels"):
        SafePredictor(OnlyProba(model), classes=[0, 0, 1], log="off").calibrate(X, y)


def test_plain_callable(iris: tuple[Any, Any, Any]) -> None:
    X, y, model = iris
    with pytest.raises(ConfigError, match="task="):
        SafePredictor(model.predict_proba, log="off").calibrate(X[1::2], y[1::2])
    fn = model.predict_proba
    sp = SafePredictor(fn, task="classification", classes=["a", "b", "c"], log="off")
    sp.calibrate(X[1::2], np.array(["a", "b", "c"])[y[1::2]])
    d = sp.decide(X[:10])
    expected = np.array(["a", "b", "c"])[model.predict(X[:10])]
    assert d.predictions.tolist() == expected.tolist()


def test_regression_callable() -> None:
    X, y = load_diabetes(return_X_y=True)
    ridge = Ridge().fit(X[:200], y[:200])
    sp = SafePredictor(ridge.predict, task="regression", log="off").calibrate(X[200:], y[200:])
    assert np.allclose(sp.decide(X[:5]).predictions.astype(float), ridge.predict(X[:5]))


def test_label_like_predict_only_is_not_guessed(iris: tuple[Any, Any, Any]) -> None:
    """The issue's reproduction: labels 0/1/2 were silently a regression."""
    X, y, model = iris
    with pytest.raises(ConfigError, match="look like class labels"):
        SafePredictor(OnlyPredict(model), log="off").calibrate(X[1::2], y[1::2])
    # explicit task: the user's call
    SafePredictor(OnlyPredict(model), task="regression", log="off").calibrate(X[1::2], y[1::2])
    # continuous outputs: a regression, detected
    Xd, yd = load_diabetes(return_X_y=True)
    ridge = Ridge().fit(Xd[:200], yd[:200])
    sp = SafePredictor(OnlyPredict(ridge), log="off").calibrate(Xd[200:], yd[200:])
    assert sp.task_ == "regression"


class Slow:
    """An async remote model; latency per call set by the test, calls counted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.delay = 0.0
        self.calls = 0

    async def predict_proba(self, X: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.inner.predict_proba(X)


def test_async_model_timeout_abstains(iris: tuple[Any, Any, Any]) -> None:
    X, y, model = iris
    remote = Slow(model)
    sp = SafePredictor(remote, classes=[0, 1, 2], log="off").calibrate(X[1::2], y[1::2])
    sp_timed = SafePredictor(
        AsyncModel(remote.predict_proba, timeout_s=0.05, retries=2),
        task="classification",
        classes=[0, 1, 2],
        log="off",
    ).calibrate(X[1::2], y[1::2])
    ref = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])

    async def run() -> tuple[Any, Any, float, int]:
        fast = await sp.adecide(X[:20])
        remote.delay, remote.calls = 0.2, 0
        t = time.perf_counter()
        slow = await sp_timed.adecide(X[:20])
        return fast, slow, time.perf_counter() - t, remote.calls

    fast, slow, elapsed, calls = asyncio.run(run())
    assert fast.actions.tolist() == ref.decide(X[:20]).actions.tolist()
    assert set(slow.actions.tolist()) == {"abstain"}
    assert all("model_error:timeout" in r for r in slow.reasons)
    assert calls == 3  # one call and two retries, never one per row
    assert elapsed < 2.0  # 3 x 0.05 s (plus a loaded machine's stalls), not 20 rows x 0.2 s


def test_async_model_runs_on_the_callers_loop(iris: tuple[Any, Any, Any]) -> None:
    """A client bound to the caller's loop (e.g. an aiohttp session) must work."""
    X, y, model = iris
    seen: list[Any] = []

    async def remote(rows: Any) -> Any:
        seen.append(asyncio.get_running_loop())
        return model.predict_proba(rows)

    sp = SafePredictor(remote, task="classification", classes=[0, 1, 2], log="off")
    sp.calibrate(X[1::2], y[1::2])

    async def run() -> Any:
        await sp.adecide(X[:3])
        return asyncio.get_running_loop()

    loop = asyncio.run(run())
    assert seen[-1] is loop


def test_async_model_parameters_checked() -> None:
    async def f(X: Any) -> Any:
        return X

    with pytest.raises(ConfigError, match="timeout_s > 0"):
        AsyncModel(f, timeout_s=0)


def test_xgboost_auto_uses_tree_shap() -> None:
    """The issue's reproduction: XGBClassifier fell back to permutation SHAP."""
    xgb = pytest.importorskip("xgboost")
    X, y = load_breast_cancer(return_X_y=True)
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X[::2], y[::2])
    sp = SafePredictor(model, explainer="auto", log="off").calibrate(X[1::2], y[1::2])
    assert sp.explainer_.prepare() == "tree"
    assert sp.explainer_.state.space == "margin"
    sp_tree = SafePredictor(model, explainer="tree", log="off").calibrate(X[1::2], y[1::2])
    d = sp_tree.decide(X[:40])
    explained = [e for e in d.explanations or [] if e is not None]
    assert explained
    assert not any("explanation_skipped" in why for r in d.reasons for why in r)


def test_tree_request_on_unsupported_model_fails_at_calibrate(
    iris: tuple[Any, Any, Any],
) -> None:
    X, y, _ = iris
    knn = KNeighborsClassifier().fit(X[::2], y[::2])
    with pytest.raises(ConfigError, match="explainer='tree'"):
        SafePredictor(knn, explainer="tree", log="off").calibrate(X[1::2], y[1::2])
