"""The checks the label-free estimate studies share (classifier and regressor tiers).

Each study collects, per tier and window, the estimate's absolute deviation from the
realized error (``dev``), the naive calibration rate's (``naive_dev``), the deviation
expected if the estimate were exact (``floor``) and, on concept-shift windows, the
estimate's deviation (``concept``: the negative control).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def mc_se(values: Sequence[float]) -> float:
    """Monte-Carlo standard error of a mean over independent runs: sd / sqrt(R)."""
    return float(np.std(values, ddof=1)) / math.sqrt(len(values))


def exact_floor(interval: tuple[float, float]) -> float:
    """E|realized - estimate| if the estimate were exact: sqrt(2/pi) * sd.

    The sd is the interval's half-width / 1.96 (outcome noise plus the map's
    bootstrap variance).
    """
    return math.sqrt(2 / math.pi) * (interval[1] - interval[0]) / 3.92


def assert_mae_near_floor(
    dev: Mapping[str, list[float]],
    naive_dev: Mapping[str, list[float]],
    floor: Mapping[str, list[float]],
    concept: list[float],
    tiers: Sequence[str],
) -> dict[str, tuple[float, float]]:
    """Per tier: MAE within the exact-estimate floor, and the concept-shift control outside.

    The MAE is a mean of K deviations: 3 Monte-Carlo standard errors sd(|dev|) /
    sqrt(K) of slack, plus 0.01 for the recalibration map's own error (about
    sqrt(e (1 - e) / n_cal) at e ~ 0.1 and n_cal ~ 1000 rows in the tier's range).
    Returns ``{tier: (mae, naive mae)}``.
    """
    maes = {}
    for tier in tiers:
        mae, naive = float(np.mean(dev[tier])), float(np.mean(naive_dev[tier]))
        maes[tier] = (mae, naive)
        expected = float(np.mean(floor[tier]))
        slack = 3 * mc_se(dev[tier]) + 0.01
        print(f"\n{tier}: MAE estimate {mae:.4f} vs naive {naive:.4f} (floor {expected:.4f}, "
              f"{len(dev[tier])} windows)")  # fmt: skip
        assert mae <= expected + slack
        # negative control: under concept shift the same bound fails
        assert float(np.mean(concept)) > expected + slack
    return maes


def assert_beats_naive(dev: list[float], naive_dev: list[float]) -> None:
    """The estimate beats the naive rate by > 3 MC standard errors of the paired difference."""
    diff = np.asarray(naive_dev) - np.asarray(dev)
    assert float(diff.mean()) > 3 * float(diff.std(ddof=1)) / math.sqrt(len(diff))
