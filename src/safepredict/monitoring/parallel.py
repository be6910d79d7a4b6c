"""Reading one plain log with several worker processes, to the same report (layer 4).

A plain (uncompressed) JSON-lines log is cut into byte ranges at line starts,
about :data:`TASK_BYTES` each. Worker processes (``concurrent.futures``, forked)
decode and count a range each (:func:`~safepredict.monitoring.partials.fold_range`)
while the parent merges the partial aggregates in file order as they come
(:func:`~safepredict.monitoring.partials.merge`), keeping at most two ranges per
worker in flight, so memory stays bounded however long the log is.

A range's decisions are read under the calibration state at its start. The
parent finds it by scanning each range for calibration events before handing
the next one out (a substring search; those lines are parsed and applied to a
scratch aggregator). A worker counts the calibration events it reads; should a
range hold one the scan missed (an event name written with JSON escapes), the
ranges after it are read in this process instead, so the report is the same
either way. A worker that dies has the same effect.

Workers are forked, so they start in milliseconds and share the loaded modules;
they are used on Linux when the process runs a single thread (forking a
threaded process can deadlock), and otherwise the log is read in this process.
While they parse, the parent imports scipy's tests in a thread (the windows'
KS and Fisher tests need it) when the log has a calibration snapshot.

Examples
--------
>>> plan_workers("auto", 10_000), plan_workers(1, 10 ** 9)
(1, 1)
>>> plan_workers(0, 10)
Traceback (most recent call last):
...
safepredict.exceptions.ConfigError: workers must be 'auto' or a whole number >= 1; got 0. ...
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from safepredict._jsonl import loads as _loads
from safepredict.exceptions import ConfigError
from safepredict.monitoring.aggregate import Aggregator
from safepredict.monitoring.journal import adopt, snapshot
from safepredict.monitoring.partials import Partial, fold_range, init_worker, merge
from safepredict.monitoring.reading import range_blocks

__all__ = [
    "AUTO_MIN_BYTES",
    "TASK_BYTES",
    "can_fork",
    "line_ranges",
    "plan_workers",
    "read_parallel",
]

#: Bytes of log per task handed to a worker.
TASK_BYTES = 16 << 20
#: With ``workers="auto"``, smaller logs are read in one process (starting workers,
#: scanning for calibrations and merging cost more than they save below this).
AUTO_MIN_BYTES = 64 << 20
_CALIBRATION = "safepredict.calibration"
_NEEDLE = _CALIBRATION.encode()


def _cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - not Linux


def can_fork() -> bool:
    """Whether worker processes can be forked safely here (Linux, one thread)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def plan_workers(workers: int | str, size: int) -> int:
    """How many processes read a plain log of ``size`` bytes (1: this one alone).

    ``"auto"`` uses every CPU available (at most one per :data:`TASK_BYTES`)
    for logs of :data:`AUTO_MIN_BYTES` or more, one process below; a number is
    taken as given. Either way, 1 where workers cannot be forked safely.
    """
    if workers == "auto":
        n = 1 if size < AUTO_MIN_BYTES else min(_cpus(), -(-size // TASK_BYTES))
    elif type(workers) is int and workers >= 1:
        n = workers
    else:
        raise ConfigError(
            f"workers must be 'auto' or a whole number >= 1; got {workers!r}. Use 'auto' "
            "(one process per CPU for large plain logs) or 1 to read in this process."
        )
    return n if n > 1 and can_fork() else 1


def line_ranges(path: Path, n: int) -> list[tuple[int, int]]:
    r"""``n`` (or fewer) byte ranges of about equal size covering ``path``, cut at line starts.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> _ = p.write_bytes(b"aaaa\nbb\ncccccc\nd")
    >>> line_ranges(p, 3)
    [(0, 5), (5, 15), (15, 16)]
    """
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as fh:
        for i in range(1, n):
            pos = max(size * i // n, cuts[-1])
            if pos == 0:
                continue
            fh.seek(pos - 1)
            fh.readline()  # to the next line start (pos itself when a line ends at pos - 1)
            cut = fh.tell()
            if cuts[-1] < cut < size:
                cuts.append(cut)
    cuts.append(size)
    return list(pairwise(cuts))


def _calibrations(fh: BinaryIO, start: int, stop: int, scratch: Aggregator, source: str) -> int:
    """Apply the calibration events of a byte range of ``fh`` to ``scratch``; count them.

    ``[start, stop)`` holds whole lines. The range is searched in a memory map of
    it alone (no copy; at most one range of the file mapped at a time).
    """
    if stop <= start:
        return 0
    base = start - start % mmap.ALLOCATIONGRANULARITY
    n = 0
    with mmap.mmap(fh.fileno(), stop - base, offset=base, access=mmap.ACCESS_READ) as data:
        lo, hi = start - base, stop - base
        pos = data.find(_NEEDLE, lo, hi)
        while pos >= 0:
            a = data.rfind(b"\n", lo, pos) + 1 or lo
            b = data.find(b"\n", pos, hi)
            b = hi if b < 0 else b
            try:
                ev = _loads(data[a:b])
            except Exception:  # not JSON: the line reader skips it too
                ev = None
            if type(ev) is dict and ev.get("event") == _CALIBRATION:
                n += 1
                scratch.other(ev, _CALIBRATION, source)
            pos = data.find(_NEEDLE, b, hi)
    return n


def _import_scipy() -> None:
    try:
        import scipy.special
        import scipy.stats  # noqa: F401
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass


def read_parallel(
    agg: Aggregator,
    path: Path,
    workers: int,
    engine: str,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[int]:
    """Aggregate the plain log ``path`` into ``agg`` with ``workers`` processes.

    Yields the number of safepredict events read from each range, in file order,
    as it is merged (so a failure leaves ``agg`` holding whole ranges only).
    """
    size = path.stat().st_size
    source = str(path)
    ranges = line_ranges(path, max(workers, -(-size // TASK_BYTES)))
    scratch = Aggregator(agg.window_s, {}, engine="lines")
    adopt(scratch, snapshot(agg))
    resume = 0  # where this process reads on, if the workers stop early
    try:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=init_worker,
            initargs=(agg.joined, agg.audits),
        )
    except Exception:  # pragma: no cover - no process pool here (e.g. no working sem_open)
        pool = None
    warm: threading.Thread | None = None
    if pool is not None:
        pending: deque[tuple[Future[Partial], int, int]] = deque()
        queued = 0
        try:
            with path.open("rb") as fh:

                def submit() -> None:
                    nonlocal queued
                    start, end = ranges[queued]
                    state = snapshot(scratch)
                    try:
                        fut = pool.submit(
                            fold_range, source, start, end, agg.window_s, engine, state
                        )
                    except OSError as exc:  # pragma: no cover - fork failed (memory, limits)
                        raise BrokenProcessPool("could not start a worker") from exc
                    expected = _calibrations(fh, start, end, scratch, source)
                    pending.append((fut, expected, end))
                    queued += 1

                while queued < len(ranges) and len(pending) < 2 * workers:
                    submit()
                if any(c.get("baseline") for c in scratch.calibrations.values()):
                    warm = threading.Thread(target=_import_scipy, daemon=True)
                    warm.start()
                while pending:
                    fut, expected, end = pending.popleft()
                    part = fut.result()
                    yield merge(agg, part)
                    resume = end
                    if progress is not None:
                        progress(end, size)
                    if part.calibration_lines != expected:
                        break  # a calibration the scan missed: read on in this process
                    while queued < len(ranges) and len(pending) < 2 * workers:
                        submit()
        except BrokenProcessPool:
            pass  # a worker died or could not start: read on from the last merged range here
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if warm is not None:
                warm.join()
    for block in range_blocks(path, resume, size):
        yield agg.feed(block, source)
    if progress is not None and resume < size:
        progress(size, size)
