"""One tier of a policy: its name, action and conditions (what one ``[[tiers]]`` holds).

:class:`Tier` is re-exported by :mod:`safepredict.config`, where :class:`TierPolicy`
orders tiers into a policy.

Examples
--------
>>> Tier("auto", "accept", min_confidence=0.9).conditions
{'min_confidence': 0.9}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from safepredict._validation import (
    check_fraction,
    check_one_of,
    check_positive_int,
    check_positive_number,
    check_unknown_keys,
    describe,
)
from safepredict.exceptions import ConfigError

__all__ = ["ACTIONS", "CERTIFICATION_TESTS", "SCORES", "Tier"]

Action = Literal["accept", "review", "abstain"]

ACTIONS: tuple[str, ...] = ("accept", "review", "abstain")
#: Scores a risk-controlled tier can threshold (higher means more confident).
SCORES: tuple[str, ...] = ("conformal", "top_prob", "margin")
#: The exact binomial tests that can certify ``max_error`` tiers (a policy's
#: ``certification_test``). ``"randomized"``: the randomized test
#: (:func:`safepredict._binomial.randomized_binomial_p_value`, one uniform draw per
#: candidate threshold, pseudo-random from a hash of the rows:
#: :func:`safepredict.tiers.certify.data_draws`), exactly of size ``delta`` at
#: the boundary and so more powerful: it certifies every threshold the
#: conservative test does, and often a looser one. ``"conservative"``: the
#: non-randomized test (:func:`safepredict._binomial.binomial_p_value`), whose
#: size is below ``delta`` (the binomial is discrete). Both keep ``max_error`` with probability
#: ``>= 1 - delta`` (the randomized one over the calibration draw *and* its draws).
CERTIFICATION_TESTS: tuple[str, ...] = ("randomized", "conservative")

_CONDITIONS = (
    "min_confidence",
    "min_credibility",
    "max_set_size",
    "max_interval_width",
    "max_error",
)


@dataclass(frozen=True)
class Tier:
    """One confidence tier: a name, an action and the conditions a row must meet.

    Parameters
    ----------
    name : str
        Identifier used in decisions, events and the review queue.
    action : {"accept", "review", "abstain"}
        What the product does with rows in this tier.
    min_confidence : float, optional
        Classification: the row's conformal confidence must be at least this.
    min_credibility : float, optional
        Classification typicality check: the row's conformal credibility (the
        p-value of the predicted label, the largest p-value) must be at least
        this. A row like the calibration rows fails it with probability at most
        ``min_credibility`` (the false-alarm rate); rows less typical than
        calibration (e.g. out of distribution) fail it more often.
    max_set_size : int, optional
        Classification: the conformal prediction set has at most this many labels.
        An empty set (no label typical enough at ``confidence_level``) counts as
        size 0: it satisfies ``max_set_size``; ask for typicality with
        ``min_credibility``.
    max_interval_width : float, optional
        Regression: the conformal interval is at most this wide.
    max_error : float, optional
        Risk-controlled tier: among rows this tier accepts, the error rate is at
        most ``max_error`` with probability at least ``1 - delta`` (the policy's
        ``delta``), certified on the calibration data.
    score : {"conformal", "top_prob", "margin"}, default="conformal"
        The per-row score a ``max_error`` tier thresholds.
    per_class : bool, default=False
        Certify ``max_error`` separately within each predicted class.
    group_by : str, optional
        Certify ``max_error`` separately within every value of this input
        column (e.g. ``"region"``), with ``delta`` split across the values so
        that all groups keep ``max_error`` at once with probability at least
        ``1 - delta``. A group with too few calibration rows accepts nothing
        (reason ``group_too_small:<value>``); a value never seen at calibration
        goes to the fallback tier (reason ``unseen_group:<value>``).
    tolerance : float, optional
        Regression ``max_error`` tiers: a prediction is an error when
        ``|y - y_hat| > tolerance``. Required for regression ``max_error`` tiers.
    audit_rate : float, optional
        Accepting tiers: fraction of this tier's accepted rows sampled for audit
        (overrides the policy-wide ``audit_rate``). The audited outcomes feed
        :meth:`SafePredictor.tier_health`.
    adapt : bool, default=False
        ``max_error`` tiers: move the threshold online from arriving audit outcomes
        (see :mod:`safepredict.adaptive` for what this guarantees and what not);
        applied by :meth:`SafePredictor.adapt_thresholds`.
    adapt_step : float, default=0.01
        Learning rate of the adaptive threshold (score units per unit of weighted
        error).

    Examples
    --------
    >>> Tier("auto", "accept", min_confidence=0.9).conditions
    {'min_confidence': 0.9}
    """

    name: str
    action: Action
    min_confidence: float | None = None
    min_credibility: float | None = None
    max_set_size: int | None = None
    max_interval_width: float | None = None
    max_error: float | None = None
    score: str = "conformal"
    per_class: bool = False
    tolerance: float | None = None
    audit_rate: float | None = None  # tier health (issue 22)
    adapt: bool = False  # adaptive thresholds (issue 22)
    adapt_step: float = 0.01
    group_by: str | None = None
    reviews_required: int = 1  # review at team scale (issue 25)
    review_cost: float | None = None  # the expected_value review priority (issue 25)

    def __post_init__(self) -> None:
        where = f"tier {self.name!r}"
        _check_review_keys(self, where)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(
                f"every tier needs a non-empty string 'name'; got {describe(self.name)}."
            )
        check_one_of(self.action, "action", ACTIONS, where=f"{where}: ")
        if self.min_confidence is not None:
            check_fraction(
                self.min_confidence,
                "min_confidence",
                low_open=False,
                high_open=False,
                where=f"{where}: ",
            )
        if self.min_credibility is not None:
            check_fraction(
                self.min_credibility,
                "min_credibility",
                low_open=False,
                high_open=False,
                where=f"{where}: ",
            )
        if self.max_set_size is not None:
            check_positive_int(self.max_set_size, "max_set_size", where=f"{where}: ")
        if self.max_interval_width is not None:
            check_positive_number(self.max_interval_width, "max_interval_width", where)
        if self.max_error is not None:
            if (
                isinstance(self.max_error, int | float)
                and not isinstance(self.max_error, bool)
                and 1 <= self.max_error <= 100
            ):
                raise ConfigError(
                    f"{where}: max_error is a fraction in (0, 1), not a percentage; got "
                    f"{describe(self.max_error)}. Write e.g. max_error = 0.02 for 2%."
                )
            check_fraction(self.max_error, "max_error", where=f"{where}: ")
        check_one_of(self.score, "score", SCORES, where=f"{where}: ")
        if not isinstance(self.per_class, bool):
            raise ConfigError(
                f"{where}: per_class must be true or false; got {describe(self.per_class)}."
            )
        if self.tolerance is not None:
            check_positive_number(self.tolerance, "tolerance", where, allow_zero=True)
            if self.max_error is None:
                raise ConfigError(
                    f"{where}: 'tolerance' only applies to a 'max_error' tier; add max_error "
                    "or remove tolerance."
                )
        if self.audit_rate is not None:  # tier health (issue 22)
            check_fraction(
                self.audit_rate, "audit_rate", low_open=False, high_open=False, where=f"{where}: "
            )
            if self.action != "accept":
                raise ConfigError(
                    f"{where}: audit_rate samples accepted rows for audit; this tier's action "
                    f"is {self.action!r}. Remove audit_rate or set it on an accepting tier."
                )
        if not isinstance(self.adapt, bool):  # adaptive thresholds (issue 22)
            raise ConfigError(f"{where}: adapt must be true or false; got {describe(self.adapt)}.")
        check_positive_number(self.adapt_step, "adapt_step", where)
        if self.adapt and (self.max_error is None or self.per_class):
            raise ConfigError(
                f"{where}: adapt = true moves a single max_error threshold; add max_error "
                "(without per_class) or remove adapt."
            )
        if self.group_by is not None:
            if not isinstance(self.group_by, str) or not self.group_by.strip():
                raise ConfigError(
                    f"{where}: group_by must be a column name (a non-empty string); got "
                    f"{describe(self.group_by)}."
                )
            if self.per_class:
                raise ConfigError(
                    f"{where}: per_class and group_by cannot be combined; choose one (or add "
                    "a column that combines both and group_by it)."
                )
        if (
            self.per_class or self.score != "conformal" or self.group_by is not None
        ) and self.max_error is None:
            raise ConfigError(
                f"{where}: 'score', 'per_class' and 'group_by' only apply to a 'max_error' "
                "tier; add max_error or remove them."
            )

    @property
    def conditions(self) -> dict[str, float | int]:
        """The conditions this tier sets, by key (empty for a fallback tier)."""
        return {k: getattr(self, k) for k in _CONDITIONS if getattr(self, k) is not None}

    @property
    def is_risk_controlled(self) -> bool:
        """Whether the tier carries a ``max_error`` guarantee."""
        return self.max_error is not None

    def to_dict(self) -> dict[str, Any]:
        """The tier as a TOML/JSON-ready dict, without unset keys."""
        out: dict[str, Any] = {"name": self.name, "action": self.action}
        out.update(self.conditions)
        if self.max_error is not None:
            out["score"] = self.score
            out["per_class"] = self.per_class
            if self.tolerance is not None:
                out["tolerance"] = self.tolerance
            if self.group_by is not None:
                out["group_by"] = self.group_by
        if self.audit_rate is not None:  # tier health (issue 22)
            out["audit_rate"] = self.audit_rate
        if self.adapt:
            out["adapt"] = True
            out["adapt_step"] = self.adapt_step
        if self.reviews_required != 1:  # review at team scale (issue 25)
            out["reviews_required"] = self.reviews_required
        if self.review_cost is not None:
            out["review_cost"] = self.review_cost
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, index: int = 0) -> Tier:
        """Build a tier from a mapping, reporting unknown or missing keys.

        Examples
        --------
        >>> Tier.from_dict({"name": "auto", "action": "accept", "max_set_size": 1}).max_set_size
        1
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"tiers[{index}] must be a table/dict; got {describe(data)}.")
        name = data.get("name", f"#{index}")
        where = f"tier {name!r} (tiers[{index}])"
        known = {f.name for f in dataclasses.fields(cls)}
        check_unknown_keys(data.keys(), known, where=where)
        for required in ("name", "action"):
            if required not in data:
                raise ConfigError(
                    f"{where}: missing required key {required!r} "
                    f'(e.g. name = "auto", action = "accept").'
                )
        return cls(**dict(data))


def _check_review_keys(tier: Tier, where: str) -> None:
    """``reviews_required``: an integer in [1, 25]; ``review_cost``: a finite number > 0."""
    k = tier.reviews_required
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 25:
        raise ConfigError(
            f"{where}: reviews_required must be an integer in [1, 25] (distinct reviewers "
            f"per case); got {describe(k)}. Write e.g. reviews_required = 2."
        )
    if tier.review_cost is not None:
        check_positive_number(tier.review_cost, "review_cost", where)
