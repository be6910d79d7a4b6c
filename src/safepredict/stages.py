"""The fitted parts ``decide`` runs with: :class:`Stages`, :class:`Writers`, :class:`Scored`.

``Stages`` is the read-only state of the stage functions (schema, policy,
conformal state, tier calibration, guards, explainer); ``Writers`` the side
effects after a decision (events, review routing); ``Scored`` what the scoring
stage hands to tiers and merge. :mod:`safepredict.pipeline` composes them;
:mod:`safepredict.lifecycle` builds ``Stages`` and ``Writers`` once per
calibration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.config import TierPolicy
from safepredict.conformal import ClassificationConformal, RegressionConformal
from safepredict.explain import ModelExplainer, TokenExplainer
from safepredict.guards import ArrayGuards, InputGuards, TextGuards
from safepredict.inputs import InputSchema
from safepredict.monitoring.events import EventContext, EventEmitter
from safepredict.monitoring.tier_health import effective_audit_rates
from safepredict.review import Router
from safepredict.tiers import TierCalibration, TierInputs

__all__ = ["Scored", "Stages", "Writers", "group_columns"]


def group_columns(policy: TierPolicy) -> tuple[str, ...]:
    """The input columns named by the policy's ``group_by`` tiers (sorted, unique)."""
    return tuple(sorted({t.group_by for t in policy.tiers if t.group_by is not None}))


@dataclass(frozen=True)
class Stages:
    """What ``decide`` needs from a calibrated predictor (read-only).

    Attributes
    ----------
    model : object
        The wrapped model.
    task : {"classification", "regression"}
    schema : InputSchema
        The inputs the predictor accepts.
    policy : TierPolicy
    conformal : ClassificationConformal or RegressionConformal
    tier_calibration : TierCalibration
    guards : InputGuards, TextGuards, ArrayGuards or None
    explainer : ModelExplainer, TokenExplainer or None
    classes : ndarray or None
        Class labels (classification).
    """

    model: Any
    task: str
    schema: InputSchema
    policy: TierPolicy
    conformal: ClassificationConformal | RegressionConformal
    tier_calibration: TierCalibration
    guards: InputGuards | TextGuards | ArrayGuards | None = None
    explainer: ModelExplainer | TokenExplainer | None = None
    classes: NDArray[Any] | None = None

    @functools.cached_property
    def tier_actions(self) -> tuple[str, ...]:
        """Action of each policy tier."""
        return tuple(t.action for t in self.policy.tiers)

    @functools.cached_property
    def tier_names(self) -> tuple[str, ...]:
        """Tier names, then the guard tier (the ``Decisions.tier_names``)."""
        return (*self.policy.names, self.policy.guard_tier)

    @functools.cached_property
    def needs_ranking(self) -> bool:
        """Whether a tier thresholds ranking scores (a ``max_error`` tier)."""
        return any(t.max_error is not None for t in self.policy.tiers)

    @functools.cached_property
    def group_columns(self) -> tuple[str, ...]:
        """The input columns the policy's ``group_by`` tiers (and conditional sets) read."""
        # -- conditional conformal sets (tiers2): their column is read like a group_by one
        column = getattr(self.conformal, "conditional", None)
        if column not in (None, "class"):
            return tuple(sorted({*group_columns(self.policy), column}))
        # -- end conditional conformal sets
        return group_columns(self.policy)

    @functools.cached_property
    def audit_rates(self) -> NDArray[np.float64]:
        """Audit probability of an accepted row, by tier code (guard tier last: 0)."""
        rates = effective_audit_rates(self.policy)
        return np.array([rates.get(name, 0.0) for name in self.tier_names], dtype=np.float64)

    @functools.cached_property
    def audits(self) -> bool:
        """Whether any tier samples accepted rows for audit (``audit_rate > 0``)."""
        return bool((self.audit_rates > 0).any())

    @functools.cached_property
    def class_labels(self) -> NDArray[Any] | None:
        """The class labels as an object array (what ``predictions`` holds)."""
        return None if self.classes is None else self.classes.astype(object)


@dataclass(frozen=True)
class Writers:
    """Where a batch's decisions go after they are made (the post stages).

    Attributes
    ----------
    emitter : callable returning EventEmitter
        Resolved only when an event is emitted (``log="off"`` costs nothing).
    context : callable returning EventContext
        Built only when an event is emitted.
    log : {"decision", "summary", "off"}
    router : Router or None
    log_inputs : bool
        Put raw inputs (minus ``redact``) into routed cases.
    redact : sequence of str or int
    model_name, model_version : str or None
    """

    emitter: Callable[[], EventEmitter]
    context: Callable[[], EventContext]
    log: str = "off"
    router: Router | None = None
    log_inputs: bool = False
    redact: Sequence[Any] = ()
    model_name: str | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class Scored:
    """Model output turned into what the tier rule reads.

    Attributes
    ----------
    inputs : TierInputs
    set_mask : ndarray or None
        Classification sets (``None`` for regression).
    intervals : ndarray or None
        Regression intervals (``None`` for classification).
    raised : ndarray of bool
        Rows where an auxiliary model (CQR, residual) raised.
    collapsed : ndarray of bool
        Regression rows whose interval float rounding collapsed (invalid output).
    notes : dict of int to tuple of str
        Conditional conformal sets: rows whose set is full because of their stratum
        (``small_stratum:<value>``, ``unseen_stratum:<value>``).
    """

    inputs: TierInputs
    set_mask: NDArray[np.bool_] | None
    intervals: NDArray[np.float64] | None
    raised: NDArray[np.bool_]
    collapsed: NDArray[np.bool_]
    any_failed: bool = False
    notes: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
