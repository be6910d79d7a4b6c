"""Input-guard cost and OOD quality, side by side in one process.

Prints median timings (microseconds) and ratios to the bare model for single rows
and 10k-row batches of an 18-column numeric table: the bare HistGradientBoosting
``predict_proba``, the guards without OOD, the guards with the default centroid
detector (no stored rows) and with the kNN opt-in; the centroid guards again with
BLAS limited to one thread (``threadpoolctl``, in this script only: safepredict
never changes the BLAS setting); then the OOD false-alarm and detection rates of
both detectors on the same splits; finally ``SafePredictor.decide_one`` of a
LogisticRegression on a 17-column table with the default guards and with
``guards="off"`` (calls interleaved), whose difference is what the guards cost
inside a single-row decision. ``BENCH_CLOCK=cpu`` times with this thread's CPU clock
(for a loaded machine). Run:

    PYTHONPATH=src python benchmarks/bench_guards.py
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import interleaved_seconds, median_seconds
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from safepredict import GuardConfig, SafePredictor
from safepredict.guards import InputGuards

SINGLE_REPEATS = 2000
BATCH_REPEATS = 30
BATCH = 10_000
CONFIGS = {
    "guards, no OOD": GuardConfig(ood_method="none"),
    "guards + centroids (default)": GuardConfig(),
    "guards + knn (opt-in)": GuardConfig(ood_method="knn"),
}


def median_us(fn: Callable[[], Any], repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=max(3, repeats // 50)) * 1e6


def table() -> dict[str, Any]:
    X, y = make_classification(
        n_samples=20_000 + BATCH, n_features=18, n_informative=12, random_state=0
    )
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=BATCH, random_state=0)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X_tr, y_tr)
    guards = {name: InputGuards.fit(X_tr, cfg, random_state=0) for name, cfg in CONFIGS.items()}
    return {"model": model, "X_te": X_te, "guards": guards}


def timings(t: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, single-row us, batch us/row), the bare model first."""
    X = t["X_te"]
    one = X[:1]
    rows = [
        (
            "bare model predict_proba",
            median_us(lambda: t["model"].predict_proba(one), SINGLE_REPEATS // 4),
            median_us(lambda: t["model"].predict_proba(X), BATCH_REPEATS) / len(X),
        )
    ]
    for name, g in t["guards"].items():
        rows.append(
            (
                name,
                median_us(lambda g=g: g.check(one), SINGLE_REPEATS),
                median_us(lambda g=g: g.check(X), BATCH_REPEATS) / len(X),
            )
        )
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return rows
    g = t["guards"]["guards + centroids (default)"]
    with threadpool_limits(limits=1, user_api="blas"):
        rows.append(
            (
                "guards + centroids, BLAS 1 thread",
                median_us(lambda: g.check(one), SINGLE_REPEATS),
                median_us(lambda: g.check(X), BATCH_REPEATS) / len(X),
            )
        )
    return rows


def ood_rates(splits: int = 20) -> dict[str, dict[str, float]]:
    """Rows flagged ``ood`` (alpha 0.01) on breast cancer: clean and two shifts."""
    X, _ = load_breast_cancer(return_X_y=True)
    sign = np.where(np.arange(X.shape[1]) % 2 == 0, 1.0, -1.0)
    unit = np.where(np.arange(X.shape[1]) < 10, 1.0, 0.1)
    out: dict[str, dict[str, float]] = {}
    for kind in ("centroids", "knn"):
        sums = {"in-distribution (false alarms)": 0.0, "+-2 IQR against the correlation": 0.0}
        sums["20 features in units 10x smaller"] = 0.0
        for seed in range(splits):
            ref, test = train_test_split(X, train_size=400, random_state=seed)
            g = InputGuards.fit(ref, GuardConfig(ood_method=kind), random_state=seed)
            iqr = np.subtract(*np.percentile(ref, [75, 25], axis=0))
            for label, rows in zip(sums, (test, test + 2 * sign * iqr, test * unit), strict=True):
                p = g.check(rows).ood
                assert p is not None
                sums[label] += float(np.mean(p <= 0.01)) / splits
        for label, value in sums.items():
            out.setdefault(label, {})[kind] = value
    return out


def decide_one_delta(repeats: int = SINGLE_REPEATS) -> dict[str, float]:
    """Median ``decide_one`` (µs) with the default guards and without, and their difference.

    LogisticRegression on the 17-column table of ``bench_peers.py``, ``log="off"``; the
    row is the first one the guards pass (a typical request). ``delta`` is the median
    of the per-round differences of the interleaved calls.
    """
    X, y = make_classification(n_samples=27_000, n_features=17, n_informative=10, random_state=0)
    model = LogisticRegression(max_iter=1000).fit(X[:12_000], y[:12_000])
    cal, y_cal, run = X[12_000:17_000], y[12_000:17_000], X[17_000:]
    sp = {
        guards: SafePredictor(model, guards=guards, log="off", random_state=0).calibrate(
            cal, y_cal, reference=X[:12_000]
        )
        for guards in ("auto", "off")
    }
    passed = [not d.reasons for d in sp["auto"].decide(run[:100])]
    row = run[passed.index(True)]
    times = interleaved_seconds({k: lambda p=p: p.decide_one(row) for k, p in sp.items()}, repeats)
    out = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    diffs = [a - b for a, b in zip(times["auto"], times["off"], strict=True)]
    out["delta"] = statistics.median(diffs) * 1e6
    return out


def main() -> None:
    t = table()
    rows = timings(t)
    bare_one, bare_batch = rows[0][1], rows[0][2]
    print(
        f"Guards on an 18-column numeric table (medians; single row over {SINGLE_REPEATS} "
        f"calls, batch of {BATCH} rows over {BATCH_REPEATS} calls)\n"
    )
    print("| variant | single row (us) | x bare | 10k batch (us/row) | x bare |")
    print("|---------|----------------:|-------:|-------------------:|-------:|")
    for name, one, batch in rows:
        ratio_one, ratio_batch = one / bare_one, batch / bare_batch
        print(f"| {name} | {one:.1f} | {ratio_one:.2f} | {batch:.3f} | {ratio_batch:.2f} |")
    one = decide_one_delta()
    print(
        f"\ndecide_one, LogisticRegression, 17 columns (medians of {SINGLE_REPEATS} interleaved "
        f"calls): default guards {one['auto']:.1f} us, guards off {one['off']:.1f} us, "
        f"the guards' share {one['delta']:.1f} us"
    )
    print("\nOOD on breast cancer, 20 random splits (400 reference, 169 test rows), alpha=0.01\n")
    print("| rows | centroids (default) | knn (opt-in) |")
    print("|------|--------------------:|-------------:|")
    for label, by_kind in ood_rates().items():
        print(f"| {label} | {by_kind['centroids']:.4f} | {by_kind['knn']:.4f} |")


if __name__ == "__main__":
    main()
