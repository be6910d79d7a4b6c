"""Tier state: what the tiers read per row and what calibration certified.

:class:`TierInputs` holds the per-row numbers; :class:`TierCalibration` the
certified thresholds (JSON round-trip).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import group_labels
from safepredict._jsonl import to_builtin

__all__ = ["TierCalibration", "TierInputs", "finite_or_none", "group_labels"]


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
    credibility : ndarray of shape (n,), optional
        Classification: conformal credibility (p-value of the predicted label).
    tie_break : dict of str to ndarray, default={}
        Per score name, finer scores ``(n,)`` or ``(n, j)`` that break the ties
        of the primary score (in order; higher = more confident). A
        ``max_error`` tier ranks rows lexicographically by the score and then
        these, so it can certify on the finest-grained order. Default for
        classification: :func:`probability_tie_breaks` of ``scores``.
    groups : dict of str to ndarray, default={}
        Per column name, each row's group value (for ``group_by`` tiers).
    """

    task: str
    confidence: NDArray[np.float64]
    set_size: NDArray[np.intp] | None = None
    width: NDArray[np.float64] | None = None
    scores: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    predicted_class: NDArray[np.intp] | None = None
    credibility: NDArray[np.float64] | None = None
    tie_break: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    groups: Mapping[str, NDArray[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.confidence)


def finite_or_none(v: float) -> float | None:
    """``v`` as a float, or ``None`` when it is not finite (JSON has no ``inf``)."""
    return float(v) if math.isfinite(float(v)) else None


def _json_threshold(t: Any) -> Any:
    if isinstance(t, Mapping):
        return {str(g): _json_threshold(v) for g, v in t.items()}
    arr = np.asarray(t, dtype=np.float64)
    if arr.ndim == 0:
        return finite_or_none(float(arr))
    return [_json_threshold(v) for v in arr]


def _from_json_threshold(t: Any) -> Any:
    if t is None:
        return math.inf
    if isinstance(t, Mapping):
        return {str(g): _from_json_threshold(v) for g, v in t.items()}
    if isinstance(t, list):
        return np.array([_from_json_threshold(v) for v in t], dtype=np.float64)
    return float(t)


@dataclass
class TierCalibration:
    """Thresholds certified for the risk-controlled tiers.

    Parameters
    ----------
    thresholds : dict
        Tier name -> minimum primary score a row needs: a float, an array
        indexed by predicted class (``per_class`` tiers) or a dict by group
        value (``group_by`` tiers). ``inf`` means the tier (class, group) could
        not be certified and accepts nothing.
    report : dict
        Tier name -> what the calibration found (see
        ``SafePredictor.calibration_report``); JSON-safe.
    warnings : list of dict
        One entry per tier (or class, or group) that could not be certified:
        ``tier``, ``class`` / ``group``, ``reason`` (``"budget"``: too few
        calibration rows even with zero errors; ``"not_certified"``: too many
        errors), ``message``.
    keys : dict
        Tier name -> the full threshold key (primary score, then tie-breakers;
        same layout as ``thresholds`` with one more axis). Rows are accepted
        when their ranking key is lexicographically ``>=`` it. Missing for a
        tier: its ``thresholds`` alone.

    Examples
    --------
    >>> cal = TierCalibration({"auto": 0.93, "suggest": math.inf})
    >>> cal.is_certified("auto"), cal.is_certified("suggest")
    (True, False)
    >>> TierCalibration.from_state(cal.to_state()).thresholds["suggest"]
    inf
    """

    thresholds: dict[str, Any] = field(default_factory=dict)
    report: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)

    def is_certified(self, tier: str) -> bool:
        """Whether ``tier`` can accept any row at all."""
        t = self.thresholds.get(tier)
        if t is None:
            return False
        if isinstance(t, Mapping):
            return any(math.isfinite(float(v)) for v in t.values())
        return bool(np.any(np.isfinite(np.asarray(t, dtype=np.float64))))

    def key_for(self, tier: str) -> Any:
        """The threshold key(s) of ``tier`` (derived from ``thresholds`` if not stored)."""
        if tier in self.keys:
            return self.keys[tier]
        t = self.thresholds[tier]
        if isinstance(t, Mapping):
            return {g: np.array([float(v)]) for g, v in t.items()}
        return np.asarray(t, dtype=np.float64)[..., None]

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (``inf`` thresholds become ``None``)."""
        return {
            "thresholds": {k: _json_threshold(v) for k, v in self.thresholds.items()},
            "keys": {k: _json_threshold(v) for k, v in self.keys.items()},
            "report": to_builtin(self.report),
            "warnings": to_builtin(self.warnings),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TierCalibration:
        """Restore from :meth:`to_state`."""
        return cls(
            thresholds={k: _from_json_threshold(v) for k, v in state["thresholds"].items()},
            report={k: dict(v) for k, v in state.get("report", {}).items()},
            warnings=[dict(w) for w in state.get("warnings", [])],
            keys={k: _from_json_threshold(v) for k, v in state.get("keys", {}).items()},
        )
