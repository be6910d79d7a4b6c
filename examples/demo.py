"""The safepredict demo on scikit-learn's bundled breast-cancer data.

Wraps a fitted model, calibrates it on held-out rows, decides on a test set that
also contains a few broken rows, and prints a readable summary: tier counts,
actions, conformal coverage on the held-out data. Cases for humans go to the
SQLite review queue ``<out>/reviews.db`` (a reviewer then claims one and records
the answer), and every decision is one JSON line in ``<out>/events.jsonl``, which
the monitor reads back. It ends with the offline abstention benchmark:
risk-coverage curves, guaranteed vs naive operating points, policies side by side
and their cost, written as a self-contained HTML report into ``<out>/report/``.

Run it with ``make demo`` (or ``python examples/demo.py --out demo-output``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split

import safepredict as sp
from safepredict.evaluation import CostModel, benchmark, threshold_policies
from safepredict.evaluation.report import write_report
from safepredict.monitoring.events import jsonl_file_logger
from safepredict.monitoring.monitor import monitor

POLICY = """
delta = 0.05
explain = ["suggest", "human"]
audit_rate = 0.02

[[tiers]]
name = "auto"
action = "accept"
min_confidence = 0.95
min_credibility = 0.2

[[tiers]]
name = "suggest"
action = "review"
min_credibility = 0.1

[[tiers]]
name = "human"
action = "abstain"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.5, random_state=0)
    X_cal, X_test, y_cal, y_test = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    model = HistGradientBoostingClassifier(random_state=0).fit(X_train, y_train)

    # Rows as production sends them: the test set plus three broken ones.
    broken = X_test.iloc[:3].copy()
    broken.iloc[0, 0] = np.nan  # a missing value
    broken.iloc[1, 1] = X_train.iloc[:, 1].max() * 50  # far outside the training range
    broken.iloc[2] = X_train.max().to_numpy() * 3  # unlike any training row
    incoming = pd.concat([X_test, broken], ignore_index=True)

    for stale in ("reviews.db", "reviews.db-wal", "reviews.db-shm"):  # a fresh queue per run
        (args.out / stale).unlink(missing_ok=True)
    queue = sp.SQLiteReviewQueue(args.out / "reviews.db")
    with open(args.out / "events.jsonl", "w", encoding="utf-8") as events:
        predictor = sp.SafePredictor(
            model,
            confidence_level=0.9,
            tiers=POLICY,
            router=queue,
            logger=jsonl_file_logger(events),
            log="decision",
            model_name="breast-cancer-demo",
            model_version="1",
            random_state=0,
        )
        predictor.calibrate(X_cal, y_cal, reference=X_train)
        decisions = predictor.decide(incoming)

    clean = decisions[: len(X_test)]
    covered = np.array([y_t in d.prediction_set for y_t, d in zip(y_test, clean, strict=True)])
    accepted = clean.actions == "accept"
    wrong = clean.predictions.astype(int) != y_test.to_numpy()
    print("safepredict demo: breast cancer, HistGradientBoosting, confidence level 0.9")
    print(f"  calibration rows: {len(X_cal)}, test rows: {len(X_test)} + 3 broken rows")
    spread = 2 * np.sqrt(0.9 * 0.1 / len(covered))  # two binomial standard errors
    print(
        f"  conformal coverage on test: {covered.mean():.3f} (0.90 guaranteed on average; "
        f"+-{spread:.2f} is normal for {len(covered)} rows)"
    )
    print(f"  tiers:   {decisions.counts()['tier']}")
    print(f"  actions: {decisions.counts()['action']}")
    print(f"  error among accepted: {wrong[accepted].mean():.3f} on {accepted.sum()} rows")
    print(f"  error among the rest: {wrong[~accepted].mean():.3f} on {(~accepted).sum()} rows")
    for d in decisions[len(X_test) :]:
        shown = ", ".join(d.reasons[:3]) + (f" (+{len(d.reasons) - 3} more)" * (len(d.reasons) > 3))
        print(f"  broken row -> {d.action} ({d.tier}): {shown}")
    decisions.to_frame().to_csv(args.out / "decisions.csv", index=False)
    print(f"  decisions written to {args.out / 'decisions.csv'}")

    # The review queue: routed cases wait for a human, who records the answer.
    waiting = queue.counts()["*"]
    print(f"  review queue {args.out / 'reviews.db'}: {waiting['pending']} cases pending")
    case = queue.claim("demo-reviewer")
    if case is not None:
        row = int(str(case["decision_id"]).rsplit("-", 1)[1])
        truth = int(y_test.iloc[row]) if row < len(y_test) else "unreadable input"
        queue.resolve(case["decision_id"], truth, "demo-reviewer", note="checked by hand")
        print(f"  reviewer answered case {case['decision_id']} ({case['tier']}): {truth}")
    queue.close()

    # The event log: one JSON line per decision, read back by the monitor.
    health = monitor(args.out / "events.jsonl", window="all")
    print(
        f"  event log {args.out / 'events.jsonl'}: {health.events['decision']} decisions, "
        f"{len(health.alerts)} monitor alerts"
    )

    # Offline abstention benchmark: what would other policies have done on these rows?
    policies = threshold_policies([0.97, 0.99])
    policies.update(threshold_policies([0.05], kind="max_error", delta=0.1))
    evaluation = benchmark(
        predictor,
        X_test,
        y_test,
        X_cal=X_cal,
        y_cal=y_cal,
        policies=policies,
        cost=CostModel(cost_error=50, cost_review=2),
    )
    print("  policies on the test rows (accepted share, error among accepted, cost per 1,000):")
    for r in evaluation.policies.results:
        print(
            f"    {r.name:<22} {r.coverage:6.1%}  {r.accepted_error:6.3f}  {r.cost_per_1000:8.1f}"
        )
    aurc = {k: round(c.aurc, 4) for k, c in evaluation.curves.items()}
    print(f"  AURC per score: {aurc}")
    report = write_report(evaluation, args.out / "report", title="safepredict demo: breast cancer")
    print(f"  benchmark report written to {report}")


if __name__ == "__main__":
    main()
