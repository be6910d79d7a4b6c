"""The router: hands a batch of cases to a sink, retries, spools, never fails a decision."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safepredict._jsonl import append_jsonl, read_jsonl
from safepredict._validation import describe
from safepredict.exceptions import ConfigError, QueueLockedError
from safepredict.review._core import ReviewQueueCore
from safepredict.review._postgres import PostgresReviewQueue
from safepredict.review.outcomes import OutcomeSpace
from safepredict.review.queue import SQLiteReviewQueue
from safepredict.review.sinks import CallableSink, JSONLSink, Sink

_QUEUE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


# ---------------------------------------------------------------------- router
class Router:
    """Write routed cases to a sink; retry, then spool, never raise.

    Parameters
    ----------
    sink : Sink, callable or path
        Where cases go (see :meth:`coerce` for what is accepted).
    retries : int, default=2
        Extra attempts after a failed write (so ``retries + 1`` in total). A
        locked :class:`SQLiteReviewQueue` is not retried: its busy timeout
        (``timeout=1.0`` s by default) already waited, so a locked queue stalls a
        decision by at most that long before the batch is spooled.
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
        :class:`SQLiteReviewQueue`; ``.jsonl``/``.ndjson`` a :class:`JSONLSink`;
        a ``postgresql://`` (or ``postgres://``) URL a
        :class:`~safepredict.review.PostgresReviewQueue`.

        Examples
        --------
        >>> Router.coerce("reviews.jsonl").sink.name
        'jsonl:reviews.jsonl'
        """
        if isinstance(router, Router):
            return router
        return cls(router)

    @property
    def queue(self) -> ReviewQueueCore | None:
        """The sink when it is a review queue (SQLite or PostgreSQL), else None."""
        return self.sink if isinstance(self.sink, ReviewQueueCore) else None

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
                if isinstance(exc, QueueLockedError):
                    break  # the queue's busy timeout already waited: spool now, stall no more
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                continue
            return [self._status(c, "queued") for c in cases]
        message = f"{type(error).__name__}: {error}"
        status = "failed"
        if self.spool is not None:
            try:
                append_jsonl(self.spool, cases, fsync=True)
                status = "spooled"
            except Exception as exc:  # the spool failing too leaves status "failed"
                message += f"; spool failed: {type(exc).__name__}: {exc}"
        with self._lock:
            self.failures += len(cases)
            if status == "spooled":
                self.spooled += len(cases)
        return [self._status(c, status, message) for c in cases]

    def set_context(
        self,
        space: OutcomeSpace | None,
        tiers: Sequence[Mapping[str, Any]] | None = None,
        priority: str | None = None,
    ) -> None:
        """Tell a queue sink what a valid outcome is, the tiers' rules and the review priority.

        Never raises. The predictor calls this before each routed batch. A review
        queue stores them with the next batch, in the same transaction; other
        sinks with ``set_context(space, tiers)`` get those two; the rest are skipped.
        """
        setter = getattr(self.sink, "set_context", None)
        if setter is None:
            return
        with contextlib.suppress(Exception):  # context is best effort, never a failed decision
            if isinstance(self.sink, ReviewQueueCore):
                self.sink.set_context(space, tiers, priority)
            else:
                setter(space, tiers)

    def report_failure(self, audits: Sequence[bool], error: BaseException) -> list[dict[str, Any]]:
        """Count cases that could not even be built and return their ``"failed"`` statuses."""
        message = f"{type(error).__name__}: {error}"
        with self._lock:
            self.failures += len(audits)
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
            cases = read_jsonl(replay)
            try:
                self.sink.write_batch(cases)
            except Exception:
                append_jsonl(self.spool, cases, fsync=True)
                replay.unlink()
                raise
            replay.unlink()
        return len(cases)

    def spooled_cases(self) -> list[dict[str, Any]]:
        """The cases currently waiting in the spool."""
        return [] if self.spool is None else read_jsonl(self.spool)

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
    if isinstance(sink, str) and sink.lower().startswith(_POSTGRES_SCHEMES):
        return PostgresReviewQueue(sink)
    if isinstance(sink, str | os.PathLike):
        path = Path(sink)
        suffix = path.suffix.lower()
        if suffix in _QUEUE_SUFFIXES:
            return SQLiteReviewQueue(path)
        if suffix in _JSONL_SUFFIXES:
            return JSONLSink(path)
        raise ConfigError(
            f"router path {str(path)!r} has an unknown suffix; use '.db'/'.sqlite' for a "
            "SQLite review queue, '.jsonl' for a JSON-lines file, or a 'postgresql://' URL "
            "for a PostgreSQL review queue."
        )
    if isinstance(sink, Sink) and not isinstance(sink, type):
        return sink
    if callable(sink):
        return CallableSink(sink)
    raise ConfigError(
        "router must be a Router, a review queue, a sink with write_batch(cases), a "
        "callable, a path ('.db', '.sqlite', '.jsonl') or a 'postgresql://' URL; got "
        f"{describe(sink)}."
    )
