"""The SQLite review queue's schema, migrations, transactions and errors (private)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import Any

from safepredict.exceptions import (
    QueueCorruptError,
    QueueFullError,
    QueueLockedError,
    QueueReadOnlyError,
    ReviewQueueError,
)

# ------------------------------------------------------------- SQLite queue
#: ``PRAGMA user_version`` of the queue layout this module writes. 0 is the 0.1.0 layout
#: (no version stored, no tallies), 1 the 0.1 layout, 2 adds leases and reviews, 3 the audit
#: sampling probability; older layouts are migrated in place on first open.
SCHEMA_VERSION = 3

TABLES = """
CREATE TABLE IF NOT EXISTS cases (
    decision_id    TEXT PRIMARY KEY NOT NULL,
    created_at     TEXT NOT NULL,
    model_name     TEXT,
    model_version  TEXT,
    tier           TEXT NOT NULL,
    action         TEXT NOT NULL,
    reasons        TEXT NOT NULL DEFAULT '[]',
    prediction     TEXT,
    prediction_set TEXT,
    interval       TEXT,
    confidence     REAL,
    explanation    TEXT,
    inputs         TEXT,
    inputs_hash    TEXT,
    audit          INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'claimed', 'resolved')),
    reviewer       TEXT,
    claimed_at     TEXT,
    resolved_at    TEXT,
    outcome        TEXT,
    outcome_source TEXT,
    note           TEXT
);
CREATE INDEX IF NOT EXISTS cases_status_created ON cases (status, created_at);
CREATE TABLE IF NOT EXISTS external_outcomes (
    decision_id TEXT PRIMARY KEY NOT NULL,
    outcome     TEXT,
    source      TEXT,
    recorded_at TEXT NOT NULL
);
"""

# Version 1: an index per tier, a key-value meta table (the outcome space) and tallies kept
# by triggers, so counts and console stats cost O(tiers), not O(cases).
_V1 = """
CREATE INDEX IF NOT EXISTS cases_status_tier_created ON cases (status, tier, created_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tally (
    kind TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (kind, a, b)
) WITHOUT ROWID;
DROP TRIGGER IF EXISTS cases_tally_insert;
DROP TRIGGER IF EXISTS cases_tally_update;
DROP TRIGGER IF EXISTS cases_tally_delete;
CREATE TRIGGER cases_tally_insert AFTER INSERT ON cases BEGIN
    {add_new}
END;
CREATE TRIGGER cases_tally_update AFTER UPDATE ON cases BEGIN
    {sub_old}
    {add_new}
END;
CREATE TRIGGER cases_tally_delete AFTER DELETE ON cases BEGIN
    {sub_old}
END;
DELETE FROM tally;
INSERT INTO tally (kind, a, b, n)
    SELECT 'status', tier, status, COUNT(*) FROM cases GROUP BY tier, status;
INSERT INTO tally (kind, a, b, n)
    SELECT 'resolved_on', substr(resolved_at, 1, 10), '', COUNT(*) FROM cases
    WHERE status = 'resolved' AND resolved_at IS NOT NULL GROUP BY substr(resolved_at, 1, 10);
INSERT INTO tally (kind, a, b, n)
    SELECT 'audit', 'n', '', COUNT(*) FROM cases
    WHERE status = 'resolved' AND audit = 1 AND action = 'accept';
INSERT INTO tally (kind, a, b, n)
    SELECT 'audit', 'errors', '', COUNT(*) FROM cases
    WHERE status = 'resolved' AND audit = 1 AND action = 'accept' AND prediction IS NOT outcome;
"""


def _tally_sql(row: str, sign: str) -> str:
    """Trigger statements adding (``sign="+"``) or removing a row's contribution."""
    upsert = (
        "INSERT INTO tally (kind, a, b, n) SELECT {kind}, {a}, {b}, {sign}1 WHERE {cond} "
        "ON CONFLICT (kind, a, b) DO UPDATE SET n = n {sign} 1;"
    )
    resolved = f"{row}.status = 'resolved'"
    audited = f"{resolved} AND {row}.audit = 1 AND {row}.action = 'accept'"
    parts = [
        ("'status'", f"{row}.tier", f"{row}.status", "1"),
        ("'resolved_on'", f"coalesce(substr({row}.resolved_at, 1, 10), '')", "''", resolved),
        ("'audit'", "'n'", "''", audited),
        ("'audit'", "'errors'", "''", f"{audited} AND {row}.prediction IS NOT {row}.outcome"),
    ]
    return "\n    ".join(upsert.format(kind=k, a=a, b=b, cond=c, sign=sign) for k, a, b, c in parts)


MIGRATE_V1 = _V1.format(add_new=_tally_sql("NEW", "+"), sub_old=_tally_sql("OLD", "-"))

# Version 2: leases, several reviewers per case, priorities, and a schema_version table.
MIGRATE_V2 = """
ALTER TABLE cases ADD COLUMN stage TEXT NOT NULL DEFAULT 'review';
ALTER TABLE cases ADD COLUMN priority REAL NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN reviews_required INTEGER NOT NULL DEFAULT 1;
ALTER TABLE cases ADD COLUMN lease_id TEXT;
ALTER TABLE cases ADD COLUMN lease_expires_at TEXT;
ALTER TABLE cases ADD COLUMN previous_reviewer TEXT;
ALTER TABLE cases ADD COLUMN first_claimed_at TEXT;
UPDATE cases SET first_claimed_at = claimed_at WHERE claimed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_claim_order
    ON cases (status, stage, priority DESC, created_at);
CREATE INDEX IF NOT EXISTS cases_lease ON cases (status, lease_expires_at);
CREATE INDEX IF NOT EXISTS cases_tier_resolved ON cases (tier, resolved_at);
CREATE TABLE IF NOT EXISTS reviews (
    decision_id TEXT NOT NULL,
    reviewer    TEXT NOT NULL,
    stage       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    note        TEXT,
    answered_at TEXT NOT NULL,
    PRIMARY KEY (decision_id, reviewer, stage)
);
CREATE TABLE IF NOT EXISTS tier_seq (tier TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL
);
"""

#: Version 3: the audit sampling probability stored with each audited case (tier health
#: weights each outcome by its inverse).
MIGRATE_V3 = "ALTER TABLE cases ADD COLUMN audit_probability REAL"

#: The migration to each version from the one before (``PRAGMA user_version`` mirrors the
#: ``schema_version`` table, so opening a current file costs one pragma).
MIGRATIONS = {1: TABLES + MIGRATE_V1, 2: MIGRATE_V2, 3: MIGRATE_V3}


def close_all(conns: list[sqlite3.Connection]) -> None:
    """Close the connections (errors ignored: the file may be gone)."""
    while conns:
        conn = conns.pop()
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    """``sqlite3`` row factory: rows as dicts, like the PostgreSQL queue's."""
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class SQLiteTx:
    """One SQLite transaction as the queue core's ``Tx``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.conn.execute(sql, params).fetchall())

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self.conn.execute(sql, params).rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)


# ------------------------------------------------------------- errors
_BUSY, _LOCKED, _READONLY, _CANTOPEN, _FULL, _CORRUPT, _NOTADB, _PERM, _IOERR = (
    5,
    6,
    8,
    14,
    13,
    11,
    26,
    3,
    10,
)


def translate_error(exc: sqlite3.Error, path: Any, timeout: float) -> ReviewQueueError:
    """The :class:`ReviewQueueError` subclass for a sqlite failure, saying what to do.

    Examples
    --------
    >>> err = translate_error(sqlite3.DatabaseError("file is not a database"), "q.db", 1.0)
    >>> type(err).__name__
    'QueueCorruptError'
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else int(code) & 0xFF
    text = str(exc).lower()
    where = f"review queue {str(path)!r}"
    if primary in (_BUSY, _LOCKED) or "locked" in text or "busy" in text:
        return QueueLockedError(
            f"{where} stayed locked by another writer for more than the {timeout:g} s busy "
            "timeout ({exc}). Retry later, or raise SQLiteReviewQueue(path, timeout=...) if "
            "long transactions are expected; decide() spools the cases meanwhile."
        )
    if primary in (_READONLY, _PERM) or "readonly" in text or "read-only" in text:
        return QueueReadOnlyError(
            f"{where} cannot be written ({exc}). Give this process write permission on the "
            "file and on its directory (SQLite creates -wal/-shm files next to it), or point "
            "the router at a writable path."
        )
    if primary == _FULL or "disk is full" in text or "database or disk is full" in text:
        return QueueFullError(
            f"{where}: the disk is full ({exc}). Free space (or export and archive resolved "
            "cases), then retry; decide() spools the cases meanwhile."
        )
    if primary in (_CORRUPT, _NOTADB) or "not a database" in text or "malformed" in text:
        return QueueCorruptError(
            f"{where} is not a readable SQLite review queue ({exc}). Move it aside and start a "
            "new queue; try `sqlite3 <file> .recover` to salvage its cases."
        )
    if primary == _CANTOPEN or "unable to open" in text:
        return QueueReadOnlyError(
            f"{where} cannot be opened ({exc}). Check that its directory exists and is "
            "writable by this process."
        )
    return ReviewQueueError(f"{where}: SQLite error ({type(exc).__name__}: {exc}).")


def statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (trigger bodies stay whole)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out
