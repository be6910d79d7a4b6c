"""Per-feature drift in the monitor (issue 26): calibration bins in the event, counts per window.

A real predictor logs its inputs (one column redacted); from the fourth window on
one input column shifts by one standard deviation. The monitor must flag exactly
that column in exactly those windows, name the window and the column in its alert,
and never see the redacted column or a raw calibration row.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from safepredict import SafePredictor
from safepredict.cli._app import app
from safepredict.monitoring.events import jsonl_file_logger, load_schema
from safepredict.monitoring.html import render_html
from safepredict.monitoring.monitor import monitor

N_WINDOWS, PER_WINDOW, SHIFTED_FROM = 6, 400, 3


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    X, y = make_classification(n_samples=5000, n_features=6, n_informative=4, random_state=26)
    names = ["age", "income", "tenure", "visits", "score", "ssn_digits"]
    frame = pd.DataFrame(X, columns=names)
    model = LogisticRegression(max_iter=500).fit(frame[:1500], y[:1500])
    log = tmp_path_factory.mktemp("features") / "events.jsonl"
    rng = np.random.default_rng(2601)
    with open(log, "w", encoding="utf-8") as fh:
        sp = SafePredictor(model, logger=jsonl_file_logger(fh), log="decision", log_inputs=True,
                           redact=["ssn_digits"], random_state=0)  # fmt: skip
        sp.calibrate(frame[1500:2500], y[1500:2500])
        for k in range(N_WINDOWS):
            rows = frame[2500:].sample(PER_WINDOW, random_state=k).copy()
            if k >= SHIFTED_FROM:
                rows["income"] += frame["income"].std()  # one column moves by one sd
            rows["ssn_digits"] += 10.0 * rng.normal(size=PER_WINDOW)  # redacted: never seen
            sp.decide(rows)
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    lines, k = [], 0
    for line in log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event["event"] == "safepredict.decision":
            when = t0 + timedelta(hours=k // PER_WINDOW, seconds=k % PER_WINDOW)
            event["timestamp"] = when.isoformat()
            k += 1
        else:
            event["timestamp"] = t0.isoformat()
        lines.append(json.dumps(event))
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"log": log, "names": names}


def test_calibration_event_carries_bins_not_rows(logged: dict[str, Any]) -> None:
    events = [json.loads(x) for x in logged["log"].read_text().splitlines()]
    (cal,) = [e for e in events if e["event"] == "safepredict.calibration"]
    schema = load_schema("calibration")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(cal)
    features = cal["baseline"]["features"]
    # negative control: the schema rejects a column without its counts
    broken = json.loads(json.dumps(cal))
    del broken["baseline"]["features"]["columns"]["age"]["counts"]
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)
    assert sorted(features["columns"]) == sorted(set(logged["names"]) - {"ssn_digits"})
    for col in features["columns"].values():
        assert sum(col["counts"]) + col["missing"] == col["n"] == 1000
        assert len(col["edges"]) <= features["bins"] - 1  # deciles, not values
    decisions = [e for e in events if e["event"] == "safepredict.decision"]
    assert all("ssn_digits" not in e["inputs"] for e in decisions)


def test_monitor_flags_the_shifted_column_in_the_shifted_windows_only(
    logged: dict[str, Any],
) -> None:
    report = monitor(logged["log"], window="1h")
    assert len(report.windows) == N_WINDOWS
    json.dumps(report.to_dict(), allow_nan=False)  # JSON-safe (no NaN)
    for k, w in enumerate(report.windows):
        f = w["features"]
        assert f is not None
        assert f["n_columns"] == 5
        assert all(c["feature"] != "ssn_digits" for c in f["columns"])
        if k >= SHIFTED_FROM:  # the shift is caught, and the worst column is the right one
            assert f["flagged"] == ["income"]
            assert f["columns"][0]["feature"] == "income"
            assert f["columns"][0]["psi"] > 0.2
        else:  # negative control: unshifted windows stay quiet (5 columns, 3 windows)
            assert f["flagged"] == []
    alerts = [a for a in report.alerts if a["kind"] == "feature_drift"]
    assert [a["window"] for a in alerts] == [w["start"] for w in report.windows[SHIFTED_FROM:]]
    assert all(a["features"] == ["income"] and "worst: income (PSI=" in a["detail"] for a in alerts)


def test_terminal_and_html_name_the_window_and_the_columns(logged: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["monitor", str(logged["log"]), "--window", "1h"],
                                env={"COLUMNS": "220"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Input drift per feature (vs the calibration bins)" in result.stdout
    section = result.stdout.split("Input drift per feature", 1)[1].split("\nAlerts\n", 1)[0]
    assert section.count("1 of 5") == N_WINDOWS - SHIFTED_FROM
    assert section.count("0 of 5") == SHIFTED_FROM
    assert "feature_drift window 2026-03-02T11:00:00" in result.stdout
    page = render_html(monitor(logged["log"], window="1h"))
    table = page.split("id='feature-drift'", 1)[1].split("</table>", 1)[0]
    assert "2026-03-02 11:00:00 to 12:00:00 UTC" in table
    assert "income PSI" in table
    assert "ssn_digits" not in page


def test_prometheus_gauge_per_feature_from_the_latest_window(logged: dict[str, Any]) -> None:
    from prometheus_client import CollectorRegistry

    from safepredict.monitoring.prometheus import PrometheusMetrics

    report = monitor(logged["log"], window="1h")
    metrics = PrometheusMetrics(registry=CollectorRegistry())
    for w in report.windows:  # a periodic job exports the window it just closed
        metrics.observe_feature_drift(w, model="m")
    psi = {
        c["feature"]: metrics.registry.get_sample_value(
            "safepredict_feature_psi", {"model": "m", "feature": c["feature"]}
        )
        for c in report.windows[-1]["features"]["columns"]
    }
    assert psi["income"] == report.windows[-1]["features"]["columns"][0]["psi"] > 0.2
    assert all(v < 0.2 for k, v in psi.items() if k != "income")
    assert "ssn_digits" not in psi
