"""Confidence sequences shared by the whole library (layer 0).

One home for the anytime-valid betting confidence sequence (with
inverse-probability weights) behind tier health and the time-uniform
martingale bound behind adaptive tiers. The exact binomial tests and intervals
live in :mod:`safepredict._binomial`.

References
----------
Waudby-Smith, I. and Ramdas, A. (2024). Estimating means of bounded random variables
by betting. *JRSS-B* 86(1), 1-27 (arXiv:2010.09686).

Horvitz, D. G. and Thompson, D. J. (1952). A generalization of sampling without
replacement from a finite universe. *JASA* 47(260), 663-685.

Freedman, D. A. (1975). On tail probabilities for martingales. *Annals of
Probability* 3(1), 100-118.

Howard, S. R., Ramdas, A., McAuliffe, J. and Sekhon, J. (2020). Time-uniform
Chernoff bounds via nonnegative supermartingales. *Probability Surveys* 17, 257-317.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict._validation import check_fraction

__all__ = [
    "BettingConfidenceSequence",
    "betting_alarm_times",
    "betting_log_capital",
    "freedman_lines",
]


_TRUNCATION = 0.5  # c in lam+ <= c / m, lam- <= c / (1 - m): each factor stays >= 1 - c.


def _weights_scaled(
    errors: NDArray[np.float64], weights: ArrayLike | None, max_weight: float | None
) -> NDArray[np.float64]:
    """``u = w / max_weight`` in ``(0, 1]``, checked; ones when ``weights`` is None."""
    from safepredict.exceptions import ConfigError

    if weights is None:
        return np.ones_like(errors)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), errors.shape)
    if w.size and (not np.all(np.isfinite(w)) or float(w.min()) < 1.0):
        raise ConfigError(
            "weights must be finite inverse audit probabilities (>= 1, i.e. audit "
            f"probabilities in (0, 1]); got min {float(np.nanmin(w)):.4g}. Pass "
            "1 / audit_probability per outcome."
        )
    top = float(w.max()) if w.size else 1.0
    cap = top if max_weight is None else float(max_weight)
    if cap < top:
        raise ConfigError(
            f"max_weight must bound every weight; got max_weight={cap:.4g} but a weight of "
            f"{top:.4g}. Pass 1 / (the smallest audit probability the policy can use)."
        )
    return np.asarray(w / cap, dtype=np.float64)


def _check_errors(errors: ArrayLike) -> NDArray[np.float64]:
    from safepredict.exceptions import ConfigError

    e = np.asarray(errors, dtype=np.float64)
    if e.ndim == 0:
        e = e.reshape(1)
    if e.size and (not np.all(np.isfinite(e)) or float(e.min()) < 0 or float(e.max()) > 1):
        raise ConfigError(
            "errors must be numbers in [0, 1] (1 = the accepted row was wrong); got values "
            f"in [{float(np.nanmin(e)):.4g}, {float(np.nanmax(e)):.4g}]."
        )
    return e


_PRIOR_SQ = 0.25  # one pseudo-outcome with z^2 = 1/4 keeps the first bets moderate


def _sums(
    e: NDArray[np.float64], u: NDArray[np.float64], state: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Running ``(sum u, sum u e, sum u^2, sum u^2 e, sum u^2 e^2)`` after each step.

    ``state`` (shape ``(..., 5)``) holds the sums before the block; the result has
    shape ``(..., n, 5)``.
    """
    parts = np.stack([u, u * e, u * u, u * u * e, (u * e) ** 2], axis=-1)
    return np.asarray(state[..., None, :] + np.cumsum(parts, axis=-2), dtype=np.float64)


def _log_factors(
    e: NDArray[np.float64],
    u: NDArray[np.float64],
    m: NDArray[np.float64],
    state: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``log(1 + lam+ z)`` and ``log(1 - lam- z)`` with ``z = u (e - m)``, shape ``(..., n, G)``.

    The bets are aGRAPA (WSR 2024, section 5.3): ``lam = mean(z) / mean(z^2)`` of
    the *previous* increments at this ``m`` (computed from running sums, so all
    grid points cost one pass), clipped to ``[0, c / m]`` for the upward process
    and ``[0, c / (1 - m)]`` for the downward one. A process bets only when the
    past points its way, so a good stretch does not dig a hole that a later rise
    must climb out of. Returns the sums after the block too.
    """
    after = _sums(e, u, state)
    before = np.concatenate([state[..., None, :], after[..., :-1, :]], axis=-2)
    su, sue, su2, su2e, su2e2 = (before[..., k, None] for k in range(5))
    s1 = sue - m * su  # sum z
    s2 = su2e2 - 2 * m * su2e + m * m * su2  # sum z^2
    ratio = s1 / (_PRIOR_SQ + s2)
    with np.errstate(divide="ignore"):
        cap_plus = np.where(m > 0, _TRUNCATION / np.where(m > 0, m, 1.0), np.inf)
        cap_minus = np.where(m < 1, _TRUNCATION / np.where(m < 1, 1.0 - m, 1.0), np.inf)
    lam_plus = np.clip(ratio, 0.0, cap_plus)
    lam_minus = np.clip(-ratio, 0.0, cap_minus)
    z = u[..., None] * (e[..., None] - m)
    return np.log1p(lam_plus * z), np.log1p(-lam_minus * z), after[..., -1, :]


def betting_log_capital(
    errors: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    m: ArrayLike,
    max_weight: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Running log-capital of the two betting processes at candidate error rates ``m``.

    Vectorized over leading axes (independent streams) and over ``m``.

    Parameters
    ----------
    errors : array-like of shape (..., n)
        Outcomes in time order: 1 when the audited accepted row was wrong.
    weights : array-like of shape (..., n), optional
        Inverse audit probabilities ``1 / pi_i`` (>= 1). Default: all equal.
    m : array-like of shape (G,)
        Candidate error rates in ``[0, 1]``.
    max_weight : float, optional
        A bound on every weight fixed in advance (``1 / smallest audit rate``).
        Default: the largest weight given.

    Returns
    -------
    log_plus, log_minus : ndarray of shape (..., n, G)
        ``log K+_t(m)`` (grows when the rate is above ``m``) and ``log K-_t(m)``
        (grows when it is below) after each outcome. ``m`` is rejected at time
        ``t`` when either reaches ``log(2 / delta)``.

    Examples
    --------
    >>> lp, lm = betting_log_capital([1, 1, 1, 1, 1, 1, 1, 1], m=[0.1, 0.9])
    >>> bool(lp[-1, 0] > math.log(2 / 0.05)), bool(lp[-1, 1] < 0.5)
    (True, True)
    """
    e = _check_errors(errors)
    u = _weights_scaled(e, weights, max_weight)
    grid = np.atleast_1d(np.asarray(m, dtype=np.float64))
    plus, minus, _ = _log_factors(e, u, grid, np.zeros((*e.shape[:-1], 5)))
    return np.cumsum(plus, axis=-2), np.cumsum(minus, axis=-2)


def betting_alarm_times(
    errors: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    threshold: float,
    delta: float = 0.05,
    max_weight: float | None = None,
) -> NDArray[np.int64]:
    """Number of outcomes after which the anytime-valid lower bound first exceeds ``threshold``.

    An alarm means: the error rate (weighted to all accepted rows) is above
    ``threshold``, and the chance that this is ever said of a stream whose rate
    is at most ``threshold`` is at most ``delta / 2`` (the lower half of a
    two-sided ``1 - delta`` confidence sequence), however often it is checked.

    Parameters
    ----------
    errors, weights, delta, max_weight
        As in :func:`betting_log_capital`.
    threshold : float
        The promised error rate (a tier's ``max_error``).

    Returns
    -------
    ndarray of int, shape (...)
        Per stream, the 1-based count of outcomes at the first alarm, or ``-1``
        if the stream never alarms.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> bad = (rng.random((3, 2000)) < 0.2).astype(float)  # 20% error vs 10% promised
    >>> (betting_alarm_times(bad, threshold=0.1) > 0).tolist()
    [True, True, True]
    """
    check_fraction(delta, "delta")
    lp, _ = betting_log_capital(errors, weights, m=[threshold], max_weight=max_weight)
    hit = lp[..., 0] >= math.log(2.0 / delta)
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), first + 1, -1).astype(np.int64)


class BettingConfidenceSequence:
    """Anytime-valid confidence sequence for an error rate, updated as outcomes arrive.

    Keeps the running log-capital of the hedged betting processes (aGRAPA bets) on
    a grid of candidate rates (Waudby-Smith & Ramdas 2024) with inverse-probability weights
    ``w_i = 1 / pi_i`` so that it covers the error rate of *all* rows the audited
    ones were sampled from (Horvitz & Thompson 1952). With probability at least
    ``1 - delta`` the interval ``[lower, upper]`` contains that rate at every
    time simultaneously, so it may be looked at after every outcome.

    Parameters
    ----------
    delta : float, default=0.05
        Miscoverage allowed over the whole (infinite) stream.
    max_weight : float, default=1.0
        A bound on every weight, fixed in advance: ``1 / smallest audit probability``.
    grid : int, default=1000
        Number of grid cells on ``[0, 1]``; the bounds are outer-rounded to it.
    extra : sequence of float, default=()
        Rates evaluated exactly besides the grid (e.g. a tier's ``max_error``,
        so that :meth:`exceeds` is exact).

    Attributes
    ----------
    n : int
        Outcomes seen.
    estimate : float
        Weighted (Hajek) error estimate ``sum w e / sum w`` (``nan`` before any outcome).
    lower, upper : float
        Current bounds (running intersection over time: they only tighten).

    Examples
    --------
    >>> cs = BettingConfidenceSequence(delta=0.05, extra=[0.05])
    >>> rng = np.random.default_rng(0)
    >>> cs.update((rng.random(3000) < 0.15).astype(float))
    >>> cs.lower < 0.15 < cs.upper, cs.exceeds(0.05)
    (True, True)
    """

    def __init__(
        self,
        delta: float = 0.05,
        *,
        max_weight: float = 1.0,
        grid: int = 1000,
        extra: tuple[float, ...] | list[float] = (),
    ) -> None:
        from safepredict._validation import check_positive_int
        from safepredict.exceptions import ConfigError

        self.delta = check_fraction(delta, "delta")
        if not math.isfinite(max_weight) or max_weight < 1.0:
            raise ConfigError(
                f"max_weight must be a finite number >= 1 (1 / smallest audit probability); "
                f"got {max_weight!r}."
            )
        self.max_weight = float(max_weight)
        check_positive_int(grid, "grid")
        for x in extra:
            check_fraction(x, "extra rate", low_open=False, high_open=False)
        self._m = np.unique(np.concatenate([np.linspace(0.0, 1.0, grid + 1), list(extra)]))
        self._log_plus = np.zeros_like(self._m)
        self._log_minus = np.zeros_like(self._m)
        self._ever_plus = np.zeros(self._m.shape, dtype=bool)
        self._ever_minus = np.zeros(self._m.shape, dtype=bool)
        self._sums = np.zeros(5)
        self._n = 0
        self._sum_w = 0.0
        self._sum_we = 0.0

    @property
    def n(self) -> int:
        """Outcomes seen so far."""
        return self._n

    @property
    def estimate(self) -> float:
        """Weighted (Hajek) error estimate; ``nan`` before any outcome."""
        return self._sum_we / self._sum_w if self._sum_w > 0 else math.nan

    @property
    def lower(self) -> float:
        """End of the run of rates rejected from below, starting at 0 (0 if none)."""
        kept = np.flatnonzero(~self._ever_plus)
        k = int(kept[0]) if len(kept) else len(self._m)
        return float(self._m[k - 1]) if k > 0 else 0.0

    @property
    def upper(self) -> float:
        """Start of the run of rates rejected from above, ending at 1 (1 if none)."""
        kept = np.flatnonzero(~self._ever_minus)
        k = int(kept[-1]) if len(kept) else -1
        return float(self._m[k + 1]) if k + 1 < len(self._m) else 1.0

    def exceeds(self, rate: float) -> bool:
        """Whether the confidence sequence has (ever) put the error rate above ``rate``.

        Exact when ``rate`` is on the grid or was passed in ``extra``; otherwise it
        is judged at the next grid rate above ``rate`` (conservative: the capital
        falls as the rate rises).
        """
        k = int(np.searchsorted(self._m, rate, side="left"))
        return bool(self._ever_plus[min(k, len(self._m) - 1)])

    def update(self, errors: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Add outcomes in arrival order (``weights``: ``1 / audit probability`` each)."""
        e = _check_errors(errors).reshape(-1)
        if e.size == 0:
            return
        w = (
            np.ones_like(e)
            if weights is None
            else np.broadcast_to(np.asarray(weights, dtype=np.float64), e.shape)
        )
        u = _weights_scaled(e, w, self.max_weight)
        threshold = math.log(2.0 / self.delta)
        for start in range(0, e.size, 1024):  # bounded memory: 1024 x grid
            eb, ub = e[start : start + 1024], u[start : start + 1024]
            plus, minus, self._sums = _log_factors(eb, ub, self._m, self._sums)
            lp = self._log_plus + np.cumsum(plus, axis=0)
            lm = self._log_minus + np.cumsum(minus, axis=0)
            self._ever_plus |= (lp >= threshold).any(axis=0)
            self._ever_minus |= (lm >= threshold).any(axis=0)
            self._log_plus, self._log_minus = lp[-1], lm[-1]
        self._n += int(e.size)
        self._sum_w += float(w.sum())
        self._sum_we += float((w * e).sum())


# --------------------------------------------------------------------------
# Freedman / Bennett line-crossing bounds for martingales with bounded increments


def freedman_lines(
    delta: float, *, bound: float, lambdas: ArrayLike | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Slopes and intercepts of time-uniform Freedman bounds on a martingale.

    Let ``S_t = X_1 + ... + X_t`` be a martingale whose increments satisfy
    ``X_i <= bound`` and ``V_t`` the sum of their conditional variances
    ``Var(X_i | past)``. For every ``lam > 0``, ``exp(lam S_t - psi(lam) V_t)`` with
    ``psi(lam) = (exp(lam b) - 1 - lam b) / b^2`` is a nonnegative supermartingale
    (Freedman 1975; Howard et al. 2020, Bennett case), so by Ville's inequality
    and a union bound over the ``K`` values of ``lam``, with probability at least
    ``1 - delta``, at every time ``t`` and for every ``k`` simultaneously::

        S_t <= slope_k * V_t + intercept_k,
        slope_k = psi(lam_k) / lam_k,  intercept_k = log(K / delta) / lam_k.

    The best line depends on ``V_t``; taking the smallest over ``k`` once ``V_t``
    is known keeps the guarantee (the grid is fixed in advance).

    Parameters
    ----------
    delta : float
        Probability, over the whole (infinite) sequence, that any line is crossed.
    bound : float
        ``b > 0``, an upper bound on every increment (no lower bound is needed).
    lambdas : array-like of float > 0, optional
        The ``lam`` grid. Default: ``2 ** -k / b`` for ``k = 0, ..., 15`` (lines for
        ``V_t`` from about 1 to 10^10 within a factor 1.06 of the best single line).

    Returns
    -------
    slopes, intercepts : ndarray of shape (K,)

    Examples
    --------
    >>> slopes, intercepts = freedman_lines(0.05, bound=1.0)
    >>> v = 400.0  # a variance of 400: the bound is about sqrt(2 v log(K / delta))
    >>> round(float((slopes * v + intercepts).min()), 1)
    72.2
    """
    from safepredict.exceptions import ConfigError

    check_fraction(delta, "delta")
    if isinstance(bound, bool) or not (0 < bound < math.inf):
        raise ConfigError(
            f"bound must be a finite number > 0 (an upper bound on every increment); got {bound!r}."
        )
    b = float(bound)
    lam = (
        2.0 ** -np.arange(16) / b
        if lambdas is None
        else np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    )
    if lam.size == 0 or not np.all(np.isfinite(lam)) or float(lam.min()) <= 0:
        raise ConfigError(
            f"lambdas must be finite numbers > 0 (e.g. 2.0 ** -np.arange(16)); got {lam!r}."
        )
    psi = np.expm1(lam * b) - lam * b
    slopes = psi / (b * b * lam)
    intercepts = math.log(lam.size / delta) / lam
    return np.asarray(slopes, dtype=np.float64), np.asarray(intercepts, dtype=np.float64)
