"""Review queue backends side by side: enqueue throughput and claim latency, SQLite vs PostgreSQL.

Run: ``PYTHONPATH=src python benchmarks/bench_review_queue.py`` (set ``SAFEPREDICT_BENCH_DSN``
to a ``postgresql://`` URL to use a running server; otherwise a throwaway cluster is
started from the local PostgreSQL binaries, with its default durability, fsync on).
Prints the MEDIAN per case over interleaved repeats (one process, one run) and the
ratio to SQLite durable single; both backends commit durably (SQLite ``synchronous =
FULL``, PostgreSQL ``synchronous_commit = on``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _timing import interleaved_seconds

from safepredict.review import PostgresReviewQueue, SQLiteReviewQueue

REPEATS = 9
BATCH = 100
CLAIMS = 50


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a PostgreSQL cluster in a temporary directory (as ``postgres`` when root)."""
    found = (
        shutil.which("initdb")
        or (sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [""])[-1]
    )
    if not found:
        raise SystemExit(
            "no PostgreSQL binaries: apt-get install postgresql, or set SAFEPREDICT_BENCH_DSN"
        )
    bindir = Path(found).parent
    root = Path(tempfile.mkdtemp(prefix="sp-bench-pg-"))
    as_user: list[str] = []
    user = os.environ.get("USER", "postgres")
    if os.geteuid() == 0:
        as_user, user = ["runuser", "-u", "postgres", "--"], "postgres"
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user],
        check=True,
        capture_output=True,
    )
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    options = f"-p {port} -k {root} -c listen_addresses=''"
    subprocess.run(
        [*ctl, "-o", options, "-w", "-l", str(root / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://{user}@/postgres?host={quote(str(root))}&port={port}"
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def cases(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "decision_id": f"{tag}-{i}",
            "tier": "human",
            "action": "abstain",
            "reasons": ["empty_set"],
            "prediction": 1,
            "prediction_set": [],
            "confidence": 0.42,
            "audit": False,
        }
        for i in range(n)
    ]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    dsn = os.environ.get("SAFEPREDICT_BENCH_DSN")
    with throwaway_postgres() if dsn is None else _given(dsn) as url:
        queues = {
            "sqlite": SQLiteReviewQueue(tmp / "bench.db", durable=True),
            "postgres": PostgresReviewQueue(url),
        }
        counter = iter(range(10**9))

        def enqueue(q: Any, n: int) -> Callable[[], None]:
            def run() -> None:
                tag = f"e{next(counter)}"
                if n == 1:
                    q.enqueue(cases(1, tag)[0])
                else:
                    q.write_batch(cases(n, tag))

            return run

        per_case = {
            f"{name} enqueue, {'single' if n == 1 else f'batch {n}'}": (enqueue(q, n), n)
            for name, q in queues.items()
            for n in (1, BATCH)
        }
        times = interleaved_seconds({k: fn for k, (fn, _) in per_case.items()}, REPEATS)
        rows = {k: statistics.median(v) / per_case[k][1] for k, v in times.items()}
        for q in queues.values():  # a pool to claim from
            q.write_batch(cases(CLAIMS * (REPEATS + 1) * 4, f"c{next(counter)}"))

        def claim_one(q: Any) -> Callable[[], None]:
            def run() -> None:
                for _ in range(CLAIMS):
                    q.claim("bench", ttl=600)

            return run

        def claim_batch(q: Any) -> Callable[[], None]:
            return lambda: q.claim_many("bench", CLAIMS, ttl=600)

        claims = {
            f"{name} claim, {kind}": fn(q)
            for name, q in queues.items()
            for kind, fn in (("single", claim_one), (f"batch {CLAIMS}", claim_batch))
        }
        times = interleaved_seconds(claims, REPEATS)
        rows.update({k: statistics.median(v) / CLAIMS for k, v in times.items()})
    base_enqueue = rows["sqlite enqueue, single"]
    base_claim = rows["sqlite claim, single"]
    print(f"median per case over {REPEATS} interleaved repeats; ratio = time / sqlite single")
    print(f"{'operation':<34}{'us/case':>10}{'cases/s':>10}{'ratio':>8}")
    for name, seconds in rows.items():
        base = base_claim if "claim" in name else base_enqueue
        print(f"{name:<34}{seconds * 1e6:>10.1f}{1 / seconds:>10.0f}{seconds / base:>8.2f}")


@contextmanager
def _given(dsn: str) -> Iterator[str]:
    yield dsn


if __name__ == "__main__":
    main()
