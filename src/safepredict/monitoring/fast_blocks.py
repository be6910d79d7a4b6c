"""The monitor's block decoder: a block of decision events counted column-wise (layer 4).

The line-by-line path of :class:`~safepredict.monitoring.aggregate.Aggregator`
parses each event into a full dict (orjson) and checks and counts it in Python.
:func:`fold_block` decodes each line of a block with msgspec into a small struct
holding only the fields the monitor counts (the rest of the event is skipped
without building Python objects), then counts the whole block at once: one
``Counter`` over the block's (window, tier, action, calibration, batch)
signatures, the confidences appended per window in file order.

The result is the same report, number for number: a block is folded here only
when every line is a well-formed decision event or a line that is not a
safepredict event; otherwise (a malformed event, a calibration, batch or route
event, a blank or broken line, feature or interval-width drift) :func:`fold_block`
returns ``None`` before changing anything and the block takes the line-by-line
path. Needs ``msgspec`` (the ``fast`` extra).

Examples
--------
>>> from safepredict.monitoring.aggregate import Aggregator
>>> agg = Aggregator(0.0, {}, engine="lines")
>>> line = b'{"event": "safepredict.decision", "tier": "auto", "action": "accept"}'
>>> fold_block(agg, [line, line], "log", 1 << 16)
2
>>> fold_block(agg, [line, b"not json"], "log", 1 << 16) is None  # the line path's job
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec
import numpy as np

from safepredict._jsonl import loads as _loads
from safepredict.monitoring.windows import Window

__all__ = ["Counts", "fold_block"]


class Counts(Protocol):
    """What :func:`fold_block` reads and updates: an ``Aggregator``'s counters."""

    events: Counter[str]
    signatures: dict[tuple[Any, ...], int]
    values: dict[tuple[int, Any, bool], list[float]]
    bins: dict[str, tuple[list[float], list[float]]]
    widths: set[str]
    features: dict[str, dict[str, Any]]
    joined: Mapping[str, Any]

    def key(self, ts: Any) -> int:
        """The index of the window timestamp ``ts`` falls in."""

    def window(self, key: int) -> Window:
        """The window with index ``key``."""

    def new_signature(self, key: int, batch: Any, lat: Any) -> None:
        """Count a batch the first time one of its decisions is seen."""

    def flush(self) -> None:
        """Bin the buffered confidences."""

    def score(self, ev: Mapping[str, Any], did: str, tier: str, action: str, cal: Any) -> None:
        """Score a decision whose outcome is joined."""


_DECISION = "safepredict.decision"
_NULL = msgspec.Raw(b"null")


class _Guard(msgspec.Struct):
    """The guard fields the monitor reads."""

    status: Any = None
    reasons: Any = None


class _Decision(msgspec.Struct):
    """The fields of a decision event the monitor counts (others are skipped unparsed).

    Typed fields reject what the line path would report as malformed, so such a
    block falls back to it; ``latency_s`` stays raw JSON, parsed only for the first
    decision of each batch.
    """

    event: Any = None
    timestamp: str | None = None
    tier: str | None = None
    action: str | None = None
    calibration_id: str | None = None
    batch_id: str | None = None
    confidence: float | None = None
    reasons: list[str] | None = None
    guard: _Guard | None = None
    latency_s: msgspec.Raw = _NULL
    decision_id: Any = None


_decode = msgspec.json.Decoder(_Decision).decode


def _strings(v: Any) -> bool:
    return type(v) is list and all(type(r) is str for r in v)


def _decisions(lines: list[bytes]) -> tuple[list[_Decision], list[int] | None, int] | None:
    """The block's decision events, their line indices (``None``: all lines), other lines.

    ``None`` when a line does not decode or a safepredict event that is not a
    decision is in the block.
    """
    try:
        evs = [_decode(line) for line in lines]
    except msgspec.DecodeError:  # broken line, wrong field type, blank line
        return None
    names = [e.event for e in evs]
    n = names.count(_DECISION)
    if n == len(evs):
        return evs, None, 0
    if any(type(x) is str and x.startswith("safepredict.") and x != _DECISION for x in names):
        return None
    index = [i for i, x in enumerate(names) if x == _DECISION]
    return [evs[i] for i in index], index, len(evs) - n


def _valid(dec: list[_Decision]) -> list[tuple[int, list[str]]] | None:
    """Indices and reason lists of guard-flagged decisions, ``None`` if any is malformed."""
    if None in [e.tier for e in dec] or None in [e.action for e in dec]:
        return None
    conf = np.array([e.confidence for e in dec], dtype=np.float64)  # None -> nan
    if np.any((conf < 0.0) | (conf > 1.0)):
        return None
    flagged = []
    for i, g in enumerate([e.guard for e in dec]):
        if g is not None and g.status == "flag":
            reasons = g.reasons or []
            if not _strings(reasons):
                return None
            flagged.append((i, reasons))
    return flagged


def fold_block(agg: Counts, lines: list[bytes], source: str, flush_every: int) -> int | None:
    """Count a block of lines into ``agg``; ``None`` (``agg`` untouched) if the line path must.

    Returns the number of safepredict events read, as
    :meth:`~safepredict.monitoring.aggregate.Aggregator.feed` does.
    ``flush_every`` is the aggregator's buffer size: confidences are binned at
    the same points as on the line path, so running sums add in the same order.
    """
    if agg.features or agg.widths:  # feature rows and interval widths: the line path
        return None
    found = _decisions(lines)
    if found is None:
        return None
    dec, index, skipped = found
    flagged = _valid(dec)
    if flagged is None:
        return None
    agg.events["skipped"] += skipped
    if not dec:
        return 0
    agg.events["decision"] += len(dec)
    stamps = [e.timestamp for e in dec]
    key_of = {ts: agg.key(ts) for ts in set(stamps)}
    keys = list(map(key_of.__getitem__, stamps))
    cals = [e.calibration_id for e in dec]
    batches = [e.batch_id for e in dec]
    sigs = list(
        zip(keys, [e.tier for e in dec], [e.action for e in dec], cals, batches, strict=True)
    )
    _count(agg, dec, sigs)
    for k, reasons in [(k, e.reasons) for k, e in zip(keys, dec, strict=True) if e.reasons]:
        agg.window(k).reasons.update(reasons)
    for i, reasons in flagged:
        w = agg.window(keys[i])
        w.guard_flagged += 1
        w.guard.update({r.split(":", 1)[0] for r in reasons})
    _append_values(agg, dec, keys, cals, flush_every)
    if agg.joined:
        _join(agg, dec, lines, index, cals)
    return len(dec)


def _count(agg: Counts, dec: list[_Decision], sigs: list[tuple[Any, ...]]) -> None:
    """Add the block's signature counts; a new signature counts its batch (first row's latency)."""
    signatures = agg.signatures
    counts = Counter(sigs)  # in order of first appearance, as the line path meets them
    first: dict[tuple[Any, ...], int] | None = None
    for sig, c in counts.items():
        before = signatures.get(sig)
        if before is not None:
            signatures[sig] = before + c
            continue
        if first is None:  # index of each signature's first row, in one C-level pass
            first = dict(zip(reversed(sigs), range(len(sigs) - 1, -1, -1), strict=True))
        signatures[sig] = c
        raw = dec[first[sig]].latency_s
        agg.new_signature(sig[0], sig[4], None if raw is _NULL else _loads(bytes(raw)))


def _append_values(
    agg: Counts, dec: list[_Decision], keys: list[int], cals: list[Any], flush_every: int
) -> None:
    """Append confidences per (window, calibration, drift?); flush where the line path does."""
    conf = [e.confidence for e in dec]
    if None in conf:
        keep = [i for i, c in enumerate(conf) if c is not None]
        conf, keys, cals = [conf[i] for i in keep], [keys[i] for i in keep], [cals[i] for i in keep]
    values, bins = agg.values, agg.bins
    buffered = sum(map(len, values.values()))
    start, n = 0, len(conf)
    while start < n:
        end = min(n, start + flush_every - buffered)
        groups = list(zip(keys[start:end], cals[start:end], strict=True))
        if groups.count(groups[0]) == len(groups):
            parts: dict[tuple[Any, Any], list[Any]] = {groups[0]: conf[start:end]}
        else:
            parts = {}
            for g, v in zip(groups, conf[start:end], strict=True):
                parts.setdefault(g, []).append(v)
        for (k, cal), vals in parts.items():
            values.setdefault((k, cal, cal in bins), []).extend(vals)
        buffered += end - start
        start = end
        if buffered >= flush_every:
            agg.flush()
            buffered = 0


def _join(
    agg: Counts, dec: list[_Decision], lines: list[bytes], index: list[int] | None, cals: list[Any]
) -> None:
    """Score the joined outcomes (re-parsing only their lines), in file order."""
    joined = agg.joined
    for j, e in enumerate(dec):
        did = e.decision_id
        if type(did) is str and did in joined:
            ev = _loads(lines[j if index is None else index[j]])
            agg.score(ev, did, str(e.tier), str(e.action), cals[j])
