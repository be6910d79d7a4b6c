"""Offline benchmark speed: 1,000,000 rows and 20 candidate policies.

Prints a table of MEDIAN timings over repeats, and ratios measured side by side in
one process: the whole benchmark (curves for four scores with bands, AURC,
operating points with Learn-then-Test certification, costs, 20 policies through
``assign_tiers``) against one ``np.argsort`` of the same rows (the O(n log n)
floor), and the scaling from 100,000 to 1,000,000 rows (about 10x for
O(n log n); a quadratic algorithm would give 100x).

Run: ``python benchmarks/bench_evaluation.py`` (``--rows``, ``--repeats``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import median_seconds

from safepredict.evaluation import (
    CostModel,
    ScoredData,
    compare_policies,
    evaluate,
    risk_coverage,
    threshold_policies,
)


def make_data(n: int, seed: int) -> ScoredData:
    """Synthetic 3-class model output: scores correlated with correctness, many ties."""
    rng = np.random.default_rng(seed)
    conformal = np.round(rng.beta(5, 1, n), 3)  # 3 decimals: heavy ties, like real p-values
    wrong = rng.uniform(size=n) < 0.4 * (1 - conformal) ** 1.5
    top = np.clip(conformal + rng.normal(0, 0.05, n), 1 / 3, 1)
    margin = np.clip(2 * top - 1 + rng.normal(0, 0.02, n), 0, 1)
    entropy = -(1 - top) * 2
    set_size = np.where(conformal > 0.9, 1, np.where(conformal > 0.5, 2, 3))
    return ScoredData.from_arrays(
        wrong,
        {"conformal": conformal, "top_prob": top, "margin": margin, "entropy": entropy},
        set_size=set_size,
        covered=rng.uniform(size=n) < 0.9,
        predicted_class=rng.integers(0, 3, n),
    )


def policies() -> dict[str, Any]:
    """20 candidates: 14 min_confidence grid points and 6 risk-controlled (max_error) tiers."""
    out = threshold_policies(np.round(np.linspace(0.6, 0.99, 14), 3))
    out.update(threshold_policies([0.01, 0.02, 0.03, 0.05, 0.08, 0.1], kind="max_error"))
    assert len(out) == 20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.rows
    test, cal = make_data(n, 0), make_data(n, 1)
    small_test, small_cal = make_data(n // 10, 2), make_data(n // 10, 3)
    pols = policies()
    cost = CostModel(cost_error=50, cost_review=2)

    def full(t: ScoredData, c: ScoredData) -> Callable[[], Any]:
        def run() -> Any:
            for d in (t, c):  # nothing cached from a previous repeat
                d._orders.clear()
                d._views.clear()
            return evaluate(t, calibration=c, policies=pols, cost=cost)

        return run

    assert test.errors is not None
    rows = [
        (
            "np.argsort (floor)",
            median_seconds(lambda: np.argsort(test.scores["top_prob"]), args.repeats),
        ),
        (
            "risk_coverage, 1 score",
            median_seconds(
                lambda: risk_coverage(test.scores["top_prob"], test.errors), args.repeats
            ),
        ),
        (
            "compare_policies, 20",
            median_seconds(
                lambda: (
                    cal._orders.clear(),
                    compare_policies(pols, test, calibration=cal, cost=cost),
                ),
                args.repeats,
            ),
        ),
        (
            f"full evaluate, {n // 10:,} rows",
            median_seconds(full(small_test, small_cal), args.repeats),
        ),
        (f"full evaluate, {n:,} rows", median_seconds(full(test, cal), args.repeats)),
    ]
    floor = rows[0][1]
    print(f"safepredict evaluation benchmark: {n:,} test + {n:,} calibration rows, 20 policies,")
    print(f"4 scores, median of {args.repeats} runs")
    print(f"{'step':<34}{'median s':>10}{'x argsort':>11}")
    for name, t in rows:
        print(f"{name:<34}{t:>10.3f}{t / floor:>11.1f}")
    scale = rows[4][1] / rows[3][1]
    print(f"scaling 10x rows -> {scale:.1f}x time (O(n log n) ~ 11x, O(n^2) ~ 100x)")
    verdict = "OK" if rows[4][1] < 10 else "TOO SLOW"
    print(f"full evaluate on {n:,} rows: {rows[4][1]:.2f} s (budget 10 s): {verdict}")


if __name__ == "__main__":
    main()
