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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
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
#: Raw ``reasons`` values that add nothing (anything else is parsed and checked).
_NO_REASONS = frozenset((b"[]", b"null"))


class _Decision(msgspec.Struct, gc=False):
    """The fields of a decision event the monitor counts (others are skipped unparsed).

    Typed fields reject what the line path would report as malformed, so such a
    block falls back to it. ``reasons``, ``guard`` and ``latency_s`` stay raw JSON:
    parsed (with the line path's parser and checks) only when they can count,
    i.e. non-empty reasons, a guard that may say ``"flag"``, a batch's first row.
    """

    event: Any = None
    timestamp: str | None = None
    tier: str | None = None
    action: str | None = None
    calibration_id: str | None = None
    batch_id: str | None = None
    confidence: float | None = None
    reasons: msgspec.Raw = _NULL
    guard: msgspec.Raw = _NULL
    latency_s: msgspec.Raw = _NULL


class _Joined(_Decision, gc=False):
    """A decision event with its ``decision_id`` (read when outcomes are joined)."""

    decision_id: Any = None


_decode = msgspec.json.Decoder(_Decision).decode
_decode_joined = msgspec.json.Decoder(_Joined).decode


def _strings(v: Any) -> bool:
    return type(v) is list and all(type(r) is str for r in v)


@dataclass
class _Block:
    """A decoded block: its decision events and what they add besides the counts."""

    dec: list[Any]
    index: list[int] | None  # line of each decision (None: every line is one)
    skipped: int
    reasons: list[tuple[int, list[Any]]]  # (decision, non-empty reasons) in file order
    flagged: list[tuple[int, list[str]]]  # (decision, guard reasons) of guard-flagged rows


def _decisions(lines: list[bytes], joined: bool) -> _Block | None:
    """The block's decision events; ``None`` if a line does not decode or is another event.

    Lines that are not safepredict events are counted as skipped; a calibration,
    batch or route event sends the block to the line path.
    """
    decode = _decode_joined if joined else _decode
    try:
        evs = [decode(line) for line in lines]
    except msgspec.DecodeError:  # broken line, wrong field type, blank line
        return None
    names = [e.event for e in evs]
    n = names.count(_DECISION)
    if n == len(evs):
        return _Block(evs, None, 0, [], [])
    if any(type(x) is str and x.startswith("safepredict.") and x != _DECISION for x in names):
        return None
    index = [i for i, x in enumerate(names) if x == _DECISION]
    return _Block([evs[i] for i in index], index, len(evs) - n, [], [])


def _check(block: _Block) -> bool:
    """Whether every decision is well formed (the line path's checks); fills the extras."""
    dec = block.dec
    if None in [e.tier for e in dec] or None in [e.action for e in dec]:
        return False
    conf = np.array([e.confidence for e in dec], dtype=np.float64)  # None -> nan
    if np.any((conf < 0.0) | (conf > 1.0)):
        return False
    try:
        return _reasons(block) and _guards(block)
    except ValueError:  # a value the line path's parser rejects: it skips the line
        return False


def _joined(raws: list[Any]) -> tuple[bytes, int]:
    r"""Raw values joined by blank lines (no value holds a newline), and how many are null.

    With two newlines between values, ``\nnull\n`` matches never overlap.
    """
    text = b"\n\n" + b"\n\n".join(raws) + b"\n\n"
    return text, text.count(b"\nnull\n")


def _where(raws: list[Any], text: bytes, needle: bytes) -> list[int]:
    """Indices of the raw values (joined in ``text``) that contain ``needle``."""
    hits = []
    pos = text.find(needle)
    while pos >= 0:
        hits.append(pos)
        pos = text.find(needle, pos + 1)
    if not hits:
        return []
    starts = np.cumsum([2, *[n + 2 for n in map(len, raws)]])[:-1]
    return sorted({int(i) for i in np.searchsorted(starts, hits, side="right") - 1})


def _reasons(block: _Block) -> bool:
    """Parse and check the non-empty ``reasons`` lists; False if one is malformed."""
    raws = [e.reasons for e in block.dec]
    text, nulls = _joined(raws)
    empty = text.count(b"\n[]\n")
    if nulls + empty == len(raws):
        return True  # all empty or null: nothing to count
    size = np.fromiter(map(len, raws), dtype=np.intp, count=len(raws))
    short = (size == 2) | (size == 4)  # where "[]" and "null" are
    # every short value is "[]" or "null": the others are the non-empty ones
    suspects = np.flatnonzero(~short) if int(short.sum()) == nulls + empty else range(len(raws))
    for i in suspects:
        raw = bytes(raws[i])
        if raw in _NO_REASONS:
            continue
        reasons = _loads(raw)
        if reasons and not _strings(reasons):
            return False
        if reasons:
            block.reasons.append((int(i), reasons))
    return True


def _guards(block: _Block) -> bool:
    """Find the guard-flagged rows; False if a guard is malformed."""
    raws = [e.guard for e in block.dec]
    text, nulls = _joined(raws)
    if b"\\" in text or nulls + text.count(b"\n{") != len(raws):
        suspects: Iterable[int] = range(
            len(raws)
        )  # escapes, or a guard that is not an object: parse all
    else:  # only a guard object containing "flag" can be flagged
        suspects = _where(raws, text, b'"flag"')
    for i in suspects:
        guard = _loads(bytes(raws[i]))
        if guard is None:
            continue
        if type(guard) is not dict:
            return False
        if guard.get("status") == "flag":
            flags = guard.get("reasons") or []
            if not _strings(flags):
                return False
            block.flagged.append((i, flags))
    return True


def fold_block(agg: Counts, lines: list[bytes], source: str, flush_every: int) -> int | None:
    """Count a block of lines into ``agg``; ``None`` (``agg`` untouched) if the line path must.

    Returns the number of safepredict events read, as
    :meth:`~safepredict.monitoring.aggregate.Aggregator.feed` does.
    ``flush_every`` is the aggregator's buffer size: confidences are binned at
    the same points as on the line path, so running sums add in the same order.
    """
    if agg.features or agg.widths:  # feature rows and interval widths: the line path
        return None
    block = _decisions(lines, bool(agg.joined))
    if block is None or not _check(block):
        return None
    dec = block.dec
    stamps = [e.timestamp for e in dec]
    key_of = {ts: agg.key(ts) for ts in set(stamps)}
    keys = list(map(key_of.__getitem__, stamps))
    cals = [e.calibration_id for e in dec]
    sigs = list(
        zip(
            keys,
            [e.tier for e in dec],
            [e.action for e in dec],
            cals,
            [e.batch_id for e in dec],
            strict=True,
        )
    )
    counts = Counter(sigs)  # in order of first appearance, as the line path meets them
    latency = _new_batches(agg, dec, sigs, counts)
    if latency is None:
        return None
    # ---- from here on agg changes; every check above has passed
    agg.events["skipped"] += block.skipped
    agg.events["decision"] += len(dec)
    for sig, c in counts.items():
        before = agg.signatures.get(sig)
        if before is None:
            agg.signatures[sig] = c
            agg.new_signature(sig[0], sig[4], latency[sig])
        else:
            agg.signatures[sig] = before + c
    if block.reasons and keys.count(keys[0]) == len(keys):  # one window: one update
        agg.window(keys[0]).reasons.update(chain.from_iterable(r for _, r in block.reasons))
    else:
        for i, reasons in block.reasons:
            agg.window(keys[i]).reasons.update(reasons)
    for i, flags in block.flagged:
        w = agg.window(keys[i])
        w.guard_flagged += 1
        w.guard.update({r.split(":", 1)[0] for r in flags})
    _append_values(agg, dec, keys, cals, flush_every)
    if agg.joined:
        _join(agg, dec, lines, block.index, cals)
    return len(dec)


def _new_batches(
    agg: Counts, dec: list[Any], sigs: list[tuple[Any, ...]], counts: Counter[tuple[Any, ...]]
) -> dict[tuple[Any, ...], Any] | None:
    """The parsed ``latency_s`` of each new signature's first row (``None``: unparsable)."""
    new = [sig for sig in counts if sig not in agg.signatures]
    if not new:
        return {}
    first = dict(zip(reversed(sigs), range(len(sigs) - 1, -1, -1), strict=True))
    try:
        return {sig: _loads(bytes(dec[first[sig]].latency_s)) for sig in new}
    except ValueError:
        return None


def _append_values(
    agg: Counts, dec: list[Any], keys: list[int], cals: list[Any], flush_every: int
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
    agg: Counts, dec: list[Any], lines: list[bytes], index: list[int] | None, cals: list[Any]
) -> None:
    """Score the joined outcomes (re-parsing only their lines), in file order."""
    joined = agg.joined
    for j, e in enumerate(dec):
        did = e.decision_id
        if type(did) is str and did in joined:
            ev = _loads(lines[j if index is None else index[j]])
            agg.score(ev, did, str(e.tier), str(e.action), cals[j])
