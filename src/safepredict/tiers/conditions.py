"""A tier's conditions evaluated on rows: the one rule calibration and assignment share.

Every condition reads one documented per-row number (confidence, credibility,
set size, interval width, a certified ranking-key threshold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.config import Tier
from safepredict.exceptions import ConfigError
from safepredict.tiers.certify import ACCEPT_ALL, accept_at, ranking_keys
from safepredict.tiers.state import TierCalibration, TierInputs, group_labels

__all__ = [
    "CONDITIONS",
    "base_mask",
    "group_values",
    "probability_tie_breaks",
    "row_meets",
    "row_thresholds",
    "tier_keys",
    "tier_mask",
    "tier_score",
]


#: The base conditions as data: ``(tier field, TierInputs field, kind)``. ``kind``
#: ``"min"`` keeps rows whose value is ``>=`` the bound, ``"max"`` rows ``<=`` it;
#: ``"min!"``: a missing column fails every row (fail closed), otherwise a missing
#: column is not checked. ``nan`` fails every comparison. :func:`base_mask` and
#: :func:`row_meets` both read this table: one rule, two evaluators.
CONDITIONS: tuple[tuple[str, str, str], ...] = (
    ("min_confidence", "confidence", "min"),
    ("min_credibility", "credibility", "min!"),
    ("max_set_size", "set_size", "max"),
    ("max_interval_width", "width", "max"),
)


def base_mask(tier: Tier, inputs: TierInputs) -> NDArray[np.bool_]:
    """Rows meeting every condition of ``tier`` except the ``max_error`` threshold."""
    mask = np.ones(len(inputs), dtype=bool)
    for bound_name, column, kind in CONDITIONS:
        bound = getattr(tier, bound_name)
        if bound is None:
            continue
        values = getattr(inputs, column)
        if values is None:
            if kind == "min!":  # unknown credibility never meets it (fail closed)
                mask[:] = False
            continue
        mask &= values <= bound if kind == "max" else values >= bound
    return mask


def row_meets(tier: Tier, row: Mapping[str, Any]) -> bool:
    """One row meets every condition of ``tier`` except ``max_error`` (see :data:`CONDITIONS`).

    ``row`` maps each :class:`TierInputs` column to the row's Python value (``None``
    for a column the inputs lack): the plain-Python twin of :func:`base_mask` for a
    few rows, where numpy's per-call overhead dominates.

    Examples
    --------
    >>> tier = Tier("auto", "accept", min_credibility=0.1, max_set_size=1)
    >>> row_meets(tier, {"confidence": 0.97, "credibility": 0.4, "set_size": 1, "width": None})
    True
    >>> row_meets(tier, {"confidence": 0.97, "credibility": None, "set_size": 1, "width": None})
    False
    """
    for bound_name, column, kind in CONDITIONS:
        bound = getattr(tier, bound_name)
        if bound is None:
            continue
        value = row[column]
        if value is None:
            if kind == "min!":
                return False
            continue
        if not (value <= bound if kind == "max" else value >= bound):
            return False
    return True


def tier_score(tier: Tier, inputs: TierInputs) -> NDArray[np.float64]:
    """The primary score a ``max_error`` tier thresholds (higher = more confident)."""
    score = inputs.scores.get(tier.score)
    if score is None:
        if tier.score == "conformal" and inputs.task == "classification":
            return inputs.confidence
        raise ConfigError(
            f"tier {tier.name!r}: score {tier.score!r} is not available for {inputs.task}; "
            f'available: {sorted(inputs.scores) or ["conformal"]}. Use score = "conformal".'
        )
    return np.asarray(score, dtype=np.float64)


def probability_tie_breaks(
    scores: Mapping[str, NDArray[np.float64]],
) -> dict[str, NDArray[np.float64]]:
    """Tie-breakers of the classification scores, from the top probability and the margin.

    ``conformal``: ``1 - p_2`` (the runner-up's LAC conformity threshold, which
    the conformal confidence is a step function of), then ``p_1``;
    ``top_prob``: the margin; ``margin``: the top probability. Ranking by the
    score and then these is the finest-grained order the model output allows;
    for LAC it is the order of ``1 - p_2`` itself, which does not depend on the
    calibration labels. Empty when ``top_prob`` or ``margin`` is missing.

    Examples
    --------
    >>> tb = probability_tie_breaks({"top_prob": np.array([0.7]), "margin": np.array([0.5])})
    >>> np.round(tb["conformal"], 3).tolist()
    [[0.8, 0.7]]
    """
    top, margin = scores.get("top_prob"), scores.get("margin")
    if top is None or margin is None:
        return {}
    top = np.asarray(top, dtype=np.float64)
    margin = np.asarray(margin, dtype=np.float64)
    return {
        "conformal": np.column_stack([1.0 - (top - margin), top]),
        "top_prob": margin,
        "margin": top,
    }


def tier_keys(tier: Tier, inputs: TierInputs) -> NDArray[np.float64]:
    """The ranking keys of a ``max_error`` tier: its score, then its tie-breakers."""
    primary = tier_score(tier, inputs)
    extra = inputs.tie_break.get(tier.score)
    if extra is None and inputs.task == "classification":
        extra = probability_tie_breaks(inputs.scores).get(tier.score)
    if extra is None:
        return ranking_keys(primary)
    extra_2d = np.asarray(extra, dtype=np.float64).reshape(len(primary), -1)
    return ranking_keys(np.column_stack([primary, extra_2d]))


def group_values(tier: Tier, inputs: TierInputs) -> NDArray[Any]:
    """Each row's value of the tier's ``group_by`` column, as text."""
    assert tier.group_by is not None
    values = inputs.groups.get(tier.group_by)
    if values is None:
        raise ConfigError(
            f"tier {tier.name!r}: group_by = {tier.group_by!r} needs that column's values; "
            f"got columns {sorted(inputs.groups)}. Calibrate and decide on data with a "
            f"{tier.group_by!r} column (a DataFrame column or a feature name)."
        )
    return group_labels(values)


def row_thresholds(
    tier: Tier, calibration: TierCalibration, inputs: TierInputs
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-row threshold keys ``(n, k)`` of a ``max_error`` tier, and rows of unseen groups."""
    n = len(inputs)
    entry = calibration.key_for(tier.name)
    unseen = np.zeros(n, dtype=bool)
    if isinstance(entry, Mapping):
        values = group_values(tier, inputs)
        width = max((len(np.atleast_1d(v)) for v in entry.values()), default=1)
        out = np.full((n, width), math.inf)
        for value in np.unique(values).tolist():
            rows = values == value
            if value in entry:
                key = np.asarray(entry[value], dtype=np.float64).reshape(-1)
                out[rows, : len(key)] = key
                out[rows, len(key) :] = ACCEPT_ALL
            else:
                unseen |= rows
        return out, unseen
    t = np.asarray(entry, dtype=np.float64)
    if t.ndim == 2:  # per predicted class
        if inputs.predicted_class is None:
            return np.full((n, t.shape[1]), math.inf), unseen
        return t[np.clip(inputs.predicted_class, 0, len(t) - 1)], unseen
    return np.broadcast_to(t.reshape(1, -1), (n, t.size)), unseen


def tier_mask(
    tier: Tier, inputs: TierInputs, calibration: TierCalibration | None
) -> NDArray[np.bool_]:
    """Rows meeting every condition of ``tier`` (nothing for an uncalibrated ``max_error``)."""
    mask = base_mask(tier, inputs)
    if tier.max_error is not None:
        if calibration is None or tier.name not in calibration.thresholds:
            return np.zeros(len(inputs), dtype=bool)
        thresholds, _ = row_thresholds(tier, calibration, inputs)
        mask &= accept_at(tier_keys(tier, inputs), thresholds)
    return mask
