"""Regenerate the report screenshots in docs/assets/screenshots (Chromium + Playwright).

Builds, from scikit-learn's bundled breast-cancer data, the benchmark report with a
recommendation, the policy explorer, and a monitor report over a six-hour decision
log whose inputs drift, then screenshots each page in headless Chromium:

    python examples/screenshots.py

Next to the PNGs it writes ``inputs.sha256``, the hash of every file that shapes
them (:data:`INPUTS`); ``tests/test_reports.py`` fails when that hash is stale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import safepredict as sp
from safepredict.evaluation import CostModel, benchmark, threshold_policies
from safepredict.evaluation.explorer import write_explorer
from safepredict.evaluation.recommend import recommend
from safepredict.evaluation.report import write_report
from safepredict.monitoring.events import jsonl_file_logger
from safepredict.monitoring.html import render_html
from safepredict.monitoring.monitor import monitor

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "assets" / "screenshots"
#: Every file whose change can change a screenshot (paths relative to the repository).
INPUTS = (
    "examples/screenshots.py",
    "src/safepredict/evaluation/plots.py",
    "src/safepredict/evaluation/report.py",
    "src/safepredict/evaluation/recommend.py",
    "src/safepredict/evaluation/explorer.py",
    "src/safepredict/evaluation/templates/explorer.html",
    "src/safepredict/monitoring/html.py",
    "src/safepredict/monitoring/windows.py",
    "src/safepredict/monitoring/aggregate.py",
    "src/safepredict/monitoring/feature_drift.py",
    "src/safepredict/monitoring/realized.py",
)


def inputs_hash(root: Path = ROOT) -> str:
    """SHA-256 over the INPUTS files (names and bytes), the staleness key of the PNGs."""
    h = hashlib.sha256()
    for rel in INPUTS:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def build_pages(work: Path) -> dict[str, Path]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.6, random_state=0)
    X_cal, X_test, y_cal, y_test = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    predictor = sp.SafePredictor(model, log="off", random_state=0).calibrate(X_cal, y_cal)
    policies = threshold_policies([0.9, 0.95, 0.99], reject_action="abstain")
    ev = benchmark(predictor, X_test, y_test, X_cal=X_cal, y_cal=y_cal, policies=policies,
                   cost=CostModel(cost_error=50, cost_review=2))  # fmt: skip
    rec = recommend(ev.policies.results, max_error=0.05)
    ev.meta["recommendation"] = None if rec is None else rec.to_dict()
    ev.meta["constraints"] = {"max_error": 0.05, "min_accept": None}
    ev.meta["current"] = "'current' is safepredict's default policy (accept single-label sets)."
    report = write_report(ev, work / "bench", title="Breast cancer: abstention benchmark")
    start = policies[rec.policy] if rec is not None and rec.policy in policies else None
    explorer = write_explorer(ev, work / "bench", policy=start, title="Breast cancer: explorer")

    # A decision log over six hours; from the fourth hour on, inputs drift.
    log = work / "events.jsonl"
    rng = np.random.default_rng(0)
    with open(log, "w", encoding="utf-8") as fh:
        live = sp.SafePredictor(model, logger=jsonl_file_logger(fh), log="decision",
                                log_inputs=True, redact=["mean radius"],
                                random_state=0)  # fmt: skip
        live.calibrate(X_cal, y_cal, reference=X_train)
        for hour in range(6):
            rows = X_test.sample(120, replace=True, random_state=hour)
            if hour >= 3:
                scale = 1 + 0.15 * (hour - 2)
                rows = rows * rng.normal(scale, 0.05, size=rows.shape)
            live.decide(rows)
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    lines, n_decisions = [], 0
    for line in log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("event") == "safepredict.decision":
            when = t0 + timedelta(minutes=n_decisions // 120 * 60 + (n_decisions % 120) * 0.4)
            event["timestamp"] = when.isoformat().replace("+00:00", "Z")
            n_decisions += 1
        elif "timestamp" in event:
            event["timestamp"] = t0.isoformat().replace("+00:00", "Z")
        lines.append(json.dumps(event))
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monitor_page = work / "monitor.html"
    monitor_page.write_text(
        render_html(monitor(log, window="1h"), title="Breast cancer: monitor"), encoding="utf-8"
    )
    return {"bench_report": report, "explorer": explorer, "monitor_report": monitor_page}


def screenshot(pages: dict[str, Path], out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1150, "height": 1000})
            for name, path in pages.items():
                page.goto(path.as_uri())
                page.wait_for_load_state("load")
                page.screenshot(path=str(out / f"{name}.png"))
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        screenshot(build_pages(Path(tmp)), args.out)
    (args.out / "inputs.sha256").write_text(inputs_hash() + "\n", encoding="utf-8")
    print(f"screenshots written to {args.out}")


if __name__ == "__main__":
    main()
