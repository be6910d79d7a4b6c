"""The review queue's failure modes: every SQLite failure is a ReviewQueueError saying what to do.

Real files in each state (read-only, full, corrupt, newer schema, write-locked, 0.1.0 layout);
no SQLite call is mocked.
"""

from __future__ import annotations

import math
import os
import sqlite3
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safepredict import SafePredictor
from safepredict.exceptions import (
    ConfigError,
    InvalidOutcomeError,
    QueueCorruptError,
    QueueFullError,
    QueueLockedError,
    QueueReadOnlyError,
    QueueVersionError,
    ReviewQueueError,
)
from safepredict.review import Router, SQLiteReviewQueue
from safepredict.review._sqlite import SCHEMA_VERSION
from safepredict.review.outcomes import OutcomeSpace


def case(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "decision_id": f"d-{i}",
        "tier": "human" if i % 2 else "review",
        "action": "abstain" if i % 2 else "review",
        "reasons": [],
        "prediction": i % 3,
        **extra,
    }


def test_corrupt_file_is_a_queue_corrupt_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"not a database at all " * 500)
    q = SQLiteReviewQueue(path)
    for call in (q.counts, q.pending, lambda: q.enqueue(case(1)), lambda: list(q.outcomes())):
        with pytest.raises(QueueCorruptError, match=r"not a readable SQLite review queue.*recover"):
            call()


def test_damaged_pages_are_a_queue_corrupt_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = SQLiteReviewQueue(path)
    q.write_batch([case(i, inputs={"x": "y" * 200}) for i in range(300)])
    q.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(2 * page, len(data) - page, 3 * page):  # scribble over many pages
        data[start : start + page] = os.urandom(page)
    path.write_bytes(bytes(data))
    q = SQLiteReviewQueue(path)
    with pytest.raises(QueueCorruptError, match="malformed"):
        q.cases()


def test_newer_schema_is_refused_not_used(tmp_path: Path) -> None:
    """Issue 21: a user_version=99 file was used silently and inserts then failed."""
    path = tmp_path / "q.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cases (decision_id TEXT PRIMARY KEY, something_else TEXT)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    q = SQLiteReviewQueue(path)
    with pytest.raises(QueueVersionError, match=rf"schema version 99.*up to {SCHEMA_VERSION}"):
        q.enqueue(case(1))
    with pytest.raises(QueueVersionError):
        q.pending()


def test_a_new_queue_stores_its_schema_version(tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "q.db")
    q.enqueue(case(1))
    conn = sqlite3.connect(q.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


#: The 0.1.0 layout, verbatim (no user_version, no tallies, no meta table).
V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    decision_id TEXT PRIMARY KEY NOT NULL, created_at TEXT NOT NULL, model_name TEXT,
    model_version TEXT, tier TEXT NOT NULL, action TEXT NOT NULL,
    reasons TEXT NOT NULL DEFAULT '[]', prediction TEXT, prediction_set TEXT, interval TEXT,
    confidence REAL, explanation TEXT, inputs TEXT, inputs_hash TEXT,
    audit INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'claimed', 'resolved')),
    reviewer TEXT, claimed_at TEXT, resolved_at TEXT, outcome TEXT, outcome_source TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS cases_status_created ON cases (status, created_at);
CREATE TABLE IF NOT EXISTS external_outcomes (
    decision_id TEXT PRIMARY KEY NOT NULL, outcome TEXT, source TEXT, recorded_at TEXT NOT NULL
);
"""


def test_a_0_1_0_queue_is_migrated_with_its_counts(tmp_path: Path) -> None:
    from safepredict.review.cases import utc_now

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V0_SCHEMA)
    now = utc_now()
    rows = []
    for i in range(40):
        status = ("pending", "claimed", "resolved")[i % 3]
        audit = int(i % 5 == 0)
        rows.append(
            (
                f"d-{i}", now, "human" if i % 2 else "auto", "accept" if audit else "abstain",
                str(i % 2), status, "ana" if status != "pending" else None,
                now if status == "resolved" else None,
                str((i // 2) % 2) if status == "resolved" else None, audit,
            )
        )  # fmt: skip
    conn.executemany(
        "INSERT INTO cases (decision_id, created_at, tier, action, prediction, status, reviewer,"
        " resolved_at, outcome, audit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()

    q = SQLiteReviewQueue(path)
    counts = q.counts()
    by_status = {s: sum(1 for r in rows if r[5] == s) for s in ("pending", "claimed", "resolved")}
    assert counts["*"] == by_status
    audited = [r for r in rows if r[5] == "resolved" and r[9] and r[3] == "accept"]
    summary = q.summary()
    assert summary["audit_n"] == len(audited)
    assert summary["audit_errors"] == sum(1 for r in audited if r[4] != r[8])
    assert summary["resolved_today"] == by_status["resolved"]
    # the tallies keep up with later changes, and agree with a full recount
    q.enqueue(case(1000))
    q.claim_case("d-1000", "bob")
    q.resolve("d-1000", 1, "bob")
    q.record_outcome("d-0", 0)
    recount = (
        sqlite3.connect(path)
        .execute("SELECT status, COUNT(*) FROM cases GROUP BY status")
        .fetchall()
    )
    assert q.counts()["*"] == dict(recount)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_full_disk_is_a_queue_full_error(tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "q.db")
    q.enqueue(case(0))
    q._conn().execute("PRAGMA max_page_count = 8")  # this connection may not grow the file
    with pytest.raises(QueueFullError, match="disk is full"):
        q.write_batch([case(i, inputs={"blob": "x" * 4000}) for i in range(1, 200)])
    assert len(q) == 1  # the batch was rolled back as a whole


def _try_write_as_another_user(path: Path) -> str:
    """In a forked child (unprivileged when we are root: file modes do not stop root)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no exec, so the venv need not be readable by the other user
        os.close(read_fd)
        message = ""
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)  # nobody
            q = SQLiteReviewQueue(path)
            message = f"read {len(q.pending())}; "
            q.enqueue({"decision_id": "new", "tier": "t", "action": "review"})
            message += "wrote"
        except QueueReadOnlyError as exc:
            message += f"refused: {exc}"
        except BaseException as exc:  # report anything else to the parent
            message += f"other: {type(exc).__name__}: {exc}"
        finally:
            os.write(write_fd, message.encode())
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_read_only_file_is_a_queue_read_only_error() -> None:
    base = Path(tempfile.mkdtemp(prefix="sp-ro-"))
    try:
        path = base / "q.db"
        q = SQLiteReviewQueue(path)
        q.write_batch([case(i) for i in range(3)])
        q.close()
        conn = sqlite3.connect(path)  # leave WAL so that a reader needs no -shm file
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
        path.chmod(0o444)
        base.chmod(0o555)
        result = _try_write_as_another_user(path)
        assert result.startswith("read 3; refused:"), result
        assert "cannot be written" in result or "cannot be opened" in result
    finally:
        base.chmod(0o755)
        for p in base.iterdir():
            p.chmod(0o644)
            p.unlink()
        base.rmdir()


def test_locked_queue_is_a_queue_locked_error_after_the_busy_timeout(tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "q.db", timeout=0.2)
    q.enqueue(case(0))
    blocker = sqlite3.connect(q.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.perf_counter()
        with pytest.raises(QueueLockedError, match=r"locked by another writer.*0.2 s"):
            q.enqueue(case(1))
        assert 0.15 < time.perf_counter() - t0 < 2.0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    q.enqueue(case(1))
    assert len(q) == 2


def test_decide_on_a_locked_queue_stalls_at_most_the_default_busy_timeout(
    iris_lr: Any, tmp_path: Path
) -> None:
    """Issue 21: a write-locked queue stalled decide for 30 s; now <= 1 s, then it spools."""
    q = SQLiteReviewQueue(tmp_path / "q.db")
    assert q.timeout == 1.0
    q.enqueue(case(0))
    sp = SafePredictor(
        iris_lr.model,
        log="off",
        router=Router(q),  # default retries: a locked queue is not retried
        tiers={"tiers": [{"name": "auto", "action": "accept", "max_set_size": 1},
                         {"name": "human", "action": "abstain"}], "audit_rate": 0.5},
    ).calibrate(iris_lr.X_cal, iris_lr.y_cal)  # fmt: skip
    sp.decide(iris_lr.X_test[:5])  # warm up (connections, caches)
    blocker = sqlite3.connect(q.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.perf_counter()
        d = sp.decide(iris_lr.X_test)
        stall = time.perf_counter() - t0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    routed = [r for r in d.route or [] if r]
    assert routed
    assert {r["status"] for r in routed} == {"spooled"}
    assert "QueueLockedError" in routed[0]["error"]
    # one busy timeout (1 s) plus the decision itself; three retries would take >= 3 s
    assert stall < 2.0, stall


@pytest.mark.parametrize(
    "older_than", [math.inf, -math.inf, math.nan, -1.0, timedelta(seconds=-5), "1h", True]
)
def test_bad_older_than_is_a_config_error(tmp_path: Path, older_than: Any) -> None:
    q = SQLiteReviewQueue(tmp_path / "q.db")
    with pytest.raises(ConfigError, match="older_than"):
        q.pending(older_than=older_than)


@pytest.mark.parametrize("older_than", [1e20, 1e300, timedelta.max, 10**30])
def test_an_age_beyond_the_calendar_matches_nothing(tmp_path: Path, older_than: Any) -> None:
    """Issue 21: pending(older_than=1e20) raised OverflowError."""
    q = SQLiteReviewQueue(tmp_path / "q.db")
    q.enqueue(case(0))
    assert q.pending(older_than=older_than) == []
    assert [c["decision_id"] for c in q.pending(older_than=0)] == ["d-0"]


@pytest.mark.parametrize("timeout", [-1, math.inf, math.nan, "1", True, 1e6])
def test_bad_timeout_is_a_config_error(tmp_path: Path, timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        SQLiteReviewQueue(tmp_path / "q.db", timeout=timeout)


# ------------------------------------------------------------------- outcomes
def routed_queue(model: Any, X_cal: Any, y_cal: Any, X: Any, path: Path) -> SQLiteReviewQueue:
    sp = SafePredictor(
        model,
        log="off",
        router=str(path),
        tiers={"tiers": [{"name": "auto", "action": "accept", "min_confidence": 0.99},
                         {"name": "review", "action": "review"}]},
    ).calibrate(X_cal, y_cal)  # fmt: skip
    sp.decide(X)
    return SQLiteReviewQueue(path)


def test_the_predictor_records_the_label_set_and_unknown_labels_are_refused(
    iris_lr: Any, tmp_path: Path
) -> None:
    q = routed_queue(iris_lr.model, iris_lr.X_cal, iris_lr.y_cal, iris_lr.X_test, tmp_path / "q.db")
    assert q.outcome_space() == OutcomeSpace("classification", (0, 1, 2))
    tiers = q.tiers()
    assert tiers is not None
    assert [t["name"] for t in tiers] == ["auto", "review"]
    (first, second) = q.pending(2)
    q.claim_case(first["decision_id"], "ana")
    for bad in ("maybe", 3, 1.5, None, math.nan, math.inf, [1], {"label": 1}, "[" * 3000):
        with pytest.raises(InvalidOutcomeError, match=r"expected one of \[0, 1, 2\]|must be"):
            q.resolve(first["decision_id"], bad, "ana")
        with pytest.raises(InvalidOutcomeError):
            q.record_outcome(second["decision_id"], bad)
    assert q.get(first["decision_id"])["status"] == "claimed"  # type: ignore[index]
    assert q.resolve(first["decision_id"], np.int64(2), "ana")["outcome"] == 2
    assert q.record_outcome("never-routed", "1") == "external"
    ext = [o for o in q.outcomes(include_external=True) if o["decision_id"] == "never-routed"]
    assert ext[0]["outcome"] == 1


def test_string_labels_refuse_a_typo_with_the_choices(tmp_path: Path) -> None:
    """Issue 21: "stya" for classes {churn, stay} was stored."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y01 = make_classification(n_samples=600, n_features=5, random_state=0)
    y = np.where(y01 == 1, "stay", "churn")
    model = LogisticRegression(max_iter=500).fit(X[:200], y[:200])
    q = routed_queue(model, X[200:400], y[200:400], X[400:], tmp_path / "q.db")
    (c,) = q.pending(1)
    q.claim_case(c["decision_id"], "ana")
    with pytest.raises(InvalidOutcomeError, match=r"'stya'.*\['churn', 'stay'\]") as err:
        q.resolve(c["decision_id"], "stya", "ana")
    assert err.value.choices == ("churn", "stay")
    assert q.resolve(c["decision_id"], "stay", "ana")["outcome"] == "stay"


def test_regression_outcomes_are_finite_numbers(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X[:200], y[:200])
    sp = SafePredictor(
        model,
        log="off",
        router=str(tmp_path / "q.db"),
        tiers={"tiers": [{"name": "auto", "action": "accept", "max_interval_width": 1.0},
                         {"name": "review", "action": "review"}]},
    ).calibrate(X[200:350], y[200:350])  # fmt: skip
    d = sp.decide(X[350:])
    q = SQLiteReviewQueue(tmp_path / "q.db")
    assert q.outcome_space() == OutcomeSpace("regression")
    did = d.decision_ids[0]
    for bad in (math.nan, math.inf, -math.inf, None, "abc", "1e400", True, [1.0], 10**400):
        with pytest.raises(InvalidOutcomeError, match="finite number"):
            sp.record_outcome(did, bad)
    assert sp.record_outcome(did, "151.5") == "case"
    assert q.get(did)["outcome"] == 151.5  # type: ignore[index]


def test_every_public_queue_error_is_a_review_queue_error() -> None:
    for exc in (QueueLockedError, QueueReadOnlyError, QueueFullError, QueueCorruptError):
        assert issubclass(exc, ReviewQueueError)
    assert issubclass(QueueVersionError, ReviewQueueError)
