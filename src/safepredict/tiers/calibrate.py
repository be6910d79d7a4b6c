"""Risk-controlled tier calibration: certify every ``max_error`` tier of a policy.

Tiers are walked in order on the calibration rows that reach them; ``delta`` is
split across tiers, predicted classes (``per_class``) and group values
(``group_by``), and every tier (class, group) that cannot be certified is
reported with the calibration rows it would need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._binomial import clopper_pearson, rows_needed
from safepredict._jsonl import to_builtin
from safepredict.config import Tier, TierPolicy
from safepredict.exceptions import ConfigError
from safepredict.tiers.certify import CertifiedThreshold, accept_at, certify_threshold, sort_keys
from safepredict.tiers.conditions import base_mask, group_values, tier_keys, tier_mask
from safepredict.tiers.planner import plan_calibration
from safepredict.tiers.state import TierCalibration, TierInputs, finite_or_none

__all__ = ["calibrate_tiers"]


def _rate_interval(k: int, n: int) -> list[float]:
    lo, hi = clopper_pearson(k, n, 0.95, two_sided=True)
    return [lo, hi]


def calibrate_tiers(
    policy: TierPolicy,
    inputs: TierInputs,
    errors: NDArray[np.bool_] | Mapping[str, NDArray[np.bool_]],
    *,
    n_classes: int | None = None,
    class_labels: Any = None,
) -> TierCalibration:
    """Certify a threshold for every ``max_error`` tier of ``policy``.

    Tiers are walked in order, exactly as :func:`assign_tiers` will route rows:
    a tier is calibrated only on the calibration rows that reach it (rows that
    no earlier tier took), so its guarantee is about the rows it actually
    accepts. ``delta`` is split equally (Bonferroni) across the ``m``
    risk-controlled tiers, and within a ``per_class`` tier equally across the
    ``n_classes`` predicted classes, within a ``group_by`` tier across the
    ``G`` group values among the rows reaching it: with probability at least
    ``1 - delta`` every certified tier (class, group) keeps its ``max_error``
    at once. A group with fewer rows than :func:`rows_needed` at its share
    accepts nothing (``group_too_small``).

    Each tier runs the policy's ``certification_test`` (recorded in its report
    as ``test``); the randomized test draws its uniforms from a hash of the rows
    it certifies on (:func:`certify_threshold`), so calibrating the same rows
    again gives the same thresholds.

    Parameters
    ----------
    policy : TierPolicy
        The tiers.
    inputs : TierInputs
        Per-row quantities of the calibration rows (as at decide time).
    errors : ndarray of shape (n,) or dict of str to ndarray
        Whether the model is wrong on each calibration row; a dict by tier name
        when tiers define errors differently (regression ``tolerance``).
    n_classes : int, optional
        Number of classes (classification, for ``per_class`` tiers).
    class_labels : sequence, optional
        Class labels used in the report of ``per_class`` tiers.

    Returns
    -------
    TierCalibration

    Examples
    --------
    >>> from safepredict.config import Tier, TierPolicy
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(size=3000)
    >>> wrong = rng.uniform(size=3000) < 0.3 * (1 - conf)
    >>> policy = TierPolicy((Tier("auto", "accept", max_error=0.05), Tier("human", "abstain")),
    ...                     delta=0.1)
    >>> cal = calibrate_tiers(policy, TierInputs("classification", conf), wrong)
    >>> cal.report["auto"]["certified"], cal.report["auto"]["upper_bound"] <= 0.05
    (True, True)
    >>> cal.report["auto"]["test"]
    'randomized'
    """
    n = len(inputs)
    risk_tiers = policy.risk_controlled
    delta_tier = policy.delta / max(len(risk_tiers), 1)
    out = TierCalibration()
    test = policy.certification_test
    open_rows = np.ones(n, dtype=bool)
    for tier in policy.tiers[:-1]:
        if tier.max_error is None:
            open_rows &= ~tier_mask(tier, inputs, None)
            continue
        e = np.asarray(
            errors[tier.name] if isinstance(errors, Mapping) else errors, dtype=bool
        ).reshape(-1)
        if len(e) != n:
            raise ValueError(f"errors must have one entry per row ({n}); got {len(e)}.")
        if inputs.task == "classification" and tier.tolerance is not None:
            raise ConfigError(
                f"tier {tier.name!r}: 'tolerance' applies to regression (an error is "
                "|y - y_hat| > tolerance); for a classifier an error is a wrong label. "
                "Remove tolerance."
            )
        keys = tier_keys(tier, inputs)
        eligible = open_rows & base_mask(tier, inputs)
        n_reaching = int(open_rows.sum())
        if tier.per_class or tier.group_by is not None:
            report, threshold, key, hit = _calibrate_strata(
                tier, inputs, keys, e, eligible, open_rows, delta_tier, n_classes, class_labels,
                out.warnings, test,
            )  # fmt: skip
        else:
            res = certify_threshold(
                keys[eligible], e[eligible], max_error=tier.max_error, delta=delta_tier,
                test=test,
            )  # fmt: skip
            threshold, key = res.threshold, np.asarray(res.key, dtype=np.float64)
            hit = eligible & accept_at(keys, key)
            report = _tier_report(tier, res, n, n_reaching)
            report.update({"tier": tier.name, "per_class": False, "n_reaching": n_reaching})
            if not res.certified:
                report["calibration_rows_planned"] = _planned_rows(
                    tier, keys[eligible], e[eligible], delta_tier, n, n_reaching, test
                )
                out.warnings.append(_warning(tier, res, n, n_reaching, report=report))
        report["test"] = test
        out.thresholds[tier.name] = threshold
        out.keys[tier.name] = key
        out.report[tier.name] = to_builtin(report)
        open_rows &= ~hit
    return out


def _calibrate_strata(
    tier: Tier,
    inputs: TierInputs,
    keys: NDArray[np.float64],
    e: NDArray[np.bool_],
    eligible: NDArray[np.bool_],
    open_rows: NDArray[np.bool_],
    delta_tier: float,
    n_classes: int | None,
    class_labels: Any,
    warnings: list[dict[str, Any]],
    test: str,
) -> tuple[dict[str, Any], Any, Any, NDArray[np.bool_]]:
    """Certify a ``per_class`` or ``group_by`` tier stratum by stratum (Bonferroni)."""
    assert tier.max_error is not None
    n = len(inputs)
    if tier.per_class:
        k = int(n_classes or 0)
        if k < 1 or inputs.predicted_class is None:
            raise ConfigError(
                f"tier {tier.name!r}: per_class = true needs a classifier (predicted "
                "classes); remove per_class for regression."
            )
        labels = [str(v) for v in (list(class_labels) if class_labels is not None else range(k))]
        strata = np.asarray(inputs.predicted_class)
        names: list[Any] = list(range(k))
    else:
        values = group_values(tier, inputs)
        names = sorted(set(values[open_rows].tolist()))
        labels = list(names)
        strata = values
    share = delta_tier / max(len(names), 1)
    per: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    key_of: dict[str, NDArray[np.float64]] = {}
    hit = np.zeros(n, dtype=bool)
    for name, label in zip(names, labels, strict=True):
        rows = eligible & (strata == name)
        res = certify_threshold(
            keys[rows], e[rows], max_error=tier.max_error, delta=share, test=test
        )
        thresholds[label] = res.threshold
        key_of[label] = np.asarray(res.key, dtype=np.float64)
        hit |= rows & accept_at(keys, key_of[label])
        reach = int((open_rows & (strata == name)).sum())
        per[label] = _tier_report(tier, res, n, reach)
        if tier.group_by is not None:
            per[label]["too_small"] = bool(not res.certified and reach < res.needed_n)
        if not res.certified:
            per[label]["calibration_rows_planned"] = _planned_rows(
                tier, keys[rows], e[rows], share, n, reach, test
            )
            warnings.append(_warning(tier, res, n, reach, label=label, report=per[label]))
    n_acc = int(hit.sum())
    n_err = int(e[hit].sum())
    planned = [
        int(v["calibration_rows_planned"])
        for v in per.values()
        if v.get("calibration_rows_planned") is not None
    ]
    report: dict[str, Any] = {
        "tier": tier.name,
        "max_error": tier.max_error,
        "delta": delta_tier,
        "score": tier.score,
        "per_class": tier.per_class,
        "group_by": tier.group_by,
        "certified": any(math.isfinite(v) for v in thresholds.values()),
        "threshold": [thresholds[v] for v in labels] if tier.per_class else None,
        "n_calibration": n,
        "n_reaching": int(open_rows.sum()),
        "n_accepted": n_acc,
        "n_errors": n_err,
        "observed_error": n_err / n_acc if n_acc else None,
        "upper_bound": max((v["upper_bound"] for v in per.values() if v["certified"]), default=1.0),
        "acceptance_rate": n_acc / n if n else 0.0,
        "acceptance_interval": _rate_interval(n_acc, n),
        "rows_needed": rows_needed(tier.max_error, share),
        "calibration_rows_needed": max(
            (v["calibration_rows_needed"] for v in per.values()), default=0
        ),
        "calibration_rows_planned": max(planned, default=None),
        ("classes" if tier.per_class else "groups"): per,
    }
    if tier.per_class:
        threshold: Any = np.array([thresholds[v] for v in labels], dtype=np.float64)
        key: Any = np.stack([key_of[v] for v in labels]) if labels else np.zeros((0, 1))
        return report, threshold, key, hit
    report["threshold"] = {g: finite_or_none(t) for g, t in thresholds.items()}
    return report, thresholds, key_of, hit


def _planned_rows(
    tier: Tier,
    keys: NDArray[np.float64],
    errors: NDArray[np.bool_],
    delta: float,
    n_total: int,
    n_reaching: int,
    test: str,
) -> int | None:
    """Calibration rows an uncertified tier needs, planned from what it observed.

    The operating point planned for is the largest acceptance of the eligible
    rows whose observed error is at most ``max_error / 2`` (room for the
    statistical margin); :func:`plan_calibration` then gives the rows needed
    to certify it with probability 0.9, scaled up by the share of calibration
    rows that reach the tier. ``None`` when even the most confident rows err
    more often than that.
    """
    assert tier.max_error is not None
    order, _, accepts = sort_keys(keys)
    if len(order) == 0 or n_reaching <= 0:
        return None
    cum = np.cumsum(errors[order])
    m = np.arange(1, len(order) + 1)
    ok = (cum <= tier.max_error / 2 * m) & (accepts == m)  # cut between distinct keys
    if not ok.any():
        return None
    best = int(np.flatnonzero(ok)[-1])
    try:
        rows = plan_calibration(
            max_error=tier.max_error,
            delta=delta,
            expected_error=float(cum[best] / m[best]),
            target_accept=float(m[best] / len(keys)),
            test=test,
        )
    except ConfigError:  # beyond any practical calibration size
        return None
    return _needed_total(rows, n_total, n_reaching)


def _needed_total(need: int, n_total: int, n_reaching: int) -> int:
    """Calibration rows needed overall so that ``need`` rows reach the tier."""
    if n_total <= 0 or n_reaching <= 0:
        return need
    return math.ceil(need * n_total / n_reaching)


def _tier_report(
    tier: Tier, res: CertifiedThreshold, n_total: int, n_reaching: int
) -> dict[str, Any]:
    return {
        "tier": tier.name,
        "max_error": tier.max_error,
        "delta": res.delta,
        "score": tier.score,
        "certified": res.certified,
        "threshold": res.threshold if res.certified else None,
        "n_calibration": n_total,
        "n_reaching": n_reaching,
        "n_accepted": res.n_accepted,
        "n_errors": res.n_errors,
        "observed_error": res.n_errors / res.n_accepted if res.n_accepted else None,
        "upper_bound": res.upper_bound,
        "acceptance_rate": res.n_accepted / n_total if n_total else 0.0,
        "acceptance_interval": _rate_interval(res.n_accepted, n_total),
        "rows_needed": res.needed_n,
        "calibration_rows_needed": _needed_total(res.needed_n, n_total, n_reaching),
    }


def _warning(
    tier: Tier,
    res: CertifiedThreshold,
    n_total: int,
    n_reaching: int,
    label: str | None = None,
    report: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    kind = "group" if tier.group_by is not None else "predicted class"
    where = f"tier {tier.name!r}" + (f" ({kind} {label})" if label is not None else "")
    budget = res.n_calibration < res.needed_n
    total = _needed_total(res.needed_n, n_total, n_reaching)
    planned = None if report is None else report.get("calibration_rows_planned")
    plan = (
        f" At the error rate observed among its most confident rows, about {planned} "
        "calibration rows would certify it with probability 0.9 (plan_calibration)."
        if planned is not None
        else ""
    )
    if budget:
        message = (
            f"{where} cannot be certified: only {res.n_calibration} calibration rows reach it, "
            f"but certifying max_error={tier.max_error} at delta={res.delta:.4g} needs at least "
            f"{res.needed_n} even with zero errors (about {total} calibration rows in total). "
            "It accepts nothing until calibrated on more rows (or raise max_error/delta)." + plan
        )
    else:
        message = (
            f"{where} cannot be certified: no threshold keeps the error rate of accepted "
            f"calibration rows provably below max_error={tier.max_error} at "
            f"delta={res.delta:.4g}. It accepts nothing; the model may be too inaccurate for "
            "this max_error, or more calibration rows may help." + plan
        )
    return {
        "tier": tier.name,
        ("group" if tier.group_by is not None else "class"): label,
        "reason": "budget" if budget else "not_certified",
        "rows_available": res.n_calibration,
        "rows_needed": res.needed_n,
        "calibration_rows_needed": total,
        "calibration_rows_planned": planned,
        "message": message,
    }
