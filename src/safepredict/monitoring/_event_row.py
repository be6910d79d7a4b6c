"""The JSON line of a one-row ``decide`` call (layer 2 writer), built without columns.

A single-row call (``decide_one``, a service request) would spend most of its
event cost on machinery sized for batches: a column per field, a generator, a dict
per row merged into the batch head. :meth:`RowRenderer.line` lays the line out
from a per-predictor :class:`_Template`: what does not change between calls (the
head up to the timestamp, the model identity, the conformal level, the field
names, the tier names, the class labels as probability keys) is encoded once, and
what takes few values (the guard status with its reasons; the set and its size;
tier, action, reasons and audit) once per distinct value; only the values of the
row (timestamp, ids, hash, latencies, prediction, probabilities, scores, interval,
route, explanation, inputs) are serialized per call: every number of the row in
one ``orjson.dumps`` split at the commas, the other values one call each. Without orjson, or for a
value orjson refuses (a lone surrogate, a numpy scalar), the line is
:meth:`RowRenderer.event` serialized whole. Either way it is byte for byte the line
:func:`safepredict.monitoring._event_json.decision_lines` writes for the same row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
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
from safepredict.monitoring._event_json import HAS_ORJSON, ROW_FIELDS, dumps
from safepredict.reasons import is_guard_reason

__all__ = ["RowRenderer", "timestamp"]

_dumps: Callable[[Any], bytes] = dumps
if HAS_ORJSON:
    import orjson

    _dumps = orjson.dumps

_ZERO_LATENCY = dict.fromkeys(LATENCY_STAGES, 0.0)
_MAX_REASONS = 4096
_NULL = b"null"
_NO_SET = b'null,"set_size":null'
#: Head fields of a one-row decision event, in the order of :meth:`RowRenderer.event`.
_HEAD_FIELDS = (
    "event",
    "level",
    "schema_version",
    "timestamp",
    "request_id",
    "batch_id",
    "batch_size",
    "model_name",
    "model_version",
    "safepredict_version",
    "policy_hash",
    "calibration_id",
    "n_features",
    "latency_s",
)
#: Contextvars a decision event leaves out (a field of the event has the name).
_SHADOWED = ROW_FIELDS | frozenset(_HEAD_FIELDS)
#: Types whose orjson rendering is the rendering of their ``clean`` value (NaN is null).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_ZEROS = (0.0,) * len(LATENCY_STAGES)
_STAGES = frozenset(LATENCY_STAGES)
_LATENCY = b"{" + b",".join(_dumps(k) + b":%s" for k in LATENCY_STAGES) + b"}"
_HEAD = (
    b'{"event":'
    + _dumps(EVENT_DECISION)
    + b',"level":"info","schema_version":'
    + _dumps(SCHEMA_VERSION)
    + b',"timestamp":"'
)
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


class _Cache(dict[Any, bytes]):
    """Key -> the JSON bytes ``build(key)`` renders, built on first use.

    Bounded like :class:`_Reasons`: past :data:`_MAX_REASONS` keys it starts over.
    """

    def __init__(self, build: Callable[[Any], bytes]) -> None:
        super().__init__()
        self.build = build

    def __missing__(self, key: Any) -> bytes:
        if len(self) >= _MAX_REASONS:
            self.clear()
        value = self[key] = self.build(key)
        return value


class _Template:
    """The pre-encoded parts of one predictor's one-row decision lines.

    Built once per model identity, tier names and class labels: the whole line as
    one ``%`` format (the constant fields, the model identity and the conformal
    level encoded, a ``%s`` per value of the row), the probabilities' keys as
    another, and, per distinct key, the guard object's head (status, guard
    reasons), the set and its size (per set mask) and the ``tier`` to ``audit`` run
    (per tier, action, reasons and audit flag).
    """

    def __init__(self, ctx: EventContext, tier_names: Any, labels: list[Any] | None) -> None:
        identity = (
            b',"batch_size":1,"model_name":'
            + _dumps(clean(ctx.model_name))
            + b',"model_version":'
            + _dumps(clean(ctx.model_version))
            + b',"safepredict_version":'
            + _dumps(__version__)
            + b',"policy_hash":'
            + _dumps(ctx.policy_hash)
            + b',"calibration_id":'
            + _dumps(ctx.calibration_id)
            + b',"n_features":'
            + _dumps(ctx.n_features)
            + b',"latency_s":'
        )
        level = b',"conformal":{"confidence_level":' + _dumps(ctx.confidence_level) + b',"set":'
        self.keys = None if labels is None else [safe_text(str(c)) for c in labels]
        #: ``{"<class>":%s,...}``: a finite probability row's values, in one format
        self.probabilities = _format(self.keys)
        #: the whole line as one ``%`` format (user text in the constants escaped)
        self.line = (
            _HEAD
            + b'%s","request_id":%s,"batch_id":%s'
            + identity.replace(b"%", b"%%")
            + _LATENCY
            + b'%s,"decision_id":%s,"inputs_hash":%s%s%s},"prediction":%s,"probabilities":%s'
            + level.replace(b"%", b"%%")
            + b'%s,"interval":%s},"confidence":%s%s,"route":%s,"explanation":%s%s}\n'
        )
        self._labels = [] if labels is None else [clean(c) for c in labels]
        self._tiers = [_dumps(safe_text(str(t))) for t in tier_names]
        self._reasons = _Reasons()
        self.sets = _Cache(self._set)
        self.guards = _Cache(self._guard)
        self.outcomes = _Cache(self._outcome)

    def _set(self, mask: tuple[bool, ...]) -> bytes:
        return _dumps(list(compress(self._labels, mask))) + b',"set_size":' + _dumps(sum(mask))

    def _guard(self, key: tuple[bool, tuple[Any, ...]]) -> bytes:
        flagged, reasons = key
        status = b'"flag"' if flagged else b'"pass"'
        guard_reasons = _dumps(self._reasons[reasons][1])
        return b',"guard":{"status":' + status + b',"reasons":' + guard_reasons + b',"ood_score":'

    def _outcome(self, key: tuple[int, Any, Any, tuple[Any, ...], bool]) -> bytes:
        tier, action, _, reasons, audit = key
        return (
            b',"tier":'
            + self._tiers[tier]
            + b',"action":'
            + _dumps(clean(action))
            + b',"reasons":'
            + _dumps(self._reasons[reasons][0])
            + b',"audit":'
            + _dumps(audit)
        )


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
        self._fast: tuple[Any, _Template | None] = (None, None)

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
        """The JSON line (with its newline) of the one-row batch ``d``.

        With orjson, the line is the predictor's cached :class:`_Template` filled
        with the row's values (each the very value :meth:`event` puts in the dict,
        serialized by ``orjson.dumps``, the numbers in one call); without orjson,
        or if any value needs :func:`dumps`'s cleaning, it is :meth:`event`
        serialized whole. Both give the same bytes: orjson serializes a dict as
        its values' serializations joined by the pre-encoded keys.
        """
        if HAS_ORJSON:
            try:
                return self._fast_line(d, ctx, request_id, context_vars, inputs)
            except Exception:  # a value orjson refuses: the dict path cleans it
                pass
        return dumps(self.event(d, ctx, request_id, context_vars, inputs)) + b"\n"

    def _template(self, d: Decisions, ctx: EventContext) -> _Template:
        labels = None if d.classes is None else d.classes.tolist()
        names = d.tier_names
        identity = (
            ctx.model_name,
            ctx.model_version,
            ctx.policy_hash,
            ctx.calibration_id,
            ctx.n_features,
            ctx.confidence_level,
        )
        key = (  # with the types: 1 == 1.0 == True, but not in JSON
            identity,
            tuple(map(type, identity)),
            None if labels is None else (*labels, *map(type, labels)),
            (*names, *map(type, names)),
        )
        cached_key, template = self._fast
        if key != cached_key or template is None:
            template = _Template(ctx, names, labels)
            self._fast = (key, template)
        return template

    def _fast_line(
        self,
        d: Decisions,
        ctx: EventContext,
        request_id: str | None,
        context_vars: Mapping[str, Any],
        inputs: list[Any] | None,
    ) -> bytes:
        t = self._template(d, ctx)
        lat = d.latency_s
        if not lat.keys() <= _STAGES:  # a stage the schema does not name: the dict path
            raise ValueError("unnamed latency stage")
        extra = b""
        if context_vars:
            fields = {k: v for k, v in context_vars.items() if k not in _SHADOWED}
            if fields:
                extra = b"," + _dumps(fields)[1:-1]
        reasons = d.reasons[0]
        if type(reasons) is not tuple:
            reasons = tuple(reasons)
        # every number of the row in one orjson call (NaN and infinities become null),
        # split at the commas: latencies, confidence, then the OOD score, the interval
        # and the probabilities when the decisions have them
        ood, intervals, probabilities = d.ood_scores, d.intervals, d.probabilities
        numbers = list(map(float, map(lat.get, LATENCY_STAGES, _ZEROS)))
        numbers.append(d.confidence.item())
        if ood is not None:
            numbers.append(ood.item())
        lo = hi = 0.0
        if intervals is not None:
            lo, hi = intervals.tolist()[0]
            numbers += (lo, hi)
        if probabilities is not None and t.probabilities is not None:
            numbers += probabilities.tolist()[0]
        pieces = _dumps(numbers)[1:-1].split(b",")
        k = 6
        ood_json = _NULL
        if ood is not None:
            ood_json = pieces[k]
            k += 1
        interval = _NULL
        if intervals is not None:
            if lo == lo and hi == hi:  # NaN: no interval (an infinite bound is null)
                interval = b"[" + pieces[k] + b"," + pieces[k + 1] + b"]"
            k += 2
        probs = _NULL
        if t.keys is not None and probabilities is not None:
            if t.probabilities is None:  # class labels that print alike: fewer keys
                row = probabilities.tolist()[0]
                if all(map(math.isfinite, row)):
                    probs = _dumps(dict(zip(t.keys, row, strict=True)))
            elif _NULL not in pieces[k:]:  # every probability finite
                probs = t.probabilities % tuple(pieces[k:])
        members = _NO_SET
        if t.keys is not None and d.set_mask is not None:
            members = t.sets[tuple(d.set_mask.tolist()[0])]
        prediction = d.predictions.item()
        decision_id = d.decision_ids.item()
        hashes, route, explanations = d.inputs_hash, d.route, d.explanations
        action = d.actions.item()
        return t.line % (
            timestamp().encode(),
            _NULL if request_id is None else _dumps(str(request_id)),
            _dumps(str(d.batch_id)),
            *pieces[:5],
            extra,
            _dumps(decision_id if type(decision_id) in _PLAIN else clean(decision_id)),
            _NULL if hashes is None else _dumps(hashes.item()),
            t.guards[d.guard_flagged.item(), reasons],
            ood_json,
            _dumps(prediction if type(prediction) in _PLAIN else clean(prediction)),
            probs,
            members,
            interval,
            pieces[5],
            t.outcomes[d.tier_codes.item(), action, type(action), reasons, d.audit.item()],
            _NULL if route is None or route[0] is None else _dumps(to_builtin(dict(route[0]))),
            _NULL if explanations is None else _dumps(explanation_fields(explanations[0])),
            b"" if inputs is None else b',"inputs":' + _dumps(inputs[0]),
        )


def _format(keys: list[str] | None) -> bytes | None:
    """``{"<key>":%s,...}``, a ``%`` format of an object with these keys (``None`` if repeated)."""
    if keys is None or len(set(keys)) != len(keys):
        return None
    return b"{" + b",".join(_dumps(k).replace(b"%", b"%%") + b":%s" for k in keys) + b"}"


def _finite(v: Any) -> Any:
    return v if v == v and v not in (math.inf, -math.inf) else None
