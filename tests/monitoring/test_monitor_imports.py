"""``safepredict monitor`` starts light: no scikit-learn, MAPIE, SHAP, scipy or pandas for logs.

Each check runs in a fresh interpreter (modules imported by other tests would hide
an import here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ["mapie", "pandas", "scipy", "shap", "sklearn"]

PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_after(code: str) -> list[str]:
    """The heavy packages imported after running ``code`` in a fresh interpreter."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PATH": ""},
    )
    result: list[str] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_the_monitor_command_imports_nothing_heavy(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    event = {
        "event": "safepredict.decision",
        "timestamp": "2026-01-01T00:00:00Z",
        "tier": "auto",
        "action": "accept",
        "confidence": 0.9,
    }
    log.write_text(json.dumps(event) + "\n")
    code = (
        "from safepredict.cli._app import app\n"
        "from safepredict.monitoring.monitor import monitor\n"
        f"assert monitor({str(log)!r}).events['decision'] == 1"
    )
    assert heavy_after(code) == []


def test_the_probe_sees_heavy_imports() -> None:
    """Negative control: the predictor does import scikit-learn, and the probe sees it."""
    assert "sklearn" in heavy_after("import safepredict\nsafepredict.SafePredictor")
    assert heavy_after("import safepredict") == []


def test_without_msgspec_auto_reads_line_by_line_and_blocks_says_what_to_install(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(
        json.dumps({"event": "safepredict.decision", "tier": "auto", "action": "accept"}) + "\n"
    )
    code = (
        "sys.modules['msgspec'] = None  # as if msgspec were not installed\n"
        "from safepredict.exceptions import MissingExtraError\n"
        "from safepredict.monitoring.monitor import monitor\n"
        f"assert monitor({str(log)!r}).events['decision'] == 1\n"
        "try:\n"
        f"    monitor({str(log)!r}, engine='blocks')\n"
        "except MissingExtraError as exc:\n"
        "    assert \"pip install 'safepredict[fast]'\" in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('engine=blocks ran without msgspec')\n"
        "assert 'safepredict.monitoring.fast_blocks' not in sys.modules"
    )
    assert heavy_after(code) == []
