"""Tier policies on scored data: certification, per-tier outcomes, comparison."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from safepredict._binomial import binomial_interval
from safepredict._jsonl import to_builtin
from safepredict._validation import check_one_of
from safepredict.config import Tier, TierPolicy
from safepredict.evaluation._costs import CostModel
from safepredict.evaluation._data import ScoredData
from safepredict.exceptions import ConfigError
from safepredict.merge import action_ranks, merge_actions
from safepredict.tiers import (
    TierCalibration,
    assign_tiers,
    calibrate_tiers,
)

if TYPE_CHECKING:
    import pandas as pd


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
    counts, errs = tier_counts(codes, errors, len(labels))
    return policy_result_from_counts(
        name,
        counts,
        errs,
        labels,
        cost,
        calibration=calibration,
        policy_hash=policy_hash,
        confidence=confidence,
    )


def tier_counts(
    codes: NDArray[np.intp], errors: NDArray[np.bool_], n_labels: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows and errors per tier code (the sufficient statistics of a policy's result)."""
    counts = np.bincount(codes, minlength=n_labels)[:n_labels].astype(np.int64)
    weights = errors.astype(np.float64)
    errs = np.bincount(codes, weights=weights, minlength=n_labels)[:n_labels].astype(np.int64)
    return counts, errs


def policy_result_from_counts(
    name: str,
    counts: NDArray[np.int64],
    errs: NDArray[np.int64],
    labels: Sequence[tuple[str, str, Tier | None]],
    cost: CostModel | None,
    *,
    calibration: TierCalibration | None = None,
    policy_hash: str | None = None,
    confidence: float = 0.95,
) -> PolicyResult:
    """A :class:`PolicyResult` from rows and errors per tier label (summable across shards)."""
    n = int(np.sum(counts))
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


def policy_codes(
    policy: TierPolicy, test: ScoredData, calibration: TierCalibration | None
) -> tuple[NDArray[np.intp], list[tuple[str, str, Tier | None]]]:
    """Tier label index of each row (``assign_tiers``; guard-blocked rows kept apart).

    Blocked rows follow the predictor's merge rule (:func:`safepredict.merge.merge_actions`):
    they leave the tiers for the guard tier with the stronger of the block's action
    and the action of the tier they would reach under ``policy``; they are counted
    in two guard-tier labels, by action.
    """
    codes, _ = assign_tiers(policy, test.tier_inputs(), calibration)
    labels: list[tuple[str, str, Tier | None]] = [(t.name, t.action, t) for t in policy.tiers]
    if test.blocked_action is not None:
        n_tiers = len(policy.tiers)
        labels += [(test.guard_tier, "review", None), (test.guard_tier, "abstain", None)]
        tier_actions = [t.action for t in policy.tiers]
        block = action_ranks(test.blocked_action)
        codes, actions = merge_actions(np.asarray(codes, dtype=np.intp), tier_actions, block)
        codes = np.where((codes == n_tiers) & (actions == "abstain"), n_tiers + 1, codes)
    return np.asarray(codes, dtype=np.intp), labels


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
    codes, labels = policy_codes(policy, test, calibration)
    return _policy_result(
        name or policy.policy_hash,
        codes,
        labels,
        test.errors,
        cost,
        calibration=calibration,
        policy_hash=policy.policy_hash,
    )


def logged_result(test: ScoredData, cost: CostModel | None) -> PolicyResult | None:
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
