"""Small-batch input guards now vs. a git baseline, side by side in one process.

``InputGuards.check`` runs batches of at most ``FAST_ROWS`` rows in plain Python.
This script exports the baseline's ``src/safepredict`` (``git archive``, as
``compare_decide_baseline.py`` does), fits both versions' guards on the same
18-column numeric table (the one of ``bench_guards.py``) and a mixed frame
(numeric and categorical columns), checks their results identical (reasons,
ranks, skips, OOD p-values bit for bit) and prints the MEDIAN time of ``check``
for 1, 4, 8 and 64 rows, calls interleaved round-robin, with the ratio now /
baseline (below 1: faster now). BLAS/OpenMP pools are limited to one thread.

Run::

    PYTHONPATH=src python benchmarks/bench_guards_small.py [--ref main] [--repeats 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _timing import interleaved_seconds
from compare_decide_baseline import baseline_package
from sklearn.datasets import make_classification
from threadpoolctl import threadpool_limits

import safepredict
from safepredict.guards import InputGuards

SIZES = (1, 4, 8, 64)


def identical(a: Any, b: Any) -> bool:
    """Reasons, ranks, skips and OOD p-values bit for bit."""
    same_ood = (a.ood is None and b.ood is None) or (
        a.ood is not None and b.ood is not None and a.ood.tobytes() == b.ood.tobytes()
    )
    return bool(
        a.reasons == b.reasons
        and np.array_equal(a.rank, b.rank)
        and np.array_equal(a.skip, b.skip)
        and same_ood
    )


def tables() -> dict[str, tuple[Any, Any]]:
    """(reference, rows to check) per table."""
    X, _ = make_classification(n_samples=20_100, n_features=18, n_informative=12, random_state=0)
    run = X[20_000:].copy()
    run[::7, 3] = np.nan  # some rows missing a value, some out of range
    run[::11, 5] = 1e3
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(X[:5_000, :6], columns=[f"n{j}" for j in range(6)])
    ref["colour"] = rng.choice(["red", "white", "rose"], size=len(ref))
    ref["grade"] = rng.choice([1, 2, 3], size=len(ref))
    mixed = pd.DataFrame(run[:, :6], columns=[f"n{j}" for j in range(6)])
    mixed["colour"] = rng.choice(["red", "white", "rose", "blue"], size=len(mixed))
    mixed["grade"] = rng.choice([1, 2, 3], size=len(mixed))
    return {"numeric 18 cols": (X[:20_000], run), "mixed frame 8 cols": (ref, mixed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="git ref of the baseline")
    parser.add_argument("--repeats", type=int, default=1000, help="calls per cell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        base = baseline_package(args.ref, Path(tmp))
        from safepredict_baseline.guards import InputGuards as BaseGuards

        print(
            f"median µs per check() call, baseline {args.ref} vs now; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (safepredict "
            f"{safepredict.__version__}, baseline {base.__version__})"
        )
        print("| table | OOD | rows | baseline (µs) | now (µs) | now / baseline | identical |")
        print("|---|---|---:|---:|---:|---:|---|")
        for name, (ref, run) in tables().items():
            for ood in ("centroids", "none"):
                new = InputGuards.fit(ref, safepredict.GuardConfig(ood_method=ood), random_state=0)
                old = BaseGuards.fit(ref, base.GuardConfig(ood_method=ood), random_state=0)
                for n in SIZES:
                    batch = run[:n] if isinstance(run, np.ndarray) else run.iloc[:n]
                    same = identical(new.check(batch), old.check(batch))
                    fns = {
                        "old": lambda b=batch, g=old: g.check(b),
                        "new": lambda b=batch, g=new: g.check(b),
                    }
                    times = interleaved_seconds(fns, args.repeats)
                    t_old = statistics.median(times["old"]) * 1e6
                    t_new = statistics.median(times["new"]) * 1e6
                    print(
                        f"| {name} | {ood} | {n} | {t_old:.1f} | {t_new:.1f} | "
                        f"{t_new / t_old:.2f} | {same} |"
                    )


if __name__ == "__main__":
    main()
