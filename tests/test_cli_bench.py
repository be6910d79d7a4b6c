"""``safepredict bench``: report files from a real model and CSV, and clear input errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from safepredict.cli._app import app
from safepredict.evaluation.report import PLOTS

runner = CliRunner()

POLICY_A = """
[[tiers]]
name = "auto"
action = "accept"
min_confidence = 0.97

[[tiers]]
name = "human"
action = "review"
"""

POLICY_B = """
delta = 0.1

[[tiers]]
name = "auto"
action = "accept"
max_error = 0.05

[[tiers]]
name = "human"
action = "abstain"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        X.iloc[:250], y.iloc[:250]
    )
    joblib.dump(model, root / "model.joblib")
    data = X.iloc[250:].copy()
    data["label"] = y.iloc[250:]
    data.to_csv(root / "data.csv", index=False)
    (root / "a.toml").write_text(POLICY_A)
    (root / "b.toml").write_text(POLICY_B)
    return {
        "root": root,
        "model": root / "model.joblib",
        "data": root / "data.csv",
        "a": root / "a.toml",
        "b": root / "b.toml",
    }


def invoke(*args: Any) -> Any:
    return runner.invoke(app, ["bench", *map(str, args)])


def test_bench_writes_the_report(files: dict[str, Path]) -> None:
    out = files["root"] / "out"
    result = invoke(
        "--model", files["model"], "--data", files["data"], "--target", "label",
        "--tiers", files["a"], files["b"],
        "--cost-error", 50, "--cost-review", 2, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output.replace("\n", "")
    for stem in PLOTS:
        assert (out / f"{stem}.png").stat().st_size > 5000
    summary = json.loads((out / "summary.json").read_text())
    # The predictor runs the first file: it is listed once, by name, and explained.
    assert [p["policy"] for p in summary["policies"]] == ["a", "b"]
    assert "'a' is the predictor's policy" in summary["meta"]["current"]
    assert summary["n_test"] + summary["n_calibration"] == 569 - 250
    assert summary["cost_model"]["cost_error"] == 50
    b = summary["policies"][1]["tiers"][0]
    assert b["max_error"] == 0.05
    assert b["certified"] in (True, False)


def test_missing_target_column(files: dict[str, Path]) -> None:
    result = invoke(
        "--model", files["model"], "--data", files["data"], "--target", "lable",
        "--out", files["root"] / "x",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "no target column 'lable'" in result.output
    assert "Did you mean 'label'?" in result.output


def test_model_that_does_not_match_the_data(files: dict[str, Path]) -> None:
    frame = __import__("pandas").read_csv(files["data"])
    frame = frame.drop(columns=["mean radius", "worst area"])
    path = files["root"] / "fewer.csv"
    frame.to_csv(path, index=False)
    result = invoke(
        "--model", files["model"], "--data", path, "--target", "label",
        "--out", files["root"] / "x",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "does not match the data" in result.output
    assert "'mean radius'" in result.output
    assert "'worst area'" in result.output


def test_rows_that_cannot_be_parsed(files: dict[str, Path]) -> None:
    lines = files["data"].read_text().splitlines()
    fields = lines[3].split(",")
    lines[3] = ",".join(fields[:-2])  # line 4: two fields short
    fields = lines[6].split(",")
    fields[1] = "twelve"  # line 7: a word in a numeric column
    lines[6] = ",".join(fields)
    path = files["root"] / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    result = invoke(
        "--model", files["model"], "--data", path, "--target", "label",
        "--out", files["root"] / "x",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "line 4: 29 fields, expected 31" in result.output
    lines[3] = files["data"].read_text().splitlines()[3]
    path.write_text("\n".join(lines) + "\n")
    result = invoke(
        "--model", files["model"], "--data", path, "--target", "label",
        "--out", files["root"] / "x",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "line 7, column 'mean texture': 'twelve' is not a number" in result.output


def test_bad_model_file_and_lone_cost(files: dict[str, Path]) -> None:
    bogus = files["root"] / "bogus.joblib"
    bogus.write_text("not a pickle")
    result = invoke(
        "--model", bogus, "--data", files["data"], "--target", "label",
        "--out", files["root"] / "x",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot load the model" in result.output
    result = invoke(
        "--model", files["model"], "--data", files["data"], "--target", "label",
        "--cost-error", 5, "--out", files["root"] / "x",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "pass both --cost-error and --cost-review" in result.output


def test_help_warns_about_joblib() -> None:
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    assert "runs code" in result.output


def test_model_that_fails_on_the_data(files: dict[str, Path]) -> None:
    frame = __import__("pandas").read_csv(files["data"])
    frame["mean radius"] = "abc"  # a whole text column: no single bad cell to point at
    path = files["root"] / "text.csv"
    frame.to_csv(path, index=False)
    result = invoke(
        "--model", files["model"], "--data", path, "--target", "label",
        "--out", files["root"] / "x",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "the model failed on the calibration rows" in result.output
    assert "could not convert string to float" in result.output


STRICT = """
delta = 0.05

[[tiers]]
name = "auto"
action = "accept"
max_error = 0.001

[[tiers]]
name = "human"
action = "abstain"
"""


def test_bench_explains_current_fallbacks_gaps_and_recommends(files: dict[str, Path]) -> None:
    strict = files["root"] / "strict.toml"
    strict.write_text(STRICT)
    out = files["root"] / "out-rec"
    result = runner.invoke(
        app,
        ["bench", "--model", str(files["model"]), "--data", str(files["data"]),
         "--target", "label", "--grid", "0.9", "--grid", "0.97", "--grid", "0.999",
         "--cost-error", "50", "--cost-review", "2", "--max-error", "0.05",
         "--min-accept", "0.5", "--out", str(out), str(strict)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    policies = {p["policy"]: p for p in summary["policies"]}
    assert list(policies) == ["strict", "min_confidence=0.9", "min_confidence=0.97",
                              "min_confidence=0.999"]  # fmt: skip
    # One fallback for all: the grid sends its rest where the predictor's policy does.
    assert {p["tiers"][-1]["action"] for p in policies.values() if p["tiers"]} == {"abstain"}
    assert "send the rows they do not accept to 'abstain'" in result.output.replace("\n", " ")
    # max_error=0.001 at delta=0.05 needs rows_needed(0.001, 0.05) rows even with no error.
    from safepredict.tiers import rows_needed

    (gap,) = summary["meta"]["uncertified"]
    assert (gap["policy"], gap["tier"], gap["reason"]) == ("strict", "auto", "budget")
    assert gap["rows_needed"] == rows_needed(0.001, 0.05)
    assert gap["rows_available"] < gap["rows_needed"] <= gap["calibration_rows_needed"]
    assert f"needs at least {gap['rows_needed']}" in " ".join(result.output.split())
    # The recommendation is the cheapest policy meeting both constraints.
    meets = [p for p in summary["policies"]
             if p["accepted_error_upper"] is not None and p["accepted_error_upper"] <= 0.05
             and p["coverage"] >= 0.5]  # fmt: skip
    assert meets, "the data should let some policy meet the constraints"
    cheapest = min(meets, key=lambda p: (p["cost_per_1000"], -p["coverage"]))
    rec = summary["meta"]["recommendation"]
    assert rec["policy"] == cheapest["policy"]
    assert rec["cost_per_1000"] == cheapest["cost_per_1000"]
    assert f"recommended: {cheapest['policy']}" in " ".join(result.output.split())
    assert f"{cheapest['policy']} (recommended)" in result.output
    html = (out / "report.html").read_text()
    assert "id='recommendation'" in html
    assert "id='uncertified'" in html
    assert "id='current-note'" in html
    # Without --tiers the predictor's default policy is the 'current' row, explained.
    impossible = runner.invoke(
        app,
        ["bench", "--model", str(files["model"]), "--data", str(files["data"]),
         "--target", "label", "--max-error", "0.0001", "--out", str(out / "none")],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert impossible.exit_code == 0, impossible.output
    text = " ".join(impossible.output.split())
    assert "'current' is safepredict's default policy" in text
    assert "no compared policy meets max error 0.0001" in text
