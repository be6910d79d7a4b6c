r"""Reading the monitor's inputs: event logs (plain or gzip), labels files, review queues (layer 4).

Logs are read a block of lines at a time (lines split in C), gzip streams
decompressed on the fly, so a log of any size is read in constant memory; a
truncated ``.gz`` still yields every complete line before the damage.

Examples
--------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
>>> _ = p.write_text("decision_id,y_true\nb-0,1\n")
>>> read_labels(p)
{'b-0': '1'}
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from safepredict._jsonl import iter_lines
from safepredict._jsonl import loads as _loads
from safepredict.exceptions import ConfigError
from safepredict.monitoring import columnar
from safepredict.review import PostgresReviewQueue, SQLiteReviewQueue
from safepredict.review._core import ReviewQueueCore

__all__ = [
    "blocks",
    "epoch",
    "join_outcomes",
    "log_files",
    "open_queue",
    "queue_outcomes",
    "range_blocks",
    "read_labels",
    "review_sla",
]

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


def blocks(path: Path, progress: Callable[[int, int], None] | None) -> Iterator[list[bytes]]:
    """The lines of a log (``.gz`` decompressed on the fly), a block of lines at a time.

    Raises ``EOFError`` / ``zlib.error`` when a gzip stream is cut short or
    corrupt, after yielding every complete line before the damage.
    """
    size = path.stat().st_size
    with path.open("rb") as raw:
        chunks: Iterator[bytes] = (
            _gunzip(raw) if path.suffix == ".gz" else iter(lambda: raw.read(_BLOCK), b"")
        )
        yield from _split(chunks, None if progress is None else lambda: progress(raw.tell(), size))
    if progress is not None:
        progress(size, size)


def range_blocks(path: Path, start: int, end: int) -> Iterator[list[bytes]]:
    """The lines of bytes ``[start, end)`` of a plain log, a block of lines at a time.

    ``start`` and ``end`` are line starts (or the end of the file): the lines are
    those :func:`blocks` reads there.
    """

    def chunks(raw: IO[bytes]) -> Iterator[bytes]:
        left = end - start
        while left > 0 and (chunk := raw.read(min(_BLOCK, left))):
            left -= len(chunk)
            yield chunk

    with path.open("rb") as raw:
        raw.seek(start)
        yield from _split(chunks(raw))


def _split(
    chunks: Iterator[bytes], after: Callable[[], None] | None = None
) -> Iterator[list[bytes]]:
    """The whole lines of a stream of chunks, a chunk's worth at a time.

    ``after`` is called after each block is consumed.
    """
    rest = b""
    for chunk in chunks:
        lines = chunk.split(b"\n")
        if rest:  # the line cut at the previous chunk's end (no copy of the whole chunk)
            lines[0] = rest + lines[0]
        rest = lines.pop()
        yield lines
        if after is not None:
            after()
    if rest:
        yield [rest]


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
    return {did: y for did, y, _ in _label_rows(path)}


def _label_rows(path: str | Path) -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """``(decision_id, outcome, record)`` of each record of a labels file, in file order."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"labels file {str(p)!r} does not exist.")
    for i, rec in enumerate(_records(p)):
        key = next((k for k in ("y_true", "outcome", "label") if k in rec), None)
        if "decision_id" not in rec or key is None:
            raise ConfigError(
                f"{p}: record {i + 1} needs 'decision_id' and 'y_true' (or 'outcome'); it has "
                f"{sorted(rec)}. Write one outcome per decision_id."
            )
        yield str(rec["decision_id"]), rec[key], rec


def open_queue(queue: str | Path | ReviewQueueCore) -> ReviewQueueCore:
    """A review queue object: itself, a ``postgresql://`` URL, or a SQLite file path."""
    if isinstance(queue, ReviewQueueCore):
        return queue
    if isinstance(queue, str) and queue.lower().startswith(("postgresql://", "postgres://")):
        return PostgresReviewQueue(queue)
    return SQLiteReviewQueue(queue)


def review_sla(queue: str | Path | ReviewQueueCore) -> dict[str, dict[str, Any]]:
    """The queue's service-level figures per tier (``queue.sla()``), for the monitor.

    Examples
    --------
    >>> import tempfile
    >>> review_sla(tempfile.mkdtemp() + "/q.db")["*"]["oldest_pending_s"] is None
    True
    """
    return open_queue(queue).sla()


def queue_outcomes(path: str | Path) -> dict[str, Any]:
    """Reviewer outcomes from a review queue (SQLite path or Postgres URL), by ``decision_id``."""
    return {
        str(o["decision_id"]): o["outcome"]
        for o in open_queue(path).outcomes(include_external=True)
        if o.get("outcome") is not None
    }


def epoch(ts: Any) -> float:
    """Seconds since the epoch of an ISO 8601 timestamp (naive is UTC; 0 when unreadable)."""
    if not isinstance(ts, str):
        return 0.0
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:  # naive timestamps are taken as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def log_files(paths: Iterable[str | Path]) -> list[Path]:
    """The log files named, with each directory replaced by its ``*.jsonl[.gz]`` files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.jsonl"), *p.glob("*.jsonl.gz")])
            found += sorted(p.glob("*" + columnar.SUFFIX))  # columnar decision logs
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


def _probability(rec: Mapping[str, Any], default: float | None) -> float | None:
    """A record's ``audit_probability`` (CSV text too), or ``default`` when it has none."""
    p = rec.get("audit_probability")
    if p is None or p == "":
        return default
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value <= 1.0:
        raise ConfigError(
            f"outcome {rec.get('decision_id')!r}: audit_probability must be a number in (0, 1] "
            f"(the probability the row was sampled for audit); got {p!r}. Leave it empty "
            "for rows labelled without sampling."
        )
    return value


def join_outcomes(
    labels: str | Path | Mapping[str, Any] | None = None,
    queue: str | Path | None = None,
    outcomes: Iterable[Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[int, float | None]]]:
    """Outcomes keyed by ``decision_id``, and the ones tier health reads.

    The second dict maps ``decision_id`` to ``(arrival rank, audit probability)``
    for the outcomes that are a random sample of the accepted rows:

    - a review queue's resolved **audit** cases, with the probability stored with
      the case (``None``: the tier's ``audit_rate`` at decision time is used);
    - outcome records with an ``audit`` field only when it is true (as the queue's);
    - records without one (a labels file, a mapping) with their
      ``audit_probability`` column, or 1 (every row so labelled counts alike: the
      labels must not depend on whether the prediction was right).

    Examples
    --------
    >>> joined, audits = join_outcomes({"b-0": 1}, outcomes=[
    ...     {"decision_id": "b-1", "outcome": 0, "audit": True, "audit_probability": 0.05},
    ...     {"decision_id": "b-2", "outcome": 1, "audit": False}])
    >>> joined
    {'b-0': 1, 'b-1': 0, 'b-2': 1}
    >>> audits
    {'b-0': (0, 1.0), 'b-1': (1, 0.05)}
    """
    joined: dict[str, Any] = {}
    audits: dict[str, tuple[int, float | None]] = {}

    def add(did: str, y: Any, rec: Mapping[str, Any]) -> None:
        joined[did] = y
        if "audit" in rec and not rec["audit"]:
            audits.pop(did, None)
            return
        audits[did] = (len(audits), _probability(rec, None if "audit" in rec else 1.0))

    if isinstance(labels, Mapping):
        for did, y in labels.items():
            add(str(did), y, {})
    elif labels is not None:
        for did, y, rec in _label_rows(labels):
            add(did, y, rec)
    if queue is not None:
        for case in open_queue(queue).outcomes(include_external=True):
            if case.get("outcome") is not None:
                add(str(case["decision_id"]), case["outcome"], case)
    if outcomes is not None:
        for o in outcomes:
            if o.get("outcome") is not None:
                add(str(o["decision_id"]), o["outcome"], o)
    return joined, audits
