"""Keeping the promise in production: tier health and adaptive thresholds (layer 3).

A mixin of :class:`~safepredict.SafePredictor`: :meth:`TierHealth.tier_health`
checks every accepting tier against its promise from the audited outcomes in the
review queue (anytime-valid, see :mod:`safepredict.monitoring.tier_health`), and
:meth:`TierHealth.adapt_thresholds` replays the ``adapt = true`` tiers' threshold
path from the same outcome log (see :mod:`safepredict.adaptive`).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from safepredict._validation import describe
from safepredict.adaptive import long_run_bound, threshold_path
from safepredict.exceptions import ConfigError
from safepredict.lifecycle import Lifecycle
from safepredict.monitoring.tier_health import tier_health as compute_tier_health
from safepredict.monitoring.tier_health import tier_outcomes
from safepredict.review import Router

__all__ = ["TierHealth"]


class TierHealth(Lifecycle):
    """Tier health and adaptive thresholds (mixed into :class:`~safepredict.SafePredictor`)."""

    def tier_health(
        self, queue: Any = None, *, since: Any = None, delta: float | None = None
    ) -> dict[str, Any]:
        """Is every accepting tier keeping its promise? Anytime-valid, from audited outcomes.

        Reads the resolved audit cases (``queue.outcomes(audited_only=True)``, in
        the order their outcomes arrived) and runs
        :func:`safepredict.monitoring.tier_health.tier_health`: per tier, a
        confidence sequence for the error rate of *all* rows the tier accepted
        (each outcome weighted by ``1 / audit_rate`` of its tier), valid however
        often it is checked. Emits one ``safepredict.tier_alarm`` warning per
        tier in alarm.

        Parameters
        ----------
        queue : SQLiteReviewQueue, Router or path, optional
            Where the outcomes are. Default: this predictor's router.
        since : datetime or ISO 8601 str, optional
            Only outcomes resolved at or after this time (UTC). The bounds are
            for the error rate of the rows accepted in the window, so a long good
            history does not dilute a recent rise; each window keeps its own
            ``delta`` guarantee.
        delta : float, optional
            Miscoverage over the whole stream. Default: the policy's ``delta``.

        Returns
        -------
        dict
            Tier name -> JSON-safe dict with ``n_outcomes``, ``n_errors``,
            ``estimate`` (weighted), ``lower`` / ``upper`` (anytime-valid),
            ``max_error`` (the promise), ``alarm`` (``lower > max_error``),
            ``delta`` and ``audit_rate``.
        """
        self._check_calibrated("tier_health")
        items = self._audit_outcomes(queue, "tier_health")
        if since is not None:
            start = _utc_text(since)
            items = (o for o in items if str(o.get("resolved_at") or "") >= start)
        report = compute_tier_health(items, self.policy_, delta=delta)
        context = self._event_context()
        out = {name: h.to_dict() for name, h in report.items()}
        for health in out.values():
            if health["alarm"]:
                self.events.tier_alarm(context, health)
        return out

    def _audit_outcomes(self, queue: Any, caller: str) -> Any:
        """``outcomes(audited_only=True)`` of ``queue`` (default: this predictor's router)."""
        source = self.router_instance if queue is None else queue
        if source is not None and not hasattr(source, "outcomes"):
            source = getattr(Router.coerce(source), "queue", None)
        outcomes = getattr(source, "outcomes", None)
        if outcomes is None:
            raise ConfigError(
                f"{caller} needs the review queue the audited outcomes are in; pass "
                f"SafePredictor(router='reviews.db') or {caller}(queue='reviews.db'); "
                f"got {describe(queue)}."
            )
        return outcomes(audited_only=True)

    def adapt_thresholds(self, queue: Any = None) -> dict[str, Any]:
        """Move the ``adapt = true`` tiers' thresholds, replayed from the audit outcome log.

        For each such tier the threshold path starts at the certified threshold
        and takes one step per audited outcome of the tier, in arrival order
        (:func:`safepredict.adaptive.threshold_path`), so calling this again after
        more outcomes arrived, or on another process with the same queue, gives the
        same threshold. The new threshold replaces the tier's threshold in this
        predictor (and in what :meth:`save` writes); each change emits a
        ``safepredict.threshold_change`` event.

        Returns
        -------
        dict
            Tier name -> ``start`` (certified threshold), ``threshold`` (now),
            ``n_outcomes``, ``weighted_error`` and ``bound`` (the long-run excess
            over ``max_error`` allowed so far, see :mod:`safepredict.adaptive`).
        """
        self._check_calibrated("adapt_thresholds")
        policy = self.policy_
        tiers = [t for t in policy.tiers if t.adapt]
        if not tiers:
            raise ConfigError(
                "adapt_thresholds: no tier has adapt = true; add adapt = true to a "
                "max_error tier of the policy."
            )
        if self.task_ != "classification":
            raise ConfigError(
                "adapt_thresholds supports classification tiers, whose scores lie in [0, 1]; "
                "this predictor is a regressor. Remove adapt = true and recalibrate instead."
            )
        per_tier = tier_outcomes(self._audit_outcomes(queue, "adapt_thresholds"), policy)
        cal = self.tier_calibration_
        thresholds = dict(cal.thresholds)
        out: dict[str, Any] = {}
        context = self._event_context()
        for tier in tiers:
            start = (cal.report.get(tier.name) or {}).get("threshold")
            errs, weights = per_tier[tier.name]
            if start is None or tier.max_error is None:  # uncertified: accepts nothing
                continue
            path = threshold_path(
                errs, weights, start=float(start), max_error=tier.max_error, step=tier.adapt_step
            )
            new, old = float(path[-1]), float(thresholds[tier.name])
            total = float(weights.sum())
            out[tier.name] = {
                "start": float(start),
                "threshold": new,
                "n_outcomes": len(errs),
                "weighted_error": float((weights * errs).sum() / total) if total else None,
                "bound": long_run_bound(
                    start=float(start),
                    step=tier.adapt_step,
                    total_weight=total,
                    max_weight=float(weights.max()) if len(weights) else 1.0,
                ),
            }
            if new != old:
                thresholds[tier.name] = new
                self.events.threshold_change(
                    context, {"tier": tier.name, "old": old, "new": new, **out[tier.name]}
                )
        # a moved threshold replaces the tier's lexicographic key: accept iff score >= it
        moved = {name for name in thresholds if thresholds[name] is not cal.thresholds.get(name)}
        keys = {name: key for name, key in cal.keys.items() if name not in moved}
        self.tier_calibration_ = dataclasses.replace(cal, thresholds=thresholds, keys=keys)
        return out


def _utc_text(when: Any) -> str:
    """``since`` as the queue's UTC ISO text (which sorts as time)."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(
                f"since must be a datetime or an ISO 8601 time such as "
                f"'2026-01-31T00:00:00Z'; got {describe(when)}."
            ) from exc
    if not isinstance(when, datetime):
        raise ConfigError(f"since must be a datetime or an ISO 8601 str; got {describe(when)}.")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return str(when.astimezone(UTC).isoformat(timespec="microseconds"))
