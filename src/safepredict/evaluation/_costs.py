"""Cost model: expected cost per 1,000 cases and the cost-optimal threshold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import describe
from safepredict.evaluation._curves import RiskCoverageCurve
from safepredict.exceptions import ConfigError


# --------------------------------------------------------------------------- costs
@dataclass(frozen=True)
class CostModel:
    """What errors and human work cost, to price a policy.

    Parameters
    ----------
    cost_error : float
        Cost of one wrong answer that was accepted automatically.
    cost_review : float
        Cost of one case a human reviews (assumed to end correct).
    cost_abstain : float, optional
        Cost of one abstained case. Default: ``cost_review``.
    cost_accept : float, default=0.0
        Running cost of one automatic answer.
    tier_costs : dict of str to float, default={}
        Per-row cost of a named tier, replacing the cost of its action.

    Examples
    --------
    >>> CostModel(cost_error=50, cost_review=2).per_row("abstain")
    2.0
    """

    cost_error: float
    cost_review: float
    cost_abstain: float | None = None
    cost_accept: float = 0.0
    tier_costs: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = {
            "cost_error": self.cost_error,
            "cost_review": self.cost_review,
            "cost_abstain": self.cost_abstain,
            "cost_accept": self.cost_accept,
            **{f"tier_costs[{k!r}]": v for k, v in dict(self.tier_costs).items()},
        }
        for key, value in values.items():
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ConfigError(
                    f"{key} must be a finite number >= 0 (cost per case); got {describe(value)}."
                )

    def per_row(self, action: str, tier: str | None = None) -> float:
        """Cost of one row with ``action`` in ``tier`` (errors excluded)."""
        if tier is not None and tier in self.tier_costs:
            return float(self.tier_costs[tier])
        if action == "accept":
            return float(self.cost_accept)
        if action == "review":
            return float(self.cost_review)
        return float(self.cost_review if self.cost_abstain is None else self.cost_abstain)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "cost_error": self.cost_error,
            "cost_review": self.cost_review,
            "cost_abstain": self.cost_abstain,
            "cost_accept": self.cost_accept,
            "tier_costs": dict(self.tier_costs),
        }


@dataclass(frozen=True)
class CostCurve:
    """Expected cost per 1,000 cases at each threshold of one score.

    Rows above the threshold are answered automatically (``cost_accept`` each,
    plus ``cost_error`` when wrong); the rest go to review (``cost_review``).
    Index 0 is "accept nothing" (threshold ``inf``).
    """

    name: str
    thresholds: NDArray[np.float64]
    coverage: NDArray[np.float64]
    cost_per_1000: NDArray[np.float64]

    @property
    def best(self) -> int:
        """Index of the cost-optimal threshold."""
        return int(np.argmin(self.cost_per_1000))

    def optimal(self) -> dict[str, float]:
        """The cost-optimal threshold, its coverage and cost per 1,000 cases."""
        j = self.best
        return {
            "threshold": float(self.thresholds[j]),
            "coverage": float(self.coverage[j]),
            "cost_per_1000": float(self.cost_per_1000[j]),
        }


def cost_curve(curve: RiskCoverageCurve, cost: CostModel) -> CostCurve:
    """Cost per 1,000 cases at every threshold of ``curve`` (O(points)).

    Examples
    --------
    >>> from safepredict.evaluation import risk_coverage
    >>> c = risk_coverage([0.9, 0.8, 0.1], [0, 0, 1])
    >>> cc = cost_curve(c, CostModel(cost_error=50, cost_review=2))
    >>> cc.cost_per_1000.round(1).tolist()
    [2000.0, 1333.3, 666.7, 16666.7]
    >>> round(cc.optimal()["coverage"], 3)
    0.667
    """
    n = max(curve.n, 1)
    n_acc = np.concatenate([[0], curve.n_accepted])
    n_err = np.concatenate([[0], curve.n_errors])
    total = (
        cost.cost_accept * n_acc + cost.cost_error * n_err + cost.cost_review * (curve.n - n_acc)
    )
    return CostCurve(
        curve.name,
        np.concatenate([[math.inf], curve.thresholds]),
        n_acc / n,
        np.asarray(total / n * 1000.0, dtype=np.float64),
    )
