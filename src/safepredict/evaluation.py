"""Offline abstention benchmark: risk-coverage curves, operating points, tiers and costs.

The data scientist's question: *if the model decides only when it is confident,
how many cases does it handle, how often is it wrong there, and what does that
cost?* This module answers it from a calibrated :class:`~safepredict.SafePredictor`
and labelled test data, from raw arrays of scores and errors, or from a production
decision log joined with outcomes (see :func:`replay`).

Conventions
-----------
* A *score* is higher for more confident rows. Accepting at threshold ``t``
  accepts **every** row with ``score >= t`` (rows with tied scores are accepted
  or rejected together), so a curve has one point per distinct score.
* *Coverage* is the fraction of rows accepted; *selective risk* is the error
  rate among them.
* Every curve sorts the scores once and uses cumulative sums: ``O(n log n)``.

Examples
--------
>>> scores = np.array([0.9, 0.8, 0.8, 0.3])
>>> errors = np.array([False, False, True, True])
>>> curve = risk_coverage(scores, errors)
>>> curve.coverage.tolist(), curve.risk.round(3).tolist()
([0.25, 0.75, 1.0], [0.0, 0.333, 0.5])
>>> round(curve.aurc, 4)
0.2917
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from safepredict._validation import check_fraction, check_one_of, describe
from safepredict.config import Tier, TierPolicy
from safepredict.decisions import to_builtin
from safepredict.exceptions import ConfigError, InputSchemaError
from safepredict.tiers import (
    TierCalibration,
    TierInputs,
    assign_tiers,
    calibrate_tiers,
    certify_threshold,
)

if TYPE_CHECKING:
    import pandas as pd

    from safepredict.predictor import SafePredictor

__all__ = [
    "CLASSIFICATION_SCORES",
    "CostCurve",
    "CostModel",
    "Evaluation",
    "OperatingPoint",
    "PolicyComparison",
    "PolicyResult",
    "RiskCoverageCurve",
    "ScoredData",
    "TierRow",
    "apply_threshold",
    "benchmark",
    "binomial_interval",
    "calibrate_policy",
    "certified_threshold",
    "compare_policies",
    "cost_curve",
    "evaluate",
    "evaluate_policy",
    "load_decision_log",
    "reliability",
    "replay",
    "risk_coverage",
    "score_predictor",
    "threshold_policies",
]

#: Scores computed for classifiers (higher means more confident).
CLASSIFICATION_SCORES: tuple[str, ...] = ("conformal", "top_prob", "margin", "entropy")
_BANDS = ("wilson", "clopper-pearson")


# --------------------------------------------------------------------------- intervals
def binomial_interval(
    n_errors: ArrayLike,
    n: ArrayLike,
    *,
    confidence: float = 0.95,
    method: str = "wilson",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided confidence interval of an error rate, elementwise.

    Parameters
    ----------
    n_errors, n : array-like of int
        Errors and trials (``n == 0`` gives ``nan`` bounds).
    confidence : float, default=0.95
        Coverage of the interval.
    method : {"wilson", "clopper-pearson"}, default="wilson"
        Wilson score interval or the exact (conservative) Clopper-Pearson one.

    Returns
    -------
    lower, upper : ndarray of float

    Examples
    --------
    >>> lo, hi = binomial_interval([0, 5], [10, 10], method="clopper-pearson")
    >>> lo.round(3).tolist(), hi.round(3).tolist()
    ([0.0, 0.187], [0.308, 0.813])
    """
    check_fraction(confidence, "confidence")
    check_one_of(method, "band", _BANDS)
    e = np.asarray(n_errors, dtype=np.float64)
    k = np.asarray(n, dtype=np.float64)
    alpha = 1.0 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "wilson":
            z = float(stats.norm.ppf(1 - alpha / 2))
            p = e / k
            denom = 1 + z * z / k
            center = (p + z * z / (2 * k)) / denom
            half = z / denom * np.sqrt(p * (1 - p) / k + z * z / (4 * k * k))
            lower, upper = np.clip(center - half, 0, 1), np.clip(center + half, 0, 1)
        else:
            lower = np.where(e > 0, stats.beta.ppf(alpha / 2, e, k - e + 1), 0.0)
            upper = np.where(e < k, stats.beta.ppf(1 - alpha / 2, e + 1, k - e), 1.0)
    empty = k <= 0
    lower = np.where(empty, np.nan, lower)
    upper = np.where(empty, np.nan, upper)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


# --------------------------------------------------------------------------- curves
def _as_scores_errors(
    scores: ArrayLike, errors: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e_raw = np.asarray(errors)
    if e_raw.dtype != bool and not np.isin(e_raw, (0, 1)).all():
        raise ConfigError(
            "errors must be booleans (True = the prediction was wrong) or 0/1; got values "
            f"{np.unique(e_raw)[:5].tolist()}. Pass errors = prediction != y_true."
        )
    e = e_raw.astype(bool).reshape(-1)
    if len(s) != len(e):
        raise ConfigError(
            f"scores and errors must have one value per row; got {len(s)} scores and "
            f"{len(e)} errors."
        )
    # Rows without a score (the model failed) rank below every scored row.
    return np.where(np.isnan(s), -np.inf, s), e


def _optimal_aurc(n: int, n_errors: int) -> float:
    """AURC of the oracle ranking (every correct row before every wrong row)."""
    if n == 0 or n_errors == 0:
        return 0.0
    n_correct = n - n_errors
    k = np.arange(n_correct + 1, n + 1, dtype=np.float64)
    return float(np.sum((k - n_correct) / k) / n)


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Selective risk against coverage for one score, one point per distinct score.

    Point ``j`` accepts every row whose score is at least ``thresholds[j]``.
    Build it with :func:`risk_coverage`.

    Attributes
    ----------
    name : str
        The score's name.
    thresholds : ndarray
        Distinct scores, descending.
    n_accepted, n_errors : ndarray of int
        Rows accepted and errors among them at each threshold.
    n : int
        Number of rows.
    risk_lower, risk_upper : ndarray
        Pointwise confidence band of the selective risk (computed on first
        access; :meth:`band_at` computes it at chosen points only).
    confidence : float
        Coverage of each pointwise band.
    band : str
        ``"wilson"`` or ``"clopper-pearson"``.
    """

    name: str
    thresholds: NDArray[np.float64]
    n_accepted: NDArray[np.int64]
    n_errors: NDArray[np.int64]
    n: int
    confidence: float = 0.95
    band: str = "wilson"

    def band_at(self, idx: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Lower and upper band of the selective risk at the points ``idx``."""
        i = np.asarray(idx, dtype=np.intp)
        return binomial_interval(
            self.n_errors[i], self.n_accepted[i], confidence=self.confidence, method=self.band
        )

    @cached_property
    def _band(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self.band_at(np.arange(len(self.thresholds)))

    @property
    def risk_lower(self) -> NDArray[np.float64]:
        """Lower end of the pointwise band at every point."""
        return self._band[0]

    @property
    def risk_upper(self) -> NDArray[np.float64]:
        """Upper end of the pointwise band at every point."""
        return self._band[1]

    @property
    def coverage(self) -> NDArray[np.float64]:
        """Fraction of rows accepted at each threshold."""
        return np.asarray(self.n_accepted / max(self.n, 1), dtype=np.float64)

    @property
    def risk(self) -> NDArray[np.float64]:
        """Selective risk (error rate among accepted rows) at each threshold."""
        return np.asarray(self.n_errors / np.maximum(self.n_accepted, 1), dtype=np.float64)

    @property
    def error_rate(self) -> float:
        """Error rate over all rows (the risk at full coverage)."""
        return float(self.n_errors[-1] / self.n) if self.n else float("nan")

    @property
    def aurc(self) -> float:
        """Area under the risk-coverage curve.

        Each row contributes the selective risk at the threshold equal to its own
        score, divided by ``n``; without ties this is the usual
        ``mean_k risk(top k)``.
        """
        if self.n == 0:
            return float("nan")
        steps = np.diff(self.n_accepted, prepend=0)
        return float(np.sum(steps * self.risk) / self.n)

    @property
    def optimal_aurc(self) -> float:
        """AURC of an oracle that ranks every correct row above every error."""
        return _optimal_aurc(self.n, int(self.n_errors[-1]) if self.n else 0)

    @property
    def eaurc(self) -> float:
        """Excess AURC: ``aurc - optimal_aurc`` (0 for a perfect ranking)."""
        return self.aurc - self.optimal_aurc

    def at_coverage(self, coverages: Iterable[float]) -> list[OperatingPoint]:
        """Selective risk at target coverages.

        Ties are accepted together, so the point used for a target ``c`` is the
        one with the largest coverage that does not exceed ``c`` (never accept
        more than asked). A target below the first point gives coverage 0.

        Examples
        --------
        >>> c = risk_coverage([3, 2, 2, 1], [0, 0, 1, 1])
        >>> [(p.coverage, p.risk) for p in c.at_coverage([0.5, 0.75])]
        [(0.25, 0.0), (0.75, 0.3333333333333333)]
        """
        cov = self.coverage
        out = []
        for target in coverages:
            j = int(np.searchsorted(cov, float(target) + 1e-12, side="right")) - 1
            out.append(self._point(j, "at_coverage", target=float(target)))
        return out

    def at_risk(self, targets: Iterable[float]) -> list[OperatingPoint]:
        """Largest coverage whose *empirical* selective risk is at most each target.

        This is the naive operating point: it carries no guarantee on new data
        (compare :func:`certified_threshold`).

        Examples
        --------
        >>> c = risk_coverage([3, 2, 2, 1], [0, 0, 1, 1])
        >>> [p.coverage for p in c.at_risk([0.0, 0.4, 0.5])]
        [0.25, 0.75, 1.0]
        """
        risk = self.risk
        out = []
        for target in targets:
            ok = np.flatnonzero(risk <= float(target) + 1e-12)
            j = int(ok[-1]) if len(ok) else -1
            out.append(self._point(j, "empirical", target=float(target)))
        return out

    def _point(self, j: int, method: str, target: float | None = None) -> OperatingPoint:
        if j < 0:
            return OperatingPoint(
                self.name, math.inf, 0.0, math.nan, math.nan, 0, 0, method, target
            )
        return OperatingPoint(
            score=self.name,
            threshold=float(self.thresholds[j]),
            coverage=float(self.coverage[j]),
            risk=float(self.risk[j]),
            risk_upper=float(self.band_at([j])[1][0]),
            n_accepted=int(self.n_accepted[j]),
            n_errors=int(self.n_errors[j]),
            method=method,
            target=target,
        )

    def downsample(self, max_points: int = 400) -> NDArray[np.intp]:
        """Indices of at most ``max_points`` points spread evenly over coverage."""
        m = len(self.thresholds)
        if m <= max_points:
            return np.arange(m)
        grid = np.linspace(0, self.n, max_points)
        idx = np.searchsorted(self.n_accepted, grid, side="left").clip(0, m - 1)
        return np.unique(np.concatenate([idx, [m - 1]]))

    def to_dict(self, max_points: int = 200) -> dict[str, Any]:
        """JSON-safe summary with at most ``max_points`` curve points."""
        idx = self.downsample(max_points)
        lower, upper = self.band_at(idx)
        return {
            "score": self.name,
            "n": self.n,
            "aurc": self.aurc,
            "eaurc": self.eaurc,
            "error_rate": self.error_rate,
            "band": self.band,
            "confidence": self.confidence,
            "points": {
                "threshold": to_builtin(self.thresholds[idx]),
                "coverage": to_builtin(self.coverage[idx]),
                "risk": to_builtin(self.risk[idx]),
                "risk_lower": to_builtin(lower),
                "risk_upper": to_builtin(upper),
            },
        }


def risk_coverage(
    scores: ArrayLike,
    errors: ArrayLike,
    *,
    name: str = "score",
    band: str = "wilson",
    confidence: float = 0.95,
) -> RiskCoverageCurve:
    """Risk-coverage curve of one score, with a pointwise confidence band.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Confidence score per row, higher is more confident; ``nan`` ranks last.
    errors : array-like of bool of shape (n,)
        Whether the model's answer on the row is wrong.
    name : str, default="score"
        Label of the curve.
    band : {"wilson", "clopper-pearson"}, default="wilson"
        Pointwise interval of the selective risk at each threshold.
    confidence : float, default=0.95
        Coverage of the pointwise band.

    Returns
    -------
    RiskCoverageCurve

    Examples
    --------
    >>> c = risk_coverage([0.2, 0.9, 0.9, 0.5], [1, 0, 1, 0], name="p")
    >>> c.thresholds.tolist(), c.n_accepted.tolist(), c.n_errors.tolist()
    ([0.9, 0.5, 0.2], [2, 3, 4], [1, 1, 2])
    """
    s, e = _as_scores_errors(scores, errors)
    n = len(s)
    if n == 0:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        return RiskCoverageCurve(name, empty_f, empty_i, empty_i, 0, confidence, band)
    order = np.argsort(-s)  # ties are grouped below, so their order does not matter
    s_sorted = s[order]
    cum_errors = np.cumsum(e[order], dtype=np.int64)
    # Last row of each group of tied scores: accepting a score accepts the whole group.
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    n_acc = (ends + 1).astype(np.int64)
    n_err = cum_errors[ends]
    check_fraction(confidence, "confidence")
    check_one_of(band, "band", _BANDS)
    return RiskCoverageCurve(name, s_sorted[ends], n_acc, n_err, n, float(confidence), band)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold on one score and what it gives.

    Attributes
    ----------
    score : str
        Which score is thresholded.
    threshold : float
        Rows with ``score >= threshold`` are accepted (``inf``: none).
    coverage, risk : float
        Fraction accepted and error rate among them (``nan`` if none).
    risk_upper : float
        Upper end of the pointwise band of ``risk``.
    n_accepted, n_errors : int
        Counts behind ``coverage`` and ``risk``.
    method : str
        How the threshold was chosen: ``"empirical"`` (largest coverage whose
        observed risk meets the target), ``"certified"`` (Learn-then-Test),
        ``"at_coverage"`` or ``"cost_optimal"``.
    target : float, optional
        The target coverage / error the point was chosen for.
    """

    score: str
    threshold: float
    coverage: float
    risk: float
    risk_upper: float
    n_accepted: int
    n_errors: int
    method: str
    target: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (infinite thresholds become ``None``)."""
        return {k: to_builtin(v) for k, v in self.__dict__.items()}


def apply_threshold(
    scores: ArrayLike,
    errors: ArrayLike,
    threshold: float,
    *,
    name: str = "score",
    method: str = "empirical",
    target: float | None = None,
    confidence: float = 0.95,
) -> OperatingPoint:
    """Coverage and risk of accepting ``score >= threshold`` on (new) data.

    Examples
    --------
    >>> apply_threshold([0.9, 0.8, 0.1], [0, 1, 1], 0.8).risk
    0.5
    """
    s, e = _as_scores_errors(scores, errors)
    acc = s >= threshold
    k, err = int(acc.sum()), int(e[acc].sum())
    _, hi = binomial_interval([err], [k], confidence=confidence)
    return OperatingPoint(
        score=name,
        threshold=float(threshold),
        coverage=k / len(s) if len(s) else math.nan,
        risk=err / k if k else math.nan,
        risk_upper=float(hi[0]),
        n_accepted=k,
        n_errors=err,
        method=method,
        target=target,
    )


# ------------------------------------------------------------------ certification
def certified_threshold(
    scores: ArrayLike, errors: ArrayLike, *, max_error: float, delta: float
) -> float:
    """Lowest threshold whose selective risk is at most ``max_error`` w.p. ``1 - delta``.

    Learn-then-Test (fixed-sequence testing, exact binomial p-values), delegated
    to :func:`safepredict.tiers.certify_threshold`, the same procedure the
    risk-controlled tiers use: this is the single place the evaluation certifies
    a threshold. ``inf`` means nothing could be certified (accept nothing).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=2000)
    >>> err = rng.uniform(size=2000) < 0.3 * (1 - s)
    >>> t = certified_threshold(s, err, max_error=0.05, delta=0.1)
    >>> bool(0.5 < t < 1.0)
    True
    """
    check_fraction(max_error, "max_error")
    check_fraction(delta, "delta")
    s, e = _as_scores_errors(scores, errors)
    return float(certify_threshold(s, e, max_error=max_error, delta=delta).threshold)


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


# --------------------------------------------------------------------------- data
@dataclass
class ScoredData:
    """Per-row scores, errors and conformal results the benchmark works on.

    Build it with :func:`score_predictor` (a calibrated predictor and labelled
    data), :func:`load_decision_log` (a production log joined with outcomes) or
    :meth:`from_arrays`.

    Attributes
    ----------
    task : {"classification", "regression"}
        What the model predicts.
    errors : ndarray of bool or None
        Whether each answer is wrong (regression: ``|y - y_hat| > tolerance``;
        ``None`` when no tolerance was given).
    scores : dict of str to ndarray
        Confidence scores by name, higher is more confident (classification:
        ``conformal``, ``top_prob``, ``margin``, ``entropy`` = minus the
        entropy of the predicted probabilities).
    set_size : ndarray of int or None
        Size of the conformal prediction set (classification).
    covered : ndarray of bool or None
        Whether the true label / value is in the conformal set / interval.
    width : ndarray or None
        Width of the conformal interval (regression).
    predicted_class : ndarray of int or None
        Index of the predicted class (for per-class thresholds).
    abs_residual : ndarray or None
        ``|y - y_hat|`` (regression), for ``max_error`` tiers with a tolerance.
    blocked_action : ndarray of str or None
        ``"review"``/``"abstain"`` for rows a guard (or a model failure) took
        out of the tiers, ``""`` otherwise. Such rows never reach a tier.
    logged_tier, logged_action : ndarray or None
        The tier and action the rows actually got (predictor output or log).
    confidence_level : float or None
        Level of the conformal sets / intervals.
    sweep : list of dict or None
        Empirical coverage and mean set size at several confidence levels.
    ids : ndarray or None
        Decision ids.
    guard_tier : str
        Tier name of the rows a guard blocked.
    n_classes : int or None
        Number of classes (classification), for per-class tiers.
    """

    task: str
    errors: NDArray[np.bool_] | None
    scores: dict[str, NDArray[np.float64]]
    set_size: NDArray[np.intp] | None = None
    covered: NDArray[np.bool_] | None = None
    width: NDArray[np.float64] | None = None
    predicted_class: NDArray[np.intp] | None = None
    abs_residual: NDArray[np.float64] | None = None
    blocked_action: NDArray[Any] | None = None
    logged_tier: NDArray[Any] | None = None
    logged_action: NDArray[Any] | None = None
    confidence_level: float | None = None
    sweep: list[dict[str, float]] | None = None
    ids: NDArray[Any] | None = None
    guard_tier: str = "guard"
    n_classes: int | None = None
    _orders: dict[str, NDArray[np.intp]] = field(default_factory=dict, repr=False, compare=False)
    _views: dict[str, ScoredData] = field(default_factory=dict, repr=False, compare=False)

    def order(self, score: str) -> NDArray[np.intp]:
        """Row order by ``score``, most confident first (``nan`` last); computed once."""
        if score not in self._orders:
            s = self.scores[score]
            self._orders[score] = np.argsort(-np.where(np.isnan(s), -np.inf, s))
        return self._orders[score]

    def _certification_view(self, score: str) -> ScoredData:
        """Rows no guard blocked, sorted by ``score``; built once per score and cached.

        Certification on sorted rows skips its ``O(n log n)`` sort, and its result
        does not depend on the row order.
        """
        view = self._views.get(score)
        if view is None:
            rows = self.order(score) if score in self.scores else np.arange(len(self))
            if self.blocked_action is not None:
                rows = rows[(self.blocked_action == "")[rows]]
            view = self.take(rows)
            self._views[score] = view
        return view

    def sorted_by(self, score: str) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Scores and errors sorted by ``score``, most confident first.

        Curves and certification of sorted input skip the ``O(n log n)`` sort.
        """
        if self.errors is None:
            raise ConfigError("these data have no errors; pass labelled data.")
        idx = self.order(score)
        return self.scores[score][idx], self.errors[idx]

    def __len__(self) -> int:
        if self.errors is not None:
            return len(self.errors)
        return len(next(iter(self.scores.values()))) if self.scores else 0

    @classmethod
    def from_arrays(
        cls,
        errors: ArrayLike,
        scores: Mapping[str, ArrayLike],
        *,
        set_size: ArrayLike | None = None,
        covered: ArrayLike | None = None,
        predicted_class: ArrayLike | None = None,
    ) -> ScoredData:
        """Classification data from plain arrays (e.g. scores computed elsewhere).

        Examples
        --------
        >>> d = ScoredData.from_arrays([0, 1], {"conformal": [0.99, 0.4]}, set_size=[1, 2])
        >>> len(d), d.errors.tolist()
        (2, [False, True])
        """
        e = np.asarray(errors).astype(bool).reshape(-1)
        s = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in scores.items()}
        for k, v in s.items():
            if len(v) != len(e):
                raise ConfigError(
                    f"score {k!r} has {len(v)} values but errors has {len(e)}; pass one value "
                    "per row."
                )
        return cls(
            task="classification",
            errors=e,
            scores=s,
            set_size=None if set_size is None else np.asarray(set_size, dtype=np.intp),
            covered=None if covered is None else np.asarray(covered, dtype=bool),
            predicted_class=None
            if predicted_class is None
            else np.asarray(predicted_class, dtype=np.intp),
        )

    def take(self, rows: NDArray[np.intp]) -> ScoredData:
        """The same data restricted to ``rows``."""

        def sub(a: Any) -> Any:
            return None if a is None else a[rows]

        return ScoredData(
            task=self.task,
            errors=sub(self.errors),
            scores={k: v[rows] for k, v in self.scores.items()},
            set_size=sub(self.set_size),
            covered=sub(self.covered),
            width=sub(self.width),
            predicted_class=sub(self.predicted_class),
            abs_residual=sub(self.abs_residual),
            blocked_action=sub(self.blocked_action),
            logged_tier=sub(self.logged_tier),
            logged_action=sub(self.logged_action),
            confidence_level=self.confidence_level,
            sweep=None,
            ids=sub(self.ids),
            guard_tier=self.guard_tier,
            n_classes=self.n_classes,
        )

    def tier_inputs(self) -> TierInputs:
        """The per-row quantities :func:`safepredict.tiers.assign_tiers` needs."""
        n = len(self)
        confidence = self.scores.get("conformal", np.full(n, np.nan))
        return TierInputs(
            self.task,
            confidence,
            set_size=self.set_size,
            width=self.width,
            scores={
                k: v for k, v in self.scores.items() if k in ("conformal", "top_prob", "margin")
            },
            predicted_class=self.predicted_class,
        )

    def tier_errors(self, tier: Tier) -> NDArray[np.bool_]:
        """What counts as an error for ``tier`` (regression uses its tolerance)."""
        if self.task == "regression":
            if self.abs_residual is None or tier.tolerance is None:
                return np.ones(len(self), dtype=bool)
            return np.asarray(self.abs_residual > tier.tolerance, dtype=bool)
        if self.errors is None:
            raise ConfigError("these data have no errors; pass labelled data.")
        return self.errors


def _probability_scores(proba: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """Top-class probability, margin and minus entropy of each row's probabilities."""
    n, k = proba.shape
    if k >= 2:
        top2 = np.partition(proba, -2, axis=1)[:, -2:]
        top, second = top2[:, 1], top2[:, 0]
    else:
        top, second = (proba[:, 0] if k else np.zeros(n)), np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(proba > 0, proba * np.log(np.where(proba > 0, proba, 1.0)), 0.0)
    return {"top_prob": top, "margin": top - second, "entropy": plogp.sum(axis=1)}


_SWEEP_LEVELS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99)


def score_predictor(
    predictor: SafePredictor,
    X: Any,
    y: Any,
    *,
    tolerance: float | None = None,
    levels: Sequence[float] = _SWEEP_LEVELS,
) -> ScoredData:
    """Score labelled data with a calibrated predictor, without side effects.

    The predictor decides on a copy with logging, routing and explanations
    switched off, so benchmarking neither writes events nor fills the review
    queue.

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor.
    X : array-like or DataFrame
        Rows with the calibration features.
    y : array-like
        True labels / values.
    tolerance : float, optional
        Regression: an answer is an error when ``|y - y_hat| > tolerance``.
    levels : sequence of float
        Confidence levels of the coverage / set-size sweep (classification).

    Returns
    -------
    ScoredData

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from safepredict import SafePredictor
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    >>> data = score_predictor(sp, X[2::3], y[2::3])
    >>> sorted(data.scores), len(data)
    (['conformal', 'entropy', 'margin', 'top_prob'], 50)
    """
    predictor._check_calibrated("score_predictor")
    quiet = copy.copy(predictor)
    quiet.router = None
    quiet.log = "off"
    quiet.explainer = None
    decisions = quiet.decide(X)
    y_arr = np.asarray(y).reshape(-1)
    if len(y_arr) != len(decisions):
        raise InputSchemaError(
            f"y has {len(y_arr)} values but X has {len(decisions)} rows; pass one label per row.",
            problems=[f"len(y)={len(y_arr)}, rows={len(decisions)}"],
        )
    policy = predictor.policy_
    guard_code = len(policy.tiers)
    blocked = decisions.tier_codes == guard_code
    blocked_action = np.where(blocked, decisions.actions, "").astype(object)
    common: dict[str, Any] = {
        "blocked_action": blocked_action,
        "logged_tier": decisions.tiers,
        "logged_action": np.asarray(decisions.actions, dtype=object),
        "confidence_level": float(predictor.confidence_level),
        "ids": decisions.decision_ids,
        "guard_tier": policy.guard_tier,
    }
    failed = np.array([p is None for p in decisions.predictions], dtype=bool)
    if predictor.task_ == "classification":
        assert decisions.probabilities is not None
        assert decisions.set_mask is not None
        classes = np.asarray(predictor.classes_)
        proba = np.where(failed[:, None], 0.0, decisions.probabilities)
        predicted = np.argmax(proba, axis=1)
        lookup = {c: i for i, c in enumerate(classes.tolist())}
        y_idx = np.array([lookup.get(v, -1) for v in y_arr.tolist()], dtype=np.intp)
        errors = (predicted != y_idx) | failed
        scores = {"conformal": np.asarray(decisions.confidence, dtype=np.float64)}
        scores.update(_probability_scores(proba))
        for v in scores.values():
            v[failed] = np.nan
        rows = np.arange(len(y_idx))
        known = y_idx >= 0
        covered = np.zeros(len(y_idx), dtype=bool)
        covered[known] = decisions.set_mask[rows[known], y_idx[known]]
        sweep = _conformal_sweep(predictor, proba, y_idx, failed, levels)
        return ScoredData(
            task="classification",
            errors=np.asarray(errors, dtype=bool),
            scores=scores,
            set_size=np.asarray(decisions.set_mask.sum(axis=1), dtype=np.intp),
            covered=covered,
            predicted_class=np.asarray(predicted, dtype=np.intp),
            sweep=sweep,
            n_classes=len(classes),
            **common,
        )
    assert decisions.intervals is not None
    y_true = y_arr.astype(np.float64)
    y_hat = np.array([np.nan if p is None else float(p) for p in decisions.predictions])
    lo, hi = decisions.intervals[:, 0], decisions.intervals[:, 1]
    width = hi - lo
    residual = np.abs(y_true - y_hat)
    residual[failed] = np.inf
    return ScoredData(
        task="regression",
        errors=None if tolerance is None else np.asarray(residual > tolerance, dtype=bool),
        scores={"interval": -width},
        covered=np.asarray((lo <= y_true) & (y_true <= hi), dtype=bool),
        width=width,
        abs_residual=residual,
        **common,
    )


def _conformal_sweep(
    predictor: SafePredictor,
    proba: NDArray[np.float64],
    y_idx: NDArray[np.intp],
    failed: NDArray[np.bool_],
    levels: Sequence[float],
) -> list[dict[str, float]] | None:
    """Empirical coverage and mean set size of the conformal sets at several levels."""
    conformal = predictor.conformal_
    p_values_fn = getattr(conformal, "p_values", None)
    if p_values_fn is None or len(proba) == 0:
        return None
    ok = ~failed & (y_idx >= 0)
    p = np.asarray(p_values_fn(proba[ok]))
    truth = p[np.arange(len(p)), y_idx[ok]]
    out = []
    for level in sorted(set(levels)):
        alpha = 1.0 - float(level)
        out.append(
            {
                "confidence_level": float(level),
                "coverage": float(np.mean(truth > alpha)) if len(p) else math.nan,
                "mean_set_size": float(np.mean((p > alpha).sum(axis=1))) if len(p) else math.nan,
            }
        )
    return out


# --------------------------------------------------------------------------- tiers
def calibrate_policy(
    policy: TierPolicy,
    calibration: ScoredData,
) -> TierCalibration:
    """Certify the thresholds of a policy's ``max_error`` tiers on calibration data.

    Delegates to :func:`safepredict.tiers.calibrate_tiers`, the procedure the
    predictor itself uses: each risk-controlled tier is certified on the rows
    that reach it, ``delta`` is shared across the risk-controlled tiers, and a
    tier that cannot be certified accepts nothing. Rows a guard blocked never
    count.

    Parameters
    ----------
    policy : TierPolicy
        The policy to calibrate.
    calibration : ScoredData
        Labelled calibration rows.

    Returns
    -------
    TierCalibration

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> s = rng.uniform(size=3000)
    >>> data = ScoredData.from_arrays(rng.uniform(size=3000) < 0.2 * (1 - s),
    ...                               {"conformal": s}, set_size=np.ones(3000, int))
    >>> policy = TierPolicy.from_dict({"tiers": [
    ...     {"name": "auto", "action": "accept", "max_error": 0.05},
    ...     {"name": "human", "action": "abstain"}]})
    >>> cal = calibrate_policy(policy, data)
    >>> cal.is_certified("auto"), bool(0.3 < cal.thresholds["auto"] < 1)
    (True, True)
    """
    risk_tiers = policy.risk_controlled
    if not risk_tiers:
        return TierCalibration()
    data = calibration._certification_view(risk_tiers[0].score)
    errors = {t.name: data.tier_errors(t) for t in risk_tiers}
    n_classes = None
    if data.predicted_class is not None and len(data.predicted_class):
        n_classes = data.n_classes or int(data.predicted_class.max()) + 1
    return calibrate_tiers(policy, data.tier_inputs(), errors, n_classes=n_classes)


@dataclass(frozen=True)
class TierRow:
    """Realized outcome of one tier of one policy on test data.

    Attributes
    ----------
    policy, tier, action : str
        Which policy and tier, and the tier's action.
    n : int
        Rows in the tier.
    fraction : float
        ``n`` over all rows.
    n_errors : int
        Rows in the tier whose model answer is wrong.
    error_rate, error_upper : float
        ``n_errors / n`` and the upper end of its confidence interval.
    max_error : float or None
        The tier's ``max_error`` target, when risk-controlled.
    certified : bool or None
        Whether the risk-controlled tier could be certified.
    cost_per_1000 : float
        This tier's share of the policy's cost per 1,000 cases.
    """

    policy: str
    tier: str
    action: str
    n: int
    fraction: float
    n_errors: int
    error_rate: float
    error_upper: float
    max_error: float | None = None
    certified: bool | None = None
    cost_per_1000: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {k: to_builtin(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class PolicyResult:
    """One policy's realized tier mix, accepted error and cost on test data.

    Attributes
    ----------
    name : str
        Label of the policy.
    tiers : tuple of TierRow
        One row per tier (the guard tier included when rows hit it).
    n : int
        Rows evaluated.
    coverage : float
        Fraction of rows accepted automatically.
    review_fraction, abstain_fraction : float
        Fraction of rows reviewed / abstained.
    accepted_error, accepted_error_upper : float
        Error rate among accepted rows and the upper end of its interval.
    cost_per_1000 : float
        Expected cost per 1,000 cases (``nan`` without a cost model).
    policy_hash : str or None
        Hash of the policy (``None`` for logged decisions).
    """

    name: str
    tiers: tuple[TierRow, ...]
    n: int
    coverage: float
    review_fraction: float
    abstain_fraction: float
    accepted_error: float
    accepted_error_upper: float
    cost_per_1000: float
    policy_hash: str | None = None

    def summary(self) -> dict[str, Any]:
        """The policy-level numbers as a flat JSON-safe dict."""
        return {
            "policy": self.name,
            "n": self.n,
            "coverage": to_builtin(self.coverage),
            "review_fraction": to_builtin(self.review_fraction),
            "abstain_fraction": to_builtin(self.abstain_fraction),
            "accepted_error": to_builtin(self.accepted_error),
            "accepted_error_upper": to_builtin(self.accepted_error_upper),
            "cost_per_1000": to_builtin(self.cost_per_1000),
            "policy_hash": self.policy_hash,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with the per-tier rows."""
        out = self.summary()
        out["tiers"] = [t.to_dict() for t in self.tiers]
        return out


def _policy_result(
    name: str,
    codes: NDArray[np.intp],
    labels: Sequence[tuple[str, str, Tier | None]],
    errors: NDArray[np.bool_],
    cost: CostModel | None,
    *,
    calibration: TierCalibration | None = None,
    policy_hash: str | None = None,
    confidence: float = 0.95,
) -> PolicyResult:
    """Aggregate per-row tier codes into a :class:`PolicyResult` (bincount, O(n))."""
    n = len(codes)
    m = len(labels)
    counts = np.bincount(codes, minlength=m)[:m]
    errs = np.bincount(codes, weights=errors.astype(np.float64), minlength=m)[:m].astype(np.int64)
    _, upper = binomial_interval(errs, counts, confidence=confidence)
    rows = []
    fractions = {"accept": 0, "review": 0, "abstain": 0}
    accepted_n = accepted_err = 0
    total_cost = 0.0
    for j, (tier_name, action, tier) in enumerate(labels):
        k, e = int(counts[j]), int(errs[j])
        if k == 0 and tier is None:
            continue
        fractions[action] += k
        tier_cost = math.nan
        if cost is not None:
            tier_cost = k * cost.per_row(action, tier_name)
            if action == "accept":
                tier_cost += e * cost.cost_error
            total_cost += tier_cost
            tier_cost = tier_cost / max(n, 1) * 1000
        if action == "accept":
            accepted_n += k
            accepted_err += e
        certified = None
        if tier is not None and tier.max_error is not None:
            certified = calibration is not None and calibration.is_certified(tier.name)
        rows.append(
            TierRow(
                policy=name,
                tier=tier_name,
                action=action,
                n=k,
                fraction=k / n if n else math.nan,
                n_errors=e,
                error_rate=e / k if k else math.nan,
                error_upper=float(upper[j]),
                max_error=None if tier is None else tier.max_error,
                certified=certified,
                cost_per_1000=tier_cost,
            )
        )
    _, acc_upper = binomial_interval([accepted_err], [accepted_n], confidence=confidence)
    return PolicyResult(
        name=name,
        tiers=tuple(rows),
        n=n,
        coverage=accepted_n / n if n else math.nan,
        review_fraction=fractions["review"] / n if n else math.nan,
        abstain_fraction=fractions["abstain"] / n if n else math.nan,
        accepted_error=accepted_err / accepted_n if accepted_n else math.nan,
        accepted_error_upper=float(acc_upper[0]),
        cost_per_1000=total_cost / max(n, 1) * 1000 if cost is not None else math.nan,
        policy_hash=policy_hash,
    )


def evaluate_policy(
    policy: TierPolicy,
    test: ScoredData,
    *,
    calibration: TierCalibration | ScoredData | None = None,
    cost: CostModel | None = None,
    name: str | None = None,
) -> PolicyResult:
    """Realized acceptance, error and cost of each tier of ``policy`` on ``test``.

    Rows are assigned with :func:`safepredict.tiers.assign_tiers`, exactly as the
    predictor does; rows a guard blocked stay in the guard tier.

    Parameters
    ----------
    policy : TierPolicy
        The policy to evaluate.
    test : ScoredData
        Labelled test rows.
    calibration : TierCalibration or ScoredData, optional
        Certified thresholds of the ``max_error`` tiers, or calibration data to
        certify them on (:func:`calibrate_policy`). Without it, ``max_error``
        tiers accept nothing.
    cost : CostModel, optional
        Prices the tiers.
    name : str, optional
        Label; default: the policy hash.

    Returns
    -------
    PolicyResult

    Examples
    --------
    >>> data = ScoredData.from_arrays([0, 0, 1, 1], {"conformal": [0.99, 0.97, 0.9, 0.5]},
    ...                               set_size=[1, 1, 1, 2])
    >>> policy = TierPolicy.from_dict({"tiers": [
    ...     {"name": "auto", "action": "accept", "min_confidence": 0.95},
    ...     {"name": "human", "action": "review"}]})
    >>> r = evaluate_policy(policy, data, cost=CostModel(cost_error=50, cost_review=2))
    >>> r.coverage, r.accepted_error, r.cost_per_1000
    (0.5, 0.0, 1000.0)
    """
    if isinstance(calibration, ScoredData):
        calibration = calibrate_policy(policy, calibration)
    if test.errors is None:
        raise ConfigError(
            "these regression data have no errors; pass tolerance= to score_predictor so an "
            "error is |y - y_hat| > tolerance."
        )
    codes, _ = assign_tiers(policy, test.tier_inputs(), calibration)
    labels: list[tuple[str, str, Tier | None]] = [(t.name, t.action, t) for t in policy.tiers]
    if test.blocked_action is not None:
        n_tiers = len(policy.tiers)
        labels += [(test.guard_tier, "review", None), (test.guard_tier, "abstain", None)]
        codes = np.where(test.blocked_action == "review", n_tiers, codes)
        codes = np.where(test.blocked_action == "abstain", n_tiers + 1, codes)
    return _policy_result(
        name or policy.policy_hash,
        np.asarray(codes, dtype=np.intp),
        labels,
        test.errors,
        cost,
        calibration=calibration,
        policy_hash=policy.policy_hash,
    )


def _logged_result(test: ScoredData, cost: CostModel | None) -> PolicyResult | None:
    """The tiers and actions the rows actually got, as a :class:`PolicyResult`."""
    if test.logged_tier is None or test.logged_action is None or test.errors is None:
        return None
    pairs = np.array(
        [f"{t}\x00{a}" for t, a in zip(test.logged_tier, test.logged_action, strict=True)]
    )
    uniq, codes = np.unique(pairs, return_inverse=True)
    labels: list[tuple[str, str, Tier | None]] = []
    for u in uniq.tolist():
        tier, action = u.split("\x00")
        labels.append((tier, action, None))
    return _policy_result("as logged", codes.astype(np.intp), labels, test.errors, cost)


@dataclass(frozen=True)
class PolicyComparison:
    """Several policies evaluated on the same data, side by side.

    Examples
    --------
    >>> data = ScoredData.from_arrays([0, 1, 0, 1], {"conformal": [0.99, 0.6, 0.9, 0.3]},
    ...                               set_size=[1, 1, 1, 2])
    >>> table = compare_policies(threshold_policies([0.5, 0.95]), data)
    >>> [round(r.coverage, 2) for r in table.results]
    [0.75, 0.25]
    """

    results: tuple[PolicyResult, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: one entry per policy, with tiers."""
        return {"policies": [r.to_dict() for r in self.results]}

    def to_frame(self) -> pd.DataFrame:
        """One row per policy (coverage, review/abstain share, accepted error, cost)."""
        import pandas as pd

        return pd.DataFrame([r.summary() for r in self.results])

    def tiers_frame(self) -> pd.DataFrame:
        """One row per (policy, tier)."""
        import pandas as pd

        return pd.DataFrame([t.to_dict() for r in self.results for t in r.tiers])


def threshold_policies(
    thresholds: Iterable[float],
    *,
    kind: str = "min_confidence",
    reject_action: str = "review",
    delta: float = 0.05,
    score: str = "conformal",
) -> dict[str, TierPolicy]:
    """A grid of two-tier policies (accept above a threshold, else ``reject_action``).

    Parameters
    ----------
    thresholds : iterable of float
        ``min_confidence`` values, or ``max_error`` targets with ``kind="max_error"``.
    kind : {"min_confidence", "max_error"}, default="min_confidence"
        Which condition the accept tier uses.
    reject_action : {"review", "abstain"}, default="review"
        Action of the fallback tier.
    delta : float, default=0.05
        Risk level of ``max_error`` tiers.
    score : {"conformal", "top_prob", "margin"}, default="conformal"
        Score thresholded by ``max_error`` tiers.

    Returns
    -------
    dict of str to TierPolicy
        Keyed by a readable label such as ``"min_confidence=0.9"``.

    Examples
    --------
    >>> list(threshold_policies([0.9, 0.99]))
    ['min_confidence=0.9', 'min_confidence=0.99']
    """
    check_one_of(kind, "kind", ("min_confidence", "max_error"))
    check_one_of(reject_action, "reject_action", ("review", "abstain"))
    out = {}
    for t in thresholds:
        if kind == "min_confidence":
            accept = {"name": "auto", "action": "accept", "min_confidence": float(t)}
        else:
            accept = {"name": "auto", "action": "accept", "max_error": float(t), "score": score}
        out[f"{kind}={float(t):g}"] = TierPolicy.from_dict(
            {"delta": delta, "tiers": [accept, {"name": "human", "action": reject_action}]}
        )
    return out


def compare_policies(
    policies: Mapping[str, TierPolicy] | Sequence[TierPolicy],
    test: ScoredData,
    *,
    calibration: ScoredData | None = None,
    cost: CostModel | None = None,
) -> PolicyComparison:
    """Evaluate several policies on the same test data (one table).

    Parameters
    ----------
    policies : dict of str to TierPolicy, or sequence of TierPolicy
        Named policies (a sequence is named by position).
    test : ScoredData
        Labelled test rows.
    calibration : ScoredData, optional
        Labelled calibration rows to certify ``max_error`` tiers on.
    cost : CostModel, optional
        Prices the policies.

    Returns
    -------
    PolicyComparison
    """
    named = (
        dict(policies)
        if isinstance(policies, Mapping)
        else {f"policy {i + 1}": TierPolicy.coerce(p) for i, p in enumerate(policies)}
    )
    results = []
    for name, policy in named.items():
        policy = TierPolicy.coerce(policy)
        tier_cal = calibrate_policy(policy, calibration) if calibration is not None else None
        results.append(evaluate_policy(policy, test, calibration=tier_cal, cost=cost, name=name))
    return PolicyComparison(tuple(results))


# --------------------------------------------------------------------------- reliability
def reliability(confidence: ArrayLike, correct: ArrayLike, *, bins: int = 10) -> dict[str, Any]:
    """Reliability diagram data and expected calibration error (ECE).

    Parameters
    ----------
    confidence : array-like of float in [0, 1]
        E.g. the top-class probability.
    correct : array-like of bool
        Whether the answer was right.
    bins : int, default=10
        Equal-width bins over [0, 1].

    Returns
    -------
    dict
        ``bin_lower``, ``bin_upper``, ``mean_confidence``, ``accuracy``,
        ``count`` (lists, one entry per bin; ``None`` for empty bins) and ``ece``.

    Examples
    --------
    >>> r = reliability([0.9, 0.9, 0.3, 0.3], [1, 1, 1, 0], bins=2)
    >>> r["accuracy"], round(r["ece"], 3)
    ([0.5, 1.0], 0.15)
    """
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct).astype(bool)
    keep = np.isfinite(c)
    c, ok = c[keep], ok[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=c, minlength=bins)
    acc_sum = np.bincount(which, weights=ok.astype(np.float64), minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = conf_sum / count
        acc = acc_sum / count
    n = max(len(c), 1)
    ece = float(np.nansum(count / n * np.abs(acc - mean_conf)))
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "mean_confidence": to_builtin(mean_conf),
        "accuracy": to_builtin(acc),
        "count": count.tolist(),
        "ece": ece,
    }


# --------------------------------------------------------------------------- evaluate
@dataclass
class Evaluation:
    """Everything the offline benchmark found; :meth:`to_dict` is ``summary.json``.

    Attributes
    ----------
    task : str
        ``"classification"`` or ``"regression"``.
    n_test, n_calibration : int
        Rows evaluated and rows used to choose / certify thresholds.
    curves : dict of str to RiskCoverageCurve
        One risk-coverage curve per score, on the test rows.
    at_coverage : list of OperatingPoint
        Selective risk at the requested coverages, per score.
    operating_points : list of dict
        Per score and error target: the naive empirical threshold and the
        certified (Learn-then-Test) one, both chosen on the calibration rows and
        realized on the test rows.
    cost : CostModel or None
        The cost model used.
    cost_curves : dict of str to CostCurve
        Cost per 1,000 cases per threshold, per score (with a cost model).
    conformal : dict
        Empirical coverage, mean set size / interval width, set-size counts and
        the coverage / set-size sweep.
    reliability : dict or None
        Reliability diagram of the top-class probability.
    policies : PolicyComparison
        The policies side by side.
    in_sample : bool
        True when thresholds were chosen on the test rows themselves (no
        calibration rows given): the operating points are then optimistic.
    """

    task: str
    n_test: int
    n_calibration: int
    curves: dict[str, RiskCoverageCurve]
    at_coverage: list[OperatingPoint]
    operating_points: list[dict[str, Any]]
    cost: CostModel | None
    cost_curves: dict[str, CostCurve]
    conformal: dict[str, Any]
    reliability: dict[str, Any] | None
    policies: PolicyComparison
    in_sample: bool
    delta: float = 0.05
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        """Error rate of the model over all test rows."""
        curve = next(iter(self.curves.values()), None)
        return curve.error_rate if curve is not None else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (curves down-sampled to at most 200 points each)."""
        out: dict[str, Any] = to_builtin(
            {
                "task": self.task,
                "n_test": self.n_test,
                "n_calibration": self.n_calibration,
                "in_sample": self.in_sample,
                "delta": self.delta,
                "error_rate": self.error_rate,
                "scores": {
                    k: {"aurc": c.aurc, "eaurc": c.eaurc, "optimal_aurc": c.optimal_aurc}
                    for k, c in self.curves.items()
                },
                "at_coverage": [p.to_dict() for p in self.at_coverage],
                "operating_points": self.operating_points,
                "cost_model": None if self.cost is None else self.cost.to_dict(),
                "cost_optimal": {k: c.optimal() for k, c in self.cost_curves.items()},
                "conformal": self.conformal,
                "reliability": self.reliability,
                "policies": self.policies.to_dict()["policies"],
                "curves": {k: c.to_dict() for k, c in self.curves.items()},
                "meta": self.meta,
            }
        )
        return out

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
        return p


def _conformal_summary(data: ScoredData) -> dict[str, Any]:
    out: dict[str, Any] = {"confidence_level": data.confidence_level}
    if data.covered is not None:
        out["coverage"] = float(np.mean(data.covered)) if len(data) else math.nan
    if data.set_size is not None:
        sizes = np.asarray(data.set_size)
        out["mean_set_size"] = float(np.mean(sizes)) if len(sizes) else math.nan
        values, counts = np.unique(sizes, return_counts=True)
        out["set_size_counts"] = {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
        if data.covered is not None:
            out["coverage_by_set_size"] = {
                str(int(v)): float(np.mean(data.covered[sizes == v])) for v in values
            }
    if data.width is not None:
        w = data.width[np.isfinite(data.width)]
        out["mean_interval_width"] = float(np.mean(w)) if len(w) else math.nan
        out["median_interval_width"] = float(np.median(w)) if len(w) else math.nan
    out["sweep"] = data.sweep
    return out


def evaluate(
    test: ScoredData,
    *,
    calibration: ScoredData | None = None,
    policies: Mapping[str, TierPolicy] | Sequence[TierPolicy] | None = None,
    cost: CostModel | None = None,
    coverages: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95, 1.0),
    error_targets: Sequence[float] = (0.01, 0.02, 0.05, 0.1),
    delta: float = 0.05,
    band: str = "wilson",
    confidence: float = 0.95,
    progress: Any = None,
) -> Evaluation:
    """Run the whole offline benchmark on scored data.

    Parameters
    ----------
    test : ScoredData
        Labelled rows the results are reported on.
    calibration : ScoredData, optional
        Labelled rows thresholds are chosen and certified on (then realized on
        ``test``). Without it, thresholds are chosen on ``test`` itself and the
        result is marked ``in_sample``.
    policies : dict of str to TierPolicy, or sequence, optional
        Policies to compare.
    cost : CostModel, optional
        Prices errors and human work.
    coverages : sequence of float
        Coverages to report the selective risk at.
    error_targets : sequence of float
        Error targets to report the naive and certified operating points for.
    delta : float, default=0.05
        Risk level of the certified operating points.
    band : {"wilson", "clopper-pearson"}, default="wilson"
        Pointwise band of the risk-coverage curves.
    confidence : float, default=0.95
        Coverage of the pointwise bands.
    progress : callable, optional
        Called with a short stage name as each stage starts.

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=4000)
    >>> data = ScoredData.from_arrays(rng.uniform(size=4000) < 0.3 * (1 - s), {"top_prob": s})
    >>> ev = evaluate(data.take(np.arange(2000, 4000)), calibration=data.take(np.arange(2000)),
    ...               error_targets=[0.05])
    >>> op = ev.operating_points[0]
    >>> op["certified"]["coverage"] <= op["empirical"]["coverage"]
    True
    """
    check_fraction(delta, "delta")

    def step(name: str) -> None:
        if progress is not None:
            progress(name)

    if test.errors is None:
        raise ConfigError(
            "these regression data have no errors; pass tolerance= to score_predictor (an "
            "error is |y - y_hat| > tolerance) to get risk-coverage curves."
        )
    in_sample = calibration is None
    cal = test if calibration is None else calibration
    assert cal.errors is not None
    step("curves")
    curves = {
        name: risk_coverage(s, test.errors, name=name, band=band, confidence=confidence)
        for name, s in test.scores.items()
    }
    at_cov = [p for c in curves.values() for p in c.at_coverage(coverages)]
    step("operating points")
    points = []
    for name, curve in curves.items():
        # Sort the calibration rows once per score; the curve and every certification
        # below then run on sorted input (no further O(n log n) sort).
        cal_s, cal_e = cal.sorted_by(name)
        cal_curve = curve if in_sample else risk_coverage(cal_s, cal_e, name=name, band=band)
        for target, naive in zip(error_targets, cal_curve.at_risk(error_targets), strict=True):
            t_cert = certified_threshold(cal_s, cal_e, max_error=target, delta=delta)
            points.append(
                {
                    "score": name,
                    "max_error": float(target),
                    "delta": delta,
                    "empirical": apply_threshold(
                        test.scores[name], test.errors, naive.threshold, name=name, target=target
                    ).to_dict(),
                    "certified": apply_threshold(
                        test.scores[name],
                        test.errors,
                        t_cert,
                        name=name,
                        method="certified",
                        target=target,
                    ).to_dict(),
                }
            )
    step("costs")
    cost_curves = {} if cost is None else {k: cost_curve(c, cost) for k, c in curves.items()}
    rel = None
    if "top_prob" in test.scores:
        rel = reliability(test.scores["top_prob"], ~test.errors)
    step("policies")
    comparison = compare_policies(
        policies or {}, test, calibration=None if in_sample else calibration, cost=cost
    )
    if in_sample and policies:
        comparison = compare_policies(policies, test, calibration=test, cost=cost)
    return Evaluation(
        task=test.task,
        n_test=len(test),
        n_calibration=0 if in_sample else len(cal),
        curves=curves,
        at_coverage=at_cov,
        operating_points=points,
        cost=cost,
        cost_curves=cost_curves,
        conformal=_conformal_summary(test),
        reliability=rel,
        policies=comparison,
        in_sample=in_sample,
        delta=delta,
    )


def benchmark(
    predictor: SafePredictor,
    X_test: Any,
    y_test: Any,
    *,
    X_cal: Any = None,
    y_cal: Any = None,
    policies: Mapping[str, TierPolicy] | Sequence[TierPolicy] | None = None,
    cost: CostModel | None = None,
    tolerance: float | None = None,
    **kwargs: Any,
) -> Evaluation:
    """The offline benchmark of a calibrated predictor on labelled test data.

    The predictor's own policy is evaluated as ``"current"`` next to
    ``policies``. Pass the calibration rows (``X_cal``, ``y_cal``) so thresholds
    and certified operating points are chosen there and realized on the test
    rows; otherwise they are chosen on the test rows (optimistic).

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor.
    X_test, y_test : array-like
        Labelled rows to report on.
    X_cal, y_cal : array-like, optional
        The calibration rows.
    policies : dict of str to TierPolicy, or sequence, optional
        Other policies to compare ("what if").
    cost : CostModel, optional
        Prices errors and human work.
    tolerance : float, optional
        Regression: an error is ``|y - y_hat| > tolerance``.
    **kwargs
        Passed to :func:`evaluate`.

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from safepredict import SafePredictor
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    >>> ev = benchmark(sp, X[2::3], y[2::3], X_cal=X[1::3], y_cal=y[1::3])
    >>> [r.name for r in ev.policies.results]
    ['current']
    """
    test = score_predictor(predictor, X_test, y_test, tolerance=tolerance)
    cal = None
    if X_cal is not None:
        cal = score_predictor(predictor, X_cal, y_cal, tolerance=tolerance)
    named: dict[str, TierPolicy] = {"current": predictor.policy_}
    if isinstance(policies, Mapping):
        named.update({k: TierPolicy.coerce(v) for k, v in policies.items()})
    elif policies:
        named.update({f"policy {i + 1}": TierPolicy.coerce(p) for i, p in enumerate(policies)})
    ev = evaluate(test, calibration=cal, policies=named, cost=cost, **kwargs)
    ev.meta.update(
        {
            "model_name": predictor.model_name,
            "model_version": predictor.model_version,
            "source": "predictor",
        }
    )
    return ev


# --------------------------------------------------------------------------- replay
def _canon(value: Any) -> str:
    """A label's canonical text, so ``1``, ``1.0`` and ``"1"`` compare equal."""
    if value is None:
        return "\x00none"
    if isinstance(value, bool):
        return str(value).lower()
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value).strip()
    return repr(f) if math.isfinite(f) else str(value)


def _read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    records: list[tuple[int, dict[str, Any]]] = []
    bad: list[str] = []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(f"line {lineno}: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                bad.append(f"line {lineno}: not a JSON object")
                continue
            records.append((lineno, obj))
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise InputSchemaError(
            f"{path}: {len(bad)} line(s) are not JSON objects ({shown}). Each line must be one "
            "JSON object.",
            problems=bad,
        )
    return records


def _read_outcomes(outcomes: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(outcomes, Mapping):
        return {str(k): v for k, v in outcomes.items()}
    path = Path(outcomes)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        rows = [obj for _, obj in _read_jsonl(path)]
    else:
        import csv

        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    out: dict[str, Any] = {}
    for i, row in enumerate(rows, start=1):
        if "decision_id" not in row or "y_true" not in row:
            raise InputSchemaError(
                f"{path}: record {i} lacks 'decision_id' or 'y_true' (has {sorted(row)}); each "
                "outcome needs both.",
                missing=[k for k in ("decision_id", "y_true") if k not in row],
            )
        out[str(row["decision_id"])] = row["y_true"]
    return out


def load_decision_log(
    log: str | Path | Iterable[Mapping[str, Any]],
    outcomes: str | Path | Mapping[str, Any],
    *,
    tolerance: float | None = None,
) -> ScoredData:
    """Join ``safepredict.decision`` events with their outcomes.

    Parameters
    ----------
    log : path or iterable of dict
        A JSONL file with one decision event (schema v1) per line, or the
        events themselves. Other events (e.g. calibration) are skipped.
    outcomes : path or dict
        CSV or JSONL with ``decision_id`` and ``y_true`` columns, or a dict
        ``decision_id -> y_true``. Decisions without an outcome are left out.
    tolerance : float, optional
        Regression: an error is ``|y - y_hat| > tolerance``.

    Returns
    -------
    ScoredData
        With the logged tiers and actions, and the scores the log carries
        (conformal confidence, and from ``probabilities``: top-class
        probability, margin, entropy).

    Raises
    ------
    InputSchemaError
        If a line is not JSON, an event lacks a required field, or no decision
        has an outcome.
    """
    records = (
        _read_jsonl(log)
        if isinstance(log, str | Path)
        else [(i, dict(e)) for i, e in enumerate(log, start=1)]
    )
    truth = _read_outcomes(outcomes)
    events = []
    for lineno, ev in records:
        name = ev.get("event", "safepredict.decision")
        if name != "safepredict.decision":
            continue
        missing = [k for k in ("decision_id", "prediction", "tier", "action") if k not in ev]
        if missing:
            raise InputSchemaError(
                f"decision log line {lineno}: the event lacks {missing}; expected a "
                "safepredict.decision event (schema v1).",
                missing=missing,
            )
        if str(ev["decision_id"]) in truth:
            events.append(ev)
    if not events:
        raise InputSchemaError(
            f"none of the {len(records)} logged decisions has an outcome; the outcomes must be "
            "keyed by the events' decision_id.",
            problems=["no matching decision_id"],
        )
    n = len(events)
    y_true = [truth[str(ev["decision_id"])] for ev in events]
    ids = np.array([str(ev["decision_id"]) for ev in events], dtype=object)
    tiers = np.array([str(ev["tier"]) for ev in events], dtype=object)
    actions = np.array([str(ev["action"]) for ev in events], dtype=object)
    conformal = [ev.get("conformal") or {} for ev in events]
    level = next((c.get("confidence_level") for c in conformal if c.get("confidence_level")), None)
    blocked = np.array(
        [
            a if (a != "accept" and (ev.get("guard") or {}).get("status") == "flag") else ""
            for ev, a in zip(events, actions, strict=True)
        ],
        dtype=object,
    )
    model_error = np.array(["model_error" in (ev.get("reasons") or []) for ev in events])
    blocked[model_error & (blocked == "")] = "abstain"
    common: dict[str, Any] = {
        "blocked_action": blocked,
        "logged_tier": tiers,
        "logged_action": actions,
        "confidence_level": None if level is None else float(level),
        "ids": ids,
    }
    probas = [ev.get("probabilities") for ev in events]
    if any(p for p in probas):
        classes = list(next(p for p in probas if p))
        index = {c: i for i, c in enumerate(classes)}
        proba = np.full((n, len(classes)), np.nan)
        for i, p in enumerate(probas):
            for c, v in (p or {}).items():
                if c in index and v is not None:
                    proba[i, index[c]] = float(v)
        failed = ~np.isfinite(proba).all(axis=1) | model_error
        canon_classes = {_canon(c): i for i, c in enumerate(classes)}
        pred = [_canon(ev["prediction"]) for ev in events]
        canon_y = [_canon(v) for v in y_true]
        errors = np.array([p != t for p, t in zip(pred, canon_y, strict=True)]) | failed
        scores = {
            "conformal": np.array(
                [
                    np.nan if ev.get("confidence") is None else float(ev["confidence"])
                    for ev in events
                ]
            )
        }
        scores.update(_probability_scores(np.where(failed[:, None], 0.0, proba)))
        for v in scores.values():
            v[failed] = np.nan
        sets = [c.get("set") for c in conformal]
        covered = np.array(
            [
                s is not None and t in {_canon(x) for x in s}
                for s, t in zip(sets, canon_y, strict=True)
            ]
        )
        set_size = np.array(
            [c.get("set_size", len(c.get("set") or [])) if c else 0 for c in conformal],
            dtype=np.intp,
        )
        predicted_class = np.array([canon_classes.get(p, 0) for p in pred], dtype=np.intp)
        return ScoredData(
            task="classification",
            errors=np.asarray(errors, dtype=bool),
            scores=scores,
            set_size=set_size,
            covered=covered,
            predicted_class=predicted_class,
            n_classes=len(classes),
            **common,
        )
    y = np.array([float(v) for v in y_true])
    y_hat = np.array(
        [np.nan if ev["prediction"] is None else float(ev["prediction"]) for ev in events]
    )
    bounds = np.array(
        [c.get("interval") or [np.nan, np.nan] for c in conformal], dtype=np.float64
    ).reshape(n, 2)
    width = bounds[:, 1] - bounds[:, 0]
    residual = np.abs(y - y_hat)
    residual[~np.isfinite(residual)] = np.inf
    return ScoredData(
        task="regression",
        errors=None if tolerance is None else np.asarray(residual > tolerance, dtype=bool),
        scores={"interval": -width},
        covered=np.asarray((bounds[:, 0] <= y) & (y <= bounds[:, 1]), dtype=bool),
        width=width,
        abs_residual=residual,
        **common,
    )


def replay(
    log: str | Path | Iterable[Mapping[str, Any]],
    outcomes: str | Path | Mapping[str, Any],
    *,
    policies: Mapping[str, TierPolicy] | Sequence[TierPolicy] | None = None,
    cost: CostModel | None = None,
    calibration_fraction: float = 0.5,
    seed: int = 0,
    tolerance: float | None = None,
    **kwargs: Any,
) -> Evaluation:
    """What-if analysis on production traffic: the benchmark from a decision log.

    The logged decisions (joined with their outcomes) are split at random: a
    ``calibration_fraction`` share certifies the ``max_error`` tiers and chooses
    thresholds, the rest reports. The tiers and actions the rows actually got are
    listed as the policy ``"as logged"`` next to ``policies``.

    Parameters
    ----------
    log : path or iterable of dict
        Decision events (JSONL, schema v1).
    outcomes : path or dict
        ``decision_id -> y_true`` (CSV / JSONL / dict).
    policies : dict of str to TierPolicy, or sequence, optional
        The policies to try on the logged traffic.
    cost : CostModel, optional
        Prices errors and human work.
    calibration_fraction : float, default=0.5
        Share of the logged rows used for calibration; 0 uses the same rows for
        both (optimistic, marked ``in_sample``).
    seed : int, default=0
        Seed of the split.
    tolerance : float, optional
        Regression: an error is ``|y - y_hat| > tolerance``.
    **kwargs
        Passed to :func:`evaluate`.

    Returns
    -------
    Evaluation
    """
    data = load_decision_log(log, outcomes, tolerance=tolerance)
    check_fraction(calibration_fraction, "calibration_fraction", low_open=False)
    n = len(data)
    if calibration_fraction > 0:
        perm = np.random.default_rng(seed).permutation(n)
        n_cal = round(n * calibration_fraction)
        cal, test = data.take(np.sort(perm[:n_cal])), data.take(np.sort(perm[n_cal:]))
    else:
        cal, test = None, data
    ev = evaluate(test, calibration=cal, policies=policies, cost=cost, **kwargs)
    logged = _logged_result(test, cost)
    if logged is not None:
        ev.policies = PolicyComparison((logged, *ev.policies.results))
    ev.meta["source"] = "decision log"
    return ev
