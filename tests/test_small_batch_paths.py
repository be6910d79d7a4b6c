"""Plain-Python twins of vectorized steps agree with them bit for bit.

Single-row ``decide`` takes plain-Python paths for a few rows where numpy's per-call
cost dominates: the absolute conformal interval and the regression output contract
(the tier rule, LAC sets and the collapsed-interval check have their own tests).
Generated values include signed zeros, subnormals, huge magnitudes, ``inf`` and
``nan``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from safepredict.conformal.regression import RegressionConformal
from safepredict.model import check_output
from safepredict.pipeline import SMALL_BATCH, score

anything = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
rows = st.lists(anything, min_size=0, max_size=8)


@settings(max_examples=300, deadline=None)
@given(y=rows, q=st.floats(0, 1e308, allow_subnormal=True))
def test_absolute_interval_rows_equal_the_vectorized_interval(y: list[float], q: float) -> None:
    rc = RegressionConformal("absolute", 0.9, np.array([q]), q)
    y_pred = np.array(y, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = rc.interval(None, y_pred)
    got = np.array(rc.absolute_interval_rows(y), dtype=np.float64).reshape(len(y), 2)
    assert got.shape == expected.shape == (len(y), 2)
    # bit for bit (nan == nan here, and -0.0 differs from 0.0)
    assert got.tobytes() == expected.tobytes()


@settings(max_examples=300, deadline=None)
@given(y=rows)
def test_the_small_regression_contract_check_equals_the_vectorized_one(y: list[float]) -> None:
    out = np.array(y, dtype=np.float64)
    small = check_output(out, "regression")
    big = check_output(np.tile(out, 70), "regression")  # past the plain-Python size
    assert small.dtype == big.dtype == np.bool_
    assert small.tolist() == big[: len(y)].tolist()
    assert small.tolist() == [not np.isfinite(v) for v in y]


@settings(max_examples=300, deadline=None)
@given(y=rows, q=st.floats(0, 1e308, allow_subnormal=True))
def test_small_regression_scoring_equals_the_vectorized_scoring(y: list[float], q: float) -> None:
    """``score``'s small absolute path gives each row what the batch path gives it."""
    rc = RegressionConformal("absolute", 0.9, np.array([q]), q)
    n = len(y)
    failed = np.array([not np.isfinite(v) for v in y], dtype=bool)  # the contract's rule
    small_y = np.where(failed, np.nan, np.array(y, dtype=np.float64).reshape(n))  # as run_model
    big_y = np.tile(small_y, SMALL_BATCH + 1)  # past the small-batch size
    small = score("regression", rc, None, small_y, failed)
    big = score("regression", rc, None, big_y, np.tile(failed, SMALL_BATCH + 1))
    assert small.intervals is not None
    assert big.intervals is not None
    assert small.intervals.tobytes() == big.intervals[:n].tobytes()
    assert small.inputs.width is not None
    assert big.inputs.width is not None
    assert small.inputs.width.tobytes() == big.inputs.width[:n].tobytes()
    ranks = small.inputs.scores["conformal"], big.inputs.scores["conformal"]
    assert ranks[0].tobytes() == ranks[1][:n].tobytes()
    assert small.raised.tolist() == big.raised[:n].tolist()
    assert small.collapsed.tolist() == big.collapsed[:n].tolist()
    assert small.any_failed == (big.any_failed and n > 0)
