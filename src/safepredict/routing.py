"""Hand review/abstain cases (and audit samples) to humans, and get their answers back.

Layer 2: imports only the standard library and layers 0/1. The predictor builds
one JSON-safe *case* per routed row (:func:`build_cases`) and hands the batch to a
:class:`Router`, which writes it to a *sink*:

- :class:`SQLiteReviewQueue` -- the embedded default (stdlib ``sqlite3``, WAL
  mode), with the reviewer API (``pending``, ``claim``, ``resolve``, ...);
- :class:`JSONLSink` -- one JSON object per case appended to a file;
- :class:`CallableSink` -- any Python callable.

A sink failure never fails a decision: the router retries a bounded number of
times, then spools the batch to a local JSONL file (replayed with
:meth:`Router.flush_spool`) and reports ``"spooled"`` (or ``"failed"`` when even
the spool cannot be written) as the route status of each case.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import describe
from safepredict.decisions import Decisions, to_builtin
from safepredict.exceptions import CaseNotFoundError, ConfigError, ReviewQueueError

__all__ = [
    "CallableSink",
    "JSONLSink",
    "Router",
    "SQLiteReviewQueue",
    "Sink",
    "build_cases",
    "row_inputs",
    "utc_now",
]

_QUEUE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_STATUSES = ("pending", "claimed", "resolved")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds (sorts as text).

    Examples
    --------
    >>> utc_now().endswith("+00:00")
    True
    """
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str:
    """Strict JSON; numpy values and non-finite floats are converted only when present."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(to_builtin(value), ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------------- cases
def row_inputs(
    X: Any, rows: NDArray[np.intp], feature_names: Sequence[str], redact: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The raw inputs of ``rows`` as JSON-safe dicts, without the ``redact`` columns.

    Parameters
    ----------
    X : ndarray or DataFrame
        The batch as the model received it.
    rows : ndarray of int
        Row positions to extract.
    feature_names : sequence of str
        Column names (``x0, x1, ...`` for unnamed arrays).
    redact : sequence of str
        Columns never written.

    Examples
    --------
    >>> row_inputs(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1]), ["a", "b"], ["b"])
    [{'a': 3.0}]
    """
    hidden = set(redact)
    keep = [j for j, name in enumerate(feature_names) if name not in hidden]
    if hasattr(X, "iloc"):
        values = X.iloc[rows].to_numpy(dtype=object)
    else:
        values = np.asarray(X, dtype=object)[rows]
    return [
        {str(feature_names[j]): to_builtin(values[r, j]) for j in keep} for r in range(len(rows))
    ]


def build_cases(
    decisions: Decisions,
    rows: NDArray[np.intp],
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    inputs_hash: Sequence[str] | NDArray[Any] | None = None,
    top_k: int = 5,
) -> list[dict[str, Any]]:
    """One JSON-safe case per routed row: what the human review queue receives.

    Keys: ``decision_id, created_at, model_name, model_version, tier, action,
    reasons, prediction, prediction_set, interval, confidence, explanation``
    (the ``top_k`` contributions, or None), ``inputs`` (only when given, i.e.
    opted in), ``inputs_hash`` and ``audit``.

    Examples
    --------
    >>> d = Decisions(
    ...     predictions=np.array([1, 0], dtype=object), tier_codes=np.array([0, 1]),
    ...     tier_names=("auto", "human"), actions=np.array(["accept", "abstain"], dtype=object),
    ...     reasons=[(), ("empty_set",)], confidence=np.array([0.99, np.nan]), batch_id="b")
    >>> case = build_cases(d, np.array([1]), model_name="m")[0]
    >>> case["decision_id"], case["action"], case["reasons"], case["confidence"]
    ('b-1', 'abstain', ['empty_set'], None)
    """
    now = utc_now()
    cases: list[dict[str, Any]] = []
    for k, i in enumerate(np.asarray(rows, dtype=np.intp).tolist()):
        d = decisions[i]
        explanation = None
        if d.explanation is not None:
            explanation = d.explanation.to_dict(top_k=top_k)
        cases.append(
            {
                "decision_id": d.decision_id,
                "created_at": now,
                "model_name": model_name,
                "model_version": model_version,
                "tier": d.tier,
                "action": d.action,
                "reasons": list(d.reasons),
                "prediction": to_builtin(d.prediction),
                "prediction_set": to_builtin(d.prediction_set),
                "interval": to_builtin(d.interval),
                "confidence": to_builtin(d.confidence),
                "explanation": explanation,
                "inputs": None if inputs is None else dict(inputs[k]),
                "inputs_hash": None if inputs_hash is None else str(inputs_hash[k]),
                "audit": d.audit,
            }
        )
    return cases


# ---------------------------------------------------------------------- sinks
@runtime_checkable
class Sink(Protocol):
    """What a router writes to: anything with ``name`` and ``write_batch``."""

    name: str

    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Write every case or raise (all-or-nothing is the sink's best effort)."""


class CallableSink:
    """Send each case (a JSON-safe dict) to a Python callable.

    Parameters
    ----------
    fn : callable
        Called as ``fn(case)`` per case, or ``fn(cases)`` once per batch when
        ``batch=True``. Anything it raises counts as a sink failure.
    batch : bool, default=False
        Pass the whole batch in one call.

    Examples
    --------
    >>> seen = []
    >>> sink = CallableSink(seen.append)
    >>> sink.write_batch([{"decision_id": "a"}])
    >>> seen
    [{'decision_id': 'a'}]
    """

    def __init__(self, fn: Callable[..., Any], *, batch: bool = False) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableSink needs a callable; got {describe(fn)}.")
        self.fn = fn
        self.batch = batch
        self.name = f"callable:{getattr(fn, '__qualname__', type(fn).__name__)}"

    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Call the function."""
        if self.batch:
            self.fn(list(cases))
            return
        for case in cases:
            self.fn(case)


class JSONLSink:
    """Append each case as one JSON line to a file.

    Durability policy: a batch is written with a single ``write`` on a file
    opened in append mode (``O_APPEND``, so concurrent writers in several
    processes never interleave inside a line), then flushed and, with
    ``fsync=True`` (the default), ``os.fsync``-ed before :meth:`write_batch`
    returns: once ``decide`` returns, its cases survive a crash of the process
    and of the machine. ``fsync=False`` trades that for speed (a process crash
    still loses nothing already written; a power cut may).

    Parameters
    ----------
    path : str or path
        The ``.jsonl`` file (created if missing).
    fsync : bool, default=True
        ``fsync`` after every batch.

    Examples
    --------
    >>> import tempfile
    >>> sink = JSONLSink(tempfile.mkdtemp() + "/cases.jsonl")
    >>> sink.write_batch([{"decision_id": "a", "note": "it's"}])
    >>> sink.read()
    [{'decision_id': 'a', 'note': "it's"}]
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.name = f"jsonl:{self.path}"

    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Append the cases (one line each) in one write."""
        _append_jsonl(self.path, cases, fsync=self.fsync)

    def read(self) -> list[dict[str, Any]]:
        """Every case in the file, in write order."""
        return _read_jsonl(self.path)

    @property
    def outcomes_path(self) -> Path:
        """Where :meth:`record_outcome` appends (``<stem>.outcomes.jsonl``)."""
        return self.path.with_name(self.path.stem + ".outcomes.jsonl")

    def record_outcome(self, decision_id: str, outcome: Any, *, source: str = "external") -> str:
        """Append ``{decision_id, outcome, source, recorded_at}`` to :attr:`outcomes_path`."""
        row = {
            "decision_id": str(decision_id),
            "outcome": to_builtin(outcome),
            "source": source,
            "recorded_at": utc_now(),
        }
        _append_jsonl(self.outcomes_path, [row], fsync=self.fsync)
        return "external"


def _append_jsonl(path: Path, rows: Sequence[Mapping[str, Any]], *, fsync: bool) -> None:
    data = "".join(_dumps(r) + "\n" for r in rows).encode("utf-8")
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
    return out


# ------------------------------------------------------------- SQLite queue
_SCHEMA = """
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
_INSERT = (
    f"INSERT INTO cases ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (decision_id) DO NOTHING"
)


def _case_params(case: Mapping[str, Any]) -> tuple[Any, ...]:
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
                out.append(_dumps(list(value or ())))
            else:
                out.append(None if value is None else _dumps(value))
        elif col == "confidence":
            out.append(None if value is None else float(value))
        elif col == "audit":
            out.append(1 if value else 0)
        else:
            out.append(None if value is None else str(value))
    return tuple(out)


def _row_to_case(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118  # sqlite3.Row is not iterable by key
        value = row[key]
        if key in _JSON_COLUMNS or key == "outcome":
            value = None if value is None else json.loads(value)
        elif key == "audit":
            value = bool(value)
        out[key] = value
    return out


def _has_reason(reasons: Sequence[str], reason: str) -> bool:
    """A reason matches itself and its qualified forms (``ood`` ~ ``ood:x``)."""
    return any(r == reason or r.startswith(reason + ":") for r in reasons)


def _cutoff(older_than: Any) -> str:
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
    timeout : float, default=10.0
        Seconds to wait for a lock held by another writer before failing (the
        router then retries, then spools: keep it short on a latency-bound path).

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
        self, path: str | os.PathLike[str], *, durable: bool = True, timeout: float = 10.0
    ) -> None:
        self.path = Path(path)
        self.durable = bool(durable)
        self.timeout = float(timeout)
        self.name = f"sqlite:{self.path}"
        self._init_local()

    def _init_local(self) -> None:
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        # close this object's connections when it is garbage collected
        weakref.finalize(self, _close_all, self._conns)

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
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
        conn.executescript(_SCHEMA)
        self._local.conn = conn
        self._local.pid = os.getpid()
        with self._conns_lock:
            self._conns.append(conn)
        return conn

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

    def close(self) -> None:
        """Close every connection this object opened (they reopen lazily on next use)."""
        with self._conns_lock:
            _close_all(self._conns)
        self._local = threading.local()

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        rows = self._conn().execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    # -------------------------------------------------------------- writes
    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Insert the cases in one transaction (a case already present is kept as is)."""
        if not cases:
            return
        params = [_case_params(c) for c in cases]
        with self._write() as conn:
            conn.executemany(_INSERT, params)

    def enqueue(self, case: Mapping[str, Any]) -> None:
        """Insert one case (its own transaction)."""
        self.write_batch([case])

    # -------------------------------------------------------------- reads
    def get(self, decision_id: str) -> dict[str, Any] | None:
        """The case with this id (every column, JSON decoded), or None."""
        row = (
            self._conn()
            .execute("SELECT * FROM cases WHERE decision_id = ?", (str(decision_id),))
            .fetchone()
        )
        return None if row is None else _row_to_case(row)

    def _require(self, decision_id: str) -> dict[str, Any]:
        case = self.get(decision_id)
        if case is None:
            raise CaseNotFoundError(
                f"no case with decision_id {decision_id!r} in {self.path}; list the queue "
                "with queue.pending() or `safepredict review list`."
            )
        return case

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
            if status not in _STATUSES:
                raise ConfigError(f"status must be one of {_STATUSES}; got {describe(status)}.")
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
            params.append(_dumps(str(reason))[:-1])
        if older_than is not None:
            where.append("created_at < ?")
            params.append(_cutoff(older_than))
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
            case = _row_to_case(row)
            if reason is not None and not _has_reason(case["reasons"], str(reason)):
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

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of cases per tier and status: ``{tier: {status: n}}``.

        Every status appears (zero when empty); the key ``"*"`` totals all tiers.
        """
        rows = (
            self._conn()
            .execute("SELECT tier, status, COUNT(*) FROM cases GROUP BY tier, status")
            .fetchall()
        )
        out: dict[str, dict[str, int]] = {"*": dict.fromkeys(_STATUSES, 0)}
        for tier, status, n in rows:
            out.setdefault(tier, dict.fromkeys(_STATUSES, 0))[status] = int(n)
            out["*"][status] += int(n)
        return out

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM cases").fetchone()[0])

    # ---------------------------------------------------------- reviewers
    def claim(self, reviewer: str, tier: str | None = None) -> dict[str, Any] | None:
        """Atomically claim the oldest pending case (of ``tier``), or None if none is left.

        Two reviewers -- in threads or processes -- never get the same case.
        """
        reviewer = _check_reviewer(reviewer)
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
        return None if row is None else _row_to_case(row)

    def claim_case(self, decision_id: str, reviewer: str) -> dict[str, Any]:
        """Claim one given case; it must be pending (or already claimed by ``reviewer``)."""
        reviewer = _check_reviewer(reviewer)
        with self._write() as conn:
            row = conn.execute(
                "UPDATE cases SET status = 'claimed', reviewer = ?, claimed_at = ? "
                "WHERE decision_id = ? AND (status = 'pending' OR "
                "(status = 'claimed' AND reviewer = ?)) RETURNING *",
                (reviewer, utc_now(), str(decision_id), reviewer),
            ).fetchone()
        if row is not None:
            return _row_to_case(row)
        case = self._require(decision_id)
        raise ReviewQueueError(
            f"case {decision_id!r} cannot be claimed by {reviewer!r}: it is {case['status']}"
            + (f" by {case['reviewer']!r}" if case["reviewer"] else "")
            + ". Only pending cases can be claimed; pick another with queue.claim(reviewer)."
        )

    def release(self, decision_id: str, reviewer: str) -> dict[str, Any]:
        """Give a claimed case back to the pending pool (only its reviewer can)."""
        reviewer = _check_reviewer(reviewer)
        with self._write() as conn:
            row = conn.execute(
                "UPDATE cases SET status = 'pending', reviewer = NULL, claimed_at = NULL "
                "WHERE decision_id = ? AND status = 'claimed' AND reviewer = ? RETURNING *",
                (str(decision_id), reviewer),
            ).fetchone()
        if row is not None:
            return _row_to_case(row)
        case = self._require(decision_id)
        raise ReviewQueueError(
            f"case {decision_id!r} is {case['status']}"
            + (f" by {case['reviewer']!r}" if case["reviewer"] else "")
            + f"; only the reviewer who claimed it can release it (got {reviewer!r})."
        )

    def resolve(
        self, decision_id: str, outcome: Any, reviewer: str, note: str | None = None
    ) -> dict[str, Any]:
        """Record the reviewer's outcome (e.g. the true label) and close the case.

        Only the reviewer who claimed the case can resolve it.

        Raises
        ------
        CaseNotFoundError
            No such case.
        ReviewQueueError
            The case is pending (claim it first), claimed by someone else, or
            already resolved.
        """
        reviewer = _check_reviewer(reviewer)
        with self._write() as conn:
            row = conn.execute(
                "UPDATE cases SET status = 'resolved', outcome = ?, outcome_source = 'review', "
                "note = ?, resolved_at = ? "
                "WHERE decision_id = ? AND status = 'claimed' AND reviewer = ? RETURNING *",
                (
                    _dumps(outcome),
                    None if note is None else str(note),
                    utc_now(),
                    str(decision_id),
                    reviewer,
                ),
            ).fetchone()
        if row is not None:
            return _row_to_case(row)
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

    def record_outcome(self, decision_id: str, outcome: Any, *, source: str = "external") -> str:
        """Store an outcome that arrived by another path (e.g. the realized label).

        If the decision is a case in the queue, its outcome is set and it is
        resolved (a reviewer's earlier outcome is replaced; the reviewer is kept).
        Otherwise (an accepted row that was not routed) the outcome goes to the
        ``external_outcomes`` table. Returns ``"case"`` or ``"external"``.
        """
        payload = _dumps(outcome)
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
        reasons, prediction, prediction_set, interval, confidence, inputs,
        inputs_hash, model_name, model_version, created_at, resolved_at,
        reviewer``. With ``include_external=True``, outcomes recorded for
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
        rows = self._conn().execute(sql, params).fetchall()
        for row in rows:
            case = _row_to_case(row)
            yield {k: case[k] for k in keep}
        if include_external and not audited_only and tier is None:
            ext = self._conn().execute(
                "SELECT * FROM external_outcomes ORDER BY recorded_at, rowid"
            )
            for row in ext.fetchall():
                item: dict[str, Any] = dict.fromkeys(keep)
                item.update(
                    decision_id=row["decision_id"],
                    outcome=json.loads(row["outcome"]),
                    outcome_source=row["source"],
                    audit=False,
                    resolved_at=row["recorded_at"],
                )
                yield item

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
                _write_export(fh, cases, format)
        else:
            _write_export(dest, cases, format)
        return len(cases)


def _write_export(fh: IO[str], cases: list[dict[str, Any]], format: str) -> None:
    if format == "jsonl":
        for case in cases:
            fh.write(_dumps(case) + "\n")
        return
    columns = (*_COLUMNS, "status", "reviewer", "claimed_at", "resolved_at", "outcome", "note")
    writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for case in cases:
        row = {
            k: (_dumps(case.get(k)) if k in (*_JSON_COLUMNS, "outcome") else case.get(k))
            for k in columns
        }
        writer.writerow(row)


def _close_all(conns: list[sqlite3.Connection]) -> None:
    while conns:
        conn = conns.pop()
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def _check_reviewer(reviewer: Any) -> str:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ConfigError(
            f"reviewer must be a non-empty string (who is reviewing); got {describe(reviewer)}."
        )
    return reviewer


# ---------------------------------------------------------------------- router
class Router:
    """Write routed cases to a sink; retry, then spool, never raise.

    Parameters
    ----------
    sink : Sink, callable or path
        Where cases go (see :meth:`coerce` for what is accepted).
    retries : int, default=2
        Extra attempts after a failed write (so ``retries + 1`` in total).
    retry_delay_s : float, default=0.01
        Sleep before the first retry; doubled before each further one.
    spool : str or path, optional
        JSONL file that receives batches the sink refused. Default:
        ``<sink path>.spool.jsonl`` for file sinks; none for callables (their
        failed cases get status ``"failed"``).

    Attributes
    ----------
    failures : int
        Cases whose sink write failed after every retry (spooled or not).
    spooled : int
        Cases written to the spool.
    last_error : str or None
        The last sink error, ``"<type>: <message>"``.

    Examples
    --------
    >>> got = []
    >>> router = Router(got.append)
    >>> router.route([{"decision_id": "a", "audit": False}])
    [{'sink': 'callable:list.append', 'status': 'queued', 'audit': False}]
    """

    def __init__(
        self,
        sink: Any,
        *,
        retries: int = 2,
        retry_delay_s: float = 0.01,
        spool: str | os.PathLike[str] | None = None,
    ) -> None:
        self.sink: Sink = _coerce_sink(sink)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be an integer >= 0; got {describe(retries)}.")
        self.retries = retries
        self.retry_delay_s = float(retry_delay_s)
        if spool is None and isinstance(getattr(self.sink, "path", None), Path):
            sink_path: Path = self.sink.path  # type: ignore[attr-defined]  # checked above
            spool = sink_path.with_name(sink_path.name + ".spool.jsonl")
        self.spool: Path | None = None if spool is None else Path(spool)
        self.failures = 0
        self.spooled = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Router({self.sink.name!r}, failures={self.failures})"

    @classmethod
    def coerce(cls, router: Any) -> Router:
        """A Router from a Router, a sink, a callable or a path.

        Paths ending in ``.db``/``.sqlite``/``.sqlite3`` open a
        :class:`SQLiteReviewQueue`; ``.jsonl``/``.ndjson`` a :class:`JSONLSink`.

        Examples
        --------
        >>> Router.coerce("reviews.jsonl").sink.name
        'jsonl:reviews.jsonl'
        """
        if isinstance(router, Router):
            return router
        return cls(router)

    @property
    def queue(self) -> SQLiteReviewQueue | None:
        """The sink when it is a :class:`SQLiteReviewQueue`, else None."""
        return self.sink if isinstance(self.sink, SQLiteReviewQueue) else None

    def route(self, cases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Write the cases in one batch; return one route status per case. Never raises.

        Each status is ``{"sink", "status", "audit"}`` with status ``"queued"``
        (the sink has it), ``"spooled"`` (the sink failed; the case is in the
        spool file) or ``"failed"`` (neither worked; ``"error"`` says why).
        """
        if not cases:
            return []
        error: BaseException | None = None
        delay = self.retry_delay_s
        for attempt in range(self.retries + 1):
            try:
                self.sink.write_batch(cases)
            except Exception as exc:  # any sink failure is retried, then spooled
                error = exc
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                continue
            return [self._status(c, "queued") for c in cases]
        message = f"{type(error).__name__}: {error}"
        status = "failed"
        if self.spool is not None:
            try:
                _append_jsonl(self.spool, cases, fsync=True)
                status = "spooled"
            except Exception as exc:  # the spool failing too leaves status "failed"
                message += f"; spool failed: {type(exc).__name__}: {exc}"
        with self._lock:
            self.failures += len(cases)
            if status == "spooled":
                self.spooled += len(cases)
            self.last_error = message
        return [self._status(c, status, message) for c in cases]

    def report_failure(self, audits: Sequence[bool], error: BaseException) -> list[dict[str, Any]]:
        """Count cases that could not even be built and return their ``"failed"`` statuses."""
        message = f"{type(error).__name__}: {error}"
        with self._lock:
            self.failures += len(audits)
            self.last_error = message
        return [self._status({"audit": a}, "failed", message) for a in audits]

    def _status(
        self, case: Mapping[str, Any], status: str, error: str | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sink": self.sink.name,
            "status": status,
            "audit": bool(case.get("audit", False)),
        }
        if error is not None:
            out["error"] = error
        return out

    def flush_spool(self) -> int:
        """Replay the spooled cases into the sink; return how many were replayed.

        The spool is moved aside first (so cases spooled meanwhile are kept for
        the next flush); if the sink still fails, the cases go back to the spool
        and the error is raised.
        """
        if self.spool is None:
            return 0
        replay = self.spool.with_name(self.spool.name + f".replay-{os.getpid()}")
        with self._lock:
            if replay.exists():
                pending = replay.read_bytes()
                replay.unlink()
                with self.spool.open("ab") as fh:
                    fh.write(pending)
            try:
                os.replace(self.spool, replay)
            except FileNotFoundError:
                return 0
            cases = _read_jsonl(replay)
            try:
                self.sink.write_batch(cases)
            except Exception:
                _append_jsonl(self.spool, cases, fsync=True)
                replay.unlink()
                raise
            replay.unlink()
        return len(cases)

    def spooled_cases(self) -> list[dict[str, Any]]:
        """The cases currently waiting in the spool."""
        return [] if self.spool is None else _read_jsonl(self.spool)

    def record_outcome(self, decision_id: str, outcome: Any, *, source: str = "external") -> str:
        """Store an outcome with the sink (queue table or ``.outcomes.jsonl``)."""
        record = getattr(self.sink, "record_outcome", None)
        if record is None:
            raise ConfigError(
                f"the router's sink {self.sink.name!r} cannot store outcomes; route to a "
                "SQLiteReviewQueue or a .jsonl path, or store outcomes yourself."
            )
        return str(record(decision_id, outcome, source=source))


def _coerce_sink(sink: Any) -> Sink:
    if isinstance(sink, str | os.PathLike):
        path = Path(sink)
        suffix = path.suffix.lower()
        if suffix in _QUEUE_SUFFIXES:
            return SQLiteReviewQueue(path)
        if suffix in _JSONL_SUFFIXES:
            return JSONLSink(path)
        raise ConfigError(
            f"router path {str(path)!r} has an unknown suffix; use '.db'/'.sqlite' for a "
            "SQLite review queue or '.jsonl' for a JSON-lines file."
        )
    if isinstance(sink, Sink) and not isinstance(sink, type):
        return sink
    if callable(sink):
        return CallableSink(sink)
    raise ConfigError(
        "router must be a Router, a SQLiteReviewQueue, a sink with write_batch(cases), a "
        f"callable or a path ('.db', '.sqlite', '.jsonl'); got {describe(sink)}."
    )
