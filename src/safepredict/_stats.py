"""Binomial statistics shared by tiers, evaluation, the monitor and the console (layer 0).

One home for the exact binomial test behind certified ``max_error`` tiers, the
Clopper-Pearson interval (one- or two-sided, scalar) and the vectorized Wilson /
Clopper-Pearson intervals the reports draw.

References
----------
Clopper, C. J. and Pearson, E. S. (1934). The use of confidence or fiducial limits
illustrated in the case of the binomial. *Biometrika* 26(4), 404-413.

Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
inference. *JASA* 22(158), 209-212.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from safepredict._validation import check_fraction, check_one_of

__all__ = ["binomial_interval", "binomial_p_value", "clopper_pearson", "rows_needed"]


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
