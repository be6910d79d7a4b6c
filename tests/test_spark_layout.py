"""Spark hands executors Arrow batches: column-major frames with the same values.

A row's decision must not depend on how its batch is laid out in memory. The centroid
OOD detector's float32 matrix product gave last-bit different distances for a
Fortran-ordered batch, which flipped a row on the OOD threshold (breast cancer row 3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier

from safepredict import GuardConfig, SafePredictor
from safepredict.decisions import FRAME_COLUMNS

pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module", params=["centroids", "knn"])
def fitted(request) -> tuple[SafePredictor, pd.DataFrame]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[::2], y[::2])
    guards = GuardConfig(ood_method=request.param)
    sp = SafePredictor(model, guards=guards, log="off", random_state=0)
    return sp.calibrate(X[1::2], y[1::2]), X


def _decisions(sp: SafePredictor, frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in FRAME_COLUMNS if c != "decision_id"]
    return sp.decide(frame).to_frame(set_format="string")[cols]


@pytest.mark.parametrize(
    "relayout",
    [
        lambda X: pa.Table.from_pandas(X, preserve_index=False).to_pandas(),  # Spark's path
        lambda X: pd.DataFrame(np.asfortranarray(X.to_numpy()), columns=X.columns),
        lambda X: pd.DataFrame(np.ascontiguousarray(X.to_numpy()), columns=X.columns),
    ],
    ids=["arrow", "fortran", "c"],
)
def test_decisions_do_not_depend_on_the_memory_layout(fitted, relayout) -> None:
    sp, X = fitted
    same = relayout(X)
    np.testing.assert_array_equal(same.to_numpy(), X.to_numpy())  # the same values
    pd.testing.assert_frame_equal(_decisions(sp, same), _decisions(sp, X), check_exact=True)
    scores = sp.guards_.detector.scores
    np.testing.assert_array_equal(scores(same.to_numpy()), scores(X.to_numpy()))
