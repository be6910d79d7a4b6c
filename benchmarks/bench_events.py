"""Cost of decision events: ``decide`` on 10,000 rows with and without logging.

Every configuration runs in this one process, interleaved round by round, and the
table reports MEDIAN times (guards off in every configuration, so only the events
differ), the per-row event cost (median with logging minus
median without, divided by the rows) and the ratio to ``log="off"``. Both the
process CPU time (``time.process_time``; the cost the events add, robust to other
jobs on a shared machine) and the wall time (``time.perf_counter``; inflated by
waiting for a core when the machine is busy) are reported.

Configurations
--------------
off            ``SafePredictor(log="off")``: no events.
build-only     per-row events into structlog with no processors and a
               ``ReturnLogger`` (the library's own cost: building the events).
jsonl-file     per-row events through the documented recipe: merge_contextvars,
               add_log_level, orjson JSONRenderer, BytesLogger to a file,
               ``cache_logger_on_first_use=True``.
jsonl-fast     ``SafePredictor(logger="events.jsonl")``: the same lines written by
               the library's column-wise JSON-lines writer (structlog unconfigured).
arrow          ``SafePredictor(logger="decisions.arrows")``: the columnar decision
               log, one Arrow record batch per call of more than 32 rows (needs
               pyarrow, the ``arrow`` extra); smaller calls, e.g. ``decide_one``,
               are JSON lines beside the stream files.
summary        ``log="summary"``: one ``safepredict.batch`` event per call, same
               JSONL recipe.

A second table times single-row ``decide_one`` calls (``--single`` calls per
configuration, interleaved) and reports the median CPU and wall time per call and
their difference to ``off``: the cost of one event (the CPU column is the one to
read on a busy machine).

A third table splits the single-row event of ``jsonl-fast`` into its parts, each
timed in loops of ``--loop`` calls (thread CPU time, medians over interleaved
rounds) on one real decision: the row hash by the batch path (``row_hashes``) and
by the one-row twin (``row_hash``), the line by the dict path (one dict, one
``dumps``: the previous renderer, still the fallback) and by the cached template,
the ``write``, and the whole ``EventEmitter.decisions`` call. Warm caches: in a
real ``decide_one`` the model runs in between, so each part costs more there.

``--ablate N`` adds a fourth table: ``decide_one`` end to end, ``N`` calls per
configuration in a shuffled order each round, with one part of the ``jsonl-fast``
event taken out or swapped for its previous form at a time (the line by the dict
path, the row hash by the batch path, no ``write``, a constant line, no emitter
call at all): what each part costs in context, with the model's work in between.

Run: ``python benchmarks/bench_events.py [--rows 10000] [--rounds 15] [--single 2000]
[--loop 300] [--ablate 0]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import structlog
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import safepredict as sp
from safepredict._hashing import row_hash, row_hashes
from safepredict.monitoring._event_json import dumps
from safepredict.monitoring.events import EventEmitter


def configure(kind: str, fh: Any) -> None:
    structlog.reset_defaults()
    if kind == "build-only":
        structlog.configure(
            processors=[],
            logger_factory=structlog.ReturnLoggerFactory(),
            cache_logger_on_first_use=True,
        )
    elif kind in ("jsonl-file", "summary"):
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(fh),
            cache_logger_on_first_use=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--loop", type=int, default=300)
    parser.add_argument("--ablate", type=int, default=0)
    args = parser.parse_args()

    X, y = make_classification(
        n_samples=args.rows + 4000, n_features=20, n_informative=8, n_classes=3, random_state=0
    )
    model = LogisticRegression(max_iter=1000).fit(X[:2000], y[:2000])
    X_cal, y_cal, X_run = X[2000:4000], y[2000:4000], X[4000:]
    kinds = ("off", "build-only", "jsonl-file", "jsonl-fast", "arrow", "summary")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "events.jsonl"
        fast_path = Path(tmp) / "fast.jsonl"
        arrow_path = Path(tmp) / "decisions.arrows"
        with log_path.open("ab") as fh:
            predictors = {}
            for kind in kinds:
                configure(kind, fh)
                log = {"off": "off", "summary": "summary"}.get(kind, "decision")
                logger = {"jsonl-fast": str(fast_path), "arrow": str(arrow_path)}.get(kind)
                predictors[kind] = sp.SafePredictor(
                    model, log=log, logger=logger, guards="off"
                ).calibrate(X_cal, y_cal)
            for _ in range(args.rounds):
                for kind in kinds:
                    configure(kind, fh)
                    p = predictors[kind]
                    p.decide(X_run[:10])  # warm the cached logger
                    t, c = time.perf_counter(), time.process_time()
                    p.decide(X_run)
                    cpu[kind].append(time.process_time() - c)
                    times[kind].append(time.perf_counter() - t)
            single_kinds = ("off", "jsonl-file", "jsonl-fast", "arrow")
            single: dict[str, list[float]] = {k: [] for k in single_kinds}
            single_cpu: dict[str, list[float]] = {k: [] for k in single_kinds}
            row = X_run[0]
            for _ in range(args.single):
                for kind in single_kinds:
                    configure(kind, fh)
                    t, c = time.perf_counter(), time.process_time()
                    predictors[kind].decide_one(row)
                    single_cpu[kind].append(time.process_time() - c)
                    single[kind].append(time.perf_counter() - t)
            structlog.reset_defaults()
        size = log_path.stat().st_size + fast_path.stat().st_size
        arrow_size = sum(f.stat().st_size for f in arrow_path.iterdir())
        dropped = sum(p.events.dropped for p in predictors.values())

    print(f"decide on {args.rows} rows, {args.rounds} rounds, medians")
    print(
        f"{'config':<12} {'cpu s':>8} {'ratio':>6} {'cpu us/row':>11} "
        f"{'wall s':>8} {'ratio':>6} {'wall us/row':>12}"
    )
    base_c, base_w = statistics.median(cpu["off"]), statistics.median(times["off"])
    for kind in kinds:
        mc, mw = statistics.median(cpu[kind]), statistics.median(times[kind])
        print(
            f"{kind:<12} {mc:>8.4f} {mc / base_c:>6.2f} {(mc - base_c) / args.rows * 1e6:>11.2f} "
            f"{mw:>8.4f} {mw / base_w:>6.2f} {(mw - base_w) / args.rows * 1e6:>12.2f}"
        )
    print(
        f"JSONL written: {size / 1e6:.1f} MB, Arrow written: {arrow_size / 1e6:.1f} MB, "
        f"dropped events: {dropped}"
    )
    jsonl_row = statistics.median(cpu["jsonl-fast"]) - base_c
    arrow_row = statistics.median(cpu["arrow"]) - base_c
    print(f"cpu per row, jsonl-fast / arrow: {jsonl_row / arrow_row:.1f}x")
    print(f"decide_one, {args.single} calls each, interleaved, medians")
    print(
        f"{'config':<12} {'cpu us/call':>12} {'event cpu us':>13} "
        f"{'wall us/call':>13} {'event us':>9}"
    )
    base, base_c = statistics.median(single["off"]), statistics.median(single_cpu["off"])
    for kind in single_kinds:
        med, mc = statistics.median(single[kind]), statistics.median(single_cpu[kind])
        print(
            f"{kind:<12} {mc * 1e6:>12.1f} {(mc - base_c) * 1e6:>13.1f} "
            f"{med * 1e6:>13.1f} {(med - base) * 1e6:>9.1f}"
        )
    parts = single_row_parts(predictors["off"], X_run[:1], tmp_path=Path(tempfile.mkdtemp()))
    print(f"single-row event of jsonl-fast by part, loops of {args.loop}, medians of 15 rounds")
    print(f"{'part':<38} {'cpu us':>8}")
    for name, values in parts(args.loop, 15).items():
        print(f"{name:<38} {statistics.median(values):>8.2f}")
    if args.ablate:
        ablation(model, X_cal, y_cal, X_run, args.ablate, Path(tempfile.mkdtemp()))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def ablation(model: Any, X_cal: Any, y_cal: Any, X_run: Any, n: int, tmp_path: Path) -> None:
    """``decide_one`` end to end with one part of the single-row event changed at a time."""
    import numpy as np

    from safepredict.monitoring import events

    def make(name: str | None) -> Any:
        kwargs: dict[str, Any] = {"log": "off"} if name is None else {"logger": tmp_path / name}
        return sp.SafePredictor(model, guards="off", **kwargs).calibrate(X_cal, y_cal)

    def refuse(*args: Any) -> bytes:
        raise TypeError("the dict path")

    class ConstantLine:
        def line(self, *args: Any) -> bytes:
            return b'{"event":"safepredict.decision"}\n'

    configs = {
        "off": make(None),
        "jsonl-fast": make("fast.jsonl"),
        "line by dict path": make("dict.jsonl"),
        "hash by batch path": make("hash.jsonl"),
        "no write": make("nowrite.jsonl"),
        "constant line": make("const.jsonl"),
        "no emitter call": make("noemit.jsonl"),
    }
    configs["line by dict path"].events._rows._fast_line = refuse
    configs["no write"].events.logger.write = lambda data: None
    configs["constant line"].events._rows = ConstantLine()
    configs["no emitter call"].events.decisions = lambda *args, **kwargs: 1
    twin = events.row_hash

    def batch_hash(X: Any) -> str:
        return str(row_hashes(X)[0])

    times: dict[str, list[float]] = {k: [] for k in configs}
    rng = np.random.default_rng(0)
    rows = X_run[: min(n, len(X_run))]
    for row in rows[:50]:
        for p in configs.values():
            p.decide_one(row)
    for row in rows:
        for name in rng.permutation(list(configs)).tolist():
            events.row_hash = batch_hash if name == "hash by batch path" else twin
            c = time.process_time()
            configs[name].decide_one(row)
            times[name].append(time.process_time() - c)
    events.row_hash = twin
    print(f"decide_one in context, {len(rows)} calls each, shuffled order, CPU medians")
    print(f"{'config':<20} {'cpu us/call':>12} {'event cpu us':>13}")
    base = statistics.median(times["off"])
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:<20} {m * 1e6:>12.1f} {(m - base) * 1e6:>13.1f}")


def single_row_parts(off: Any, X1: Any, tmp_path: Path) -> Any:
    """A function timing the parts of one single-row JSON-lines event, interleaved."""
    d = off.decide(X1)
    ctx = off._event_context()
    emitter = EventEmitter(tmp_path / "parts.jsonl")
    renderer = emitter._rows
    line = renderer.line(d, ctx, None, {}, None)

    def emit() -> None:
        d.inputs_hash = None
        emitter.decisions(d, ctx, X_model=X1)

    fns = {
        "row hash, batch path (row_hashes)": lambda: row_hashes(X1),
        "row hash, one-row twin (row_hash)": lambda: row_hash(X1),
        "line, dict path (previous renderer)": lambda: (
            dumps(renderer.event(d, ctx, None, {}, None)) + b"\n"
        ),
        "line, cached template": lambda: renderer.line(d, ctx, None, {}, None),
        "write (one os.write)": lambda: emitter.logger.write(line),
        "EventEmitter.decisions (hash+line+write)": emit,
    }

    def run(loop: int, rounds: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        for _ in range(rounds):
            for name, fn in fns.items():
                t = time.thread_time()
                for _ in range(loop):
                    fn()
                out[name].append((time.thread_time() - t) / loop * 1e6)
        return out

    return run


if __name__ == "__main__":
    main()
