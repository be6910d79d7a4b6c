"""Realized error per tier from the outcomes joined to the decisions (layer 4).

Two views of the same outcomes: :func:`outcome_report`, a Clopper-Pearson
interval per tier over every joined outcome (valid for one look), and
:func:`tier_health_report`, the anytime-valid, audit-weighted tier health of
:mod:`safepredict.monitoring.tier_health` over the audited ones in arrival order
(valid however often the monitor runs).

Examples
--------
>>> from safepredict.monitoring.aggregate import Outcome
>>> report = outcome_report({"auto": Outcome(n=100, errors=3, scored=100)}, {"auto": "accept"},
...                         {}, 100, 0.05, [])
>>> row = report["tiers"][0]
>>> row["error_rate"], row["ci_low"] < 0.03 < row["ci_high"]
(0.03, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safepredict._binomial import clopper_pearson
from safepredict.config import TierPolicy
from safepredict.exceptions import ConfigError
from safepredict.monitoring.aggregate import Outcome, policy_tiers
from safepredict.monitoring.tier_health import effective_audit_rates, tier_health

__all__ = ["outcome_report", "tier_health_report"]


def outcome_report(
    per_tier: dict[str, Outcome],
    tier_action: Mapping[str, str],
    calibrations: Mapping[str, Mapping[str, Any]],
    n_labels: int,
    ci_alpha: float,
    alerts: list[dict[str, Any]],
) -> dict[str, Any]:
    """Per tier: outcomes joined, errors, Clopper-Pearson interval; alerts above ``max_error``."""
    latest = list(calibrations.values())[-1] if calibrations else None
    promises = policy_tiers(latest)
    rows = []
    for tier, o in sorted(per_tier.items(), key=lambda kv: str(kv[0])):
        max_error = promises.get(tier, {}).get("max_error")
        row: dict[str, Any] = {
            "tier": tier,
            "action": tier_action.get(tier),
            "n": o.n,
            "scored": o.scored,
            "errors": o.errors,
            "error_rate": o.errors / o.scored if o.scored else None,
            "ci_low": None,
            "ci_high": None,
            "max_error": max_error,
            "flagged": False,
            "mae": o.abs_err_sum / o.n if o.abs_err_sum and o.n else None,
        }
        if o.scored:
            row["ci_low"], row["ci_high"] = clopper_pearson(
                o.errors, o.scored, 1.0 - ci_alpha, two_sided=True
            )
            if max_error is not None and row["ci_low"] > float(max_error):
                row["flagged"] = True
                alerts.append(
                    {
                        "kind": "tier_error",
                        "tier": tier,
                        "detail": (
                            f"tier {tier!r}: realized error {o.errors}/{o.scored} "
                            f"({row['error_rate']:.3f}), {100 * (1 - ci_alpha):.0f}% CI "
                            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] lies above "
                            f"max_error={max_error}"
                        ),
                    }
                )
        rows.append(row)
    return {
        "n_outcomes": n_labels,
        "n_joined": sum(o.n for o in per_tier.values()),
        "ci_level": 1 - ci_alpha,
        "tiers": rows,
    }


def tier_health_report(
    rows: list[tuple[int, str, int, float | None]],
    calibrations: Mapping[str, Mapping[str, Any]],
    alerts: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Anytime-valid health of each accepting tier of the latest calibration's policy.

    ``rows`` are ``(arrival rank, tier, error, audit probability)`` of the joined
    accepted rows that are audit samples (probability ``None``: the tier's
    ``audit_rate``). Each tier in alarm adds a ``tier_alarm`` alert. ``None``
    without a calibration event (no policy to check against).

    Examples
    --------
    >>> cal = {"c": {"policy": {"delta": 0.1, "tiers": [
    ...     {"name": "auto", "action": "accept", "max_error": 0.05, "audit_rate": 0.1},
    ...     {"name": "h", "action": "review"}]}}}
    >>> rows = [(i, "auto", int(i % 4 == 0), None) for i in range(400)]
    >>> alerts = []
    >>> h = tier_health_report(rows, cal, alerts)["tiers"][0]
    >>> h["n_outcomes"], h["alarm"], alerts[0]["kind"]
    (400, True, 'tier_alarm')
    """
    latest = list(calibrations.values())[-1] if calibrations else None
    if not latest or not latest.get("policy"):
        return None
    try:
        policy = TierPolicy.from_dict(latest["policy"])
    except (ConfigError, TypeError, ValueError, KeyError):
        return None
    rows = sorted(rows, key=lambda r: r[0])
    rates = effective_audit_rates(policy)
    # the weights' bound: the smallest probability any row was audited with
    probs = [p for _, _, _, p in rows if p is not None] + [r for r in rates.values() if r > 0]
    health = tier_health(
        [
            {"tier": t, "action": "accept", "error": e, "audit_probability": p}
            for _, t, e, p in rows
        ],
        policy,
        min_audit_probability=min(probs) if probs else None,
    )
    out = []
    for name, h in health.items():
        d = h.to_dict()
        out.append(d)
        if h.alarm:
            alerts.append(
                {
                    "kind": "tier_alarm",
                    "tier": name,
                    "detail": (
                        f"tier {name!r} breaks its promise: weighted error "
                        f"{h.estimate:.3f} over {h.n_outcomes} audited outcomes, anytime-valid "
                        f"bounds [{h.lower:.3f}, {h.upper:.3f}] above max_error={h.max_error}"
                    ),
                }
            )
    return {"delta": policy.delta, "n_audited": len(rows), "tiers": out}
