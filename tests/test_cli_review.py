"""``safepredict review list|show|claim|resolve|counts|export`` on a real queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from safepredict import SafePredictor, SQLiteReviewQueue
from safepredict.cli._app import app

runner = CliRunner()

POLICY = {
    "audit_rate": 0.2,
    "tiers": [
        {"name": "auto", "action": "accept", "max_set_size": 1},
        {"name": "human", "action": "abstain"},
    ],
}


@pytest.fixture
def filled(iris_lr: Any, tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "reviews.db"
    sp = SafePredictor(iris_lr.model, log="off", tiers=POLICY, router=str(path))
    d = sp.calibrate(iris_lr.X_cal, iris_lr.y_cal).decide(iris_lr.X_test)
    ids = [d.decision_ids[i] for i, r in enumerate(d.route or []) if r is not None]
    assert len(ids) >= 3
    return path, ids


def run(*args: str) -> Any:
    return runner.invoke(app, ["review", *args], catch_exceptions=False)


def test_list_show_resolve_export(filled: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, ids = filled
    listed = run("list", "--queue", str(path), "--json")
    assert listed.exit_code == 0
    assert [json.loads(x)["decision_id"] for x in listed.stdout.splitlines()] == ids
    table = run("list", "--queue", str(path), "--limit", "2")
    assert table.exit_code == 0
    assert ids[0] in table.stdout
    assert ids[2] not in table.stdout

    shown = run("show", ids[0], "--queue", str(path), "--json")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["decision_id"] == ids[0]

    ok = run("resolve", ids[0], "--queue", str(path), "--outcome", "2", "--reviewer", "ana",
             "--note", "l'étiquette")  # fmt: skip
    assert ok.exit_code == 0, ok.stdout
    case = SQLiteReviewQueue(path).get(ids[0])
    assert case is not None
    assert (case["status"], case["outcome"], case["reviewer"], case["note"]) == (
        "resolved",
        2,
        "ana",
        "l'étiquette",
    )
    again = run("resolve", ids[0], "--queue", str(path), "--outcome", "1", "--reviewer", "bob")
    assert again.exit_code == 1
    assert "already resolved by 'ana'" in again.stderr

    claimed = run("claim", "--queue", str(path), "--reviewer", "bob")
    assert claimed.exit_code == 0
    assert json.loads(claimed.stdout)["decision_id"] == ids[1]
    steal = run("resolve", ids[1], "--queue", str(path), "--outcome", "cat", "--reviewer", "eve")
    assert steal.exit_code == 1
    assert "claimed by 'bob'" in steal.stderr

    counts = run("counts", "--queue", str(path))
    assert counts.exit_code == 0
    assert "resolved" in counts.stdout

    out = tmp_path / "cases.csv"
    exported = run("export", "--queue", str(path), "--out", str(out), "--format", "csv")
    assert exported.exit_code == 0
    assert len(out.read_text().splitlines()) == len(ids) + 1
    resolved = run("list", "--queue", str(path), "--status", "resolved", "--json")
    assert [json.loads(x)["decision_id"] for x in resolved.stdout.splitlines()] == [ids[0]]


def test_missing_queue_and_case_are_clear_errors(filled: tuple[Path, list[str]]) -> None:
    path, _ = filled
    missing = run("list", "--queue", str(path.with_name("nope.db")))
    assert missing.exit_code == 2
    assert "no review queue at" in missing.stderr
    assert not path.with_name("nope.db").exists()  # not created by accident
    unknown = run("show", "zzz", "--queue", str(path))
    assert unknown.exit_code == 1
    assert "no case with decision_id 'zzz'" in unknown.stderr
    bad = run("export", "--queue", str(path), "--out", "-", "--format", "xml")
    assert bad.exit_code == 1
    assert "format must be" in bad.stderr


def test_help_lists_the_review_commands() -> None:
    result = runner.invoke(app, ["review", "--help"])
    assert result.exit_code == 0
    for command in ("list", "show", "claim", "resolve", "counts", "export"):
        assert command in result.stdout
