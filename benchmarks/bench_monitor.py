"""Monitor throughput: read 1,000,000 decision events (issue #20's goal: <= 5 s).

The log is generated here: a calibrated predictor decides on 20,000 generated rows
through the documented JSON-lines recipe (real events), and those events are
replayed with fresh decision ids and timestamps spread over 24 hours until the
file holds ``--events`` decision events. The monitor then runs in a child
process (so its peak RSS is its own), on the plain file and on a gzip copy,
with each reader: ``engine="blocks"`` (column-wise, msgspec: the default when it
is installed) and ``engine="lines"`` (one orjson dict per event), each in one
process (``workers=1``) and, for the plain file, in two worker processes
(``workers=2``: CPU seconds are the parent's plus the workers', "worker RSS" the
largest worker's peak, ``ru_maxrss``), next to a floor
measurement that only splits lines and parses them with orjson. The table prints
MEDIAN wall and CPU seconds over ``--rounds`` runs (imports included: the child
starts timing before it imports the monitor), the events per second and the ratio
to the floor, and the child's peak RSS (``VmHWM`` from ``/proc/self/status``),
next to a child that only imports the monitor: the difference is what reading the
log costs in memory.

``--baseline DIR`` adds rows for another checkout's ``src`` (e.g. the main branch
before a change), run in the same rounds on the same files: before and after
side by side.

``--quick`` keeps the rows of the plain log read by the default reader in one
process and with two workers, the floor and the baseline's monitor.

Run: ``python benchmarks/bench_monitor.py [--events 1000000] [--rounds 3] [--baseline DIR]
[--quick]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import structlog
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import safepredict as sp

CHILD = r"""
import json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
t, c = time.perf_counter(), time.process_time()
if mode == "import":
    from safepredict.monitoring.monitor import monitor  # noqa: F401
    n = 0
elif mode == "floor":
    import orjson
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            orjson.loads(line)
            n += 1
else:
    from safepredict.monitoring.monitor import monitor
    parts = mode.split(":")
    kw = {} if mode == "monitor" else {"engine": parts[1]}
    if len(parts) > 2:
        kw["workers"] = int(parts[2])
    report = monitor(path, window="1h", **kw)
    n = report.events["decision"]
wall, cpu = time.perf_counter() - t, time.process_time() - c
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, once joined
kids_cpu, kids_mb = kids.ru_utime + kids.ru_stime, kids.ru_maxrss / 1024
# VmHWM is this process image's peak RSS (ru_maxrss would carry the parent's
# peak across fork/exec on Linux).
with open("/proc/self/status") as fh:
    hwm = [line for line in fh if line.startswith("VmHWM:")]
peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rss_mb = peak_kb / 1024
print(json.dumps({"n": n, "wall": wall, "cpu": cpu + kids_cpu, "rss_mb": rss_mb,
                  "kids_mb": kids_mb}))
"""


def generate(path: Path, n_events: int) -> None:
    X, y = make_classification(
        n_samples=24_000, n_features=20, n_informative=8, n_classes=3, random_state=0
    )
    model = LogisticRegression(max_iter=1000).fit(X[:2000], y[:2000])
    seed = path.with_suffix(".seed.jsonl")
    with seed.open("wb") as fh:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(fh),
            cache_logger_on_first_use=True,
        )
        p = sp.SafePredictor(model, model_name="bench").calibrate(X[2000:4000], y[2000:4000])
        p.decide(X[4000:])
        structlog.reset_defaults()
    events = [orjson.loads(line) for line in seed.read_bytes().splitlines()]
    seed.unlink()
    calibration = [e for e in events if e["event"] == "safepredict.calibration"]
    decisions = [e for e in events if e["event"] == "safepredict.decision"]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    step = timedelta(days=1) / n_events
    with path.open("wb") as out:
        out.write(orjson.dumps(calibration[0]) + b"\n")
        for i in range(n_events):
            e = decisions[i % len(decisions)]
            e["decision_id"] = f"b{i // 10_000}-{i % 10_000}"
            e["batch_id"] = f"b{i // 10_000}"
            e["timestamp"] = (start + step * (i - i % 100)).isoformat().replace("+00:00", "Z")
            out.write(orjson.dumps(e) + b"\n")


SRC = Path(__file__).resolve().parents[1] / "src"


def run_child(mode: str, path: Path, src: Path = SRC) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkout's src/ to compare"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the plain log: one process, two workers (and the baseline's monitor)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "decisions.jsonl"
        generate(log, args.events)
        gz = Path(tmp) / "decisions.jsonl.gz"
        with log.open("rb") as src, gzip.open(gz, "wb", compresslevel=3) as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        print(
            f"log: {args.events:,} decision events, {log.stat().st_size / 1e6:.0f} MB "
            f"(gzip {gz.stat().st_size / 1e6:.0f} MB); {args.rounds} rounds, medians; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(
            f"{'run':<24} {'wall s':>8} {'cpu s':>8} {'events/s':>10} {'x floor':>8} "
            f"{'peak RSS MB':>12} {'worker RSS MB':>14}"
        )
        runs_of: list[tuple[str, str, Path, Path]] = [
            ("imports only", "import", log, SRC),
            ("parse floor (orjson)", "floor", log, SRC),
            ("monitor, 2 workers", "monitor:blocks:2", log, SRC),
            ("monitor, lines, 2 work.", "monitor:lines:2", log, SRC),
            ("monitor, blocks", "monitor:blocks:1", log, SRC),
            ("monitor, lines", "monitor:lines:1", log, SRC),
            ("monitor .gz, blocks", "monitor:blocks", gz, SRC),
            ("monitor .gz, lines", "monitor:lines", gz, SRC),
        ]
        if args.baseline is not None:
            runs_of += [
                ("baseline: imports only", "import", log, args.baseline),
                ("baseline: monitor", "monitor", log, args.baseline),
                ("baseline: monitor .gz", "monitor", gz, args.baseline),
            ]
        if args.quick:
            keep = {"parse floor (orjson)", "monitor, 2 workers", "monitor, blocks"}
            runs_of = [r for r in runs_of if r[0] in keep or r[0] == "baseline: monitor"]
        results: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in runs_of}
        for _ in range(args.rounds):  # rounds interleave the rows: load drifts alike
            for name, mode, path, src in runs_of:
                results[name].append(run_child(mode, path, src))
        floor = statistics.median(r["wall"] for r in results["parse floor (orjson)"])
        for name, mode, _path, _src in runs_of:
            runs = results[name]
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            rss = max(r["rss_mb"] for r in runs)
            kids = max(r.get("kids_mb", 0.0) for r in runs)
            kids_col = f"{kids:>14.0f}" if kids else f"{'-':>14}"
            n = runs[0]["n"]
            if mode == "import":
                print(f"{name:<24} {wall:>8.2f} {cpu:>8.2f} {'-':>10} {'-':>8} {rss:>12.0f}")
                continue
            print(
                f"{name:<24} {wall:>8.2f} {cpu:>8.2f} {n / wall:>10,.0f} {wall / floor:>8.2f} "
                f"{rss:>12.0f} {kids_col}"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
