"""Exact binomial tests and intervals shared by the whole library (layer 0).

One home for the binomial tests behind certified ``max_error`` tiers (the
conservative p-value, the randomized one and its confidence bound, and the
fewest rows that can certify), the Clopper-Pearson interval (one- or two-sided,
scalar) and the vectorized Wilson / Clopper-Pearson intervals the reports draw.
The confidence sequences behind tier health live in :mod:`safepredict._stats`.

References
----------
Clopper, C. J. and Pearson, E. S. (1934). The use of confidence or fiducial limits
illustrated in the case of the binomial. *Biometrika* 26(4), 404-413.

Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
inference. *JASA* 22(158), 209-212.

Lehmann, E. L. and Romano, J. P. (2005). *Testing Statistical Hypotheses*, 3rd ed.,
Springer, sec. 3.4 (the randomized uniformly most powerful one-sided binomial test).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

from safepredict._validation import check_fraction, check_one_of

__all__ = [
    "binomial_interval",
    "binomial_p_value",
    "clopper_pearson",
    "randomized_binomial_p_value",
    "randomized_upper_bound",
    "rows_needed",
]


def rows_needed(max_error: float, delta: float) -> int:
    """Fewest accepted calibration rows that can certify ``max_error`` at ``delta``.

    Even with zero observed errors, ``n`` accepted rows only certify an error
    rate ``a`` when ``P(0 errors | rate a) = (1 - a) ** n <= delta``, i.e.
    ``n >= log(delta) / log(1 - a)``.

    Examples
    --------
    >>> rows_needed(0.05, 0.1)
    45
    >>> rows_needed(0.02, 0.05)
    149
    """
    return math.ceil(math.log(delta) / math.log1p(-max_error) - 1e-12)


def binomial_p_value(
    n_errors: NDArray[np.int64] | int, n: NDArray[np.int64] | int, max_error: float
) -> NDArray[np.float64]:
    """Exact p-value of ``H0: error rate > max_error`` after ``n_errors`` in ``n`` rows.

    ``P(Binomial(n, max_error) <= n_errors)``: small when so few errors would be
    unlikely if the true error rate exceeded ``max_error``. ``n = 0`` gives 1.

    Examples
    --------
    >>> float(binomial_p_value(0, 45, 0.05)) <= 0.1
    True
    >>> float(binomial_p_value(0, 44, 0.05)) <= 0.1
    False
    """
    return np.asarray(stats.binom.cdf(n_errors, n, max_error), dtype=np.float64)


def randomized_binomial_p_value(
    n_errors: NDArray[np.int64] | int,
    n: NDArray[np.int64] | int,
    max_error: float,
    u: NDArray[np.float64] | float,
) -> NDArray[np.float64]:
    """Randomized exact p-value of ``H0: error rate > max_error`` (the UMP binomial test).

    ``P(B < k) + u * P(B = k)`` for ``B ~ Binomial(n, max_error)``, ``k = n_errors``
    errors and ``u`` uniform on [0, 1) drawn independently of the data. At the
    boundary ``rate = max_error`` it is exactly uniform (the non-randomized
    :func:`binomial_p_value` is conservative there: the binomial is discrete), so
    ``P(p <= level) <= level`` under ``H0`` with equality at the boundary, and it
    is never larger than :func:`binomial_p_value`: a test on it rejects whenever
    the conservative one does, and more often (Lehmann and Romano, *Testing
    Statistical Hypotheses*, 3rd ed., sec. 3.4: the randomized test is uniformly
    most powerful for a one-sided binomial hypothesis).

    Examples
    --------
    >>> conservative = float(binomial_p_value(0, 45, 0.05))
    >>> abs(float(randomized_binomial_p_value(0, 45, 0.05, 1.0)) - conservative) < 1e-12
    True
    >>> abs(float(randomized_binomial_p_value(1, 45, 0.05, 0.0)) - conservative) < 1e-12
    True
    """
    k = np.asarray(n_errors)
    below = stats.binom.cdf(k - 1, n, max_error)
    at = stats.binom.pmf(k, n, max_error)
    return np.asarray(below + np.asarray(u, dtype=np.float64) * at, dtype=np.float64)


def randomized_upper_bound(k: int, n: int, u: float, level: float) -> float:
    """One-sided ``level`` upper confidence bound of the randomized binomial test.

    The error rate ``a`` at which :func:`randomized_binomial_p_value` of ``k``
    errors in ``n`` rows (with the draw ``u``) equals ``1 - level``: the
    randomized counterpart of the Clopper-Pearson bound (equal to it at
    ``u = 1``), so a rate the test rejects at ``1 - level`` lies above it.

    Examples
    --------
    >>> cp = clopper_pearson(0, 45, 0.9)[1]
    >>> abs(randomized_upper_bound(0, 45, 1.0, 0.9) - cp) < 1e-9
    True
    >>> randomized_upper_bound(0, 45, 0.5, 0.9) < clopper_pearson(0, 45, 0.9)[1]
    True
    """
    if n <= 0 or (k >= n and u >= 1.0):
        return 1.0
    alpha = 1.0 - level

    def excess(a: float) -> float:
        return float(randomized_binomial_p_value(k, n, a, u)) - alpha

    if excess(1e-12) <= 0.0:  # even a zero rate is rejected: no errors and a tiny draw
        return 0.0
    if excess(1.0 - 1e-12) >= 0.0:
        return 1.0
    return float(optimize.brentq(excess, 1e-12, 1.0 - 1e-12, xtol=1e-12))


def clopper_pearson(
    k: int, n: int, level: float, *, two_sided: bool = False
) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) confidence interval for a proportion.

    Parameters
    ----------
    k, n : int
        Successes and trials.
    level : float
        Confidence level, e.g. ``0.95``.
    two_sided : bool, default=False
        One-sided upper bound (lower is 0) or a two-sided interval.

    Examples
    --------
    >>> lo, hi = clopper_pearson(0, 45, 0.9)
    >>> lo, round(hi, 4)
    (0.0, 0.0499)
    """
    if n <= 0:
        return 0.0, 1.0
    tail = (1.0 - level) / 2.0 if two_sided else 1.0 - level
    hi = 1.0 if k >= n else float(stats.beta.ppf(1.0 - tail, k + 1, n - k))
    lo = 0.0 if (k <= 0 or not two_sided) else float(stats.beta.ppf(tail, k, n - k + 1))
    return lo, hi


def binomial_interval(
    n_errors: ArrayLike,
    n: ArrayLike,
    *,
    confidence: float = 0.95,
    method: str = "wilson",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided confidence interval of an error rate, elementwise.

    Parameters
    ----------
    n_errors, n : array-like of int
        Errors and trials (``n == 0`` gives ``nan`` bounds).
    confidence : float, default=0.95
        Coverage of the interval.
    method : {"wilson", "clopper-pearson"}, default="wilson"
        Wilson score interval or the exact (conservative) Clopper-Pearson one.

    Returns
    -------
    lower, upper : ndarray of float

    Examples
    --------
    >>> lo, hi = binomial_interval([0, 5], [10, 10], method="clopper-pearson")
    >>> lo.round(3).tolist(), hi.round(3).tolist()
    ([0.0, 0.187], [0.308, 0.813])
    """
    check_fraction(confidence, "confidence")
    check_one_of(method, "method", ("wilson", "clopper-pearson"))
    e = np.asarray(n_errors, dtype=np.float64)
    k = np.asarray(n, dtype=np.float64)
    alpha = 1.0 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "wilson":
            z = float(stats.norm.ppf(1 - alpha / 2))
            p = e / k
            denom = 1 + z * z / k
            center = (p + z * z / (2 * k)) / denom
            half = z / denom * np.sqrt(p * (1 - p) / k + z * z / (4 * k * k))
            lower, upper = np.clip(center - half, 0, 1), np.clip(center + half, 0, 1)
        else:
            lower = np.where(e > 0, stats.beta.ppf(alpha / 2, e, k - e + 1), 0.0)
            upper = np.where(e < k, stats.beta.ppf(1 - alpha / 2, e + 1, k - e), 1.0)
    empty = k <= 0
    lower = np.where(empty, np.nan, lower)
    upper = np.where(empty, np.nan, upper)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


# --------------------------------------------------------------------------
# Anytime-valid betting confidence sequence for an error rate, IPW-weighted.
#
# Audited outcomes e_i in {0, 1} arrive one by one; row i was audited with a known
# probability pi_i, so w_i = 1 / pi_i and u_i = w_i / max_weight lies in (0, 1].
# For a candidate error rate m the capital processes
#     K+_t(m) = prod_i (1 + lam+_i(m) u_i (e_i - m)),
#     K-_t(m) = prod_i (1 - lam-_i(m) u_i (e_i - m))
# are nonnegative martingales when the weighted mean error is m, because
# E[u (e - m) | past] = 0 for the inverse-probability-weighted target (the audited
# rows are tilted by pi; the weight undoes the tilt).  The bets lam_i are
# *predictable*: they use only outcomes before i (never u_i), which is what makes
# the product a martingale.  Ville's inequality then gives
#     P(exists t: max(K+_t, K-_t) / 2 >= 1 / delta) <= delta,
# so {m : K+_t(m) < 2 / delta and K-_t(m) < 2 / delta} covers the true rate at all
# times simultaneously (the hedged capital process of Waudby-Smith & Ramdas 2024,
# theta = 1/2, with their aGRAPA bets, lam = mean(z) / mean(z^2) of the past
# increments z = u (e - m), clipped to [0, c / m] resp. [0, c / (1 - m)], c = 1/2).
# With lam+ >= 0, K+(m) is a supermartingale whenever the rate is <= m, so the alarm
# "K+(max_error) >= 2 / delta" is a level delta / 2 sequential test of "rate <=
# max_error", exact at max_error. The bounds are read off a grid and rounded
# outwards: lower = end of the run of rejected rates starting at 0, upper = start
# of the run of rejected rates ending at 1.
# --------------------------------------------------------------------------
