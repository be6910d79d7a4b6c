"""The reviewer API on both backends (SQLite, PostgreSQL): leases, k reviewers, priority, SLA."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.review.conftest import LIVE_TTL, sleep_past

from safepredict import ReviewQueueError
from safepredict.review._codec import parse_time
from safepredict.review._core import ReviewQueueCore
from safepredict.review.outcomes import OutcomeSpace

MakeQueue = Callable[..., ReviewQueueCore]
TIERS = [
    {"name": "auto", "action": "accept", "max_set_size": 1},
    {"name": "pair", "action": "review", "max_set_size": 2, "reviews_required": 2},
    {"name": "trio", "action": "review", "max_set_size": 3, "reviews_required": 3},
    {"name": "human", "action": "abstain", "review_cost": 10.0},
]


def case(i: int, tier: str = "human", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "decision_id": f"d-{i}",
        "tier": tier,
        "action": "abstain",
        "reasons": [],
        "prediction": 0,
        "prediction_set": [0, 1],
        "confidence": None,
        "audit": False,
    }
    out.update(kw)
    return out


def routed(q: ReviewQueueCore, cases: list[dict[str, Any]], priority: str = "fifo") -> None:
    q.set_context(OutcomeSpace("classification", (0, 1, 2)), TIERS, priority)
    q.write_batch(cases)


# ------------------------------------------------------------------- leases
def test_expired_lease_returns_the_case_to_another_reviewer(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(1)])
    first = q.claim("ana", ttl=LIVE_TTL)
    assert first is not None
    assert first["lease_id"]
    assert first["reviewer"] == "ana"
    assert q.claim("bo") is None  # ana's lease is live
    sleep_past(first["lease_expires_at"])
    second = q.claim("bo")
    assert second is not None
    assert second["decision_id"] == "d-1"
    assert second["previous_reviewer"] == "ana"
    assert second["lease_id"] != first["lease_id"]
    with pytest.raises(ReviewQueueError, match="claimed by 'bo'"):
        q.resolve("d-1", 1, "ana")  # a foreign lease: ana lost it
    assert q.resolve("d-1", 1, "bo")["status"] == "resolved"


def test_resolving_under_an_expired_lease_is_refused(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(1)])
    q.claim("ana", ttl=0.2)
    time.sleep(0.3)
    with pytest.raises(ReviewQueueError, match="lease expired"):
        q.resolve("d-1", 1, "ana")
    with pytest.raises(ReviewQueueError, match="lease expired"):
        q.heartbeat("d-1", "ana")
    assert q.expire_leases() == 1
    assert q.get("d-1")["status"] == "pending"  # type: ignore[index]


def test_heartbeat_keeps_a_lease_alive(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(1)])
    claimed = q.claim("ana", ttl=LIVE_TTL)
    assert claimed is not None
    first_expiry = parse_time(claimed["lease_expires_at"])
    beats = 0
    while datetime.now(UTC) < first_expiry + timedelta(seconds=0.5):  # past the first expiry
        time.sleep(LIVE_TTL / 8)
        beat = q.heartbeat("d-1", "ana", ttl=LIVE_TTL)
        assert beat["lease_expires_at"] > claimed["lease_expires_at"]
        beats += 1
    assert beats >= 2
    assert q.claim("bo") is None
    with pytest.raises(ReviewQueueError, match="claimed by 'ana'"):
        q.heartbeat("d-1", "bo")
    assert q.resolve("d-1", 2, "ana")["outcome"] == 2


# --------------------------------------------------------- several reviewers
def test_two_reviewers_agree_and_the_case_resolves_by_consensus(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(1, "pair")])
    assert q.claim("ana")["reviews_required"] == 2  # type: ignore[index]
    after_one = q.resolve("d-1", 1, "ana")
    assert after_one["status"] == "pending"
    assert after_one["reviewer"] is None
    assert q.claim("ana") is None  # ana already answered: it needs another reviewer
    with pytest.raises(ReviewQueueError, match="already answered"):
        q.claim_case("d-1", "ana")
    q.claim("bo")
    done = q.resolve("d-1", 1, "bo")
    assert (done["status"], done["outcome"], done["outcome_source"]) == (
        "resolved",
        1,
        "consensus",
    )
    assert [(r["reviewer"], r["outcome"]) for r in q.reviews("d-1")] == [("ana", 1), ("bo", 1)]


def test_a_tie_goes_to_adjudication_and_the_adjudicator_decides(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(1, "pair"), case(2, "trio")])
    for reviewer, answer in (("ana", 0), ("bo", 1)):
        assert q.claim(reviewer, tier="pair") is not None
        q.resolve("d-1", answer, reviewer)
    tied = q.get("d-1")
    assert tied is not None
    assert (tied["status"], tied["stage"]) == ("pending", "adjudication")
    assert q.claim("cy", tier="pair") is None  # a review claim skips adjudication cases
    assert q.counts(sla=True)["pair"]["adjudication"] == 1
    assert q.claim("judge", adjudicate=True)["decision_id"] == "d-1"  # type: ignore[index]
    final = q.resolve("d-1", 1, "judge", note="checked the record")
    assert (final["status"], final["outcome"], final["outcome_source"]) == (
        "resolved",
        1,
        "adjudication",
    )
    # three reviewers, 2 against 1: the majority resolves without adjudication
    for reviewer, answer in (("ana", 2), ("bo", 0), ("cy", 2)):
        q.claim(reviewer, tier="trio")
        q.resolve("d-2", answer, reviewer)
    assert (q.get("d-2")["outcome"], q.get("d-2")["outcome_source"]) == (2, "consensus")  # type: ignore[index]


def test_reviewer_stats_score_agreement_and_gold_accuracy(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(
        q,
        [case(i, "pair", audit=True, action="accept", prediction=i % 2) for i in range(6)],
    )
    answers = {"ana": [0, 1, 0, 1, 0, 1], "bo": [0, 1, 1, 1, 0, 0]}
    for reviewer, labels in answers.items():
        for i, label in enumerate(labels):
            q.claim_case(f"d-{i}", reviewer)
            q.resolve(f"d-{i}", label, reviewer)
    for i in range(6):  # the realized outcomes arrive later: gold
        q.record_outcome(f"d-{i}", i % 2)
    stats = q.reviewer_stats()
    assert stats["reviewers"]["ana"] == {
        "answers": 6,
        "gold_n": 6,
        "gold_correct": 6,
        "accuracy": 1.0,
    }
    assert stats["reviewers"]["bo"]["gold_correct"] == 4
    from sklearn.metrics import cohen_kappa_score

    assert stats["pairs"][0]["kappa"] == pytest.approx(
        cohen_kappa_score(answers["ana"], answers["bo"])
    )


# ------------------------------------------------------------------ priority
def test_expected_value_priority_claims_the_costliest_uncertainty_first(
    make_queue: MakeQueue,
) -> None:
    q = make_queue()
    cases = [
        case(1, "pair", confidence=0.9),  # cost 1 x 0.1
        case(2, "human", confidence=0.9),  # cost 10 x 0.1 = 1.0
        case(3, "pair", confidence=0.2),  # cost 1 x 0.8
        case(4, "human", prediction_set=[]),  # cost 10 x 1 (empty set)
    ]
    routed(q, cases, "expected_value")
    order = [c["decision_id"] for c in q.pending()]
    assert order == ["d-4", "d-2", "d-3", "d-1"]
    assert [q.claim(f"r{k}")["decision_id"] for k in range(4)] == order  # type: ignore[index]


def test_oldest_per_tier_serves_tiers_in_turn(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(i, "human") for i in range(5)], "oldest_per_tier")  # a burst
    routed(q, [case(10, "pair"), case(11, "pair")], "oldest_per_tier")
    order = [c["decision_id"] for c in q.pending()]
    assert order == ["d-0", "d-10", "d-1", "d-11", "d-2", "d-3", "d-4"]


def test_fifo_is_arrival_order(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(i, "human") for i in range(3)])
    routed(q, [case(10, "pair")])
    assert [c["decision_id"] for c in q.pending()] == ["d-0", "d-1", "d-2", "d-10"]


# ----------------------------------------------------------------------- SLA
def test_counts_carry_sla_figures_per_tier(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(1), case(2), case(3, "pair")])
    time.sleep(0.2)
    q.claim_case("d-1", "ana")
    q.resolve("d-1", 0, "ana")
    counts = q.counts(sla=True)
    human = counts["human"]
    assert human["pending"] == 1
    assert human["resolved"] == 1
    assert 0.2 <= human["oldest_pending_s"] < 30
    assert 0.2 <= human["claim_s"] <= human["resolve_s"] < 30
    assert counts["pair"]["claim_s"] is None
    assert counts["pair"]["oldest_pending_s"] >= 0.2
    assert counts["*"]["oldest_pending_s"] == max(
        counts[t]["oldest_pending_s"] for t in ("human", "pair")
    )
    assert set(q.counts()["human"]) == {"pending", "claimed", "resolved"}  # unchanged shape


def test_backends_agree_on_the_basic_lifecycle(make_queue: MakeQueue) -> None:
    q = make_queue()
    routed(q, [case(i) for i in range(4)])
    routed(q, [case(0)])  # already present: kept as is
    assert len(q) == 4
    c = q.claim("ana")
    assert c is not None
    assert c["decision_id"] == "d-0"
    q.release("d-0", "ana")
    assert q.claim_case("d-0", "ana")["status"] == "claimed"
    q.resolve("d-0", 2, "ana", note="n")
    assert q.record_outcome("d-1", 1) == "case"
    assert q.record_outcome("never-routed", 1) == "external"
    assert [o["decision_id"] for o in q.outcomes(include_external=True)] == [
        "d-0",
        "d-1",
        "never-routed",
    ]
    assert q.counts()["*"] == {"pending": 2, "claimed": 0, "resolved": 2}
    summary = q.summary()
    assert summary["resolved_today"] == 2
    assert q.integrity_check() == "ok"  # type: ignore[attr-defined]
    assert [c["decision_id"] for c in q.pending(reason="empty_set")] == []
