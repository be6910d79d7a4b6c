"""Prometheus metrics from real events, read back from a real CollectorRegistry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

import safepredict as sp
from safepredict.monitoring.prometheus import PrometheusMetrics, register_review_queue
from safepredict.review import SQLiteReviewQueue


@pytest.fixture
def metrics() -> Iterator[PrometheusMetrics]:
    m = PrometheusMetrics(registry=CollectorRegistry())
    structlog.configure(
        processors=[m, structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    try:
        yield m
    finally:
        structlog.reset_defaults()


def value(m: PrometheusMetrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_decision_counters_match_the_batch(iris_lr: Any, metrics: PrometheusMetrics) -> None:
    p = sp.SafePredictor(iris_lr.model, model_name="iris").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d1 = p.decide(iris_lr.X_test)
    d2 = p.decide(np.vstack([iris_lr.X_test, iris_lr.X_test + 2.0]))
    for tier in ("auto", "human"):
        for action in ("accept", "abstain"):
            expected = sum(int(((d.tiers == tier) & (d.actions == action)).sum()) for d in (d1, d2))
            got = value(
                metrics, "safepredict_decisions_total", model="iris", tier=tier, action=action
            )
            assert got == expected
    # Latency is observed once per decide() call, not once per row.
    assert (
        value(metrics, "safepredict_decide_latency_seconds_count", model="iris", stage="total") == 2
    )
    conf = np.concatenate([d1.confidence, d2.confidence])
    assert value(metrics, "safepredict_confidence_count", model="iris") == np.isfinite(conf).sum()


def test_summary_mode_counts_the_same(iris_lr: Any, metrics: PrometheusMetrics) -> None:
    p = sp.SafePredictor(iris_lr.model, model_name="iris", log="summary")
    p.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    # far outside the reference (a 50-row reference certifies no OOD level, so only
    # values beyond the range guard's wide net are flagged)
    d = p.decide(np.vstack([iris_lr.X_test, iris_lr.X_test + 20.0]))
    pairs = {(str(t), str(a)) for t, a in zip(d.tiers, d.actions, strict=True)}
    assert ("guard", "abstain") in pairs  # the shifted half fails the input guards
    for tier, action in pairs:
        n = int(((d.tiers == tier) & (d.actions == action)).sum())
        got = value(metrics, "safepredict_decisions_total", model="iris", tier=tier, action=action)
        assert got == n


def test_guard_reasons_and_routes_are_counted_by_kind(metrics: PrometheusMetrics) -> None:
    log = structlog.get_logger("safepredict")
    log.info(
        "safepredict.decision",
        model_name="m",
        tier="guard",
        action="abstain",
        guard={
            "status": "flag",
            "reasons": ["out_of_range:age", "out_of_range:income", "missing:zip"],
        },
        batch_id="b1",
        latency_s={"total": 0.01},
    )
    log.info("safepredict.route", model_name="m", status="spooled", decision_id="b1-0")
    assert value(metrics, "safepredict_guard_reasons_total", model="m", reason="out_of_range") == 2
    assert value(metrics, "safepredict_guard_reasons_total", model="m", reason="missing") == 1
    assert value(metrics, "safepredict_routes_total", model="m", status="spooled") == 1


def test_no_high_cardinality_labels(iris_lr: Any, metrics: PrometheusMetrics) -> None:
    p = sp.SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, iris_lr.y_cal)
    d = p.decide(iris_lr.X_test, request_id="req-123")
    text = generate_latest(metrics.registry).decode()
    assert "req-123" not in text
    assert d.batch_id not in text
    label_names = {
        name for fam in metrics.registry.collect() for s in fam.samples for name in s.labels
    }
    assert label_names <= {"model", "tier", "action", "reason", "stage", "status", "le"}


def test_processor_never_raises_on_odd_events(metrics: PrometheusMetrics) -> None:
    out = metrics(None, "info", {"event": "safepredict.decision", "confidence": "high"})
    assert out["confidence"] == "high"
    assert metrics(None, "info", {"event": 42}) == {"event": 42}


def test_review_queue_gauges_follow_the_queue(tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "q.db")
    q.write_batch(
        [{"decision_id": f"d{i}", "tier": "human", "action": "abstain"} for i in range(3)]
    )
    registry = CollectorRegistry()
    register_review_queue(q, registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"safepredict_{name}", labels)

    assert value("review_queue_up") == 1.0
    assert value("review_cases", tier="human", status="pending") == 3.0
    assert value("review_time_to_claim_seconds", tier="human") is None  # nothing claimed yet
    q.claim_case("d0", "ana")
    q.resolve("d0", 1, "ana")
    assert value("review_cases", tier="human", status="pending") == 2.0  # read at scrape
    assert value("review_cases", tier="human", status="resolved") == 1.0
    assert value("review_time_to_resolve_seconds", tier="human") >= 0.0  # type: ignore[operator]
    assert value("review_oldest_pending_seconds", tier="human") >= 0.0  # type: ignore[operator]
    (tmp_path / "bad.db").write_bytes(b"not a database at all" * 400)
    broken = SQLiteReviewQueue(tmp_path / "bad.db")
    other = CollectorRegistry()
    register_review_queue(broken, other)
    assert other.get_sample_value("safepredict_review_queue_up") == 0.0
