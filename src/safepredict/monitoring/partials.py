r"""One byte range of a log aggregated in a worker process, and its exact in-order merge (layer 4).

:func:`fold_range` runs in a worker: it reads the lines of ``[start, end)`` into
a fresh :class:`~safepredict.monitoring.aggregate.Aggregator` primed with the
calibration state at ``start``, with a :class:`~safepredict.monitoring.journal.Journal`
attached, and returns a :class:`Partial`. :func:`merge` adds partials into the
parent's aggregator in file order:

- counts add (events, signatures, per-window tiers, actions, reasons, guard
  flags, routes, calibration ids, feature bins, joined-outcome counts); counters
  are updated in file order, so keys keep their order of first appearance (which
  breaks ties in the report's ``most_common`` lists), and the signatures, whose
  order of first appearance decides the same, are added in file order too;
- the journaled confidences are replayed into the parent's buffers, flushed
  (binned and summed) at the same points as one process would, with the
  calibration state switched where each calibration event flushed;
- batch latencies and absolute errors add in file order; a batch is counted
  once per window however many ranges it spans;
- the first malformed events quoted are the first in the file.

Examples
--------
>>> import pathlib, tempfile
>>> from safepredict.monitoring.aggregate import Aggregator
>>> from safepredict.monitoring.journal import snapshot
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
>>> line = b'{"event": "safepredict.decision", "tier": "t", "action": "accept", "confidence": 0.5}'
>>> _ = path.write_bytes((line + b"\n") * 3)
>>> agg = Aggregator(0.0, {})
>>> ranges = [(0, 86), (86, 258)]
>>> parts = [fold_range(str(path), a, b, 0.0, "auto", snapshot(agg)) for a, b in ranges]
>>> [merge(agg, p) for p in parts]
[1, 2]
>>> agg.finish()
>>> agg.windows[0].n, agg.windows[0].conf_sum
(3, 1.5)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safepredict.monitoring import aggregate
from safepredict.monitoring.aggregate import Aggregator, Outcome
from safepredict.monitoring.feature_drift import merge_counts
from safepredict.monitoring.journal import Journal, Record, State, adopt
from safepredict.monitoring.reading import range_blocks
from safepredict.monitoring.windows import Window

__all__ = ["Partial", "fold_range", "init_worker", "merge"]

#: The joined outcomes and audits of the run, set once per worker process.
_SHARED: tuple[Mapping[str, Any], Mapping[str, tuple[int, float | None]]] = ({}, {})


def init_worker(joined: Mapping[str, Any], audits: Mapping[str, tuple[int, float | None]]) -> None:
    """Process-pool initializer: the outcomes every range is joined against."""
    global _SHARED
    _SHARED = (joined, audits)


@dataclass
class Partial:
    """What one byte range added (see :func:`merge`)."""

    read: int
    events: Counter[str]
    windows: dict[int, Window]
    signatures: dict[tuple[Any, ...], int]
    per_tier: dict[str, Outcome]
    health: list[tuple[int, str, int, float | None]]
    malformed: list[dict[str, Any]]
    paths: Counter[str]
    calibration_lines: int
    journal: Record


def fold_range(
    path: str, start: int, end: int, window_s: float, engine: str, state: State
) -> Partial:
    """Aggregate the lines of bytes ``[start, end)`` of ``path`` (both at line starts).

    ``state`` is the calibration state at ``start``.
    """
    agg = Aggregator(window_s, _SHARED[0], _SHARED[1], engine)
    adopt(agg, state)
    journal = Journal.attach(agg)
    read = 0
    for block in range_blocks(Path(path), start, end):
        read += agg.feed(block, path)
    agg.flush()  # the feature rows still buffered
    return Partial(
        read,
        agg.events,
        agg.windows,
        agg.signatures,
        agg.per_tier,
        agg.health,
        agg.malformed,
        agg.paths,
        agg.calibration_lines,
        journal.record(),
    )


def merge(agg: Aggregator, part: Partial) -> int:
    """Add the next range's partial into ``agg`` (in file order); returns its events read."""
    _replay(agg, part.journal)
    agg.events.update(part.events)
    agg.paths.update(part.paths)
    agg.calibration_lines += part.calibration_lines
    for sig, c in part.signatures.items():
        agg.signatures[sig] = agg.signatures.get(sig, 0) + c
    for key, pw in part.windows.items():
        w = agg.window(key)
        w.n += pw.n
        w.guard_flagged += pw.guard_flagged
        w.tiers.update(pw.tiers)
        w.actions.update(pw.actions)
        w.guard.update(pw.guard)
        w.reasons.update(pw.reasons)
        w.routes.update(pw.routes)
        w.ids.update(pw.ids)
        for cal, counts in pw.features.items():
            w.features[cal] = merge_counts(w.features.get(cal, {}), counts)
    for key, batch, add, from_batch_event in part.journal.latency:
        if not from_batch_event:  # a batch's first decision in this window
            if (key, batch) in agg.latency_seen:
                continue
            agg.latency_seen.add((key, batch))
        w = agg.window(key)
        w.batches.add(batch)
        if add is not None:
            w.latency_sum += add
    for tier, o in part.per_tier.items():
        sums = agg.per_tier.get(tier)
        if sums is None:
            sums = agg.per_tier[tier] = Outcome()
        sums.n += o.n
        sums.errors += o.errors
        sums.scored += o.scored
        sums.abs_err_sum = sum(o.terms or (), sums.abs_err_sum)  # in file order
    agg.health += part.health
    free = aggregate._MAX_EXAMPLES - len(agg.malformed)
    agg.malformed += part.malformed[: max(free, 0)]
    return part.read


def _replay(agg: Aggregator, rec: Record) -> None:
    """Append the journaled values to ``agg``'s buffers, flushing where one process would.

    One process flushes when a value that is followed by a check brings the
    buffered count to ``_FLUSH_VALUES``, and at each calibration event (whose
    state then applies).
    """
    gids = np.frombuffer(rec.gids, dtype=np.int32) if len(rec.gids) else np.zeros(0, np.int32)
    vals = np.frombuffer(rec.vals, dtype=np.float64) if len(rec.vals) else np.zeros(0)
    checked = np.array([g[3] for g in rec.table], dtype=bool)[gids] if len(gids) else gids
    buffered = sum(map(len, agg.values.values()))
    pos = 0
    for stop, state in [*rec.marks, (len(vals), None)]:
        while pos < stop:
            need = max(aggregate._FLUSH_VALUES - buffered, 1)
            # the first checked value at or after the need-th one flushes
            hits = np.flatnonzero(checked[pos + need - 1 : stop]) if pos + need <= stop else None
            flush = hits is not None and len(hits) > 0
            end = pos + need + int(hits[0]) if hits is not None and flush else stop
            _append(agg, rec.table, gids[pos:end], vals[pos:end])
            buffered += end - pos
            pos = end
            if flush:
                agg.flush()
                buffered = 0
        if state is not None:
            agg.flush()
            adopt(agg, state)
            buffered = 0


def _append(agg: Aggregator, table: list[Any], gids: Any, vals: Any) -> None:
    """Append values to their groups' buffers, groups in order of first appearance."""
    if not len(gids):
        return
    if (gids == gids[0]).all():
        key, cal, drift, _ = table[int(gids[0])]
        agg.values.setdefault((key, cal, drift), []).extend(vals.tolist())
        return
    uniq, first = np.unique(gids, return_index=True)
    for g in uniq[np.argsort(first)]:
        key, cal, drift, _ = table[int(g)]
        agg.values.setdefault((key, cal, drift), []).extend(vals[gids == g].tolist())
