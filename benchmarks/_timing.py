"""The timing helper the benchmark scripts share (imported as ``from _timing import ...``)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

#: ``BENCH_CLOCK=cpu`` times calls with this thread's CPU time instead of the wall
#: clock: on a shared, loaded machine it leaves out the time other processes hold the
#: core (cache and memory contention still count), so ratios stay readable.
CLOCK = time.thread_time if os.environ.get("BENCH_CLOCK") == "cpu" else time.perf_counter


def median_seconds(fn: Callable[[], Any], repeats: int, *, warmup: int = 0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return statistics.median(times)


def interleaved_seconds(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved round-robin after one warm-up.

    Interleaving makes machine noise hit every column alike, so ratios of the
    medians are comparable within one run.
    """
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = CLOCK()
            fn()
            times[name].append(CLOCK() - t0)
    return times
