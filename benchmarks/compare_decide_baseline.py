"""``decide`` now vs. a git baseline (default ``main``), side by side in one process.

For refactors of the decide path: the baseline's ``src/safepredict`` is exported
with ``git archive`` into a temporary directory as the package
``safepredict_baseline``, both versions are calibrated on the same data (the
models of ``bench_decide.py``), their decisions are checked identical
(``np.array_equal`` on actions, tiers, sets or intervals, confidence) and the
MEDIAN time of ``decide`` is printed for one row and a 10,000-row batch, with
guards off and on, calls interleaved round-robin. A ratio below 1 means the
working tree is faster. BLAS/OpenMP pools are limited to one thread.
``--without-output-contract`` skips the two output-contract checks (issue #17:
finite, in-range output and intervals not collapsed by rounding) that 0.1.0 did
not make, so the same work is compared and their cost can be read off.

Run::

    PYTHONPATH=src python benchmarks/compare_decide_baseline.py [--ref main]
        [--repeats 400] [--batch-repeats 7] [--only LogisticRegression]
        [--without-output-contract]
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from bench_decide import BATCH, _cases, _timings
from threadpoolctl import threadpool_limits

import safepredict.model
import safepredict.pipeline
from safepredict import SafePredictor

_IMPORT = re.compile(r"\b(from|import) safepredict\b")


def baseline_package(ref: str, into: Path) -> Any:
    """Import ``src/safepredict`` at git ``ref`` as ``safepredict_baseline``."""
    repo = Path(__file__).resolve().parents[1]
    blob = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "src/safepredict"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    package = into / "safepredict_baseline"
    (into / "src" / "safepredict").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(_IMPORT.sub(r"\1 safepredict_baseline", text), encoding="utf-8")
    sys.path.insert(0, str(into))
    return importlib.import_module("safepredict_baseline")


def same_decisions(new: Any, old: Any) -> bool:
    """Actions, tiers, sets / intervals and confidence identical (``nan`` == ``nan``)."""
    checks = [
        np.array_equal(new.actions, old.actions),
        np.array_equal(new.tiers, old.tiers),
        np.array_equal(new.confidence, old.confidence, equal_nan=True),
    ]
    if new.set_mask is not None:
        checks.append(np.array_equal(new.set_mask, old.set_mask))
    if new.intervals is not None:
        checks.append(np.array_equal(new.intervals, old.intervals, equal_nan=True))
    return all(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="git ref of the baseline")
    parser.add_argument("--repeats", type=int, default=400, help="single-row repeats")
    parser.add_argument("--batch-repeats", type=int, default=7, help="10k-row repeats")
    parser.add_argument("--only", default="", help="run only models whose name contains this")
    parser.add_argument(
        "--without-output-contract",
        action="store_true",
        help="attribute cost: skip the output-contract checks 0.1.0 did not make (#17)",
    )
    args = parser.parse_args()
    if args.without_output_contract:  # the same work as 0.1.0: no contract, no collapse check
        safepredict.model.check_output = lambda out, task, n_classes=None: np.zeros(
            out.shape[0], dtype=bool
        )
        safepredict.pipeline._collapsed = lambda intervals, conformal, widths=None: np.zeros(
            len(intervals), dtype=bool
        )

    with tempfile.TemporaryDirectory() as tmp:
        old_sp = baseline_package(args.ref, Path(tmp))
        print(
            f"| {'model':<34} | {'rows':<10} | {'guards':<6} | {'identical':<9} "
            f"| {'baseline':>10} | {'now':>10} | {'ratio':>6} |"
        )
        print(f"|{'-' * 36}|{'-' * 12}|{'-' * 8}|{'-' * 11}|{'-' * 12}|{'-' * 12}|{'-' * 8}|")
        with threadpool_limits(limits=1):
            for name, _task, model, X_cal, y_cal, X_te, _ in _cases():
                if args.only not in name:
                    continue
                for guards in ("off", "auto"):
                    kw = {"log": "off", "guards": guards, "random_state": 0}
                    new = SafePredictor(model, **kw).calibrate(X_cal, y_cal)
                    old = old_sp.SafePredictor(model, **kw).calibrate(X_cal, y_cal)
                    for label, X, repeats in [
                        ("1 row", X_te[:1], args.repeats),
                        (f"{BATCH} rows", X_te[:BATCH], args.batch_repeats),
                    ]:
                        same = same_decisions(new.decide(X), old.decide(X))
                        raw = _timings(
                            {
                                "old": lambda X=X, f=old.decide: f(X),
                                "new": lambda X=X, f=new.decide: f(X),
                            },
                            repeats,
                        )
                        o, n = float(np.median(raw["old"])), float(np.median(raw["new"]))
                        print(
                            f"| {name:<34} | {label:<10} | {guards:<6} | {same!s:<9} "
                            f"| {o * 1e6:>7,.0f} µs | {n * 1e6:>7,.0f} µs | {n / o:>6.2f} |"
                        )


if __name__ == "__main__":
    main()
