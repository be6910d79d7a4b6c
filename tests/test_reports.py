"""The benchmark report: files, embedded plots, and a real headless-Chromium render."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

import safepredict as sp
from safepredict.evaluation import CostModel, benchmark, threshold_policies
from safepredict.evaluation.recommend import recommend
from safepredict.evaluation.report import PLOTS, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian 'chromium' is not installed (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, cancer_lr: Any) -> Path:
    predictor = sp.SafePredictor(cancer_lr.model, log="off", random_state=0).calibrate(
        cancer_lr.X_cal, cancer_lr.y_cal
    )
    policies = threshold_policies([0.95, 0.99])
    policies.update(threshold_policies([0.05], kind="max_error"))
    ev = benchmark(
        predictor,
        cancer_lr.X_test,
        cancer_lr.y_test,
        X_cal=cancer_lr.X_cal,
        y_cal=cancer_lr.y_cal,
        policies=policies,
        cost=CostModel(cost_error=50, cost_review=2),
    )
    # the loosest constraint some policy meets, so the report always has a recommendation
    uppers = [r.accepted_error_upper for r in ev.policies.results if r.accepted_error_upper >= 0]
    rec = recommend(ev.policies.results, max_error=min(uppers))
    assert rec is not None
    ev.meta["recommendation"] = rec.to_dict()
    return write_report(ev, tmp_path_factory.mktemp("report"), title="cancer <report>")


def test_report_files(report: Path) -> None:
    out = report.parent
    for stem in PLOTS:
        png = imread(out / f"{stem}.png")
        assert png.shape[0] > 200
        assert png.shape[1] > 200
        assert png.std() > 0.05  # a drawn figure, not a blank canvas
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_test"] == 143
    assert [p["policy"] for p in summary["policies"]] == [
        "current",
        "min_confidence=0.95",
        "min_confidence=0.99",
        "max_error=0.05",
    ]


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert "cancer &lt;report&gt;" in text  # titles are escaped
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == len(PLOTS)
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    # nothing is fetched from elsewhere: no external src/href, no scripts
    assert not re.search(r"(src|href)=['\"](?!data:)", text)
    assert "<script" not in text


@needs_chromium
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            report.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    # Not blank: a white page has variance 0; text, tables and plots give far more.
    assert pixels[..., :3].std() > 0.05
    # Many distinct colours: the embedded plots rendered, not only text.
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200


@needs_chromium
def test_report_has_no_console_errors(report: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 2000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
            headline = page.inner_text("#recommendation h2")
            cards = page.eval_on_selector_all("#recommendation .kpi div", "els => els.length")
        finally:
            browser.close()
    assert errors == []
    summary = json.loads((report.parent / "summary.json").read_text())
    assert headline == f"Recommendation: {summary['meta']['recommendation']['policy']}"
    assert cards == 6
    assert len(widths) == len(PLOTS)
    assert min(widths) > 200  # every embedded PNG decoded


def test_docs_figures_exist() -> None:
    root = Path(__file__).resolve().parents[1] / "docs"
    for link in re.findall(
        r"\]\((assets/benchmarking/[^)]+\.png)\)", (root / "benchmarking.md").read_text()
    ):
        assert imread(root / link).std() > 0.05


# --------------------------------------------------------------------------- explorer
@pytest.fixture(scope="module")
def evaluation(cancer_lr: Any) -> Any:
    predictor = sp.SafePredictor(cancer_lr.model, log="off", random_state=0).calibrate(
        cancer_lr.X_cal, cancer_lr.y_cal
    )
    return benchmark(
        predictor,
        cancer_lr.X_test,
        cancer_lr.y_test,
        X_cal=cancer_lr.X_cal,
        y_cal=cancer_lr.y_cal,
        policies=threshold_policies([0.95, 0.99]),
        cost=CostModel(cost_error=50, cost_review=2),
    )


def test_explorer_is_self_contained_and_embeds_the_curve(evaluation: Any, tmp_path: Path) -> None:
    from safepredict.evaluation.explorer import explorer_data, write_explorer

    path = write_explorer(evaluation, tmp_path, title="explore <this>")
    text = path.read_text()
    assert "explore &lt;this&gt;" in text
    assert not re.search(r"(src|href)=['\"]", text)  # nothing loaded from anywhere
    assert "http://" not in text
    assert "https://" not in text
    embedded = json.loads(
        re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', text, re.S)
        .group(1)  # type: ignore[union-attr]
        .replace("<\\/", "</")
    )
    curve = evaluation.curves["conformal"]
    assert embedded["n"] == curve.n == evaluation.n_test
    assert embedded["n_accepted"] == curve.n_accepted.tolist()
    assert embedded == explorer_data(evaluation)


def _explorer_figures(page: Any) -> dict[str, str]:
    return {k: page.inner_text(f"#kpi-{k}") for k in ("accept", "error", "reviews", "cost")}


@needs_chromium
def test_explorer_sliders_update_figures_and_toml(evaluation: Any, tmp_path: Path) -> None:
    from safepredict.config import TierPolicy
    from safepredict.evaluation.explorer import write_explorer

    playwright = pytest.importorskip("playwright.sync_api")
    path = write_explorer(evaluation, tmp_path)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            before = _explorer_figures(page)
            # Move the accept tier to a strict threshold: fewer accepted, more reviews.
            page.eval_on_selector(
                "#t0", "el => { el.value = 0.999; el.dispatchEvent(new Event('input')); }"
            )
            after = _explorer_figures(page)
            toml_text = page.input_value("#toml")
            page.eval_on_selector(
                "#cost-review", "el => { el.value = 40; el.dispatchEvent(new Event('input')); }"
            )
            costlier = _explorer_figures(page)
        finally:
            browser.close()
    assert errors == []
    assert after["accept"] != before["accept"]
    assert int(after["reviews"].replace(",", "")) > int(before["reviews"].replace(",", ""))
    assert float(costlier["cost"].replace(",", "")) > float(after["cost"].replace(",", ""))
    # The copied TOML is a valid policy with the slider's threshold, and the page's
    # figures agree with safepredict's own evaluation of that policy on the same rows.
    policy = TierPolicy.from_toml(toml_text)
    assert policy.tiers[0].min_confidence == 0.999
    curve = evaluation.curves["conformal"]
    accepted = int(curve.n_accepted[curve.thresholds >= 0.999].max(initial=0))
    assert after["accept"] == f"{100 * accepted / curve.n:.1f}%"


# --------------------------------------------------------------------------- monitor report
@pytest.fixture(scope="module")
def monitor_page(tmp_path_factory: pytest.TempPathFactory, cancer_lr: Any) -> Path:
    """A three-hour decision log (real decisions; the third hour's inputs drift)."""
    from datetime import UTC, datetime, timedelta

    from safepredict.monitoring.events import jsonl_file_logger
    from safepredict.monitoring.html import render_html
    from safepredict.monitoring.monitor import monitor

    root = tmp_path_factory.mktemp("monitor")
    log = root / "events.jsonl"
    s = cancer_lr
    with open(log, "w", encoding="utf-8") as fh:
        live = sp.SafePredictor(s.model, logger=jsonl_file_logger(fh), log="decision",
                                log_inputs=True, redact=["x0"], random_state=0)  # fmt: skip
        live.calibrate(s.X_cal, s.y_cal, reference=s.X_train)
        for hour in range(3):
            live.decide(s.X_test * (1.0 if hour < 2 else 2.5))
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    n_test, lines, k = len(s.X_test), [], 0
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "safepredict.decision":
            event["timestamp"] = (t0 + timedelta(hours=k // n_test, seconds=k % n_test)).isoformat()
            k += 1
        else:
            event["timestamp"] = t0.isoformat()
        lines.append(json.dumps(event))
    log.write_text("\n".join(lines) + "\n")
    page = root / "monitor.html"
    page.write_text(render_html(monitor(log, window="1h")))
    return page


@needs_chromium
def test_monitor_report_in_chromium(monitor_page: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    text = monitor_page.read_text()
    assert not re.search(r"(src|href)=['\"](?!data:)", text)  # self-contained
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(monitor_page.as_uri())
            cards = page.eval_on_selector_all(
                "#cards div",
                "els => els.map(e => [e.firstChild.textContent.trim(), "
                "e.querySelector('b').textContent])",
            )
            alert_windows = page.eval_on_selector_all(
                "table.alerts tbody tr td:first-child", "els => els.map(e => e.textContent)"
            )
            guard_line = page.inner_text("#guard-summary")
            drift_rows = page.eval_on_selector_all(
                "table.features tbody tr",
                "els => els.map(e => [...e.children].map(c => c.textContent))",
            )
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
            styled = page.eval_on_selector("h2", "e => getComputedStyle(e).borderBottomStyle")
        finally:
            browser.close()
    assert errors == []
    card = dict(cards)
    assert card["decisions"] == f"{3 * 143:,}"
    assert card["windows"] == "3"
    # The drifting third hour is the one the alerts name; the first two stay quiet.
    assert alert_windows
    assert all(w.startswith("2026-03-02 10:00:00 to 11:00:00") for w in alert_windows)
    assert int(card["alerts"]) == len(alert_windows)
    # Guard flags as a share of rows (each row once), consistent with the card.
    m = re.match(r"(\d+) of ([\d,]+) rows \(([\d.]+)%\)", guard_line)
    assert m is not None
    assert int(m.group(2).replace(",", "")) == 3 * 143
    assert f"{m.group(3)}%" == card["rows flagged by guards"]
    assert len(widths) >= 4
    assert min(widths) > 200
    assert styled == "solid"  # the shared report stylesheet is applied
    # Per-feature drift: one row per window; only the drifting third hour has columns
    # flagged, its worst column first; the redacted column x0 is never shown.
    assert [r[0][:19] for r in drift_rows] == [f"2026-03-02 {h:02d}:00:00" for h in (8, 9, 10)]
    flagged = [int(r[2].split(" of ")[0]) for r in drift_rows]
    assert flagged[:2] == [0, 0]
    assert flagged[2] > 0
    assert all(r[2].endswith(" of 29") for r in drift_rows)
    assert "⚠" in drift_rows[2][3]
    assert all("x0 " not in r[3] for r in drift_rows)


@needs_chromium
def test_monitor_report_shows_shift_advice_and_label_free(
    monitor_page: Path, cancer_lr: Any, tmp_path: Path
) -> None:
    """The drifting hour gets the adapt_to advice; with outcomes, the label-free table."""
    playwright = pytest.importorskip("playwright.sync_api")
    from safepredict.monitoring.html import render_html
    from safepredict.monitoring.monitor import monitor

    log = monitor_page.parent / "events.jsonl"
    ids = [
        e["decision_id"]
        for e in map(json.loads, log.read_text().splitlines())
        if e["event"] == "safepredict.decision"
    ]
    y = np.asarray(cancer_lr.y_test)
    labels = {d: int(y[k % len(y)]) for k, d in enumerate(ids)}  # decided in order, 3 hours
    page_path = tmp_path / "monitor_labels.html"
    page_path.write_text(render_html(monitor(log, window="1h", labels=labels)))
    read = "els => els.map(e => [...e.children].map(c => c.textContent))"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            pages = []
            for path in (monitor_page, page_path):
                page = browser.new_page(viewport={"width": 1200, "height": 1600})
                page.goto(path.as_uri())
                pages.append(page)
            advice = pages[0].eval_on_selector_all("table.shift-advice tbody tr", read)
            no_label_free = pages[0].query_selector("#label-free") is None
            label_free = pages[1].eval_on_selector_all("table.label-free tbody tr", read)
            visible = pages[1].is_visible("table.label-free")
        finally:
            browser.close()
    # only the drifting third hour is advised, with why and the command to run
    assert [r[0][:19] for r in advice] == ["2026-03-02 10:00:00"]
    assert "OOD guard rate 1.000" in advice[0][1]  # every row of the scaled hour is OOD
    assert "predictor.adapt_to(X_window" in advice[0][2]
    assert no_label_free  # no outcomes joined: no label-free table
    assert visible
    # one row per window and tier; every logged row of this log has its outcome
    windows = sorted({r[0][:19] for r in label_free})
    assert windows == [f"2026-03-02 {h:02d}:00:00" for h in (8, 9, 10)]
    for _window, _tier, n, est, interval, n_lab, realized in label_free:
        assert n_lab == n
        lo, hi = (float(v) for v in interval.split(" to "))
        assert lo <= float(est) <= hi
        assert 0.0 <= float(realized) <= 1.0


def test_docs_screenshots_are_fresh() -> None:
    """The PNGs in docs/assets/screenshots match the code that draws them.

    Regenerate with ``python examples/screenshots.py`` when this fails.
    """
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("screenshots", root / "examples/screenshots.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shots = root / "docs" / "assets" / "screenshots"
    for name in ("bench_report", "explorer", "monitor_report"):
        assert imread(shots / f"{name}.png").std() > 0.05
    stored = (shots / "inputs.sha256").read_text().strip()
    assert stored == module.inputs_hash(root), (
        "docs/assets/screenshots are stale: run `python examples/screenshots.py`"
    )


def test_monitor_terminal_summary_uses_row_shares(monitor_page: Path) -> None:
    from typer.testing import CliRunner

    from safepredict.cli._app import app
    from safepredict.monitoring.html import guard_summary
    from safepredict.monitoring.monitor import monitor

    log = monitor_page.parent / "events.jsonl"
    result = CliRunner().invoke(app, ["monitor", str(log), "--window", "1h"],
                                env={"COLUMNS": "250"})  # fmt: skip
    assert result.exit_code == 0, result.output
    guards = guard_summary(monitor(log, window="1h"))
    # Every row counted once, so the share can never exceed 100% (codes can).
    assert 0 < guards["flagged_rows"] <= guards["rows"]
    assert sum(guards["codes"].values()) >= guards["flagged_rows"]
    share = f"{100 * guards['flagged_share']:.1f}%"
    line = f"guards flagged {guards['flagged_rows']:,} of {guards['rows']:,} rows ({share})"
    assert line in result.stdout
    alerts = result.stdout.split("\nAlerts\n", 1)[1].splitlines()
    assert alerts
    assert all("window 2026-03-02T10:00:00" in x for x in alerts), alerts
