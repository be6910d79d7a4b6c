"""The two tier-assignment paths agree: row by row (a few rows) and vectorized.

``assign_tiers`` evaluates a policy without ``max_error`` tiers in plain Python for
batches of at most ``SMALL_BATCH`` rows (single-row ``decide`` latency); the same
rows repeated past ``SMALL_BATCH`` take the vectorized path. Both read the
condition table ``CONDITIONS``; this property test checks they never disagree,
over generated policies, missing columns and ``nan``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from safepredict.config import Tier, TierPolicy
from safepredict.tiers.assign import SMALL_BATCH, assign_tiers
from safepredict.tiers.state import TierInputs

values = st.one_of(st.floats(0, 1), st.just(float("nan")))
maybe = st.one_of(st.none(), st.floats(0, 1))


@st.composite
def tiers(draw: st.DrawFn, index: int) -> Tier:
    return Tier(
        f"t{index}",
        draw(st.sampled_from(["accept", "review", "abstain"])),
        min_confidence=draw(maybe),
        min_credibility=draw(maybe),
        max_set_size=draw(st.one_of(st.none(), st.integers(1, 3))),
        max_interval_width=draw(st.one_of(st.none(), st.floats(0.01, 5))),
    )


@st.composite
def policies(draw: st.DrawFn) -> TierPolicy:
    k = draw(st.integers(1, 4))
    body = [draw(tiers(i)) for i in range(k)]
    return TierPolicy((*body, Tier("fallback", "abstain")))


@st.composite
def tier_inputs(draw: st.DrawFn) -> TierInputs:
    n = draw(st.integers(0, SMALL_BATCH))
    task = draw(st.sampled_from(["classification", "regression"]))
    col = st.lists(values, min_size=n, max_size=n)
    confidence = np.array(draw(col), dtype=np.float64)
    if task == "classification":
        sizes = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=np.intp)
        credibility = draw(st.one_of(st.none(), col.map(lambda v: np.array(v, dtype=float))))
        return TierInputs(task, confidence, set_size=sizes, credibility=credibility)
    widths = np.array(
        draw(st.lists(st.one_of(st.floats(0, 10), st.just(np.nan)), min_size=n, max_size=n))
    )
    return TierInputs(task, confidence, width=widths)


def _repeated(inputs: TierInputs, times: int) -> TierInputs:
    def rep(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.tile(a, times)

    return TierInputs(
        inputs.task,
        rep(inputs.confidence),
        set_size=rep(inputs.set_size),
        width=rep(inputs.width),
        credibility=rep(inputs.credibility),
    )


@settings(max_examples=400, deadline=None)
@given(policy=policies(), inputs=tier_inputs())
def test_row_and_column_paths_assign_the_same_tiers(policy: TierPolicy, inputs: TierInputs) -> None:
    n = len(inputs)
    codes, reasons = assign_tiers(policy, inputs)  # n <= SMALL_BATCH: row by row
    times = SMALL_BATCH // max(n, 1) + 1
    big_codes, big_reasons = assign_tiers(policy, _repeated(inputs, times))  # vectorized
    assert len(big_codes) == n * times
    assert codes.dtype == big_codes.dtype
    assert codes.tolist() == big_codes[:n].tolist()
    assert reasons == {row: r for row, r in big_reasons.items() if row < n}


def test_the_row_path_fails_closed_without_credibility() -> None:
    policy = TierPolicy.default("classification")  # auto needs min_credibility 0.1
    inputs = TierInputs("classification", np.array([0.99]), set_size=np.array([1]))
    codes, _ = assign_tiers(policy, inputs)
    assert codes.tolist() == [len(policy.tiers) - 1]
