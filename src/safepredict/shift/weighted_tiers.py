"""Weighted certification of ``max_error`` tiers for the production distribution.

A tier accepting rows with ranking key ``>= t`` keeps the
production error rate among accepted rows at most ``m`` exactly when
``E_cal[w a_t (e - m)] <= 0`` (``a_t``: accepted, ``e``: wrong), because
``E_prod[f] = E_cal[w f]`` for the true likelihood ratio ``w``. With weights
bounded by ``B`` (the clip), ``z = w a_t (e - m) / B`` lies in ``[-1, 1]`` and the
null hypothesis ``H_t: rate > m`` makes ``E[z] > 0``. The test martingale of
the betting confidence sequence in :mod:`safepredict._stats`
(Waudby-Smith and Ramdas, 2024) then gives a valid p-value
``1 / max_k K_k`` for ``H_t`` (Ville's inequality). Candidate thresholds are
tested strictest first in a fixed sequence (Learn-then-Test, Angelopoulos et
al., 2021), so with probability ``>= 1 - delta`` the certified threshold's
production error rate is at most ``m``. Assumptions: the weights are the true
likelihood ratio (a domain classifier or prior estimate that is right, and
clipping that does not bind) and there is no concept shift.

References
----------
Angelopoulos, A. N., Bates, S., Candes, E. J., Jordan, M. I. and Lei, L. (2021).
Learn then test: calibrating predictive algorithms to achieve risk control.
arXiv:2110.01052.

Waudby-Smith, I. and Ramdas, A. (2024). Estimating means of bounded random
variables by betting. *JRSS-B* 86(1), 1-27.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._binomial import rows_needed
from safepredict._stats import betting_log_capital
from safepredict.config import TierPolicy
from safepredict.exceptions import ConfigError
from safepredict.tiers import (
    ACCEPT_ALL,
    CertifiedThreshold,
    TierCalibration,
    TierInputs,
    accept_at,
    assign_tiers,
    ranking_keys,
    sort_keys,
    tier_keys,
)
from safepredict.tiers.conditions import group_values

__all__ = [
    "betting_start",
    "calibrate_tiers_weighted",
    "certify_weighted",
]

#: Candidates tested per vectorized block by :func:`certify_weighted`.
_BLOCK = 5


def betting_start(max_error: float, delta: float, max_weight: float) -> int:
    """Accepted rows of the first (strictest) candidate of :func:`certify_weighted`.

    A clean accepted row of average weight (1) multiplies the betting capital by
    at most ``1 + c m / ((1 - m) B)`` (``c = 1/2``, the bet truncation of
    :mod:`safepredict._stats`), so ``log(1 / delta)`` needs ``log(1 / delta) /
    log(1 + c m / ((1 - m) B))`` of them. At a weighted error rate of ``m / 2``
    the gain per row roughly halves and errors cost capital, so the first
    candidate asks for 3 times that; the fixed sequence stops at its first
    failure, so a first candidate too small to be rejected would block every
    looser one. Label-free: it depends on ``m``, ``delta`` and ``B`` only.

    Examples
    --------
    >>> betting_start(0.05, 0.1, 1.0), betting_start(0.1, 0.1, 5.0)
    (266, 626)
    """
    gain = math.log1p(0.5 * max_error / ((1.0 - max_error) * max_weight))
    return math.ceil(3.0 * math.log(1.0 / delta) / gain)


def certify_weighted(
    scores: NDArray[np.float64],
    errors: NDArray[np.bool_],
    weights: NDArray[np.float64],
    *,
    max_error: float,
    delta: float,
    max_weight: float,
    n_steps: int = 20,
    seed: int = 0,
) -> CertifiedThreshold:
    """Loosest ranking threshold whose *production* error rate is <= ``max_error`` w.p. >= 1-delta.

    Rows with a non-finite primary score are never accepted (pass every
    calibration row: the test is over the whole calibration sample). See the
    module docstring for the test. The candidates are label-free (from the
    scores), strictest first, the first accepting :func:`betting_start` rows
    (every row, if fewer); the sequence stops at the first
    candidate not rejected. The betting order is a fixed permutation of the
    rows (``seed``), so a calibration file sorted by time or label cannot bias
    the bets.

    Parameters
    ----------
    scores : ndarray of shape (n,) or (n, k)
        Ranking keys (higher = surer), as in :func:`safepredict.tiers.certify_threshold`.
    errors : ndarray of bool, shape (n,)
    weights : ndarray of shape (n,)
        Likelihood-ratio weights, each in ``[0, max_weight]``.
    max_error, delta : float
    max_weight : float
        The bound ``B`` of the weights, fixed before the labels are seen.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=4000)
    >>> e = rng.uniform(size=4000) < 0.2 * (1 - s)
    >>> res = certify_weighted(s, e, np.ones(4000), max_error=0.05, delta=0.1, max_weight=1.0)
    >>> res.certified, 0.3 < res.acceptance_rate < 0.9
    (True, True)
    """
    keys = ranking_keys(scores)
    e = np.asarray(errors, dtype=bool).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    n = len(keys)
    if len(e) != n or len(w) != n:
        raise ValueError(f"scores, errors and weights need one entry per row ({n}).")
    if n and (float(w.min()) < 0 or float(w.max()) > max_weight * (1 + 1e-9)):
        raise ConfigError(
            f"weights must lie in [0, max_weight={max_weight:.4g}]; got "
            f"[{float(w.min()):.4g}, {float(w.max()):.4g}]. Clip them at max_weight."
        )
    need = rows_needed(max_error, delta)
    start = betting_start(max_error, delta, max_weight)
    order, _, accepts = sort_keys(keys)
    n_ok = len(order)
    fail = CertifiedThreshold(
        threshold=math.inf, certified=False, n_calibration=n, n_accepted=0, n_errors=0,
        upper_bound=1.0, needed_n=need, max_error=float(max_error), delta=float(delta),
        n_tested=0, key=(math.inf,) * keys.shape[1],
    )  # fmt: skip
    if n_ok < need:
        return fail
    first = min(max(start, need), n_ok)
    targets = np.unique(np.linspace(first, n_ok, num=max(n_steps, 1) + 1).round().astype(np.intp))
    counts = np.unique(accepts[targets - 1])
    rank = np.empty(n, dtype=np.intp)
    rank[:] = n  # never accepted
    rank[order] = np.arange(n_ok)
    perm = np.random.default_rng(seed).permutation(n)
    rank_bet, e_perm = rank[perm], e[perm]
    floor = max_weight * 1e-9  # _stats takes weights >= 1: scale by the floor (u = w / B)
    w_pos = np.maximum(w[perm], floor) / floor
    cap = max(float(w_pos.max()), max_weight / floor)
    n_rejected = 0
    for start in range(0, len(counts), _BLOCK):  # the sequence stops early: test in blocks
        block = counts[start : start + _BLOCK]
        accepted = rank_bet[None, :] < block[:, None]  # (block, n) in betting order
        e_bet = np.where(accepted, e_perm[None, :], max_error)  # not accepted: z = 0
        log_minus = betting_log_capital(
            e_bet, np.broadcast_to(w_pos, accepted.shape), m=[max_error], max_weight=cap
        )[1][..., 0]
        rejected = np.exp(-np.maximum(log_minus.max(axis=1), 0.0)) <= delta
        if not rejected.all():
            n_rejected += int(np.argmin(rejected))
            break
        n_rejected += len(block)
    if n_rejected == 0:
        return dataclasses.replace(fail, n_tested=1)
    j = n_rejected - 1
    n_acc = int(counts[j])
    acc_rows = order[:n_acc]
    key = tuple(float(v) for v in keys[order[n_acc - 1]])
    if n_acc == n_ok:
        key = (ACCEPT_ALL,) * keys.shape[1]
    return CertifiedThreshold(
        threshold=key[0],
        certified=True,
        n_calibration=n,
        n_accepted=n_acc,
        n_errors=int(e[acc_rows].sum()),
        upper_bound=float(max_error),
        needed_n=need,
        max_error=float(max_error),
        delta=float(delta),
        n_tested=min(n_rejected + 1, len(counts)),
        key=key,
    )


def calibrate_tiers_weighted(
    policy: TierPolicy,
    inputs: TierInputs,
    errors: NDArray[np.bool_] | Mapping[str, NDArray[np.bool_]],
    weights: NDArray[np.float64],
    *,
    max_weight: float,
    n_classes: int | None = None,
    class_labels: Sequence[Any] | None = None,
) -> TierCalibration:
    """Certify every ``max_error`` tier for the production distribution (weighted).

    Tiers are walked in order as :func:`safepredict.tiers.assign_tiers` routes
    rows; ``delta`` is split equally (Bonferroni) over the risk-controlled
    tiers, and within a ``per_class`` tier equally over the ``n_classes``
    predicted classes, within a ``group_by`` tier over the group values of
    the rows that reach it -- the multiplicity correction of
    :func:`safepredict.tiers.calibrate_tiers`. Each stratum (class, group) is
    tested on the whole weighted calibration sample with only its own rows
    accepted, so its certificate bounds the production error rate among the
    rows of that stratum the tier accepts. A group absent from the calibration
    rows reaching the tier is unseen: its production rows are not accepted.

    Examples
    --------
    >>> from safepredict.config import Tier
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(size=6000)
    >>> cls = rng.integers(0, 2, size=6000)
    >>> inputs = TierInputs(task="classification", confidence=conf,
    ...                     scores={"conformal": conf}, predicted_class=cls)
    >>> wrong = rng.uniform(size=6000) < 0.3 * (1 - conf)
    >>> policy = TierPolicy((Tier("auto", "accept", max_error=0.1, per_class=True),
    ...                      Tier("human", "review")), delta=0.1)
    >>> cal = calibrate_tiers_weighted(policy, inputs, wrong, np.ones(6000), max_weight=1.0,
    ...                                n_classes=2)
    >>> cal.thresholds["auto"].shape, bool(np.isfinite(cal.thresholds["auto"]).all())
    ((2,), True)
    """
    risk = policy.risk_controlled
    delta_tier = policy.delta / max(len(risk), 1)
    out = TierCalibration()
    names = [t.name for t in policy.tiers]
    for index, tier in enumerate(policy.tiers[:-1]):
        if tier.max_error is None:
            continue
        probe = TierCalibration(
            thresholds={**out.thresholds, tier.name: ACCEPT_ALL},
            keys={**out.keys, tier.name: np.array([ACCEPT_ALL])},
        )
        for later in policy.tiers[index + 1 : -1]:
            if later.max_error is not None:
                probe.thresholds[later.name] = math.inf
        codes = assign_tiers(policy, inputs, probe)[0]
        eligible = codes == names.index(tier.name)
        keys = tier_keys(tier, inputs).copy()
        keys[~eligible, 0] = np.nan
        e = np.asarray(errors[tier.name] if isinstance(errors, Mapping) else errors, dtype=bool)
        if tier.per_class or tier.group_by is not None:
            _strata_weighted(
                tier, inputs, keys, e, weights, eligible, delta_tier, max_weight, out,
                n_classes=n_classes, class_labels=class_labels,
            )  # fmt: skip
            continue
        res = certify_weighted(
            keys, e, weights, max_error=tier.max_error, delta=delta_tier, max_weight=max_weight
        )
        out.thresholds[tier.name] = res.threshold
        out.keys[tier.name] = np.asarray(res.key, dtype=np.float64)
        out.report[tier.name] = _report(tier, res, keys, e, weights, eligible, delta_tier,
                                        max_weight)  # fmt: skip
        if not res.certified:
            out.warnings.append(_not_certified(tier, delta_tier, None))
    return out


def _report(
    tier: Any,
    res: CertifiedThreshold,
    keys: NDArray[np.float64],
    e: NDArray[np.bool_],
    weights: NDArray[np.float64],
    eligible: NDArray[np.bool_],
    delta: float,
    max_weight: float,
) -> dict[str, Any]:
    """What the weighted test found for one tier (or stratum); JSON-safe."""
    reach = eligible & np.isfinite(keys[:, 0])
    hit = reach & accept_at(keys, np.asarray(res.key, dtype=np.float64))
    w_hit = float(weights[hit].sum())
    return {
        "tier": tier.name,
        "weighted": True,
        "max_error": tier.max_error,
        "delta": delta,
        "score": tier.score,
        "certified": res.certified,
        "threshold": res.threshold if res.certified else None,
        "n_calibration": res.n_calibration,
        "n_reaching": int(reach.sum()),
        "n_accepted": res.n_accepted,
        "n_errors": res.n_errors,
        # the production error rate the calibration rows estimate (importance-weighted)
        "weighted_error": float((weights[hit] * e[hit]).sum() / w_hit) if w_hit else None,
        "acceptance_rate": res.acceptance_rate,
        # production share of rows the tier accepts, as the weights estimate it
        "weighted_acceptance_rate": w_hit / float(weights.sum()) if weights.sum() else 0.0,
        "rows_needed": res.needed_n,
        "first_candidate_rows": betting_start(tier.max_error, delta, max_weight),
    }


def _not_certified(tier: Any, delta: float, label: str | None) -> dict[str, Any]:
    kind = "group" if tier.group_by is not None else "class"
    where = "" if label is None else f" for {kind} {label!r}"
    return {
        "tier": tier.name,
        "class": label if tier.per_class else None,
        **({"group": label} if tier.group_by is not None else {}),
        "reason": "not_certified",
        "message": (
            f"tier {tier.name!r} cannot be certified{where} for the production "
            f"distribution: the weighted test found no threshold whose error rate "
            f"is provably below max_error={tier.max_error} at delta="
            f"{delta:.4g}. It accepts nothing; more calibration rows, a "
            "smaller max_weight or a milder shift would help."
        ),
    }


def _strata_weighted(
    tier: Any,
    inputs: TierInputs,
    keys: NDArray[np.float64],
    e: NDArray[np.bool_],
    weights: NDArray[np.float64],
    eligible: NDArray[np.bool_],
    delta_tier: float,
    max_weight: float,
    out: TierCalibration,
    *,
    n_classes: int | None,
    class_labels: Sequence[Any] | None,
) -> None:
    """Certify a ``per_class`` / ``group_by`` tier stratum by stratum (Bonferroni) into ``out``."""
    assert tier.max_error is not None
    if tier.per_class:
        k = int(n_classes or 0)
        if k < 1 or inputs.predicted_class is None:
            raise ConfigError(
                f"tier {tier.name!r}: per_class = true needs a classifier (predicted "
                "classes); remove per_class for regression."
            )
        labels = [str(v) for v in (list(class_labels) if class_labels is not None else range(k))]
        strata: NDArray[Any] = np.asarray(inputs.predicted_class)
        values: list[Any] = list(range(k))
    else:
        strata = group_values(tier, inputs)
        values = sorted(set(strata[eligible].tolist()))
        labels = [str(v) for v in values]
    share = delta_tier / max(len(values), 1)
    per: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    key_of: dict[str, NDArray[np.float64]] = {}
    for value, label in zip(values, labels, strict=True):
        rows = eligible & (strata == value)
        sub = keys.copy()
        sub[~rows, 0] = np.nan
        res = certify_weighted(
            sub, e, weights, max_error=tier.max_error, delta=share, max_weight=max_weight
        )
        thresholds[label] = res.threshold
        key_of[label] = np.asarray(res.key, dtype=np.float64)
        per[label] = _report(tier, res, sub, e, weights, rows, share, max_weight)
        if not res.certified:
            out.warnings.append(_not_certified(tier, share, label))
    accepted = [v for v in per.values() if v["certified"]]
    report: dict[str, Any] = {
        "tier": tier.name,
        "weighted": True,
        "max_error": tier.max_error,
        "delta": delta_tier,
        "score": tier.score,
        "per_class": tier.per_class,
        "group_by": tier.group_by,
        "certified": bool(accepted),
        "n_reaching": int(eligible.sum()),
        "n_accepted": sum(int(v["n_accepted"]) for v in per.values()),
        "n_errors": sum(int(v["n_errors"]) for v in per.values()),
        "weighted_acceptance_rate": sum(float(v["weighted_acceptance_rate"]) for v in per.values()),
        "rows_needed": rows_needed(tier.max_error, share),
        ("classes" if tier.per_class else "groups"): per,
    }
    out.report[tier.name] = report
    if tier.per_class:
        width = keys.shape[1]
        out.thresholds[tier.name] = np.array([thresholds[v] for v in labels], dtype=np.float64)
        out.keys[tier.name] = (
            np.stack([key_of[v] for v in labels]) if labels else np.zeros((0, width))
        )
    else:
        out.thresholds[tier.name] = thresholds
        out.keys[tier.name] = key_of
