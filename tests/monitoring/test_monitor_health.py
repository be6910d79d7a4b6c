"""Tier health in the monitor (issue 22): read from the log and the review queue's audits.

The monitor's per-tier health must be the predictor's ``tier_health()`` (one code
path, :func:`safepredict.monitoring.tier_health.tier_health`), weighted by the
audit probability stored with each case, and raise a ``tier_alarm`` alert in the
terminal summary, the JSON and the HTML report when a tier breaks its promise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from safepredict import SafePredictor
from safepredict.cli._app import app
from safepredict.monitoring.events import jsonl_file_logger
from safepredict.monitoring.html import render_html
from safepredict.monitoring.monitor import monitor
from safepredict.review import SQLiteReviewQueue

POLICY = {
    "delta": 0.1,
    "tiers": [
        {"name": "auto", "action": "accept", "max_error": 0.05, "score": "top_prob",
         "audit_rate": 0.1},
        {"name": "human", "action": "review"},
    ],
}  # fmt: skip


def logged_run(tmp: Path, flip: float) -> dict[str, Any]:
    """Decide 5,000 rows with a log and a queue; reviewers resolve every audit case.

    ``flip``: share of the true labels flipped before the reviewers see them (the
    tier's error among accepted rows rises from about 1% to about ``flip``).
    """
    X, y = make_classification(n_samples=11000, n_features=8, n_informative=5,
                               n_clusters_per_class=1, class_sep=2.0, random_state=22)  # fmt: skip
    model = LogisticRegression(max_iter=500).fit(X[:3000], y[:3000])
    log, db = tmp / "events.jsonl", tmp / "reviews.db"
    with open(log, "w", encoding="utf-8") as fh:
        sp = SafePredictor(model, tiers=POLICY, router=str(db), logger=jsonl_file_logger(fh),
                           log="decision")  # fmt: skip
        sp.calibrate(X[3000:6000], y[3000:6000])
        d = sp.decide(X[6000:])
    rng = np.random.default_rng(2210)
    truth = np.where(rng.random(len(d)) < flip, 1 - y[6000:], y[6000:])
    queue = SQLiteReviewQueue(db)
    index = {str(did): i for i, did in enumerate(d.decision_ids)}
    # reviewers resolve the audit cases and some review cases (which must not count)
    routed = [c for c in queue.cases() if c["audit"]] + queue.pending(tier="human")[:30]
    for case in routed:
        did = case["decision_id"]
        queue.claim_case(did, "ann")
        queue.resolve(did, int(truth[index[did]]), "ann")
    return {"sp": sp, "d": d, "log": log, "db": db, "truth": truth}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return {
        "kept": logged_run(tmp_path_factory.mktemp("kept"), 0.0),
        "broken": logged_run(tmp_path_factory.mktemp("broken"), 0.25),
    }


def test_monitor_tier_health_is_the_predictors_and_alarms_when_the_promise_breaks(
    runs: dict[str, dict[str, Any]],
) -> None:
    for name, run in runs.items():
        report = monitor(run["log"], window="all", queue=run["db"])
        assert report.tier_health is not None
        (h,) = report.tier_health["tiers"]
        expected = run["sp"].tier_health()["auto"]
        assert h == expected  # same outcomes, same order, same code path
        d = run["d"]
        assert h["n_outcomes"] == int(d.audit.sum()) > 200
        assert report.tier_health["n_audited"] == h["n_outcomes"]  # review cases excluded
        alarms = [a for a in report.alerts if a["kind"] == "tier_alarm"]
        accepted = d.actions == "accept"
        realized = float((d.predictions[accepted] != run["truth"][accepted]).mean())
        assert h["lower"] <= realized <= h["upper"]
        if name == "kept":
            assert not h["alarm"]
            assert not alarms
        else:  # negative control: 25% flipped labels break the 5% promise
            assert h["alarm"]
            assert h["lower"] > 0.05
            assert alarms[0]["tier"] == "auto"
            assert "above max_error=0.05" in alarms[0]["detail"]


def test_labels_file_with_audit_probabilities_weights_like_the_queue(
    runs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    run = runs["broken"]
    queue = SQLiteReviewQueue(run["db"])
    rows = list(queue.outcomes(audited_only=True))
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "decision_id,y_true,audit_probability\n"
        + "".join(f"{o['decision_id']},{o['outcome']},{o['audit_probability']}\n" for o in rows),
        encoding="utf-8",
    )
    from_file = monitor(run["log"], window="all", labels=labels).tier_health
    from_queue = monitor(run["log"], window="all", queue=run["db"]).tier_health
    assert from_file is not None
    assert from_queue is not None
    assert from_file["tiers"] == from_queue["tiers"]
    # a labels file without the column counts each labelled row alike (weight 1):
    # same estimate here (one audit rate), but the weights' bound differs from 1 / 0.1
    plain = tmp_path / "plain.csv"
    plain.write_text(
        "decision_id,y_true\n" + "".join(f"{o['decision_id']},{o['outcome']}\n" for o in rows),
        encoding="utf-8",
    )
    unweighted = monitor(run["log"], window="all", labels=plain).tier_health
    assert unweighted is not None
    assert unweighted["tiers"][0]["estimate"] == pytest.approx(from_file["tiers"][0]["estimate"])
    bad = tmp_path / "bad.csv"
    bad.write_text(f"decision_id,y_true,audit_probability\n{rows[0]['decision_id']},1,2\n")
    from safepredict.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"audit_probability must be a number in \(0, 1\]"):
        monitor(run["log"], window="all", labels=bad)


def test_terminal_json_and_html_show_tier_health(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["broken"]
    args = ["monitor", str(run["log"]), "--window", "all", "--queue", str(run["db"])]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Tier health (anytime-valid 90% bounds, audit-weighted)" in result.stdout
    health = result.stdout.split("Tier health (anytime-valid", 1)[1].splitlines()
    line = next(x for x in health if x.strip("│ ").startswith("auto"))
    assert "ALARM" in line
    assert "tier_alarm tier auto" in result.stdout
    as_json = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert as_json["tier_health"]["tiers"][0]["alarm"] is True
    page = render_html(monitor(run["log"], window="all", queue=run["db"]))
    assert "id='tier-health'" in page
    section = page.split("id='tier-health'", 1)[1].split("</table>", 1)[0]
    assert "ALARM" in section
