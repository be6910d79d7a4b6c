"""Adaptive ``max_error`` thresholds: an online update from arriving audit outcomes.

With ``adapt = true`` a ``max_error`` tier's acceptance threshold ``tau`` (on its
score, accept when ``score >= tau``) moves after every audited outcome of a row it
accepted, in the style of adaptive conformal inference (Gibbs & Candes 2021) and
rolling risk control (Feldman et al. 2023)::

    tau <- max(lower, tau + step * w * (error - max_error))

where ``w = 1 / audit probability`` of the row. A wrong accepted row raises the
threshold by ``step * w * (1 - max_error)``; a right one lowers it by
``step * w * max_error``. The threshold path is a pure function of the ordered
outcome log, so it can be replayed and audited.

Long-run guarantee (deterministic, under arbitrary drift). Summing the updates,
``tau_T >= tau_0 + step * sum_i w_i (e_i - max_error)``, and ``tau`` can only rise
while rows are accepted, so when each outcome arrives before the next audited row
of the tier is decided, ``tau_T <= max_score + step * max_weight``. Hence the
weighted error among accepted rows satisfies ::

    sum_i w_i e_i / sum_i w_i <= max_error + (max_score + step * max_weight - tau_0)
                                            / (step * sum_i w_i)

(:func:`long_run_bound`). With every accepted row audited (``w = 1``) this is the
realized error among the accepted rows.

Realized error under audit sampling (with probability ``1 - delta``). Audits are
Bernoulli draws ``A_t`` with known probabilities ``pi_t >= pi_min``, decided
before the outcome and independently of it. Over the ``n`` accepted rows
(``a_t = 1``) with errors ``e_t``, whether audited or not, ::

    sum_t a_t (e_t - max_error) = sum_audited w_i (e_i - max_error) + S_n,
    S_n = sum_t a_t (1 - A_t / pi_t) (e_t - max_error),

and the first sum is at most ``C = (max_score + step * max_weight - tau_0) / step``
by the argument above. ``S_n`` is a martingale with increments at most
``b = max(1 - max_error, (max_weight - 1) * max_error)`` and conditional variances
summing to ``V_n <= (max_weight - 1) * sum_t a_t (e_t - max_error)^2``, which for
0/1 errors is ``(max_weight - 1) * n * ((1 - 2 max_error) R + max_error^2)`` with
``R`` the realized error. Freedman's inequality in its time-uniform form
(:func:`safepredict._stats.freedman_lines`: ``S_n <= s_k V_n + c_k`` for all ``n``
and every line ``k``, with probability ``1 - delta``) then gives, solving for ``R``
with ``q_k = s_k (max_weight - 1)``::

    R <= min_k (max_error + C / n + q_k max_error^2 + c_k / n) / (1 - q_k (1 - 2 max_error))

(:func:`realized_error_bound`): the realized error among *all* accepted rows is at
most ``max_error`` plus the deterministic term ``C / n`` plus a sampling term of
order ``sqrt(2 (max_weight - 1) max_error log(K / delta) / n)``. What it does
*not* give: the calibration-time Learn-then-Test certificate (error ``<=
max_error`` with probability ``1 - delta`` for the rows of any stretch of time);
the guarantee is on the long-run average only, and a tier whose threshold rises
above every score stops accepting (and so stops learning) until it is
recalibrated.

References
----------
Gibbs, I. and Candes, E. (2021). Adaptive conformal inference under distribution
shift. *NeurIPS* 34.

Feldman, S., Ringel, L., Bates, S. and Romano, Y. (2023). Achieving risk control in
online learning settings. *TMLR*.

Freedman, D. A. (1975). On tail probabilities for martingales. *Annals of
Probability* 3(1), 100-118.

Examples
--------
>>> path = threshold_path([0, 0, 1, 0], start=0.8, max_error=0.1, step=0.05)
>>> [round(float(t), 4) for t in path]
[0.8, 0.795, 0.79, 0.835, 0.83]
>>> b = realized_error_bound(start=0.8, step=0.01, max_error=0.05, n_accepted=20_000,
...                          min_audit_probability=0.2, delta=0.05)
>>> round(b.deterministic, 4), round(b.sampling, 4), round(b.total, 4)
(0.0013, 0.0124, 0.0637)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict._stats import freedman_lines
from safepredict._validation import check_fraction
from safepredict.exceptions import ConfigError

__all__ = ["RealizedErrorBound", "long_run_bound", "realized_error_bound", "threshold_path"]


def _check_step(step: float) -> float:
    if isinstance(step, bool) or not isinstance(step, int | float) or not (0 < step < math.inf):
        raise ConfigError(f"step must be a finite number > 0 (e.g. 0.01); got {step!r}.")
    return float(step)


def threshold_path(
    errors: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    start: float,
    max_error: float,
    step: float = 0.01,
    lower: float = 0.0,
) -> NDArray[np.float64]:
    """The threshold after each outcome, replayed from the ordered outcome log.

    Parameters
    ----------
    errors : array-like of {0, 1}
        Outcomes of accepted, audited rows of the tier in arrival order.
    weights : array-like, optional
        ``1 / audit probability`` per outcome (default 1).
    start : float
        The threshold certified at calibration (``tau_0``); one below ``lower``
        (a tier certified to accept every row) starts at ``lower``.
    max_error : float
        The tier's target error rate.
    step : float, default=0.01
        Learning rate ``step``.
    lower : float, default=0.0
        The threshold never goes below this (the smallest possible score).

    Returns
    -------
    ndarray of shape (n + 1,)
        ``tau_0, tau_1, ..., tau_n``.
    """
    check_fraction(max_error, "max_error")
    gamma = _check_step(step)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size and not np.all((e == 0) | (e == 1)):
        raise ConfigError("errors must be 0/1 (1 = the accepted row was wrong).")
    w = np.ones_like(e) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != e.shape or (w.size and (not np.all(np.isfinite(w)) or float(w.min()) < 1)):
        raise ConfigError(
            f"weights must be one 1 / audit probability (>= 1) per outcome; got {w.size} "
            f"weights for {e.size} outcomes."
        )
    out = np.empty(e.size + 1)
    tau = out[0] = max(float(lower), float(start))
    for i, delta_tau in enumerate((gamma * w * (e - max_error)).tolist()):
        tau = max(lower, tau + delta_tau)
        out[i + 1] = tau
    return out


def long_run_bound(
    *,
    start: float,
    step: float,
    total_weight: float,
    max_score: float = 1.0,
    max_weight: float = 1.0,
) -> float:
    """Excess of the weighted error among accepted rows over ``max_error``, at most.

    ``(max_score + step * max_weight - start) / (step * total_weight)`` where
    ``total_weight = sum_i w_i`` over the outcomes seen (their count when every
    accepted row is audited).

    Examples
    --------
    >>> long_run_bound(start=0.8, step=0.01, total_weight=2000)
    0.0105
    """
    gamma = _check_step(step)
    if total_weight <= 0:
        return math.inf
    start = max(0.0, float(start))  # an accept-every-row certificate starts at the lowest score
    return (max_score + gamma * max_weight - start) / (gamma * float(total_weight))


class RealizedErrorBound(NamedTuple):
    """The realized-error guarantee of an adaptive tier, split into its two terms.

    Attributes
    ----------
    deterministic : float
        ``C / n``: the excess the threshold update allows whatever the drift
        (:func:`long_run_bound` with the accepted rows as the total weight).
    sampling : float
        What audit sampling adds, with probability ``1 - delta`` (0 when every
        accepted row is audited).
    total : float
        ``max_error + deterministic + sampling``: the bound on the realized error
        among all accepted rows.
    """

    deterministic: float
    sampling: float
    total: float


def realized_error_bound(
    *,
    start: float,
    step: float,
    max_error: float,
    n_accepted: int,
    min_audit_probability: float,
    delta: float = 0.05,
    max_score: float = 1.0,
) -> RealizedErrorBound:
    """Bound on the realized error among *all* accepted rows of an adaptive tier.

    With probability at least ``1 - delta`` over the audit draws, at every point
    of the stream (see the module docstring for the derivation)::

        realized error <= max_error + deterministic + sampling

    provided each audited outcome arrives before the tier's next audited row is
    decided, audits are drawn with probabilities ``>= min_audit_probability``
    fixed before (and independently of) the outcome, and the threshold follows
    :func:`threshold_path` with weights ``1 / audit probability``.

    Parameters
    ----------
    start, step, max_score
        As in :func:`long_run_bound` (``tau_0``, learning rate, largest score).
    max_error : float
        The tier's target error rate.
    n_accepted : int
        Rows the tier accepted over the stream, audited or not.
    min_audit_probability : float
        ``pi_min`` in ``(0, 1]``: the smallest audit probability any accepted row had.
    delta : float, default=0.05
        Probability that the sampling term is exceeded at any time.

    Returns
    -------
    RealizedErrorBound
        ``deterministic``, ``sampling`` and ``total`` (``inf`` before any accepted row).
    """
    check_fraction(max_error, "max_error")
    check_fraction(delta, "delta")
    check_fraction(min_audit_probability, "min_audit_probability", high_open=False)
    w_max = 1.0 / float(min_audit_probability)
    if n_accepted <= 0:
        return RealizedErrorBound(math.inf, math.inf, math.inf)
    n = float(n_accepted)
    det = long_run_bound(start=start, step=step, total_weight=n, max_score=max_score,
                         max_weight=w_max)  # fmt: skip
    if w_max == 1.0:  # every accepted row audited: realized = weighted, no sampling noise
        return RealizedErrorBound(det, 0.0, max_error + det)
    a = float(max_error)
    slopes, intercepts = freedman_lines(delta, bound=max(1.0 - a, (w_max - 1.0) * a))
    q = slopes * (w_max - 1.0)
    den = 1.0 - q * (1.0 - 2.0 * a)
    with np.errstate(divide="ignore", invalid="ignore"):
        totals = np.where(den > 0, (a + det + q * a * a + intercepts / n) / den, np.inf)
    total = float(totals.min())
    return RealizedErrorBound(det, total - a - det, total)
