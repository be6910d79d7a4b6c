"""DESIGN.md contract 6 end to end: a redacted value reaches no byte the library writes.

A column holding distinctive values the model uses is redacted (by name, then by
position). The predictor writes events to a file, routes every non-accepted row and
its audits to a SQLite queue (exported as JSON lines and CSV), spools a batch its
sink refused, and saves its state. No file anywhere under the run's directory --
including SQLite's WAL and shared-memory files -- holds any of the values. A negative
control with the column not redacted finds them, so the scan can see them.

Also contract 5: a string the UTF-8 codec cannot encode (a lone surrogate, valid
JSON) in a logged input neither fails the routed batch nor is dropped; it is stored
escaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import safepredict as sp
from safepredict.review import Router, SQLiteReviewQueue

SECRET_BASE = 918_273_000


@pytest.fixture(scope="module")
def secret_data() -> dict[str, Any]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    X = X.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    X["secret"] = SECRET_BASE + np.arange(len(X)) * 13.0  # distinctive, used by the model
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X.iloc[order].reset_index(drop=True), y.iloc[order].reset_index(drop=True)
    model = LogisticRegression(max_iter=5000).fit(X.iloc[:60], y.iloc[:60])
    return {"model": model, "X": X, "y": y}


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def _secrets(X: pd.DataFrame) -> list[bytes]:
    return [str(int(v)).encode() for v in X["secret"]]


def _run(data: dict[str, Any], root: Path, redact: list[Any]) -> bytes:
    X, y = data["X"], data["y"]
    queue = SQLiteReviewQueue(root / "reviews.db")
    policy = {
        "audit_rate": 0.5,
        "tiers": [
            {"name": "auto", "action": "accept", "min_confidence": 0.99},
            {"name": "human", "action": "review"},
        ],
    }
    predictor = sp.SafePredictor(
        data["model"],
        tiers=policy,
        router=queue,
        logger=root / "events.jsonl",
        log_inputs=True,
        redact=redact,
        random_state=0,
    ).calibrate(X.iloc[60:110], y.iloc[60:110])
    test = X.iloc[110:]
    decisions = predictor.decide(test)
    predictor.decide(test.to_dict(orient="records"))  # dict rows take the same path
    routed = [r for r in decisions.route or [] if r is not None]
    assert routed, "the run must route some cases for the scan to mean anything"
    # a sink that refuses every batch: the cases go to the spool file instead
    refusing = Router(lambda case: 1 / 0, retries=0, spool=root / "spool.jsonl")
    predictor.set_params(router=refusing)
    spooled = predictor.decide(test)
    assert any(r is not None and r["status"] == "spooled" for r in spooled.route or [])
    queue.export(root / "cases.jsonl")
    queue.export(root / "cases.csv", format="csv")
    predictor.save(root / "state.json")
    queue.close()
    return _all_bytes(root)


@pytest.mark.parametrize("redact", [["secret"], [4]], ids=["by-name", "by-position"])
def test_a_redacted_value_is_in_no_byte_written(
    secret_data: dict[str, Any], tmp_path: Path, redact: list[Any]
) -> None:
    raw = _run(secret_data, tmp_path, redact)
    assert b"petal_width" in raw  # the other inputs were logged
    leaked = [s for s in _secrets(secret_data["X"]) if s in raw]
    assert leaked == []


def test_the_scan_sees_an_unredacted_column(secret_data: dict[str, Any], tmp_path: Path) -> None:
    raw = _run(secret_data, tmp_path, [])  # negative control: nothing redacted
    test_secrets = _secrets(secret_data["X"].iloc[110:])
    assert sum(s in raw for s in test_secrets) == len(test_secrets)


def test_an_unencodable_string_in_a_routed_input_is_stored_escaped(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 400
    X = pd.DataFrame(
        {"x": rng.normal(size=n), "city": rng.choice(["paris", "rome", "oslo"], size=n)}
    )
    y = (X["x"] + (X["city"] == "rome") + rng.normal(scale=0.8, size=n) > 0.5).astype(int)
    encode = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
    )
    model = make_pipeline(encode, LogisticRegression()).fit(X.iloc[:200], y.iloc[:200])
    queue = SQLiteReviewQueue(tmp_path / "reviews.db")
    predictor = sp.SafePredictor(
        model,
        tiers={"tiers": [{"name": "human", "action": "review"}]},  # route every row
        router=queue,
        log_inputs=True,
        log="off",
    ).calibrate(X.iloc[200:300], y.iloc[200:300])
    lone = json.loads('"r\\ud800me"')  # valid JSON, a lone surrogate: no UTF-8 for it
    rows = X.iloc[300:310].to_dict(orient="records")
    rows[3]["city"] = lone
    decisions = predictor.decide(rows)
    assert [r["status"] for r in decisions.route or []] == ["queued"] * 10  # none lost
    stored = queue.get(str(decisions.decision_ids[3]))
    assert stored is not None
    assert stored["inputs"]["city"] == "r\\ud800me"  # escaped, not dropped
    assert decisions.actions[3] != "accept"  # an unseen category is flagged, never accepted
