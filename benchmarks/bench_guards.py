"""Input-guard cost and OOD quality, side by side in one process.

Prints median timings (microseconds) and ratios to the bare model for single rows
and 10k-row batches of an 18-column numeric table: the bare HistGradientBoosting
``predict_proba``, the guards without OOD, the guards with the default centroid
detector (no stored rows) and with the kNN opt-in; the centroid guards again with
BLAS limited to one thread (``threadpoolctl``, in this script only: safepredict
never changes the BLAS setting); then ``SafePredictor.decide_one`` of a
LogisticRegression on a 17-column table with the default guards and with
``guards="off"`` (calls interleaved), whose difference is what the guards cost
inside a single-row decision; finally the OOD false-alarm and detection rates of
both detectors on the same splits. ``BENCH_CLOCK=cpu`` times with this thread's CPU
clock (for a loaded machine). Run:

    PYTHONPATH=src python benchmarks/bench_guards.py [--ref main]

``--ref`` also runs the ``decide_one`` comparison on a git baseline (exported with
``git archive`` as ``compare_decide_baseline.py`` does), in the same rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _timing import interleaved_seconds, median_seconds
from compare_decide_baseline import baseline_package
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import safepredict
from safepredict import GuardConfig
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


def decide_one_delta(
    packages: dict[str, Any], repeats: int = SINGLE_REPEATS
) -> dict[str, dict[str, float]]:
    """Per package: median µs of ``decide_one`` with the default guards and without, the
    guards' share, and ``InputGuards.check`` of the same row; all calls interleaved.

    LogisticRegression on the 17-column table of ``bench_peers.py``, ``log="off"``; the
    row is the first one the guards pass (a typical request). ``delta`` is the median
    of the per-round differences. Packages are ``safepredict`` and, with ``--ref``, the
    baseline; their decisions on 500 single rows must be identical.
    """
    X, y = make_classification(n_samples=27_000, n_features=17, n_informative=10, random_state=0)
    model = LogisticRegression(max_iter=1000).fit(X[:12_000], y[:12_000])
    cal, y_cal, run = X[12_000:17_000], y[12_000:17_000], X[17_000:]
    sp = {
        (tag, guards): pkg.SafePredictor(model, guards=guards, log="off", random_state=0).calibrate(
            cal, y_cal, reference=X[:12_000]
        )
        for tag, pkg in packages.items()
        for guards in ("auto", "off")
    }
    first = sp[next(iter(packages)), "auto"]
    row = run[[not d.reasons for d in first.decide(run[:100])].index(True)]
    seen = {
        tag: [
            (d.action, d.tier, d.prediction_set, d.reasons, d.confidence)
            for d in (sp[tag, "auto"].decide_one(r) for r in run[:500])
        ]
        for tag in packages
    }
    assert all(v == seen[next(iter(packages))] for v in seen.values()), "decisions differ"
    fns: dict[str, Callable[[], Any]] = {}
    for tag in packages:
        fns[f"{tag} auto"] = lambda p=sp[tag, "auto"]: p.decide_one(row)
        fns[f"{tag} off"] = lambda p=sp[tag, "off"]: p.decide_one(row)
        fns[f"{tag} check"] = lambda g=sp[tag, "auto"].guards_: g.check(row[None])
    times = interleaved_seconds(fns, repeats)
    out = {}
    for tag in packages:
        on, off = times[f"{tag} auto"], times[f"{tag} off"]
        out[tag] = {
            "auto": statistics.median(on) * 1e6,
            "off": statistics.median(off) * 1e6,
            "delta": statistics.median([a - b for a, b in zip(on, off, strict=True)]) * 1e6,
            "check": statistics.median(times[f"{tag} check"]) * 1e6,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", help="git ref of a baseline for the decide_one comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        packages: dict[str, Any] = {"now": safepredict}
        if args.ref:
            packages["baseline"] = baseline_package(args.ref, Path(tmp))
        report(packages)


def report(packages: dict[str, Any]) -> None:
    """Print the tables of :func:`main` (``packages``: see :func:`decide_one_delta`)."""
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
    print(
        f"\ndecide_one, LogisticRegression, 17 columns (medians of {SINGLE_REPEATS} interleaved "
        "calls, us): default guards, guards off, the guards' share (paired), check alone\n"
    )
    print("| package | default guards | guards off | guards' share | check, one row |")
    print("|---------|---------------:|-----------:|--------------:|---------------:|")
    for tag, one in decide_one_delta(packages).items():
        print(
            f"| {tag} | {one['auto']:.1f} | {one['off']:.1f} | {one['delta']:.1f} | "
            f"{one['check']:.1f} |"
        )
    print("\nOOD on breast cancer, 20 random splits (400 reference, 169 test rows), alpha=0.01\n")
    print("| rows | centroids (default) | knn (opt-in) |")
    print("|------|--------------------:|-------------:|")
    for label, by_kind in ood_rates().items():
        print(f"| {label} | {by_kind['centroids']:.4f} | {by_kind['knn']:.4f} |")


if __name__ == "__main__":
    main()
