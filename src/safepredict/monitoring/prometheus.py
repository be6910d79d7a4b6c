"""Prometheus metrics from safepredict events (optional extra ``prometheus``).

:class:`PrometheusMetrics` is a structlog processor: put it in the application's
processor chain and every ``safepredict.decision`` / ``safepredict.batch`` /
``safepredict.route`` event updates counters and histograms. Labels are only
low-cardinality values (model name, tier, action, guard-reason kind, route
status); request and decision ids never become labels.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = PrometheusMetrics(registry=registry)
>>> _ = metrics(None, "info", {"event": "safepredict.decision", "model_name": "m",
...     "tier": "auto", "action": "accept", "guard": {"reasons": []}, "confidence": 0.99,
...     "batch_id": "b", "latency_s": {"total": 0.01}})
>>> registry.get_sample_value("safepredict_decisions_total",
...     {"model": "m", "tier": "auto", "action": "accept"})
1.0
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

from safepredict._extras import missing_extra

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError as _exc:  # the optional 'prometheus' extra
    raise missing_extra(_exc, "prometheus", "safepredict.monitoring.prometheus") from _exc

from safepredict.exceptions import SafePredictError
from safepredict.reasons import reason_name

__all__ = ["PrometheusMetrics", "register_review_queue"]

#: Bucket bounds (seconds) of the per-call latency histograms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Bucket bounds of the confidence histogram.
CONFIDENCE_BUCKETS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
_STAGES = ("total", "guard", "model", "conformal", "explain")


class PrometheusMetrics:
    """A structlog processor that counts decisions into Prometheus metrics.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Where the metrics are registered. Default: a new private registry
        (pass ``prometheus_client.REGISTRY`` to expose them on the default
        ``/metrics``).
    namespace : str, default="safepredict"
        Metric name prefix.

    Notes
    -----
    Metrics: ``<ns>_decisions_total{model,tier,action}``,
    ``<ns>_guard_reasons_total{model,reason}`` (reason kind such as
    ``out_of_range``, without the column), ``<ns>_confidence{model}``
    (histogram), ``<ns>_decide_latency_seconds{model,stage}`` (histogram, one
    observation per ``decide`` call), ``<ns>_routes_total{model,status}`` and
    ``<ns>_dropped_events_total`` is left to the predictor's ``event_stats()``.
    Tier health (``safepredict.tier_alarm`` events, or :meth:`observe_tier_health`
    for every tier): ``<ns>_tier_error{model,tier,bound}`` (gauge; bound is
    ``estimate``, ``lower``, ``upper`` or ``max_error``) and
    ``<ns>_tier_alarm{model,tier}`` (1 in alarm, else 0).
    The processor never raises: a malformed event is passed on unchanged.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "safepredict"
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self._namespace = namespace
        self.decisions = Counter(
            "decisions",
            "Decisions by tier and action.",
            ["model", "tier", "action"],
            namespace=namespace,
            registry=self.registry,
        )
        self.guard_reasons = Counter(
            "guard_reasons",
            "Guard reasons raised, by kind.",
            ["model", "reason"],
            namespace=namespace,
            registry=self.registry,
        )
        self.confidence = Histogram(
            "confidence",
            "Conformal confidence of classification decisions.",
            ["model"],
            buckets=CONFIDENCE_BUCKETS,
            namespace=namespace,
            registry=self.registry,
        )
        self.latency = Histogram(
            "decide_latency_seconds",
            "Seconds per decide() call, by stage.",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            namespace=namespace,
            registry=self.registry,
        )
        self.routes = Counter(
            "routes",
            "Cases handed to the router, by status.",
            ["model", "status"],
            namespace=namespace,
            registry=self.registry,
        )
        self.tier_error = Gauge(  # tier health (issue 22)
            "tier_error",
            "Anytime-valid tier error bounds from audited outcomes.",
            ["model", "tier", "bound"],
            namespace=namespace,
            registry=self.registry,
        )
        self.tier_alarm = Gauge(
            "tier_alarm",
            "1 when a tier's error lower bound exceeds its max_error.",
            ["model", "tier"],
            namespace=namespace,
            registry=self.registry,
        )
        self._last_batch: str | None = None
        self._lock = threading.Lock()

    def _latency(self, model: str, event: MutableMapping[str, Any]) -> None:
        latency = event.get("latency_s") or {}
        for stage in _STAGES:
            value = latency.get(stage)
            if value is not None:
                self.latency.labels(model, stage).observe(float(value))

    def observe_tier_health(
        self, health: Mapping[str, Mapping[str, Any]], *, model: str = ""
    ) -> None:
        """Set the tier gauges from ``SafePredictor.tier_health()`` output.

        Examples
        --------
        >>> m = PrometheusMetrics()
        >>> m.observe_tier_health({"auto": {"tier": "auto", "estimate": 0.03, "lower": 0.01,
        ...     "upper": 0.06, "max_error": 0.05, "alarm": False}}, model="m")
        >>> m.registry.get_sample_value("safepredict_tier_error",
        ...     {"model": "m", "tier": "auto", "bound": "upper"})
        0.06
        """
        for name, h in health.items():
            self._tier(model, str(name), h)

    def observe_feature_drift(self, window: Mapping[str, Any], *, model: str = "") -> None:
        """Set ``safepredict_feature_psi{model,feature}`` from one monitor window.

        ``window`` is one of ``monitor(...).windows`` (the latest, typically); its
        ``features`` (per-feature drift vs the calibration bins) give one PSI per
        input column. A window without per-feature drift sets nothing.

        Examples
        --------
        >>> m = PrometheusMetrics()
        >>> m.observe_feature_drift({"features": {"columns": [
        ...     {"feature": "income", "psi": 0.7}, {"feature": "age", "psi": None}]}}, model="m")
        >>> m.registry.get_sample_value("safepredict_feature_psi",
        ...     {"model": "m", "feature": "income"})
        0.7
        """
        gauge: Gauge | None = getattr(self, "_feature_psi", None)
        if gauge is None:  # created on first use: only monitors that read inputs need it
            gauge = self._feature_psi = Gauge(
                f"{self._namespace}_feature_psi",
                "Population stability index of an input column in the latest monitor window "
                "vs the calibration bins (0.2 and above: a material shift).",
                ["model", "feature"],
                registry=self.registry,
            )
        for column in (window.get("features") or {}).get("columns") or ():
            if column.get("psi") is not None:
                gauge.labels(model, str(column["feature"])).set(float(column["psi"]))

    def _tier(self, model: str, tier: str, h: Mapping[str, Any]) -> None:
        for bound in ("estimate", "lower", "upper", "max_error"):
            value = h.get(bound)
            if value is not None:
                self.tier_error.labels(model, tier, bound).set(float(value))
        self.tier_alarm.labels(model, tier).set(1.0 if h.get("alarm") else 0.0)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Update the metrics from one event and pass it on unchanged."""
        try:
            self._observe(event_dict)
        except Exception:  # metrics must never break logging (or a decision)
            return event_dict
        return event_dict

    def _observe(self, ev: MutableMapping[str, Any]) -> None:
        name = ev.get("event")
        if not isinstance(name, str) or not name.startswith("safepredict."):
            return
        model = str(ev.get("model_name") or "")
        if name == "safepredict.decision":
            self.decisions.labels(model, str(ev.get("tier")), str(ev.get("action"))).inc()
            for reason in (ev.get("guard") or {}).get("reasons") or ():
                self.guard_reasons.labels(model, reason_name(str(reason))).inc()
            conf = ev.get("confidence")
            if conf is not None:
                self.confidence.labels(model).observe(float(conf))
            batch = ev.get("batch_id")
            with self._lock:  # latency is per decide() call: observe it once per batch
                new = batch is None or batch != self._last_batch
                self._last_batch = batch
            if new:
                self._latency(model, ev)
        elif name == "safepredict.batch":
            for tier_action, count in _tier_action_counts(ev).items():
                self.decisions.labels(model, *tier_action).inc(count)
            for reason, count in (ev.get("guard_reasons") or {}).items():
                self.guard_reasons.labels(model, str(reason)).inc(int(count))
            self._latency(model, ev)
        elif name == "safepredict.route":
            self.routes.labels(model, str(ev.get("status"))).inc()
        elif name == "safepredict.tier_alarm":
            self._tier(model, str(ev.get("tier")), ev)


def _tier_action_counts(ev: MutableMapping[str, Any]) -> dict[tuple[str, str], int]:
    pairs: dict[str, dict[str, int]] = ev.get("tier_actions") or {}
    return {
        (str(tier), str(action)): int(count)
        for tier, actions in pairs.items()
        for action, count in actions.items()
    }


# ------------------------------------------------------------ review queue (issue 25)
_REVIEW_SLA = (
    ("oldest_pending_s", "review_oldest_pending_seconds", "Age of the oldest pending case."),
    ("claim_s", "review_time_to_claim_seconds", "Median seconds from routing to first claim."),
    ("resolve_s", "review_time_to_resolve_seconds", "Median seconds from routing to resolution."),
    ("adjudication", "review_adjudication_cases", "Cases waiting for an adjudicator."),
)


def register_review_queue(
    queue: Any, registry: CollectorRegistry, *, namespace: str = "safepredict"
) -> Any:
    """Expose a review queue's counts and SLA figures as gauges read at scrape time.

    Registers a collector on ``registry`` that calls ``queue.counts(sla=True)``
    on every scrape: ``<ns>_review_cases{tier,status}``,
    ``<ns>_review_oldest_pending_seconds{tier}``,
    ``<ns>_review_time_to_claim_seconds{tier}``,
    ``<ns>_review_time_to_resolve_seconds{tier}``,
    ``<ns>_review_adjudication_cases{tier}`` and ``<ns>_review_queue_up``
    (0 when the queue could not be read; the scrape itself never fails).
    Returns the collector (``registry.unregister`` it to stop).

    Examples
    --------
    >>> import tempfile
    >>> from safepredict.review import SQLiteReviewQueue
    >>> q = SQLiteReviewQueue(tempfile.mkdtemp() + "/q.db")
    >>> q.enqueue({"decision_id": "d", "tier": "human", "action": "abstain"})
    >>> registry = CollectorRegistry()
    >>> _ = register_review_queue(q, registry)
    >>> registry.get_sample_value("safepredict_review_cases",
    ...     {"tier": "human", "status": "pending"})
    1.0
    """
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class ReviewQueueCollector(Collector):
        def collect(self) -> Any:
            up = GaugeMetricFamily(f"{namespace}_review_queue_up", "1 if the queue was read.")
            try:
                counts = queue.counts(sla=True)
            except SafePredictError:
                up.add_metric([], 0.0)
                yield up
                return
            up.add_metric([], 1.0)
            yield up
            cases = GaugeMetricFamily(
                f"{namespace}_review_cases", "Cases by tier and status.", labels=["tier", "status"]
            )
            families = {
                key: GaugeMetricFamily(f"{namespace}_{name}", text, labels=["tier"])
                for key, name, text in _REVIEW_SLA
            }
            for tier, row in counts.items():
                if tier == "*":
                    continue
                for status in ("pending", "claimed", "resolved"):
                    cases.add_metric([tier, status], float(row.get(status, 0)))
                for key, family in families.items():
                    if row.get(key) is not None:
                        family.add_metric([tier], float(row[key]))
            yield cases
            yield from families.values()

    collector = ReviewQueueCollector()
    registry.register(collector)
    return collector
