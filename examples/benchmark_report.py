"""The offline abstention benchmark on scikit-learn's bundled digits data.

Trains a deliberately simple model (so that it makes enough mistakes to see),
calibrates a SafePredictor on held-out rows, compares four tier policies on
test rows and writes the report (report.html, summary.json and the PNG plots
shown in docs/benchmarking.md):

    python examples/benchmark_report.py --out docs/assets/benchmarking
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import safepredict as sp
from safepredict.evaluation import CostModel, benchmark, threshold_policies
from safepredict.evaluation.report import write_report

STRICT = """
delta = 0.05

[[tiers]]
name = "auto"
action = "accept"
max_error = 0.02

[[tiers]]
name = "suggest"
action = "review"
max_set_size = 2

[[tiers]]
name = "human"
action = "abstain"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmark-output"))
    args = parser.parse_args()

    X, y = load_digits(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=300, random_state=0)
    X_cal, X_test, y_cal, y_test = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    model.fit(X_train, y_train)
    predictor = sp.SafePredictor(model, confidence_level=0.9, log="off", random_state=0)
    predictor.calibrate(X_cal, y_cal)

    policies = {"strict (max_error 2%)": sp.TierPolicy.from_toml(STRICT)}
    policies.update(threshold_policies([0.95, 0.99]))
    policies.update(threshold_policies([0.05], kind="max_error"))
    evaluation = benchmark(
        predictor,
        X_test,
        y_test,
        X_cal=X_cal,
        y_cal=y_cal,
        policies=policies,
        cost=CostModel(cost_error=50, cost_review=2),
    )
    report = write_report(evaluation, args.out, title="safepredict benchmark: digits")
    print(evaluation.policies.to_frame().round(4).to_string(index=False))
    print(f"report written to {report}")


if __name__ == "__main__":
    main()
