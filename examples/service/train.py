"""Train the service example's model and write its calibration (run once, offline).

Uses scikit-learn's bundled diabetes data as a classification task: is disease
progression after one year above the median? ``sex`` is kept as a categorical
column (codes ``"1"``/``"2"``) so the service shows how unseen categories are
handled. Writes, into ``--out`` (default ``artifacts/``):

- ``diabetes.json``  — the calibration file (plain, checksummed JSON);
- ``diabetes.skops`` — the model, saved with skops (no pickle).

Run: ``python examples/service/train.py --out examples/service/artifacts``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import safepredict as sp

POLICY = {
    "audit_rate": 0.01,
    "tiers": [
        {"name": "auto", "action": "accept", "min_confidence": 0.9},
        {"name": "suggest", "action": "review", "max_set_size": 1},
        {"name": "human", "action": "abstain"},
    ],
}


def load_data() -> tuple[Any, Any]:
    """The diabetes rows (``sex`` as a string category) and a binary target."""
    X, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
    X = X.assign(sex=X["sex"].astype(int).astype(str))
    return X, (y > y.median()).astype(int)


def build_model() -> Pipeline:
    """One-hot ``sex`` (unknown categories raise, so they fail closed), scale the rest."""
    encode = ColumnTransformer(
        [("sex", OneHotEncoder(handle_unknown="error"), ["sex"])],
        remainder=StandardScaler(),
    )
    return Pipeline([("encode", encode), ("clf", LogisticRegression(max_iter=1000))])


def main(out: Path) -> Path:
    """Fit, calibrate and save; return the calibration file's path."""
    X, y = load_data()
    X_train, X_cal, y_train, y_cal = train_test_split(X, y, test_size=0.4, random_state=0)
    model = build_model().fit(X_train, y_train)
    predictor = sp.SafePredictor(
        model,
        tiers=POLICY,
        model_name="diabetes-progression",
        model_version="example-1",
        random_state=0,
    ).calibrate(X_cal, y_cal, reference=X_train)
    out.mkdir(parents=True, exist_ok=True)
    return predictor.save(out / "diabetes.json", model="skops")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "artifacts")
    print(main(parser.parse_args().out))
