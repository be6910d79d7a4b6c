r"""Read safepredict event logs and report the health of the model (layer 4).

:func:`monitor` streams JSON-lines logs (plain or ``.gz``) written by the
``safepredict.*`` events and aggregates them per time window: volume, tier and
action mix, abstention rate, guard-reason rates, the confidence distribution and
its drift from the calibration snapshot (PSI and a Kolmogorov-Smirnov test), and,
when outcomes are joined (a labels file keyed by ``decision_id``, or the review
queue), the realized error per tier with a Clopper-Pearson interval.

Only per-window counters are kept in memory (plus the joined outcomes), so logs of
any length are read in constant memory. The work is split by job:
:mod:`~safepredict.monitoring.reading` (logs, labels, queues),
:mod:`~safepredict.monitoring.aggregate` (streaming counters; well-formed blocks of
decision events counted column-wise by :mod:`~safepredict.monitoring.fast_blocks`),
:mod:`~safepredict.monitoring.windows` (per-window tests) and
:mod:`~safepredict.monitoring.realized` (realized error per tier).

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

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepredict.monitoring import columnar, parallel, shift_advice
from safepredict.monitoring.aggregate import Aggregator
from safepredict.monitoring.reading import (
    blocks,
    join_outcomes,
    log_files,
    read_labels,
    review_sla,
)
from safepredict.monitoring.windows import (
    ks_from_snapshot,
    parse_window,
    psi_from_snapshot,
    summarise_window,
)

__all__ = [
    "MonitorReport",
    "ks_from_snapshot",
    "monitor",
    "parse_window",
    "psi_from_snapshot",
    "read_labels",
]


def _counts(
    agg: Aggregator,
    path: Path,
    workers: int | str,
    engine: str,
    progress: Callable[[int, int], None] | None,
) -> Iterable[int]:
    """Aggregate one log into ``agg``: the events read, a block (or byte range) at a time."""
    if columnar.is_columnar(path):
        return (agg.feed(block, str(path)) for block in columnar.json_blocks(path))
    n = 1 if path.suffix == ".gz" else parallel.plan_workers(workers, path.stat().st_size)
    if n > 1:
        return parallel.read_parallel(agg, path, n, engine, progress)
    return (agg.feed(block, str(path)) for block in blocks(path, progress))


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
    #: Per accepting tier, the anytime-valid audit-weighted health (``None`` without
    #: outcomes or a calibration event); see :func:`~.realized.tier_health_report`.
    tier_health: dict[str, Any] | None = None
    #: With ``queue``: the review queue's service levels per tier (``queue.sla()``:
    #: oldest pending age, median time to claim and to resolve, cases in adjudication).
    review_sla: dict[str, Any] | None = None

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
            "tier_health": self.tier_health,
            "review_sla": self.review_sla,
        }

    @property
    def flagged(self) -> bool:
        """Whether any alert was raised."""
        return bool(self.alerts)


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
    engine: str = "auto",
    workers: int | str = "auto",
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
    engine : {"auto", "blocks", "lines"}, default="auto"
        How JSON-lines logs are read. ``"auto"`` counts a block of well-formed
        decision events column-wise when msgspec (the ``fast`` extra) is installed,
        and any other block line by line; ``"blocks"`` is the same but requires
        msgspec; ``"lines"`` parses every event into a dict. The report is the
        same with each.
    workers : int or "auto", default="auto"
        Processes reading a plain (uncompressed) log: its byte ranges are decoded
        in worker processes and their counts merged in file order, to the same
        report. ``"auto"`` uses one per CPU for logs of 64 MB or more and reads
        smaller ones in this process; ``1`` always reads in this process. Gzip
        and columnar logs are read in this process. Workers are forked: on Linux,
        from a process running a single thread (otherwise one process reads).

    Returns
    -------
    MonitorReport
    """
    window_s = parse_window(window)
    parallel.plan_workers(workers, 0)  # a bad value fails before any reading
    if isinstance(paths, str | Path):
        paths = [paths]
    sources = log_files(paths)
    joined, audits = join_outcomes(labels, queue, outcomes)
    agg = Aggregator(window_s, joined, audits, engine)
    total_bytes = sum(p.stat().st_size for p in sources)
    done_bytes = 0

    def cb(done: int, _total: int) -> None:
        if progress is not None:
            progress(done_bytes + done, total_bytes)

    for path in sources:
        read = 0
        try:
            for count in _counts(agg, path, workers, engine, cb if progress is not None else None):
                read += count
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
        summarise_window(
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
    realized = health = None
    if labels is not None or queue is not None or outcomes is not None:
        # scipy.stats (Clopper-Pearson, tier health): imported only when outcomes are joined
        from safepredict.monitoring.realized import outcome_report, tier_health_report

        realized = outcome_report(
            agg.per_tier, agg.tier_action, calibrations, len(joined), ci_alpha, alerts
        )
        health = tier_health_report(agg.health, calibrations, alerts)
    return MonitorReport(
        sources=[str(p) for p in sources],
        window_s=window_s,
        events={k: events.get(k, 0) for k in sorted({"decision", "skipped", "malformed", *events})},
        calibrations=[
            {k: v for k, v in c.items() if k != "baseline"} for c in calibrations.values()
        ],
        windows=out_windows,
        outcomes=realized,
        alerts=alerts,
        malformed=agg.malformed,
        issues=agg.issues,
        tier_health=health,
        review_sla=None if queue is None else review_sla(queue),
    )
