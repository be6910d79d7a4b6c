"""Realized error per tier from the outcomes joined to the decisions (layer 4).

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

from safepredict._stats import clopper_pearson
from safepredict.monitoring.aggregate import Outcome, policy_tiers

__all__ = ["outcome_report"]


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
