"""Counting calibration scores exactly as MAPIE compares them (plain numpy, no MAPIE).

A label is kept at a quantile ``q`` when ``t - q <= EPSILON`` (LAC) or
``t - q < -EPSILON`` (APS/RAPS); the counts of calibration scores that keep a
label give its conformal p-value.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.exceptions import CalibrationError

__all__ = [
    "EPSILON",
    "SMALL_BATCH",
    "check_size",
    "kept_counts",
    "kept_counts_small",
    "lac_small",
    "min_calibration_rows",
]

#: MAPIE's tolerance when comparing a label's score to the quantile.
EPSILON = 1e-8

#: Batches up to this many rows take the plain-Python counting path.
SMALL_BATCH = 4


def min_calibration_rows(confidence_level: float) -> int:
    """Smallest calibration size for which the conformal quantile is finite."""
    return int(np.ceil(confidence_level / (1 - confidence_level)))


def check_size(n: int, confidence_level: float, what: str = "calibration") -> None:
    """Raise CalibrationError when ``n`` rows are too few for a finite quantile."""
    need = min_calibration_rows(confidence_level)
    if n < need:
        raise CalibrationError(
            f"{what} needs at least {need} rows for confidence_level={confidence_level} "
            f"(got {n}); pass more calibration rows or lower confidence_level."
        )


def kept_counts(
    sorted_scores: NDArray[np.float64], thresholds: NDArray[np.float64], *, strict: bool
) -> NDArray[np.intp]:
    """For every threshold ``t``: how many calibration scores ``q`` keep the label.

    MAPIE keeps a label when ``t - q <= EPSILON`` (LAC, ``t = 1 - p``) or when
    ``t - q < -EPSILON`` (APS/RAPS, ``t`` = cumulated score before the label).
    Both predicates are monotone in ``q``, so the kept scores are the top of the
    sorted array; ``searchsorted`` finds the boundary and a correction pass
    re-checks it with MAPIE's own floating-point expression, so the count is
    exact even for probabilities within rounding of ``EPSILON``.
    """
    n = len(sorted_scores)

    def keeps(t: NDArray[np.float64], q: NDArray[np.float64]) -> NDArray[np.bool_]:
        return np.asarray(t - q < -EPSILON) if strict else np.asarray(t - q <= EPSILON)

    side: Any = "right" if strict else "left"
    keys = (thresholds + EPSILON if strict else thresholds - EPSILON).ravel()
    if keys.size > 1000:  # sorted keys let searchsorted reuse its last position
        order = np.argsort(keys)
        flat = np.empty(keys.size, dtype=np.intp)
        flat[order] = np.searchsorted(sorted_scores, keys[order], side=side)
    else:
        flat = np.searchsorted(sorted_scores, keys, side=side)
    if n == 0:
        return np.zeros(thresholds.shape, dtype=np.intp)
    t_flat = thresholds.ravel()
    # Re-check the boundary with MAPIE's exact expression; fix only the few rows off by
    # a rounding unit (jumping over runs of tied scores).
    wrong = ((flat > 0) & keeps(t_flat, sorted_scores[np.maximum(flat - 1, 0)])) | (
        (flat < n) & ~keeps(t_flat, sorted_scores[np.minimum(flat, n - 1)])
    )
    fix = np.flatnonzero(wrong)
    if len(fix):
        counts = kept_counts_small(sorted_scores.tolist(), t_flat[fix].tolist(), strict=strict)
        flat[fix] = n - np.asarray(counts, dtype=np.intp)
    return np.asarray(n - flat, dtype=np.intp).reshape(thresholds.shape)


def kept_counts_small(
    sorted_list: list[float], thresholds: list[float], *, strict: bool
) -> list[int]:
    """:func:`kept_counts` for a handful of thresholds, in plain Python floats.

    Python floats are IEEE doubles like numpy's float64, so ``t - q`` rounds
    identically; ``bisect`` avoids numpy's per-call overhead on single rows.
    """
    n = len(sorted_list)
    out = []
    for t in thresholds:
        if strict:
            i = bisect_right(sorted_list, t + EPSILON)
            while i > 0 and t - sorted_list[i - 1] < -EPSILON:
                i = bisect_left(sorted_list, sorted_list[i - 1])
            while i < n and not t - sorted_list[i] < -EPSILON:
                i = bisect_right(sorted_list, sorted_list[i])
        else:
            i = bisect_left(sorted_list, t - EPSILON)
            while i > 0 and t - sorted_list[i - 1] <= EPSILON:
                i = bisect_left(sorted_list, sorted_list[i - 1])
            while i < n and not t - sorted_list[i] <= EPSILON:
                i = bisect_right(sorted_list, sorted_list[i])
        out.append(n - i)
    return out


def lac_small(
    proba: NDArray[np.float64], quantile: float, sorted_list: list[float]
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
    """LAC set, confidence and credibility for a few rows in plain Python floats.

    Same IEEE double arithmetic as the numpy path (``1 - p``, ``t - q <= EPSILON``),
    without numpy's per-call cost; the tests check both paths agree bit for bit.
    ``sorted_list`` holds the sorted calibration scores.

    Examples
    --------
    >>> mask, conf, cred = lac_small(np.array([[0.9, 0.1]]), 0.5, [0.05, 0.2, 0.6, 0.95])
    >>> mask.tolist(), conf.tolist(), cred.tolist()
    ([[True, False]], [0.6], [0.8])
    """
    n = len(sorted_list)
    masks: list[list[bool]] = []
    conf: list[float] = []
    cred: list[float] = []
    for row in proba.tolist():
        t = [1 - p for p in row]
        masks.append([ti - quantile <= EPSILON for ti in t])
        own_t, other_t = sorted(t)[:2]
        own_c, other_c = kept_counts_small(sorted_list, [own_t, other_t], strict=False)
        conf.append((n - other_c) / (n + 1.0) if own_c >= other_c else 0.0)
        cred.append((own_c + 1.0) / (n + 1.0))
    mask = np.array(masks, dtype=bool).reshape(proba.shape)  # keeps (0, K) for no rows
    return mask, np.array(conf, dtype=np.float64), np.array(cred, dtype=np.float64)
