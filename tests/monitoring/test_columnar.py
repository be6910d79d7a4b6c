"""The columnar decision log (``logger="decisions.arrows"``): same events, crash safety.

Real models and real Arrow files throughout: the events read back from a stream file
are compared with the JSON-lines events of the very same ``Decisions``, the monitor's
report on the columnar log with its report on the JSON-lines log, and a writer
process killed with SIGKILL must leave every batch it finished readable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

import safepredict as sp
from safepredict.exceptions import MissingExtraError
from safepredict.monitoring.columnar import SMALL_CALL, ArrowDecisionLog, json_blocks, read_events
from safepredict.monitoring.events import EventContext, EventEmitter
from safepredict.monitoring.monitor import monitor

# Fields that legitimately differ between two writes of the same Decisions.
PER_WRITE = ("timestamp",)


def jsonl_decisions(path: Path) -> list[dict[str, Any]]:
    lines = path.read_bytes().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "safepredict.decision"]


def arrow_decisions(directory: Path) -> list[dict[str, Any]]:
    """The decision events of the stream files (calls of more than ``SMALL_CALL`` rows)."""
    return [e for f in sorted(directory.glob("*.arrows")) for e in read_events(f)]


def logged_decisions(directory: Path) -> list[dict[str, Any]]:
    """Every decision event of a columnar log: the small calls' JSON lines, then the streams."""
    lines = [e for f in sorted(directory.glob("*.jsonl")) for e in jsonl_decisions(f)]
    return lines + arrow_decisions(directory)


def context_of(event: dict[str, Any], feature_names: list[str]) -> EventContext:
    """The predictor's event context, read back from one of its JSON-lines events."""
    return EventContext(
        model_name=event["model_name"],
        model_version=event["model_version"],
        policy_hash=event["policy_hash"],
        calibration_id=event["calibration_id"],
        n_features=event["n_features"],
        confidence_level=event["conformal"]["confidence_level"],
        feature_names=feature_names,
    )


def same_events(arrow: list[dict[str, Any]], jsonl: list[dict[str, Any]]) -> None:
    assert len(arrow) == len(jsonl) > 0
    for a, j in zip(arrow, jsonl, strict=True):
        assert list(a) == list(j)  # same fields, same order
        assert {k: v for k, v in a.items() if k not in PER_WRITE} == {
            k: v for k, v in j.items() if k not in PER_WRITE
        }


def shifted(X: np.ndarray, column: int, by: float) -> np.ndarray:
    out = np.array(X, dtype=float)
    out[:, column] += by
    return out


# ------------------------------------------------------------------ content
@pytest.mark.parametrize("rows", [1, 5, SMALL_CALL + 1, 38])
def test_classification_events_equal_the_json_lines_events(
    iris_lr: Any, tmp_path: Path, rows: int
) -> None:
    jsonl = tmp_path / "events.jsonl"
    predictor = sp.SafePredictor(
        iris_lr.model, logger=jsonl, log_inputs=True, redact=["x1"], random_state=0
    ).calibrate(iris_lr.X_cal, iris_lr.y_cal)
    X = shifted(iris_lr.X_test[:rows], 2, 0.0)
    X[0, 3] = 50.0  # out of range: a guard-flagged row with guard reasons
    d = predictor.decide(X)
    assert d.guard_flagged[0]
    assert not d.guard_flagged[1:].any()
    ctx = context_of(jsonl_decisions(jsonl)[0], ["x0", "x1", "x2", "x3"])
    arrows = tmp_path / "decisions.arrows"
    emitter = EventEmitter(arrows, log_inputs=True, redact=["x1"])
    assert emitter.decisions(d, ctx, X_model=X) == rows
    assert len(arrow_decisions(arrows)) == (rows if rows > SMALL_CALL else 0)
    same_events(logged_decisions(arrows), jsonl_decisions(jsonl))
    # negative control: a changed decision is seen
    events = logged_decisions(arrows)
    events[0]["tier"] = "other"
    with pytest.raises(AssertionError):
        same_events(events, jsonl_decisions(jsonl))


def test_regression_events_with_nan_and_a_route_equal_the_json_lines_events(
    tmp_path: Path,
) -> None:
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X[:200], y[:200])
    jsonl = tmp_path / "events.jsonl"
    queue = tmp_path / "queue.db"
    predictor = sp.SafePredictor(model, logger=jsonl, router=str(queue), random_state=0)
    predictor.calibrate(X[200:350], y[200:350])
    rows = np.array(X[350:400], dtype=float)
    rows[2, 0] = np.nan  # a missing value: the row abstains, routed with a guard reason
    d = predictor.decide(rows)
    assert d.route is not None
    assert any(r is not None for r in d.route)
    ctx = context_of(jsonl_decisions(jsonl)[0], [f"x{j}" for j in range(10)])
    arrows = tmp_path / "decisions.arrows"
    routed = sum(r is not None for r in d.route)
    assert EventEmitter(arrows).decisions(d, ctx, X_model=rows) == len(rows) + routed
    same_events(arrow_decisions(arrows), jsonl_decisions(jsonl))


def test_a_new_column_layout_starts_a_new_stream_file(iris_lr: Any, tmp_path: Path) -> None:
    arrows = tmp_path / "decisions.arrows"
    X, y = load_diabetes(return_X_y=True)
    regressor = sp.SafePredictor(Ridge().fit(X[:200], y[:200]), log="off", random_state=0)
    regressor.calibrate(X[200:350], y[200:350])
    classifier = sp.SafePredictor(iris_lr.model, logger=arrows, random_state=0)
    classifier.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    classifier.decide(iris_lr.X_test[:36])
    classifier.decide(iris_lr.X_test[:34])  # same layout: same stream file
    log = classifier.events.logger
    assert isinstance(log, ArrowDecisionLog)
    # a regressor's batch through the same log: another layout, another stream file
    log.write_decisions(regressor.decide(X[400:405]), {"batch_id": "r"}, 0.9)
    files = sorted(arrows.glob("*.arrows"))
    assert [len(list(read_events(f))) for f in files] == [70, 5]
    assert [e["prediction"] is not None for e in read_events(files[1])] == [True] * 5
    (sidecar,) = arrows.glob("*.jsonl")
    assert json.loads(sidecar.read_bytes().splitlines()[0])["event"] == "safepredict.calibration"


# ------------------------------------------------------------------ the monitor
def test_the_monitor_reads_the_columnar_log_like_json_lines(iris_lr: Any, tmp_path: Path) -> None:
    jsonl = tmp_path / "events.jsonl"
    predictor = sp.SafePredictor(iris_lr.model, logger=jsonl, random_state=0)
    predictor.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    calibration_lines = jsonl.read_bytes()
    arrows = tmp_path / "decisions.arrows"
    emitter = EventEmitter(arrows)
    assert isinstance(emitter.logger, ArrowDecisionLog)
    emitter.logger.events_file().write(calibration_lines)
    batches = [iris_lr.X_test, shifted(iris_lr.X_test, 2, 1.5), iris_lr.X_test[:3]]
    for X in batches:
        d = predictor.decide(X)
        ctx = context_of(jsonl_decisions(jsonl)[-1], ["x0", "x1", "x2", "x3"])
        emitter.decisions(d, ctx, X_model=X)
    one = monitor(jsonl, window="all", min_window=5).to_dict()
    two = monitor(arrows, window="all", min_window=5).to_dict()
    assert one["events"]["decision"] == sum(map(len, batches))
    one.pop("sources"), two.pop("sources")
    assert two == one


# ------------------------------------------------------------------ crash safety
def test_a_torn_last_batch_loses_that_batch_only(iris_lr: Any, tmp_path: Path) -> None:
    arrows = tmp_path / "decisions.arrows"
    predictor = sp.SafePredictor(iris_lr.model, logger=arrows, random_state=0)
    predictor.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    sizes = []
    for n in (33, 34, 35):
        predictor.decide(iris_lr.X_test[:n])
        (stream,) = arrows.glob("*.arrows")
        sizes.append(stream.stat().st_size)
    full = stream.read_bytes()
    # cut the file at several places inside the last batch's message
    for cut in np.linspace(sizes[1] + 1, sizes[2] - 1, 7).astype(int).tolist():
        stream.write_bytes(full[:cut])
        events = read_events(stream)
        got = [next(events) for _ in range(33 + 34)]
        with pytest.raises(EOFError, match="ends inside a record batch"):
            next(events)
        assert len(got) == 33 + 34
        report = monitor(arrows, window="all").to_dict()
        assert report["events"]["decision"] == 33 + 34
        assert report["issues"][0]["events_read"] == 33 + 34
    stream.write_bytes(full)  # negative control: the whole file reads without an issue
    assert len(list(read_events(stream))) == 33 + 34 + 35
    assert monitor(arrows, window="all").to_dict()["issues"] == []


def test_a_killed_writer_leaves_every_finished_batch_readable(tmp_path: Path) -> None:
    arrows = tmp_path / "decisions.arrows"
    script = textwrap.dedent(
        f"""
        import sys
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        import safepredict as sp
        X, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
        p = sp.SafePredictor(model, logger={str(arrows)!r}, random_state=0)
        p.calibrate(X[1::2], y[1::2])
        print("ready", flush=True)
        while True:
            p.decide(X[:75])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until a few batches are on disk
            streams = list(arrows.glob("*.arrows"))
            if streams and streams[0].stat().st_size > 200_000:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    (stream,) = arrows.glob("*.arrows")
    got = 0
    try:
        for block in json_blocks(stream):
            assert len(block) == 75  # only whole batches come out
            got += len(block)
    except EOFError:  # killed inside a batch: that batch only is lost
        pass
    assert got >= 75 * 3
    assert got % 75 == 0


# ------------------------------------------------------------------ errors
def test_without_pyarrow_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pa.__version__  # installed here; hide it as an environment without it would
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtraError, match=r"safepredict\[arrow\]"):
        ArrowDecisionLog(tmp_path / "decisions.arrows")


def test_a_file_that_is_not_a_decision_log_is_reported(tmp_path: Path) -> None:
    other = tmp_path / "other.arrows"
    sink = pa.OSFile(str(other), "wb")
    with pa.ipc.new_stream(sink, pa.schema([("x", pa.int64())])) as writer:
        writer.write_batch(pa.record_batch({"x": [1, 2]}))
    sink.close()
    with pytest.raises(EOFError, match="not a safepredict decision log"):
        list(read_events(other))
    (tmp_path / "empty.arrows").write_bytes(b"")
    with pytest.raises(EOFError, match="not a complete Arrow stream"):
        list(read_events(tmp_path / "empty.arrows"))


def test_inputs_hash_is_recorded_when_the_call_computed_it(iris_lr: Any, tmp_path: Path) -> None:
    from safepredict._hashing import row_hashes

    X = iris_lr.X_test[:38]
    plain = sp.SafePredictor(iris_lr.model, logger=tmp_path / "a.arrows", random_state=0)
    plain.calibrate(iris_lr.X_cal, iris_lr.y_cal).decide(X)
    plain.decide(X[:20])  # a small call: JSON lines, the same fields
    logged = logged_decisions(tmp_path / "a.arrows")
    assert [e["inputs_hash"] for e in logged] == [None] * 58
    audited = sp.SafePredictor(
        iris_lr.model,
        logger=tmp_path / "b.arrows",
        tiers={"tiers": [{"name": "auto", "action": "accept"}], "audit_rate": 0.5},
        random_state=0,
    )
    audited.calibrate(iris_lr.X_cal, iris_lr.y_cal).decide(X)
    hashes = [e["inputs_hash"] for e in logged_decisions(tmp_path / "b.arrows")]
    assert hashes == row_hashes(X).tolist()
