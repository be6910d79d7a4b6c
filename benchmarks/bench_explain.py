"""Explanation cost: per-row latency per explainer/model pair, and end-to-end decide cost.

Run:  PYTHONPATH=src python benchmarks/bench_explain.py [--quick]

Part 1 times ``ModelExplainer.explain`` on one row at a time (after a warm-up that
builds the explainer and compiles shap's numba code), median over rows.
Part 2 times ``SafePredictor.decide`` on a bundled dataset's test split three ways,
interleaved in one process: no explainer, the default policy (explain only the
rows that are not accepted, i.e. routed to a human), and a policy explaining every
row. Medians of repeated runs; ratios against "no explainer".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from safepredict import SafePredictor
from safepredict.explain import ExplainerState, ModelExplainer


def split(X: Any, y: Any) -> tuple[Any, Any, Any, Any, Any, Any]:
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.5, random_state=0)
    X_cal, X_te, y_cal, y_te = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    return X_tr, y_tr, X_cal, y_cal, X_te, y_te


def mixed_diabetes() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X = X.copy()
    X["bmi_band"] = pd.cut(X["bmi"], 4, labels=["low", "mid", "high", "very_high"]).astype(str)
    return X.drop(columns=["bmi"]), y


def cases() -> list[tuple[str, str, Callable[[], Any], Any, Any, str, str]]:
    cancer = load_breast_cancer(return_X_y=True)
    wine = load_wine(return_X_y=True)
    iris = load_iris(return_X_y=True)
    diabetes = load_diabetes(return_X_y=True)
    mixed = mixed_diabetes()
    ct = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["bmi_band"])], remainder="passthrough"
    )
    c, r = "classification", "regression"
    return [
        (
            "RandomForest(100, full depth)",
            "cancer",
            lambda: RandomForestClassifier(100, random_state=0),
            *cancer,
            c,
            "auto",
        ),
        (
            "RandomForest(100, full depth)",
            "cancer",
            lambda: RandomForestClassifier(100, random_state=0),
            *cancer,
            c,
            "permutation",
        ),
        (
            "HistGradientBoosting(100)",
            "cancer",
            lambda: HistGradientBoostingClassifier(random_state=0),
            *cancer,
            c,
            "auto",
        ),
        (
            "HistGradientBoosting(100)",
            "wine",
            lambda: HistGradientBoostingClassifier(random_state=0),
            *wine,
            c,
            "auto",
        ),
        (
            "Scaler+LogisticRegression",
            "cancer",
            lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            *cancer,
            c,
            "auto",
        ),
        ("Ridge", "diabetes", Ridge, *diabetes, r, "auto"),
        ("KNN", "iris", KNeighborsClassifier, *iris, c, "auto"),
        (
            "Scaler+KNN",
            "wine",
            lambda: make_pipeline(StandardScaler(), KNeighborsClassifier()),
            *wine,
            c,
            "auto",
        ),
        (
            "OneHot+HGB pipeline",
            "diabetes+band",
            lambda: make_pipeline(ct, HistGradientBoostingRegressor(random_state=0)),
            *mixed,
            r,
            "auto",
        ),
    ]


def rows(X: Any, idx: Any) -> Any:
    return X.iloc[idx] if hasattr(X, "iloc") else np.asarray(X)[idx]


def per_row(n_rows: int) -> list[dict[str, Any]]:
    out = []
    for name, data, make, X, y, task, requested in cases():
        X_tr, y_tr, X_cal, _, X_te, _ = split(X, y)
        model = make().fit(X_tr, y_tr)
        classes = getattr(model, "classes_", None)
        state = ExplainerState.fit(X_cal, task=task, requested=requested, classes=classes)
        ex = ModelExplainer(model, state)
        ex.prepare()  # builds the explainer, warms up, measures
        times = []
        for i in range(min(n_rows, len(X_te))):
            t = time.perf_counter()
            ex.explain(rows(X_te, [i]))
            times.append((time.perf_counter() - t) * 1000.0)
        batch = rows(X_te, np.arange(min(50, len(X_te))))
        t = time.perf_counter()
        ex.explain(batch)
        batch_ms = (time.perf_counter() - t) * 1000.0 / len(batch)
        out.append(
            {
                "model": name,
                "data": data,
                "explainer": f"{requested}->{ex.method}",
                "ms_per_row": statistics.median(times),
                "ms_per_row_batch50": batch_ms,
            }
        )
        print(f"  {out[-1]}", file=sys.stderr)
    return out


def end_to_end(repeats: int) -> dict[str, Any]:
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, y_tr, X_cal, y_cal, X_te, _ = split(X, y)
    model = RandomForestClassifier(100, random_state=0).fit(X_tr, y_tr)
    routed_policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "min_confidence": 0.95},
            {"name": "human", "action": "review"},
        ]
    }
    all_policy = dict(routed_policy, explain=["auto", "human"])
    variants = {
        "no explainer": SafePredictor(model, tiers=routed_policy, log="off"),
        "routed rows only": SafePredictor(model, tiers=routed_policy, explainer="auto", log="off"),
        "all rows": SafePredictor(model, tiers=all_policy, explainer="auto", log="off"),
    }
    for sp in variants.values():
        sp.calibrate(X_cal, y_cal)
        sp.decide(X_te)  # warm-up: builds the explainer
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):  # interleaved, so load on the machine hits all variants alike
        for k, sp in variants.items():
            t = time.perf_counter()
            d = sp.decide(X_te)
            times[k].append(time.perf_counter() - t)
    routed = int(np.sum(d.actions != "accept"))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n_rows": len(X_te), "n_routed": routed, "median_s": med}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rows and repeats")
    args = parser.parse_args()
    n_rows, repeats = (5, 3) if args.quick else (30, 7)

    print("## Per-row explanation latency (median of single-row calls)\n")
    print(
        "| model | data | explainer (requested->chosen) "
        "| ms/row (1 row/call) | ms/row (50 rows/call) |"
    )
    print("|---|---|---|---:|---:|")
    for r in per_row(n_rows):
        print(
            f"| {r['model']} | {r['data']} | {r['explainer']} | {r['ms_per_row']:.2f} "
            f"| {r['ms_per_row_batch50']:.2f} |"
        )

    e2e = end_to_end(repeats)
    base = e2e["median_s"]["no explainer"]
    print(
        f"\n## End-to-end decide, RandomForest(100) on breast cancer test split "
        f"({e2e['n_rows']} rows, {e2e['n_routed']} routed to review)\n"
    )
    print("| variant | median decide (ms) | ratio vs no explainer |")
    print("|---|---:|---:|")
    for k, v in e2e["median_s"].items():
        print(f"| {k} | {v * 1000:.1f} | {v / base:.2f} |")
    routed_s, all_s = e2e["median_s"]["routed rows only"], e2e["median_s"]["all rows"]
    print(f"\nall rows / routed rows only = {all_s / routed_s:.2f}")


if __name__ == "__main__":
    main()
