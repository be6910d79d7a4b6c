"""Run every benchmark script in this folder, one after the other.

Each script prints its own table of medians and ratios measured side by side in
one process. Run with ``make bench``.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    scripts = sorted(p for p in HERE.glob("bench_*.py"))
    only = set(sys.argv[1:])
    for script in scripts:
        if only and script.stem not in only:
            continue
        print(f"\n===== {script.name} =====", flush=True)
        sys.argv = [str(script)]  # each script parses its own (default) arguments
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
