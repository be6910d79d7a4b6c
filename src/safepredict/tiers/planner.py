"""Calibration planning: how many labelled rows certify a ``max_error`` tier.

:func:`certification_power` simulates :func:`~safepredict.tiers.certify_threshold`
(its exact grid, p-values and fallback weights) on a stated error model;
:func:`plan_calibration` searches the smallest calibration size whose power
reaches the target.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import special

from safepredict._binomial import rows_needed
from safepredict._validation import check_one_of
from safepredict.exceptions import ConfigError
from safepredict.tier_config import CERTIFICATION_TESTS
from safepredict.tiers.certify import anchor_weights, threshold_grid

__all__ = ["certification_power", "plan_calibration"]


def _grid_counts(
    n: int, max_error: float, delta: float, n_steps: int = 50
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Accepted counts and delta shares of the :func:`certify_threshold` grid on ``n`` rows."""
    accepts = np.arange(1, n + 1, dtype=np.intp)
    keys = np.zeros((n, 1))
    start = rows_needed(max_error, delta * 0.25)
    _, counts = threshold_grid(keys, accepts, start, n_steps)
    weights = anchor_weights(counts, 0.25, 2.0)
    if len(counts) == 0 or weights[0] == 1.0:
        _, counts = threshold_grid(keys, accepts, rows_needed(max_error, delta), n_steps)
        weights = np.zeros(len(counts))
        weights[:1] = 1.0
    return counts, weights * delta


def certification_power(
    n: int,
    *,
    max_error: float,
    delta: float,
    expected_error: float,
    target_accept: float,
    n_sim: int = 2000,
    seed: int = 0,
    test: str = "randomized",
) -> float:
    """Probability that ``n`` calibration rows certify a tier at ``target_accept``.

    The model the planner assumes: the ``target_accept * n`` best-ranked rows
    are wrong independently with probability ``expected_error``, the rows below
    them are all wrong (nothing beyond the target can be certified). Success:
    :func:`certify_threshold` certifies a threshold accepting at least 90% of
    the target rows (of the largest grid candidate within them, when the grid
    is coarser than that). Monte Carlo over ``n_sim`` draws of the errors, run with
    the exact grid, p-values (``test``: randomized or conservative, as
    :data:`~safepredict.tier_config.CERTIFICATION_TESTS`) and fallback weights of
    :func:`certify_threshold` (vectorized over the draws); seeded, so the answer
    is reproducible.

    Examples
    --------
    >>> p = certification_power(1000, max_error=0.05, delta=0.1, expected_error=0.02,
    ...                         target_accept=0.8)
    >>> p > 0.9
    True
    """
    check_one_of(test, "test", CERTIFICATION_TESTS)
    band = math.floor(target_accept * n)
    if band < 1:
        return 0.0
    counts, levels = _grid_counts(n, max_error, delta)
    counts = counts[counts <= band]
    levels = levels[: len(counts)]
    if len(counts) == 0:
        return 0.0
    goal = 0.9 * min(band, int(counts[-1]) / 0.9)
    rng = np.random.default_rng(seed)
    steps = np.diff(np.concatenate([[0], counts]))
    k = np.cumsum(rng.binomial(steps, expected_error, size=(n_sim, len(counts))), axis=1)
    p = np.empty(k.shape)
    u = rng.uniform(size=k.shape) if test == "randomized" else None
    for j, c in enumerate(counts.tolist()):  # CDF table per grid point, looked up per draw
        table = np.concatenate(
            [[0.0], special.bdtr(np.arange(int(k[:, j].max()) + 1), c, max_error)]
        )
        if u is None:
            p[:, j] = table[k[:, j] + 1]
        else:  # P(B < k) + U * P(B = k)
            below, upto = table[k[:, j]], table[k[:, j] + 1]
            p[:, j] = below + u[:, j] * (upto - below)
    best = np.zeros(n_sim, dtype=np.intp)
    carry = np.zeros(n_sim)
    for j in range(len(counts)):
        level = levels[j] + carry
        rejected = p[:, j] <= level
        best = np.where(rejected, counts[j], best)
        carry = np.where(rejected, level, 0.0)
    return float(np.mean(best >= goal))


def plan_calibration(
    *,
    max_error: float,
    delta: float,
    expected_error: float,
    target_accept: float,
    power: float = 0.9,
    test: str = "randomized",
) -> int:
    """Labelled calibration rows needed to certify a ``max_error`` tier with probability ``power``.

    The smallest ``n`` at which a tier whose accepted rows are wrong at rate
    ``expected_error``, accepting a share ``target_accept`` of the rows that
    reach it, is certified (at 90% or more of that acceptance) with probability
    at least ``power`` (:func:`certification_power`; binary search over ``n``).
    Use the ``delta`` share the tier gets (``delta / m`` with ``m`` risk
    tiers, and divided again by the classes or groups of a ``per_class`` /
    ``group_by`` tier), and divide ``target_accept`` by the share of rows
    reaching the tier when earlier tiers take some.

    Parameters
    ----------
    max_error : float
        The tier's ``max_error``, in (0, 1).
    delta : float
        Its share of ``delta``, in (0, 1).
    expected_error : float
        The error rate expected among the accepted rows, in [0, max_error).
    target_accept : float
        The share of rows the tier should accept, in (0, 1].
    power : float, default=0.9
        Wanted probability of certifying, in (0, 1).
    test : {"randomized", "conservative"}, default="randomized"
        The binomial test the tier's certification runs (the policy's
        ``certification_test``).

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        If an argument is out of range, or ``expected_error >= max_error``
        (no calibration size certifies that).

    Examples
    --------
    >>> plan_calibration(max_error=0.05, delta=0.1, expected_error=0.02, target_accept=0.8)
    787
    """
    for name, value, low_open in (
        ("max_error", max_error, True),
        ("delta", delta, True),
        ("target_accept", target_accept, True),
        ("power", power, True),
        ("expected_error", expected_error, False),
    ):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (value > 0 if low_open else value >= 0) and value <= 1
        ok = ok and not (name in ("max_error", "delta", "power") and value >= 1)
        if not ok:
            raise ConfigError(
                f"plan_calibration: {name} must be a number in "
                f"{'(0' if low_open else '[0'}, 1{']' if name == 'target_accept' else ')'}; "
                f"got {value!r}."
            )
    check_one_of(test, "test", CERTIFICATION_TESTS, where="plan_calibration: ")
    if expected_error >= max_error:
        raise ConfigError(
            f"plan_calibration: expected_error={expected_error} is not below "
            f"max_error={max_error}; no number of calibration rows certifies a tier whose "
            "accepted rows are that often wrong. Lower target_accept (so the accepted rows are "
            "more accurate) or raise max_error."
        )

    def enough(n: int) -> bool:
        return (
            certification_power(
                n,
                max_error=max_error,
                delta=delta,
                expected_error=expected_error,
                target_accept=target_accept,
                test=test,
            )
            >= power
        )

    lo = max(1, math.ceil(rows_needed(max_error, delta) / target_accept) - 1)
    hi = lo + 1
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > 10**7:
            raise ConfigError(
                "plan_calibration: more than 10,000,000 rows would be needed; raise max_error "
                "or delta, or lower power."
            )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi
