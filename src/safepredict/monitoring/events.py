"""Structured events: the only module that imports structlog (layer 2).

:class:`EventEmitter` turns a :class:`~safepredict.decisions.Decisions` batch into
one ``safepredict.decision`` event per row (schema v1, see ``docs/events.md`` and
``safepredict/monitoring/schemas/decision.json``), or one ``safepredict.batch`` event per
batch, and writes ``safepredict.calibration`` and ``safepredict.route`` events.

The library never configures structlog: it logs through
``structlog.get_logger("safepredict")`` or the logger it is given, so the
application decides where and how events are rendered. Every event is a dict of
JSON-safe builtins (no numpy types, no NaN), so any JSON renderer works. A logger
or sink that raises never fails a decision: the event is counted as dropped.

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
import math
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from safepredict._frames import input_rows, resolve_redact
from safepredict._hashing import row_hashes
from safepredict._jsonl import to_builtin
from safepredict._version import __version__
from safepredict.decisions import Decisions
from safepredict.exceptions import ConfigError
from safepredict.reasons import is_guard_reason

__all__ = [
    "EVENT_BATCH",
    "EVENT_CALIBRATION",
    "EVENT_DECISION",
    "EVENT_ROUTE",
    "EVENT_UNCERTIFIED",
    "ROUTE_STATUSES",
    "SCHEMA_VERSION",
    "EventContext",
    "EventEmitter",
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
    """The logger events go to: ``logger`` if given, else ``structlog.get_logger("safepredict")``.

    Examples
    --------
    >>> get_logger() is not None
    True
    """
    return structlog.get_logger("safepredict") if logger is None else logger


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
    if type(value) in _SIMPLE:
        if type(value) is float and not math.isfinite(value):
            return None
        return value
    return to_builtin(value)


def _needs_clean(value: Any) -> bool:
    kind = type(value)
    return kind not in _SIMPLE or (kind is float and not math.isfinite(value))


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
    logger : structlog-style logger, optional
        Anything with ``info(event, **fields)`` / ``warning(event, **fields)``.
        Default: ``structlog.get_logger("safepredict")``.
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

    def _emit(self, level: str, event: str, payload: Mapping[str, Any]) -> bool:
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
        if mode == "off":
            return 0
        if request_id is None:
            request_id = _context_request_id()
        if mode == "summary":
            return int(
                self._emit("info", EVENT_BATCH, _batch_event(decisions, context, request_id))
            )
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
        hashes = d.inputs_hash.tolist() if d.inputs_hash is not None else [None] * n
        ids = d.decision_ids.tolist()
        preds = d.predictions.tolist()
        if any(map(_needs_clean, preds)):  # numpy scalars, NaN, other objects
            preds = [_clean(p) for p in preds]
        tiers = d.tiers.tolist()
        actions = d.actions.tolist()
        audits = d.audit.tolist()
        flagged = d.guard_flagged.tolist()
        conf = _finite_list(d.confidence)
        ood = [None] * n if d.ood_scores is None else _finite_list(d.ood_scores)
        none = [None] * n
        probs: list[Any] = none
        sets: list[Any] = none
        sizes: list[Any] = none
        if d.probabilities is not None and d.classes is not None:
            keys = [str(c) for c in d.classes.tolist()]
            p = d.probabilities
            bad: list[bool] = np.logical_not(np.isfinite(p).all(axis=1)).tolist()
            probs = [
                None if b else dict(zip(keys, row, strict=True))
                for b, row in zip(bad, p.tolist(), strict=True)
            ]
        if d.set_mask is not None and d.classes is not None:
            labels = [_clean(c) for c in d.classes.tolist()]
            sets = [list(compress(labels, row)) for row in d.set_mask.tolist()]
            sizes = d.set_mask.sum(axis=1).tolist()
        intervals: list[Any] = none
        if d.intervals is not None:
            intervals = [
                [lo, hi] if lo == lo and hi == hi else None for lo, hi in d.intervals.tolist()
            ]
        explanations: list[Any] = none
        if d.explanations is not None:
            explanations = [_explanation(e) for e in d.explanations]
        routes: list[Any] = none
        if d.route is not None:
            routes = [None if r is None else to_builtin(dict(r)) for r in d.route]
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
            "request_id": request_id,
            "batch_id": d.batch_id,
            "batch_size": n,
            "model_name": ctx.model_name,
            "model_version": ctx.model_version,
            "safepredict_version": __version__,
            "policy_hash": ctx.policy_hash,
            "calibration_id": ctx.calibration_id,
            "n_features": ctx.n_features,
            "latency_s": latency,
        }
        # Bind the batch-wide fields once; each row then passes only its own.
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
        level = ctx.confidence_level
        no_inputs: list[Any] = [None] * n
        row_inputs = inputs if inputs is not None else no_inputs
        sent = dropped = 0
        for i in range(n):
            reasons = d.reasons[i]
            if reasons:
                guard_reasons = [r for r in reasons if is_guard_reason(r)]
                reason_list = list(reasons)
            else:
                guard_reasons = []
                reason_list = []
            if inputs is not None:
                extra = {**extra, "inputs": row_inputs[i]}
            try:
                method(
                    EVENT_DECISION,
                    decision_id=ids[i],
                    inputs_hash=hashes[i],
                    guard={
                        "status": "flag" if flagged[i] else "pass",
                        "reasons": guard_reasons,
                        "ood_score": ood[i],
                    },
                    prediction=preds[i],
                    probabilities=probs[i],
                    conformal={
                        "confidence_level": level,
                        "set": sets[i],
                        "set_size": sizes[i],
                        "interval": intervals[i],
                    },
                    confidence=conf[i],
                    tier=tiers[i],
                    action=actions[i],
                    reasons=reason_list,
                    audit=audits[i],
                    route=routes[i],
                    explanation=explanations[i],
                    **extra,
                )
                sent += 1
            except Exception:  # a failing sink never fails a decision; count it
                dropped += 1
        self._count(sent, dropped)
        if d.route is not None:
            sent += self._route_events(d, ctx, request_id, tiers, actions)
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
        for r in reasons:
            reason_counts[r] += 1
            if is_guard_reason(r):
                guard_counts[r.split(":", 1)[0]] += 1
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
