"""Dask integration on a real LocalCluster with worker processes (the `dask` extra)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from safepredict import ConfigError, NotCalibratedError, SafePredictor
from safepredict.integrations.dask import DECISION_COLUMNS, decide_dask, decisions_frame

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

POLICY = {
    "audit_rate": 0.05,
    "tiers": [
        {"name": "auto", "action": "accept", "min_confidence": 0.95},
        {"name": "suggest", "action": "review", "max_set_size": 2},
        {"name": "human", "action": "abstain"},
    ],
}


@pytest.fixture(scope="module")
def cancer_predictor() -> tuple[SafePredictor, pd.DataFrame]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[::2], y[::2])
    sp = SafePredictor(model, tiers=POLICY, log="off", random_state=0)
    sp.calibrate(X[1::2], y[1::2])
    return sp, X


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        distributed.Client(lc) as client,
    ):
        yield client


def _shifted_rows(X: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = X.iloc[rng.integers(0, len(X), n)].reset_index(drop=True)
    noise = rng.normal(0, 0.02, rows.shape) * rows.std().to_numpy()
    return rows + noise


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in DECISION_COLUMNS if c != "decision_id"]  # ids are unique per batch
    for c in cols:
        left, right = a[c].to_numpy(), b[c].to_numpy()
        if left.dtype.kind == "f":
            np.testing.assert_array_equal(left, right)
        else:
            assert list(left) == list(right), c


@pytest.mark.slow
def test_local_cluster_200k_rows_identical_to_in_process(cancer_predictor, cluster, tmp_path):
    sp, X = cancer_predictor
    seeds = list(range(8))  # 8 partitions of 25,000 rows, generated on the workers
    ddf = dd.from_map(_shifted_rows, [X] * 8, [25_000] * 8, seeds, meta=X.iloc[:0])
    frame = pd.concat([_shifted_rows(X, 25_000, s) for s in seeds], ignore_index=True)
    expected = decisions_frame(sp.decide(frame), regression=False)
    got = decide_dask(sp, ddf, events_dir=tmp_path / "events").compute()
    assert len(got) == 200_000
    _same(got.reset_index(drop=True), expected)
    assert got["decision_id"].is_unique
    files = sorted((tmp_path / "events").glob("part-*.jsonl"))
    assert len(files) == 8
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 200_000
    assert {e["decision_id"] for e in lines} == set(got["decision_id"])
    assert {e["event"] for e in lines} == {"safepredict.decision"}


def test_local_scheduler_and_list_format(cancer_predictor) -> None:
    sp, X = cancer_predictor
    out = decide_dask(sp, dd.from_pandas(X, npartitions=3), set_format="list").compute()
    ref = sp.decide(X)
    assert [list(s) for s in out["prediction_set"]] == [
        list(ref.prediction_set(i)) for i in range(len(ref))
    ]
    assert list(out["action"]) == list(ref.actions)


def test_regression_columns(cluster) -> None:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X[::2], y[::2])
    sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    out = decide_dask(sp, dd.from_pandas(X, npartitions=2)).compute()
    ref = sp.decide(X)
    np.testing.assert_array_equal(out["interval_lower"].to_numpy(), ref.intervals[:, 0])
    np.testing.assert_array_equal(out["prediction"].to_numpy(), ref.predictions.astype(float))


def test_refuses_routing_and_uncalibrated(cancer_predictor, tmp_path: Path) -> None:
    sp, X = cancer_predictor
    ddf = dd.from_pandas(X, npartitions=2)
    routed = pickle.loads(pickle.dumps(sp))
    routed.router = str(tmp_path / "reviews.db")
    with pytest.raises(ConfigError, match="does not route from workers"):
        decide_dask(routed, ddf)
    with pytest.raises(NotCalibratedError, match="calibrate"):
        decide_dask(SafePredictor(sp.model), ddf)
    with pytest.raises(ConfigError, match="set_format"):
        decide_dask(sp, ddf, set_format="csv")


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle_round_trip_gives_identical_decisions(cancer_predictor, dumps) -> None:
    sp, X = cancer_predictor
    twin = pickle.loads(dumps(sp))
    a, b = sp.decide(X), twin.decide(X)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.set_mask, b.set_mask)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.audit, b.audit)
