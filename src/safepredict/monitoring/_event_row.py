"""The JSON line of a one-row ``decide`` call (layer 2 writer), built without columns.

A single-row call (``decide_one``, a service request) spends most of its event
cost on machinery sized for batches: a column per field, a generator, a dict per
row merged into the batch head. :func:`single_line` builds the one event as one
dict straight from the row's values and serializes it with one ``orjson`` call;
what does not change between calls (the cleaned model identity, the tier names,
the class labels, each reason tuple's lists) is cached per
:class:`RowRenderer`. The line is byte for byte the one
:func:`safepredict.monitoring._event_json.decision_lines` writes for the same row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import compress
from typing import Any

from safepredict._jsonl import safe_text, to_builtin
from safepredict._version import __version__
from safepredict.decisions import Decisions
from safepredict.monitoring._event_fields import (
    EVENT_DECISION,
    LATENCY_STAGES,
    SCHEMA_VERSION,
    EventContext,
    clean,
    explanation_fields,
    needs_clean,
)
from safepredict.monitoring._event_json import ROW_FIELDS, dumps
from safepredict.reasons import is_guard_reason

__all__ = ["RowRenderer", "timestamp"]

_ZERO_LATENCY = dict.fromkeys(LATENCY_STAGES, 0.0)
_MAX_REASONS = 4096
#: ``(second, "YYYY-MM-DDTHH:MM:SS")`` of the last timestamp (one tuple: swapped atomically).
_second: list[tuple[int, str]] = [(-1, "")]


def timestamp() -> str:
    """The current UTC time as ``now_iso`` writes it, formatting the date once a second.

    Examples
    --------
    >>> from safepredict.monitoring._event_fields import now_iso
    >>> len(timestamp()) == len(now_iso()) and timestamp().endswith("Z")
    True
    """
    us = time.time_ns() // 1000
    second, micro = divmod(us, 1_000_000)
    cached_second, prefix = _second[0]
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (second, prefix)
    return f"{prefix}.{micro:06d}Z"


class _Reasons(dict[Any, tuple[list[str], list[str]]]):
    """A reason tuple -> (its reasons, its guard reasons), escaped once per distinct tuple.

    Bounded: past :data:`_MAX_REASONS` distinct tuples (reasons carrying free text)
    it starts over, so a long-running service never grows it without limit.
    """

    def __missing__(self, key: Any) -> tuple[list[str], list[str]]:
        if len(self) >= _MAX_REASONS:
            self.clear()
        reasons = [safe_text(str(r)) for r in key]
        value = self[key] = (reasons, [r for r in reasons if is_guard_reason(r)])
        return value


class RowRenderer:
    """Renders the decision event of one-row batches; caches what calls share.

    One instance per emitter; the caches are keyed by the values they were built
    from (model identity, tier names, class labels), so a recalibrated predictor
    or a new context is picked up on the next call.
    """

    def __init__(self) -> None:
        # each cache is one (key, value) tuple, replaced whole: a thread never pairs
        # one call's key with another call's value
        self._identity: tuple[Any, tuple[Any, Any]] = (None, (None, None))
        self._tiers: tuple[Any, list[str]] = (None, [])
        self._classes: tuple[Any, tuple[list[str], list[Any]]] = (None, ([], []))
        self._reasons = _Reasons()

    def _identity_of(self, ctx: EventContext) -> tuple[Any, Any]:
        name, version = ctx.model_name, ctx.model_version
        key = (name, version, type(name), type(version))  # 1 == 1.0, but not in JSON
        cached_key, value = self._identity
        if key != cached_key:
            value = (clean(ctx.model_name), clean(ctx.model_version))
            self._identity = (key, value)
        return value

    def _tier_names(self, names: Any) -> list[str]:
        key = (*names, *map(type, names))
        cached_key, value = self._tiers
        if key != cached_key:
            value = [safe_text(str(t)) for t in names]
            self._tiers = (key, value)
        return value

    def _class_labels(self, classes: Any) -> tuple[list[str], list[Any]]:
        labels = classes.tolist()
        key = (*labels, *map(type, labels))  # 1 == 1.0 == True, but not in JSON
        cached_key, value = self._classes
        if key != cached_key:
            value = ([safe_text(str(c)) for c in labels], [clean(c) for c in labels])
            self._classes = (key, value)
        return value

    def event(
        self,
        d: Decisions,
        ctx: EventContext,
        request_id: str | None,
        context_vars: Mapping[str, Any],
        inputs: list[Any] | None,
    ) -> dict[str, Any]:
        """The decision event of the one-row batch ``d``, as the JSON log holds it."""
        model_name, model_version = self._identity_of(ctx)
        latency = _ZERO_LATENCY.copy()
        if d.latency_s:
            latency.update({k: float(v) for k, v in d.latency_s.items()})
        event: dict[str, Any] = {
            "event": EVENT_DECISION,
            "level": "info",
            "schema_version": SCHEMA_VERSION,
            "timestamp": timestamp(),
            "request_id": None if request_id is None else safe_text(str(request_id)),
            "batch_id": safe_text(str(d.batch_id)),
            "batch_size": 1,
            "model_name": model_name,
            "model_version": model_version,
            "safepredict_version": __version__,
            "policy_hash": ctx.policy_hash,
            "calibration_id": ctx.calibration_id,
            "n_features": ctx.n_features,
            "latency_s": latency,
        }
        for key, value in context_vars.items():
            if key not in ROW_FIELDS and key not in event:
                event[key] = value
        reasons, guard_reasons = self._reasons[tuple(d.reasons[0])]
        # ``item()`` of a one-element array is the Python value ``tolist()`` would give
        prediction = d.predictions.item()
        if needs_clean(prediction):
            prediction = clean(prediction)
        probabilities: Any = None
        set_: Any = None
        set_size: Any = None
        if d.classes is not None and (d.probabilities is not None or d.set_mask is not None):
            keys, labels = self._class_labels(d.classes)
            if d.probabilities is not None:
                row = d.probabilities.tolist()[0]
                if all(map(math.isfinite, row)):
                    probabilities = dict(zip(keys, row, strict=True))
            if d.set_mask is not None:
                mask = d.set_mask.tolist()[0]
                set_, set_size = list(compress(labels, mask)), sum(mask)
        interval: Any = None
        if d.intervals is not None:
            lo, hi = d.intervals.tolist()[0]
            if lo == lo and hi == hi:
                interval = [lo, hi]
        ood = None if d.ood_scores is None else _finite(d.ood_scores.item())
        route = None if d.route is None or d.route[0] is None else to_builtin(dict(d.route[0]))
        explanation = None if d.explanations is None else explanation_fields(d.explanations[0])
        event.update(
            decision_id=clean(d.decision_ids.item()),
            inputs_hash=None if d.inputs_hash is None else d.inputs_hash.item(),
            guard={
                "status": "flag" if d.guard_flagged.item() else "pass",
                "reasons": list(guard_reasons),
                "ood_score": ood,
            },
            prediction=prediction,
            probabilities=probabilities,
            conformal={
                "confidence_level": ctx.confidence_level,
                "set": set_,
                "set_size": set_size,
                "interval": interval,
            },
            confidence=_finite(d.confidence.item()),
            tier=self._tier_names(d.tier_names)[d.tier_codes.item()],
            action=clean(d.actions.item()),
            reasons=list(reasons),
            audit=d.audit.item(),
            route=route,
            explanation=explanation,
        )
        if inputs is not None:
            event["inputs"] = inputs[0]
        return event

    def line(
        self,
        d: Decisions,
        ctx: EventContext,
        request_id: str | None,
        context_vars: Mapping[str, Any],
        inputs: list[Any] | None,
    ) -> bytes:
        """The JSON line (with its newline) of the one-row batch ``d``."""
        return dumps(self.event(d, ctx, request_id, context_vars, inputs)) + b"\n"


def _finite(v: Any) -> Any:
    return v if v == v and v not in (math.inf, -math.inf) else None
