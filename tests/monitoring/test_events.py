"""Decision / calibration / route / batch events: schema, privacy, robustness.

Events are captured from real structlog loggers: ``structlog.testing.capture_logs``
or a real processor chain rendering JSON lines to a file (never a mock).
"""

from __future__ import annotations

import functools
import gc
import json
import pickle
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pandas as pd
import pytest
import structlog
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from structlog.testing import capture_logs
from tests.conftest import json_lines_logging

import safepredict as sp
from safepredict.monitoring.events import EventEmitter, confidence_snapshot, load_schema

MAX_ERROR_POLICY = {
    "tiers": [
        {"name": "auto", "action": "accept", "max_error": 0.05},
        {"name": "suggest", "action": "review", "min_confidence": 0.5},
        {"name": "human", "action": "abstain"},
    ]
}


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def validate(event: dict[str, Any]) -> None:
    kind = {
        "safepredict.decision": "decision",
        "safepredict.batch": "batch",
        "safepredict.calibration": "calibration",
        "safepredict.tier_uncertified": "calibration",
        "safepredict.route": "route",
    }[event["event"]]
    validator(kind).validate(event)


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Path]:
    """The documented recipe: JSON lines to a file via orjson, cached loggers."""
    with json_lines_logging(tmp_path / "events.jsonl") as path:
        yield path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


# ------------------------------------------------------------------ schema
def test_classification_events_match_schema_from_a_real_json_file(
    iris_lr: Any, json_log: Path
) -> None:
    p = sp.SafePredictor(iris_lr.model, model_name="iris", model_version="1").calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    decisions = p.decide(iris_lr.X_test, request_id="req-42")
    events = read_jsonl(json_log)
    kinds = [e["event"] for e in events]
    assert kinds.count("safepredict.calibration") == 1
    assert kinds.count("safepredict.decision") == len(decisions)
    for e in events:
        validate(e)
    rows = [e for e in events if e["event"] == "safepredict.decision"]
    for e, d in zip(rows, decisions, strict=True):
        assert e["decision_id"] == d.decision_id
        assert e["action"] == d.action
        assert e["tier"] == d.tier
        assert e["prediction"] == d.prediction
        assert e["conformal"]["set"] == list(d.prediction_set or ())
        assert e["request_id"] == "req-42"
        assert e["model_name"] == "iris"
        assert e["model_version"] == "1"
        assert e["calibration_id"] == p.calibration_id_
        assert e["policy_hash"] == p.policy_.policy_hash
        assert sum(e["probabilities"].values()) == pytest.approx(1.0)
        assert set(e["latency_s"]) >= {"total", "guard", "model", "conformal", "explain"}
        assert e["latency_s"]["total"] >= e["latency_s"]["model"] > 0
    assert p.event_stats() == {"emitted": len(events), "dropped": 0}


def test_calibration_event_carries_policy_and_snapshot(iris_lr: Any) -> None:
    with capture_logs() as logs:
        p = sp.SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, iris_lr.y_cal)
    (cal,) = [e for e in logs if e["event"] == "safepredict.calibration"]
    validate(cal)
    assert cal["calibration_size"] == len(iris_lr.y_cal)
    assert cal["conformal_quantile"] == pytest.approx(p.conformal_.quantile)
    assert cal["policy"] == p.policy_.to_dict()
    base = cal["baseline"]
    # The snapshot is the confidence distribution of the calibration rows.
    proba = iris_lr.model.predict_proba(iris_lr.X_cal)
    conf = p.conformal_.confidence(proba)
    assert base == {
        **confidence_snapshot(conf),
        "tier_rates": base["tier_rates"],
        "action_rates": base["action_rates"],
    }
    assert base["n"] == len(iris_lr.y_cal)
    assert sum(base["action_rates"].values()) == pytest.approx(1.0)
    singleton = (p.conformal_.predict_set(proba).sum(axis=1) == 1).mean()
    assert base["action_rates"]["accept"] == pytest.approx(singleton)


def test_uncertified_tier_emits_a_warning(iris_lr: Any) -> None:
    with capture_logs() as logs:
        sp.SafePredictor(iris_lr.model, tiers=MAX_ERROR_POLICY).calibrate(
            iris_lr.X_cal, iris_lr.y_cal
        )
    warnings = [e for e in logs if e["event"] == "safepredict.tier_uncertified"]
    cal = next(e for e in logs if e["event"] == "safepredict.calibration")
    validate(cal)
    if cal["certified"].get("auto", False):
        assert warnings == []
    else:
        assert len(warnings) == 1
        (w,) = warnings
        validate(w)
        assert w["log_level"] == "warning"
        assert w["tier"] == "auto"
        assert w["max_error"] == 0.05


def test_regression_and_dataframe_events(diabetes_rf: Any, wine_hgb: Any) -> None:
    with capture_logs() as logs:
        p = sp.SafePredictor(diabetes_rf.model).calibrate(diabetes_rf.X_cal, diabetes_rf.y_cal)
        d = p.decide(diabetes_rf.X_test)
        q = sp.SafePredictor(wine_hgb.model).calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
        q.decide(wine_hgb.X_test)
    for e in logs:
        validate(e)
    reg = [e for e in logs if e["event"] == "safepredict.decision"][: len(d)]
    assert all(e["probabilities"] is None and e["confidence"] is None for e in reg)
    lo, hi = reg[0]["conformal"]["interval"]
    assert (lo, hi) == pytest.approx(d[0].interval)
    cal = [e for e in logs if e["event"] == "safepredict.calibration"]
    assert cal[0]["baseline"]["metric"] == "interval_width"
    assert cal[1]["baseline"]["metric"] == "confidence"


def test_request_id_from_structlog_contextvars(iris_lr: Any) -> None:
    p = sp.SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, iris_lr.y_cal)
    structlog.contextvars.bind_contextvars(request_id="ctx-7")
    try:
        with capture_logs() as logs:
            p.decide(iris_lr.X_test[:3])
            p.decide_one(iris_lr.X_test[0], request_id="explicit")
    finally:
        structlog.contextvars.clear_contextvars()
    assert [e["request_id"] for e in logs] == ["ctx-7"] * 3 + ["explicit"]


def test_events_are_strict_json_even_for_failed_rows(iris_lr: Any) -> None:
    """A row the model cannot score (NaN input) still gives a strict-JSON event."""
    p = sp.SafePredictor(iris_lr.model, guards="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    X = np.array(iris_lr.X_test[:4], dtype=float)
    X[1, 2] = np.nan
    with capture_logs() as logs:
        d = p.decide(X)
    assert d[1].action == "abstain"
    assert "model_error" in d[1].reasons
    for e in logs:
        json.dumps(e, allow_nan=False)  # raises on NaN / numpy types
        validate(e)
    assert logs[1]["probabilities"] is None
    assert logs[1]["prediction"] is None


def test_summary_mode_emits_one_batch_event(iris_lr: Any) -> None:
    p = sp.SafePredictor(iris_lr.model, log="summary").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    with capture_logs() as logs:
        d = p.decide(iris_lr.X_test)
    (batch,) = logs
    validate(batch)
    counts = d.counts()
    assert batch["n"] == len(d)
    assert batch["tiers"] == counts["tier"]
    assert batch["actions"] == counts["action"]
    assert sum(sum(a.values()) for a in batch["tier_actions"].values()) == len(d)


def test_log_off_emits_nothing(iris_lr: Any) -> None:
    with capture_logs() as logs:
        p = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
        p.decide(iris_lr.X_test)
    assert logs == []


def test_route_events() -> None:
    emitter = EventEmitter()
    with capture_logs() as logs:
        assert emitter.route(
            decision_id="b-1", sink="sqlite:reviews.db", status="queued", audit=True, tier="auto"
        )
        emitter.route(
            decision_id="b-2",
            sink="callable",
            status="failed",
            audit=False,
            tier="human",
            error="ConnectionError: down",
        )
    for e in logs:
        validate(e)
    assert [e["log_level"] for e in logs] == ["info", "warning"]
    with pytest.raises(sp.ConfigError, match="queued"):
        emitter.route(decision_id="b", sink="s", status="lost", audit=False, tier="t")


# ------------------------------------------------------------------ privacy


def test_no_raw_inputs_by_default(secret_split: dict[str, Any], json_log: Path) -> None:
    X, y = secret_split["X"], secret_split["y"]
    p = sp.SafePredictor(secret_split["model"]).calibrate(X.iloc[1::3], y.iloc[1::3])
    p.decide(X.iloc[2::3])
    raw = json_log.read_bytes()
    assert b'"inputs"' not in raw
    for value in X["ssn"]:
        assert str(int(value)).encode() not in raw
    assert b'"inputs_hash"' in raw


def test_redacted_value_never_appears_in_any_byte(
    secret_split: dict[str, Any], json_log: Path
) -> None:
    X, y = secret_split["X"], secret_split["y"]
    p = sp.SafePredictor(secret_split["model"], log_inputs=True, redact=["ssn"])
    p.calibrate(X.iloc[1::3], y.iloc[1::3])
    p.decide(X.iloc[2::3])
    p.decide_one(X.iloc[5])
    p.decide(X.iloc[2::3].to_numpy())  # unnamed array input: redacted by name too
    raw = json_log.read_bytes()
    for value in X["ssn"]:
        assert str(int(value)).encode() not in raw
    rows = [e for e in read_jsonl(json_log) if e["event"] == "safepredict.decision"]
    assert rows
    assert all(
        set(e["inputs"]) == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
        for e in rows
    )
    assert rows[0]["inputs"]["petal_width"] == X.iloc[2]["petal_width"]
    for e in rows:
        validate(e)


def test_redact_unknown_column_is_a_config_error(secret_split: dict[str, Any]) -> None:
    X, y = secret_split["X"], secret_split["y"]
    with pytest.raises(sp.ConfigError, match="snn"):  # the model knows its columns: at once
        sp.SafePredictor(secret_split["model"], log_inputs=True, redact=["snn"], log="off")
    p = sp.SafePredictor(LogisticRegression(), log_inputs=True, redact=["snn"], log="off")
    p.model.fit(X.to_numpy(), y)  # no feature names: checked when calibrate learns them
    with pytest.raises(sp.ConfigError, match="snn"):
        p.calibrate(X.iloc[1::3].to_numpy(), y.iloc[1::3], feature_names=list(X.columns))


# ------------------------------------------------------------------ robustness
class RaisingLogger:
    """A real (if hostile) logger object: every call raises like a full disk would."""

    def bind(self, **kw: Any) -> RaisingLogger:
        return self

    def info(self, event: str, **kw: Any) -> None:
        raise OSError("No space left on device")

    warning = info


def test_a_raising_logger_never_fails_a_decision(iris_lr: Any) -> None:
    p = sp.SafePredictor(iris_lr.model, logger=RaisingLogger()).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    reference = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(iris_lr.X_test)
    assert list(d.actions) == list(reference.decide(iris_lr.X_test).actions)
    assert p.events.dropped == 1 + len(d)  # calibration + one per decision
    assert p.event_stats()["emitted"] == 0
    assert gc.isenabled()  # the emit loop pauses the collector and must restore it


def test_a_raising_processor_in_a_real_chain_is_counted(iris_lr: Any, tmp_path: Path) -> None:
    def broken_sink(logger: Any, method: str, event_dict: Any) -> Any:
        if event_dict.get("action") == "abstain":
            raise ValueError("sink rejected the event")
        return event_dict

    out = tmp_path / "log.jsonl"
    with out.open("ab") as fh:
        structlog.configure(
            processors=[broken_sink, structlog.processors.JSONRenderer(serializer=orjson.dumps)],
            logger_factory=structlog.BytesLoggerFactory(fh),
        )
        try:
            p = sp.SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, iris_lr.y_cal)
            X = np.vstack([iris_lr.X_test, iris_lr.X_test + 3.0])  # some rows abstain
            d = p.decide(X)
        finally:
            structlog.reset_defaults()
    abstained = int((d.actions == "abstain").sum())
    assert abstained > 0
    assert p.events.dropped == abstained
    assert len(out.read_bytes().splitlines()) == 1 + len(d) - abstained


def test_predictor_with_emitter_pickles_and_clones(iris_lr: Any) -> None:
    p = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    p.decide(iris_lr.X_test[:2])
    q = pickle.loads(pickle.dumps(p))
    assert list(q.decide(iris_lr.X_test).actions) == list(p.decide(iris_lr.X_test).actions)
    assert clone(p).get_params()["log"] == "off"


def test_set_params_logger_switches_sink_and_keeps_counts(iris_lr: Any) -> None:
    p = sp.SafePredictor(iris_lr.model, logger=RaisingLogger()).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    p.set_params(logger=structlog.get_logger("safepredict"))
    with capture_logs() as logs:
        p.decide(iris_lr.X_test[:3])
    assert len(logs) == 3
    assert p.event_stats() == {"emitted": 3, "dropped": 1}


def test_snapshot_psi_bins_and_cdf_are_consistent() -> None:
    values = np.random.default_rng(0).beta(8, 1, size=1000)
    snap = confidence_snapshot(values)
    assert sum(snap["psi_counts"]) == 1000
    assert len(snap["psi_counts"]) == len(snap["psi_edges"]) + 1
    # Each decile bin holds about 10% of the values (continuous data, no ties).
    assert all(abs(c - 100) <= 1 for c in snap["psi_counts"])
    below = np.searchsorted(np.sort(values), snap["cdf_points"], side="right") / 1000
    assert np.allclose(below, snap["cdf"])


def test_frame_with_pandas_ids_and_strings(iris_lr: Any) -> None:
    """String class labels end up as JSON strings in sets and probability keys."""
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = LogisticRegression(max_iter=1000).fit(X[::2], names[::2])
    p = sp.SafePredictor(model).calibrate(pd.DataFrame(X[1::2]).to_numpy(), names[1::2])
    with capture_logs() as logs:
        p.decide(X[:5])
    for e in logs:
        validate(e)
        assert set(e["probabilities"]) == {"setosa", "versicolor", "virginica"}
        assert all(isinstance(c, str) for c in e["conformal"]["set"])


def test_routed_rows_get_route_events_and_the_decision_event_carries_the_status(
    iris_lr: Any,
) -> None:
    """The router hook runs before the events and fills ``decisions.route``."""
    p = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(np.vstack([iris_lr.X_test, iris_lr.X_test + 2.0]))
    routed = np.flatnonzero(d.actions != "accept")
    assert len(routed) > 0
    d.route = [None] * len(d)
    for i in routed:
        d.route[i] = {"sink": "sqlite:reviews.db", "status": "queued", "audit": False}
    d.route[int(routed[0])] = {"sink": "sqlite:reviews.db", "status": "spooled", "audit": False}
    emitter = EventEmitter()
    with capture_logs() as logs:
        emitter.decisions(d, p._event_context(), mode="decision")
    for e in logs:
        validate(e)
    routes = [e for e in logs if e["event"] == "safepredict.route"]
    assert [e["decision_id"] for e in routes] == [d.decision_ids[i] for i in routed]
    assert routes[0]["status"] == "spooled"
    decisions_ev = {e["decision_id"]: e for e in logs if e["event"] == "safepredict.decision"}
    assert decisions_ev[d.decision_ids[routed[0]]]["route"]["status"] == "spooled"
    with capture_logs() as logs:
        emitter.decisions(d, p._event_context(), mode="summary")
    (batch,) = logs
    validate(batch)
    assert batch["routes"] == {"queued": len(routed) - 1, "spooled": 1}


def test_guard_and_explanation_fields_are_carried(iris_lr: Any) -> None:
    """Guard results and explanations set by their hooks reach the event."""
    p = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(iris_lr.X_test[:3])
    d.guard_flagged = np.array([True, False, False])
    d.ood_scores = np.array([0.001, 0.5, np.nan])
    d.reasons[0] = ("out_of_range:x2", "ood")
    d.explanations = [
        sp.Explanation("linear", ("x0", "x1", "x2", "x3"), (0.1, -0.7, 0.05, 0.3), 0.33),
        None,
        None,
    ]
    with capture_logs() as logs:
        EventEmitter().decisions(d, p._event_context(), mode="decision")
    for e in logs:
        validate(e)
    assert logs[0]["guard"] == {
        "status": "flag",
        "reasons": ["out_of_range:x2", "ood"],
        "ood_score": 0.001,
    }
    assert logs[2]["guard"]["ood_score"] is None
    assert logs[0]["explanation"] == {
        "method": "linear",
        "top": [["x1", -0.7], ["x3", 0.3], ["x0", 0.1], ["x2", 0.05]],
        "base_value": 0.33,
    }
    assert logs[1]["explanation"] is None


# ------------------------------------------------------------------ quiet by default
@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    """structlog as an application that never configured it leaves it."""
    structlog.reset_defaults()
    assert not structlog.is_configured()
    try:
        yield
    finally:
        structlog.reset_defaults()


@pytest.mark.usefixtures("unconfigured_structlog")
def test_unconfigured_structlog_means_nothing_on_stdout_or_stderr(
    iris_lr: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    # Negative control: structlog's own default does print to stdout (the
    # capture can see it), which is what the library must not trigger.
    structlog.get_logger("someone-else").info("hello")
    assert "hello" in capfd.readouterr().out
    structlog.reset_defaults()

    p = sp.SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(np.vstack([iris_lr.X_test, iris_lr.X_test + 3.0]))
    p.decide_one(iris_lr.X_test[0])
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert (d.actions != "accept").any()  # abstain/review rows too: still silent
    assert p.event_stats() == {"emitted": 0, "dropped": 0}


@pytest.mark.usefixtures("unconfigured_structlog")
def test_events_flow_once_the_application_configures_structlog(
    iris_lr: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    p = sp.SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, iris_lr.y_cal)  # silent
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[capture])  # the application opts in, after construction
    q = sp.SafePredictor(iris_lr.model, tiers=MAX_ERROR_POLICY).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    d1 = p.decide(iris_lr.X_test)
    d2 = q.decide(iris_lr.X_test[:7])
    p.decide_one(iris_lr.X_test[0])
    kinds = Counter(e["event"] for e in capture.entries)
    (cal,) = [e for e in capture.entries if e["event"] == "safepredict.calibration"]
    uncertified = sum(not ok for ok in cal["certified"].values())
    assert kinds["safepredict.decision"] == len(d1) + len(d2) + 1
    assert kinds["safepredict.calibration"] == 1  # q's; p calibrated before the opt-in
    assert kinds["safepredict.tier_uncertified"] == uncertified
    assert p.event_stats() == {"emitted": len(d1) + 1, "dropped": 0}
    assert q.event_stats()["emitted"] == 1 + uncertified + len(d2)
    assert capfd.readouterr() == ("", "")  # the LogCapture chain prints nothing


# ------------------------------------------------------------------ JSONL file fast path
def _decoded(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines()]


def _comparable(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k not in ("timestamp", "level", "log_level")}


def _both_paths(
    d: sp.Decisions, ctx: Any, tmp_path: Path, X_model: Any = None, **kw: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The same batch through the JSONL fast path and through the structlog recipe."""
    fast = tmp_path / "fast.jsonl"
    emitter = EventEmitter(fast, **kw)
    sent = emitter.decisions(d, ctx, X_model=X_model, mode="decision")
    assert emitter.stats() == {"emitted": sent, "dropped": 0}
    slow = tmp_path / "recipe.jsonl"
    with json_lines_logging(slow):
        assert EventEmitter(**kw).decisions(d, ctx, X_model=X_model, mode="decision") == sent
    a, b = _decoded(fast.read_bytes()), _decoded(slow.read_bytes())
    assert len(a) == len(b) == sent
    for e in a:
        validate(e)
        assert e["level"] in ("info", "warning")
    return a, b


def test_jsonl_fast_path_writes_the_same_events_as_the_structlog_recipe(
    iris_lr: Any, wine_hgb: Any, diabetes_rf: Any, tmp_path: Path
) -> None:
    cases = []
    p = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    X = np.vstack([iris_lr.X_test, iris_lr.X_test + 3.0])
    X[1, 2] = np.nan  # a row the model cannot score: null probabilities/prediction
    d = p.decide(X)
    d.guard_flagged[:3] = True
    d.ood_scores = np.linspace(0.0, 1.0, len(d))
    d.ood_scores[4] = np.nan
    d.reasons[0] = ("out_of_range:x2", "out_of_range:x3", "ood")
    d.explanations = [None] * len(d)
    d.explanations[5] = sp.Explanation("linear", ("x0", "x1"), (0.25, -1.5), 0.5)
    d.route = [None] * len(d)
    d.route[6] = {"sink": "callable", "status": "queued", "audit": False}
    cases.append((d, p._event_context(), X))
    q = sp.SafePredictor(wine_hgb.model, log="off").calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    cases.append((q.decide(wine_hgb.X_test), q._event_context(), wine_hgb.X_test))
    r = sp.SafePredictor(diabetes_rf.model, log="off").calibrate(
        diabetes_rf.X_cal, diabetes_rf.y_cal
    )
    dr = r.decide(diabetes_rf.X_test)
    dr.intervals[2] = np.nan
    cases.append((dr, r._event_context(), diabetes_rf.X_test))
    Xi, yi = load_iris(return_X_y=True)
    names = np.array(["setosa, the small one", 'versi"color', "virginica"])[yi]
    s = sp.SafePredictor(LogisticRegression(max_iter=1000).fit(Xi[::2], names[::2]), log="off")
    s.calibrate(Xi[1::2], names[1::2])
    cases.append((s.decide(Xi[:40]), s._event_context(), Xi[:40]))
    for i, (batch, ctx, X_batch) in enumerate(cases):
        sub = tmp_path / str(i)
        sub.mkdir()
        fast, recipe = _both_paths(batch, ctx, sub, X_model=X_batch)
        assert [_comparable(e) for e in fast] == [_comparable(e) for e in recipe]
    one = cases[0][0][3:4]
    fast, recipe = _both_paths(one, cases[0][1], tmp_path)  # a single row
    assert [_comparable(e) for e in fast] == [_comparable(e) for e in recipe][-1:]


def test_jsonl_fast_path_with_inputs_keeps_redaction(
    secret_split: dict[str, Any], tmp_path: Path
) -> None:
    X, y = secret_split["X"], secret_split["y"]
    p = sp.SafePredictor(secret_split["model"], log="off").calibrate(X.iloc[1::3], y.iloc[1::3])
    d = p.decide(X.iloc[2::3])
    for redact in (["ssn"], [4]):
        sub = tmp_path / str(redact[0])
        sub.mkdir()
        fast, recipe = _both_paths(
            d, p._event_context(), sub, X.iloc[2::3], log_inputs=True, redact=redact
        )
        raw = (sub / "fast.jsonl").read_bytes()
        for value in X["ssn"]:
            assert str(int(value)).encode() not in raw
        assert [_comparable(e) for e in fast] == [_comparable(e) for e in recipe]
        assert set(fast[0]["inputs"]) == {
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
        }


def test_logger_path_is_the_one_argument_file_sink(iris_lr: Any, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    p = sp.SafePredictor(iris_lr.model, logger=str(path), model_name="iris")
    p.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    structlog.contextvars.bind_contextvars(request_id="ctx-9", tenant="acme")
    try:
        d = p.decide(iris_lr.X_test)
    finally:
        structlog.contextvars.clear_contextvars()
    p.decide_one(iris_lr.X_test[0], request_id="explicit")
    events = read_jsonl(path)
    for e in events:
        validate(e)
    kinds = Counter(e["event"] for e in events)
    assert kinds == {"safepredict.calibration": 1, "safepredict.decision": len(d) + 1}
    rows = [e for e in events if e["event"] == "safepredict.decision"]
    assert [e["decision_id"] for e in rows[:-1]] == list(d.decision_ids)
    assert [e["action"] for e in rows[:-1]] == list(d.actions)
    assert {e["request_id"] for e in rows[:-1]} == {"ctx-9"}
    assert {e["tenant"] for e in rows[:-1]} == {"acme"}  # contextvars merged, like the recipe
    assert rows[-1]["request_id"] == "explicit"
    assert p.event_stats() == {"emitted": len(events), "dropped": 0}
    q = pickle.loads(pickle.dumps(p))  # the path travels, the open file does not
    q.decide(iris_lr.X_test[:2])
    assert len(read_jsonl(path)) == len(events) + 2


def test_jsonl_file_that_cannot_be_written_drops_and_counts(iris_lr: Any, tmp_path: Path) -> None:
    p = sp.SafePredictor(iris_lr.model, logger=tmp_path / "missing-dir" / "events.jsonl")
    reference = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    p.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(iris_lr.X_test)
    assert list(d.actions) == list(reference.decide(iris_lr.X_test).actions)
    assert p.event_stats() == {"emitted": 0, "dropped": 1 + len(d)}


def test_unencodable_strings_are_escaped_not_dropped(iris_lr: Any, tmp_path: Path) -> None:
    """A lone surrogate (valid JSON "\\ud800") in any string an event carries."""
    lone = json.loads('"bad \\ud800 name"')
    p = sp.SafePredictor(iris_lr.model, log="off", model_name=lone)
    p.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(iris_lr.X_test[:5])
    d.reasons[0] = (f"out_of_range:{lone}",)
    d.guard_flagged[0] = True
    (tmp_path / "inputs").mkdir()
    for fast, recipe in (
        _both_paths(d, p._event_context(), tmp_path),
        _both_paths(
            d, p._event_context(), tmp_path / "inputs", iris_lr.X_test[:5], log_inputs=True
        ),
    ):
        assert [_comparable(e) for e in fast] == [_comparable(e) for e in recipe]
        assert fast[0]["model_name"] == "bad \\ud800 name"
        assert fast[0]["guard"]["reasons"] == ["out_of_range:bad \\ud800 name"]
    emitter = EventEmitter(tmp_path / "route.jsonl")
    assert emitter.route(
        decision_id="b-0", sink="s", status="failed", audit=False, tier="t", error=lone
    )
    (route,) = read_jsonl(tmp_path / "route.jsonl")
    validate(route)
    assert route["error"] == "bad \\ud800 name"


def test_batch_event_guard_counts_are_rows_not_reason_codes(iris_lr: Any) -> None:
    p = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(iris_lr.X_test[:4])
    d.guard_flagged[:2] = True
    d.reasons[0] = ("out_of_range:x0", "out_of_range:x1", "out_of_range:x3", "ood")
    d.reasons[1] = ("out_of_range:x2",)
    with capture_logs() as logs:
        EventEmitter().decisions(d, p._event_context(), mode="summary")
    (batch,) = logs
    validate(batch)
    assert batch["guard_reasons"] == {"out_of_range": 2, "ood": 1}
    assert batch["guard_flagged"] == 2
