"""Throughput of the review-queue sinks: cases enqueued per second, single vs batched.

Run: ``PYTHONPATH=src python benchmarks/bench_routing.py``. Prints the MEDIAN over
repeats of each configuration, measured side by side in one process, and the ratio
to the baseline (one SQLite transaction per case, durable). The last table is the
overhead routing adds to ``decide`` (the predictor batches a whole call into one
transaction).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from safepredict import JSONLSink, SafePredictor, SQLiteReviewQueue

REPEATS = 7


def make_cases(n: int, tag: str) -> list[dict[str, object]]:
    return [
        {
            "decision_id": f"{tag}-{i}",
            "tier": "human",
            "action": "abstain",
            "reasons": ["empty_set"],
            "prediction": 1,
            "prediction_set": [],
            "confidence": 0.42,
            "audit": False,
        }
        for i in range(n)
    ]


def median_rate(run: Callable[[str], int]) -> tuple[float, float]:
    """Median seconds per case and cases/second over REPEATS runs."""
    per_case = []
    for r in range(REPEATS):
        t = time.perf_counter()
        n = run(f"r{r}-{time.perf_counter_ns()}")
        per_case.append((time.perf_counter() - t) / n)
    med = statistics.median(per_case)
    return med, 1.0 / med


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    durable = SQLiteReviewQueue(tmp / "durable.db", durable=True)
    fast = SQLiteReviewQueue(tmp / "normal.db", durable=False)
    jsonl = JSONLSink(tmp / "cases.jsonl", fsync=True)
    jsonl_nofsync = JSONLSink(tmp / "cases-nofsync.jsonl", fsync=False)

    def single(sink: object, n: int) -> Callable[[str], int]:
        def run(tag: str) -> int:
            for c in make_cases(n, tag):
                sink.write_batch([c])  # type: ignore[attr-defined]
            return n

        return run

    def batched(sink: object, n: int, size: int) -> Callable[[str], int]:
        def run(tag: str) -> int:
            cases = make_cases(n, tag)
            for k in range(0, n, size):
                sink.write_batch(cases[k : k + size])  # type: ignore[attr-defined]
            return n

        return run

    rows = [
        ("sqlite durable (FULL), single", single(durable, 200)),
        ("sqlite durable (FULL), batch 100", batched(durable, 5000, 100)),
        ("sqlite durable (FULL), batch 1000", batched(durable, 5000, 1000)),
        ("sqlite durable=False (NORMAL), single", single(fast, 2000)),
        ("sqlite durable=False (NORMAL), batch 1000", batched(fast, 5000, 1000)),
        ("jsonl fsync, single", single(jsonl, 200)),
        ("jsonl fsync, batch 1000", batched(jsonl, 5000, 1000)),
        ("jsonl no fsync, single", single(jsonl_nofsync, 2000)),
    ]
    results = [(name, *median_rate(run)) for name, run in rows]
    base = results[0][1]
    print(f"{'sink':44s} {'us/case':>10s} {'cases/s':>10s} {'speed-up':>9s}")
    for name, sec, rate in results:
        print(f"{name:44s} {sec * 1e6:10.1f} {rate:10.0f} {base / sec:8.1f}x")

    # overhead of routing inside decide: 1,000 rows, ~10% routed, one transaction per call
    X, y = make_classification(n_samples=4000, n_features=10, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X[:2000], y[:2000])
    policy = {
        "audit_rate": 0.05,
        "tiers": [
            {"name": "auto", "action": "accept", "max_set_size": 1},
            {"name": "human", "action": "abstain"},
        ],
    }
    plain = SafePredictor(model, log="off", tiers=policy).calibrate(X[2000:3000], y[2000:3000])
    predictors = {"no router": plain}
    for name, router in (
        ("router='reviews.db' (durable)", str(tmp / "decide.db")),
        (
            "router=SQLiteReviewQueue(durable=False)",
            SQLiteReviewQueue(tmp / "d2.db", durable=False),
        ),
        ("router='cases.jsonl' (fsync)", str(tmp / "decide.jsonl")),
        ("router=list.append (callable)", [].append),
    ):
        sp = SafePredictor(model, log="off", tiers=policy, router=router)
        predictors[name] = sp.calibrate(X[2000:3000], y[2000:3000])
    batch = X[3000:]
    d = predictors["router='reviews.db' (durable)"].decide(batch)
    share = np.mean([r is not None for r in d.route or []])
    timings: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(REPEATS):
        for name, sp in predictors.items():
            t = time.perf_counter()
            sp.decide(batch)
            timings[name].append(time.perf_counter() - t)
    print()
    print(f"decide on {len(batch)} rows, {share:.0%} routed (median of {REPEATS})")
    base_s = statistics.median(timings["no router"])
    for name, ts in timings.items():
        med = statistics.median(ts)
        print(f"{name:44s} {med * 1e3:8.2f} ms {med / base_s:8.2f}x")


if __name__ == "__main__":
    main()
