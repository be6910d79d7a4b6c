r"""Read safepredict event logs and report the health of the model (layer 4).

:func:`monitor` streams JSON-lines logs (plain or ``.gz``) written by the
``safepredict.*`` events and aggregates them per time window: volume, tier and
action mix, abstention rate, guard-reason rates, the confidence distribution and
its drift from the calibration snapshot (PSI and a Kolmogorov-Smirnov test), and,
when outcomes are joined (a labels file keyed by ``decision_id``, or the review
queue), the realized error per tier with a Clopper-Pearson interval.

Only per-window counters are kept in memory (plus the joined outcomes), so logs of
any length are read in constant memory.

Examples
--------
>>> import json, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
>>> _ = path.write_text(json.dumps({"event": "safepredict.decision",
...     "timestamp": "2026-01-01T00:00:00Z", "decision_id": "b-0", "tier": "auto",
...     "action": "accept", "reasons": [], "confidence": 0.97, "prediction": 1,
...     "calibration_id": "c"}) + "\n")
>>> report = monitor(path)
>>> report.windows[0]["n"], report.windows[0]["actions"]
(1, {'accept': 1})
"""

from __future__ import annotations

import csv
import gzip
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from safepredict._jsonl import iter_lines
from safepredict._jsonl import loads as _loads
from safepredict._stats import clopper_pearson
from safepredict.exceptions import ConfigError
from safepredict.monitoring import shift_advice
from safepredict.review.queue import SQLiteReviewQueue

__all__ = [
    "MonitorReport",
    "ks_from_snapshot",
    "monitor",
    "parse_window",
    "psi_from_snapshot",
    "read_labels",
]

#: Confidence histogram bins of each window ([0, 1] in 20 equal bins).
HIST_BINS = 20
_WINDOW_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_window(window: str | float | None) -> float:
    """Window length in seconds from ``"90s"``, ``"15m"``, ``"1h"``, ``"1d"`` or ``"all"``.

    ``"all"`` (or ``None`` / ``0``) puts every event in one window.

    Examples
    --------
    >>> parse_window("1h"), parse_window("15m"), parse_window("all")
    (3600.0, 900.0, 0.0)
    """
    if window is None or window == "all":
        return 0.0
    if isinstance(window, int | float) and not isinstance(window, bool):
        if window < 0 or not math.isfinite(window):
            raise ConfigError(f"window must be >= 0 seconds; got {window!r}.")
        return float(window)
    match = _WINDOW_RE.match(str(window))
    if not match:
        raise ConfigError(
            f"window must look like '30s', '15m', '1h', '1d' or 'all'; got {window!r}."
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def psi_from_snapshot(snapshot: Mapping[str, Any], counts: Sequence[int]) -> float:
    """Population stability index of window ``counts`` vs the snapshot's PSI bins.

    ``counts`` are the window's counts in the bins ``(-inf, e1], ..., (ek, inf)``
    of ``snapshot["psi_edges"]``. Empty bins are floored at 1e-4 (the usual
    convention) so the index stays finite.

    Examples
    --------
    >>> snap = {"psi_counts": [50, 50]}
    >>> psi_from_snapshot(snap, [50, 50]), round(psi_from_snapshot(snap, [90, 10]), 3)
    (0.0, 0.879)
    """
    expected = [float(c) for c in snapshot["psi_counts"]]
    n_e, n_a = sum(expected), float(sum(counts))
    if n_e <= 0 or n_a <= 0:
        return math.nan
    psi = 0.0
    for e, a in zip(expected, counts, strict=True):
        pe, pa = max(e / n_e, 1e-4), max(a / n_a, 1e-4)
        psi += (pa - pe) * math.log(pa / pe)
    return psi


def ks_from_snapshot(snapshot: Mapping[str, Any], counts: Sequence[int]) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value vs the calibration snapshot.

    ``counts`` are the window's counts in the bins ``(-inf, p1], (p1, p2], ...,
    (pk, inf)`` of ``snapshot["cdf_points"]``; both empirical CDFs are compared at
    those points (the distinct calibration percentiles), which is exact for the
    calibration side and resolves the supremum to 1/100 of the calibration mass.
    The p-value uses the Kolmogorov limit distribution with the effective size
    ``n m / (n + m)`` (conservative for tied, discrete confidences).

    Examples
    --------
    >>> snap = {"n": 100, "cdf_points": [0.5, 1.0], "cdf": [0.5, 1.0]}
    >>> d, p = ks_from_snapshot(snap, [50, 50, 0])
    >>> d, p > 0.5
    (0.0, True)
    """
    from scipy.special import kolmogorov

    m = int(snapshot["n"])
    n = int(sum(counts))
    if m <= 0 or n <= 0:
        return math.nan, math.nan
    d = 0.0
    below = 0
    for c, f_cal in zip(counts, snapshot["cdf"], strict=False):
        below += c
        d = max(d, abs(below / n - float(f_cal)))
    en = math.sqrt(n * m / (n + m))
    return d, float(kolmogorov(d * en))


# ---------------------------------------------------------------- reading
#: Bytes read per block (lines are split in C, a block at a time).
_BLOCK = 1 << 20


def _gunzip(raw: IO[bytes]) -> Iterator[bytes]:
    """Decompressed chunks of a gzip stream (several members too).

    Everything decompressible is yielded before ``EOFError`` reports a stream
    cut short (``zlib.error`` a corrupt one), so a truncated log still gives
    every complete line before the cut.
    """
    d = zlib.decompressobj(wbits=31)
    while chunk := raw.read(_BLOCK >> 3):  # about a block once decompressed
        while chunk:
            out = d.decompress(chunk)
            if out:
                yield out
            if not d.eof:
                break
            chunk = d.unused_data  # the next gzip member, if any
            if not chunk:
                break
            d = zlib.decompressobj(wbits=31)
    tail = d.flush()
    if tail:
        yield tail
    if not d.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _blocks(path: Path, progress: Callable[[int, int], None] | None) -> Iterator[list[bytes]]:
    """The lines of a log (``.gz`` decompressed on the fly), a block of lines at a time.

    Raises ``EOFError`` / ``zlib.error`` when a gzip stream is cut short or
    corrupt, after yielding every complete line before the damage.
    """
    size = path.stat().st_size
    with path.open("rb") as raw:
        chunks: Iterator[bytes] = (
            _gunzip(raw) if path.suffix == ".gz" else iter(lambda: raw.read(_BLOCK), b"")
        )
        rest = b""
        for chunk in chunks:
            lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
            rest = lines.pop()
            yield lines
            if progress is not None:
                progress(raw.tell(), size)
        if rest:
            yield [rest]
    if progress is not None:
        progress(size, size)


def _records(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix in (".csv",) or path.name.endswith(".csv.gz"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh)
        return
    for line in iter_lines(path):
        if line.strip():
            yield _loads(line)


def read_labels(path: str | Path) -> dict[str, Any]:
    r"""Outcomes keyed by ``decision_id`` from a CSV or JSON-lines file (``.gz`` too).

    Each record needs ``decision_id`` and ``y_true`` (``outcome`` or ``label``
    are accepted too).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = p.write_text("decision_id,y_true\nb-0,1\n")
    >>> read_labels(p)
    {'b-0': '1'}
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"labels file {str(p)!r} does not exist.")
    out: dict[str, Any] = {}
    for i, rec in enumerate(_records(p)):
        key = next((k for k in ("y_true", "outcome", "label") if k in rec), None)
        if "decision_id" not in rec or key is None:
            raise ConfigError(
                f"{p}: record {i + 1} needs 'decision_id' and 'y_true' (or 'outcome'); it has "
                f"{sorted(rec)}. Write one outcome per decision_id."
            )
        out[str(rec["decision_id"])] = rec[key]
    return out


def queue_outcomes(path: str | Path) -> dict[str, Any]:
    """Reviewer outcomes from a ``SQLiteReviewQueue`` database, keyed by ``decision_id``."""
    return {
        str(o["decision_id"]): o["outcome"]
        for o in SQLiteReviewQueue(path).outcomes(include_external=True)
        if o.get("outcome") is not None
    }


# ---------------------------------------------------------------- aggregation
@dataclass
class _Window:
    start: float
    n: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    guard: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    guard_flagged: int = 0
    conf_n: int = 0
    conf_sum: float = 0.0
    hist: list[int] = field(default_factory=lambda: [0] * HIST_BINS)
    # calibration_id -> (cdf-point counts, psi-bin counts)
    drift: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    ids: Counter[str | None] = field(default_factory=Counter)
    latency_sum: float = 0.0
    batches: set[str] = field(default_factory=set)


@dataclass
class _Outcome:
    n: int = 0
    errors: int = 0
    abs_err_sum: float = 0.0
    scored: int = 0


@dataclass
class MonitorReport:
    """What :func:`monitor` found. ``to_dict()`` is the ``--json`` output."""

    sources: list[str]
    window_s: float
    events: dict[str, int]
    calibrations: list[dict[str, Any]]
    windows: list[dict[str, Any]]
    outcomes: dict[str, Any] | None
    alerts: list[dict[str, Any]]
    #: The first few malformed events (``events["malformed"]`` counts them all):
    #: safepredict events whose fields have the wrong type, skipped.
    malformed: list[dict[str, Any]] = field(default_factory=list)
    #: Files that could not be read to the end (e.g. a truncated ``.gz``), with
    #: how many events were read from each before the damage.
    issues: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the whole report."""
        return {
            "sources": self.sources,
            "window_s": self.window_s,
            "events": self.events,
            "calibrations": self.calibrations,
            "windows": self.windows,
            "outcomes": self.outcomes,
            "alerts": self.alerts,
            "malformed": self.malformed,
            "issues": self.issues,
        }

    @property
    def flagged(self) -> bool:
        """Whether any alert was raised."""
        return bool(self.alerts)


def _epoch(ts: Any) -> float:
    if not isinstance(ts, str):
        return 0.0
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:  # naive timestamps are taken as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except (TypeError, ValueError):
        return None


def _same(pred: Any, y: Any) -> bool:
    if pred is None:
        return False
    a, b = _as_number(pred), _as_number(y)
    if a is not None and b is not None:
        return a == b
    return str(pred) == str(y)


def _log_files(paths: Iterable[str | Path]) -> list[Path]:
    """The log files named, with each directory replaced by its ``*.jsonl[.gz]`` files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.jsonl"), *p.glob("*.jsonl.gz")])
            if not found:
                raise ConfigError(
                    f"directory {str(p)!r} has no *.jsonl or *.jsonl.gz log files; pass the "
                    "directory the events were written to (e.g. decide_dask's events_dir)."
                )
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"log file {str(p)!r} does not exist; check the path.")
    return files


def monitor(
    paths: str | Path | Iterable[str | Path],
    *,
    window: str | float | None = "1h",
    labels: str | Path | Mapping[str, Any] | None = None,
    outcomes: Iterable[Mapping[str, Any]] | None = None,
    queue: str | Path | None = None,
    psi_threshold: float = 0.2,
    ks_alpha: float = 0.001,
    abstain_alpha: float = 0.001,
    abstain_margin: float = 0.05,
    min_window: int = 50,
    ci_alpha: float = 0.05,
    progress: Callable[[int, int], None] | None = None,
) -> MonitorReport:
    """Stream decision logs and report per-window health, drift and realized error.

    Parameters
    ----------
    paths : path or iterable of paths
        JSON-lines logs (``.gz`` is decompressed on the fly), or directories of
        them (every ``*.jsonl`` / ``*.jsonl.gz`` inside, e.g. one per Dask
        partition). Lines that are not
        safepredict events (other application logs, broken lines) are counted as
        ``skipped``.
    window : str or float, default="1h"
        Window length (``"15m"``, ``"1h"``, seconds, or ``"all"``).
    labels : path or mapping, optional
        True outcomes keyed by ``decision_id`` (CSV or JSON lines with
        ``decision_id,y_true``), joined to the decisions.
    outcomes : iterable of dict, optional
        Outcome records ``{"decision_id", "outcome", ...}`` such as the review
        queue's ``outcomes()``.
    queue : path, optional
        A ``SQLiteReviewQueue`` database whose reviewer outcomes are joined.
    psi_threshold : float, default=0.2
        PSI at or above this flags drift (0.1-0.2 is the usual "moderate",
        above 0.2 "significant" shift).
    ks_alpha : float, default=0.001
        KS p-value below this flags drift.
    abstain_alpha, abstain_margin : float
        A window's abstention rate is flagged when it exceeds the calibration
        baseline by at least ``abstain_margin`` and a one-sided binomial test
        rejects "no increase" at ``abstain_alpha`` (one-sided Fisher exact test
        of the window's abstentions against the calibration rows').
    min_window : int, default=50
        Windows with fewer decisions are reported but not tested.
    ci_alpha : float, default=0.05
        Clopper-Pearson intervals are two-sided ``1 - ci_alpha``.
    progress : callable, optional
        Called as ``progress(bytes_done, bytes_total)`` while reading.

    Returns
    -------
    MonitorReport
    """
    window_s = parse_window(window)
    if isinstance(paths, str | Path):
        paths = [paths]
    sources = _log_files(paths)
    joined: dict[str, Any] = {}
    if labels is not None:
        joined.update(labels if isinstance(labels, Mapping) else read_labels(labels))
    if queue is not None:
        joined.update(queue_outcomes(queue))
    if outcomes is not None:
        for o in outcomes:
            if o.get("outcome") is not None:
                joined[str(o["decision_id"])] = o["outcome"]

    agg = _Aggregator(window_s, joined)
    total_bytes = sum(p.stat().st_size for p in sources)
    done_bytes = 0

    def cb(done: int, _total: int) -> None:
        if progress is not None:
            progress(done_bytes + done, total_bytes)

    for path in sources:
        read = 0
        try:
            for block in _blocks(path, cb if progress is not None else None):
                read += agg.feed(block, str(path))
        except (EOFError, OSError, zlib.error) as exc:
            agg.issues.append(
                {
                    "source": str(path),
                    "problem": "truncated or corrupt file"
                    if isinstance(exc, EOFError)
                    else f"unreadable ({type(exc).__name__}: {exc})",
                    "events_read": read,
                    "detail": (
                        f"{path}: the file ends early or is damaged after {read:,} events "
                        "were read; the report covers those events only"
                    ),
                }
            )
        done_bytes += path.stat().st_size
    agg.finish()
    windows, calibrations = agg.windows, agg.calibrations
    events = agg.events

    alerts: list[dict[str, Any]] = []
    out_windows = [
        _summarise_window(
            w,
            window_s,
            calibrations,
            alerts,
            psi_threshold=psi_threshold,
            ks_alpha=ks_alpha,
            abstain_alpha=abstain_alpha,
            abstain_margin=abstain_margin,
            min_window=min_window,
        )
        for _, w in sorted(windows.items())
    ]
    shift_advice.attach(out_windows, sources, window_s, joined, alerts)  # label-free, adapt_to
    outcome_report = None
    if labels is not None or queue is not None or outcomes is not None:
        outcome_report = _outcome_report(
            agg.per_tier, agg.tier_action, calibrations, len(joined), ci_alpha, alerts
        )
    return MonitorReport(
        sources=[str(p) for p in sources],
        window_s=window_s,
        events={k: events.get(k, 0) for k in sorted({"decision", "skipped", "malformed", *events})},
        calibrations=[
            {k: v for k, v in c.items() if k != "baseline"} for c in calibrations.values()
        ],
        windows=out_windows,
        outcomes=outcome_report,
        alerts=alerts,
        malformed=agg.malformed,
        issues=agg.issues,
    )


# ---------------------------------------------------------------- aggregation
#: Confidence values buffered per (window, calibration) before they are binned.
_FLUSH_VALUES = 1 << 16
_DECISION = "safepredict.decision"
#: How many malformed events are quoted in the report (all are counted).
_MAX_EXAMPLES = 5


def _number(v: Any) -> bool:
    t = type(v)
    return (t is float or t is int) and math.isfinite(v)


def _strings(v: Any) -> bool:
    return type(v) is list and all(type(r) is str for r in v)


class _Aggregator:
    """Streaming per-window counters over the events of one or more logs.

    Each decision event costs a parse, a few type checks, one count of its
    (window, tier, action, calibration, batch) signature and one append of its
    confidence; confidences are binned with numpy every ``_FLUSH_VALUES`` values,
    so memory stays bounded however long the log is.
    """

    def __init__(self, window_s: float, joined: Mapping[str, Any]) -> None:
        self.window_s = window_s
        self.joined = joined
        self.events: Counter[str] = Counter()
        self.windows: dict[int, _Window] = {}
        self.calibrations: dict[str, dict[str, Any]] = {}
        self.bins: dict[str, tuple[list[float], list[float]]] = {}
        self.per_tier: dict[str, _Outcome] = {}
        self.tier_action: dict[str, str] = {}
        self.signatures: dict[tuple[Any, ...], int] = {}
        self.latency_seen: set[tuple[int, Any]] = set()
        # (window, calibration id or None, drift?) -> values
        self.values: dict[tuple[int, Any, bool], list[float]] = {}
        self.widths: set[str] = set()  # calibrations whose drift metric is the interval width
        self.malformed: list[dict[str, Any]] = []
        self.issues: list[dict[str, Any]] = []

    def window(self, key: int) -> _Window:
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = _Window(start=key * self.window_s)
        return w

    def key(self, ts: Any) -> int:
        return int(_epoch(ts) // self.window_s) if self.window_s else 0

    def bad(self, source: str, ev: Mapping[str, Any], detail: str) -> None:
        self.events["malformed"] += 1
        if len(self.malformed) < _MAX_EXAMPLES:
            did = ev.get("decision_id")
            self.malformed.append(
                {
                    "source": source,
                    "event": str(ev.get("event")),
                    "decision_id": did if type(did) is str else None,
                    "problem": detail,
                }
            )

    # ------------------------------------------------------------ the hot loop
    def feed(self, lines: list[bytes], source: str) -> int:
        """Aggregate a block of lines; returns the number of safepredict events read."""
        loads = _loads
        events = self.events
        signatures = self.signatures
        values = self.values
        bins = self.bins
        joined = self.joined
        widths = self.widths
        last_ts: Any = object()
        last_key = 0
        cur_key: Any = None
        cur_cal: Any = None
        cur_drift: Any = None
        cur_values: list[float] = []
        n_buffered = sum(map(len, values.values()))
        read = 0
        for line in lines:
            try:
                ev = loads(line)
                name = ev.get("event")
            except Exception:  # not JSON / not an object: another app's line, or blank
                events["skipped"] += 1
                continue
            if name != _DECISION:
                if type(name) is str and name.startswith("safepredict."):
                    read += 1
                    self.other(ev, name, source)
                    if not values:  # a calibration event flushed the buffers
                        cur_key = None
                        n_buffered = 0
                else:
                    events["skipped"] += 1
                continue
            read += 1
            tier = ev.get("tier")
            action = ev.get("action")
            cal: Any = ev.get("calibration_id")
            batch = ev.get("batch_id")
            conf = ev.get("confidence")
            reasons = ev.get("reasons")
            guard = ev.get("guard")
            if type(tier) is not str or type(action) is not str:
                self.bad(source, ev, "'tier' and 'action' must be strings")
                continue
            if (cal is not None and type(cal) is not str) or (
                batch is not None and type(batch) is not str
            ):
                self.bad(source, ev, "'calibration_id' and 'batch_id' must be strings or null")
                continue
            if conf is not None and not (
                (type(conf) is float or type(conf) is int) and 0.0 <= conf <= 1.0
            ):
                self.bad(source, ev, f"'confidence' must be a number in [0, 1]; got {conf!r:.40}")
                continue
            if reasons and not _strings(reasons):
                self.bad(source, ev, "'reasons' must be a list of strings")
                continue
            kinds: set[str] | None = None
            if guard is not None:
                if type(guard) is not dict:
                    self.bad(source, ev, "'guard' must be an object")
                    continue
                if guard.get("status") == "flag":
                    guard_reasons = guard.get("reasons") or []
                    if not _strings(guard_reasons):
                        self.bad(source, ev, "'guard.reasons' must be a list of strings")
                        continue
                    kinds = {r.split(":", 1)[0] for r in guard_reasons}
            events["decision"] += 1
            ts = ev.get("timestamp")
            if ts != last_ts:
                last_ts = ts
                last_key = self.key(ts)
            sig = (last_key, tier, action, cal, batch)
            count = signatures.get(sig)
            if count is None:
                signatures[sig] = 1
                self.new_signature(last_key, batch, ev.get("latency_s"))
            else:
                signatures[sig] = count + 1
            if reasons:
                self.window(last_key).reasons.update(reasons)
            if kinds is not None:
                w = self.window(last_key)
                w.guard_flagged += 1
                w.guard.update(kinds)
            if conf is not None or cal in bins:
                drift = cal in bins
                value = conf
                if drift and cal in widths:
                    value = _width(ev.get("conformal"))
                    if conf is not None:  # the histogram still counts the confidence
                        self.values.setdefault((last_key, cal, False), []).append(conf)
                        n_buffered += 1
                    drift = value is not None
                if value is not None:
                    if last_key != cur_key or cal != cur_cal or drift is not cur_drift:
                        cur_key, cur_cal, cur_drift = last_key, cal, drift
                        cur_values = values.setdefault((last_key, cal, drift), [])
                    cur_values.append(value)
                    n_buffered += 1
                    if n_buffered >= _FLUSH_VALUES:
                        self.flush()
                        n_buffered = 0
                        cur_key = None  # the flushed lists are gone
            if joined:
                did = ev.get("decision_id")
                if type(did) is str and did in joined:
                    _score(self.per_tier, tier, ev, joined[did], self.calibrations.get(str(cal)))
        return read

    def new_signature(self, key: int, batch: Any, lat: Any) -> None:
        if batch is None or (key, batch) in self.latency_seen:
            return
        self.latency_seen.add((key, batch))
        w = self.window(key)
        w.batches.add(batch)
        total: Any = lat.get("total") if type(lat) is dict else None
        if _number(total) and total >= 0:
            w.latency_sum += float(total)

    def flush(self) -> None:
        """Bin the buffered values into their windows' histograms and drift counts."""
        import numpy as np

        for (key, cal, drift), vals in self.values.items():
            if not vals:
                continue
            w = self.window(key)
            v = np.asarray(vals, dtype=np.float64)
            if not drift or self.calibrations[cal]["metric"] == "confidence":
                w.conf_n += len(v)
                w.conf_sum = sum(vals, w.conf_sum)  # in file order, as one running sum
                idx = np.minimum((v * HIST_BINS).astype(np.intp), HIST_BINS - 1)
                hist = np.bincount(idx, minlength=HIST_BINS).tolist()
                w.hist = [a + b for a, b in zip(w.hist, hist, strict=True)]
            if drift:
                edges = self.bins[cal]
                slot = w.drift.get(cal)
                if slot is None:
                    slot = w.drift[cal] = ([0] * (len(edges[0]) + 1), [0] * (len(edges[1]) + 1))
                for counts, e in zip(slot, edges, strict=True):
                    add = np.bincount(
                        np.searchsorted(e, v, side="left"), minlength=len(counts)
                    ).tolist()
                    counts[:] = [a + b for a, b in zip(counts, add, strict=True)]
        self.values.clear()  # in place: the hot loop holds a reference to it

    # ------------------------------------------------------------ other events
    def other(self, ev: dict[str, Any], name: str, source: str) -> None:
        try:
            if name == "safepredict.batch":
                self.batch(ev)
            elif name == "safepredict.calibration":
                self.calibration(ev)
            elif name == "safepredict.route":
                status = ev.get("status")
                if type(status) is not str:
                    raise TypeError("'status' must be a string")
                self.window(self.key(ev.get("timestamp"))).routes[status] += 1
                self.events["route"] += 1
            elif name == "safepredict.tier_uncertified":
                self.events["tier_uncertified"] += 1
            else:
                self.events["skipped"] += 1
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            self.bad(source, ev, str(exc) or type(exc).__name__)

    def batch(self, ev: dict[str, Any]) -> None:
        n = ev.get("n")
        if type(n) is not int or n < 0:
            raise TypeError("'n' must be a non-negative integer")
        counters = {}
        for field_name in ("tiers", "actions", "reasons", "guard_reasons"):
            c = ev.get(field_name) or {}
            if type(c) is not dict or not all(type(x) is int for x in c.values()):
                raise TypeError(f"{field_name!r} must map names to integer counts")
            counters[field_name] = c
        flagged = ev.get("guard_flagged") or 0
        if type(flagged) is not int:
            raise TypeError("'guard_flagged' must be an integer")
        lat = ev.get("latency_s") or {}
        total: Any = lat.get("total") if type(lat) is dict else None
        cal: Any = ev.get("calibration_id")
        if cal is not None and type(cal) is not str:
            raise TypeError("'calibration_id' must be a string or null")
        w = self.window(self.key(ev.get("timestamp")))
        w.n += n
        w.tiers.update(counters["tiers"])
        w.actions.update(counters["actions"])
        w.reasons.update(counters["reasons"])
        w.guard.update(counters["guard_reasons"])
        w.guard_flagged += flagged
        w.ids[cal] += n
        w.latency_sum += float(total) if _number(total) else 0.0
        w.batches.add(str(ev.get("batch_id")))
        self.events["batch"] += 1

    def calibration(self, ev: dict[str, Any]) -> None:
        cal_id = str(ev.get("calibration_id"))
        base = ev.get("baseline") or {}
        if type(base) is not dict:
            raise TypeError("'baseline' must be an object")
        policy = ev.get("policy") or {}
        if type(policy) is not dict:
            raise TypeError("'policy' must be an object")
        edges: tuple[list[float], list[float]] | None = None
        if base.get("metric") and base.get("n"):
            points, psi = list(base["cdf_points"]), list(base["psi_edges"])
            if not all(map(_number, points + psi)):
                raise TypeError("baseline 'cdf_points' and 'psi_edges' must be numbers")
            edges = (points, psi)
        self.flush()  # values buffered so far were read under the previous calibrations
        self.calibrations[cal_id] = {
            "calibration_id": cal_id,
            "timestamp": ev.get("timestamp"),
            "model_name": ev.get("model_name"),
            "model_version": ev.get("model_version"),
            "task": ev.get("task"),
            "calibration_size": ev.get("calibration_size"),
            "policy": policy,
            "certified": ev.get("certified") or {},
            "metric": base.get("metric"),
            "baseline": base,
        }
        if edges is not None:
            self.bins[cal_id] = edges
        self.widths.discard(cal_id)
        if base.get("metric") == "interval_width":
            self.widths.add(cal_id)
        self.events["calibration"] += 1

    def finish(self) -> None:
        """Fold the signature counts and buffered values into the windows."""
        self.flush()
        for (key, tier, action, cal, _batch), count in self.signatures.items():
            w = self.window(key)
            w.n += count
            w.tiers[tier] += count
            w.actions[action] += count
            w.ids[cal] += count
            self.tier_action.setdefault(tier, action)


def _width(conformal: Any) -> float | None:
    """The interval width (10 significant digits, as in the calibration snapshot)."""
    iv = conformal.get("interval") if type(conformal) is dict else None
    if type(iv) is not list or len(iv) != 2 or not (_number(iv[0]) and _number(iv[1])):
        return None
    return float(f"{iv[1] - iv[0]:.10g}")


def _policy_tiers(cal: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not cal:
        return {}
    return {t["name"]: t for t in cal.get("policy", {}).get("tiers", [])}


def _score(
    per_tier: dict[str, _Outcome],
    tier: str,
    ev: Mapping[str, Any],
    y: Any,
    cal: Mapping[str, Any] | None,
) -> None:
    o = per_tier.get(tier)
    if o is None:
        o = per_tier[tier] = _Outcome()
    o.n += 1
    pred = ev.get("prediction")
    regression = (cal or {}).get("task") == "regression" or (
        ev.get("probabilities") is None and (ev.get("conformal") or {}).get("interval") is not None
    )
    if not regression:
        o.scored += 1
        o.errors += not _same(pred, y)
        return
    a, b = _as_number(pred), _as_number(y)
    if a is None or b is None:
        o.scored += 1
        o.errors += 1
        return
    o.abs_err_sum += abs(a - b)
    tolerance = _policy_tiers(cal).get(tier, {}).get("tolerance")
    if tolerance is not None:
        o.scored += 1
        o.errors += abs(a - b) > float(tolerance)


def _outcome_report(
    per_tier: dict[str, _Outcome],
    tier_action: Mapping[str, str],
    calibrations: Mapping[str, Mapping[str, Any]],
    n_labels: int,
    ci_alpha: float,
    alerts: list[dict[str, Any]],
) -> dict[str, Any]:
    latest = list(calibrations.values())[-1] if calibrations else None
    policy_tiers = _policy_tiers(latest)
    rows = []
    for tier, o in sorted(per_tier.items(), key=lambda kv: str(kv[0])):
        max_error = policy_tiers.get(tier, {}).get("max_error")
        row: dict[str, Any] = {
            "tier": tier,
            "action": tier_action.get(tier),
            "n": o.n,
            "scored": o.scored,
            "errors": o.errors,
            "error_rate": o.errors / o.scored if o.scored else None,
            "ci_low": None,
            "ci_high": None,
            "max_error": max_error,
            "flagged": False,
            "mae": o.abs_err_sum / o.n if o.abs_err_sum and o.n else None,
        }
        if o.scored:
            row["ci_low"], row["ci_high"] = clopper_pearson(
                o.errors, o.scored, 1.0 - ci_alpha, two_sided=True
            )
            if max_error is not None and row["ci_low"] > float(max_error):
                row["flagged"] = True
                alerts.append(
                    {
                        "kind": "tier_error",
                        "tier": tier,
                        "detail": (
                            f"tier {tier!r}: realized error {o.errors}/{o.scored} "
                            f"({row['error_rate']:.3f}), {100 * (1 - ci_alpha):.0f}% CI "
                            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] lies above "
                            f"max_error={max_error}"
                        ),
                    }
                )
        rows.append(row)
    return {
        "n_outcomes": n_labels,
        "n_joined": sum(o.n for o in per_tier.values()),
        "ci_level": 1 - ci_alpha,
        "tiers": rows,
    }


def _summarise_window(
    w: _Window,
    window_s: float,
    calibrations: Mapping[str, Mapping[str, Any]],
    alerts: list[dict[str, Any]],
    *,
    psi_threshold: float,
    ks_alpha: float,
    abstain_alpha: float,
    abstain_margin: float,
    min_window: int,
) -> dict[str, Any]:
    from scipy.stats import fisher_exact

    n = w.n
    start = datetime.fromtimestamp(w.start, UTC).isoformat().replace("+00:00", "Z")
    end = (
        datetime.fromtimestamp(w.start + window_s, UTC).isoformat().replace("+00:00", "Z")
        if window_s
        else None
    )
    label = start if window_s else "all"
    cal_id = w.ids.most_common(1)[0][0] if w.ids else None
    cal = calibrations.get(cal_id) if cal_id is not None else None
    abstain = w.actions.get("abstain", 0)
    out: dict[str, Any] = {
        "start": start if window_s else None,
        "end": end,
        "n": n,
        "batches": len(w.batches),
        "tiers": dict(w.tiers.most_common()),
        "actions": dict(w.actions.most_common()),
        "abstain_rate": abstain / n if n else None,
        "review_rate": w.actions.get("review", 0) / n if n else None,
        "guard_flag_rate": w.guard_flagged / n if n else None,
        "guard_reason_rates": {k: c / n for k, c in w.guard.most_common()} if n else {},
        "reasons": dict(w.reasons.most_common(10)),
        "routes": dict(w.routes),
        "latency_s_mean_per_batch": w.latency_sum / len(w.batches) if w.batches else None,
        "confidence": {
            "n": w.conf_n,
            "mean": w.conf_sum / w.conf_n if w.conf_n else None,
            "hist": list(w.hist),
        },
        "calibration_id": cal_id,
        "drift": None,
        "abstention": None,
    }
    slot = w.drift.get(cal_id) if cal_id is not None else None
    if cal is not None and slot is not None:
        base = cal["baseline"]
        m = int(sum(slot[0]))
        psi = psi_from_snapshot(base, slot[1])
        ks_d, ks_p = ks_from_snapshot(base, slot[0])
        tested = m >= min_window
        flagged = tested and (psi >= psi_threshold or ks_p < ks_alpha)
        window_cdf, below = [], 0
        for c in slot[0][:-1]:
            below += c
            window_cdf.append(below / m if m else None)
        out["drift"] = {
            "metric": base["metric"],
            "n": m,
            "psi": psi,
            "ks_d": ks_d,
            "ks_pvalue": ks_p,
            "tested": tested,
            "flagged": flagged,
            "cdf_points": base["cdf_points"],
            "cdf_calibration": base["cdf"],
            "cdf_window": window_cdf,
        }
        if flagged:
            alerts.append(
                {
                    "kind": "drift",
                    "window": label,
                    "detail": (
                        f"{base['metric']} drift vs calibration {cal_id}: PSI={psi:.3f} "
                        f"(threshold {psi_threshold}), KS D={ks_d:.3f} p={ks_p:.2g}"
                    ),
                }
            )
    if cal is not None and cal["baseline"].get("action_rates") and n:
        r0 = float(cal["baseline"]["action_rates"].get("abstain", 0.0))
        n0 = int(cal["baseline"].get("n") or 0)
        k0 = round(r0 * n0)
        rate = abstain / n
        # One-sided Fisher exact test of "window rate > calibration rate": both are
        # samples, so the baseline's own noise is accounted for.
        p = float(fisher_exact([[abstain, n - abstain], [k0, n0 - k0]], "greater")[1])
        tested = n >= min_window
        flagged = tested and rate - r0 >= abstain_margin and p < abstain_alpha
        out["abstention"] = {
            "baseline": r0,
            "rate": rate,
            "pvalue": p,
            "tested": tested,
            "flagged": flagged,
        }
        if flagged:
            alerts.append(
                {
                    "kind": "abstention",
                    "window": label,
                    "detail": (
                        f"abstention rate {rate:.3f} vs {r0:.3f} at calibration "
                        f"(binomial p={p:.2g}, {abstain}/{n})"
                    ),
                }
            )
    return out
