"""Conditional (Mondrian) and smoothed conformal p-values for classifiers (plain numpy).

A *stratum* is a set of calibration rows a label's p-value is computed against:
all rows (marginal), the rows whose true label is that label (``"class"``:
label-conditional), or the rows sharing the test row's value of a column
(group-conditional). Coverage then holds within every stratum: for each class,
or each group, ``P(true label in set) >= level``. A stratum with fewer than
``ceil(1 / alpha - 1)`` rows (or, for groups, a value calibration never saw)
cannot exclude anything at that level: its labels get p-value 1 and are always
in the set (trivially valid).

Smoothed (randomized) p-values break ties between the test score and the
calibration scores with an independent uniform draw ``tau`` per row:
``p = (#{s_i > s} + tau * (#{s_i = s} + 1)) / (n + 1)``. For a test row
exchangeable with the calibration rows its true label's p-value is then exactly
uniform, so the coverage of ``{y : p_y > alpha}`` is exactly ``1 - alpha`` in
expectation even when the model's scores are heavily tied (the plain p-value,
``tau = 1``, over-covers there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.conformal._counts import kept_counts, min_calibration_rows

__all__ = ["StratumCounts", "conformal_p_values", "stratum_counts"]


@dataclass(frozen=True)
class StratumCounts:
    """Per row and label: calibration scores at or above, strictly above, and in total.

    ``kept`` counts the scores that keep the label (MAPIE's comparison,
    ``EPSILON`` included); ``above`` those that keep it with room to spare (the
    tie-free part, used by smoothing); ``size`` the stratum's rows; ``forced``
    marks labels whose stratum is too small or unseen (p-value 1).
    """

    kept: NDArray[np.intp]
    above: NDArray[np.intp]
    size: NDArray[np.intp]
    forced: NDArray[np.bool_]


def _count(
    sorted_scores: NDArray[np.float64], t: NDArray[np.float64], strict: bool
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    n = len(sorted_scores)
    if n == 0:
        zero = np.zeros(t.shape, dtype=np.intp)
        return zero, zero
    kept = kept_counts(sorted_scores, t, strict=strict)
    if strict:  # APS/RAPS: -inf always kept, +inf never kept; no ties to smooth
        kept = np.where(t == -np.inf, n, np.where(t == np.inf, 0, kept))
        return kept, kept
    # LAC keeps a label when q >= t - EPSILON; it keeps it with room when q > t + EPSILON.
    return kept, kept_counts(sorted_scores, t, strict=True)


def stratum_counts(
    t: NDArray[np.float64],
    strata: Mapping[str, NDArray[np.float64]],
    *,
    by: str,
    confidence_level: float,
    strict: bool,
    class_keys: Sequence[str] = (),
    row_keys: NDArray[Any] | None = None,
) -> StratumCounts:
    """Count each label's threshold ``t[i, k]`` against the scores of its stratum.

    ``by="class"``: label ``k`` against ``strata[class_keys[k]]``;
    ``by="group"``: row ``i`` against ``strata[row_keys[i]]`` (``row_keys`` as text,
    :func:`safepredict._frames.group_labels`). Strata with fewer than
    ``min_calibration_rows(level)`` rows, and group values not in ``strata``,
    are ``forced`` (p-value 1).
    """
    shape = t.shape
    kept = np.zeros(shape, dtype=np.intp)
    above = np.zeros(shape, dtype=np.intp)
    size = np.zeros(shape, dtype=np.intp)
    forced = np.zeros(shape, dtype=bool)
    need = min_calibration_rows(confidence_level)
    if by == "class":
        for k, key in enumerate(class_keys):
            scores = strata.get(key, np.zeros(0))
            if len(scores) < need:
                forced[:, k] = True
                continue
            kept[:, k], above[:, k] = _count(scores, t[:, k], strict)
            size[:, k] = len(scores)
        return StratumCounts(kept, above, size, forced)
    assert row_keys is not None
    for key in np.unique(row_keys).tolist():
        rows = row_keys == key
        found = strata.get(key)
        if found is None or len(found) < need:
            forced[rows] = True
            continue
        kept[rows], above[rows] = _count(found, t[rows], strict)
        size[rows] = len(found)
    return StratumCounts(kept, above, size, forced)


def conformal_p_values(
    counts: StratumCounts, tau: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """P-values ``num / den`` per row and label, as ``(num, den)``.

    Plain: ``num = kept + 1``; smoothed (``tau`` per row, uniform on [0, 1)):
    ``num = above + tau * (kept - above + 1)``; ``den = size + 1``. Forced
    labels get ``num = den = 1``. Keeping numerator and denominator lets callers
    form ``1 - p`` as ``(den - num) / den``, exact in the plain case.

    Examples
    --------
    >>> c = StratumCounts(np.array([[3, 0]]), np.array([[1, 0]]), np.array([[4, 4]]),
    ...                   np.array([[False, False]]))
    >>> num, den = conformal_p_values(c)
    >>> (num / den).tolist()
    [[0.8, 0.2]]
    >>> num, den = conformal_p_values(c, tau=np.array([0.5]))
    >>> (num / den).tolist()
    [[0.5, 0.1]]
    """
    den = (counts.size + 1).astype(np.float64)
    num: NDArray[np.float64] = (counts.kept + 1).astype(np.float64)
    if tau is not None:
        num = np.asarray(
            counts.above + tau[:, None] * (counts.kept - counts.above + 1.0), dtype=np.float64
        )
    num = np.where(counts.forced, 1.0, num)
    den = np.where(counts.forced, 1.0, den)
    return np.asarray(num, dtype=np.float64), den
