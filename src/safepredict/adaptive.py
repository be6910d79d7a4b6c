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
realized error among the accepted rows; with sampling it is its Hajek estimate,
which differs from it by sampling noise of order ``1 / sqrt(audited rows)``. What
it does *not* give: the calibration-time Learn-then-Test certificate (error
``<= max_error`` with probability ``1 - delta`` for the rows of any stretch of
time); the guarantee is on the long-run average only, and a tier whose threshold
rises above every score stops accepting (and so stops learning) until it is
recalibrated.

References
----------
Gibbs, I. and Candes, E. (2021). Adaptive conformal inference under distribution
shift. *NeurIPS* 34.

Feldman, S., Ringel, L., Bates, S. and Romano, Y. (2023). Achieving risk control in
online learning settings. *TMLR*.

Examples
--------
>>> path = threshold_path([0, 0, 1, 0], start=0.8, max_error=0.1, step=0.05)
>>> [round(float(t), 4) for t in path]
[0.8, 0.795, 0.79, 0.835, 0.83]
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict._validation import check_fraction
from safepredict.exceptions import ConfigError

__all__ = ["long_run_bound", "threshold_path"]


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
