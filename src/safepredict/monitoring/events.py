"""Structured events: the only module that imports structlog (layer 2).

:class:`EventEmitter` turns a :class:`~safepredict.decisions.Decisions` batch into
one ``safepredict.decision`` event per row (schema v1, see ``docs/events.md`` and
``safepredict/monitoring/schemas/decision.json``), or one ``safepredict.batch`` event per
batch, and writes ``safepredict.calibration`` and ``safepredict.route`` events.

The library never configures structlog: it logs through
``structlog.get_logger("safepredict")`` once the application has configured
structlog (and writes nothing at all before that), or through the logger it is
given. A file path as the logger selects :class:`JsonlEventLog`, which renders a
batch's decision events column by column and appends them with one write. Every
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

import contextlib
import gc
import json
import math
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, compress, repeat
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from safepredict._frames import input_rows, resolve_redact
from safepredict._hashing import row_hashes
from safepredict._jsonl import safe_text, to_builtin
from safepredict._version import __version__
from safepredict.decisions import Decisions
from safepredict.exceptions import ConfigError
from safepredict.reasons import is_guard_reason

try:  # orjson renders an event in about a microsecond; the stdlib is the fallback
    import orjson

    _ORJSON = True
except ImportError:  # pragma: no cover - orjson is in the `fast` extra and in CI
    _ORJSON = False

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

#: Version of the event schema; bumped on any incompatible change.
SCHEMA_VERSION = 1
EVENT_DECISION = "safepredict.decision"
EVENT_BATCH = "safepredict.batch"
EVENT_CALIBRATION = "safepredict.calibration"
EVENT_UNCERTIFIED = "safepredict.tier_uncertified"
EVENT_ROUTE = "safepredict.route"
#: A tier's anytime-valid error lower bound exceeds its ``max_error`` (issue 22).
EVENT_TIER_ALARM = "safepredict.tier_alarm"
#: An ``adapt = true`` tier's threshold moved (issue 22).
EVENT_THRESHOLD_CHANGE = "safepredict.threshold_change"
#: What a router reports for a case: handed to the sink, written to a local
#: spool because the sink was down, or lost.
ROUTE_STATUSES = ("queued", "spooled", "failed")
#: Quantile levels of the calibration snapshot (0, 0.01, ..., 1).
SNAPSHOT_LEVELS = tuple(i / 100 for i in range(101))
#: Levels whose quantiles are the PSI bin edges (deciles).
PSI_LEVELS = tuple(i / 10 for i in range(1, 10))
#: Contributions listed in an event's explanation.
TOP_K = 5

_SIMPLE = (str, int, float, bool, type(None))


def get_logger(logger: Any = None) -> Any:
    """The logger events go to.

    ``logger`` itself if it is a logger; a path (``str`` or ``os.PathLike``)
    becomes a :class:`JsonlEventLog` appending JSON lines to that file; ``None``
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
        return JsonlEventLog(logger)
    return logger


def structlog_configured() -> bool:
    """Whether the application has configured structlog (``structlog.is_configured()``).

    Until it has, the library's default logger is silent: structlog's own default
    would print every event to stdout, and a library writes nothing there unless
    the application asked for it (the stdlib ``NullHandler`` etiquette).
    """
    return bool(structlog.is_configured())


def _dumps_plain(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return json.dumps(to_builtin(value), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _dumps(value: Any) -> bytes:
    """Strict JSON bytes (orjson when installed); numpy values, NaN and lone surrogates cleaned."""
    if not _ORJSON:
        return _dumps_plain(value)
    try:
        return orjson.dumps(value)
    except TypeError:  # numpy scalars or a string UTF-8 cannot encode
        pass
    try:
        return orjson.dumps(to_builtin(value))
    except TypeError:  # e.g. an integer beyond 64 bits
        return _dumps_plain(value)


class JsonlEventLog:
    """Append events as JSON lines to a file: the fast path for ``logger="events.jsonl"``.

    A batch of decision events is serialized column by column and written with one
    ``write`` call (``O_APPEND``, so lines of several writers never interleave);
    single events (calibration, route) are one line each. Each line carries
    ``event`` and ``level`` like structlog's JSON recipe
    (``add_log_level`` + ``JSONRenderer``), plus any structlog contextvars. The
    file is opened on first use and reopened after unpickling.

    Parameters
    ----------
    path : str or path-like
        The file (created if missing, appended to otherwise).

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> log = JsonlEventLog(path)
    >>> log.info("safepredict.route", status="queued")
    >>> json.loads(path.read_text())
    {'event': 'safepredict.route', 'level': 'info', 'status': 'queued'}
    >>> log.close()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlEventLog({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Close the file (it is reopened by the next write)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines) with one ``write`` call; raises ``OSError`` on failure."""
        if not data:
            return
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]

    def _line(self, level: str, event: str, fields: Mapping[str, Any]) -> bytes:
        out: dict[str, Any] = {"event": event, "level": level, **fields}
        for key, value in structlog.contextvars.get_contextvars().items():
            out.setdefault(key, value)
        return _dumps(out) + b"\n"

    def info(self, event: str, **fields: Any) -> None:
        """Write one info-level event."""
        self.write(self._line("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        """Write one warning-level event."""
        self.write(self._line("warning", event, fields))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, restoring it even if the body raises.

    Building the events of a batch (``tolist`` of the columns, then ~10 containers
    per row) triggers many GC passes, each walking every tracked object of the
    process; the events are acyclic, so nothing is left for the collector.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string ending in ``Z``.

    Examples
    --------
    >>> now_iso().endswith("Z")
    True
    """
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    kind = type(value)
    if kind in _SIMPLE:
        if kind is float and not math.isfinite(value):
            return None
        if kind is str:
            return safe_text(value)
        return value
    return to_builtin(value)


def _needs_clean(value: Any) -> bool:
    kind = type(value)
    return (
        kind not in _SIMPLE
        or (kind is float and not math.isfinite(value))
        or (kind is str and not value.isascii())
    )


def _finite_list(values: NDArray[np.float64]) -> list[float | None]:
    return [v if v == v and v not in (math.inf, -math.inf) else None for v in values.tolist()]


def confidence_snapshot(values: Any, *, metric: str = "confidence") -> dict[str, Any]:
    """Summarise a calibration distribution as the monitor's drift baseline.

    Parameters
    ----------
    values : array-like
        The metric on the calibration rows (``nan`` values are ignored).
    metric : str, default="confidence"
        What the values are (``"confidence"`` for classifiers,
        ``"interval_width"`` for regressors).

    Returns
    -------
    dict
        ``metric``, ``n``, ``quantiles`` (at levels 0, 0.01, ..., 1),
        ``cdf_points`` (the distinct quantiles) with ``cdf`` (the exact
        fraction of calibration values ``<=`` each point; the KS baseline), and
        ``psi_edges`` (distinct deciles) with ``psi_counts`` (calibration counts
        in the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)``).

    Examples
    --------
    >>> snap = confidence_snapshot(np.linspace(0, 1, 101))
    >>> snap["n"], snap["quantiles"][50], snap["psi_counts"][0]
    (101, 0.5, 11)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if metric != "confidence":
        # Interval widths are recomputed as hi - lo from the events: keep 10
        # significant digits (as the monitor does), so float noise in e.g. a
        # constant width cannot split it across bins. Confidence is computed
        # identically on both sides and kept exact.
        v = np.array([float(f"{x:.10g}") for x in v.tolist()])
    v = np.sort(v)
    n = len(v)
    if n == 0:
        return {
            "metric": metric,
            "n": 0,
            "quantiles": [],
            "cdf_points": [],
            "cdf": [],
            "psi_edges": [],
            "psi_counts": [],
        }
    quantiles = np.quantile(v, SNAPSHOT_LEVELS, method="inverted_cdf")
    points = np.unique(quantiles)
    cdf = np.searchsorted(v, points, side="right") / n
    edges = np.unique(np.quantile(v, PSI_LEVELS, method="inverted_cdf"))
    counts = np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1)
    return {
        "metric": metric,
        "n": int(n),
        "quantiles": quantiles.tolist(),
        "cdf_points": points.tolist(),
        "cdf": cdf.tolist(),
        "psi_edges": edges.tolist(),
        "psi_counts": counts.tolist(),
    }


@dataclass
class EventContext:
    """What every event of a calibrated predictor carries.

    Parameters
    ----------
    model_name, model_version : str, optional
        As given to ``SafePredictor``.
    policy_hash, calibration_id : str, optional
        Identify the policy and the calibration data.
    n_features : int
        Number of input features.
    confidence_level : float
        Conformal level of the sets / intervals.
    feature_names : sequence of str
        Input column names (``x0, x1, ...`` for unnamed arrays).
    """

    model_name: str | None = None
    model_version: str | None = None
    policy_hash: str | None = None
    calibration_id: str | None = None
    n_features: int = 0
    confidence_level: float = 0.9
    feature_names: Sequence[str] = field(default_factory=tuple)


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

    # ----------------------------------------------------------------- plumbing
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        if state.get("source") is None:  # the default proxy is rebuilt on unpickling
            state.pop("logger", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "logger" not in state:
            self.logger = get_logger(None)
        self._lock = threading.Lock()

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
    def calibration(
        self,
        context: EventContext,
        *,
        task: str,
        policy: Mapping[str, Any],
        calibration_size: int,
        conformity_score: str,
        quantile: float,
        thresholds: Mapping[str, Any],
        report: Mapping[str, Any],
        certified: Mapping[str, bool],
        baseline: Mapping[str, Any],
    ) -> int:
        """Emit ``safepredict.calibration`` and one warning per uncertified tier.

        Returns
        -------
        int
            Number of events emitted.
        """
        ts = now_iso()
        common = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": ts,
            "model_name": context.model_name,
            "model_version": context.model_version,
            "safepredict_version": __version__,
            "policy_hash": context.policy_hash,
            "calibration_id": context.calibration_id,
        }
        payload = {
            **common,
            "task": task,
            "policy": to_builtin(dict(policy)),
            "calibration_size": int(calibration_size),
            "n_features": int(context.n_features),
            "confidence_level": float(context.confidence_level),
            "conformity_score": conformity_score,
            "conformal_quantile": _clean(float(quantile)),
            "thresholds": to_builtin(dict(thresholds)),
            "tier_report": to_builtin(dict(report)) if report else None,
            "certified": {str(k): bool(v) for k, v in certified.items()},
            "baseline": to_builtin(dict(baseline)),
        }
        sent = int(self._emit("info", EVENT_CALIBRATION, payload))
        tiers = {t["name"]: t for t in policy.get("tiers", [])}
        for name, ok in certified.items():
            if ok:
                continue
            tier = tiers.get(name, {})
            why = report.get(name, {}) if isinstance(report, Mapping) else {}
            warning = {
                **common,
                "tier": str(name),
                "max_error": _clean(tier.get("max_error")),
                "delta": _clean(policy.get("delta")),
                "calibration_size": int(calibration_size),
                "detail": to_builtin(why) if why else None,
                "message": (
                    f"tier {name!r} could not be certified on {calibration_size} calibration "
                    "rows; it accepts nothing until recalibrated with more data"
                ),
            }
            sent += int(self._emit("warning", EVENT_UNCERTIFIED, warning))
        return sent

    # -------------------------------------------------------------- tier health
    def tier_alarm(self, context: EventContext, health: Mapping[str, Any]) -> bool:
        """Emit ``safepredict.tier_alarm`` (warning) for one tier's health dict.

        ``health`` is :meth:`TierHealth.to_dict` output (``tier, n_outcomes,
        n_errors, estimate, lower, upper, max_error, alarm, delta, audit_rate``).
        """
        payload = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": now_iso(),
            "model_name": context.model_name,
            "model_version": context.model_version,
            "safepredict_version": __version__,
            "policy_hash": context.policy_hash,
            "calibration_id": context.calibration_id,
            **{str(k): _clean(v) for k, v in health.items()},
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
            "schema_version": SCHEMA_VERSION,
            "timestamp": now_iso(),
            "model_name": context.model_name,
            "model_version": context.model_version,
            "safepredict_version": __version__,
            "policy_hash": context.policy_hash,
            "calibration_id": context.calibration_id,
            **{str(k): _clean(v) for k, v in change.items()},
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
        if request_id is None:
            request_id = _context_request_id()
        if mode == "summary":
            return int(
                self._emit("info", EVENT_BATCH, _batch_event(decisions, context, request_id))
            )
        if len(decisions) <= _SMALL_BATCH:  # too few objects for the collector to matter
            return self._decision_events(decisions, context, X_model, request_id)
        with _gc_paused():
            return self._decision_events(decisions, context, X_model, request_id)

    def _decision_events(
        self, d: Decisions, ctx: EventContext, X_model: Any, request_id: str | None
    ) -> int:
        n = len(d)
        if n == 0:
            return 0
        if d.inputs_hash is None and X_model is not None:
            d.inputs_hash = row_hashes(X_model)
        inputs: list[Any] | None = None
        if self.log_inputs and X_model is not None:
            hidden = resolve_redact(self.redact, ctx.feature_names)
            inputs = input_rows(X_model, None, ctx.feature_names, hidden)
        latency = {k: float(v) for k, v in d.latency_s.items()}
        for stage in ("total", "guard", "model", "conformal", "explain"):
            latency.setdefault(stage, 0.0)
        common = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": now_iso(),
            "request_id": None if request_id is None else safe_text(str(request_id)),
            "batch_id": safe_text(str(d.batch_id)),
            "batch_size": n,
            "model_name": _clean(ctx.model_name),
            "model_version": _clean(ctx.model_version),
            "safepredict_version": __version__,
            "policy_hash": ctx.policy_hash,
            "calibration_id": ctx.calibration_id,
            "n_features": ctx.n_features,
            "latency_s": latency,
        }
        log = self.logger
        if isinstance(log, JsonlEventLog):
            try:
                log.write(_decision_lines(d, ctx, common, inputs))
            except Exception:  # a failing file never fails a decision; count the batch
                self._count(0, n)
                sent = 0
            else:
                self._count(n, 0)
                sent = n
        else:
            sent = self._decision_calls(d, ctx, common, inputs)
        if d.route is not None:
            sent += self._route_events(d, ctx, request_id, d.tiers.tolist(), d.actions.tolist())
        return sent

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
        for fields in _row_fields(d, ctx, inputs):
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


def _explanation(e: Any) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "method": str(e.method),
        "top": [[str(f), _clean(v)] for f, v in e.top(TOP_K)],
        "base_value": _clean(float(e.base_value)),
    }


def _batch_event(d: Decisions, ctx: EventContext, request_id: str | None) -> dict[str, Any]:
    n = len(d)
    counts = d.counts()
    reason_counts: Counter[str] = Counter()
    guard_counts: Counter[str] = Counter()
    for reasons in d.reasons:
        reason_counts.update(reasons)
        # Rows per guard kind: two out_of_range columns in one row count once.
        guard_counts.update({r.split(":", 1)[0] for r in reasons if is_guard_reason(r)})
    pairs: dict[str, dict[str, int]] = {}
    for (tier, action), count in Counter(
        zip(d.tiers.tolist(), d.actions.tolist(), strict=True)
    ).items():
        pairs.setdefault(str(tier), {})[str(action)] = count
    conf = d.confidence[np.isfinite(d.confidence)] if n else np.zeros(0)
    confidence = None
    if len(conf):
        q = np.quantile(conf, (0.1, 0.5, 0.9))
        confidence = {
            "n": len(conf),
            "mean": float(conf.mean()),
            "p10": float(q[0]),
            "p50": float(q[1]),
            "p90": float(q[2]),
        }
    latency = {k: float(v) for k, v in d.latency_s.items()}
    for stage in ("total", "guard", "model", "conformal", "explain"):
        latency.setdefault(stage, 0.0)
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp": now_iso(),
        "batch_id": d.batch_id,
        "request_id": request_id,
        "model_name": ctx.model_name,
        "model_version": ctx.model_version,
        "safepredict_version": __version__,
        "policy_hash": ctx.policy_hash,
        "calibration_id": ctx.calibration_id,
        "n": n,
        "tiers": counts["tier"],
        "actions": counts["action"],
        "tier_actions": pairs,
        "reasons": dict(reason_counts),
        "guard_reasons": dict(guard_counts),
        "guard_flagged": int(d.guard_flagged.sum()),
        "audit": int(d.audit.sum()),
        "routes": dict(Counter(str(r.get("status")) for r in d.route if r))
        if d.route is not None
        else {},
        "confidence": confidence,
        "latency_s": latency,
    }


# ------------------------------------------------------------- column-wise events
_NULL = b"null"
#: Up to this many rows, a batch's JSON lines are rendered row by row.
_SMALL_BATCH = 8
_BOOL = (b"false", b"true")
_STATUS = (b'"pass"', b'"flag"')
#: The per-row fields of a decision event (a contextvar of the same name never
#: shadows them, as with structlog's ``merge_contextvars``).
_ROW_FIELDS = frozenset(
    {
        "event",
        "level",
        "decision_id",
        "inputs_hash",
        "guard",
        "prediction",
        "probabilities",
        "conformal",
        "confidence",
        "tier",
        "action",
        "reasons",
        "audit",
        "route",
        "explanation",
        "inputs",
    }
)


def _texts(values: list[Any]) -> list[Any]:
    """``values`` with any string UTF-8 cannot encode escaped (one check when all are ASCII)."""
    try:
        if "".join(values).isascii():
            return values
    except TypeError:  # not all strings
        pass
    return [_clean(v) for v in values]


class _Fragments(dict[Any, bytes]):
    """Value -> its JSON bytes, computed on first use (few distinct values per column)."""

    def __missing__(self, key: Any) -> bytes:
        value = self[key] = _dumps(_clean(key))
        return value


class _ReasonFragments(dict[Any, tuple[list[str], list[str]]]):
    """A row's reason tuple -> (reasons, guard reasons), computed once per distinct tuple."""

    def __missing__(self, key: Any) -> tuple[list[str], list[str]]:
        reasons = [safe_text(str(r)) for r in key]
        value = self[key] = (reasons, [r for r in reasons if is_guard_reason(r)])
        return value


class _Columns:
    """The per-row fields of a batch's decision events, built column by column."""

    def __init__(self, d: Decisions) -> None:
        self.d = d
        self.n = n = len(d)
        self.ids: list[Any] = _texts(d.decision_ids.tolist())
        self.hashes: list[Any] = d.inputs_hash.tolist() if d.inputs_hash is not None else [None] * n
        names = [safe_text(str(t)) for t in d.tier_names]
        self.tiers: list[Any] = [names[c] for c in d.tier_codes.tolist()]
        self.actions: list[Any] = _texts(d.actions.tolist())
        self.audits: list[bool] = d.audit.tolist()
        self.flagged: list[bool] = d.guard_flagged.tolist()
        self.confidence = _finite_list(d.confidence)
        self.ood: list[Any] = [None] * n if d.ood_scores is None else _finite_list(d.ood_scores)
        self._reasons = _ReasonFragments()

    def reason_lists(self, reasons: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """(all reasons, guard reasons) of one row, escaped."""
        return self._reasons[tuple(reasons)]

    def predictions(self) -> list[Any]:
        preds: list[Any] = self.d.predictions.tolist()
        if any(map(_needs_clean, preds)):  # numpy scalars, NaN, non-ASCII text, objects
            preds = [_clean(p) for p in preds]
        return preds

    def labels(self) -> list[Any]:
        assert self.d.classes is not None
        return [_clean(c) for c in self.d.classes.tolist()]

    def probability_dicts(self) -> list[Any]:
        d = self.d
        if d.probabilities is None or d.classes is None:
            return [None] * self.n
        keys = [safe_text(str(c)) for c in d.classes.tolist()]
        rows = d.probabilities.tolist()
        if self.n <= _SMALL_BATCH:
            ok: list[Any] = [all(map(math.isfinite, row)) for row in rows]
        else:
            ok = np.isfinite(d.probabilities).all(axis=1).tolist()  # type: ignore[assignment]
        return [
            dict(zip(keys, row, strict=True)) if good else None
            for good, row in zip(ok, rows, strict=True)
        ]

    def sets(self) -> tuple[list[Any], list[Any]]:
        d = self.d
        if d.set_mask is None or d.classes is None:
            return [None] * self.n, [None] * self.n
        labels = self.labels()
        rows = d.set_mask.tolist()
        return [list(compress(labels, row)) for row in rows], [sum(row) for row in rows]

    def intervals(self) -> list[Any]:
        if self.d.intervals is None:
            return [None] * self.n
        return [[lo, hi] if lo == lo and hi == hi else None for lo, hi in self.d.intervals.tolist()]

    def explanations(self) -> list[Any]:
        if self.d.explanations is None:
            return [None] * self.n
        return [_explanation(e) for e in self.d.explanations]

    def routes(self) -> list[Any]:
        if self.d.route is None:
            return [None] * self.n
        return [None if r is None else to_builtin(dict(r)) for r in self.d.route]


def _row_fields(
    d: Decisions, ctx: EventContext, inputs: list[Any] | None
) -> Iterator[dict[str, Any]]:
    """The per-row fields of each decision event, as fresh dicts (the structlog path)."""
    cols = _Columns(d)
    ids, hashes, preds = cols.ids, cols.hashes, cols.predictions()
    tiers, actions = cols.tiers, cols.actions
    audits, flagged = cols.audits, cols.flagged
    conf, ood = cols.confidence, cols.ood
    probs, (sets, sizes) = cols.probability_dicts(), cols.sets()
    intervals, explanations, routes = cols.intervals(), cols.explanations(), cols.routes()
    reasons_of = cols.reason_lists
    level = ctx.confidence_level
    for i in range(cols.n):
        reason_list, guard_reasons = reasons_of(d.reasons[i])
        fields = {
            "decision_id": ids[i],
            "inputs_hash": hashes[i],
            "guard": {
                "status": "flag" if flagged[i] else "pass",
                "reasons": list(guard_reasons),
                "ood_score": ood[i],
            },
            "prediction": preds[i],
            "probabilities": probs[i],
            "conformal": {
                "confidence_level": level,
                "set": sets[i],
                "set_size": sizes[i],
                "interval": intervals[i],
            },
            "confidence": conf[i],
            "tier": tiers[i],
            "action": actions[i],
            "reasons": list(reason_list),
            "audit": audits[i],
            "route": routes[i],
            "explanation": explanations[i],
        }
        if inputs is not None:
            fields["inputs"] = inputs[i]
        yield fields


def _frag(values: list[Any]) -> list[bytes]:
    """The JSON bytes of each value, from one serialization of the whole column.

    Numbers, ``null`` and strings without a comma serialize without a comma, so
    splitting the array's body on commas gives one piece per value; any other
    column (a comma inside a string) is serialized value by value.
    """
    body = _dumps(values)[1:-1]
    pieces = body.split(b",")
    if len(pieces) == len(values) and body:
        return pieces
    return [_dumps(v) for v in values]


def _joined(parts: list[Any]) -> list[bytes]:
    """Row-wise concatenation of columns (lists) and constants (``repeat``)."""
    return list(map(b"".join, zip(*parts, strict=False)))


class _ReasonJson(dict[Any, bytes]):
    """A row's reason tuple -> the JSON of its reasons (or only its guard reasons)."""

    def __init__(self, guard_only: bool) -> None:
        super().__init__()
        self.guard_only = guard_only

    def __missing__(self, key: Any) -> bytes:
        reasons = [safe_text(str(r)) for r in key]
        if self.guard_only:
            reasons = [r for r in reasons if is_guard_reason(r)]
        value = self[key] = _dumps(reasons)
        return value


def _set_fragments(d: Decisions) -> tuple[Any, Any]:
    """The JSON of each row's conformal set and its size, one serialization per distinct set."""
    if d.set_mask is None or d.classes is None:
        return repeat(_NULL), repeat(_NULL)
    mask = np.asarray(d.set_mask, dtype=bool)
    k = mask.shape[1]
    labels = [_clean(c) for c in d.classes.tolist()]
    if k > 62:  # too many classes for an integer key: row by row
        rows = mask.tolist()
        return [_dumps(list(compress(labels, r))) for r in rows], _frag(mask.sum(axis=1).tolist())
    weights = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))
    keys = (mask * weights).sum(axis=1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    set_frags = [_dumps(list(compress(labels, mask[i].tolist()))) for i in first.tolist()]
    size_frags = [str(int(mask[i].sum())).encode() for i in first.tolist()]
    codes = inverse.ravel().tolist()
    return list(map(set_frags.__getitem__, codes)), list(map(size_frags.__getitem__, codes))


def _decision_lines(
    d: Decisions, ctx: EventContext, common: Mapping[str, Any], inputs: list[Any] | None
) -> bytes:
    """The JSON lines of a batch's decision events, serialized column by column.

    Same content as the per-row structlog events rendered by the documented recipe
    (``add_log_level`` + ``JSONRenderer``): the batch-wide fields are serialized
    once, each per-row field once per column (a float column is one ``orjson``
    call, whose ``NaN`` is ``null``), and the rows are joined in C.
    """
    head_fields: dict[str, Any] = {"event": EVENT_DECISION, "level": "info", **common}
    for key, value in structlog.contextvars.get_contextvars().items():
        if key not in _ROW_FIELDS:
            head_fields.setdefault(key, value)
    if len(d) <= _SMALL_BATCH:  # a few rows: dicts are cheaper than columns
        return b"".join(
            _dumps({**head_fields, **fields}) + b"\n" for fields in _row_fields(d, ctx, inputs)
        )
    head = _dumps(head_fields)[:-1]
    reasons: list[Any] = d.reasons
    if not all(map(tuple.__instancecheck__, reasons)):  # lists from a hand-built batch
        reasons = [tuple(r) for r in reasons]
    tier_frags = [_dumps(safe_text(str(t))) for t in d.tier_names]
    action_frags = _Fragments()

    probs: Any = repeat(_NULL)
    if d.probabilities is not None and d.classes is not None:
        p = d.probabilities
        parts: list[Any] = []
        for j, c in enumerate(d.classes.tolist()):
            label = _dumps(safe_text(str(c)))
            parts.append(repeat((b"{" if j == 0 else b",") + label + b":"))
            parts.append(_frag(p[:, j].tolist()))
        parts.append(repeat(b"}"))
        probs = _joined(parts)
        for i in np.flatnonzero(~np.isfinite(p).all(axis=1)).tolist():
            probs[i] = _NULL
    sets, sizes = _set_fragments(d)
    intervals: Any = repeat(_NULL)
    if d.intervals is not None:
        iv = d.intervals
        intervals = _joined(
            [
                repeat(b"["),
                _frag(iv[:, 0].tolist()),
                repeat(b","),
                _frag(iv[:, 1].tolist()),
                repeat(b"]"),
            ]
        )
        for i in np.flatnonzero(np.isnan(iv).any(axis=1)).tolist():
            intervals[i] = _NULL
    routes: Any = repeat(_NULL)
    if d.route is not None:
        routes = [_NULL if r is None else _dumps(to_builtin(dict(r))) for r in d.route]
    explanations: Any = repeat(_NULL)
    if d.explanations is not None:
        explanations = [_NULL if e is None else _dumps(_explanation(e)) for e in d.explanations]
    hashes: Any = repeat(_NULL) if d.inputs_hash is None else _frag(d.inputs_hash.tolist())
    ood: Any = repeat(_NULL) if d.ood_scores is None else _frag(d.ood_scores.tolist())
    level = _dumps(float(ctx.confidence_level))
    columns: list[Any] = [
        repeat(head + b',"decision_id":'),
        _frag(d.decision_ids.tolist()),
        repeat(b',"inputs_hash":'),
        hashes,
        repeat(b',"guard":{"status":'),
        list(map(_STATUS.__getitem__, d.guard_flagged.tolist())),
        repeat(b',"reasons":'),
        list(map(_ReasonJson(guard_only=True).__getitem__, reasons)),
        repeat(b',"ood_score":'),
        ood,
        repeat(b'},"prediction":'),
        _frag(d.predictions.tolist()),
        repeat(b',"probabilities":'),
        probs,
        repeat(b',"conformal":{"confidence_level":' + level + b',"set":'),
        sets,
        repeat(b',"set_size":'),
        sizes,
        repeat(b',"interval":'),
        intervals,
        repeat(b'},"confidence":'),
        _frag(d.confidence.tolist()),
        repeat(b',"tier":'),
        list(map(tier_frags.__getitem__, d.tier_codes.tolist())),
        repeat(b',"action":'),
        list(map(action_frags.__getitem__, d.actions.tolist())),
        repeat(b',"reasons":'),
        list(map(_ReasonJson(guard_only=False).__getitem__, reasons)),
        repeat(b',"audit":'),
        list(map(_BOOL.__getitem__, d.audit.tolist())),
        repeat(b',"route":'),
        routes,
        repeat(b',"explanation":'),
        explanations,
    ]
    if inputs is not None:
        columns += [repeat(b',"inputs":'), [_dumps(row) for row in inputs]]
    columns.append(repeat(b"}\n"))
    return b"".join(chain.from_iterable(zip(*columns, strict=False)))
