"""Schema migrations: a queue file written by the code before issue 25 opens, migrated."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from safepredict import ReviewQueueError, SQLiteReviewQueue
from safepredict.review._sqlite import SCHEMA_VERSION

DUMP = Path(__file__).resolve().parents[1] / "data" / "review-queue-v1.sql"


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """The dump of a file main's SQLiteReviewQueue wrote (schema version 1), restored."""
    path = tmp_path / "reviews.db"
    conn = sqlite3.connect(path)
    conn.executescript(DUMP.read_text(encoding="utf-8"))
    conn.close()
    return path


def test_a_version_1_file_is_migrated_in_place_and_keeps_every_case(old_file: Path) -> None:
    before = sqlite3.connect(old_file)
    assert before.execute("PRAGMA user_version").fetchone()[0] == 1
    rows_before = before.execute("SELECT * FROM cases ORDER BY decision_id").fetchall()
    before.close()
    q = SQLiteReviewQueue(old_file)
    assert q.counts()["*"] == {"pending": 3, "claimed": 1, "resolved": 2}
    conn = sqlite3.connect(old_file)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")] == [2, 3]
    width = len(rows_before[0])
    after = conn.execute("SELECT * FROM cases ORDER BY decision_id").fetchall()
    assert [r[:width] for r in after] == rows_before  # old columns untouched
    conn.close()
    assert q.integrity_check() == "ok"
    claimed = q.get("d-3")
    assert claimed is not None
    assert claimed["first_claimed_at"] == claimed["claimed_at"]  # backfilled
    assert claimed["lease_expires_at"] is None
    assert claimed["stage"] == "review"
    # a claim from before leases has no expiry: its reviewer can still resolve it
    assert q.resolve("d-3", 1, "bo")["status"] == "resolved"
    assert q.outcome_space() is not None
    assert q.tiers() is not None
    assert [o["decision_id"] for o in q.outcomes(include_external=True)][-1] == "never"
    assert q.summary()["audit_n"] == 1


def test_the_migrated_file_has_leases_and_tallies(old_file: Path) -> None:
    q = SQLiteReviewQueue(old_file)
    case = q.claim("ana", ttl=0.1)
    assert case is not None
    assert case["lease_id"]
    time.sleep(0.2)
    with pytest.raises(ReviewQueueError, match="lease expired"):
        q.resolve(case["decision_id"], 1, "ana")
    recount = sqlite3.connect(old_file).execute(
        "SELECT tier, status, COUNT(*) FROM cases GROUP BY tier, status"
    )
    expected: dict[str, int] = {}
    for _tier, status, n in recount:
        expected[status] = expected.get(status, 0) + n
    assert {k: v for k, v in q.counts()["*"].items() if v} == expected


def test_migration_runs_once_across_queue_objects(old_file: Path) -> None:
    SQLiteReviewQueue(old_file).counts()
    SQLiteReviewQueue(old_file).counts()  # a second opener finds version 3: no re-run
    conn = sqlite3.connect(old_file)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 2
    conn.close()


def test_a_new_file_records_every_version(tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "new.db")
    q.counts()
    conn = sqlite3.connect(q.path)
    assert [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")] == [
        1,
        2,
        3,
    ]
    conn.close()
