"""The column-wise block reader gives the line-by-line monitor's report, number for number.

Real events (a calibrated predictor on the bundled iris data, guards with an OOD
reference, some rows pushed out of range) are replayed into a 100,000-line log
with everything a real log carries: other applications' lines, blank and broken
lines, malformed safepredict events, batch/route/uncertified events, a second
calibration mid-stream, decisions without a calibration or confidence, and two
schema versions (the second with unknown fields and optional fields left out).
The report (JSON, field order included, and the rendered text) must be identical
with ``engine="blocks"`` and ``engine="lines"``, plain and gzip, and with the plain
log read by two worker processes in small byte ranges (``workers=2``): their partial
aggregates merged in file order, the buffered confidences flushed where one process
flushes them, calibrations switched where they appear.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from rich.console import Console
from tests.conftest import Split, json_lines_logging
from typer.testing import CliRunner

import safepredict as sp
import safepredict.monitoring.aggregate as aggregate_module
import safepredict.monitoring.parallel as parallel
import safepredict.monitoring.partials as partials
from safepredict.cli._app import app
from safepredict.cli.monitor import print_report
from safepredict.exceptions import ConfigError
from safepredict.monitoring.aggregate import Aggregator
from safepredict.monitoring.monitor import MonitorReport, monitor
from safepredict.monitoring.reading import blocks
from safepredict.monitoring.windows import parse_window

N_LINES = 100_000

#: Safepredict decision events the line path reports as malformed (patches of a real one).
MALFORMED: list[dict[str, Any]] = [
    {"confidence": 1.5},
    {"confidence": "high"},
    {"confidence": True},
    {"tier": 3},
    {"tier": None},
    {"action": ["accept"]},
    {"reasons": "out_of_range"},
    {"reasons": [1]},
    {"guard": "flag"},
    {"guard": {"status": "flag", "reasons": [3]}},
    {"calibration_id": 5},
    {"batch_id": ["b"]},
]
#: Lines that are not safepredict events (or not JSON); the last ones break a typed decode.
FOREIGN = [
    b"GET /health 200",
    b'{"event": "http.request", "status": 200}',
    b'{"event": "http.request", "tier": 3}',
    b"",
    b"   ",
    b"[1, 2]",
    b'{"event": "safepredict.decision"}{"event": "x"}',
    b'{"event": 7}',
]
#: Invalid UTF-8 in a field the block reader skips: still a broken line (put in a clean block).
BAD_UTF8 = b'{"event": "safepredict.decision", "tier": "auto", "action": "accept", "note": "\xff"}'


def _events(split: Split, tmp: Path) -> list[dict[str, Any]]:
    """The events of a real calibration and two real batches, as JSON objects."""
    path = tmp / "seed.jsonl"
    with json_lines_logging(path):
        p = sp.SafePredictor(split.model, random_state=0)
        p.calibrate(split.X_cal, split.y_cal, reference=split.X_train)
        X = np.asarray(split.X_test, dtype=float).copy()
        X[:5, :3] = 1e6  # out of range: guard-flagged rows with reasons
        p.decide(X)
        p.decide(np.asarray(split.X_cal, dtype=float))
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def build_log(events: list[dict[str, Any]], path: Path, n_lines: int = N_LINES) -> Path:
    """A long log replayed from ``events`` with every kind of line a real log carries."""
    cal = next(e for e in events if e["event"] == "safepredict.calibration")
    cal2 = {**cal, "calibration_id": "second"}
    decisions = [e for e in events if e["event"] == "safepredict.decision"]
    lines: list[bytes] = [orjson.dumps(cal)]
    rng = np.random.default_rng(0)
    calibration = cal["calibration_id"]
    for i in range(n_lines - 1):
        if i == n_lines * 7 // 10:  # alone among clean lines, so the block reader meets it
            lines.append(BAD_UTF8)
        if i == n_lines // 2:  # a new calibration mid-stream
            lines.append(orjson.dumps(cal2))
            calibration = "second"
            continue
        e = dict(decisions[i % len(decisions)])
        e["decision_id"] = f"d-{i}"
        e["batch_id"] = f"b{i // 500}"
        minute = i * 360 // n_lines  # six hours, so six one-hour windows
        e["timestamp"] = f"2026-03-01T{minute // 60:02d}:{minute % 60:02d}:00Z"
        e["calibration_id"] = calibration
        # odd lines in a quarter of the log, so most blocks are clean
        r = rng.random() if (i // 4000) % 4 == 0 else 1.0
        if r < 0.003:
            e.update(MALFORMED[int(rng.integers(len(MALFORMED)))])
        elif r < 0.005:
            lines.append(FOREIGN[int(rng.integers(len(FOREIGN)))])
            continue
        elif r < 0.006:
            kind = int(rng.integers(3))
            lines.append(
                orjson.dumps(
                    [
                        {
                            "event": "safepredict.route",
                            "status": "queued",
                            "timestamp": e["timestamp"],
                        },
                        {"event": "safepredict.tier_uncertified", "tier": "auto"},
                        {
                            "event": "safepredict.batch",
                            "timestamp": e["timestamp"],
                            "batch_id": "summary",
                            "n": 3,
                            "tiers": {"auto": 3},
                            "actions": {"accept": 3},
                        },
                    ][kind]
                )
            )
            continue
        elif i % 50 == 1:
            e["calibration_id"] = None
        elif i % 70 == 2:
            e["confidence"] = None
        if i % 3 == 0:  # a later schema version: unknown fields, optional fields left out
            e["schema_version"] = 2
            e["extra"] = {"nested": [1, {"tier": 3}], "note": "é"}
            for name in ("latency_s", "guard", "reasons", "explanation")[i % 4 :]:
                e.pop(name, None)
        lines.append(orjson.dumps(e))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory, iris_lr: Split) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("blocks")
    events = _events(iris_lr, tmp)
    path = build_log(events, tmp / "long.jsonl")
    gz = tmp / "long.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    small = build_log(events, tmp / "small.jsonl", N_LINES // 5)
    return {"events": events, "path": path, "gz": gz, "small": small, "tmp": tmp}


def text(report: MonitorReport) -> str:
    out = io.StringIO()
    print_report(report, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def same(a: MonitorReport, b: MonitorReport) -> None:
    """Identical reports: the JSON (field order too) and the rendered text."""
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())
    assert text(a) == text(b)


def test_the_log_exercises_both_paths_and_every_kind_of_line(log: dict[str, Any]) -> None:
    agg = Aggregator(3600.0, {}, engine="blocks")
    for block in blocks(log["path"], None):
        agg.feed(block, "long")
    agg.finish()
    # most blocks are read column-wise, the ones with odd lines line by line
    assert agg.paths["blocks"] > agg.paths["lines"] > 0
    assert agg.events["malformed"] >= 50
    assert agg.events["skipped"] >= 25
    assert {"route", "batch", "tier_uncertified", "calibration"} <= set(agg.events)


@pytest.mark.parametrize(("source", "window"), [("path", "1h"), ("gz", "all")])
def test_blocks_and_lines_give_the_same_report(
    log: dict[str, Any], source: str, window: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = monitor(log[source], window=window, engine="lines", workers=1)
    fast = monitor(log[source], window=window, engine="blocks", workers=1)
    same(lines, fast)
    if source == "path":  # two worker processes, 1 MiB ranges (gzip: one reader)
        monkeypatch.setattr(parallel, "TASK_BYTES", 1 << 20)
        same(lines, monitor(log[source], window=window, workers=2))
    assert lines.events["decision"] > 0.9 * N_LINES
    assert len(lines.malformed) == 5


def test_joined_outcomes_and_tier_health_are_the_same(log: dict[str, Any]) -> None:
    decisions = [e for e in log["events"] if e["event"] == "safepredict.decision"]
    n = len(decisions)
    rng = np.random.default_rng(1)
    size = N_LINES // 5
    labels = {f"d-{i}": decisions[i % n]["prediction"] for i in range(0, size, 7)}
    for did in list(labels)[::5]:  # some wrong predictions
        labels[did] = int(rng.integers(3))
    audits = [
        {"decision_id": f"d-{i}", "outcome": 1, "audit": True, "audit_probability": 0.5}
        for i in range(3, size, 97)
    ]
    kw: dict[str, Any] = {"window": "all", "labels": labels, "outcomes": audits}
    lines = monitor(log["small"], engine="lines", **kw)
    fast = monitor(log["small"], engine="blocks", **kw)
    same(lines, fast)
    same(lines, monitor(log["small"], engine="blocks", workers=2, **kw))
    assert lines.outcomes is not None
    assert lines.outcomes["n_joined"] > 2_000
    assert lines.tier_health is not None
    assert lines.tier_health["n_audited"] > 100


def test_buffer_flushes_happen_where_the_line_path_flushes(
    log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calibrations' confidences share a window: the running sums add in file order."""
    events = log["events"]
    cal = next(e for e in events if e["event"] == "safepredict.calibration")
    path = log["tmp"] / "interleaved.jsonl"
    out = [orjson.dumps(cal), orjson.dumps({**cal, "calibration_id": "other"})]
    rng = np.random.default_rng(5)
    for i, e in enumerate(x for x in events * 40 if x["event"] == "safepredict.decision"):
        e = {**e, "calibration_id": "other" if i % 3 == 0 else cal["calibration_id"]}
        e["confidence"] = float(rng.random())  # spread out: sums depend on their order
        out.append(orjson.dumps(e))
    path.write_bytes(b"\n".join(out) + b"\n")
    monkeypatch.setattr(aggregate_module, "_FLUSH_VALUES", 997)
    monkeypatch.setattr(parallel, "TASK_BYTES", 1 << 15)  # flushes fall inside ranges
    lines = monitor(path, window="all", engine="lines")
    same(lines, monitor(path, window="all", engine="blocks"))
    same(lines, monitor(path, window="all", engine="blocks", workers=2))
    same(lines, monitor(path, window="all", engine="lines", workers=2))
    # negative control: a merge that flushed the buffers at each range's end (where a
    # worker would have to, binning its own values) sums in another order
    forking_or_skip()  # without workers nothing is merged, so nothing could differ
    replay = partials._replay

    def flush_at_range_ends(agg: Aggregator, rec: Any) -> None:
        replay(agg, rec)
        agg.flush()

    monkeypatch.setattr(partials, "_replay", flush_at_range_ends)
    with pytest.raises(AssertionError):
        same(lines, monitor(path, window="all", engine="blocks", workers=2))


def test_the_comparison_can_fail(log: dict[str, Any]) -> None:
    """Negative control: one confidence moved by 1e-12 changes the report."""
    raw = log["small"].read_bytes().split(b"\n")
    k = next(i for i, x in enumerate(raw) if b'"confidence":0.' in x and i > 1000)
    e = orjson.loads(raw[k])
    e["confidence"] = e["confidence"] - 1e-12
    raw[k] = orjson.dumps(e)
    moved = log["tmp"] / "moved.jsonl"
    moved.write_bytes(b"\n".join(raw))
    with pytest.raises(AssertionError):
        same(monitor(log["small"], window="all"), monitor(moved, window="all", engine="blocks"))


def test_engine_is_checked(log: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="engine must be one of"):
        monitor(log["small"], engine="fast")


# ---------------------------------------------------------------- worker processes


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte ranges of 256 KiB: the test logs cross dozens of range boundaries."""
    monkeypatch.setattr(parallel, "TASK_BYTES", 1 << 18)


def forking_or_skip() -> None:
    """Skip where another test left a thread running in this process (no fork then).

    ``test_workers_fork_in_a_fresh_interpreter`` checks the forked path whatever ran
    before it in this process.
    """
    if not parallel.can_fork():
        pytest.skip("a thread of an earlier test runs in this process; workers would not fork")


def test_workers_read_ranges_in_worker_processes(log: dict[str, Any], small_ranges: None) -> None:
    forking_or_skip()
    path = log["small"]
    assert parallel.plan_workers(2, 1) == 2  # this test process can fork workers
    ranges = parallel.line_ranges(path, -(-path.stat().st_size // parallel.TASK_BYTES))
    assert len(ranges) > 10
    assert ranges[0][0] == 0
    assert ranges[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in pairwise(ranges))
    data = path.read_bytes()
    assert all(data[a - 1 : a] == b"\n" for a, _ in ranges[1:])  # cut at line starts
    agg = Aggregator(3600.0, {})
    counts = list(parallel.read_parallel(agg, path, 2, "auto"))
    assert len(counts) == len(ranges)  # one merge per range, none read in this process
    one = Aggregator(3600.0, {})
    read = sum(one.feed(block, str(path)) for block in blocks(path, None))
    assert sum(counts) == read
    assert agg.events == one.events


@pytest.mark.parametrize(
    ("gz", "window", "engine"),
    [(False, "1h", "auto"), (False, "all", "lines"), (True, "1h", "auto")],
)
def test_workers_give_the_same_report(
    log: dict[str, Any], small_ranges: None, gz: bool, window: str, engine: str
) -> None:
    path = log["small"]
    if gz:  # read by one process whatever workers says
        path = log["tmp"] / "small.jsonl.gz"
        path.write_bytes(gzip.compress(log["small"].read_bytes(), compresslevel=1))
    one = monitor(path, window=window, engine="lines", workers=1)
    two = monitor(path, window=window, engine=engine, workers=2)
    same(one, two)
    assert one.events["calibration"] == 2  # one mid-stream, read under the right state


def test_calibrations_before_the_log_and_buffers_carry_over(
    log: dict[str, Any], small_ranges: None
) -> None:
    """Two files: the first (gzip, one process) holds the calibration and leaves values
    buffered; the second, read by workers, starts from that state and those buffers."""
    raw = log["small"].read_bytes()
    cut = raw.index(b"\n", len(raw) // 3) + 1
    first = log["tmp"] / "a-first.jsonl.gz"
    first.write_bytes(gzip.compress(raw[:cut]))
    second = log["tmp"] / "b-second.jsonl"
    second.write_bytes(raw[cut:])
    whole = monitor([log["small"]], window="1h", engine="lines")
    both = monitor([first, second], window="1h", workers=2)
    one = monitor([first, second], window="1h", workers=1)
    same(one, both)
    assert json.dumps(whole.windows) == json.dumps(both.windows)


def test_a_calibration_the_scan_misses_sends_the_rest_to_one_process(
    log: dict[str, Any], small_ranges: None
) -> None:
    """A calibration event whose name is written with JSON escapes is not found by the
    byte scan: the worker that reads it says so, and the ranges after it are read here."""
    lines = log["small"].read_bytes().split(b"\n")
    k = len(lines) // 4
    cal = orjson.loads(lines[0])
    cal = {**cal, "calibration_id": "escaped", "baseline": {**cal["baseline"], "n": 7}}
    escaped = orjson.dumps(cal).replace(
        b"safepredict.calibration", b"safepredict\\u002ecalibration"
    )
    assert orjson.loads(escaped)["event"] == "safepredict.calibration"
    for i in range(k + 1, len(lines)):
        if b'"calibration_id":"' in lines[i]:
            e = orjson.loads(lines[i])
            if e.get("event") == "safepredict.decision" and i % 2:
                e["calibration_id"] = "escaped"  # drift counted against its bins
                lines[i] = orjson.dumps(e)
    path = log["tmp"] / "escaped.jsonl"
    path.write_bytes(b"\n".join([*lines[:k], escaped, *lines[k:]]))
    agg = Aggregator(3600.0, {})
    counts = list(parallel.read_parallel(agg, path, 2, "auto"))
    n_ranges = len(parallel.line_ranges(path, -(-path.stat().st_size // parallel.TASK_BYTES)))
    # the ranges after the escaped event are read here, in blocks of 1 MiB (not 256 KiB)
    assert len(counts) < n_ranges
    one = monitor(path, window="1h", workers=1)
    same(one, monitor(path, window="1h", workers=2))
    assert any(w["calibration_id"] == "escaped" for w in one.windows)


def test_regression_widths_features_and_errors_merge_exactly(
    diabetes_ridge: Split, tmp_path: Path, small_ranges: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interval-width drift (values appended without a flush check), logged inputs
    (per-feature bins) and absolute errors (summed in file order) with workers."""
    s = diabetes_ridge
    policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.5, "tolerance": 60.0},
            {"name": "human", "action": "abstain"},
        ]
    }
    seed = tmp_path / "seed.jsonl"
    with json_lines_logging(seed):
        p = sp.SafePredictor(s.model, tiers=policy, log_inputs=True, random_state=0)
        p.calibrate(s.X_cal, s.y_cal)
        p.decide(np.asarray(s.X_test, dtype=float))
    events = [orjson.loads(x) for x in seed.read_bytes().splitlines()]
    cal = next(e for e in events if e["event"] == "safepredict.calibration")
    assert cal["baseline"]["metric"] == "interval_width"
    assert cal["baseline"].get("features")
    decisions = [e for e in events if e["event"] == "safepredict.decision"]
    rng = np.random.default_rng(3)
    out, labels = [orjson.dumps(cal)], {}
    for i in range(6000):
        e = orjson.loads(orjson.dumps(decisions[i % len(decisions)]))
        e["decision_id"] = f"r-{i}"
        e["batch_id"] = f"b{i // 250}"
        e["timestamp"] = f"2026-03-01T{i * 3 // 6000:02d}:{i % 60:02d}:00Z"
        lo, hi = e["conformal"]["interval"]
        e["conformal"]["interval"] = [lo, hi + float(rng.normal())]  # widths in file order
        if i % 7 == 0:
            e["conformal"]["interval"] = None  # a width-drift row without a width
        e["confidence"] = float(rng.random()) if i % 5 else None
        out.append(orjson.dumps(e))
        labels[e["decision_id"]] = float(e["prediction"]) + float(rng.normal(0, 50))
    path = tmp_path / "reg.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    monkeypatch.setattr(parallel, "TASK_BYTES", path.stat().st_size // 9)
    monkeypatch.setattr(aggregate_module, "_FLUSH_VALUES", 1009)
    one = monitor(path, window="1h", labels=labels, workers=1)
    same(one, monitor(path, window="1h", labels=labels, workers=2))
    assert one.windows[0]["drift"]["metric"] == "interval_width"
    assert one.windows[0]["features"] is not None
    assert one.outcomes is not None
    assert one.outcomes["tiers"][0]["mae"] is not None


def test_workers_are_checked(log: dict[str, Any]) -> None:
    for bad in (0, -1, "two", True, 1.5):
        with pytest.raises(ConfigError, match="workers must be 'auto' or a whole number"):
            monitor(log["small"], workers=bad)  # type: ignore[arg-type]
    assert parallel.plan_workers("auto", parallel.AUTO_MIN_BYTES - 1) == 1
    big = parallel.plan_workers("auto", 10 * parallel.AUTO_MIN_BYTES)
    cpus = min(len(os.sched_getaffinity(0)), 10 * parallel.AUTO_MIN_BYTES // parallel.TASK_BYTES)
    assert big == (cpus if parallel.can_fork() else 1)  # a thread left running: no fork
    assert parse_window("all") == 0.0


def test_cli_workers(log: dict[str, Any], small_ranges: None) -> None:
    runner = CliRunner()
    path = str(log["small"])
    one = runner.invoke(app, ["monitor", path, "--json", "--workers", "1"])
    two = runner.invoke(app, ["monitor", path, "--json", "--workers", "2"])
    assert one.exit_code == two.exit_code == 0
    assert json.loads(one.stdout) == json.loads(two.stdout)
    bad = runner.invoke(app, ["monitor", path, "--workers", "0"])
    assert bad.exit_code == 1
    assert "workers must be 'auto' or a whole number" in bad.stderr


def _dies_on_third_range(
    path: str, start: int, end: int, window_s: float, engine: str, state: Any
) -> partials.Partial:
    """A worker that dies (as if killed) when it is given the third range."""
    if start > 0 and start == parallel.line_ranges(Path(path), 40)[2][0]:
        os._exit(1)
    return partials.fold_range(path, start, end, window_s, engine, state)


def test_a_dead_worker_sends_the_rest_to_one_process(
    log: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    forking_or_skip()
    path = log["small"]
    monkeypatch.setattr(parallel, "TASK_BYTES", -(-path.stat().st_size // 40))
    monkeypatch.setattr(parallel, "fold_range", _dies_on_third_range)
    agg = Aggregator(3600.0, {})
    counts = list(parallel.read_parallel(agg, path, 2, "auto"))
    assert len(parallel.line_ranges(path, 40)) == 40
    assert len(counts) < 40  # two ranges merged, the rest read here in 1 MiB blocks
    one = monitor(path, window="1h", workers=1)
    same(one, monitor(path, window="1h", workers=2))


def test_workers_fork_in_a_fresh_interpreter(log: dict[str, Any]) -> None:
    """The forked path, checked in a process no other test has started a thread in."""
    script = f"""
import safepredict.monitoring.parallel as parallel
from pathlib import Path
from safepredict.monitoring.aggregate import Aggregator
from safepredict.monitoring.monitor import monitor
parallel.TASK_BYTES = 1 << 18
path = Path({str(log["small"])!r})
assert parallel.can_fork() and parallel.plan_workers(2, 1) == 2
ranges = parallel.line_ranges(path, -(-path.stat().st_size // parallel.TASK_BYTES))
counts = list(parallel.read_parallel(Aggregator(3600.0, {{}}), path, 2, "auto"))
assert len(counts) == len(ranges) > 10, (len(counts), len(ranges))  # every range forked
one = monitor(path, window="1h", engine="lines", workers=1).to_dict()
two = monitor(path, window="1h", workers=2).to_dict()
assert one == two
print("forked", len(ranges))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("forked ")
