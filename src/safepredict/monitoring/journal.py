"""What a worker records of its byte range for the exact, in-order merge (layer 4).

Most of the monitor's aggregates merge by adding (counts, histograms, drift
counts). Three things do not, because floating-point sums depend on their order
and the buffers depend on what came before: the confidence running sums (added a
buffer flush at a time, grouped by window and calibration), the per-batch
latencies and the absolute errors of joined outcomes. And the calibration state
(drift bins, interval widths, feature bins) changes where a calibration event
appears. A worker process reading one byte range of a log therefore does not bin
its confidences: its :class:`Journal` records them in file order (with the
window, calibration and drift group of each), with the points where a
calibration event flushed the buffers and the state it left, and the latencies in
the order they add. The parent replays them into its own buffers, so every
flush, sum and bin happens where and as one process reading the whole log would.

Examples
--------
>>> from safepredict.monitoring.aggregate import Aggregator
>>> agg = Aggregator(0.0, {}, engine="lines")
>>> journal = Journal.attach(agg)
>>> line = b'{"event": "safepredict.decision", "tier": "t", "action": "accept", "confidence": 0.5}'
>>> agg.feed([line, line], "log")
2
>>> record = journal.record()
>>> record.table, list(record.vals)
([(0, None, False, True)], [0.5, 0.5])
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

__all__ = ["Journal", "Record", "State", "adopt", "snapshot"]

#: The calibration state decisions are read under: calibration records, drift bins,
#: calibrations whose drift metric is the interval width, per-feature bins.
State: TypeAlias = tuple[
    dict[str, dict[str, Any]],
    dict[str, tuple[list[float], list[float]]],
    set[str],
    dict[str, dict[str, Any]],
]
#: A value group: (window, calibration id, drift?, followed by a flush check?).
Group: TypeAlias = tuple[int, Any, bool, bool]


class Aggregator(Protocol):
    """What a journal reads and sets of an ``Aggregator`` (its calibration state, buffers)."""

    calibrations: dict[str, dict[str, Any]]
    bins: dict[str, tuple[list[float], list[float]]]
    widths: set[str]
    features: dict[str, dict[str, Any]]
    values: dict[tuple[int, Any, bool], list[float]]
    journal: Journal | None


def snapshot(agg: Aggregator) -> State:
    """A copy of ``agg``'s calibration state (the records themselves are never changed)."""
    return dict(agg.calibrations), dict(agg.bins), set(agg.widths), dict(agg.features)


def adopt(agg: Aggregator, state: State) -> None:
    """Put ``state`` in ``agg`` in place (code holding its dicts sees the change)."""
    calibrations, bins, widths, features = state
    agg.calibrations.clear()
    agg.calibrations.update(calibrations)
    agg.bins.clear()
    agg.bins.update(bins)
    agg.widths.clear()
    agg.widths.update(widths)
    agg.features.clear()
    agg.features.update(features)


@dataclass
class Record:
    """A journal as sent back to the parent (picklable; no reference to the aggregator)."""

    #: Group of each group id.
    table: list[Group]
    #: Group id and value of each buffered value, in file order.
    gids: array[int]
    vals: array[float]
    #: (number of values before it, state after it) of each calibration that flushed.
    marks: list[tuple[int, State]]
    #: (window, batch, latency or None, from a batch event?) in the order they add.
    latency: list[tuple[int, str, float | None, bool]]


class Journal:
    """A worker aggregator's record of what adds in file order; see the module docstring."""

    def __init__(self, agg: Aggregator) -> None:
        self._agg = agg
        self.groups: dict[Group, int] = {}
        self.gids: array[int] = array("i")
        self.vals: array[float] = array("d")
        self.marks: list[tuple[int, State]] = []
        self.latency: list[tuple[int, str, float | None, bool]] = []
        self._flushed: int | None = None

    @classmethod
    def attach(cls, agg: Aggregator) -> Journal:
        """Make ``agg`` a worker's aggregator: values journaled, never binned by it."""
        journal = cls(agg)
        agg.journal = journal
        agg.values = _Values(journal)
        return journal

    def group(self, group: Group) -> int:
        """The id of a value group (the same group keeps its id across flushes)."""
        gid = self.groups.get(group)
        if gid is None:
            gid = self.groups[group] = len(self.groups)
        return gid

    def extend(self, groups: list[tuple[int, Any]] | tuple[int, Any], values: list[Any]) -> None:
        """Journal a block's values (the block reader's: a flush check follows each).

        ``groups`` gives each value's (window, calibration), or one for all.
        """
        bins = self._agg.bins
        if isinstance(groups, tuple):
            key, cal = groups
            self.gids.extend(array("i", [self.group((key, cal, cal in bins, True))]) * len(values))
        else:
            ids: dict[tuple[int, Any], int] = {}
            for g in groups:
                if g not in ids:
                    ids[g] = self.group((g[0], g[1], g[1] in bins, True))
            self.gids.extend([ids[g] for g in groups])
        self.vals.extend(values)

    def flushed(self) -> None:
        """A calibration event flushed the buffers here."""
        self._flushed = len(self.vals)

    def calibrated(self, agg: Aggregator) -> None:
        """A calibration event was read: keep the state it left, if it flushed."""
        if self._flushed is not None:
            self.marks.append((self._flushed, snapshot(agg)))
            self._flushed = None

    def record(self) -> Record:
        """What the parent needs, without the aggregator."""
        return Record(list(self.groups), self.gids, self.vals, self.marks, self.latency)


class _Sink(list[float]):
    """A buffer of one value group that journals its values instead of keeping them."""

    __slots__ = ("gid", "journal")

    def __init__(self, journal: Journal, gid: int) -> None:
        super().__init__()
        self.journal, self.gid = journal, gid

    def append(self, value: float) -> None:
        self.journal.gids.append(self.gid)
        self.journal.vals.append(value)


class _Values(dict[tuple[int, Any, bool], list[float]]):
    """A worker's value buffers: each group a :class:`_Sink` (the line reader's appends)."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def setdefault(self, key: tuple[int, Any, bool], default: Any = None) -> list[float]:
        sink = self.get(key)
        if sink is None:
            agg = self.journal._agg
            _, cal, drift = key
            # the line reader appends a width-drift row's confidence (no flush check
            # after it) to the (window, calibration, False) group of such a calibration
            check = drift or not (cal in agg.widths and cal in agg.bins)
            sink = self[key] = _Sink(self.journal, self.journal.group((*key, check)))
        return sink
