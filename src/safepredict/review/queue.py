"""The embedded review queue: SQLite in WAL mode, with the reviewer API."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safepredict._validation import describe
from safepredict.exceptions import ConfigError, QueueVersionError, ReviewQueueError
from safepredict.review._codec import check_ttl
from safepredict.review._core import DEFAULT_LEASE_TTL, ReviewQueueCore
from safepredict.review._reads import guarded
from safepredict.review._sqlite import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SQLiteTx,
    close_all,
    dict_row,
    statements,
    translate_error,
)
from safepredict.review.cases import utc_now


class SQLiteReviewQueue(ReviewQueueCore):
    """The embedded human review queue: one SQLite file, safe across threads and processes.

    Every routed case is one row of the ``cases`` table, ``pending`` until a
    reviewer claims it (``claimed``, under a lease) and resolves it with an
    outcome (``resolved``). The database runs in WAL mode; each batch of cases is
    one transaction; claims are atomic (``BEGIN IMMEDIATE`` plus a single
    ``UPDATE ... WHERE status = 'pending' RETURNING``), so two reviewers or
    processes never get the same case. All SQL is parameterized.

    Leases: a claim holds the case for ``lease_ttl`` seconds (``heartbeat``
    extends it); an expired claim goes back to pending at the next claim, its
    reviewer kept as ``previous_reviewer``, and that reviewer can no longer
    resolve it. Tiers with ``reviews_required = k`` collect k distinct answers;
    the majority resolves the case, a tie goes to adjudication. The pending
    order follows the policy's ``review_priority``
    (:mod:`safepredict.review.priority`). The same API over PostgreSQL is
    :class:`~safepredict.review.PostgresReviewQueue`.

    Connections are opened lazily, one per thread (and per process), so the
    object can be shared by threads and pickled (the connections are not
    pickled; they are reopened on first use).

    Parameters
    ----------
    path : str or path
        The database file (created with its schema if missing).
    durable : bool, default=True
        ``PRAGMA synchronous = FULL``: a case whose write returned survives a
        power cut. ``False`` uses ``NORMAL`` (WAL): still survives a crash of the
        process, faster.
    timeout : float, default=1.0
        Seconds to wait for a lock held by another writer before failing with
        :class:`~safepredict.exceptions.QueueLockedError`. This bounds how long
        ``decide`` can stall on a locked queue: the router does not retry a
        locked queue, it spools the batch at once.
    lease_ttl : float, default=1800
        Seconds a claim holds its case unless extended with :meth:`heartbeat`.

    Raises
    ------
    ReviewQueueError
        A subclass naming what to do, for every SQLite failure of every method:
        ``QueueLockedError``, ``QueueReadOnlyError``, ``QueueFullError``,
        ``QueueCorruptError``, ``QueueVersionError`` (a file written by a newer
        safepredict). Files of older layouts are migrated in place on first use.

    Examples
    --------
    >>> import tempfile
    >>> q = SQLiteReviewQueue(tempfile.mkdtemp() + "/reviews.db")
    >>> q.enqueue({"decision_id": "d-1", "tier": "human", "action": "abstain",
    ...            "reasons": ["empty_set"], "prediction": 2})
    >>> [c["decision_id"] for c in q.pending()]
    ['d-1']
    >>> case = q.claim("ana", ttl=600)
    >>> case["decision_id"], case["lease_expires_at"] > case["claimed_at"]
    ('d-1', True)
    >>> q.resolve("d-1", outcome=1, reviewer="ana", note="label was 1")["status"]
    'resolved'
    >>> [(o["decision_id"], o["outcome"]) for o in q.outcomes()]
    [('d-1', 1)]
    """

    SEQ = "rowid"
    SKIP_LOCKED = ""  # BEGIN IMMEDIATE already serializes writers
    INSTR = "instr"
    _db_errors = (sqlite3.Error,)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        timeout: float = 1.0,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        self.path = Path(path)
        self.durable = bool(durable)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 <= timeout <= 3600
        ):
            raise ConfigError(
                f"timeout must be a number of seconds in [0, 3600]; got {describe(timeout)}."
            )
        self.timeout = float(timeout)
        self.lease_ttl = check_ttl(lease_ttl, "lease_ttl")
        self.name = f"sqlite:{self.path}"
        self._init_local()

    def _init_local(self) -> None:
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._meta_cache: dict[str, str] = {}
        self._staged: dict[str, str] = {}
        # close this object's connections when it is garbage collected
        weakref.finalize(self, close_all, self._conns)

    # pickling: drop connections, reopen lazily
    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "durable": self.durable,
            "timeout": self.timeout,
            "lease_ttl": self.lease_ttl,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.durable = state["durable"]
        self.timeout = state["timeout"]
        self.lease_ttl = state.get("lease_ttl", DEFAULT_LEASE_TTL)
        self.name = f"sqlite:{self.path}"
        self._init_local()

    def __repr__(self) -> str:
        return f"SQLiteReviewQueue({str(self.path)!r})"

    # -------------------------------------------------------- storage seam
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = dict_row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:  # a read-only file can still be read
                if "readonly" not in str(exc).lower():
                    raise
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        """Create the schema, migrate an older file, refuse a newer one (``user_version``)."""
        version = int(conn.execute("PRAGMA user_version").fetchone()["user_version"])
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise QueueVersionError(
                f"review queue {str(self.path)!r} has schema version {version}; this "
                f"safepredict reads versions up to {SCHEMA_VERSION}. Open it with the newer "
                "safepredict that wrote it (or export its cases there and start a new queue)."
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()["user_version"])
            applied = range(version + 1, SCHEMA_VERSION + 1)  # none if another process did
            for target in applied:
                for statement in statements(MIGRATIONS[target]):
                    conn.execute(statement)
            for target in applied:  # the table exists from version 2 on
                conn.execute(
                    "INSERT OR REPLACE INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (target, utc_now()),
                )
            conn.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _read(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        return list(self._conn().execute(sql, params).fetchall())

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[SQLiteTx]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield SQLiteTx(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # keep the original error
                    conn.execute("ROLLBACK")
            raise

    def _translate(self, exc: BaseException) -> ReviewQueueError:
        assert isinstance(exc, sqlite3.Error)  # db_errors
        return translate_error(exc, self.path, self.timeout)

    def _status_rows(self) -> list[tuple[str, str, int]]:
        rows = self._read("SELECT a, b, n FROM tally WHERE kind = 'status' AND n != 0")
        return [(r["a"], r["b"], int(r["n"])) for r in rows]

    def _summary_rows(self, today: str) -> dict[tuple[str, str], int]:
        rows = self._read(
            "SELECT kind, a, n FROM tally WHERE (kind = 'resolved_on' AND a = ?) OR kind = 'audit'",
            (today,),
        )
        return {(r["kind"], r["a"]): int(r["n"]) for r in rows}

    # ---------------------------------------------------------- the file
    @guarded
    def close(self) -> None:
        """Close every connection this object opened (they reopen lazily on next use)."""
        with self._conns_lock:
            close_all(self._conns)
        self._local = threading.local()

    @guarded
    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        rows = self._conn().execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(next(iter(r.values()))) for r in rows)
