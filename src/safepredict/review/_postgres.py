"""The PostgreSQL review queue: the same API and semantics for replicated services.

Needs the ``postgres`` extra (``psycopg[binary]``), imported here only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from safepredict._extras import require
from safepredict._validation import describe
from safepredict.exceptions import (
    ConfigError,
    QueueFullError,
    QueueLockedError,
    QueueReadOnlyError,
    QueueVersionError,
    ReviewQueueError,
)
from safepredict.review._codec import check_ttl
from safepredict.review._core import DEFAULT_LEASE_TTL, ReviewQueueCore
from safepredict.review._reads import guarded
from safepredict.review.cases import utc_now

#: The schema version this module writes (rows of the ``schema_version`` table).
SCHEMA_VERSION = 2

_V1 = """
CREATE TABLE IF NOT EXISTS cases (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    decision_id      TEXT PRIMARY KEY NOT NULL,
    created_at       TEXT NOT NULL,
    model_name       TEXT,
    model_version    TEXT,
    tier             TEXT NOT NULL,
    action           TEXT NOT NULL,
    reasons          TEXT NOT NULL DEFAULT '[]',
    prediction       TEXT,
    prediction_set   TEXT,
    interval         TEXT,
    confidence       DOUBLE PRECISION,
    explanation      TEXT,
    inputs           TEXT,
    inputs_hash      TEXT,
    audit            INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'claimed', 'resolved')),
    reviewer         TEXT,
    claimed_at       TEXT,
    resolved_at      TEXT,
    outcome          TEXT,
    outcome_source   TEXT,
    note             TEXT,
    stage            TEXT NOT NULL DEFAULT 'review',
    priority         DOUBLE PRECISION NOT NULL DEFAULT 0,
    reviews_required INTEGER NOT NULL DEFAULT 1,
    lease_id         TEXT,
    lease_expires_at TEXT,
    previous_reviewer TEXT,
    first_claimed_at TEXT
);
CREATE INDEX IF NOT EXISTS cases_claim_order
    ON cases (status, stage, priority DESC, created_at, seq);
CREATE INDEX IF NOT EXISTS cases_status_tier_created ON cases (status, tier, created_at);
CREATE INDEX IF NOT EXISTS cases_lease ON cases (status, lease_expires_at);
CREATE INDEX IF NOT EXISTS cases_tier_resolved ON cases (tier, resolved_at);
CREATE TABLE IF NOT EXISTS external_outcomes (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    decision_id TEXT PRIMARY KEY NOT NULL,
    outcome     TEXT,
    source      TEXT,
    recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reviews (
    decision_id TEXT NOT NULL,
    reviewer    TEXT NOT NULL,
    stage       TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    note        TEXT,
    answered_at TEXT NOT NULL,
    PRIMARY KEY (decision_id, reviewer, stage)
);
CREATE TABLE IF NOT EXISTS tier_seq (tier TEXT PRIMARY KEY NOT NULL, n BIGINT NOT NULL)
"""

#: The migration to each version from the one before (statements separated by ``;``).
MIGRATIONS = {
    1: _V1,
    # Version 2: the audit sampling probability stored with each audited case.
    2: "ALTER TABLE cases ADD COLUMN IF NOT EXISTS audit_probability DOUBLE PRECISION",
}

#: Any 64-bit key: the advisory lock that serializes migrations across processes.
_MIGRATION_LOCK = 0x5AFE_9E71_0000_0001 - (1 << 63)


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """Core SQL (``?`` placeholders) in psycopg's ``%s`` style."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresTx:
    """One PostgreSQL transaction as the queue core's ``Tx``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Execute; the rows it returns (none for a statement without rows)."""
        cur = self.conn.execute(_pg(sql), params)
        return list(cur.fetchall()) if cur.description else []

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; how many rows it changed."""
        return int(self.conn.execute(_pg(sql), params).rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Execute once per parameter row (pipelined by psycopg)."""
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)


class PostgresReviewQueue(ReviewQueueCore):
    """The review queue in PostgreSQL: same API and semantics as :class:`SQLiteReviewQueue`.

    For services with several replicas (which cannot share a SQLite file):
    every replica routes into one database and reviewers claim from it. Claims
    take the next case with ``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent
    claimers never wait on, nor get, the same case; leases, several reviewers
    per case and priorities work as in SQLite. The schema is created and
    migrated on first use (``schema_version`` table, under an advisory lock).
    Counts are aggregate queries (indexed), not trigger-kept tallies.

    Lease times come from the clocks of the processes that claim: keep the
    hosts' clocks synchronized (NTP).

    Parameters
    ----------
    dsn : str
        A libpq connection string or URL, e.g.
        ``"postgresql://reviews@db.internal/safepredict"``.
    timeout : float, default=1.0
        Seconds a statement waits for a row or table lock (``lock_timeout``)
        before failing with :class:`~safepredict.exceptions.QueueLockedError`;
        also the connection timeout (rounded up to whole seconds).
    lease_ttl : float, default=1800
        Seconds a claim holds its case unless extended with :meth:`heartbeat`.

    Raises
    ------
    MissingExtraError
        psycopg is not installed: ``pip install 'safepredict[postgres]'``.
    ReviewQueueError
        A subclass naming what to do, for every database failure.
    """

    SEQ = "seq"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    LOCK_ROW = " FOR UPDATE"
    INSTR = "strpos"

    def __init__(
        self, dsn: str, *, timeout: float = 1.0, lease_ttl: float = DEFAULT_LEASE_TTL
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigError(
                "dsn must be a PostgreSQL connection string such as "
                f"'postgresql://user@host/db'; got {describe(dsn)}."
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= 3600
        ):
            raise ConfigError(
                f"timeout must be a number of seconds in (0, 3600]; got {describe(timeout)}."
            )
        self._psycopg = require("psycopg", "postgres", "the PostgreSQL review queue")
        self.dsn = dsn
        self.timeout = float(timeout)
        self.lease_ttl = check_ttl(lease_ttl, "lease_ttl")
        self._init_local()

    def _init_local(self) -> None:
        try:
            info = self._psycopg.conninfo.conninfo_to_dict(self.dsn)
        except self._psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"dsn is not a valid PostgreSQL connection string ({exc}); write e.g. "
                "'postgresql://user@host:5432/db'."
            ) from exc
        self.name = f"postgres:{info.get('host', '')}/{info.get('dbname', '')}"  # no password
        self._db_errors = (self._psycopg.Error,)
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._meta_cache: dict[str, str] = {}
        self._staged: dict[str, str] = {}
        weakref.finalize(self, _close_all, self._conns)

    def __getstate__(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "timeout": self.timeout, "lease_ttl": self.lease_ttl}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._psycopg = require("psycopg", "postgres", "the PostgreSQL review queue")
        self.dsn = state["dsn"]
        self.timeout = state["timeout"]
        self.lease_ttl = state["lease_ttl"]
        self._init_local()

    def __repr__(self) -> str:
        return f"PostgresReviewQueue({self.name!r})"

    # -------------------------------------------------------- storage seam
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid() and not conn.closed:
            return conn
        psycopg = self._psycopg
        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            row_factory=psycopg.rows.dict_row,
            connect_timeout=max(1, math.ceil(self.timeout)),
        )
        try:
            conn.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _setup(self, conn: Any) -> None:
        """Create or migrate the schema (once per database, under an advisory lock)."""
        version = self._version(conn)
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise QueueVersionError(
                f"review queue {self.name!r} has schema version {version}; this safepredict "
                f"reads versions up to {SCHEMA_VERSION}. Use the newer safepredict that wrote it."
            )
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            version = self._version(conn)  # another process may have migrated meanwhile
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                    (target, utc_now()),
                )

    @staticmethod
    def _version(conn: Any) -> int:
        row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS present").fetchone()
        if not row["present"]:
            return 0
        found = conn.execute("SELECT max(version) AS v FROM schema_version").fetchone()
        return int(found["v"] or 0)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self._conn().execute(_pg(sql), params).fetchall())

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[PostgresTx]:
        conn = self._conn()
        with conn.transaction():
            yield PostgresTx(conn)

    def _translate(self, exc: BaseException) -> ReviewQueueError:
        errors = self._psycopg.errors
        where = f"review queue {self.name!r}"
        if isinstance(exc, errors.LockNotAvailable | errors.QueryCanceled):
            return QueueLockedError(
                f"{where} stayed locked for more than the {self.timeout:g} s lock timeout "
                f"({exc}). Retry later, or raise PostgresReviewQueue(dsn, timeout=...); "
                "decide() spools the cases meanwhile."
            )
        if isinstance(exc, errors.InsufficientPrivilege | errors.ReadOnlySqlTransaction):
            return QueueReadOnlyError(
                f"{where} cannot be written ({exc}). Grant this role INSERT/UPDATE on the "
                "queue's tables (or CREATE on the schema for the first run), or connect to "
                "the primary, not a read replica."
            )
        if isinstance(exc, errors.DiskFull):
            return QueueFullError(f"{where}: the database server's disk is full ({exc}).")
        if isinstance(exc, self._psycopg.OperationalError):
            return ReviewQueueError(
                f"{where} cannot be reached ({exc}). Check the dsn (host, port, database, "
                "user) and that the server accepts connections from this host."
            )
        return ReviewQueueError(f"{where}: PostgreSQL error ({type(exc).__name__}: {exc}).")

    def _status_rows(self) -> list[tuple[str, str, int]]:
        rows = self._read("SELECT tier, status, COUNT(*) AS n FROM cases GROUP BY tier, status")
        return [(r["tier"], r["status"], int(r["n"])) for r in rows]

    def _summary_rows(self, today: str) -> dict[tuple[str, str], int]:
        row = self._read(
            "SELECT COUNT(*) FILTER (WHERE substr(resolved_at, 1, 10) = ?) AS today, "
            "COUNT(*) FILTER (WHERE audit = 1 AND action = 'accept') AS n, "
            "COUNT(*) FILTER (WHERE audit = 1 AND action = 'accept' "
            "AND prediction IS DISTINCT FROM outcome) AS errors "
            "FROM cases WHERE status = 'resolved'",
            (today,),
        )[0]
        return {
            ("resolved_on", today): int(row["today"]),
            ("audit", "n"): int(row["n"]),
            ("audit", "errors"): int(row["errors"]),
        }

    # ---------------------------------------------------------- the server
    @guarded
    def close(self) -> None:
        """Close every connection this object opened (they reopen lazily on next use)."""
        with self._conns_lock:
            _close_all(self._conns)
        self._local = threading.local()

    @guarded
    def integrity_check(self) -> str:
        """Invariants a sound queue keeps: ``"ok"``, or what is broken.

        Every claimed case has a reviewer and a lease or legacy claim time,
        every resolved case an outcome, every answer a case, and no reviewer
        answered a case's review stage twice (the primary key).
        """
        problems = []
        checks = {
            "claimed cases without a reviewer": (
                "SELECT COUNT(*) AS n FROM cases WHERE status = 'claimed' AND reviewer IS NULL"
            ),
            "resolved cases without an outcome": (
                "SELECT COUNT(*) AS n FROM cases WHERE status = 'resolved' AND outcome IS NULL"
            ),
            "answers of unknown cases": (
                "SELECT COUNT(*) AS n FROM reviews r WHERE NOT EXISTS "
                "(SELECT 1 FROM cases c WHERE c.decision_id = r.decision_id)"
            ),
            "pending cases holding a lease": (
                "SELECT COUNT(*) AS n FROM cases WHERE status = 'pending' AND lease_id IS NOT NULL"
            ),
        }
        for what, sql in checks.items():
            n = int(self._read(sql)[0]["n"])
            if n:
                problems.append(f"{n} {what}")
        return "; ".join(problems) or "ok"


def _close_all(conns: list[Any]) -> None:
    while conns:
        conn = conns.pop()
        with contextlib.suppress(Exception):  # the server may already be gone
            conn.close()
