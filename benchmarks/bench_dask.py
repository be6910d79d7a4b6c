"""Rows/second of decisions in-process vs on a local Dask cluster with 1 and 2 workers.

Run: ``python benchmarks/bench_dask.py [--rows 400000]``. Prints the median of a few
runs per setting and the ratio to the in-process run of the same job. Two jobs:

- **return**: build the rows, decide, and hand the decision table
  (``Decisions.to_frame(set_format="string")``) to the caller;
- **parquet**: the nightly-batch shape: build the rows, decide, and write the table
  to Parquet (one file in-process; one file per partition, from the workers, on Dask).

On Dask the rows are built on the workers (as a read from storage would be) and the
predictor is scattered to them once per run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
from _timing import median_seconds
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
    out_dir = Path(tempfile.mkdtemp(prefix="bench_dask_"))

    def table() -> pd.DataFrame:
        frame = pd.concat([rows(X, size, s) for s in seeds], ignore_index=True)
        return sp.decide(frame).to_frame(set_format="string")

    results: dict[str, dict[str, float]] = {"return": {}, "parquet": {}}
    results["return"]["in-process"] = median_seconds(table, args.repeats)
    results["parquet"]["in-process"] = median_seconds(
        lambda: table().to_parquet(out_dir / "in-process.parquet"), args.repeats
    )
    for workers in (1, 2):
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as lc,
            Client(lc),
        ):
            ddf = dd.from_map(rows, [X] * k, [size] * k, seeds, meta=X.iloc[:0])
            name = f"dask, {workers} worker{'s' if workers > 1 else ''}"
            results["return"][name] = median_seconds(
                lambda ddf=ddf: decide_dask(sp, ddf).compute(), args.repeats
            )
            results["parquet"][name] = median_seconds(
                lambda ddf=ddf, w=workers: decide_dask(sp, ddf).to_parquet(out_dir / f"w{w}"),
                args.repeats,
            )
    n = size * k
    print(
        f"{n:,} rows, {k} partitions, HistGradientBoosting on breast cancer, "
        f"median of {args.repeats}"
    )
    print(f"{'job':<8} {'setting':<16} {'seconds':>8} {'rows/s':>10} {'vs in-process':>14}")
    for job, by_setting in results.items():
        base = by_setting["in-process"]
        for name, sec in by_setting.items():
            print(f"{job:<8} {name:<16} {sec:8.2f} {n / sec:10,.0f} {sec / base:13.2f}x")


if __name__ == "__main__":
    main()
