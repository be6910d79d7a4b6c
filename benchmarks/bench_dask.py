"""Rows/second of decisions in-process vs on a local Dask cluster with 1 and 2 workers.

Run: ``python benchmarks/bench_dask.py [--rows 400000]``. Prints the median of a few
runs per setting and the ratio to in-process ``decide``. Every setting does the same
job: build the rows (on the workers, as a read from storage would), decide, and return
the decision table (``Decisions.to_frame(set_format="string")``) to the caller. The
predictor is scattered to the workers once per run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier

from safepredict import SafePredictor
from safepredict.integrations.dask import decide_dask


def rows(X: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = X.iloc[rng.integers(0, len(X), n)].reset_index(drop=True)
    return out + rng.normal(0, 0.02, out.shape) * X.std().to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X[::2], y[::2])
    sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    k = args.partitions
    size = args.rows // k
    seeds = list(range(k))

    def in_process() -> None:  # the same job in one process: build the rows, decide, tabulate
        frame = pd.concat([rows(X, size, s) for s in seeds], ignore_index=True)
        sp.decide(frame).to_frame(set_format="string")

    def timed(fn) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    results = {"in-process decide": timed(in_process)}
    for workers in (1, 2):
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as lc,
            Client(lc),
        ):
            ddf = dd.from_map(rows, [X] * k, [size] * k, seeds, meta=X.iloc[:0])
            results[f"dask, {workers} worker(s)"] = timed(
                lambda ddf=ddf: decide_dask(sp, ddf).compute()
            )
    base = results["in-process decide"]
    n = size * k
    print(
        f"{n:,} rows, {k} partitions, HistGradientBoosting on breast cancer (median of "
        f"{args.repeats})"
    )
    print(f"{'setting':<22} {'seconds':>8} {'rows/s':>10} {'vs in-process':>14}")
    for name, sec in results.items():
        print(f"{name:<22} {sec:8.2f} {n / sec:10,.0f} {sec / base:13.2f}x")


if __name__ == "__main__":
    main()
