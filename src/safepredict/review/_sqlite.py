"""The SQLite review queue's schema and row codecs (private to :mod:`~safepredict.review.queue`)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from safepredict._jsonl import dumps
from safepredict._validation import describe
from safepredict.exceptions import (
    ConfigError,
    QueueCorruptError,
    QueueFullError,
    QueueLockedError,
    QueueReadOnlyError,
    ReviewQueueError,
)
from safepredict.review.cases import utc_now

STATUSES = ("pending", "claimed", "resolved")


# ------------------------------------------------------------- SQLite queue
#: ``PRAGMA user_version`` of the queue layout this module writes. 0 is the 0.1.0 layout
#: (no version stored, no tallies), migrated in place on first open. Version 2 adds the
#: ``audit_probability`` column (the probability an audited row was sampled with).
SCHEMA_VERSION = 2

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
    note           TEXT,
    audit_probability REAL
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
#: Version 2: the audit sampling probability, stored with each audited case (tier health
#: weights each outcome by its inverse). Applied when the column is missing.
MIGRATE_V2 = "ALTER TABLE cases ADD COLUMN audit_probability REAL"

_JSON_COLUMNS = ("reasons", "prediction", "prediction_set", "interval", "explanation", "inputs")
_COLUMNS = (
    "decision_id",
    "created_at",
    "model_name",
    "model_version",
    "tier",
    "action",
    "reasons",
    "prediction",
    "prediction_set",
    "interval",
    "confidence",
    "explanation",
    "inputs",
    "inputs_hash",
    "audit",
    "audit_probability",
)
INSERT = (
    f"INSERT INTO cases ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (decision_id) DO NOTHING"
)


def case_params(case: Mapping[str, Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for col in _COLUMNS:
        value = case.get(col)
        if col == "decision_id":
            if value is None:
                raise ConfigError("a case needs a 'decision_id'; got None.")
            out.append(str(value))
        elif col == "created_at":
            out.append(str(value) if value is not None else utc_now())
        elif col in ("tier", "action"):
            out.append("" if value is None else str(value))
        elif col in _JSON_COLUMNS:
            if col == "reasons":
                out.append(dumps(list(value or ())))
            else:
                out.append(None if value is None else dumps(value))
        elif col == "confidence":
            out.append(None if value is None else float(value))
        elif col == "audit":
            out.append(1 if value else 0)
        elif col == "audit_probability":
            out.append(audit_probability(value))
        else:
            out.append(None if value is None else str(value))
    return tuple(out)


def audit_probability(value: Any) -> float | None:
    """A case's ``audit_probability``: ``None`` or a number in (0, 1].

    Examples
    --------
    >>> audit_probability(0.05), audit_probability(None)
    (0.05, None)
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 < value <= 1.0:
        return float(value)
    raise ConfigError(
        "a case's 'audit_probability' must be None or a number in (0, 1] (the probability "
        f"the row was sampled for audit); got {describe(value)}."
    )


def row_to_case(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118  # sqlite3.Row is not iterable by key
        value = row[key]
        if key in _JSON_COLUMNS or key == "outcome":
            value = None if value is None else json.loads(value)
        elif key == "audit":
            value = bool(value)
        out[key] = value
    return out


def has_reason(reasons: Sequence[str], reason: str) -> bool:
    """A reason matches itself and its qualified forms (``ood`` ~ ``ood:x``)."""
    return any(r == reason or r.startswith(reason + ":") for r in reasons)


def cutoff(older_than: Any) -> str:
    """``created_at`` bound for ``older_than``; an age beyond the calendar matches nothing."""
    if isinstance(older_than, datetime):
        moment = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(older_than, timedelta):
        seconds = older_than.total_seconds()
    elif isinstance(older_than, int | float) and not isinstance(older_than, bool):
        seconds = float(older_than)
    else:
        raise ConfigError(
            "older_than must be a datetime (created before), a timedelta or a number of "
            f"seconds (age); got {describe(older_than)}."
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"older_than must be a finite age >= 0 (seconds or a timedelta); got "
            f"{describe(older_than)}."
        )
    try:
        moment = datetime.now(UTC) - timedelta(seconds=seconds)
    except OverflowError:  # older than year 1: no case can be that old
        return "0000"
    return moment.isoformat(timespec="microseconds")


def write_export(fh: IO[str], cases: list[dict[str, Any]], format: str) -> None:
    if format == "jsonl":
        for case in cases:
            fh.write(dumps(case) + "\n")
        return
    columns = (*_COLUMNS, "status", "reviewer", "claimed_at", "resolved_at", "outcome", "note")
    writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for case in cases:
        row = {
            k: (dumps(case.get(k)) if k in (*_JSON_COLUMNS, "outcome") else case.get(k))
            for k in columns
        }
        writer.writerow(row)


def close_all(conns: list[sqlite3.Connection]) -> None:
    while conns:
        conn = conns.pop()
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def check_reviewer(reviewer: Any) -> str:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ConfigError(
            f"reviewer must be a non-empty string (who is reviewing); got {describe(reviewer)}."
        )
    return reviewer


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
