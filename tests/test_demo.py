"""`make demo` end to end: the queue, the event log, the decisions and the report it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from safepredict import SQLiteReviewQueue

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


@pytest.mark.slow
def test_demo_writes_queue_events_decisions_and_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    for _ in range(2):  # a second run starts from a fresh queue and log
        run = subprocess.run(
            [sys.executable, str(DEMO), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert run.returncode == 0, run.stderr
    decisions = pd.read_csv(out / "decisions.csv")
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    decided = [e for e in events if e["event"] == "safepredict.decision"]
    assert len(decided) == len(decisions)
    assert sum(e["event"] == "safepredict.calibration" for e in events) == 1
    broken = decisions.tail(3)
    assert set(broken["action"]) == {"abstain"}
    assert set(broken["tier"]) == {"guard"}
    queue = SQLiteReviewQueue(out / "reviews.db")
    routed = decisions[(decisions["action"] != "accept") | decisions["audit"]]
    assert len(queue) == len(routed)  # every case for humans is queued, once
    assert queue.counts()["*"]["resolved"] == 1
    (resolved,) = queue.cases(status="resolved")
    assert resolved["reviewer"] == "demo-reviewer"
    queue.close()
    assert (out / "report" / "report.html").stat().st_size > 10_000
    assert "0 monitor alerts" in run.stdout
