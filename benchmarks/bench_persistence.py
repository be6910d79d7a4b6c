"""Persistence and async overheads, measured side by side in one process.

- ``save`` / ``load`` time against ``calibrate`` time on the same data (a loaded
  predictor replaces a calibration at service start-up);
- ``load`` with the skops model against ``load`` with an in-memory model;
- ``await adecide`` against ``decide`` on the same batch (the thread hop).

Prints MEDIAN timings over repeats and the ratios. Run:
``python benchmarks/bench_persistence.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import median_seconds
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import safepredict as sp

REPEATS = 15


def case(name: str, X: Any, y: Any, model: Any, out: Path) -> list[tuple[str, float, str]]:
    X_tr, X_cal, y_tr, y_cal = train_test_split(X, y, test_size=0.5, random_state=0)
    model = model.fit(X_tr, y_tr)
    predictor = sp.SafePredictor(model, log="off").calibrate(X_cal, y_cal)
    slug = name.replace("/", "-")
    path = out / f"{slug}.json"
    skops_path = out / f"{slug}-skops.json"
    predictor.save(skops_path, model="skops")

    t_cal = median_seconds(
        lambda: sp.SafePredictor(model, log="off").calibrate(X_cal, y_cal), REPEATS
    )
    t_save = median_seconds(lambda: predictor.save(path), REPEATS)
    t_load = median_seconds(lambda: sp.SafePredictor.load(path, model=model), REPEATS)
    t_load_skops = median_seconds(lambda: sp.SafePredictor.load(skops_path), REPEATS)
    t_decide = median_seconds(lambda: predictor.decide(X_cal), REPEATS)
    t_one = median_seconds(lambda: predictor.decide(X_cal[:1]), 200)

    async def timed_adecide(batch: Any, repeats: int) -> float:
        times = []
        for _ in range(repeats):  # one running loop and its warm thread pool, like a service
            t = time.perf_counter()
            await predictor.adecide(batch)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    t_adecide = asyncio.run(timed_adecide(X_cal, REPEATS))
    t_adecide_one = asyncio.run(timed_adecide(X_cal[:1], 200))
    size_kb = path.stat().st_size / 1024
    n = len(X_cal)
    return [
        (f"{name}: calibrate ({n} rows)", t_cal, "1.00"),
        (f"{name}: save", t_save, f"{t_save / t_cal:.2f} x calibrate"),
        (f"{name}: load(model=...)", t_load, f"{t_load / t_cal:.2f} x calibrate"),
        (f"{name}: load (skops model)", t_load_skops, f"{t_load_skops / t_load:.2f} x load"),
        (f"{name}: file size {size_kb:.0f} KiB", 0.0, ""),
        (f"{name}: decide ({n} rows)", t_decide, "1.00"),
        (f"{name}: adecide ({n} rows)", t_adecide, f"{t_adecide / t_decide:.2f} x decide"),
        (f"{name}: decide (1 row)", t_one, "1.00"),
        (f"{name}: adecide (1 row)", t_adecide_one, f"{t_adecide_one / t_one:.2f} x decide"),
    ]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        X, y = load_breast_cancer(return_X_y=True)
        rows = case(
            "cancer/LR",
            X,
            y,
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            out,
        )
        Xd, yd = load_diabetes(return_X_y=True, as_frame=True)
        rows += case("diabetes/Ridge", Xd, yd, Ridge(), out)
    print(f"{'measurement':44s} {'median':>12s}  ratio")
    for label, seconds, ratio in rows:
        value = f"{seconds * 1000:9.3f} ms" if seconds else ""
        print(f"{label:44s} {value:>12s}  {ratio}")


if __name__ == "__main__":
    main()
