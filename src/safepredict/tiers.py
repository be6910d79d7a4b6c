"""Tier assignment: which tier each row lands in (pure numpy).

The first tier whose conditions a row meets wins; the last tier is the fallback.
Classification rows whose conformal set is empty or holds several labels are
never accepted: accept tiers require a singleton set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.config import Tier, TierPolicy

__all__ = ["TierCalibration", "TierInputs", "assign_tiers"]


@dataclass
class TierInputs:
    """Per-row quantities tier conditions are evaluated on.

    Parameters
    ----------
    task : {"classification", "regression"}
        The predictor's task.
    confidence : ndarray of shape (n,)
        Conformal confidence (``nan`` for regression).
    set_size : ndarray of shape (n,), optional
        Classification: size of the conformal set.
    width : ndarray of shape (n,), optional
        Regression: width of the conformal interval.
    scores : dict of str to ndarray, default={}
        Scores a ``max_error`` tier may threshold, by name (``"conformal"``,
        ``"top_prob"``, ``"margin"``); higher means more confident.
    predicted_class : ndarray of shape (n,), optional
        Index of the predicted class (for per-class thresholds).
    """

    task: str
    confidence: NDArray[np.float64]
    set_size: NDArray[np.intp] | None = None
    width: NDArray[np.float64] | None = None
    scores: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    predicted_class: NDArray[np.intp] | None = None

    def __len__(self) -> int:
        return len(self.confidence)


@dataclass
class TierCalibration:
    """Thresholds certified for the risk-controlled tiers.

    Parameters
    ----------
    thresholds : dict
        Tier name -> minimum score a row needs (a float, or an array indexed by
        predicted class when the tier is ``per_class``). ``inf`` means the tier
        could not be certified and accepts nothing.
    report : dict
        Tier name -> what the calibration found (see
        ``SafePredictor.calibration_report``).
    """

    thresholds: dict[str, Any] = field(default_factory=dict)
    report: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        """JSON-safe dict of the thresholds and the report (see :meth:`from_state`).

        Thresholds stay floats (``inf`` included; the persistence layer encodes
        non-finite floats); per-class thresholds become lists.

        Examples
        --------
        >>> cal = TierCalibration({"auto": 0.93, "fast": np.array([0.9, np.inf])})
        >>> back = TierCalibration.from_state(cal.to_state())
        >>> back.thresholds["auto"], back.thresholds["fast"].tolist()
        (0.93, [0.9, inf])
        """
        thresholds: dict[str, Any] = {}
        for name, t in self.thresholds.items():
            arr = np.asarray(t, dtype=np.float64)
            thresholds[str(name)] = [float(v) for v in arr] if arr.ndim == 1 else float(arr)
        return {"thresholds": thresholds, "report": _json_safe(self.report)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TierCalibration:
        """Rebuild from :meth:`to_state` output; raises ``ValueError`` if malformed."""
        if not isinstance(state, Mapping) or not isinstance(state.get("thresholds"), Mapping):
            raise ValueError("tier calibration state needs a 'thresholds' object.")
        thresholds: dict[str, Any] = {}
        for name, t in state["thresholds"].items():
            if isinstance(t, list):
                thresholds[str(name)] = np.asarray(t, dtype=np.float64)
            elif isinstance(t, int | float) and not isinstance(t, bool):
                thresholds[str(name)] = float(t)
            else:
                raise ValueError(f"threshold of tier {name!r} must be a number or a list.")
        report = state.get("report", {})
        if not isinstance(report, Mapping):
            raise ValueError("tier calibration 'report' must be an object.")
        return cls(thresholds=thresholds, report={str(k): dict(v) for k, v in report.items()})

    def is_certified(self, tier: str) -> bool:
        """Whether ``tier`` can accept any row at all."""
        t = self.thresholds.get(tier)
        return t is not None and bool(np.any(np.isfinite(np.asarray(t, dtype=np.float64))))


def _json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays to Python values, keeping non-finite floats."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tier_mask(
    tier: Tier, inputs: TierInputs, calibration: TierCalibration | None
) -> NDArray[np.bool_]:
    n = len(inputs)
    mask = np.ones(n, dtype=bool)
    if tier.min_confidence is not None:
        mask &= inputs.confidence >= tier.min_confidence
    if tier.max_set_size is not None and inputs.set_size is not None:
        mask &= (inputs.set_size <= tier.max_set_size) & (inputs.set_size >= 1)
    if tier.max_interval_width is not None and inputs.width is not None:
        mask &= inputs.width <= tier.max_interval_width
    if tier.max_error is not None:
        threshold = None if calibration is None else calibration.thresholds.get(tier.name)
        if threshold is None:
            return np.zeros(n, dtype=bool)
        score = inputs.scores.get(tier.score, inputs.confidence)
        t = np.asarray(threshold, dtype=np.float64)
        if t.ndim == 1 and inputs.predicted_class is not None:
            t = t[inputs.predicted_class]
        mask &= score >= t
    if tier.action == "accept" and inputs.set_size is not None:
        mask &= inputs.set_size == 1
    return mask


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
        conformal set is empty) and ``uncertified:<tier>`` (rows that reached a
        ``max_error`` tier which could not be certified).

    Examples
    --------
    >>> policy = TierPolicy.default("classification")
    >>> inputs = TierInputs("classification", confidence=np.array([0.99, 0.4, 0.2]),
    ...                     set_size=np.array([1, 2, 0]))
    >>> codes, reasons = assign_tiers(policy, inputs)
    >>> codes.tolist(), reasons
    ([0, 1, 1], {2: ('empty_set',)})
    """
    n = len(inputs)
    fallback = len(policy.tiers) - 1
    codes = np.full(n, fallback, dtype=np.intp)
    open_rows = np.ones(n, dtype=bool)
    extra: dict[int, list[str]] = {}
    for index, tier in enumerate(policy.tiers[:-1]):
        if not open_rows.any():
            break
        if tier.max_error is not None and not (
            calibration is not None and calibration.is_certified(tier.name)
        ):
            for row in np.flatnonzero(open_rows):
                extra.setdefault(int(row), []).append(f"uncertified:{tier.name}")
            continue
        hit = open_rows & _tier_mask(tier, inputs, calibration)
        codes[hit] = index
        open_rows &= ~hit
    if inputs.set_size is not None:
        for row in np.flatnonzero(inputs.set_size == 0):
            extra.setdefault(int(row), []).append("empty_set")
    return codes, {row: tuple(r) for row, r in extra.items()}
