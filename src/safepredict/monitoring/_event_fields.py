"""What an event says (layer 2 writer): decision, batch and calibration events as fields.

The builders here return dicts and columns of JSON-safe builtins and never write;
:mod:`safepredict.monitoring.events` hands them to a logger and
:mod:`safepredict.monitoring._event_json` renders a batch column by column.
:class:`DecisionColumns` builds the per-row fields of a batch column by column
(one ``tolist`` per array, one conversion per distinct reason tuple), shared by the
structlog path (:func:`row_fields`), the JSON-lines path and the columnar log.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._jsonl import safe_text, to_builtin
from safepredict._version import __version__
from safepredict.decisions import Decisions
from safepredict.reasons import is_guard_reason

__all__ = [
    "EVENT_BATCH",
    "EVENT_CALIBRATION",
    "EVENT_DECISION",
    "EVENT_ROUTE",
    "EVENT_THRESHOLD_CHANGE",
    "EVENT_TIER_ALARM",
    "EVENT_UNCERTIFIED",
    "LATENCY_STAGES",
    "ROUTE_STATUSES",
    "SCHEMA_VERSION",
    "SMALL_BATCH",
    "TOP_K",
    "DecisionColumns",
    "EventContext",
    "batch_event",
    "calibration_events",
    "clean",
    "decision_header",
    "explanation_fields",
    "finite_list",
    "identity_fields",
    "latencies",
    "needs_clean",
    "now_iso",
    "row_fields",
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
TOP_K = 5

#: Up to this many rows, events are built row by row (dicts are cheaper than columns).
SMALL_BATCH = 8

_SIMPLE = (str, int, float, bool, type(None))
#: The stages every event's ``latency_s`` names (0.0 when a stage did not run).
LATENCY_STAGES = ("total", "guard", "model", "conformal", "explain")


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string ending in ``Z``.

    Examples
    --------
    >>> now_iso().endswith("Z")
    True
    """
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def clean(value: Any) -> Any:
    kind = type(value)
    if kind in _SIMPLE:
        if kind is float and not math.isfinite(value):
            return None
        if kind is str:
            return safe_text(value)
        return value
    return to_builtin(value)


def needs_clean(value: Any) -> bool:
    kind = type(value)
    return (
        kind not in _SIMPLE
        or (kind is float and not math.isfinite(value))
        or (kind is str and not value.isascii())
    )


def finite_list(values: NDArray[np.float64]) -> list[float | None]:
    return [v if v == v and v not in (math.inf, -math.inf) else None for v in values.tolist()]


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


def identity_fields(context: EventContext) -> dict[str, Any]:
    """The fields naming the event's schema, time, model, policy and calibration."""
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp": now_iso(),
        "model_name": context.model_name,
        "model_version": context.model_version,
        "safepredict_version": __version__,
        "policy_hash": context.policy_hash,
        "calibration_id": context.calibration_id,
    }


def latencies(d: Decisions) -> dict[str, float]:
    """Seconds per stage of a ``decide`` call (every stage of :data:`LATENCY_STAGES` named)."""
    latency = dict.fromkeys(LATENCY_STAGES, 0.0)
    latency.update({k: float(v) for k, v in d.latency_s.items()})
    return latency


def decision_header(d: Decisions, ctx: EventContext, request_id: str | None) -> dict[str, Any]:
    """The batch-wide fields of a batch's decision events (serialized once per batch)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp": now_iso(),
        "request_id": None if request_id is None else safe_text(str(request_id)),
        "batch_id": safe_text(str(d.batch_id)),
        "batch_size": len(d),
        "model_name": clean(ctx.model_name),
        "model_version": clean(ctx.model_version),
        "safepredict_version": __version__,
        "policy_hash": ctx.policy_hash,
        "calibration_id": ctx.calibration_id,
        "n_features": ctx.n_features,
        "latency_s": latencies(d),
    }


def calibration_events(
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
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(level, event, fields)`` of ``safepredict.calibration`` and each uncertified tier."""
    common = identity_fields(context)
    payload = {
        **common,
        "task": task,
        "policy": to_builtin(dict(policy)),
        "calibration_size": int(calibration_size),
        "n_features": int(context.n_features),
        "confidence_level": float(context.confidence_level),
        "conformity_score": conformity_score,
        "conformal_quantile": clean(float(quantile)),
        "thresholds": to_builtin(dict(thresholds)),
        "tier_report": to_builtin(dict(report)) if report else None,
        "certified": {str(k): bool(v) for k, v in certified.items()},
        "baseline": to_builtin(dict(baseline)),
    }
    out = [("info", EVENT_CALIBRATION, payload)]
    tiers = {t["name"]: t for t in policy.get("tiers", [])}
    for name, ok in certified.items():
        if ok:
            continue
        tier = tiers.get(name, {})
        why = report.get(name, {}) if isinstance(report, Mapping) else {}
        warning = {
            **common,
            "tier": str(name),
            "max_error": clean(tier.get("max_error")),
            "delta": clean(policy.get("delta")),
            "calibration_size": int(calibration_size),
            "detail": to_builtin(why) if why else None,
            "message": (
                f"tier {name!r} could not be certified on {calibration_size} calibration "
                "rows; it accepts nothing until recalibrated with more data"
            ),
        }
        out.append(("warning", EVENT_UNCERTIFIED, warning))
    return out


def explanation_fields(e: Any) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "method": str(e.method),
        "top": [[str(f), clean(v)] for f, v in e.top(TOP_K)],
        "base_value": clean(float(e.base_value)),
    }


def batch_event(d: Decisions, ctx: EventContext, request_id: str | None) -> dict[str, Any]:
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
        "latency_s": latencies(d),
    }


def _texts(values: list[Any]) -> list[Any]:
    """``values`` with any string UTF-8 cannot encode escaped (one check when all are ASCII)."""
    try:
        if "".join(values).isascii():
            return values
    except TypeError:  # not all strings
        pass
    return [clean(v) for v in values]


class _ReasonFragments(dict[Any, tuple[list[str], list[str]]]):
    """A row's reason tuple -> (reasons, guard reasons), computed once per distinct tuple."""

    def __missing__(self, key: Any) -> tuple[list[str], list[str]]:
        reasons = [safe_text(str(r)) for r in key]
        value = self[key] = (reasons, [r for r in reasons if is_guard_reason(r)])
        return value


class DecisionColumns:
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
        self.confidence = finite_list(d.confidence)
        self.ood: list[Any] = [None] * n if d.ood_scores is None else finite_list(d.ood_scores)
        self._reasons = _ReasonFragments()

    def reason_lists(self, reasons: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """(all reasons, guard reasons) of one row, escaped."""
        return self._reasons[tuple(reasons)]

    def predictions(self) -> list[Any]:
        preds: list[Any] = self.d.predictions.tolist()
        if any(map(needs_clean, preds)):  # numpy scalars, NaN, non-ASCII text, objects
            preds = [clean(p) for p in preds]
        return preds

    def labels(self) -> list[Any]:
        assert self.d.classes is not None
        return [clean(c) for c in self.d.classes.tolist()]

    def probability_dicts(self) -> list[Any]:
        d = self.d
        if d.probabilities is None or d.classes is None:
            return [None] * self.n
        keys = [safe_text(str(c)) for c in d.classes.tolist()]
        rows = d.probabilities.tolist()
        if self.n <= SMALL_BATCH:
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
        return [explanation_fields(e) for e in self.d.explanations]

    def routes(self) -> list[Any]:
        if self.d.route is None:
            return [None] * self.n
        return [None if r is None else to_builtin(dict(r)) for r in self.d.route]


def row_fields(
    d: Decisions, ctx: EventContext, inputs: list[Any] | None
) -> Iterator[dict[str, Any]]:
    """The per-row fields of each decision event, as fresh dicts (the structlog path)."""
    cols = DecisionColumns(d)
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
