"""recommend(): the cheapest compared policy meeting the constraints, on generated scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safepredict.evaluation import CostModel, ScoredData, compare_policies, threshold_policies
from safepredict.evaluation.recommend import recommend
from safepredict.exceptions import ConfigError


@pytest.fixture(scope="module")
def data() -> ScoredData:
    rng = np.random.default_rng(7)
    s = rng.uniform(size=4000)
    errors = rng.uniform(size=4000) < 0.4 * (1 - s)  # error rate falls with the score
    return ScoredData.from_arrays(errors, {"conformal": s}, set_size=np.ones(4000, int))


def test_cheapest_policy_meeting_the_constraints(data: ScoredData) -> None:
    grid = [0.1 * k for k in range(1, 10)]
    table = compare_policies(threshold_policies(grid), data, cost=CostModel(50, 2))
    rec = recommend(table.results, max_error=0.1, min_accept=0.2)
    assert rec is not None
    ok = [r for r in table.results if r.accepted_error_upper <= 0.1 and r.coverage >= 0.2]
    assert 1 < len(ok) < len(table.results)  # the constraints bind on both sides
    assert rec.policy == min(ok, key=lambda r: r.cost_per_1000).name
    assert rec.candidates == len(ok)
    chosen = next(r for r in table.results if r.name == rec.policy)
    assert (rec.coverage, rec.cost_per_1000) == (chosen.coverage, chosen.cost_per_1000)
    # Without prices the least human work wins: the largest coverage among those allowed.
    unpriced = compare_policies(threshold_policies(grid), data)
    rec2 = recommend(unpriced.results, max_error=0.08)
    assert rec2 is not None
    allowed = [r for r in unpriced.results if r.accepted_error_upper <= 0.08]
    assert rec2.coverage == max(r.coverage for r in allowed)
    assert math.isnan(rec2.cost_per_1000)


def test_no_policy_meets_impossible_constraints(data: ScoredData) -> None:
    table = compare_policies(threshold_policies([0.5, 0.9]), data)
    assert recommend(table.results, max_error=0.0001) is None
    assert recommend(table.results, min_accept=0.99) is None
    with pytest.raises(ConfigError, match="share between 0 and 1"):
        recommend(table.results, max_error=5)
