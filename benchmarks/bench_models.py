"""Model adapters and boosting libraries: what they cost.

Run:  PYTHONPATH=src python benchmarks/bench_models.py [--quick]

Part 0: the adapter alone (a constant model called bare and through
:class:`~safepredict.adapters.CallableModel`): the adapter layer's own cost.

Part 1: the adapter layer's cost per single-row ``decide``. The same fitted
LogisticRegression is wrapped three ways, timed interleaved in one process
(first the model stage alone, ``run_model`` on one row, where the adapter is the
only difference; then ``decide`` end to end, where it drowns in noise):
as the estimator itself (no adapter object), through ``predict_proba`` without
``classes_`` (``classes=``, a :class:`~safepredict.adapters.CallableModel`), and
as a plain function. Reported: medians, the ratio to the bare estimator and the
difference in microseconds per row (goal: at most 2 us).

Part 2: per-row explanation latency (tree SHAP, via ``ModelExplainer.explain``
on one row at a time, after a warm-up) for xgboost, lightgbm and catboost
classifiers and regressors; libraries that are not installed are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from typing import Any

import numpy as np
from _timing import median_seconds
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression

from safepredict import SafePredictor
from safepredict.adapters import CallableModel
from safepredict.model import run_model


class _OnlyProba:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict_proba(self, X: Any) -> Any:
        return self.inner.predict_proba(X)


def adapter_overhead(repeats: int) -> None:
    """The adapter alone: a constant-output model called bare and through each adapter."""
    out = np.array([[0.25, 0.75]])
    row = np.zeros((1, 4))

    def fn(X: Any) -> Any:
        return out

    variants = {
        "bare function": fn,
        "CallableModel": CallableModel(fn, "classification", [0, 1]).predict_proba,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    n = 20000
    for _ in range(repeats):
        for name, f in variants.items():
            t = time.perf_counter()
            for _ in range(n):
                f(row)
            times[name].append((time.perf_counter() - t) / n)
    base = statistics.median(times["bare function"])
    print("Adapter overhead per call (constant model, so only the adapter is timed)")
    print(f"{'call':<26}{'median us':>12}{'ratio':>8}{'extra us':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<26}{med * 1e6:>12.3f}{med / base:>8.3f}{(med - base) * 1e6:>10.3f}")
    print("(an estimator with predict_proba and classes_ is called as it is: no adapter)\n")


def adapter_cost(repeats: int) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(max_iter=5000).fit(X[::2], y[::2])
    kw: dict[str, Any] = {"log": "off", "guards": "off"}
    cal = (X[1::2], y[1::2])
    variants = {
        "estimator": SafePredictor(model, **kw).calibrate(*cal),
        "no classes_ (classes=)": SafePredictor(_OnlyProba(model), classes=[0, 1], **kw).calibrate(
            *cal
        ),
        "plain function": SafePredictor(
            model.predict_proba, task="classification", classes=[0, 1], **kw
        ).calibrate(*cal),
    }
    row = X[:1]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):  # interleaved: drift hits every variant alike
        for name, sp in variants.items():
            times[name].append(median_seconds(lambda sp=sp: sp.decide(row), 200, warmup=20))
    stage: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):  # the model stage alone: where the adapter sits
        for name, sp in variants.items():
            adapted = sp.model_

            def call(adapted: Any = adapted) -> Any:
                return run_model(adapted, "classification", row, n_classes=2)

            stage[name].append(median_seconds(call, 2000, warmup=100))
    base = statistics.median(stage["estimator"])
    print("Adapter layer, model stage on one row (run_model, LogisticRegression)")
    print(f"{'wrapping':<26}{'median us':>12}{'ratio':>8}{'extra us':>10}")
    for name, ts in stage.items():
        med = statistics.median(ts)
        print(f"{name:<26}{med * 1e6:>12.2f}{med / base:>8.3f}{(med - base) * 1e6:>10.2f}")
    base = statistics.median(times["estimator"])
    print("\nSingle-row decide end to end (LogisticRegression, breast_cancer, guards off)")
    print(f"{'wrapping':<26}{'median us':>12}{'ratio':>8}{'extra us':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<26}{med * 1e6:>12.1f}{med / base:>8.3f}{(med - base) * 1e6:>10.2f}")


def _boosters() -> list[tuple[str, Any, str]]:
    out: list[tuple[str, Any, str]] = []
    if importlib.util.find_spec("xgboost"):
        import xgboost as xgb

        out += [
            ("XGBClassifier", xgb.XGBClassifier(n_estimators=100, max_depth=4), "c"),
            ("XGBRegressor", xgb.XGBRegressor(n_estimators=100, max_depth=4), "r"),
        ]
    if importlib.util.find_spec("lightgbm"):
        import lightgbm as lgb

        out += [
            ("LGBMClassifier", lgb.LGBMClassifier(n_estimators=100, verbose=-1), "c"),
            ("LGBMRegressor", lgb.LGBMRegressor(n_estimators=100, verbose=-1), "r"),
        ]
    if importlib.util.find_spec("catboost"):
        import catboost as cb

        out += [
            (
                "CatBoostClassifier",
                cb.CatBoostClassifier(iterations=100, verbose=0, allow_writing_files=False),
                "c",
            ),
            (
                "CatBoostRegressor",
                cb.CatBoostRegressor(iterations=100, verbose=0, allow_writing_files=False),
                "r",
            ),
        ]
    return out


def explain_latency(n_rows: int) -> None:
    Xc, yc = load_breast_cancer(return_X_y=True)
    Xr, yr = load_diabetes(return_X_y=True)
    print("\nPer-row tree SHAP latency (explain one row at a time, median)")
    print(f"{'model':<22}{'method':>8}{'space':>12}{'ms/row':>10}")
    for name, model, kind in _boosters():
        X, y = (Xc, yc) if kind == "c" else (Xr, yr)
        model.fit(X[::2], y[::2])
        sp = SafePredictor(model, explainer="auto", log="off", guards="off")
        sp.calibrate(X[1::2], y[1::2])
        explainer = sp.explainer_
        explainer.prepare()
        proba = model.predict_proba(X[:n_rows]) if kind == "c" else None
        times = []
        for i in range(n_rows):
            idx = None if proba is None else np.array([int(np.argmax(proba[i]))])
            t = time.perf_counter()
            explainer.explain(X[i : i + 1], idx)
            times.append(time.perf_counter() - t)
        state = explainer.state
        ms = statistics.median(times) * 1e3
        print(f"{name:<22}{state.method!s:>8}{state.space!s:>12}{ms:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    adapter_overhead(5 if args.quick else 25)
    adapter_cost(3 if args.quick else 15)
    explain_latency(20 if args.quick else 200)


if __name__ == "__main__":
    main()
