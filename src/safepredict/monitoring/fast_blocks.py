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
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np

from safepredict._jsonl import loads as _loads
from safepredict.monitoring.windows import Window

if TYPE_CHECKING:
    from safepredict.monitoring.journal import Journal

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
    journal: Journal | None

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


#: One row per event: the fields its signature and checks read, in one C-level pass.
_ROW = attrgetter("event", "timestamp", "tier", "action", "calibration_id", "batch_id")


@dataclass
class _Block:
    """A decoded block: its decision events and what they add besides the counts."""

    dec: list[Any]
    rows: list[tuple[Any, ...]]  # _ROW of each decision
    counts: Counter[tuple[Any, ...]]  # of the rows, in order of first appearance
    index: list[int] | None  # line of each decision (None: every line is one)
    skipped: int
    conf: list[float | None] = field(default_factory=list)
    reasons: list[tuple[int, list[Any]]] = field(default_factory=list)  # non-empty, file order
    flagged: list[tuple[int, list[str]]] = field(default_factory=list)  # guard-flagged rows


def _decisions(lines: list[bytes], joined: bool) -> _Block | None:
    """The block's decision events; ``None`` if a line does not decode or is another event.

    Lines that are not safepredict events are counted as skipped; a calibration,
    batch or route event sends the block to the line path.
    """
    decode = _decode_joined if joined else _decode
    try:
        if not all(map(bytes.isascii, lines)):  # the line path rejects invalid UTF-8
            for line in lines:  # anywhere in a line, even in a field skipped here
                line.decode()
        evs = [decode(line) for line in lines]
        rows = list(map(_ROW, evs))
        counts = Counter(rows)
    except (msgspec.DecodeError, TypeError, UnicodeDecodeError):  # broken/blank line, odd type
        return None
    if all(r[0] == _DECISION for r in counts):
        return _Block(evs, rows, counts, None, 0)
    names = {r[0] for r in counts}
    if any(type(x) is str and x.startswith("safepredict.") and x != _DECISION for x in names):
        return None
    index = [i for i, r in enumerate(rows) if r[0] == _DECISION]
    rows = [rows[i] for i in index]
    return _Block([evs[i] for i in index], rows, Counter(rows), index, len(evs) - len(index))


def _check(block: _Block) -> bool:
    """Whether every decision is well formed (the line path's checks); fills the extras."""
    if any(r[2] is None or r[3] is None for r in block.counts):  # tier, action
        return False
    block.conf = [e.confidence for e in block.dec]
    conf = np.array(block.conf, dtype=np.float64)  # None -> nan
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
    key_of = {r[1]: agg.key(r[1]) for r in block.counts}
    # (window, tier, action, calibration, batch) counts, in order of first appearance:
    # a signature first appears with the first of its rows to appear
    sigs: dict[tuple[Any, ...], int] = {}
    first_row: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row, c in block.counts.items():
        sig = (key_of[row[1]], *row[2:])
        if sig in sigs:
            sigs[sig] += c
        else:
            sigs[sig] = c
            if sig not in agg.signatures:
                first_row[sig] = row
    latency = _latency(block, first_row)
    if latency is None:
        return None
    # ---- from here on agg changes; every check above has passed
    agg.events["skipped"] += block.skipped
    agg.events["decision"] += len(block.dec)
    for sig, c in sigs.items():
        before = agg.signatures.get(sig)
        if before is None:
            agg.signatures[sig] = c
            agg.new_signature(sig[0], sig[4], latency[sig])
        else:
            agg.signatures[sig] = before + c
    one_window = len(set(key_of.values())) == 1
    if one_window:  # one update per counter, in file order
        key = next(iter(key_of.values()))
        if block.reasons:
            agg.window(key).reasons.update(chain.from_iterable(r for _, r in block.reasons))
        if block.flagged:
            w = agg.window(key)
            w.guard_flagged += len(block.flagged)
            w.guard.update(
                chain.from_iterable({r.split(":", 1)[0] for r in f} for _, f in block.flagged)
            )
    else:
        for i, reasons in block.reasons:
            agg.window(key_of[block.rows[i][1]]).reasons.update(reasons)
        for i, flags in block.flagged:
            w = agg.window(key_of[block.rows[i][1]])
            w.guard_flagged += 1
            w.guard.update({r.split(":", 1)[0] for r in flags})
    _append_values(agg, block, key_of, one_window, flush_every)
    if agg.joined:
        _join(agg, block, lines)
    return len(block.dec)


def _latency(
    block: _Block, first_row: dict[tuple[Any, ...], tuple[Any, ...]]
) -> dict[tuple[Any, ...], Any] | None:
    """The parsed ``latency_s`` of each new signature's first row (``None``: unparsable)."""
    if not first_row:
        return {}
    rows = block.rows
    first = dict(zip(reversed(rows), range(len(rows) - 1, -1, -1), strict=True))
    try:
        return {
            sig: _loads(bytes(block.dec[first[row]].latency_s)) for sig, row in first_row.items()
        }
    except ValueError:
        return None


def _append_values(
    agg: Counts, block: _Block, key_of: dict[Any, int], one_window: bool, flush_every: int
) -> None:
    """Append confidences per (window, calibration, drift?); flush where the line path does."""
    conf = block.conf
    if one_window and len({r[4] for r in block.counts}) == 1:
        k, cal = next(iter(key_of.values())), block.rows[0][4]
        groups: list[tuple[Any, Any]] | None = None
        if None in conf:
            conf = [c for c in conf if c is not None]
    else:
        groups = [(key_of[r[1]], r[4]) for r in block.rows]
        if None in conf:
            keep = [i for i, c in enumerate(conf) if c is not None]
            conf, groups = [conf[i] for i in keep], [groups[i] for i in keep]
    if agg.journal is not None:  # a worker: the values in file order, binned by the parent
        agg.journal.extend(groups if groups is not None else (k, cal), conf)
        return
    values, bins = agg.values, agg.bins
    buffered = sum(map(len, values.values()))
    start, n = 0, len(conf)
    while start < n:
        end = min(n, start + flush_every - buffered)
        parts: dict[tuple[Any, Any], list[Any]]
        if groups is None:
            parts = {(k, cal): conf[start:end]}
        else:
            parts = {}
            for g, v in zip(groups[start:end], conf[start:end], strict=True):
                parts.setdefault(g, []).append(v)
        for (key, c), vals in parts.items():
            values.setdefault((key, c, c in bins), []).extend(vals)
        buffered += end - start
        start = end
        if buffered >= flush_every:
            agg.flush()
            buffered = 0


def _join(agg: Counts, block: _Block, lines: list[bytes]) -> None:
    """Score the joined outcomes (re-parsing only their lines), in file order."""
    joined, index = agg.joined, block.index
    for j, e in enumerate(block.dec):
        did = e.decision_id
        if type(did) is str and did in joined:
            ev = _loads(lines[j if index is None else index[j]])
            agg.score(ev, did, str(e.tier), str(e.action), e.calibration_id)
