"""Input-guard overhead per single row, side by side with the bare model, in one process.

Prints median timings (microseconds) and ratios for numpy and DataFrame input,
with and without the OOD detector, plus the OOD false-alarm and shift-detection
rates on real data. Run:

    PYTHONPATH=src python benchmarks/bench_guards.py
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from _timing import median_seconds
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from safepredict import GuardConfig, SafePredictor
from safepredict.guards import InputGuards

REPEATS = 2000


def median_us(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    return median_seconds(fn, repeats, warmup=50) * 1e6


def cancer_rows() -> dict[str, Any]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    model_np = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model_np.fit(X_tr.to_numpy(), y_tr)
    model_df = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    return {"X_tr": X_tr, "X_te": X_te, "model_np": model_np, "model_df": model_df}


def wine_rows() -> dict[str, Any]:
    X, y = load_wine(return_X_y=True, as_frame=True)
    X = X[["alcohol", "malic_acid", "magnesium", "color_intensity", "hue", "proline"]].copy()
    X["alcohol_band"] = pd.cut(X["alcohol"], 3, labels=["low", "mid", "high"])
    X["hue_band"] = np.where(X["hue"] > X["hue"].median(), "pale", "deep").astype(object)
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    cats = ["alcohol_band", "hue_band"]
    nums = [c for c in X.columns if c not in cats]
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="error"), cats), ("num", StandardScaler(), nums)]
    )
    model = make_pipeline(pre, LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    return {"X_tr": X_tr, "X_te": X_te, "model_df": model}


def timing_table() -> list[tuple[str, float, float, float]]:
    rows = []
    c = cancer_rows()
    x_np = c["X_te"].to_numpy()[:1]
    x_df = c["X_te"].iloc[:1]
    ref_np = c["X_tr"].to_numpy()
    for label, ref, x, model in (
        ("breast cancer, numpy (30 num)", ref_np, x_np, c["model_np"]),
        ("breast cancer, DataFrame (30 num)", c["X_tr"], x_df, c["model_df"]),
    ):
        plain = InputGuards.fit(ref, GuardConfig(ood_method="none"), random_state=0)
        ood = InputGuards.fit(ref, GuardConfig(), random_state=0)
        t_model = median_us(lambda m=model, x=x: m.predict_proba(x))
        t_plain = median_us(lambda g=plain, x=x: g.check(x))
        t_ood = median_us(lambda g=ood, x=x: g.check(x))
        rows.append((label, t_model, t_plain, t_ood))
    w = wine_rows()
    x = w["X_te"].iloc[:1]
    plain = InputGuards.fit(w["X_tr"], GuardConfig(ood_method="none"), random_state=0)
    ood = InputGuards.fit(w["X_tr"], GuardConfig(), random_state=0)
    rows.append(
        (
            "wine mixed, DataFrame (6 num + 2 cat)",
            median_us(lambda: w["model_df"].predict_proba(x)),
            median_us(lambda: plain.check(x)),
            median_us(lambda: ood.check(x)),
        )
    )
    return rows


def decide_table() -> list[tuple[str, float, float, float]]:
    """Whole ``decide`` on one numpy row: guards off, guards without OOD, all guards."""
    c = cancer_rows()
    X_tr, X_te = c["X_tr"].to_numpy(), c["X_te"].to_numpy()
    X_cal, X_row = X_te[:100], X_te[100:101]
    y_cal = c["model_np"].predict(X_cal)  # labels for timing only
    out = []
    times = []
    for guards in ("off", GuardConfig(ood_method="none"), GuardConfig()):
        sp = SafePredictor(c["model_np"], guards=guards, log="off", random_state=0)
        sp.calibrate(X_cal, y_cal, reference=X_tr)
        times.append(median_us(lambda sp=sp: sp.decide(X_row), repeats=500))
    out.append(("decide(1 row), breast cancer numpy", *times))
    return out


def ood_rates(splits: int = 50) -> tuple[float, float, float]:
    """False-alarm rate (in-distribution) and detection rates on two shifts."""
    X, _ = load_breast_cancer(return_X_y=True)
    false_alarm, anti, units = [], [], []
    sign = np.where(np.arange(X.shape[1]) % 2 == 0, 1.0, -1.0)
    unit = np.where(np.arange(X.shape[1]) < 10, 1.0, 0.1)
    for seed in range(splits):
        ref, test = train_test_split(X, train_size=400, random_state=seed)
        g = InputGuards.fit(ref, GuardConfig(), random_state=seed)
        iqr = np.subtract(*np.percentile(ref, [75, 25], axis=0))
        for sink, rows in (
            (false_alarm, test),
            (anti, test + 2 * sign * iqr),
            (units, test * unit),
        ):
            p = g.check(rows).ood
            assert p is not None
            sink.append(float(np.mean(p <= 0.01)))
    return float(np.mean(false_alarm)), float(np.mean(anti)), float(np.mean(units))


def fresh_false_alarm(reps: int = 100) -> float:
    """Flag rate on fresh iid synthetic data (independent repetitions, as in the tests)."""
    from safepredict.guards import KnnDetector

    rng = np.random.default_rng(2026)
    cov = 0.6 * np.ones((6, 6)) + 0.4 * np.eye(6)

    def draw(n: int) -> np.ndarray:
        z = rng.multivariate_normal(np.zeros(6), cov, size=n)
        z[:, :3] = np.exp(z[:, :3])
        return z

    rates = []
    for _ in range(reps):
        det = KnnDetector.fit(draw(1000), k=5, max_fit=2000, rng=rng)
        rates.append(float(np.mean(det.pvalues(draw(500)) <= 0.01)))
    return float(np.mean(rates))


def main() -> None:
    print("Single-row guard overhead (median microseconds over", REPEATS, "calls)\n")
    print(
        f"| {'input':38} | model predict_proba | guards (no OOD) | ratio | guards + OOD | ratio |"
    )
    print(f"|{'-' * 40}|---------------------|-----------------|-------|--------------|-------|")
    for label, t_model, t_plain, t_ood in timing_table():
        print(
            f"| {label:38} | {t_model:17.1f}   | {t_plain:13.1f}   | {t_plain / t_model:5.3f} "
            f"| {t_ood:10.1f}   | {t_ood / t_model:5.3f} |"
        )
    print("\nWhole decide() on one row (median microseconds)\n")
    print("| case | guards off | guards, no OOD | all guards |")
    print("|------|------------|----------------|------------|")
    for label, off, plain, full in decide_table():
        print(
            f"| {label} | {off:.1f} | {plain:.1f} (+{plain - off:.1f}) "
            f"| {full:.1f} (+{full - off:.1f}) |"
        )
    fa, anti, units = ood_rates()
    print(
        "\nOOD on breast cancer, 50 random splits (400 reference rows, 169 test rows), alpha=0.01\n"
    )
    print("| data | rows flagged ood |")
    print("|------|------------------|")
    print(f"| in-distribution (false alarms) | {fa:.4f} |")
    print(f"| +-2 IQR against the feature correlation | {anti:.4f} |")
    print(f"| 20 features in units 10x smaller | {units:.4f} |")
    fresh = fresh_false_alarm()
    print(
        "\nFalse alarms on fresh synthetic data (100 independent repetitions, 1000 reference "
        f"+ 500 test rows, alpha=0.01): {fresh:.4f} (expected 5/501 = {5 / 501:.4f})"
    )


if __name__ == "__main__":
    main()
