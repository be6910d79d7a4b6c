"""Dask integration on a real LocalCluster with worker processes (the `dask` extra)."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from safepredict import ConfigError, NotCalibratedError, SafePredictor
from safepredict.decisions import FRAME_COLUMNS
from safepredict.integrations.dask import decide_dask

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

# One worker of the test run holds every test here, so one LocalCluster serves them all.
pytestmark = pytest.mark.xdist_group("dask")

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
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as lc,
        distributed.Client(lc, set_as_default=False) as client,
    ):
        yield client  # tests enter client.as_current() to run on the cluster


def _graph_bytes(collection: object) -> int:
    return len(cloudpickle.dumps(dict(collection.__dask_graph__())))  # type: ignore[attr-defined]


def test_predictor_is_one_shared_graph_node_without_a_client(cancer_predictor) -> None:
    sp, X = cancer_predictor
    ddf = dd.from_pandas(X, npartitions=16)
    added = _graph_bytes(decide_dask(sp, ddf)) - _graph_bytes(ddf)
    predictor_bytes = len(pickle.dumps(sp))
    assert predictor_bytes * 0.9 < added < predictor_bytes * 1.5  # once, not 16 times


def test_predictor_is_scattered_once_with_a_client(cancer_predictor, cluster) -> None:
    sp, X = cancer_predictor
    ddf = dd.from_pandas(X, npartitions=16)
    cluster.wait_for_workers(2, timeout=60)  # a worker joining after the scatter has no copy
    with cluster.as_current():
        out = decide_dask(sp, ddf)
        added = _graph_bytes(out) - _graph_bytes(ddf)
        assert added < len(pickle.dumps(sp)) / 4  # the graph holds a future, not the model
        deadline = time.monotonic() + 10.0  # the broadcast may land a moment later
        holders = [w for w, keys in cluster.has_what().items() if keys]
        while len(holders) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            holders = [w for w, keys in cluster.has_what().items() if keys]
        assert len(holders) == 2  # broadcast to both workers
        _same(out.compute(), sp.decide(X).to_frame(set_format="string"))


def _shifted_rows(X: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = X.iloc[rng.integers(0, len(X), n)].reset_index(drop=True)
    noise = rng.normal(0, 0.02, rows.shape) * rows.std().to_numpy()
    return rows + noise


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in FRAME_COLUMNS if c != "decision_id"]  # ids are unique per batch
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)


# The frames are built in the test and shipped in the graph (the worker processes cannot
# import test-module functions); dask warns about the graph size, which is the point here.
LARGE_GRAPH = pytest.mark.filterwarnings("ignore:Sending large graph:UserWarning")


@pytest.mark.slow
@LARGE_GRAPH
def test_local_cluster_200k_rows_identical_to_in_process(cancer_predictor, cluster, tmp_path):
    sp, X = cancer_predictor
    frame = _shifted_rows(X, 200_000, seed=1)
    ddf = dd.from_pandas(frame, npartitions=8)
    expected = sp.decide(frame).to_frame(set_format="string")
    with cluster.as_current():
        got = decide_dask(sp, ddf, events_dir=tmp_path / "events").compute()
    assert len(got) == 200_000
    assert got.index.equals(frame.index)  # each partition keeps its rows' index
    assert dict(got.dtypes) == dict(expected.dtypes)
    _same(got, expected)
    assert got["decision_id"].is_unique
    files = sorted((tmp_path / "events").glob("part-*.jsonl"))
    assert len(files) == 8
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 200_000
    assert {e["decision_id"] for e in lines} == set(got["decision_id"])
    assert {e["event"] for e in lines} == {"safepredict.decision"}


def test_local_scheduler_list_format_and_monitor_reads_the_event_directory(
    cancer_predictor, tmp_path: Path
) -> None:
    from safepredict.monitoring.monitor import monitor

    sp, X = cancer_predictor
    ddf = dd.from_pandas(X, npartitions=3)
    out = decide_dask(sp, ddf, set_format="list", events_dir=tmp_path / "ev").compute()
    ref = sp.decide(X)
    assert out["prediction_set"].tolist() == [list(d.prediction_set) for d in ref]
    assert list(out["action"]) == list(ref.actions)
    report = monitor(tmp_path / "ev", window=None)
    assert len(report.sources) == 3
    assert report.events["decision"] == len(X)
    assert sum(w["n"] for w in report.windows) == len(X)


def test_mixed_dtype_pipeline_survives_dasks_string_conversion() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = load_wine(return_X_y=True, as_frame=True)
    X = X[["alcohol", "malic_acid", "hue", "proline"]].copy()
    X["alcohol_band"] = pd.cut(X["alcohol"], 3, labels=["low", "mid", "high"])
    X["hue_band"] = np.where(X["hue"] > X["hue"].median(), "pale", "deep").astype(object)
    cats = ["alcohol_band", "hue_band"]
    nums = [c for c in X.columns if c not in cats]
    pre = ColumnTransformer([("cat", OneHotEncoder(), cats), ("num", StandardScaler(), nums)])
    model = make_pipeline(pre, LogisticRegression(max_iter=2000)).fit(X[::2], y[::2])
    sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2], reference=X[::2])
    import dask

    with dask.config.set({"dataframe.convert-string": True}):  # dask's default
        ddf = dd.from_pandas(X, npartitions=3)
    assert isinstance(ddf.dtypes["hue_band"], pd.StringDtype)  # no longer object
    _same(decide_dask(sp, ddf).compute(), sp.decide(X).to_frame(set_format="string"))


def test_regression_columns(cluster) -> None:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X[::2], y[::2])
    sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    with cluster.as_current():
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
    with pytest.raises(ConfigError, match=r"needs a dask\.dataframe\.DataFrame.*from_pandas"):
        decide_dask(sp, X)  # a pandas frame: use sp.decide, or wrap it
    used = tmp_path / "events"
    used.mkdir()
    (used / "part-00000.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="from another run"):
        decide_dask(sp, ddf, events_dir=used)


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle_round_trip_gives_identical_decisions(cancer_predictor, dumps) -> None:
    sp, X = cancer_predictor
    twin = pickle.loads(dumps(sp))
    a, b = sp.decide(X), twin.decide(X)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.set_mask, b.set_mask)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.audit, b.audit)


def test_pickled_predictor_rebuilds_explainers_and_decide_dask_leaves_the_logger(
    tmp_path: Path,
) -> None:
    from safepredict.monitoring.events import jsonl_file_logger

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[::2], y[::2])
    policy = {**POLICY, "explain": ["suggest", "human"]}
    with open(tmp_path / "driver.jsonl", "w", encoding="utf-8") as fh:
        sp = SafePredictor(
            model, tiers=policy, explainer="auto", logger=jsonl_file_logger(fh), random_state=0
        )
        sp.calibrate(X[1::2], y[1::2], reference=X[::2])
        a = sp.decide(X)
        explained = [i for i, e in enumerate(a.explanations or []) if e is not None]
        assert explained  # some rows go to humans, with explanations
        with pytest.raises(pickle.PicklingError):  # the file logger cannot travel...
            pickle.dumps(sp)
        # ...but decide_dask ships it without the logger, and workers write their own files
        out = decide_dask(sp, dd.from_pandas(X, npartitions=2), events_dir=tmp_path / "ev")
        got = out.compute(scheduler="processes", num_workers=2)
    _same(got, a.to_frame(set_format="string"))
    assert len(list((tmp_path / "ev").glob("part-*.jsonl"))) == 2
    twin = cloudpickle.loads(cloudpickle.dumps(sp.set_params(logger=None)))
    b = twin.decide(X)
    for i in explained:
        e, f = a.explanations[i], b.explanations[i]
        assert f is not None
        assert (e.method, e.feature_names, e.output) == (f.method, f.feature_names, f.output)
        np.testing.assert_allclose(f.values, e.values, rtol=1e-9, atol=1e-12)


def _scores_frame(n: int, seed: int) -> pd.DataFrame:
    """Scores and outcomes as a production join would give them (ties included)."""
    rng = np.random.default_rng(seed)
    conformal = np.round(rng.uniform(0, 1, n), 3)  # rounded: many tied scores
    top = np.clip(conformal + rng.normal(0, 0.05, n), 0, 1)
    error = rng.uniform(0, 1, n) > conformal * 0.9 + 0.1
    return pd.DataFrame(
        {
            "error": error,
            "conformal": conformal,
            "top_prob": top,
            "margin": top - rng.uniform(0, 0.3, n),
            "set_size": np.where(conformal > 0.5, 1, 2),
        }
    )


@pytest.mark.slow
@LARGE_GRAPH
def test_benchmark_on_cluster_matches_in_memory(cluster) -> None:
    from safepredict.config import TierPolicy
    from safepredict.evaluation import (
        CostModel,
        ScoredData,
        calibrate_policy,
        evaluate_policy,
        risk_coverage,
    )
    from safepredict.integrations.dask import benchmark_dask

    frame = _scores_frame(200_000, 1)
    ddf = dd.from_pandas(frame, npartitions=8)
    cal_frame = _scores_frame(5_000, 99)
    policies = {
        "conf": TierPolicy.from_dict(
            {
                "tiers": [
                    {"name": "auto", "action": "accept", "min_confidence": 0.8},
                    {"name": "human", "action": "abstain"},
                ]
            }
        ),
        "risk": TierPolicy.from_dict(
            {
                "delta": 0.1,
                "tiers": [
                    {"name": "auto", "action": "accept", "max_error": 0.1},
                    {"name": "suggest", "action": "review", "max_set_size": 2},
                    {"name": "human", "action": "abstain"},
                ],
            }
        ),
    }

    def scored(f: pd.DataFrame) -> ScoredData:
        return ScoredData.from_arrays(
            f["error"],
            {s: f[s] for s in ("conformal", "top_prob", "margin")},
            set_size=f["set_size"],
        )

    calibration = {k: calibrate_policy(p, scored(cal_frame)) for k, p in policies.items()}
    cost = CostModel(cost_error=50, cost_review=2)
    with cluster.as_current():
        got = benchmark_dask(ddf, policies=policies, calibration=calibration, cost=cost)
    assert got.n == 200_000
    for s in ("conformal", "top_prob", "margin"):
        want = risk_coverage(frame[s], frame["error"], name=s)
        c = got.curves[s]
        np.testing.assert_array_equal(c.thresholds, want.thresholds)  # exact
        np.testing.assert_array_equal(c.n_accepted, want.n_accepted)
        np.testing.assert_array_equal(c.n_errors, want.n_errors)
        assert c.aurc == pytest.approx(want.aurc, rel=1e-12)
    data = scored(frame)
    for name, policy in policies.items():
        want = evaluate_policy(policy, data, calibration=calibration[name], cost=cost, name=name)
        res = got.policies[name]
        assert [(t.tier, t.n, t.n_errors) for t in res.tiers] == [
            (t.tier, t.n, t.n_errors) for t in want.tiers
        ]
        assert res.coverage == want.coverage
        assert res.cost_per_1000 == pytest.approx(want.cost_per_1000, rel=1e-12)
    assert got.policies["risk"].tiers[0].certified


def test_benchmark_errors_name_the_columns() -> None:
    from safepredict.integrations.dask import benchmark_dask

    ddf = dd.from_pandas(_scores_frame(100, 0), npartitions=2)
    with pytest.raises(ConfigError, match="no 'wrong' column"):
        benchmark_dask(ddf, error="wrong")
    with pytest.raises(ConfigError, match="not in the frame"):
        benchmark_dask(ddf, scores=["entropy"])
    with pytest.raises(ConfigError, match=r"needs a dask\.dataframe\.DataFrame"):
        benchmark_dask(_scores_frame(100, 0))
    unlabeled = _scores_frame(100, 0).astype({"error": object})
    unlabeled.loc[3, "error"] = None
    with pytest.raises(ConfigError, match="dropna"):
        benchmark_dask(dd.from_pandas(unlabeled, npartitions=2))
