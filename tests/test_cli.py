"""The command line as a whole: --version, help text, titles and the case view."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from safepredict import SafePredictor, SQLiteReviewQueue, __version__
from safepredict.cli._app import app

runner = CliRunner()

# Every command and group, to check the help of each one.
COMMANDS = [
    [],
    ["bench"],
    ["monitor"],
    ["review"],
    *[["review", c] for c in ("list", "show", "claim", "resolve", "counts", "export", "serve")],
]


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "safepredict", "--help"], capture_output=True, text=True, check=True
    )
    assert "safepredict" in out.stdout


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "safepredict", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"safepredict {__version__}"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_has_no_raw_type_metavars(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout
    # Typer's raw type names (<bool>, <list[Path]>, <int range>) never reach the user.
    assert re.findall(r"<[a-zA-Z\[\] ]+>", result.stdout) == []
    assert not re.search(r"\b(bool|str|int|float)\b|list\[", result.stdout.replace("--", ""))


def test_help_metavars_are_click_style() -> None:
    bench = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "160"}).stdout
    assert re.search(r"--tiers\s+PATH\.\.\.", bench)
    assert re.search(r"--cost-error\s+FLOAT\s", bench)
    assert re.search(r"--seed\s+INTEGER\s", bench)
    review = runner.invoke(app, ["review", "list", "--help"], env={"COLUMNS": "160"}).stdout
    assert re.search(r"--json\s+One JSON", review)  # a flag takes no value: no metavar
    assert re.search(r"--limit\s+INTEGER \[x>=0\]", review)


@pytest.fixture
def queue_path(iris_lr: Any, tmp_path: Path) -> Path:
    path = tmp_path / "reviews.db"
    policy = {"tiers": [{"name": "auto", "action": "accept", "max_set_size": 1},
                        {"name": "human", "action": "abstain"}],
              "audit_rate": 0.3}  # fmt: skip
    sp = SafePredictor(iris_lr.model, log="off", tiers=policy, router=str(path))
    sp.calibrate(iris_lr.X_cal, iris_lr.y_cal).decide(iris_lr.X_test)
    return path


def _title(stdout: str) -> str:
    # rich centres (and may wrap) the title above the table's top border
    return " ".join(stdout.split("┏", 1)[0].split())


def test_review_list_title_counts_what_is_not_shown(queue_path: Path) -> None:
    q = SQLiteReviewQueue(queue_path)
    pending = q.counts()["*"]["pending"]
    assert pending > 3
    cut = runner.invoke(app, ["review", "list", "-q", str(queue_path), "--limit", "3"],
                        env={"COLUMNS": "300"})  # fmt: skip
    assert cut.exit_code == 0
    assert _title(cut.stdout) == f"3 of {pending} pending case(s) in {queue_path}"
    every = runner.invoke(app, ["review", "list", "-q", str(queue_path), "--limit", "500"],
                          env={"COLUMNS": "300"})  # fmt: skip
    assert _title(every.stdout) == f"{pending} pending case(s) in {queue_path}"
    tier = q.pending(1)[0]["tier"]
    in_tier = q.counts()[tier]["pending"]
    args = ["review", "list", "-q", str(queue_path), "--limit", "1", "--tier", tier]
    one = runner.invoke(app, args, env={"COLUMNS": "300"})
    expected = f"1 of {in_tier}" if in_tier > 1 else "1"
    assert _title(one.stdout) == f"{expected} pending case(s) with tier {tier!r} in {queue_path}"
    q.close()


def test_review_show_is_a_table(queue_path: Path) -> None:
    q = SQLiteReviewQueue(queue_path)
    case = q.pending(1)[0]
    q.close()
    result = runner.invoke(app, ["review", "show", case["decision_id"], "-q", str(queue_path)],
                           env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0
    out = result.stdout
    assert not out.lstrip().startswith("{")  # not raw JSON
    assert f"case {case['decision_id']}" in out
    rows = {m.group(1): m.group(2).strip() for m in re.finditer(r"│ (\w+)\s+│ (.*?)│", out)}
    assert rows["tier"] == case["tier"]
    assert rows["status"] == "pending"
    assert rows["reasons"] == ", ".join(case["reasons"])
    assert rows["confidence"] == f"{case['confidence']:.4g}"
