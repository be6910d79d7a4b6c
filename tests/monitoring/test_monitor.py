"""The monitor reads real event logs written by a real structlog JSON chain."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import structlog
from scipy.stats import binomtest, ks_2samp
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tests.conftest import json_lines_logging
from typer.testing import CliRunner

import safepredict as sp
from safepredict._binomial import clopper_pearson
from safepredict.cli._app import app
from safepredict.monitoring.events import confidence_snapshot
from safepredict.monitoring.html import render_html
from safepredict.monitoring.monitor import (
    ks_from_snapshot,
    monitor,
    parse_window,
    psi_from_snapshot,
    read_labels,
)
from safepredict.tiers import TierCalibration


@dataclass
class Logged:
    path: Path
    predictor: sp.SafePredictor
    decisions: sp.Decisions
    y: np.ndarray


def write_log(path: Path, run: Any) -> Any:
    """Run ``run()`` with structlog writing JSON lines to ``path`` (the documented recipe)."""
    with json_lines_logging(path):
        return run()


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    X, y = load_digits(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.6, random_state=0)
    X_cal, X_te, y_cal, y_te = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    return {
        "model": model,
        "X_tr": X_tr,
        "X_cal": X_cal,
        "y_cal": y_cal,
        "X_te": X_te,
        "y_te": y_te,
    }


def run_and_log(path: Path, digits: dict[str, Any], shift: float, **kw: Any) -> Logged:
    def run() -> tuple[sp.SafePredictor, sp.Decisions]:
        p = sp.SafePredictor(digits["model"], random_state=0, **kw)
        p.calibrate(digits["X_cal"], digits["y_cal"])
        # Covariate shift: Gaussian noise of `shift` training standard deviations
        # on every pixel (the bundled digits, degraded like a worse scanner).
        rng = np.random.default_rng(1)
        X = digits["X_te"] + shift * rng.normal(size=digits["X_te"].shape) * digits["X_tr"].std(0)
        return p, p.decide(X)

    p, d = write_log(path, run)
    return Logged(path, p, d, digits["y_te"])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory, digits: dict[str, Any]) -> dict[str, Logged]:
    tmp = tmp_path_factory.mktemp("logs")
    return {
        "same": run_and_log(tmp / "same.jsonl", digits, 0.0),
        "shifted": run_and_log(tmp / "shifted.jsonl", digits, 1.0),
    }


# ------------------------------------------------------------ must show
def test_monitor_flags_drift_and_abstention_rise_on_shifted_data(logs: dict[str, Logged]) -> None:
    report = monitor(logs["shifted"].path, window="all")
    (w,) = report.windows
    assert w["n"] == len(logs["shifted"].decisions)
    assert w["drift"]["flagged"]
    assert w["drift"]["psi"] >= 0.2 or w["drift"]["ks_pvalue"] < 0.001
    assert w["abstention"]["flagged"]
    assert w["abstention"]["rate"] > w["abstention"]["baseline"] + 0.05
    assert {a["kind"] for a in report.alerts} == {"drift", "abstention"}


def test_monitor_stays_quiet_on_unshifted_data(logs: dict[str, Logged]) -> None:
    report = monitor(logs["same"].path, window="all")
    (w,) = report.windows
    assert w["drift"]["tested"]
    assert not w["drift"]["flagged"]
    assert w["drift"]["psi"] < 0.1
    assert w["abstention"]["tested"]
    assert not w["abstention"]["flagged"]
    assert report.alerts == []


def test_window_counts_match_the_decisions(logs: dict[str, Logged]) -> None:
    d = logs["shifted"].decisions
    (w,) = monitor(logs["shifted"].path, window="all").windows
    counts = d.counts()
    assert w["tiers"] == counts["tier"]
    assert w["actions"] == counts["action"]
    assert w["abstain_rate"] == pytest.approx(np.mean(d.actions == "abstain"))
    conf = d.confidence[np.isfinite(d.confidence)]
    assert w["confidence"]["mean"] == pytest.approx(conf.mean())
    assert sum(w["confidence"]["hist"]) == len(conf)
    assert w["drift"]["n"] == len(conf)


# ------------------------------------------------------------ reading
def test_gzip_and_foreign_lines(logs: dict[str, Logged], tmp_path: Path) -> None:
    raw = logs["same"].path.read_bytes()
    noisy = b'not json at all\n{"event": "http.request", "path": "/"}\n' + raw + b"\n\n"
    gz = tmp_path / "log.jsonl.gz"
    gz.write_bytes(gzip.compress(noisy))
    plain = monitor(logs["same"].path, window="all")
    zipped = monitor(gz, window="all")
    assert zipped.windows == plain.windows
    assert zipped.events["skipped"] == plain.events["skipped"] + 4


def test_windows_split_by_timestamp(logs: dict[str, Logged], tmp_path: Path) -> None:
    """Rewrite the real events' timestamps into two hours: two windows."""
    lines = [json.loads(x) for x in logs["same"].path.read_bytes().splitlines()]
    decisions = [e for e in lines if e["event"] == "safepredict.decision"]
    for i, e in enumerate(decisions):
        e["timestamp"] = "2026-03-01T10:59:00Z" if i < 100 else "2026-03-01T11:00:01.5Z"
    out = tmp_path / "two.jsonl"
    out.write_bytes(b"\n".join(orjson.dumps(e) for e in lines))
    report = monitor(out, window="1h")
    assert [w["n"] for w in report.windows] == [100, len(decisions) - 100]
    assert [w["start"] for w in report.windows] == ["2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"]
    assert report.windows[0]["drift"]["tested"]


def test_progress_is_reported(logs: dict[str, Logged]) -> None:
    seen: list[tuple[int, int]] = []
    monitor(logs["same"].path, progress=lambda done, total: seen.append((done, total)))
    size = logs["same"].path.stat().st_size
    assert seen[-1] == (size, size)


def test_summary_logs_are_read_too(digits: dict[str, Any], tmp_path: Path) -> None:
    logged = run_and_log(tmp_path / "summary.jsonl", digits, 1.0, log="summary")
    (w,) = monitor(logged.path, window="all").windows
    assert w["n"] == len(logged.decisions)
    assert w["actions"] == logged.decisions.counts()["action"]
    assert w["abstention"]["flagged"]  # the mix alone shows the abstention rise
    assert w["drift"] is None  # no per-row confidences in summary mode


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(sp.ConfigError, match="does not exist"):
        monitor(tmp_path / "nope.jsonl")
    with pytest.raises(sp.ConfigError, match="'1h'"):
        parse_window("an hour")
    bad = tmp_path / "labels.csv"
    bad.write_text("id,label\n1,2\n")
    with pytest.raises(sp.ConfigError, match="decision_id"):
        read_labels(bad)


# ------------------------------------------------------------ outcomes
class OvercertifiedPredictor(sp.SafePredictor):
    """A predictor whose 'auto' tier was certified wrongly: threshold 0 accepts all.

    Stands in for a miscalibrated deployment; the monitor must catch it from
    the outcomes alone.
    """

    def _calibrate_tiers(self, *args: Any) -> TierCalibration:
        return TierCalibration(thresholds={"auto": 0.0, "loose": 0.0})


POLICY = {
    "tiers": [
        {"name": "auto", "action": "accept", "max_error": 0.001},
        {"name": "loose", "action": "review", "max_error": 0.9},
        {"name": "human", "action": "abstain"},
    ]
}


def test_realized_error_per_tier_with_labels_file(digits: dict[str, Any], tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"

    def run() -> sp.Decisions:
        p = OvercertifiedPredictor(digits["model"], tiers=POLICY, random_state=0)
        p.calibrate(digits["X_cal"], digits["y_cal"])
        return p.decide(digits["X_te"])

    d = write_log(log, run)
    y = digits["y_te"]
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "decision_id,y_true\n"
        + "".join(f"{i},{t}\n" for i, t in zip(d.decision_ids, y, strict=True))
    )
    report = monitor(log, window="all", labels=labels)
    rows = {r["tier"]: r for r in report.outcomes["tiers"]}
    wrong = np.array([p != t for p, t in zip(d.predictions, y, strict=True)])
    for tier in set(d.tiers):
        mask = d.tiers == tier
        assert rows[tier]["scored"] == mask.sum()
        assert rows[tier]["errors"] == wrong[mask].sum()
        lo, hi = binomtest(int(wrong[mask].sum()), int(mask.sum())).proportion_ci(0.95, "exact")
        assert (rows[tier]["ci_low"], rows[tier]["ci_high"]) == pytest.approx((lo, hi))
    auto = rows["auto"]
    assert auto["errors"] >= 3  # the digits model is not 99.9% accurate
    assert auto["flagged"]
    assert not rows.get("loose", {"flagged": False})["flagged"]
    assert any(a["kind"] == "tier_error" and a["tier"] == "auto" for a in report.alerts)
    # JSON lines labels and queue-shaped outcome dicts join the same way.
    jl = tmp_path / "labels.jsonl"
    jl.write_bytes(
        b"\n".join(
            orjson.dumps({"decision_id": i, "y_true": int(t)})
            for i, t in zip(d.decision_ids, y, strict=True)
        )
    )
    assert monitor(log, window="all", labels=jl).outcomes == report.outcomes
    queue_like = [
        {"decision_id": i, "outcome": int(t), "tier": "x", "audit": False}
        for i, t in zip(d.decision_ids, y, strict=True)
    ]
    assert monitor(log, window="all", outcomes=queue_like).outcomes == report.outcomes


def test_queue_outcomes(digits: dict[str, Any], tmp_path: Path) -> None:
    """``--queue``: the routing module's SQLiteReviewQueue, when it is installed."""
    log = tmp_path / "log.jsonl"
    logged = run_and_log(log, digits, 0.0)
    try:
        from safepredict.review import SQLiteReviewQueue  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        with pytest.raises(sp.ConfigError, match="routing"):
            monitor(log, queue=tmp_path / "reviews.db")
        return
    queue = SQLiteReviewQueue(tmp_path / "reviews.db")
    d = logged.decisions
    for i, t in zip(d.decision_ids[:50], logged.y[:50], strict=True):
        queue.record_outcome(str(i), int(t))
    report = monitor(log, window="all", queue=tmp_path / "reviews.db")
    assert report.outcomes is not None
    assert report.outcomes["n_joined"] == 50


# ------------------------------------------------------------ statistics
def test_clopper_pearson_matches_scipy() -> None:
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 400)]:
        lo, hi = binomtest(k, n).proportion_ci(0.95, "exact")
        assert clopper_pearson(k, n, 0.95, two_sided=True) == pytest.approx((lo, hi))


def test_ks_and_psi_against_scipy() -> None:
    rng = np.random.default_rng(3)
    cal = rng.beta(5, 1, 2000)
    snap = confidence_snapshot(cal)
    psis = []
    for shift in (0.0, 0.05, 0.15):
        window = np.clip(rng.beta(5, 1, 1500) - shift, 0, 1)
        counts = np.bincount(
            np.searchsorted(snap["cdf_points"], window, side="left"),
            minlength=len(snap["cdf_points"]) + 1,
        )
        d, p = ks_from_snapshot(snap, counts.tolist())
        ref = ks_2samp(window, cal)
        # Evaluating the CDFs at the 101 calibration percentiles can miss the
        # supremum by at most one percentile step of calibration mass (0.01)
        # plus the window's mass inside that step (about 0.01 as well).
        assert ref.statistic - 0.02 <= d <= ref.statistic + 1e-12
        assert (p < 1e-3) == (ref.pvalue < 1e-3)
        psi_counts = np.bincount(
            np.searchsorted(snap["psi_edges"], window, side="left"),
            minlength=len(snap["psi_edges"]) + 1,
        )
        psis.append(psi_from_snapshot(snap, psi_counts.tolist()))
    # No shift: PSI is sampling noise, about (bins - 1) * (1/n + 1/m) = 9 * 0.0012 = 0.01.
    assert psis[0] < 0.05
    assert psis[0] < psis[1] < psis[2]
    assert psis[2] > 0.2


# ------------------------------------------------------------ CLI and HTML
def test_cli_json_html_and_exit_code(logs: dict[str, Logged], tmp_path: Path) -> None:
    runner = CliRunner()
    html = tmp_path / "report.html"
    res = runner.invoke(
        app,
        ["monitor", str(logs["shifted"].path), "--window", "all", "--json", "--html", str(html)],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {a["kind"] for a in data["alerts"]} == {"drift", "abstention"}
    page = html.read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert "http://" not in page
    assert "https://" not in page
    res = runner.invoke(app, ["monitor", str(logs["shifted"].path), "--fail-on-alert"])
    assert res.exit_code == 2
    assert "drift" in res.stdout
    assert "Alerts" in res.stdout
    res = runner.invoke(app, ["monitor", str(logs["same"].path), "--progress"])
    assert res.exit_code == 0
    assert "No alerts" in res.stdout
    res = runner.invoke(app, ["monitor", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 1


def test_html_renders_outcomes(logs: dict[str, Logged]) -> None:
    d = logs["same"].decisions
    labels = {str(i): int(t) for i, t in zip(d.decision_ids, logs["same"].y, strict=True)}
    page = render_html(monitor(logs["same"].path, labels=labels))
    assert "Realized error per tier" in page
    assert page.count("data:image/png;base64,") >= 4


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_regression_log_reports_width_drift_and_tolerance_errors(
    diabetes_ridge: Any, tmp_path: Path
) -> None:
    policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.5, "tolerance": 60.0},
            {"name": "human", "action": "abstain"},
        ]
    }
    s = diabetes_ridge

    def run() -> sp.Decisions:
        p = sp.SafePredictor(s.model, tiers=policy).calibrate(s.X_cal, s.y_cal)
        return p.decide(s.X_test)

    log = tmp_path / "reg.jsonl"
    d = write_log(log, run)
    labels = dict(zip(d.decision_ids, s.y_test, strict=True))
    report = monitor(log, window="all", labels=labels)
    (w,) = report.windows
    assert w["drift"]["metric"] == "interval_width"
    # Absolute residual score: every interval has the calibration's width, up to
    # float noise that the 10-significant-digit rounding absorbs.
    assert w["drift"]["psi"] == pytest.approx(0.0)
    assert w["drift"]["ks_d"] == pytest.approx(0.0)
    residual = np.abs(s.y_test - s.model.predict(s.X_test))
    rows = {r["tier"]: r for r in report.outcomes["tiers"]}
    # "auto" is certified (about a third of the calibration errors exceed 60 < 0.5):
    # its errors are |y - y_hat| > the tier's tolerance; other tiers report MAE only.
    auto = d.tiers == "auto"
    row = rows["auto"]
    assert row["errors"] == int((residual[auto] > 60.0).sum())
    assert row["mae"] == pytest.approx(residual[auto].mean())
    for tier, other in rows.items():
        if tier != "auto":
            assert other["scored"] == 0
    assert not row["flagged"]  # about a third of the errors exceed 60: below 0.5


# ------------------------------------------------------------ malformed and truncated logs
MALFORMED = [
    {"confidence": "high"},
    {"confidence": 1e308},
    {"confidence": -0.5},
    {"tier": ["auto"]},
    {"action": None},
    {"guard": ["flag"]},
    {"guard": {"status": "flag", "reasons": "out_of_range"}},
    {"reasons": 7},
    {"calibration_id": {"a": 1}},
]


def test_malformed_events_are_counted_and_skipped(logs: dict[str, Logged], tmp_path: Path) -> None:
    lines = logs["same"].path.read_bytes().splitlines()
    decision = next(json.loads(x) for x in lines if b'"safepredict.decision"' in x)
    bad = [
        json.dumps({**decision, **patch, "decision_id": f"bad-{i}"}).encode()
        for i, patch in enumerate(MALFORMED)
    ]
    bad.append(b'{"event": "safepredict.batch", "n": "many"}')
    bad.append(b'{"event": "safepredict.calibration", "baseline": [1, 2]}')
    bad.append(b'{"event": "safepredict.route", "status": ["queued"]}')
    out = tmp_path / "mixed.jsonl"
    out.write_bytes(b"\n".join(lines[:50] + bad + lines[50:]) + b"\n")
    clean = monitor(logs["same"].path, window="all")
    report = monitor(out, window="all")
    assert report.events["malformed"] == len(bad)
    assert clean.events["malformed"] == 0  # control: the clean log has none
    assert report.windows == clean.windows  # skipped whole: no partial counts
    assert report.malformed[0]["decision_id"] == "bad-0"
    assert "confidence" in report.malformed[0]["problem"]
    res = CliRunner().invoke(app, ["monitor", str(out), "--window", "all"])
    assert res.exit_code == 0, res.output
    assert f"{len(bad)} malformed events skipped" in res.stderr
    assert "Traceback" not in res.output
    res = CliRunner().invoke(app, ["monitor", str(out), "--json"])
    assert json.loads(res.stdout)["events"]["malformed"] == len(bad)


def test_truncated_gzip_reports_the_events_read(logs: dict[str, Logged], tmp_path: Path) -> None:
    raw = logs["same"].path.read_bytes()
    whole = gzip.compress(raw)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    # What a reader can recover: the complete lines of the decompressible prefix.
    prefix = zlib.decompressobj(wbits=31).decompress(whole[: len(whole) // 2])
    complete = prefix[: prefix.rfind(b"\n") + 1].count(b"\n")
    assert 0 < complete < raw.count(b"\n")
    report = monitor(cut, window="all")
    (issue,) = report.issues
    read = sum(report.events[k] for k in ("decision", "calibration", "malformed"))
    assert issue["events_read"] == read == complete
    assert f"{complete:,} events" in issue["detail"]
    res = CliRunner().invoke(app, ["monitor", str(cut), "--window", "all"])
    assert res.exit_code == 0, res.output
    assert f"after {complete:,} events were read" in res.stderr
    assert "Aborted" not in res.output
    intact = monitor(logs["same"].path, window="all")
    assert intact.issues == []  # control


def test_guard_shares_count_rows_not_reason_codes(digits: dict[str, Any], tmp_path: Path) -> None:
    """Rows with several out-of-range columns count once for ``out_of_range``."""

    def run() -> tuple[sp.SafePredictor, sp.Decisions]:
        p = sp.SafePredictor(digits["model"], random_state=0)
        p.calibrate(digits["X_cal"], digits["y_cal"], reference=digits["X_tr"])
        X = digits["X_te"].copy()
        X[:10, 20:23] = 1e6  # three columns far out of range in 10 rows
        return p, p.decide(X)

    _, d = write_log(tmp_path / "guards.jsonl", run)
    per_row = np.array([any(r.startswith("out_of_range") for r in rs) for rs in d.reasons])
    per_code = sum(r.startswith("out_of_range") for rs in d.reasons for r in rs)
    assert per_code > per_row.sum() >= 10  # the two counts differ: the test can fail
    (w,) = monitor(tmp_path / "guards.jsonl", window="all").windows
    assert w["guard_reason_rates"]["out_of_range"] == per_row.mean()


def test_buffer_flushes_do_not_change_the_report(
    logs: dict[str, Logged], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confidences are binned in batches; the batch size must not matter."""
    import safepredict.monitoring.aggregate as monitor_module

    lines = [json.loads(x) for x in logs["shifted"].path.read_bytes().splitlines()]
    for i, e in enumerate(lines[1:]):  # three windows, so buffers span windows
        e["timestamp"] = f"2026-03-01T1{i % 3}:00:00Z"
    out = tmp_path / "three.jsonl"
    out.write_bytes(b"\n".join(orjson.dumps(e) for e in lines))
    whole = [monitor(p, window="1h").to_dict() for p in (out, logs["same"].path)]
    monkeypatch.setattr(monitor_module, "_FLUSH_VALUES", 7)
    pieces = [monitor(p, window="1h").to_dict() for p in (out, logs["same"].path)]
    assert pieces == whole
    assert sum(w["confidence"]["n"] for w in whole[0]["windows"]) == len(lines) - 1


def test_block_reader_gives_the_line_readers_report(logs: dict[str, Logged]) -> None:
    """engine="blocks" (column-wise, msgspec) and engine="lines" agree on these logs."""
    for logged in logs.values():
        for window in ("1h", "all"):
            lines = monitor(logged.path, window=window, engine="lines").to_dict()
            blocks = monitor(logged.path, window=window, engine="blocks").to_dict()
            assert json.dumps(blocks) == json.dumps(lines)
            assert lines["events"]["decision"] == len(logged.decisions)
