"""How much does ``SafePredictor.decide`` cost on top of the bare model?

Prints, side by side in one run, the MEDIAN time of:

- the bare model (``predict_proba`` for classifiers, ``predict`` for regressors),
- ``SafePredictor.decide`` with guards off (numpy input, ``log="off"``, no explainer),
- ``SafePredictor.decide`` with the default guards (``guards="auto"``),
- MAPIE's ``predict_set`` / ``predict_interval`` on the same calibration,

for one row and for a 10,000-row batch, with the overhead over the bare model in
microseconds (median of the per-repeat differences) and as a ratio of medians.
Every measurement is interleaved (one call of each in turn per repeat) so machine
noise hits all columns alike. BLAS/OpenMP pools are
limited to one thread so a shared machine gives stable numbers.

Run::

    PYTHONPATH=src python benchmarks/bench_decide.py [--repeats 400] [--batch-repeats 7]
        [--only LogisticRegression]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import interleaved_seconds
from mapie.classification import SplitConformalClassifier
from mapie.regression import SplitConformalRegressor
from numpy.typing import NDArray
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from safepredict import SafePredictor

BATCH = 10_000


def _timings(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, NDArray[np.float64]]:
    """Seconds per call of each function, calls interleaved round-robin."""
    return {k: np.asarray(v) for k, v in interleaved_seconds(fns, repeats).items()}


def _cases() -> list[tuple[str, str, Any, Any, Any, Any, Any]]:
    Xc, yc = make_classification(
        n_samples=30_000, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    Xr, yr = make_regression(n_samples=30_000, n_features=20, noise=10.0, random_state=0)
    tr, cal, te = slice(0, 10_000), slice(10_000, 15_000), slice(15_000, 15_000 + BATCH)
    cases = []
    for name, model in [
        ("LogisticRegression", LogisticRegression(max_iter=1000)),
        ("HistGradientBoosting", HistGradientBoostingClassifier(max_iter=100, random_state=0)),
        ("RandomForest", RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)),
    ]:
        model.fit(Xc[tr], yc[tr])
        cases.append((name, "classification", model, Xc[cal], yc[cal], Xc[te], yc[te]))
    for name, model in [
        ("Ridge (regression)", Ridge()),
        ("HistGradientBoosting (regression)", HistGradientBoostingRegressor(random_state=0)),
    ]:
        model.fit(Xr[tr], yr[tr])
        cases.append((name, "regression", model, Xr[cal], yr[cal], Xr[te], yr[te]))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400, help="single-row repeats")
    parser.add_argument("--batch-repeats", type=int, default=7, help="10k-row repeats")
    parser.add_argument("--only", default="", help="run only models whose name contains this")
    args = parser.parse_args()

    rows = []
    with threadpool_limits(limits=1):
        for name, task, model, X_cal, y_cal, X_te, _ in _cases():
            if args.only not in name:
                continue
            off = SafePredictor(model, log="off", guards="off").calibrate(X_cal, y_cal)
            auto = SafePredictor(model, log="off").calibrate(X_cal, y_cal)
            if task == "classification":
                bare: Callable[[Any], Any] = model.predict_proba
                ref = SplitConformalClassifier(model, confidence_level=0.9, prefit=True)
                mapie: Callable[[Any], Any] = ref.conformalize(X_cal, y_cal).predict_set
            else:
                bare = model.predict
                reg = SplitConformalRegressor(model, confidence_level=0.9, prefit=True)
                mapie = reg.conformalize(X_cal, y_cal).predict_interval
            for label, X, repeats in [
                ("1 row", X_te[:1], args.repeats),
                (f"{BATCH} rows", X_te[:BATCH], args.batch_repeats),
            ]:
                raw = _timings(
                    {
                        "bare": lambda X=X, f=bare: f(X),
                        "decide": lambda X=X, f=off.decide: f(X),
                        "guards": lambda X=X, f=auto.decide: f(X),
                        "mapie": lambda X=X, f=mapie: f(X),
                    },
                    repeats,
                )
                med = {k: float(np.median(v)) for k, v in raw.items()}
                # Overhead: median of the paired differences (same repeat, back to back),
                # which cancels slow drifts of a shared machine's load.
                med["overhead"] = float(np.median(raw["decide"] - raw["bare"]))
                med["overhead_guards"] = float(np.median(raw["guards"] - raw["bare"]))
                rows.append((name, label, med))

    header = (
        f"| {'model':<34} | {'rows':<10} | {'bare':>10} | {'decide':>10} | {'overhead':>10} "
        f"| {'ratio':>6} | {'+guards':>10} | {'overhead':>10} | {'ratio':>6} | {'MAPIE':>10} "
        f"| {'ratio':>6} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, label, med in rows:

        def fmt(s: float) -> str:
            return f"{s * 1e6:,.0f} µs" if s < 1e-2 else f"{s * 1e3:,.1f} ms"

        b = med["bare"]
        print(
            f"| {name:<34} | {label:<10} | {fmt(b):>10} | {fmt(med['decide']):>10} "
            f"| {fmt(med['overhead']):>10} | {med['decide'] / b:>6.2f} "
            f"| {fmt(med['guards']):>10} | {fmt(med['overhead_guards']):>10} "
            f"| {med['guards'] / b:>6.2f} "
            f"| {fmt(med['mapie']):>10} | {med['mapie'] / b:>6.2f} |"
        )


if __name__ == "__main__":
    main()
