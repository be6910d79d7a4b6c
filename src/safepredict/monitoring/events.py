"""Structured events: the only module that imports structlog (layer 2).

:class:`EventEmitter` turns a :class:`~safepredict.decisions.Decisions` batch into
one ``safepredict.decision`` event per row (schema v1, see ``docs/events.md`` and
``safepredict/monitoring/schemas/decision.json``), or one ``safepredict.batch`` event per
batch, and writes ``safepredict.calibration`` and ``safepredict.route`` events.

The library never configures structlog: it logs through
``structlog.get_logger("safepredict")`` once the application has configured
structlog (and writes nothing at all before that), or through the logger it is
given. A file path as the logger selects :class:`JsonlEventLog`: a batch's decision
events are rendered column by column, a one-row call's event as one line built
straight from the row, and either is appended with one write. Every
event is a dict of JSON-safe builtins (no numpy types, no NaN, no string UTF-8
cannot encode), so any JSON renderer works. A logger or sink that raises never
fails a decision: the event is counted as dropped.

Examples
--------
>>> import structlog
>>> emitter = EventEmitter(structlog.get_logger("safepredict"))
>>> with structlog.testing.capture_logs() as logs:
...     _ = emitter.route(decision_id="b-0", sink="queue", status="queued",
...                       audit=False, tier="human")
>>> logs[0]["event"], logs[0]["status"]
('safepredict.route', 'queued')
>>> emitter.stats()
{'emitted': 1, 'dropped': 0}
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import structlog

from safepredict._frames import input_rows, resolve_redact
from safepredict._hashing import row_hash, row_hashes
from safepredict.decisions import Decisions
from safepredict.exceptions import ConfigError
from safepredict.monitoring._event_fields import (
    EVENT_BATCH,
    EVENT_CALIBRATION,
    EVENT_DECISION,
    EVENT_ROUTE,
    EVENT_THRESHOLD_CHANGE,
    EVENT_TIER_ALARM,
    EVENT_UNCERTIFIED,
    ROUTE_STATUSES,
    SCHEMA_VERSION,
    SMALL_BATCH,
    EventContext,
    batch_event,
    calibration_events,
    clean,
    decision_header,
    identity_fields,
    now_iso,
    row_fields,
)
from safepredict.monitoring._event_files import JsonlEventLog
from safepredict.monitoring._event_json import decision_head, decision_lines, gc_paused
from safepredict.monitoring._event_row import RowRenderer
from safepredict.monitoring._snapshot import confidence_snapshot
from safepredict.monitoring.columnar import SMALL_CALL, ArrowDecisionLog, is_columnar

__all__ = [
    "EVENT_BATCH",
    "EVENT_CALIBRATION",
    "EVENT_DECISION",
    "EVENT_ROUTE",
    "EVENT_THRESHOLD_CHANGE",
    "EVENT_TIER_ALARM",
    "EVENT_UNCERTIFIED",
    "ROUTE_STATUSES",
    "SCHEMA_VERSION",
    "EventContext",
    "EventEmitter",
    "JsonlEventLog",
    "confidence_snapshot",
    "get_logger",
    "jsonl_file_logger",
    "load_schema",
    "now_iso",
]


def get_logger(logger: Any = None) -> Any:
    """The logger events go to.

    ``logger`` itself if it is a logger; a path (``str`` or ``os.PathLike``)
    becomes a :class:`JsonlEventLog` appending JSON lines to that file, or, when
    it ends in ``.arrows``, a columnar
    :class:`~safepredict.monitoring.columnar.ArrowDecisionLog`; ``None``
    is ``structlog.get_logger("safepredict")``, which an :class:`EventEmitter`
    only writes to once the application has configured structlog.

    Examples
    --------
    >>> get_logger("events.jsonl")
    JsonlEventLog('events.jsonl')
    >>> get_logger() is not None
    True
    """
    if logger is None:
        return structlog.get_logger("safepredict")
    if isinstance(logger, str | os.PathLike):
        return ArrowDecisionLog(logger) if is_columnar(logger) else JsonlEventLog(logger)
    return logger


def structlog_configured() -> bool:
    """Whether the application has configured structlog (``structlog.is_configured()``).

    Until it has, the library's default logger is silent: structlog's own default
    would print every event to stdout, and a library writes nothing there unless
    the application asked for it (the stdlib ``NullHandler`` etiquette).
    """
    return bool(structlog.is_configured())


def jsonl_file_logger(stream: Any) -> Any:
    """A logger writing each event as one JSON line to an open text stream.

    Used where the application cannot configure structlog itself, e.g. on Dask
    workers writing one JSONL file per partition. The global structlog
    configuration is not touched.

    Examples
    --------
    >>> import io, json
    >>> buf = io.StringIO()
    >>> jsonl_file_logger(buf).info("safepredict.route", status="queued")
    >>> json.loads(buf.getvalue())["event"]
    'safepredict.route'
    """
    return structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
    )


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``decision``, ``batch``, ``calibration`` or ``route``.

    Examples
    --------
    >>> load_schema("decision")["properties"]["event"]
    {'const': 'safepredict.decision'}
    """
    import json
    from importlib.resources import files

    if name not in ("decision", "batch", "calibration", "route"):
        raise ConfigError(
            f"unknown event schema {name!r}; use 'decision', 'batch', 'calibration' or 'route'."
        )
    text = (
        files("safepredict.monitoring")
        .joinpath("schemas", f"{name}.json")
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


class EventEmitter:
    """Write safepredict events to a structlog-style logger, never failing the caller.

    Parameters
    ----------
    logger : structlog-style logger, str or path-like, optional
        Anything with ``info(event, **fields)`` / ``warning(event, **fields)``, or
        a file path: events are appended to it as JSON lines by a
        :class:`JsonlEventLog` (the fast path, no structlog configuration needed).
        Default: ``structlog.get_logger("safepredict")``, used only once the
        application has configured structlog; until then nothing is written
        anywhere (no stdout, no stderr) and nothing is counted.
    log_inputs : bool, default=False
        Add the raw input row (``inputs``) to decision events.
    redact : sequence of str or int, default=()
        Columns (names, or positions) never logged, even with ``log_inputs``.

    Attributes
    ----------
    emitted : int
        Events handed to the logger without error.
    dropped : int
        Events lost because the logger (or a processor / sink behind it) raised.
    """

    def __init__(
        self,
        logger: Any = None,
        *,
        log_inputs: bool = False,
        redact: Sequence[str | int] = (),
    ) -> None:
        self.source = logger
        self.logger = get_logger(logger)
        self.log_inputs = bool(log_inputs)
        self.redact = tuple(redact)
        self.emitted = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._rows = RowRenderer()

    # ----------------------------------------------------------------- plumbing
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state.pop("_rows", None)
        if state.get("source") is None:  # the default proxy is rebuilt on unpickling
            state.pop("logger", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "logger" not in state:
            self.logger = get_logger(None)
        self._lock = threading.Lock()
        self._rows = RowRenderer()

    def stats(self) -> dict[str, int]:
        """Counts of events emitted and dropped since this emitter was created."""
        with self._lock:
            return {"emitted": self.emitted, "dropped": self.dropped}

    def _count(self, emitted: int, dropped: int) -> None:
        with self._lock:
            self.emitted += emitted
            self.dropped += dropped

    def _method(self, level: str) -> Any:
        log = self.logger
        try:  # resolve a lazy proxy once per batch instead of once per event
            bound = log.bind() if hasattr(log, "bind") else log
            return getattr(bound, level)
        except Exception:  # a broken logger: every event of the batch is dropped
            return None

    @property
    def silent(self) -> bool:
        """True while events have nowhere to go: no logger given, structlog not configured."""
        return self.source is None and not structlog.is_configured()

    def _emit(self, level: str, event: str, payload: Mapping[str, Any]) -> bool:
        if self.silent:
            return False
        if isinstance(self.logger, JsonlEventLog | ArrowDecisionLog):  # merge_contextvars
            payload = dict(payload)
            for key, value in structlog.contextvars.get_contextvars().items():
                payload.setdefault(key, value)
        method = self._method(level)
        try:
            if method is None:
                raise RuntimeError("logger unusable")
            method(event, **payload)
        except Exception:  # a failing sink never fails the caller; count it
            self._count(0, 1)
            return False
        self._count(1, 0)
        return True

    def check_redact(self, feature_names: Sequence[str]) -> frozenset[str]:
        """The hidden column names; raises if ``redact`` names no input (a typo would leak it).

        Examples
        --------
        >>> EventEmitter(redact=["agee"]).check_redact(["age", "income"])
        Traceback (most recent call last):
        ...
        safepredict.exceptions.ConfigError: redact: 'agee' is not an input column. Did you mean ...?
        """
        return resolve_redact(self.redact, feature_names)

    # --------------------------------------------------------------- calibration
    def calibration(self, context: EventContext, **fields: Any) -> int:
        """Emit ``safepredict.calibration`` and one warning per uncertified tier.

        ``fields`` are the keywords of :func:`calibration_events` (``task``,
        ``policy``, ``calibration_size``, ``conformity_score``, ``quantile``,
        ``thresholds``, ``report``, ``certified``, ``baseline``).

        Returns
        -------
        int
            Number of events emitted.
        """
        events = calibration_events(context, **fields)
        return sum(int(self._emit(level, event, f)) for level, event, f in events)

    # -------------------------------------------------------------- tier health
    def tier_alarm(self, context: EventContext, health: Mapping[str, Any]) -> bool:
        """Emit ``safepredict.tier_alarm`` (warning) for one tier's health dict.

        ``health`` is :meth:`TierHealth.to_dict` output (``tier, n_outcomes,
        n_errors, estimate, lower, upper, max_error, alarm, delta, audit_rate``).
        """
        payload = {
            **identity_fields(context),
            **{str(k): clean(v) for k, v in health.items()},
            "message": (
                f"tier {health.get('tier')!r} is not keeping its promise: its error rate is "
                f"above max_error={health.get('max_error')} (anytime-valid lower bound "
                f"{health.get('lower')})"
            ),
        }
        return self._emit("warning", EVENT_TIER_ALARM, payload)

    def threshold_change(self, context: EventContext, change: Mapping[str, Any]) -> bool:
        """Emit ``safepredict.threshold_change`` (info): ``tier``, ``old``, ``new`` and why."""
        payload = {
            **identity_fields(context),
            **{str(k): clean(v) for k, v in change.items()},
        }
        return self._emit("info", EVENT_THRESHOLD_CHANGE, payload)

    # ------------------------------------------------------------------- route
    def route(
        self,
        *,
        decision_id: str,
        sink: str,
        status: str,
        audit: bool,
        tier: str,
        action: str | None = None,
        request_id: str | None = None,
        error: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> bool:
        """Emit one ``safepredict.route`` event (called by the predictor's router hook).

        Parameters
        ----------
        decision_id : str
            The routed decision.
        sink : str
            Where the case went (e.g. ``"sqlite:reviews.db"``, ``"callable"``).
        status : {"queued", "spooled", "failed"}
            The outcome of the hand-off.
        audit : bool
            Whether the case is an audit sample of an accepted row.
        tier : str
            The decision's tier.
        action, request_id, error, model_name, model_version : str, optional
            Context; ``error`` says why a ``"failed"`` hand-off failed.

        Returns
        -------
        bool
            Whether the event reached the logger.
        """
        if status not in ROUTE_STATUSES:
            raise ConfigError(
                f"route status must be one of {list(ROUTE_STATUSES)}; got {status!r}."
            )
        payload = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": now_iso(),
            "decision_id": str(decision_id),
            "request_id": request_id if request_id is not None else _context_request_id(),
            "model_name": model_name,
            "model_version": model_version,
            "sink": str(sink),
            "status": status,
            "audit": bool(audit),
            "tier": str(tier),
            "action": action,
            "error": error,
        }
        level = "warning" if status == "failed" else "info"
        return self._emit(level, EVENT_ROUTE, payload)

    # --------------------------------------------------------------- decisions
    def decisions(
        self,
        decisions: Decisions,
        context: EventContext,
        *,
        X_model: Any = None,
        request_id: str | None = None,
        mode: str = "decision",
    ) -> int:
        """Emit the events of one ``decide`` call.

        Parameters
        ----------
        decisions : Decisions
            The batch.
        context : EventContext
            Model and calibration identity.
        X_model : array-like or DataFrame, optional
            The batch's inputs (hashed into ``inputs_hash``; logged only with
            ``log_inputs``).
        request_id : str, optional
            Default: the ``request_id`` bound in structlog's contextvars.
        mode : {"decision", "summary", "off"}, default="decision"
            One event per row, one ``safepredict.batch`` event, or nothing.

        Returns
        -------
        int
            Number of events emitted (dropped ones excluded).
        """
        if mode == "off" or self.silent:
            return 0
        context_vars = structlog.contextvars.get_contextvars()
        if request_id is None:
            value = context_vars.get("request_id")
            request_id = None if value is None else str(value)
        if mode == "summary":
            return int(self._emit("info", EVENT_BATCH, batch_event(decisions, context, request_id)))
        if len(decisions) <= SMALL_BATCH:  # too few objects for the collector to matter
            return self._decision_events(decisions, context, X_model, request_id, context_vars)
        with gc_paused():
            return self._decision_events(decisions, context, X_model, request_id, context_vars)

    def _decision_events(
        self,
        d: Decisions,
        ctx: EventContext,
        X_model: Any,
        request_id: str | None,
        context_vars: Mapping[str, Any],
    ) -> int:
        n = len(d)
        if n == 0:
            return 0
        log = self.logger
        columnar = isinstance(log, ArrowDecisionLog)
        # the columnar log records the hash only when the call computed it (audit,
        # routing): hashing each row costs more than the whole columnar event
        if d.inputs_hash is None and X_model is not None and not columnar:
            d.inputs_hash = (
                np.array([row_hash(X_model)], dtype=object) if n == 1 else row_hashes(X_model)
            )
        inputs: list[Any] | None = None
        if self.log_inputs and X_model is not None:
            hidden = resolve_redact(self.redact, ctx.feature_names)
            inputs = input_rows(X_model, None, ctx.feature_names, hidden)
        if columnar or isinstance(log, JsonlEventLog):
            try:
                self._write_file(log, d, ctx, request_id, context_vars, inputs)
            except Exception:  # a failing file never fails a decision; count the batch
                self._count(0, n)
                sent = 0
            else:
                self._count(n, 0)
                sent = n
        else:
            common = decision_header(d, ctx, request_id)
            sent = self._decision_calls(d, ctx, common, inputs)
        if d.route is not None:
            sent += self._route_events(d, ctx, request_id, d.tiers.tolist(), d.actions.tolist())
        return sent

    def _write_file(
        self,
        log: Any,
        d: Decisions,
        ctx: EventContext,
        request_id: str | None,
        context_vars: Mapping[str, Any],
        inputs: list[Any] | None,
    ) -> None:
        """One write of a batch's decision events to the JSON-lines or the columnar log.

        A one-row batch is one pre-formatted line (:class:`RowRenderer`); the
        columnar log takes calls of more than ``SMALL_CALL`` rows as a record
        batch and smaller ones as JSON lines beside its stream files.
        """
        n = len(d)
        if n == 1:
            line = self._rows.line(d, ctx, request_id, context_vars, inputs)
            (log if isinstance(log, JsonlEventLog) else log.events_file()).write(line)
            return
        head = decision_head(decision_header(d, ctx, request_id), context_vars)
        if isinstance(log, JsonlEventLog):
            log.write(decision_lines(d, ctx, head, inputs))
        elif n <= SMALL_CALL:
            log.events_file().write(decision_lines(d, ctx, head, inputs))
        else:
            log.write_decisions(d, head, ctx.confidence_level, inputs)

    def _decision_calls(
        self,
        d: Decisions,
        ctx: EventContext,
        common: dict[str, Any],
        inputs: list[Any] | None,
    ) -> int:
        """One structlog call per row; the batch-wide fields are bound once."""
        n = len(d)
        log = self.logger
        extra: dict[str, Any] = {}
        try:
            if hasattr(log, "bind"):
                method = log.bind(**common).info
            else:
                method, extra = log.info, common
        except Exception:  # a broken logger: every event of the batch is dropped
            self._count(0, n)
            return 0
        sent = dropped = 0
        for fields in row_fields(d, ctx, inputs):
            try:
                method(EVENT_DECISION, **fields, **extra)
                sent += 1
            except Exception:  # a failing sink never fails a decision; count it
                dropped += 1
        self._count(sent, dropped)
        return sent

    def _route_events(
        self,
        d: Decisions,
        ctx: EventContext,
        request_id: str | None,
        tiers: list[Any],
        actions: list[Any],
    ) -> int:
        """One ``safepredict.route`` event per routed row (``decisions.route[i]`` set)."""
        assert d.route is not None
        sent = 0
        ids = d.decision_ids
        for i, status in enumerate(d.route):
            if not status:
                continue
            try:
                ok = self.route(
                    decision_id=str(ids[i]),
                    sink=str(status.get("sink", "unknown")),
                    status=str(status.get("status", "failed")),
                    audit=bool(status.get("audit", d.audit[i])),
                    tier=str(tiers[i]),
                    action=str(actions[i]),
                    request_id=request_id,
                    error=None if status.get("error") is None else str(status["error"]),
                    model_name=ctx.model_name,
                    model_version=ctx.model_version,
                )
            except Exception:  # an unknown status from a custom router: drop, count
                self._count(0, 1)
                continue
            sent += ok
        return sent


def _context_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return None if value is None else str(value)
