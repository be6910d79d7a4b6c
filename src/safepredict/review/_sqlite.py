"""The SQLite review queue's schema and row codecs (private to :mod:`~safepredict.review.queue`)."""

from __future__ import annotations

import contextlib
import csv
import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from safepredict._jsonl import dumps
from safepredict._validation import describe
from safepredict.exceptions import ConfigError
from safepredict.review.cases import utc_now

STATUSES = ("pending", "claimed", "resolved")


# ------------------------------------------------------------- SQLite queue
SCHEMA = """
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
        else:
            out.append(None if value is None else str(value))
    return tuple(out)


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
    if isinstance(older_than, datetime):
        moment = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
    elif isinstance(older_than, timedelta):
        moment = datetime.now(UTC) - older_than
    elif isinstance(older_than, int | float) and not isinstance(older_than, bool):
        moment = datetime.now(UTC) - timedelta(seconds=float(older_than))
    else:
        raise ConfigError(
            "older_than must be a datetime (created before), a timedelta or a number of "
            f"seconds (age); got {describe(older_than)}."
        )
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


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
