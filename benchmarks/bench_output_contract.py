"""What does the model-output contract check cost? (DESIGN.md trust contract 3)

Prints, side by side in one run, the MEDIAN time on a 10,000-row batch of:

- the bare model (``predict_proba`` / ``predict``),
- ``safepredict.model.check_output`` on that output (the vectorized contract check),
- ``safepredict.model.run_model`` (call + shape check + contract check),

with the check's cost per row (goal: <= 0.2 µs) and as a fraction of the bare model.
Calls are interleaved round-robin; BLAS/OpenMP pools are limited to one thread.

Run::

    PYTHONPATH=src python benchmarks/bench_output_contract.py [--repeats 51]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import interleaved_seconds
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from safepredict.model import check_output, run_model

BATCH = 10_000


def _medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    return {k: float(np.median(v)) for k, v in interleaved_seconds(fns, repeats).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=51)
    args = parser.parse_args()
    Xc, yc = make_classification(
        n_samples=20_000, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    Xr, yr = make_regression(n_samples=20_000, n_features=20, noise=10.0, random_state=0)
    cases = [
        ("LogisticRegression", "classification", LogisticRegression(max_iter=1000), Xc, yc),
        ("HistGradientBoosting", "classification", HistGradientBoostingClassifier(), Xc, yc),
        ("Ridge (regression)", "regression", Ridge(), Xr, yr),
    ]
    print(
        f"| {'model':<22} | {'bare':>9} | {'check':>9} | {'per row':>9} | {'of bare':>7} "
        f"| {'run_model':>9} |"
    )
    print(f"|{'-' * 24}|{'-' * 11}|{'-' * 11}|{'-' * 11}|{'-' * 9}|{'-' * 11}|")
    with threadpool_limits(limits=1):
        for name, task, model, X, y in cases:
            model.fit(X[:10_000], y[:10_000])
            batch = X[10_000 : 10_000 + BATCH]
            method = model.predict_proba if task == "classification" else model.predict
            out = np.asarray(method(batch), dtype=np.float64)
            k = out.shape[1] if out.ndim == 2 else None
            med = _medians(
                {
                    "bare": lambda m=method, b=batch: m(b),
                    "check": lambda o=out, t=task, k=k: check_output(o, t, k),
                    "run": lambda m=model, t=task, b=batch, k=k: run_model(m, t, b, n_classes=k),
                },
                args.repeats,
            )
            per_row = med["check"] / BATCH * 1e6
            print(
                f"| {name:<22} | {med['bare'] * 1e3:>6.2f} ms | {med['check'] * 1e6:>6.0f} µs "
                f"| {per_row:>6.3f} µs | {med['check'] / med['bare']:>6.1%} "
                f"| {med['run'] * 1e3:>6.2f} ms |"
            )


if __name__ == "__main__":
    main()
