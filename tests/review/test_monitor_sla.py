"""Review-queue service levels in the monitor (issue 25): terminal, JSON and HTML.

A real predictor routes to a real queue (SQLite, and PostgreSQL when its binaries
exist); reviewers claim and resolve some cases; the monitor's ``review_sla`` must be
the queue's own ``sla()`` and show in every output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tests.review.conftest import postgres_bin
from typer.testing import CliRunner

from safepredict import SafePredictor
from safepredict.cli._app import app
from safepredict.monitoring.events import jsonl_file_logger
from safepredict.monitoring.html import render_html
from safepredict.monitoring.monitor import monitor
from safepredict.monitoring.reading import open_queue

POLICY = {
    "tiers": [
        {"name": "auto", "action": "accept", "min_confidence": 0.99},
        {"name": "human", "action": "review"},
    ],
}


def routed_run(tmp: Path, queue: str) -> dict[str, Any]:
    """Decide the breast-cancer hold-out, route to ``queue``; a reviewer resolves 5 cases."""
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X[::3], y[::3])
    log = tmp / "events.jsonl"
    with open(log, "w", encoding="utf-8") as fh:
        sp = SafePredictor(model, tiers=POLICY, router=queue, logger=jsonl_file_logger(fh),
                           log="decision")  # fmt: skip
        sp.calibrate(X[1::3], y[1::3])
        d = sp.decide(X[2::3])
    q = open_queue(queue)
    truth = {str(i): int(t) for i, t in zip(d.decision_ids, y[2::3], strict=True)}
    for _ in range(5):
        case = q.claim("ann")
        assert case is not None
        q.resolve(case["decision_id"], truth[case["decision_id"]], "ann")
    return {"log": log, "queue": queue, "q": q, "n_routed": sum(a != "accept" for a in d.actions)}


@pytest.fixture(params=["sqlite", "postgres"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return routed_run(tmp_path, str(tmp_path / "reviews.db"))
    if postgres_bin() is None:
        pytest.skip("PostgreSQL binaries not found: apt-get install postgresql")
    return routed_run(tmp_path, request.getfixturevalue("postgres_dsn"))


def test_the_monitor_reports_the_queues_own_service_levels(run: dict[str, Any]) -> None:
    assert run["n_routed"] > 5  # some cases stay pending: an oldest-pending age exists
    report = monitor(run["log"], window="all", queue=run["queue"])
    sla = report.review_sla
    assert sla is not None
    expected = run["q"].sla()
    assert set(sla) == set(expected)
    assert "human" in sla
    human = sla["human"]
    assert human["oldest_pending_s"] is not None
    assert human["oldest_pending_s"] >= 0
    assert human["claim_s"] is not None
    assert human["resolve_s"] is not None
    assert human["resolve_s"] >= human["claim_s"] >= 0
    assert report.to_dict()["review_sla"]["human"]["adjudication"] == 0
    page = render_html(report)
    assert "id='review-sla'" in page
    assert "human" in page.split("id='review-sla'", 1)[1].split("</table>", 1)[0]


def test_terminal_and_json_show_service_levels(run: dict[str, Any]) -> None:
    args = ["monitor", str(run["log"]), "--window", "all", "--queue", run["queue"]]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Review queue service levels" in result.stdout
    section = result.stdout.split("Review queue service levels", 1)[1]
    assert any(x.strip("│ ").startswith("human") for x in section.splitlines())
    as_json = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert as_json["review_sla"]["human"]["claim_s"] is not None


def test_without_a_queue_there_is_no_service_level_section(tmp_path: Path) -> None:
    run = routed_run(tmp_path, str(tmp_path / "reviews.db"))
    report = monitor(run["log"], window="all")
    assert report.review_sla is None
    assert "id='review-sla'" not in render_html(report)
