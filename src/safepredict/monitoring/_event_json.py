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
from collections.abc import Callable, Iterator, Mapping
from itertools import compress
from typing import Any

import numpy as np
from numpy.typing import NDArray

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

    HAS_ORJSON = True
except ImportError:  # pragma: no cover - orjson is in the `fast` extra and in CI
    HAS_ORJSON = False

__all__ = ["HAS_ORJSON", "ROW_FIELDS", "decision_head", "decision_lines", "dumps", "gc_paused"]


def _dumps_plain(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return json.dumps(to_builtin(value), ensure_ascii=False, allow_nan=False).encode("utf-8")


def dumps(value: Any) -> bytes:
    """Strict JSON bytes (orjson when installed); numpy values, NaN and lone surrogates cleaned."""
    if not HAS_ORJSON:
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
ROW_FIELDS = frozenset(
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


class _Codes(dict[Any, int]):
    """Value -> a small integer, numbered in order of first appearance."""

    def __missing__(self, key: Any) -> int:
        value = self[key] = len(self)
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


def _by_code(codes: NDArray[np.int64], fragment: Callable[[int], bytes]) -> list[bytes]:
    """Each row's fragment, rendered once per distinct code (``fragment(first row)``)."""
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    frags = [fragment(i) for i in first.tolist()]
    return list(map(frags.__getitem__, inverse.ravel().tolist()))


class _Lines:
    """A batch's JSON lines as segments, joined with one ``bytes.join``.

    Each segment is a constant (the same bytes in every row; adjacent constants
    are merged) or a column (one bytes per row). Rendering lays the segments out
    row-major in one list (one slice assignment per segment) and joins it. A
    *group* of segments (e.g. a row's probabilities) can be replaced by ``null``
    in chosen rows.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.segments: list[bytes | list[bytes]] = []
        self.nulls: list[tuple[int, int, list[int]]] = []
        self._open = False  # may the next constant extend the last segment?

    def const(self, data: bytes) -> None:
        if self._open:
            last = self.segments[-1]
            assert isinstance(last, bytes)
            self.segments[-1] = last + data
        else:
            self.segments.append(data)
            self._open = True

    def column(self, values: list[bytes]) -> None:
        self.segments.append(values)
        self._open = False

    def value(self, values: Any) -> None:
        """A column, or a constant when ``values`` is a ``bytes`` shared by every row."""
        if isinstance(values, bytes):
            self.const(values)
        else:
            self.column(values)

    def null_group(self, build: Callable[[], None], rows: list[int]) -> None:
        """The segments ``build`` adds, replaced by ``null`` in ``rows``."""
        self._open = False
        start = len(self.segments)
        build()
        self._open = False
        if rows:
            self.nulls.append((start, len(self.segments), rows))

    def render(self) -> bytes:
        n, stride = self.n, len(self.segments)
        out: list[bytes] = [b""] * (n * stride)
        for j, segment in enumerate(self.segments):
            out[j::stride] = [segment] * n if isinstance(segment, bytes) else segment
        for start, end, rows in self.nulls:
            for i in rows:
                base = i * stride
                out[base + start : base + end] = [_NULL] + [b""] * (end - start - 1)
        return b"".join(out)


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


def _reason_codes(reasons: list[Any]) -> tuple[NDArray[np.int64], list[tuple[str, ...]]]:
    """Each row's reason tuple as a code, and the distinct tuples in code order."""
    table = _Codes()
    try:
        codes = list(map(table.__getitem__, reasons))
    except TypeError:  # lists from a hand-built batch
        table.clear()
        codes = list(map(table.__getitem__, map(tuple, reasons)))
    return np.asarray(codes, dtype=np.int64), list(table)


def _set_codes(d: Decisions) -> NDArray[np.int64] | None:
    """One integer per distinct conformal set (``None`` beyond 62 classes)."""
    assert d.set_mask is not None
    mask = np.asarray(d.set_mask, dtype=bool)
    k = mask.shape[1]
    if k > 62:
        return None
    weights = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))
    return np.asarray((mask * weights).sum(axis=1), dtype=np.int64)


def decision_head(common: Mapping[str, Any], context_vars: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every decision event of a batch shares, in the order of the JSON log.

    ``event`` and ``level`` (structlog's ``add_log_level``), the batch-wide fields,
    then ``context_vars`` (structlog's contextvars) unless a field of the event has
    the same name, as structlog's ``merge_contextvars`` would.
    """
    head: dict[str, Any] = {"event": EVENT_DECISION, "level": "info", **common}
    for key, value in context_vars.items():
        if key not in ROW_FIELDS:
            head.setdefault(key, value)
    return head


def decision_lines(
    d: Decisions, ctx: EventContext, head_fields: Mapping[str, Any], inputs: list[Any] | None
) -> bytes:
    """The JSON lines of a batch's decision events, serialized column by column.

    Same content as the per-row structlog events rendered by the documented recipe
    (``add_log_level`` + ``JSONRenderer``): the batch-wide fields (``head_fields``,
    from :func:`decision_head`) are serialized once; a numeric column is one
    ``orjson`` call (whose ``NaN`` is ``null``) split into its values; the fields
    with few distinct values (guard status and reasons; the set and its size;
    tier, action, reasons and audit) are rendered once per distinct combination;
    and the rows are laid out and joined in C.
    """
    n = len(d)
    if n <= SMALL_BATCH:  # a few rows: dicts are cheaper than columns
        return b"".join(
            dumps({**head_fields, **fields}) + b"\n" for fields in row_fields(d, ctx, inputs)
        )
    reason_codes, distinct = _reason_codes(d.reasons)
    guard_json = _ReasonJson(guard_only=True)
    reason_json = _ReasonJson(guard_only=False)
    flagged = np.asarray(d.guard_flagged, dtype=bool)
    audit = np.asarray(d.audit, dtype=bool)
    lines = _Lines(n)
    lines.const(dumps(head_fields)[:-1] + b',"decision_id":')
    lines.column(_frag(d.decision_ids.tolist()))
    lines.const(b',"inputs_hash":')
    lines.value(_NULL if d.inputs_hash is None else _frag(d.inputs_hash.tolist()))
    lines.column(
        _by_code(
            reason_codes * 2 + flagged,
            lambda i: (
                b',"guard":{"status":'
                + _STATUS[bool(flagged[i])]
                + b',"reasons":'
                + guard_json[distinct[reason_codes[i]]]
                + b',"ood_score":'
            ),
        )
    )
    lines.value(_NULL if d.ood_scores is None else _frag(d.ood_scores.tolist()))
    lines.const(b'},"prediction":')
    lines.column(_frag(d.predictions.tolist()))
    lines.const(b',"probabilities":')
    if d.probabilities is not None and d.classes is not None:
        p, classes = d.probabilities, d.classes
        bad = np.flatnonzero(~np.isfinite(p).all(axis=1)).tolist()
        lines.null_group(lambda: _probabilities(lines, p, classes), bad)
    else:
        lines.const(_NULL)
    _conformal(lines, d, ctx)
    lines.const(b'},"confidence":')
    lines.column(_frag(d.confidence.tolist()))
    _decision(lines, d, reason_codes, distinct, reason_json, audit)
    lines.const(b',"route":')
    if d.route is None:
        lines.const(_NULL)
    else:
        lines.column([_NULL if r is None else dumps(to_builtin(dict(r))) for r in d.route])
    lines.const(b',"explanation":')
    if d.explanations is None:
        lines.const(_NULL)
    else:
        lines.column([_NULL if e is None else dumps(explanation_fields(e)) for e in d.explanations])
    if inputs is not None:
        lines.const(b',"inputs":')
        lines.column([dumps(row) for row in inputs])
    lines.const(b"}\n")
    return lines.render()


def _probabilities(lines: _Lines, p: NDArray[np.float64], classes: Any) -> None:
    """``{"<class>": p, ...}``: one float column per class."""
    for j, c in enumerate(classes.tolist()):
        lines.const((b"{" if j == 0 else b",") + dumps(safe_text(str(c))) + b":")
        lines.column(_frag(p[:, j].tolist()))
    lines.const(b"}")


def _conformal(lines: _Lines, d: Decisions, ctx: EventContext) -> None:
    """The ``conformal`` object up to its closing brace (set and size by set code)."""
    level = b',"conformal":{"confidence_level":' + dumps(float(ctx.confidence_level))
    if d.set_mask is None or d.classes is None:
        lines.const(level + b',"set":null,"set_size":null,"interval":')
    else:
        labels = [clean(c) for c in d.classes.tolist()]
        mask = np.asarray(d.set_mask, dtype=bool)

        def fragment(i: int) -> bytes:
            row = mask[i].tolist()
            members = dumps(list(compress(labels, row)))
            return level + b',"set":' + members + b',"set_size":' + str(sum(row)).encode()

        codes = _set_codes(d)
        if codes is None:  # too many classes for an integer key: row by row
            lines.column([fragment(i) for i in range(len(d))])
        else:
            lines.column(_by_code(codes, fragment))
        lines.const(b',"interval":')
    if d.intervals is None:
        lines.const(_NULL)
        return
    iv = d.intervals
    bad = np.flatnonzero(np.isnan(iv).any(axis=1)).tolist()

    def interval() -> None:
        lines.const(b"[")
        lines.column(_frag(iv[:, 0].tolist()))
        lines.const(b",")
        lines.column(_frag(iv[:, 1].tolist()))
        lines.const(b"]")

    lines.null_group(interval, bad)


def _decision(
    lines: _Lines,
    d: Decisions,
    reason_codes: NDArray[np.int64],
    distinct: list[tuple[str, ...]],
    reason_json: _ReasonJson,
    audit: NDArray[np.bool_],
) -> None:
    """``tier``, ``action``, ``reasons`` and ``audit``: one fragment per distinct combination."""
    tier_frags = [dumps(safe_text(str(t))) for t in d.tier_names]
    action_table = _Codes()
    actions = d.actions.tolist()
    action_codes = np.asarray(list(map(action_table.__getitem__, actions)), dtype=np.int64)
    tiers = np.asarray(d.tier_codes, dtype=np.int64)
    n_reasons, n_actions = len(distinct), len(action_table)
    codes = ((tiers * n_actions + action_codes) * n_reasons + reason_codes) * 2 + audit
    action_json = _Fragments()

    def fragment(i: int) -> bytes:
        return (
            b',"tier":'
            + tier_frags[int(tiers[i])]
            + b',"action":'
            + action_json[actions[i]]
            + b',"reasons":'
            + reason_json[distinct[reason_codes[i]]]
            + b',"audit":'
            + _BOOL[bool(audit[i])]
        )

    lines.column(_by_code(codes, fragment))
