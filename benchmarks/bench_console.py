"""Reviewer console pages as the queue grows: 10^4, 10^5 and 10^6 cases.

Run: ``PYTHONPATH=src python benchmarks/bench_console.py [--sizes 10000 100000 1000000]``.
Each queue is filled directly with ``executemany`` (75% resolved, half of them today;
20% pending; 5% claimed; 10% audit samples of accepted rows), then the list page
(``GET /``), a case page (``GET /case/<id>``) and the header stats (``queue.summary()``,
what every page reads) are timed in-process over the ASGI app (httpx), MEDIAN of
REPEATS calls each, side by side in one process. The last column is the ratio to the
smallest queue: pages read O(tiers) counters kept by triggers and index ranges, so
it should stay near 1 (the goal: the 10^6 figure within 2x of the 10^4 figure).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds

from safepredict.review import SQLiteReviewQueue
from safepredict.review.console import create_app
from safepredict.review.outcomes import OutcomeSpace

REPEATS = 31
TOKEN = "bench-token-0123456789"
TIERS = [
    {"name": "auto", "action": "accept", "min_confidence": 0.95},
    {"name": "review", "action": "review", "max_set_size": 2},
    {"name": "human", "action": "abstain"},
]


def fill(path: Path, n: int) -> SQLiteReviewQueue:
    """A queue of n cases written with one executemany (the triggers keep the tallies)."""
    q = SQLiteReviewQueue(path, durable=False)
    q.set_outcome_space(OutcomeSpace("classification", (0, 1, 2)))
    q.set_tiers(TIERS)
    now = datetime.now(UTC)
    today = now.isoformat(timespec="microseconds")
    old = (now - timedelta(days=3)).isoformat(timespec="microseconds")

    def rows() -> object:
        for i in range(n):
            k = i % 20
            status = "pending" if k < 4 else ("claimed" if k == 4 else "resolved")
            audit = int(i % 10 == 0)
            tier = "auto" if audit else ("review" if i % 2 else "human")
            created = (now - timedelta(seconds=n - i)).isoformat(timespec="microseconds")
            yield (
                f"b-{i:07d}", created, tier, "accept" if audit else ("review" if i % 2 else
                "abstain"), '["empty_set"]' if i % 3 == 0 else "[]", str(i % 3), 0.5,
                audit, status, None if status == "pending" else "ana",
                (today if i % 2 else old) if status == "resolved" else None,
                str((i // 7) % 3) if status == "resolved" else None,
            )  # fmt: skip

    conn = q._conn()  # the bench fills the file directly: the fastest path to 10^6 rows
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO cases (decision_id, created_at, tier, action, reasons, prediction, "
        "confidence, audit, status, reviewer, resolved_at, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    return q


def time_pages(q: SQLiteReviewQueue, n: int) -> dict[str, float]:
    app = create_app(q, TOKEN)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://127.0.0.1",
        headers={"authorization": f"Bearer {TOKEN}"},
    )

    def get(url: str) -> None:
        r = loop.run_until_complete(client.get(url))
        assert r.status_code == 200, (url, r.status_code)

    case_id = f"b-{n // 2:07d}"
    out = {
        "list page (GET /)": median_seconds(lambda: get("/"), REPEATS, warmup=3),
        "list page, one tier": median_seconds(lambda: get("/?tier=review"), REPEATS, warmup=3),
        "case page": median_seconds(lambda: get(f"/case/{case_id}"), REPEATS, warmup=3),
        "stats (summary)": median_seconds(q.summary, REPEATS, warmup=3),
    }
    loop.run_until_complete(client.aclose())
    loop.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    results: dict[int, dict[str, float]] = {}
    try:
        for n in args.sizes:
            t = time.perf_counter()
            q = fill(tmp / f"q{n}.db", n)
            fill_s = time.perf_counter() - t
            results[n] = time_pages(q, n)
            print(f"filled {n:>9,} cases in {fill_s:.1f} s", flush=True)
            q.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = min(results)
    print(f"\nmedian of {REPEATS} calls, ms (ratio to {base:,} cases)")
    header = f"{'page':<22}" + "".join(f"{n:>20,}" for n in results)
    print(header)
    for page in results[base]:
        cells = "".join(
            f"{1000 * results[n][page]:>11.2f} ({results[n][page] / results[base][page]:.2f}x)"
            for n in results
        )
        print(f"{page:<22}{cells}")


if __name__ == "__main__":
    main()
