"""safepredict next to its peers: the bare model, MAPIE and crepes, in one run.

Prints, measured side by side in one process (calls interleaved round-robin, so a
busy machine slows every column alike), the MEDIAN time per call of:

- ``bare``: the model's ``predict_proba``,
- ``MAPIE``: ``SplitConformalClassifier.predict_set`` (MAPIE 1.x, prefit, LAC),
- ``crepes``: ``WrapClassifier.predict_set`` (hinge score),
- ``sp default``: ``SafePredictor.decide`` with the default guards (centroid OOD
  detector included) and one decision event per row written to a JSON-lines file
  (``logger="events.jsonl"``, the column-wise fast path),
- ``sp guards off``: the same with ``guards="off"`` (events still written),
- ``sp columnar``: default guards, decision events to the columnar decision log
  (``logger="decisions.arrows"``, one Arrow record batch per call; needs pyarrow),
- ``sp log off``: default guards, ``log="off"``,
- ``sp bare``: ``guards="off", log="off"``,

all at confidence level 0.9, for one row (``decide_one`` for safepredict; the first
row the default guards pass, so the single-row cells time a typical request) and for a
10,000-row batch, for LogisticRegression and HistGradientBoosting (60 iterations)
on a 17-column binary table from ``make_classification``. Each cell shows the
median, its ratio to the bare model's median and the overhead over the bare
model (median of the per-round differences). BLAS/OpenMP pools are limited to one
thread.

Run::

    PYTHONPATH=src python benchmarks/bench_peers.py [--single-repeats 300] [--batch-repeats 7]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from crepes import WrapClassifier
from mapie.classification import SplitConformalClassifier
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from safepredict import SafePredictor

BATCH = 10_000
LEVEL = 0.9


def timings(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, np.ndarray]:
    """Seconds per call of each function, interleaved round-robin after one warm-up."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in out.items()}


def fmt(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:,.0f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single-repeats", type=int, default=300)
    parser.add_argument("--batch-repeats", type=int, default=7)
    args = parser.parse_args()
    X, y = make_classification(n_samples=27_000, n_features=17, n_informative=10, random_state=0)
    X_tr, y_tr = X[:12_000], y[:12_000]
    X_cal, y_cal = X[12_000:17_000], y[12_000:17_000]
    X_run = X[17_000:]
    models = {
        "LogisticRegression": LogisticRegression(max_iter=1000),
        "HistGradientBoosting": HistGradientBoostingClassifier(max_iter=60, random_state=0),
    }
    columns = [
        "bare",
        "MAPIE",
        "crepes",
        "sp default",
        "sp guards off",
        "sp columnar",
        "sp log off",
        "sp bare",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        for name, model in models.items():
            model.fit(X_tr, y_tr)
            mapie = SplitConformalClassifier(model, confidence_level=LEVEL, prefit=True)
            mapie.conformalize(X_cal, y_cal)
            crepes = WrapClassifier(model)
            crepes.fitted = True  # prefit: the wrapped learner is already trained
            crepes.calibrate(X_cal, y_cal)
            events = Path(tmp) / f"{name}.jsonl"
            sp = {
                "sp default": SafePredictor(model, logger=str(events)),
                "sp guards off": SafePredictor(model, guards="off", logger=str(events)),
                "sp columnar": SafePredictor(model, logger=str(Path(tmp) / f"{name}.arrows")),
                "sp log off": SafePredictor(model, log="off"),
                "sp bare": SafePredictor(model, guards="off", log="off"),
            }
            for p in sp.values():
                p.calibrate(X_cal, y_cal, reference=X_tr)
            # the single row: the first one the default guards pass (a typical request;
            # a flagged row takes the guard path, which is not what most calls cost)
            passed = [not d.reasons for d in sp["sp log off"].decide(X_run[:100])]
            typical = X_run[passed.index(True)]
            for rows_label, X_in, repeats in (
                ("1 row", typical[None, :], args.single_repeats),
                (f"{BATCH} rows", X_run[:BATCH], args.batch_repeats),
            ):
                one = typical
                fns: dict[str, Callable[[], Any]] = {
                    "bare": lambda X_in=X_in, m=model: m.predict_proba(X_in),
                    "MAPIE": lambda X_in=X_in, m=mapie: m.predict_set(X_in),
                    "crepes": lambda X_in=X_in, c=crepes: c.predict_set(X_in, confidence=LEVEL),
                }
                for key, p in sp.items():
                    if len(X_in) == 1:
                        fns[key] = lambda p=p, one=one: p.decide_one(one)
                    else:
                        fns[key] = lambda p=p, X_in=X_in: p.decide(X_in)
                t = timings(fns, repeats)
                rows.append((name, rows_label, t))
            events.unlink(missing_ok=True)
    print(
        f"median per call; ratio = median / bare median; +over = median of per-round "
        f"(variant - bare); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    header = f"| {'model':<20} | {'rows':<10} |" + "".join(f" {c:>28} |" for c in columns)
    print(header)
    print("|" + "|".join("-" * (len(h)) for h in header.split("|")[1:-1]) + "|")
    for name, label, t in rows:
        bare = float(np.median(t["bare"]))
        cells = []
        for c in columns:
            med = float(np.median(t[c]))
            if c == "bare":
                cells.append(f"{fmt(med):>28}")
                continue
            over = float(np.median(t[c] - t["bare"]))
            per_row = "" if label == "1 row" else "/row"
            n = 1 if label == "1 row" else BATCH
            cells.append(f"{f'{fmt(med)} x{med / bare:.2f} +{over / n * 1e6:.1f}µs{per_row}':>28}")
        print(f"| {name:<20} | {label:<10} |" + "".join(f" {c} |" for c in cells))


if __name__ == "__main__":
    main()
