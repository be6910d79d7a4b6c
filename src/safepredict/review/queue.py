"""The embedded review queue: SQLite in WAL mode, with the reviewer API."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

from safepredict._jsonl import dumps
from safepredict._validation import describe
from safepredict.exceptions import (
    CaseNotFoundError,
    ConfigError,
    QueueVersionError,
    ReviewQueueError,
)
from safepredict.review._sqlite import (
    INSERT,
    MIGRATE_V1,
    MIGRATE_V2,
    SCHEMA_VERSION,
    STATUSES,
    TABLES,
    case_params,
    check_reviewer,
    close_all,
    cutoff,
    has_reason,
    row_to_case,
    statements,
    translate_error,
    write_export,
)
from safepredict.review.cases import utc_now
from safepredict.review.outcomes import OutcomeSpace, check_outcome

_UPSERT_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _sql(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn any ``sqlite3.Error`` raised by a queue method into a ReviewQueueError subclass."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            queue = args[0]
            raise translate_error(
                exc, getattr(queue, "path", "?"), getattr(queue, "timeout", 0.0)
            ) from exc

    return wrapper


class SQLiteReviewQueue:
    """The embedded human review queue: one SQLite file, safe across threads and processes.

    Every routed case is one row of the ``cases`` table, ``pending`` until a
    reviewer claims it (``claimed``) and resolves it with an outcome
    (``resolved``). The database runs in WAL mode; each batch of cases is one
    transaction; claims are atomic (``BEGIN IMMEDIATE`` plus a single
    ``UPDATE ... WHERE status = 'pending' RETURNING``), so two reviewers or
    processes never get the same case. All SQL is parameterized.

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

    Raises
    ------
    ReviewQueueError
        A subclass naming what to do, for every SQLite failure of every method:
        ``QueueLockedError``, ``QueueReadOnlyError``, ``QueueFullError``,
        ``QueueCorruptError``, ``QueueVersionError`` (a file written by a newer
        safepredict). A 0.1.0 queue file is migrated in place on first use.

    Examples
    --------
    >>> import tempfile
    >>> q = SQLiteReviewQueue(tempfile.mkdtemp() + "/reviews.db")
    >>> q.enqueue({"decision_id": "d-1", "tier": "human", "action": "abstain",
    ...            "reasons": ["empty_set"], "prediction": 2})
    >>> [c["decision_id"] for c in q.pending()]
    ['d-1']
    >>> q.claim("ana")["decision_id"]
    'd-1'
    >>> q.resolve("d-1", outcome=1, reviewer="ana", note="label was 1")["status"]
    'resolved'
    >>> [(o["decision_id"], o["outcome"]) for o in q.outcomes()]
    [('d-1', 1)]
    """

    def __init__(
        self, path: str | os.PathLike[str], *, durable: bool = True, timeout: float = 1.0
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
        return {"path": self.path, "durable": self.durable, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.durable = state["durable"]
        self.timeout = state["timeout"]
        self.name = f"sqlite:{self.path}"
        self._init_local()

    def __repr__(self) -> str:
        return f"SQLiteReviewQueue({str(self.path)!r})"

    # -------------------------------------------------------- connections
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
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
        """Create the schema, migrate a 0.1.0 file, refuse a newer one (``user_version``)."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
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
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version < SCHEMA_VERSION:  # another process may have migrated meanwhile
                for statement in statements(TABLES + MIGRATE_V1):
                    conn.execute(statement)
                columns = {r[1] for r in conn.execute("PRAGMA table_info(cases)")}
                if "audit_probability" not in columns:
                    conn.execute(MIGRATE_V2)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # keep the original error
                    conn.execute("ROLLBACK")
            raise

    @_sql
    def close(self) -> None:
        """Close every connection this object opened (they reopen lazily on next use)."""
        with self._conns_lock:
            close_all(self._conns)
        self._local = threading.local()

    @_sql
    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        rows = self._conn().execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    # -------------------------------------------------------------- writes
    @_sql
    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Insert the cases in one transaction (a case already present is kept as is)."""
        if not cases:
            return
        params = [case_params(c) for c in cases]
        staged = dict(self._staged)
        with self._write() as conn:
            conn.executemany(INSERT, params)
            for key, text in staged.items():  # in the same transaction: one lock wait
                conn.execute(_UPSERT_META, (key, text))
        for key, text in staged.items():
            self._meta_cache[key] = text
            if self._staged.get(key) == text:
                self._staged.pop(key, None)  # another thread may have done it

    def enqueue(self, case: Mapping[str, Any]) -> None:
        """Insert one case (its own transaction)."""
        self.write_batch([case])

    # -------------------------------------------------------------- reads
    @_sql
    def get(self, decision_id: str) -> dict[str, Any] | None:
        """The case with this id (every column, JSON decoded), or None."""
        row = (
            self._conn()
            .execute("SELECT * FROM cases WHERE decision_id = ?", (str(decision_id),))
            .fetchone()
        )
        return None if row is None else row_to_case(row)

    def _require(self, decision_id: str) -> dict[str, Any]:
        case = self.get(decision_id)
        if case is None:
            raise CaseNotFoundError(
                f"no case with decision_id {decision_id!r} in {self.path}; list the queue "
                "with queue.pending() or `safepredict review list`."
            )
        return case

    @_sql
    def _select(
        self,
        status: str | None,
        *,
        limit: int | None,
        tier: str | None,
        reason: str | None,
        older_than: Any,
        order: str = "created_at, rowid",
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            if status not in STATUSES:
                raise ConfigError(f"status must be one of {STATUSES}; got {describe(status)}.")
            where.append("status = ?")
            params.append(status)
        if tier is not None:
            where.append("tier = ?")
            params.append(str(tier))
        if reason is not None:
            # Pre-filter on the JSON text (a superset: the encoded reason without its
            # closing quote), then match exactly in Python, where embedded NULs and
            # LIKE wildcards cannot confuse the comparison.
            where.append("instr(reasons, ?) > 0")
            params.append(dumps(str(reason))[:-1])
        if older_than is not None:
            where.append("created_at < ?")
            params.append(cutoff(older_than))
        sql = "SELECT * FROM cases"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order}"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ConfigError(f"limit must be an integer >= 0; got {describe(limit)}.")
            if reason is None:
                sql += " LIMIT ?"
                params.append(limit)
        out: list[dict[str, Any]] = []
        for row in self._conn().execute(sql, params):
            case = row_to_case(row)
            if reason is not None and not has_reason(case["reasons"], str(reason)):
                continue
            out.append(case)
            if limit is not None and len(out) >= limit:
                break
        return out

    def pending(
        self,
        limit: int | None = 50,
        tier: str | None = None,
        reason: str | None = None,
        older_than: Any = None,
    ) -> list[dict[str, Any]]:
        """Pending cases, oldest first.

        Parameters
        ----------
        limit : int or None, default=50
            At most this many (None: all).
        tier : str, optional
            Only this tier.
        reason : str, optional
            Only cases with this reason code (``"out_of_range"`` also matches
            ``"out_of_range:age"``).
        older_than : timedelta, float seconds or datetime, optional
            Only cases created more than this long ago (or before this moment).
        """
        return self._select("pending", limit=limit, tier=tier, reason=reason, older_than=older_than)

    def cases(
        self,
        status: str | None = None,
        *,
        limit: int | None = None,
        tier: str | None = None,
        reason: str | None = None,
    ) -> list[dict[str, Any]]:
        """Cases in any (or the given) status, oldest first."""
        return self._select(status, limit=limit, tier=tier, reason=reason, older_than=None)

    @_sql
    def counts(self) -> dict[str, dict[str, int]]:
        """Number of cases per tier and status: ``{tier: {status: n}}``.

        Every status appears (zero when empty); the key ``"*"`` totals all tiers.
        """
        rows = (
            self._conn()
            .execute("SELECT a, b, n FROM tally WHERE kind = 'status' AND n != 0")
            .fetchall()
        )
        out: dict[str, dict[str, int]] = {"*": dict.fromkeys(STATUSES, 0)}
        for tier, status, n in rows:
            if status not in STATUSES:
                continue
            out.setdefault(tier, dict.fromkeys(STATUSES, 0))[status] = int(n)
            out["*"][status] += int(n)
        return out

    @_sql
    def summary(self) -> dict[str, Any]:
        """Counts, cases resolved on ``today`` (UTC) and the audit tally, read in O(tiers).

        Returns ``{"counts": counts(), "resolved_today": int, "audit_n": int,
        "audit_errors": int}``: ``audit_*`` count resolved audit samples of
        accepted rows and those whose outcome differs from the prediction. Kept
        by triggers as cases change, so no case is read.

        Examples
        --------
        >>> import tempfile
        >>> q = SQLiteReviewQueue(tempfile.mkdtemp() + "/q.db")
        >>> q.summary()["resolved_today"]
        0
        """
        today = utc_now()[:10]
        conn = self._conn()
        rows = conn.execute(
            "SELECT kind, a, n FROM tally WHERE (kind = 'resolved_on' AND a = ?) OR kind = 'audit'",
            (today,),
        ).fetchall()
        found = {(kind, a): int(n) for kind, a, n in rows}
        return {
            "counts": self.counts(),
            "resolved_today": found.get(("resolved_on", today), 0),
            "audit_n": found.get(("audit", "n"), 0),
            "audit_errors": found.get(("audit", "errors"), 0),
        }

    # ------------------------------------------------------- outcome space
    @_sql
    def set_outcome_space(self, space: OutcomeSpace) -> None:
        """Record what a valid outcome is (the predictor does this when it routes).

        Written once per queue object (and again only if the space changes).
        """
        if not isinstance(space, OutcomeSpace):
            raise ConfigError(f"space must be an OutcomeSpace; got {describe(space)}.")
        if self._meta_cache.get("outcome_space") != space.to_json():
            self._set_meta("outcome_space", space.to_json())

    @_sql
    def outcome_space(self) -> OutcomeSpace | None:
        """The outcome space the predictor recorded, or None (no predictor routed here yet)."""
        text = self._get_meta("outcome_space")
        return None if text is None else OutcomeSpace.from_json(text)

    @_sql
    def set_tiers(self, tiers: Sequence[Mapping[str, Any]]) -> None:
        """Record the tier policy's tiers (``TierPolicy.to_dict()["tiers"]``) for the console.

        The console words each case's "why" from its tier's rule.
        """
        text = dumps([dict(t) for t in tiers])
        if self._meta_cache.get("tiers") != text:
            self._set_meta("tiers", text)

    @_sql
    def tiers(self) -> list[dict[str, Any]] | None:
        """The tiers the predictor recorded (see :meth:`set_tiers`), or None."""
        text = self._get_meta("tiers")
        try:
            value = None if text is None else json.loads(text)
        except (ValueError, RecursionError):
            return None
        if isinstance(value, list) and all(isinstance(t, dict) for t in value):
            return value
        return None

    def set_context(
        self, space: OutcomeSpace | None, tiers: Sequence[Mapping[str, Any]] | None
    ) -> None:
        """Stage the outcome space and tiers; the next :meth:`write_batch` stores them.

        No I/O here: the router calls this before each batch, and the metadata is
        written (only when it changed) in the batch's own transaction, so a locked
        queue costs one busy timeout, not two.
        """
        if space is not None and self._meta_cache.get("outcome_space") != space.to_json():
            self._staged["outcome_space"] = space.to_json()
        if tiers is not None:
            text = dumps([dict(t) for t in tiers])
            if self._meta_cache.get("tiers") != text:
                self._staged["tiers"] = text

    def _set_meta(self, key: str, text: str) -> None:
        with self._write() as conn:
            conn.execute(_UPSERT_META, (key, text))
        self._meta_cache[key] = text

    def _get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        text = None if row is None else str(row[0])
        if text is not None:
            self._meta_cache[key] = text
        return text

    @_sql
    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM cases").fetchone()[0])

    # ---------------------------------------------------------- reviewers
    @_sql
    def claim(self, reviewer: str, tier: str | None = None) -> dict[str, Any] | None:
        """Atomically claim the oldest pending case (of ``tier``), or None if none is left.

        Two reviewers -- in threads or processes -- never get the same case.
        """
        reviewer = check_reviewer(reviewer)
        sql = (
            "UPDATE cases SET status = 'claimed', reviewer = ?, claimed_at = ? "
            "WHERE rowid = (SELECT rowid FROM cases WHERE status = 'pending'"
            + (" AND tier = ?" if tier is not None else "")
            + " ORDER BY created_at, rowid LIMIT 1) AND status = 'pending' RETURNING *"
        )
        params: list[Any] = [reviewer, utc_now()]
        if tier is not None:
            params.append(str(tier))
        with self._write() as conn:
            row = conn.execute(sql, params).fetchone()
        return None if row is None else row_to_case(row)

    @_sql
    def claim_case(self, decision_id: str, reviewer: str) -> dict[str, Any]:
        """Claim one given case; it must be pending (or already claimed by ``reviewer``)."""
        reviewer = check_reviewer(reviewer)
        with self._write() as conn:
            row = conn.execute(
                "UPDATE cases SET status = 'claimed', reviewer = ?, claimed_at = ? "
                "WHERE decision_id = ? AND (status = 'pending' OR "
                "(status = 'claimed' AND reviewer = ?)) RETURNING *",
                (reviewer, utc_now(), str(decision_id), reviewer),
            ).fetchone()
        if row is not None:
            return row_to_case(row)
        case = self._require(decision_id)
        raise ReviewQueueError(
            f"case {decision_id!r} cannot be claimed by {reviewer!r}: it is {case['status']}"
            + (f" by {case['reviewer']!r}" if case["reviewer"] else "")
            + ". Only pending cases can be claimed; pick another with queue.claim(reviewer)."
        )

    @_sql
    def release(self, decision_id: str, reviewer: str) -> dict[str, Any]:
        """Give a claimed case back to the pending pool (only its reviewer can)."""
        reviewer = check_reviewer(reviewer)
        with self._write() as conn:
            row = conn.execute(
                "UPDATE cases SET status = 'pending', reviewer = NULL, claimed_at = NULL "
                "WHERE decision_id = ? AND status = 'claimed' AND reviewer = ? RETURNING *",
                (str(decision_id), reviewer),
            ).fetchone()
        if row is not None:
            return row_to_case(row)
        case = self._require(decision_id)
        raise ReviewQueueError(
            f"case {decision_id!r} is {case['status']}"
            + (f" by {case['reviewer']!r}" if case["reviewer"] else "")
            + f"; only the reviewer who claimed it can release it (got {reviewer!r})."
        )

    @_sql
    def resolve(
        self, decision_id: str, outcome: Any, reviewer: str, note: str | None = None
    ) -> dict[str, Any]:
        """Record the reviewer's outcome (e.g. the true label) and close the case.

        Only the reviewer who claimed the case can resolve it.

        The outcome is checked against the queue's outcome space (see
        :func:`~safepredict.review.outcomes.check_outcome`): one of the model's
        labels, or a finite number for regression.

        Raises
        ------
        InvalidOutcomeError
            The outcome is not a valid label / finite number (the message lists
            the valid choices).
        CaseNotFoundError
            No such case.
        ReviewQueueError
            The case is pending (claim it first), claimed by someone else, or
            already resolved.
        """
        reviewer = check_reviewer(reviewer)
        outcome = check_outcome(outcome, self.outcome_space())
        with self._write() as conn:
            row = conn.execute(
                "UPDATE cases SET status = 'resolved', outcome = ?, outcome_source = 'review', "
                "note = ?, resolved_at = ? "
                "WHERE decision_id = ? AND status = 'claimed' AND reviewer = ? RETURNING *",
                (
                    dumps(outcome),
                    None if note is None else str(note),
                    utc_now(),
                    str(decision_id),
                    reviewer,
                ),
            ).fetchone()
        if row is not None:
            return row_to_case(row)
        case = self._require(decision_id)
        if case["status"] == "pending":
            hint = f"it is pending: claim it first with queue.claim_case(id, {reviewer!r})"
        elif case["status"] == "claimed":
            hint = (
                f"it is claimed by {case['reviewer']!r}; only that reviewer can resolve it "
                "(or they can release it)"
            )
        else:
            hint = f"it was already resolved by {case['reviewer']!r} at {case['resolved_at']}"
        raise ReviewQueueError(f"{reviewer!r} cannot resolve case {decision_id!r}: {hint}.")

    @_sql
    def record_outcome(self, decision_id: str, outcome: Any, *, source: str = "external") -> str:
        """Store an outcome that arrived by another path (e.g. the realized label).

        If the decision is a case in the queue, its outcome is set and it is
        resolved (a reviewer's earlier outcome is replaced; the reviewer is kept).
        Otherwise (an accepted row that was not routed) the outcome goes to the
        ``external_outcomes`` table. Returns ``"case"`` or ``"external"``.
        The outcome is validated like :meth:`resolve`'s.
        """
        payload = dumps(check_outcome(outcome, self.outcome_space()))
        now = utc_now()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE cases SET status = 'resolved', outcome = ?, outcome_source = ?, "
                "resolved_at = ? WHERE decision_id = ?",
                (payload, source, now, str(decision_id)),
            )
            if cur.rowcount:
                return "case"
            conn.execute(
                "INSERT INTO external_outcomes (decision_id, outcome, source, recorded_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (decision_id) DO UPDATE SET "
                "outcome = excluded.outcome, source = excluded.source, "
                "recorded_at = excluded.recorded_at",
                (str(decision_id), payload, source, now),
            )
        return "external"

    def outcomes(
        self, *, audited_only: bool = False, tier: str | None = None, include_external: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Resolved cases with their outcome, in resolution order.

        Each item: ``decision_id, outcome, outcome_source, tier, action, audit,
        audit_probability, reasons, prediction, prediction_set, interval,
        confidence, inputs, inputs_hash, model_name, model_version, created_at,
        resolved_at, reviewer``. With ``include_external=True``, outcomes recorded for
        decisions that were never routed follow, with ``tier``/``action`` None.
        """
        sql = "SELECT * FROM cases WHERE status = 'resolved'"
        params: list[Any] = []
        if audited_only:
            sql += " AND audit = 1"
        if tier is not None:
            sql += " AND tier = ?"
            params.append(str(tier))
        sql += " ORDER BY resolved_at, rowid"
        keep = (
            "decision_id",
            "outcome",
            "outcome_source",
            "tier",
            "action",
            "audit",
            "audit_probability",
            "reasons",
            "prediction",
            "prediction_set",
            "interval",
            "confidence",
            "inputs",
            "inputs_hash",
            "model_name",
            "model_version",
            "created_at",
            "resolved_at",
            "reviewer",
        )
        rows, ext = self._fetch_outcomes(
            sql, params, include_external and not audited_only and tier is None
        )
        for row in rows:
            case = row_to_case(row)
            yield {k: case[k] for k in keep}
        for row in ext:
            item: dict[str, Any] = dict.fromkeys(keep)
            item.update(
                decision_id=row["decision_id"],
                outcome=json.loads(row["outcome"]),
                outcome_source=row["source"],
                audit=False,
                resolved_at=row["recorded_at"],
            )
            yield item

    @_sql
    def _fetch_outcomes(
        self, sql: str, params: list[Any], external: bool
    ) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
        conn = self._conn()
        rows = conn.execute(sql, params).fetchall()
        ext: list[sqlite3.Row] = []
        if external:
            ext = conn.execute(
                "SELECT * FROM external_outcomes ORDER BY recorded_at, rowid"
            ).fetchall()
        return rows, ext

    @_sql
    def export(self, dest: str | os.PathLike[str] | IO[str], format: str = "jsonl") -> int:
        """Write every case (any status) to a file or open text stream; return the count.

        ``format="jsonl"``: one JSON object per line. ``format="csv"``: one row
        per case, the JSON-valued columns (reasons, prediction, ...) as JSON text.
        """
        if format not in ("jsonl", "csv"):
            raise ConfigError(f"format must be 'jsonl' or 'csv'; got {describe(format)}.")
        cases = self.cases()
        if isinstance(dest, str | os.PathLike):
            with open(dest, "w", encoding="utf-8", newline="") as fh:
                write_export(fh, cases, format)
        else:
            write_export(dest, cases, format)
        return len(cases)
