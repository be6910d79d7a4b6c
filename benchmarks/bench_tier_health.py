"""Tier health alarms: safepredict vs MAPIE's ``RiskMonitoring`` vs repeated Clopper-Pearson.

Every method sees the same simulated streams of audited outcomes (1 = the accepted
row was wrong) and is checked after every outcome:

* ``safepredict``: :func:`safepredict._stats.betting_alarm_times`, the lower half of
  the hedged betting confidence sequence behind ``SafePredictor.tier_health()``
  (inverse-probability weighted when audit rates differ between rows).
* ``MAPIE RiskMonitoring``: ``mapie.exchangeability_testing.RiskMonitoring`` with
  ``risk="accuracy"`` (its risk sequence is the error indicator),
  ``threshold=max_error`` and ``test_level=delta``; its online lower bound is a
  conjugate-mixture empirical-Bernstein sequence at ``delta / 2`` with running
  intersection. One ``update`` with the whole stream gives the same bound sequence
  as an update after every outcome (it recomputes from scratch), so we read
  ``online_risk_lower_bound_sequence_history``. It has no sampling weights.
* ``repeated CP``: the one-sided ``1 - delta`` Clopper-Pearson lower bound
  recomputed after every outcome (valid for one look only).

Scenarios (``max_error = 0.05``, ``delta = 0.05``):

A. no shift, the error sits exactly at ``max_error``: false-alarm rate over the stream;
B. the error is ``2 * max_error`` from the start: detection delay in outcomes, and in
   accepted rows for audit rates 1%, 5%, 20% (uniform audits: the k-th audited row
   comes after ``k + NegativeBinomial(k, rate)`` accepted rows);
C. 500 outcomes at 3%, then 10%: delay after the change;
D. non-uniform audits (two equal strata audited at 8% and 2%, erring 2% and 12%):
   the tier's error is 7% > ``max_error = 0.06``, the audited sample's plain mean is 4%.

Run: ``PYTHONPATH=src python benchmarks/bench_tier_health.py [--runs R]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from mapie.exchangeability_testing import RiskMonitoring
from numpy.typing import NDArray
from scipy import stats

from safepredict._stats import betting_alarm_times

MAX_ERROR = 0.05
DELTA = 0.05


def mapie_alarm_times(errors: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    out = np.full(len(errors), -1, dtype=np.int64)
    for r, stream in enumerate(errors):
        e = stream.astype(int)
        monitor = RiskMonitoring(risk="accuracy", threshold=threshold, test_level=DELTA, warn=False)
        monitor.update(e, np.zeros_like(e))
        hit = monitor.online_risk_lower_bound_sequence_history > threshold
        if hit.any():
            out[r] = int(np.argmax(hit)) + 1
    return out


def cp_alarm_times(errors: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    k = np.cumsum(errors, axis=-1)
    t = np.arange(1, errors.shape[-1] + 1)
    hit = stats.binom.sf(k - 1, t, threshold) <= DELTA
    return np.where(hit.any(-1), np.argmax(hit, -1) + 1, -1).astype(np.int64)


def sp_alarm_times(errors: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    return betting_alarm_times(errors, threshold=threshold, delta=DELTA)


METHODS: dict[str, Callable[[NDArray[np.float64], float], NDArray[np.int64]]] = {
    "safepredict": sp_alarm_times,
    "MAPIE RiskMonitoring": mapie_alarm_times,
    "repeated CP": cp_alarm_times,
}


def rate(times: NDArray[np.int64]) -> str:
    p = float((times > 0).mean())
    se = (p * (1 - p) / len(times)) ** 0.5
    return f"{p:.3f} +- {se:.3f}"


def median_delay(times: NDArray[np.int64], start: int = 0) -> str:
    hit = times[times > 0] - start
    if len(hit) == 0:
        return "never"
    return f"{np.median(hit):.0f} (detected {len(hit)}/{len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--n", type=int, default=2000, help="outcomes per stream")
    args = parser.parse_args()
    rng = np.random.default_rng(22)
    runs, n = args.runs, args.n
    print(f"runs={runs}, outcomes per stream={n}, max_error={MAX_ERROR}, delta={DELTA}\n")

    null = (rng.random((runs, n)) < MAX_ERROR).astype(np.float64)
    shifted = (rng.random((runs, n)) < 2 * MAX_ERROR).astype(np.float64)
    pre = 500
    change = np.concatenate(
        [rng.random((runs, pre)) < 0.03, rng.random((runs, n)) < 0.10], axis=1
    ).astype(np.float64)
    print("| method | A: false alarms | B: median delay (outcomes) | C: delay after change | s |")
    print("|---|---|---|---|---|")
    delays: dict[str, NDArray[np.int64]] = {}
    for name, fn in METHODS.items():
        t0 = time.perf_counter()
        a = fn(null, MAX_ERROR)
        b = fn(shifted, MAX_ERROR)
        c = fn(change, MAX_ERROR)
        delays[name] = b
        secs = time.perf_counter() - t0
        print(f"| {name} | {rate(a)} | {median_delay(b)} | {median_delay(c, pre)} | {secs:.1f} |")

    print("\nB in accepted rows (median), uniform audit sampling:\n")
    print("| method | audit 1% | audit 5% | audit 20% |")
    print("|---|---|---|---|")
    for name in ("safepredict", "MAPIE RiskMonitoring"):
        k = delays[name][delays[name] > 0]
        cells = [f"{np.median(k + rng.negative_binomial(k, r)):.0f}" for r in (0.01, 0.05, 0.2)]
        print(f"| {name} | {' | '.join(cells)} |")

    in_a = rng.random((runs, n)) < 0.8
    strata = (rng.random((runs, n)) < np.where(in_a, 0.02, 0.12)).astype(np.float64)
    weights = np.where(in_a, 1 / 0.08, 1 / 0.02)
    weighted = betting_alarm_times(strata, weights, threshold=0.06, delta=DELTA, max_weight=50.0)
    print("\nD: non-uniform audits, tier error 7% > max_error 6% (audited plain mean 4%):\n")
    print("| method | detected | median delay (outcomes) |")
    print("|---|---|---|")
    print(f"| safepredict (weighted) | {rate(weighted)} | {median_delay(weighted)} |")
    plain = mapie_alarm_times(strata, 0.06)
    print(f"| MAPIE RiskMonitoring (no weights) | {rate(plain)} | {median_delay(plain)} |")


if __name__ == "__main__":
    main()
