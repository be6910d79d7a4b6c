"""Rows/second of decisions in-process vs on Spark local[2] vs on a 2-worker Dask cluster.

Run: ``python benchmarks/bench_spark.py [--rows 400000]`` (needs the ``spark`` and
``dask`` extras and a Java runtime). The rows are resident in each engine before the
clock starts (a cached Spark DataFrame, persisted Dask partitions, a pandas frame
in-process), as a table read would leave them. Two jobs, timed interleaved so that
machine noise hits every setting alike (median of ``--repeats``):

- **return**: decide and hand the decision table (``Decisions.to_frame(
  set_format="string")``) to the driver as a pandas frame;
- **decide only**: decide without collecting (Spark's ``noop`` sink; Dask's
  ``persist``), the cost of the decisions themselves.

Each setting gets two cores: in-process ``decide`` (HistGradientBoosting uses both
through OpenMP), Spark ``local[2]`` and Dask with two one-thread workers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import dask.dataframe as dd
import numpy as np
import pandas as pd
from _timing import interleaved_seconds
from distributed import Client, LocalCluster, wait
from pyspark.sql import SparkSession
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier

from safepredict import SafePredictor
from safepredict.integrations.dask import decide_dask
from safepredict.integrations.spark import decide_spark


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
    frame = rows(X, args.rows, seed=0)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run this interpreter
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    sdf = spark.createDataFrame(frame).repartition(k).cache()
    sdf.count()  # resident before timing

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as lc,
        Client(lc) as client,
    ):
        ddf = client.persist(dd.from_pandas(frame, npartitions=k))
        wait(ddf)

        def in_process() -> pd.DataFrame:
            return sp.decide(frame).to_frame(set_format="string")

        def dask_persist() -> None:
            wait(client.persist(decide_dask(sp, ddf)))

        jobs = {
            ("return", "in-process"): in_process,
            ("return", "spark local[2]"): lambda: decide_spark(sp, sdf).toPandas(),
            ("return", "dask, 2 workers"): lambda: decide_dask(sp, ddf).compute(),
            ("decide only", "in-process"): lambda: sp.decide(frame),
            ("decide only", "spark local[2]"): lambda: (
                decide_spark(sp, sdf).write.format("noop").mode("overwrite").save()
            ),
            ("decide only", "dask, 2 workers"): dask_persist,
        }
        times = interleaved_seconds(
            {f"{job}|{name}": fn for (job, name), fn in jobs.items()}, args.repeats
        )
    spark.stop()
    n = len(frame)
    print(
        f"{n:,} rows, {k} partitions, HistGradientBoosting on breast cancer, "
        f"median of {args.repeats} (interleaved)"
    )
    print(f"{'job':<12} {'setting':<16} {'seconds':>8} {'rows/s':>10} {'vs in-process':>14}")
    medians = {key: statistics.median(v) for key, v in times.items()}
    for job in ("return", "decide only"):
        base = medians[f"{job}|in-process"]
        for key, sec in medians.items():
            if key.startswith(f"{job}|"):
                name = key.split("|", 1)[1]
                print(f"{job:<12} {name:<16} {sec:8.2f} {n / sec:10,.0f} {sec / base:13.2f}x")


if __name__ == "__main__":
    main()
