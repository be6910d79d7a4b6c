"""Event serialization (layer 2 writer): strict JSON bytes, a batch's lines column by column.

:func:`dumps` renders one event (orjson when installed, the stdlib otherwise; numpy
values, ``NaN`` and strings UTF-8 cannot encode are cleaned). :func:`decision_lines`
renders a whole batch of decision events without building a dict per row: the
batch-wide fields are serialized once, each per-row field once per column, and the
rows are joined in C. It never writes; :class:`~safepredict.monitoring.events.JsonlEventLog`
appends the bytes.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator, Mapping
from itertools import chain, compress, repeat
from typing import Any

import numpy as np

from safepredict._jsonl import safe_text, to_builtin
from safepredict.decisions import Decisions
from safepredict.monitoring._event_fields import (
    EVENT_DECISION,
    SMALL_BATCH,
    EventContext,
    clean,
    explanation_fields,
    row_fields,
)
from safepredict.reasons import is_guard_reason

try:  # orjson renders an event in about a microsecond; the stdlib is the fallback
    import orjson

    _ORJSON = True
except ImportError:  # pragma: no cover - orjson is in the `fast` extra and in CI
    _ORJSON = False

__all__ = ["decision_head", "decision_lines", "dumps", "gc_paused"]


def _dumps_plain(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return json.dumps(to_builtin(value), ensure_ascii=False, allow_nan=False).encode("utf-8")


def dumps(value: Any) -> bytes:
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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
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


# ------------------------------------------------------------- column-wise events
_NULL = b"null"
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


class _Fragments(dict[Any, bytes]):
    """Value -> its JSON bytes, computed on first use (few distinct values per column)."""

    def __missing__(self, key: Any) -> bytes:
        value = self[key] = dumps(clean(key))
        return value


def _frag(values: list[Any]) -> list[bytes]:
    """The JSON bytes of each value, from one serialization of the whole column.

    Numbers, ``null`` and strings without a comma serialize without a comma, so
    splitting the array's body on commas gives one piece per value; any other
    column (a comma inside a string) is serialized value by value.
    """
    body = dumps(values)[1:-1]
    pieces = body.split(b",")
    if len(pieces) == len(values) and body:
        return pieces
    return [dumps(v) for v in values]


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
        value = self[key] = dumps(reasons)
        return value


def _set_fragments(d: Decisions) -> tuple[Any, Any]:
    """The JSON of each row's conformal set and its size, one serialization per distinct set."""
    if d.set_mask is None or d.classes is None:
        return repeat(_NULL), repeat(_NULL)
    mask = np.asarray(d.set_mask, dtype=bool)
    k = mask.shape[1]
    labels = [clean(c) for c in d.classes.tolist()]
    if k > 62:  # too many classes for an integer key: row by row
        rows = mask.tolist()
        return [dumps(list(compress(labels, r))) for r in rows], _frag(mask.sum(axis=1).tolist())
    weights = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))
    keys = (mask * weights).sum(axis=1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    set_frags = [dumps(list(compress(labels, mask[i].tolist()))) for i in first.tolist()]
    size_frags = [str(int(mask[i].sum())).encode() for i in first.tolist()]
    codes = inverse.ravel().tolist()
    return list(map(set_frags.__getitem__, codes)), list(map(size_frags.__getitem__, codes))


def decision_head(common: Mapping[str, Any], context_vars: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every decision event of a batch shares, in the order of the JSON log.

    ``event`` and ``level`` (structlog's ``add_log_level``), the batch-wide fields,
    then ``context_vars`` (structlog's contextvars) unless a field of the event has
    the same name, as structlog's ``merge_contextvars`` would.
    """
    head: dict[str, Any] = {"event": EVENT_DECISION, "level": "info", **common}
    for key, value in context_vars.items():
        if key not in _ROW_FIELDS:
            head.setdefault(key, value)
    return head


def decision_lines(
    d: Decisions, ctx: EventContext, head_fields: Mapping[str, Any], inputs: list[Any] | None
) -> bytes:
    """The JSON lines of a batch's decision events, serialized column by column.

    Same content as the per-row structlog events rendered by the documented recipe
    (``add_log_level`` + ``JSONRenderer``): the batch-wide fields (``head_fields``,
    from :func:`decision_head`) are serialized once, each per-row field once per
    column (a float column is one ``orjson`` call, whose ``NaN`` is ``null``), and
    the rows are joined in C.
    """
    if len(d) <= SMALL_BATCH:  # a few rows: dicts are cheaper than columns
        return b"".join(
            dumps({**head_fields, **fields}) + b"\n" for fields in row_fields(d, ctx, inputs)
        )
    head = dumps(head_fields)[:-1]
    reasons: list[Any] = d.reasons
    if not all(map(tuple.__instancecheck__, reasons)):  # lists from a hand-built batch
        reasons = [tuple(r) for r in reasons]
    tier_frags = [dumps(safe_text(str(t))) for t in d.tier_names]
    action_frags = _Fragments()

    probs: Any = repeat(_NULL)
    if d.probabilities is not None and d.classes is not None:
        p = d.probabilities
        parts: list[Any] = []
        for j, c in enumerate(d.classes.tolist()):
            label = dumps(safe_text(str(c)))
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
        routes = [_NULL if r is None else dumps(to_builtin(dict(r))) for r in d.route]
    explanations: Any = repeat(_NULL)
    if d.explanations is not None:
        explanations = [
            _NULL if e is None else dumps(explanation_fields(e)) for e in d.explanations
        ]
    hashes: Any = repeat(_NULL) if d.inputs_hash is None else _frag(d.inputs_hash.tolist())
    ood: Any = repeat(_NULL) if d.ood_scores is None else _frag(d.ood_scores.tolist())
    level = dumps(float(ctx.confidence_level))
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
        columns += [repeat(b',"inputs":'), [dumps(row) for row in inputs]]
    columns.append(repeat(b"}\n"))
    return b"".join(chain.from_iterable(zip(*columns, strict=False)))
