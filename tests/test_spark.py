"""Spark integration on a real local[2] SparkSession (the `spark` extra; needs a JRE)."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from safepredict import ConfigError, InputSchemaError, NotCalibratedError, SafePredictor
from safepredict.config import TierPolicy
from safepredict.decisions import FRAME_COLUMNS

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover - .ci/run installs a JRE
    pytest.skip("local Spark needs a Java runtime (apt-get install default-jre-headless)")

from pyspark.sql import SparkSession

from safepredict.integrations.spark import (
    benchmark_spark,
    decide_spark,
    spark_schema,
)

# One worker of the test run holds every test here, so one SparkSession serves them all.
pytestmark = pytest.mark.xdist_group("spark")

POLICY = {
    "audit_rate": 0.05,
    "tiers": [
        {"name": "auto", "action": "accept", "min_confidence": 0.95},
        {"name": "suggest", "action": "review", "max_set_size": 2},
        {"name": "human", "action": "abstain"},
    ],
}


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as mp:
        # Executors' Python workers run this interpreter (PySpark reads the variable when
        # the context starts); the default is whatever `python3` is on PATH.
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")  # no probing of network interfaces
        session = (
            SparkSession.builder.master("local[2]")
            .appName("safepredict-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.memory", "1g")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def cancer_predictor() -> tuple[SafePredictor, pd.DataFrame]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[::2], y[::2])
    sp = SafePredictor(model, tiers=POLICY, log="off", random_state=0)
    sp.calibrate(X[1::2], y[1::2])
    return sp, X


def _shifted_rows(X: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = X.iloc[rng.integers(0, len(X), n)].reset_index(drop=True)
    noise = rng.normal(0, 0.02, rows.shape) * rows.std().to_numpy()
    return rows + noise


def _as_expected(got: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Spark's toPandas gives numpy/str dtypes; cast back to to_frame's to compare exactly."""
    return got[list(expected.columns)].astype(dict(expected.dtypes))


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in FRAME_COLUMNS if c != "decision_id"]  # ids are unique per batch
    pd.testing.assert_frame_equal(
        _as_expected(a, b)[cols].reset_index(drop=True), b[cols], check_exact=True
    )


def test_schema_is_exactly_that_of_to_frame(cancer_predictor, spark) -> None:
    sp, X = cancer_predictor
    out = decide_spark(sp, spark.createDataFrame(X))
    meta = sp.decide(X.iloc[:0]).to_frame(set_format="string")
    assert out.schema == spark_schema(meta)
    assert out.columns == list(FRAME_COLUMNS)
    types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    assert types["prediction"] == "bigint"  # integer class labels: Int64 -> long
    assert types["prediction_set"] == types["reasons"] == "string"
    assert types["audit"] == "boolean"
    _same(out.toPandas(), sp.decide(X).to_frame(set_format="string"))


def test_the_udf_carries_a_broadcast_handle_not_the_predictor(cancer_predictor, spark) -> None:
    from safepredict.integrations.spark import _shared

    sp, _ = cancer_predictor
    getter = _shared(spark, sp)
    assert len(cloudpickle.dumps(getter)) < len(pickle.dumps(sp)) / 20  # an id, not the model
    assert getter().classes_.tolist() == sp.classes_.tolist()


@pytest.mark.slow
def test_local2_200k_rows_identical_to_in_process_with_complete_events(
    cancer_predictor, spark, tmp_path: Path
) -> None:
    sp, X = cancer_predictor
    frame = _shifted_rows(X, 200_000, seed=1)
    expected = sp.decide(frame).to_frame(set_format="string")
    sdf = spark.createDataFrame(frame)  # arrow: row order kept, one slice per core
    parts = sdf.rdd.getNumPartitions()
    got = decide_spark(sp, sdf, events_dir=tmp_path / "events").toPandas()
    assert len(got) == 200_000
    _same(got, expected)
    assert got["decision_id"].is_unique
    files = sorted((tmp_path / "events").glob("part-*.jsonl"))
    assert len(files) == parts >= 2  # one file per partition, each of many arrow batches
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 200_000  # one event per row
    assert {e["decision_id"] for e in lines} == set(got["decision_id"])
    assert {e["event"] for e in lines} == {"safepredict.decision"}


def test_list_format_keep_columns_and_the_monitor_reads_the_directory(
    cancer_predictor, spark, tmp_path: Path
) -> None:
    from safepredict.monitoring.monitor import monitor

    sp, X = cancer_predictor
    keyed = X.assign(row_id=np.arange(len(X)) * 7)
    sdf = spark.createDataFrame(keyed).repartition(3, "row_id")  # rows land out of order
    out = decide_spark(sp, sdf, set_format="list", events_dir=tmp_path / "ev", keep=["row_id"])
    assert out.columns == ["row_id", *FRAME_COLUMNS]
    assert out.schema["prediction_set"].dataType.simpleString() == "array<bigint>"
    got = out.toPandas().sort_values("row_id").reset_index(drop=True)
    ref = sp.decide(X)
    assert got["row_id"].tolist() == keyed["row_id"].tolist()
    assert [list(s) for s in got["prediction_set"]] == [list(d.prediction_set) for d in ref]
    assert [list(r) for r in got["reasons"]] == [list(d.reasons) for d in ref]
    assert list(got["action"]) == list(ref.actions)
    report = monitor(tmp_path / "ev", window=None)
    assert len(report.sources) == 3
    assert report.events["decision"] == len(X)


def test_regression_columns(spark) -> None:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X[::2], y[::2])
    sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    out = decide_spark(sp, spark.createDataFrame(X))
    assert out.schema["prediction"].dataType.simpleString() == "double"
    got = out.toPandas()
    ref = sp.decide(X)
    np.testing.assert_array_equal(got["interval_lower"].to_numpy(), ref.intervals[:, 0])
    np.testing.assert_array_equal(got["prediction"].to_numpy(), ref.predictions.astype(float))


def test_refusals_say_what_to_do(cancer_predictor, spark, tmp_path: Path) -> None:
    sp, X = cancer_predictor
    sdf = spark.createDataFrame(X.iloc[:20])
    routed = pickle.loads(pickle.dumps(sp))
    routed.router = str(tmp_path / "reviews.db")
    with pytest.raises(ConfigError, match=r"does not route from workers.*from the driver"):
        decide_spark(routed, sdf)
    with pytest.raises(NotCalibratedError, match="calibrate"):
        decide_spark(SafePredictor(sp.model), sdf)
    with pytest.raises(ConfigError, match="no tuple type: use 'list'"):
        decide_spark(sp, sdf, set_format="tuple")
    with pytest.raises(ConfigError, match=r"needs a pyspark\.sql\.DataFrame.*createDataFrame"):
        decide_spark(sp, X)
    with pytest.raises(ConfigError, match=r"keep=.*not in the frame \(\['id'\]\)"):
        decide_spark(sp, sdf, keep=["id"])
    with pytest.raises(InputSchemaError, match=r"extra columns \['id'\].*keep="):
        decide_spark(sp, spark.createDataFrame(X.iloc[:20].assign(id=1)))
    used = tmp_path / "events"
    used.mkdir()
    (used / "part-00000.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="from another run"):
        decide_spark(sp, sdf, events_dir=used)


# ------------------------------------------------------------------ benchmark
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


POLICIES = {
    "conf": {
        "tiers": [
            {"name": "auto", "action": "accept", "min_confidence": 0.8},
            {"name": "human", "action": "abstain"},
        ]
    },
    "risk": {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.1},
            {"name": "suggest", "action": "review", "max_set_size": 2},
            {"name": "human", "action": "abstain"},
        ],
    },
}


@pytest.mark.slow
def test_benchmark_spark_counts_equal_the_in_memory_benchmark(spark) -> None:
    from safepredict.evaluation import (
        CostModel,
        ScoredData,
        calibrate_policy,
        evaluate_policy,
        risk_coverage,
    )

    frame = _scores_frame(200_000, 1)
    cal_frame = _scores_frame(5_000, 99)
    policies = {k: TierPolicy.from_dict(v) for k, v in POLICIES.items()}

    def scored(f: pd.DataFrame) -> ScoredData:
        return ScoredData.from_arrays(
            f["error"],
            {s: f[s] for s in ("conformal", "top_prob", "margin")},
            set_size=f["set_size"],
        )

    calibration = {k: calibrate_policy(p, scored(cal_frame)) for k, p in policies.items()}
    cost = CostModel(cost_error=50, cost_review=2)
    sdf = spark.createDataFrame(frame).repartition(4)
    got = benchmark_spark(sdf, policies=policies, calibration=calibration, cost=cost)
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


def test_benchmark_spark_small_frame_and_errors(spark) -> None:
    from safepredict.evaluation import risk_coverage
    from safepredict.integrations.dask import benchmark_dask

    dd = pytest.importorskip("dask.dataframe")
    frame = _scores_frame(3_000, 2)
    policies = {k: TierPolicy.from_dict(v) for k, v in POLICIES.items() if k == "conf"}
    got = benchmark_spark(spark.createDataFrame(frame), policies=policies)
    twin = benchmark_dask(dd.from_pandas(frame, npartitions=3), policies=policies)
    want = risk_coverage(frame["conformal"], frame["error"], name="conformal")
    np.testing.assert_array_equal(got.curves["conformal"].n_errors, want.n_errors)
    assert [(t.n, t.n_errors) for t in got.policies["conf"].tiers] == [
        (t.n, t.n_errors) for t in twin.policies["conf"].tiers
    ]
    sdf = spark.createDataFrame(frame.iloc[:100])
    with pytest.raises(ConfigError, match="no 'wrong' column"):
        benchmark_spark(sdf, error="wrong")
    with pytest.raises(ConfigError, match="not in the frame"):
        benchmark_spark(sdf, scores=["entropy"])
    with pytest.raises(ConfigError, match=r"needs a pyspark\.sql\.DataFrame"):
        benchmark_spark(frame)
