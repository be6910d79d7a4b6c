"""Which compared policy to run: constraints, the cheapest that meets them, and why not others.

Pure functions over a :class:`~safepredict.evaluation.PolicyComparison`'s results
(and, for certification gaps, the calibration rows): no I/O, no plotting.

Examples
--------
>>> import numpy as np
>>> from safepredict.evaluation import ScoredData, compare_policies, threshold_policies
>>> rng = np.random.default_rng(0)
>>> s = rng.uniform(size=2000)
>>> data = ScoredData.from_arrays(rng.uniform(size=2000) < 0.3 * (1 - s), {"conformal": s},
...                               set_size=np.ones(2000, int))
>>> table = compare_policies(threshold_policies([0.5, 0.8, 0.95]), data)
>>> rec = recommend(table.results, max_error=0.05)
>>> rec.policy if rec else None
'min_confidence=0.8'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from safepredict._jsonl import to_builtin
from safepredict.config import TierPolicy
from safepredict.evaluation._data import ScoredData
from safepredict.evaluation._policies import PolicyResult, calibrate_policy
from safepredict.exceptions import ConfigError

__all__ = ["Recommendation", "certification_gaps", "fallback_action", "recommend"]


@dataclass(frozen=True)
class Recommendation:
    """The policy to run, with the figures it was chosen on.

    Attributes
    ----------
    policy : str
        Name of the chosen policy.
    coverage, review_fraction, abstain_fraction : float
        Shares of the test rows accepted, reviewed and abstained.
    accepted_error, accepted_error_upper : float
        Error among accepted test rows and the upper end of its 95% interval.
    cost_per_1000 : float
        Expected cost per 1,000 cases (``nan`` without a cost model).
    certified_tiers : tuple of str
        Its ``max_error`` tiers that were certified on the calibration rows.
    criterion : str
        Why it was chosen, in words.
    candidates : int
        How many compared policies met the constraints.
    """

    policy: str
    coverage: float
    review_fraction: float
    abstain_fraction: float
    accepted_error: float
    accepted_error_upper: float
    cost_per_1000: float
    certified_tiers: tuple[str, ...]
    criterion: str
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {k: to_builtin(v) for k, v in self.__dict__.items()}


def _check_share(value: float | None, name: str) -> None:
    if value is not None and not (0 <= value <= 1):
        raise ConfigError(
            f"{name} must be a share between 0 and 1 (e.g. 0.05); got {value!r}. "
            "Pass it as a fraction, not a percentage."
        )


def recommend(
    results: Sequence[PolicyResult],
    *,
    max_error: float | None = None,
    min_accept: float | None = None,
) -> Recommendation | None:
    """The cheapest policy that meets the constraints (``None`` if none does).

    A policy meets ``max_error`` when the **upper end** of the 95% interval of
    its error among accepted test rows is at most ``max_error`` (the realized
    rate alone would reward luck on small test sets), and ``min_accept`` when it
    accepts at least that share of the test rows. Among those, the one with the
    lowest cost per 1,000 cases wins when the results are priced; otherwise the
    one accepting the most rows (the least human work). Ties go to the lower error.

    Parameters
    ----------
    results : sequence of PolicyResult
        The compared policies (``Evaluation.policies.results``).
    max_error : float, optional
        Highest acceptable error among accepted rows.
    min_accept : float, optional
        Lowest acceptable share of rows accepted automatically.

    Returns
    -------
    Recommendation or None
    """
    _check_share(max_error, "max_error")
    _check_share(min_accept, "min_accept")
    ok = []
    for r in results:
        if max_error is not None and not (r.accepted_error_upper <= max_error):
            continue
        if min_accept is not None and not (r.coverage >= min_accept):
            continue
        ok.append(r)
    if not ok:
        return None
    priced = all(not math.isnan(r.cost_per_1000) for r in ok)

    def key(r: PolicyResult) -> tuple[float, float, float]:
        err = r.accepted_error if not math.isnan(r.accepted_error) else 1.0
        if priced:
            return (r.cost_per_1000, -r.coverage, err)
        return (-r.coverage, err, 0.0)

    best = min(ok, key=key)
    limits = []
    if max_error is not None:
        limits.append(f"error among accepted at most {max_error:g} (95% upper bound)")
    if min_accept is not None:
        limits.append(f"at least {min_accept:.0%} accepted")
    goal = "lowest cost per 1,000 cases" if priced else "most rows accepted"
    criterion = f"{goal} among the {len(ok)} of {len(results)} policies" + (
        f" with {' and '.join(limits)}" if limits else ""
    )
    return Recommendation(
        policy=best.name,
        coverage=best.coverage,
        review_fraction=best.review_fraction,
        abstain_fraction=best.abstain_fraction,
        accepted_error=best.accepted_error,
        accepted_error_upper=best.accepted_error_upper,
        cost_per_1000=best.cost_per_1000,
        certified_tiers=tuple(t.tier for t in best.tiers if t.certified),
        criterion=criterion,
        candidates=len(ok),
    )


def certification_gaps(
    policies: Mapping[str, TierPolicy], calibration: ScoredData
) -> list[dict[str, Any]]:
    """For every ``max_error`` tier that certifies nothing: why, and the rows it needs.

    Parameters
    ----------
    policies : dict of str to TierPolicy
        The compared policies.
    calibration : ScoredData
        The labelled calibration rows they are certified on.

    Returns
    -------
    list of dict
        One entry per uncertified tier: ``policy``, ``tier``, ``class``,
        ``reason`` (``"budget"``: too few rows; ``"not_certified"``: the model
        is too inaccurate), ``rows_available``, ``rows_needed`` (rows reaching
        the tier needed even with zero errors), ``calibration_rows_needed``
        (calibration rows in total at the current reach rate) and ``message``.
    """
    out = []
    for name, policy in policies.items():
        if not policy.risk_controlled:
            continue
        for warning in calibrate_policy(policy, calibration).warnings:
            out.append({"policy": name, **to_builtin(warning)})
    return out


def fallback_action(policy: TierPolicy) -> str:
    """The action of a policy's last tier (what happens to rows no other tier takes).

    Examples
    --------
    >>> fallback_action(TierPolicy.default("classification"))
    'abstain'
    """
    return str(policy.tiers[-1].action) if policy.tiers else "abstain"
