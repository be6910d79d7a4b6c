"""Cost of shift-aware calibration: adapted vs original ``decide``, and the one-off calls.

One process, calls interleaved round-robin (``_timing.interleaved_seconds``), medians:

* ``decide`` of the predictor adapted to covariate shift (``adapt_to``) against the
  original, on one row and on a batch: the extra work is the domain classifier's
  ``predict_proba`` on the batch and the weighted p-values (one ``searchsorted``);
* ``adapt_to`` (domain classifier fit, weighted re-certification of the tiers) and
  ``estimate_performance`` on the batch, against one ``decide`` of the batch;
* a regressor's ``estimate_performance`` (two ``max_error`` tiers, generated
  heteroscedastic data) against one ``decide`` of its batch.

Run: ``PYTHONPATH=src python benchmarks/bench_shift.py [--repeats R]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import interleaved_seconds
from sklearn.datasets import load_digits
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import SafePredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(X[::3], y[::3])
    policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.05},
            {"name": "human", "action": "review"},
        ]
    }
    sp = SafePredictor(model, log="off", tiers=policy).calibrate(X[1::3], y[1::3])
    batch = X[2::3]
    production = batch[batch[:, 20] > 8]
    adapted = sp.adapt_to(production)
    print(f"digits: {len(y[1::3])} calibration rows, batch of {len(batch)}, "
          f"ESS after adapting {adapted.shift_.effective_sample_size:.0f}")  # fmt: skip
    for label, rows in (("1 row", batch[:1]), (f"{len(batch)} rows", batch)):
        t = interleaved_seconds(
            {"original": lambda r=rows: sp.decide(r), "adapted": lambda r=rows: adapted.decide(r)},
            args.repeats,
        )
        orig, adap = float(np.median(t["original"])), float(np.median(t["adapted"]))
        print(f"decide {label:>9}: original {orig * 1e3:8.2f} ms, adapted "
              f"{adap * 1e3:8.2f} ms, ratio {adap / orig:.2f}")  # fmt: skip
    t = interleaved_seconds(
        {
            "decide": lambda: sp.decide(batch),
            "adapt_to": lambda: sp.adapt_to(production),
            "estimate_performance": lambda: sp.estimate_performance(batch),
        },
        max(3, args.repeats // 10),
    )
    base = float(np.median(t["decide"]))
    for name in ("adapt_to", "estimate_performance"):
        med = float(np.median(t[name]))
        print(f"{name:>21}: {med * 1e3:8.1f} ms = {med / base:.1f} x decide({len(batch)} rows)")
    _regression(max(3, args.repeats // 10))


def _regression(repeats: int) -> None:
    """A regressor's ``estimate_performance`` against one ``decide`` of the batch."""
    g = np.random.default_rng(0)

    def rows(n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        X = g.normal(size=(n, 4))
        X[:, 0] += shift
        noise = 0.8 * np.exp(0.5 * X[:, 0] + 0.3 * X[:, 1])
        return X, X @ np.array([2.0, -1.0, 0.5, 1.0]) + noise * g.normal(size=n)

    policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.05, "tolerance": 1.0},
            {"name": "quick", "action": "accept", "max_error": 0.15, "tolerance": 1.5},
            {"name": "human", "action": "review"},
        ]
    }
    sp = SafePredictor(
        LinearRegression().fit(*rows(2000)),
        tiers=policy,
        log="off",
        conformity_score="residual_normalized",
        random_state=0,
    ).calibrate(*rows(3000))
    batch = rows(2000, shift=1.0)[0]
    t = interleaved_seconds(
        {"decide": lambda: sp.decide(batch), "estimate": lambda: sp.estimate_performance(batch)},
        repeats,
    )
    base, med = float(np.median(t["decide"])), float(np.median(t["estimate"]))
    print(f"regressor (3000 calibration rows, 2 max_error tiers): estimate_performance "
          f"{med * 1e3:.1f} ms = {med / base:.1f} x decide({len(batch)} rows)")  # fmt: skip


if __name__ == "__main__":
    main()
