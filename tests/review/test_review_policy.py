"""The review keys of the policy TOML reach the queue: reviews_required, review_cost, priority."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from safepredict import ConfigError, Router, SafePredictor, TierPolicy
from safepredict.review import PostgresReviewQueue, SQLiteReviewQueue
from safepredict.review._core import ReviewQueueCore
from safepredict.review.priority import uncertainty

TOML = """
review_priority = "expected_value"
audit_rate = 0.0

[[tiers]]
name = "auto"
action = "accept"
min_confidence = 0.97

[[tiers]]
name = "double"
action = "review"
max_set_size = 2
reviews_required = 2
review_cost = 5.0

[[tiers]]
name = "human"
action = "abstain"
review_cost = 20.0
"""


def test_review_keys_parse_round_trip_and_validate() -> None:
    policy = TierPolicy.from_toml(TOML)
    assert policy.review_priority == "expected_value"
    assert policy.tiers[1].reviews_required == 2
    assert policy.tiers[2].review_cost == 20.0
    assert TierPolicy.from_dict(policy.to_dict()) == policy
    plain = TierPolicy.from_dict({"tiers": [{"name": "h", "action": "abstain"}]})
    assert "review_priority" not in plain.to_dict()  # defaults keep old policy hashes
    assert "reviews_required" not in plain.to_dict()["tiers"][0]
    with pytest.raises(ConfigError, match="review_priority must be one of"):
        TierPolicy.from_toml(TOML.replace('"expected_value"', '"lifo"'))
    with pytest.raises(ConfigError, match=r"reviews_required must be an integer in \[1, 25\]"):
        TierPolicy.from_toml(TOML.replace("reviews_required = 2", "reviews_required = 0"))
    with pytest.raises(ConfigError, match="review_cost"):
        TierPolicy.from_toml(TOML.replace("review_cost = 5.0", "review_cost = -1.0"))


@pytest.fixture(scope="module")
def fitted() -> tuple[Any, ...]:
    """A 3-class model unsure enough to route rows to both review tiers (fitted once)."""
    X, y = make_classification(
        n_samples=900, n_features=6, n_informative=3, n_classes=3, class_sep=0.7, random_state=0
    )
    X_fit, X_rest, y_fit, y_rest = train_test_split(X, y, test_size=0.6, random_state=0)
    X_cal, X_test, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    return LogisticRegression(max_iter=1000).fit(X_fit, y_fit), X_cal, y_cal, X_test


def test_decide_routes_with_the_policys_reviewers_and_priority(
    make_queue: Callable[..., ReviewQueueCore], fitted: tuple[Any, ...]
) -> None:
    model, X_cal, y_cal, X_test = fitted
    queue = make_queue()
    sp = SafePredictor(model, log="off", tiers=TOML, router=queue)
    sp.calibrate(X_cal, y_cal)
    d = sp.decide(X_test)
    routed = queue.cases()
    assert len(routed) == int((d.actions != "accept").sum()) > 0
    assert {c["tier"] for c in routed} >= {"double", "human"}
    policy = TierPolicy.from_toml(TOML)
    cost = {t.name: t.review_cost or 1.0 for t in policy.tiers}
    required = {t.name: t.reviews_required for t in policy.tiers}
    for case in routed:
        assert case["reviews_required"] == required.get(case["tier"], 1)
        assert case["priority"] == pytest.approx(cost.get(case["tier"], 1.0) * uncertainty(case))
    order = [c["priority"] for c in queue.pending(limit=None)]
    assert order == sorted(order, reverse=True)


def test_router_strings_select_the_backend(tmp_path: object) -> None:
    assert isinstance(Router.coerce("reviews.db").sink, SQLiteReviewQueue)
    sink = Router.coerce("postgresql://reviewer@db.internal:5432/safepredict").sink
    assert isinstance(sink, PostgresReviewQueue)  # connects lazily, on first use
    assert sink.name == "postgres:db.internal/safepredict"
    assert isinstance(Router.coerce("postgres://db.internal/x").sink, PostgresReviewQueue)
    with pytest.raises(ConfigError, match="not a valid PostgreSQL connection string"):
        PostgresReviewQueue("postgresql://host/db?nonsense_option=1")
