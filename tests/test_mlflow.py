"""MLflow packaging: log, load in a fresh process, identical decisions; tampering refused."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from safepredict import ConfigError, NotCalibratedError, PersistenceError, SafePredictor
from safepredict.decisions import FRAME_COLUMNS
from safepredict.integrations.mlflow import log_model, save_model

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("skops")

POLICY = {
    "audit_rate": 0.05,
    "tiers": [
        {"name": "auto", "action": "accept", "min_confidence": 0.95},
        {"name": "suggest", "action": "review", "max_set_size": 2},
        {"name": "human", "action": "abstain"},
    ],
}
SRC = Path(__file__).resolve().parents[1] / "src"
# HistGradientBoosting's tree arrays are indexed without bounds checks, so skops makes the
# caller trust the type explicitly (after the file's SHA-256 has been checked on load).
TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]

# Loads in a fresh interpreter with every internet socket refused: loading and deciding
# must read local files only.
LOADER = """
import socket, sys

def _refuse(self, address, *args, **kwargs):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"network access during load: {address!r}")
    return _connect(self, address, *args, **kwargs)

_connect = socket.socket.connect
socket.socket.connect = _refuse

import mlflow.pyfunc
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.read_parquet(sys.argv[2]))
out.to_parquet(sys.argv[3])
print(model.metadata.flavors["safepredict"]["calibration"])
"""


@pytest.fixture(scope="module")
def environment() -> dict[str, str]:
    return {
        "MLFLOW_ALLOW_FILE_STORE": "true",  # a file store in tmp_path; MLflow 3 prefers a DB
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


@pytest.fixture(scope="module")
def cancer() -> tuple[SafePredictor, pd.DataFrame]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[::2], y[::2])
    sp = SafePredictor(model, tiers=POLICY, log="off", random_state=0)
    return sp.calibrate(X[1::2], y[1::2]), X


@pytest.fixture(scope="module")
def logged(cancer, environment, tmp_path_factory) -> tuple[str, dict[str, str]]:
    sp, X = cancer
    root = tmp_path_factory.mktemp("mlflow")
    env = {**environment, "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri()}
    with tracking(env):
        info = log_model(sp, "cancer", input_example=X.head(5), trusted=TRUSTED)
    return info.model_uri, env


@contextlib.contextmanager
def tracking(env: dict[str, str]) -> Iterator[None]:
    """The environment, and MLflow's tracking URI pinned to it for the block.

    MLflow keeps a tracking URI set in the process (by another test, or a docs page
    run in this worker) over the environment variable, so it is set explicitly.
    """
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def saved(cancer, tmp_path_factory) -> Path:
    sp, X = cancer
    target = tmp_path_factory.mktemp("saved") / "model"
    return save_model(sp, target, input_example=X.head(5), trusted=TRUSTED)


def _same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    cols = [c for c in FRAME_COLUMNS if c != "decision_id"]  # ids are unique per batch
    pd.testing.assert_frame_equal(got[cols], expected[cols], check_exact=True)


def test_fresh_process_load_gives_identical_decisions_without_network(
    cancer, logged, tmp_path: Path
) -> None:
    sp, X = cancer
    uri, env = logged
    rows = X.sample(300, random_state=1).reset_index(drop=True)
    rows.to_parquet(tmp_path / "rows.parquet")
    done = subprocess.run(
        [sys.executable, "-c", LOADER, uri, str(tmp_path / "rows.parquet"), str(tmp_path / "o")],
        env={**os.environ, **env, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "model.json"
    got = pd.read_parquet(tmp_path / "o")
    expected = sp.decide(rows).to_frame(set_format="string")
    assert list(got.columns) == list(FRAME_COLUMNS)
    assert dict(got.dtypes) == dict(expected.dtypes)
    _same(got, expected)
    assert got["decision_id"].is_unique


def test_signature_and_the_sklearn_flavor(cancer, logged, environment) -> None:
    sp, X = cancer
    uri, env = logged
    with tracking(env):
        info = mlflow.models.get_model_info(uri)
        bare = mlflow.sklearn.load_model(uri)
    assert info.signature.inputs.input_names() == list(X.columns)
    outputs = {c.name: c.type.name for c in info.signature.outputs.inputs}
    assert list(outputs) == list(FRAME_COLUMNS)
    assert outputs["prediction"] == "long"
    assert outputs["audit"] == "boolean"
    assert set(info.flavors) == {"python_function", "sklearn", "safepredict"}
    assert info.flavors["sklearn"]["serialization_format"] == "skops"  # never a pickle
    np.testing.assert_array_equal(bare.predict_proba(X), sp.model.predict_proba(X))


def test_no_pickle_and_no_rows_in_the_artifact(saved: Path) -> None:
    names = sorted(p.name for p in saved.iterdir())
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib"))]
    assert "input_example.json" not in names  # the example gave the schema, not stored
    doc = json.loads((saved / "model.json").read_text())
    assert doc["raw_rows"] == []
    assert doc["model"]["file"]["file"] == "model.skops"


def test_local_directory_loads_in_process(saved: Path, cancer) -> None:
    sp, X = cancer
    model = mlflow.pyfunc.load_model(str(saved))
    _same(model.predict(X), sp.decide(X).to_frame(set_format="string"))


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def test_tampered_calibration_is_refused(saved: Path, tmp_path: Path) -> None:
    copy = _copy(saved, tmp_path)
    doc = json.loads((copy / "model.json").read_text())
    doc["policy"]["tiers"][0]["min_confidence"] = 0.5  # accept far more
    (copy / "model.json").write_text(json.dumps(doc))
    with pytest.raises(PersistenceError, match="checksum mismatch"):
        mlflow.pyfunc.load_model(str(copy))
    mlflow.pyfunc.load_model(str(saved))  # the untouched original still loads


def test_swapped_model_file_is_refused_before_it_is_read(cancer, saved, tmp_path) -> None:
    import skops.io as sio

    _, X = cancer
    copy = _copy(saved, tmp_path)
    other = HistGradientBoostingClassifier(max_iter=5, random_state=1).fit(X, X["mean radius"] > 14)
    sio.dump(other, copy / "model.skops")
    with pytest.raises(PersistenceError, match="SHA-256 differs"):
        mlflow.pyfunc.load_model(str(copy))


def test_refusals(cancer, tmp_path: Path) -> None:
    sp, X = cancer
    with pytest.raises(NotCalibratedError, match="calibrate"):
        save_model(SafePredictor(sp.model), tmp_path / "a", input_example=X.head())
    callable_model = SafePredictor(
        sp.model.predict_proba, task="classification", classes=[0, 1], log="off"
    )
    callable_model.calibrate(X[1::2], sp.model.predict(X[1::2]))
    with pytest.raises(ConfigError, match=r"not a scikit-learn estimator.*SafePredictor\.load"):
        save_model(callable_model, tmp_path / "b", input_example=X.head())
    with pytest.raises(ConfigError, match="calibrated on"):
        save_model(sp, tmp_path / "c", input_example=X.head().drop(columns="mean radius"))
    with pytest.raises(ConfigError, match="non-empty pandas DataFrame"):
        save_model(sp, tmp_path / "d", input_example=X.to_numpy())
    lr = LogisticRegression(max_iter=3000).fit(X[::2], sp.model.predict(X[::2]))
    fine = SafePredictor(lr, log="off").calibrate(X[1::2], sp.model.predict(X[1::2]))
    save_model(fine, tmp_path / "e", input_example=X.head())
    with pytest.raises(PersistenceError, match=r"already exists.*new directory"):
        save_model(fine, tmp_path / "e", input_example=X.head())
    with pytest.raises(PersistenceError, match=r"(?s)untrusted types.*trusted=\[\.\.\.\]"):
        save_model(sp, tmp_path / "f", input_example=X.head())  # HistGradientBoosting
