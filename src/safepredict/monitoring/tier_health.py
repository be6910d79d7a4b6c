"""Tier health: whether each accepting tier keeps its ``max_error`` promise in production.

A ``max_error`` tier is certified once, at calibration. In production, accepted rows
are audited with a known probability (the tier's ``audit_rate``) and their outcomes
arrive later through the review queue. This module turns that stream of audited
outcomes into, per tier, an anytime-valid confidence sequence for the error rate of
*all* the rows the tier accepted (inverse-probability weighted, see
:class:`safepredict._stats.BettingConfidenceSequence`) and an ``alarm`` when its
lower bound exceeds the promised ``max_error``.

Because the bounds hold at every time simultaneously, the health may be checked
after every outcome: if the tier keeps its promise, the chance that it *ever*
alarms is at most ``delta / 2`` (the lower half of a two-sided ``1 - delta``
sequence), however often anyone looks. A repeated Clopper-Pearson check does not
have this property.

Layer 2 (pure): imports only layers 0 and 1.

Examples
--------
>>> from safepredict.config import Tier, TierPolicy
>>> policy = TierPolicy(
...     [Tier("auto", "accept", max_error=0.05, audit_rate=0.1), Tier("human", "review")]
... )
>>> rng = np.random.default_rng(0)
>>> rows = [{"tier": "auto", "action": "accept", "error": int(rng.random() < 0.15)}
...         for _ in range(2000)]
>>> health = tier_health(rows, policy)
>>> h = health["auto"]
>>> h.n_outcomes, h.alarm, h.lower > 0.05
(2000, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from safepredict._stats import BettingConfidenceSequence, betting_alarm_times
from safepredict._validation import check_fraction, check_positive_int, describe
from safepredict.config import Tier, TierPolicy
from safepredict.exceptions import ConfigError

__all__ = [
    "TierHealth",
    "TierHealthTracker",
    "audits_per_day",
    "effective_audit_rates",
    "outcomes_to_detect",
    "tier_health",
    "tier_outcomes",
]


@dataclass(frozen=True)
class TierHealth:
    """Health of one accepting tier.

    Attributes
    ----------
    tier : str
        Tier name.
    n_outcomes : int
        Audited outcomes seen.
    n_errors : int
        How many of them were errors.
    estimate : float or None
        Weighted (Hajek) estimate of the error rate among all rows the tier
        accepted; ``None`` before the first outcome.
    lower, upper : float
        Anytime-valid ``1 - delta`` bounds on that error rate.
    max_error : float or None
        The promise (``None`` for an accepting tier without ``max_error``).
    alarm : bool
        ``lower > max_error``: the tier is not keeping its promise.
    delta : float
        Miscoverage of the confidence sequence over the whole stream.
    audit_rate : float
        The tier's audit probability used for rows without their own.
    """

    tier: str
    n_outcomes: int
    n_errors: int
    estimate: float | None
    lower: float
    upper: float
    max_error: float | None
    alarm: bool
    delta: float
    audit_rate: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return asdict(self)


def effective_audit_rates(policy: TierPolicy) -> dict[str, float]:
    """Audit probability of each accepting tier: its own ``audit_rate`` or the policy's.

    Examples
    --------
    >>> policy = TierPolicy(
    ...     [Tier("a", "accept", max_error=0.1, audit_rate=0.2), Tier("b", "accept"),
    ...      Tier("h", "review")], audit_rate=0.05)
    >>> effective_audit_rates(policy)
    {'a': 0.2, 'b': 0.05}
    """
    out: dict[str, float] = {}
    for t in policy.tiers:
        if t.action == "accept":
            own = t.audit_rate
            out[t.name] = float(policy.audit_rate if own is None else own)
    return out


def _row_error(row: Mapping[str, Any], tier: Tier) -> int:
    """1 when the accepted row was wrong: its ``error``, or prediction vs outcome."""
    if row.get("error") is not None:
        value = row["error"]
        if isinstance(value, bool) or value in (0, 1):
            return int(value)
        raise ConfigError(
            f"outcome 'error' must be 0/1 or a bool; got {describe(value)} for tier {tier.name!r}."
        )
    if "outcome" not in row or "prediction" not in row:
        raise ConfigError(
            "each outcome needs 'error' (0/1) or both 'prediction' and 'outcome'; got keys "
            f"{sorted(row)}. Read outcomes with queue.outcomes(audited_only=True)."
        )
    y, pred = row["outcome"], row["prediction"]
    if tier.tolerance is not None:  # regression max_error tier
        try:
            return int(abs(float(y) - float(pred)) > tier.tolerance)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"tier {tier.name!r} is a regression tier (tolerance={tier.tolerance}); "
                f"outcome {describe(y)} and prediction {describe(pred)} must be numbers."
            ) from exc
    return int(y != pred)


def _records(outcomes: Any) -> Iterable[Mapping[str, Any]]:
    if hasattr(outcomes, "to_dict") and hasattr(outcomes, "columns"):  # a DataFrame
        records: list[Mapping[str, Any]] = outcomes.to_dict("records")
        return records
    if isinstance(outcomes, Mapping | str | bytes):
        raise ConfigError(
            "outcomes must be a table: an iterable of dicts (e.g. "
            "queue.outcomes(audited_only=True)) or a DataFrame; got "
            f"{describe(outcomes)}."
        )
    try:
        rows: Iterable[Mapping[str, Any]] = iter(outcomes)
    except TypeError as exc:
        raise ConfigError(
            f"outcomes must be an iterable of dicts or a DataFrame; got {describe(outcomes)}."
        ) from exc
    return rows


def tier_outcomes(
    outcomes: Any, policy: TierPolicy
) -> dict[str, tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]]:
    """Per accepting tier, its outcomes' errors (0/1) and weights ``1 / audit probability``.

    Each outcome is a mapping with ``tier`` and ``error`` (0/1) or ``prediction``
    and ``outcome``; optionally ``action`` (rows not ``"accept"`` are skipped) and
    ``audit_probability`` (default: the tier's effective audit rate; 1 when that
    is 0, i.e. the outcome was not sampled). Order is kept.

    Examples
    --------
    >>> policy = TierPolicy([Tier("a", "accept", audit_rate=0.25), Tier("h", "review")])
    >>> e, w = tier_outcomes([{"tier": "a", "prediction": 1, "outcome": 0}], policy)["a"]
    >>> e.tolist(), w.tolist()
    ([1.0], [4.0])
    """
    rates = effective_audit_rates(policy)
    tiers = {t.name: t for t in policy.tiers if t.name in rates}
    errors: dict[str, list[int]] = {n: [] for n in tiers}
    weights: dict[str, list[float]] = {n: [] for n in tiers}
    for row in _records(outcomes):
        if not isinstance(row, Mapping):
            raise ConfigError(f"each outcome must be a dict; got {describe(row)}.")
        name = row.get("tier")
        if name not in tiers or row.get("action", "accept") != "accept":
            continue
        tier = tiers[str(name)]
        p = row.get("audit_probability")
        prob = float(p) if p is not None else (rates[tier.name] or 1.0)
        if not 0.0 < prob <= 1.0:
            raise ConfigError(
                f"audit_probability must be in (0, 1]; got {describe(p)} for tier {tier.name!r}."
            )
        errors[tier.name].append(_row_error(row, tier))
        weights[tier.name].append(1.0 / prob)
    return {
        n: (np.asarray(errors[n], dtype=np.float64), np.asarray(weights[n], dtype=np.float64))
        for n in tiers
    }


class TierHealthTracker:
    """Per-tier confidence sequences, updated as audited outcomes arrive.

    Parameters
    ----------
    policy : TierPolicy
        Gives the accepting tiers, their ``max_error`` and ``audit_rate``.
    delta : float, optional
        Miscoverage over the whole stream. Default: the policy's ``delta``.
    min_audit_probability : float, optional
        The smallest audit probability any row can have, fixed in advance (it
        bounds the weights, which the betting needs). Default: each tier's
        effective ``audit_rate``.
    grid : int, default=1000
        Resolution of the bounds on ``[0, 1]`` (they are rounded outwards).

    Examples
    --------
    >>> policy = TierPolicy([Tier("auto", "accept", max_error=0.1), Tier("h", "review")],
    ...                     audit_rate=0.5)
    >>> tracker = TierHealthTracker(policy)
    >>> tracker.update([{"tier": "auto", "action": "accept", "error": 0}] * 100)
    []
    >>> tracker.report()["auto"].upper < 0.1
    True
    """

    def __init__(
        self,
        policy: TierPolicy,
        *,
        delta: float | None = None,
        min_audit_probability: float | None = None,
        grid: int = 1000,
    ) -> None:
        if not isinstance(policy, TierPolicy):
            raise ConfigError(f"policy must be a TierPolicy; got {describe(policy)}.")
        self.policy = policy
        self.delta = check_fraction(policy.delta if delta is None else delta, "delta")
        check_positive_int(grid, "grid")
        if min_audit_probability is not None:
            check_fraction(min_audit_probability, "min_audit_probability", high_open=False)
        self.rates = effective_audit_rates(policy)
        self._tiers = {t.name: t for t in policy.tiers if t.name in self.rates}
        self._cs: dict[str, BettingConfidenceSequence] = {}
        self._errors: dict[str, int] = {}
        for name, tier in self._tiers.items():
            floor = min_audit_probability or self.rates[name] or 1.0
            extra = [] if tier.max_error is None else [float(tier.max_error)]
            self._cs[name] = BettingConfidenceSequence(
                self.delta, max_weight=1.0 / floor, grid=grid, extra=extra
            )
            self._errors[name] = 0

    def update(self, outcomes: Any) -> list[str]:
        """Add outcomes in arrival order; return the tiers whose alarm this update raised.

        The outcomes are read as in :func:`tier_outcomes`; rows of tiers that do
        not accept are skipped.
        """
        before = {n for n, h in self.report().items() if h.alarm}
        for name, (errs, weights) in tier_outcomes(outcomes, self.policy).items():
            if len(errs):
                self._cs[name].update(errs, weights)
                self._errors[name] += int(errs.sum())
        after = {n for n, h in self.report().items() if h.alarm}
        return sorted(after - before)

    def report(self) -> dict[str, TierHealth]:
        """Current health of every accepting tier, in policy order."""
        out: dict[str, TierHealth] = {}
        for name, tier in self._tiers.items():
            cs = self._cs[name]
            est = cs.estimate
            out[name] = TierHealth(
                tier=name,
                n_outcomes=cs.n,
                n_errors=self._errors[name],
                estimate=None if math.isnan(est) else float(est),
                lower=cs.lower,
                upper=cs.upper,
                max_error=tier.max_error,
                alarm=tier.max_error is not None and cs.exceeds(float(tier.max_error)),
                delta=self.delta,
                audit_rate=self.rates[name],
            )
        return out


def tier_health(
    outcomes: Any,
    policy: TierPolicy,
    *,
    delta: float | None = None,
    min_audit_probability: float | None = None,
    grid: int = 1000,
) -> dict[str, TierHealth]:
    """Health of every accepting tier from a table of audited outcomes (offline use).

    Parameters
    ----------
    outcomes : iterable of dict or DataFrame
        Audited accepted rows in the order their outcomes arrived, e.g.
        ``queue.outcomes(audited_only=True)``; see :func:`tier_outcomes` for the
        columns.
    policy : TierPolicy
        The policy the rows were decided under.
    delta, min_audit_probability, grid
        As in :class:`TierHealthTracker`.

    Returns
    -------
    dict
        Tier name -> :class:`TierHealth`, for every tier whose action is ``accept``.
    """
    tracker = TierHealthTracker(
        policy, delta=delta, min_audit_probability=min_audit_probability, grid=grid
    )
    tracker.update(outcomes)
    return tracker.report()


def outcomes_to_detect(
    max_error: float,
    error: float,
    *,
    delta: float = 0.05,
    power: float = 0.9,
    runs: int = 400,
    seed: int = 0,
) -> int:
    """Audited outcomes needed to raise the alarm when a tier's error is ``error``.

    Simulates ``runs`` streams of outcomes with error rate ``error`` (uniform
    audit sampling) and returns the number of outcomes after which the
    ``max_error`` alarm has fired in a fraction ``power`` of them.

    Parameters
    ----------
    max_error : float
        The promise.
    error : float
        The true error rate to detect (``> max_error``).
    delta : float, default=0.05
        As in :class:`TierHealthTracker`.
    power : float, default=0.9
        Probability of having detected by then.
    runs, seed : int
        Size and seed of the simulation (deterministic for a given seed).

    Examples
    --------
    >>> n = outcomes_to_detect(0.05, 0.10)
    >>> 100 < n < 1500
    True
    """
    check_fraction(max_error, "max_error")
    check_fraction(error, "error")
    check_fraction(power, "power")
    check_positive_int(runs, "runs")
    if error <= max_error:
        raise ConfigError(
            f"error must exceed max_error to be detectable; got error={error} <= "
            f"max_error={max_error}. Pass the error rate you want to catch, e.g. "
            f"{min(2 * max_error, 0.99):.3g}."
        )
    rng = np.random.default_rng(seed)
    horizon = 256
    while True:
        stream = (rng.random((runs, horizon)) < error).astype(np.float64)
        times = betting_alarm_times(stream, threshold=max_error, delta=delta)
        hit = np.sort(np.where(times > 0, times, np.iinfo(np.int64).max))
        k = math.ceil(power * runs) - 1
        if hit[k] != np.iinfo(np.int64).max:
            return int(hit[k])
        if horizon >= 2**22 // max(1, runs // 64):
            raise ConfigError(
                f"an error rate of {error} cannot be told from max_error={max_error} within "
                f"{horizon} outcomes; ask for a larger excess."
            )
        horizon *= 2


def audits_per_day(
    max_error: float,
    error: float,
    within_days: float,
    *,
    accepted_per_day: float | None = None,
    delta: float = 0.05,
    power: float = 0.9,
) -> dict[str, float]:
    """How many audits a day a tier needs to catch an error of ``error`` within ``within_days``.

    Parameters
    ----------
    max_error, error, delta, power
        As in :func:`outcomes_to_detect`.
    within_days : float
        Time allowed to detect (days; outcomes are assumed to arrive the same day).
    accepted_per_day : float, optional
        Rows the tier accepts a day; when given, the ``audit_rate`` that yields
        the needed audits is returned too.

    Returns
    -------
    dict
        ``outcomes`` (needed in total), ``audits_per_day`` and, with
        ``accepted_per_day``, ``audit_rate`` (capped at 1).

    Examples
    --------
    >>> plan = audits_per_day(0.05, 0.10, within_days=7, accepted_per_day=10_000)
    >>> plan["audits_per_day"] == math.ceil(plan["outcomes"] / 7)
    True
    """
    if not (isinstance(within_days, int | float) and within_days > 0):
        raise ConfigError(f"within_days must be a number > 0; got {describe(within_days)}.")
    n = outcomes_to_detect(max_error, error, delta=delta, power=power)
    per_day = math.ceil(n / within_days)
    out: dict[str, float] = {"outcomes": n, "audits_per_day": per_day}
    if accepted_per_day is not None:
        if not (isinstance(accepted_per_day, int | float) and accepted_per_day > 0):
            raise ConfigError(
                f"accepted_per_day must be a number > 0; got {describe(accepted_per_day)}."
            )
        out["audit_rate"] = min(1.0, per_day / accepted_per_day)
    return out
