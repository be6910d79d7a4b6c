"""Tier assignment: the first tier whose conditions a row meets wins."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from safepredict.config import TierPolicy
from safepredict.tiers.certify import accept_at
from safepredict.tiers.conditions import (
    CONDITIONS,
    base_mask,
    group_values,
    row_meets,
    row_thresholds,
    tier_keys,
)
from safepredict.tiers.state import TierCalibration, TierInputs

__all__ = ["assign_tiers"]

#: Batches of at most this many rows, under a policy without ``max_error`` tiers, are
#: assigned row by row in plain Python (:func:`row_meets`): numpy's per-call cost
#: dominates a single-row ``decide`` otherwise. Both paths give identical codes
#: (tests/test_tiers_assign_paths.py).
SMALL_BATCH = 8


def assign_tiers(
    policy: TierPolicy,
    inputs: TierInputs,
    calibration: TierCalibration | None = None,
) -> tuple[NDArray[np.intp], dict[int, tuple[str, ...]]]:
    """Tier index of each row, and extra reason codes for some rows.

    Parameters
    ----------
    policy : TierPolicy
        The ordered tiers.
    inputs : TierInputs
        Per-row confidence, set sizes, widths and scores.
    calibration : TierCalibration, optional
        Certified thresholds of the ``max_error`` tiers.

    Returns
    -------
    codes : ndarray of shape (n,)
        Index into ``policy.tiers``.
    reasons : dict of int to tuple of str
        Rows that get extra reasons: ``empty_set`` (classification rows whose
        conformal set is empty: less typical than the calibration rows; the
        row still goes to the first tier whose conditions it meets),
        ``uncertified:<tier>`` (rows that reached a ``max_error`` tier which
        could not be certified, or, for a ``per_class`` / ``group_by`` tier,
        whose predicted class or group could not be certified),
        ``group_too_small:<value>`` (their group had too few calibration rows
        to certify) and ``unseen_group:<value>`` (a group value the calibration
        never saw: the row goes straight to the fallback tier).

    Examples
    --------
    >>> policy = TierPolicy.default("classification")  # max_set_size 1, min_credibility 0.1
    >>> inputs = TierInputs("classification", confidence=np.array([0.99, 0.4, 0.97]),
    ...                     set_size=np.array([1, 2, 0]),
    ...                     credibility=np.array([0.6, 0.7, 0.04]))
    >>> codes, reasons = assign_tiers(policy, inputs)
    >>> codes.tolist(), reasons
    ([0, 1, 1], {2: ('empty_set',)})
    """
    n = len(inputs)
    extra: dict[int, list[str]] = {}
    small = n <= SMALL_BATCH and all(tier.max_error is None for tier in policy.tiers[:-1])
    if small:
        codes = _codes_by_row(policy, inputs)
    else:
        codes = _codes_by_column(policy, inputs, calibration, extra)
    if inputs.set_size is not None:
        sizes = inputs.set_size
        empty = (
            [i for i, size in enumerate(sizes.tolist()) if size == 0]
            if small
            else np.flatnonzero(sizes == 0).tolist()
        )
        for row in empty:
            extra.setdefault(row, []).append("empty_set")
    return codes, {row: tuple(r) for row, r in extra.items()}


def _codes_by_row(policy: TierPolicy, inputs: TierInputs) -> NDArray[np.intp]:
    """Tier codes of a few rows under a policy without ``max_error`` tiers."""
    tiers = policy.tiers[:-1]
    if not tiers:  # the fallback tier only (the default regression policy)
        return np.zeros(len(inputs), dtype=np.intp)
    columns = {}
    for _, name, _ in CONDITIONS:
        values = getattr(inputs, name)
        columns[name] = None if values is None else values.tolist()
    codes = []
    for i in range(len(inputs)):
        row = {name: None if col is None else col[i] for name, col in columns.items()}
        codes.append(next((k for k, tier in enumerate(tiers) if row_meets(tier, row)), len(tiers)))
    return np.array(codes, dtype=np.intp)


def _codes_by_column(
    policy: TierPolicy,
    inputs: TierInputs,
    calibration: TierCalibration | None,
    extra: dict[int, list[str]],
) -> NDArray[np.intp]:
    """Tier codes of a batch, vectorized; ``max_error`` reasons are added to ``extra``."""
    n = len(inputs)
    fallback = len(policy.tiers) - 1
    codes = np.full(n, fallback, dtype=np.intp)
    open_rows = np.ones(n, dtype=bool)

    def note(rows: NDArray[np.bool_], reason: str) -> None:
        for row in np.flatnonzero(rows).tolist():
            extra.setdefault(row, []).append(reason)

    for index, tier in enumerate(policy.tiers[:-1]):
        if not open_rows.any():
            break
        if tier.max_error is None:
            hit = open_rows & base_mask(tier, inputs)
        elif calibration is None or not calibration.is_certified(tier.name):
            note(open_rows, f"uncertified:{tier.name}")
            continue
        else:
            thresholds, unseen = row_thresholds(tier, calibration, inputs)
            if unseen.any():
                values = group_values(tier, inputs)
                for row in np.flatnonzero(open_rows & unseen).tolist():
                    extra.setdefault(row, []).append(f"unseen_group:{values[row]}")
                open_rows &= ~unseen  # straight to the fallback tier
            hit = open_rows & base_mask(tier, inputs)
            hit &= accept_at(tier_keys(tier, inputs), thresholds)
            blocked = open_rows & ~hit & np.isinf(thresholds[:, 0]) & ~unseen
            if tier.group_by is not None and blocked.any():
                values = group_values(tier, inputs)
                groups = calibration.report.get(tier.name, {}).get("groups", {})
                small = np.array(
                    [bool(groups.get(v, {}).get("too_small")) for v in values.tolist()]
                )
                for row in np.flatnonzero(blocked).tolist():
                    why = (
                        f"group_too_small:{values[row]}"
                        if small[row]
                        else f"uncertified:{tier.name}"
                    )
                    extra.setdefault(row, []).append(why)
            else:
                note(blocked, f"uncertified:{tier.name}")
        codes[hit] = index
        open_rows &= ~hit
    return codes
