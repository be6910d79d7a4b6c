"""The fit/calibration split and the learned numeric ranges of the tabular guards."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import describe
from safepredict.config import GuardConfig
from safepredict.exceptions import ConfigError
from safepredict.guards.values import is_number
from safepredict.ood import MarginalScores

__all__ = [
    "MIN_FIT",
    "WIDE_NET",
    "allow_missing_for",
    "bound",
    "fit_size",
    "json_float",
    "numeric_range",
    "range_bounds",
    "range_threshold",
]

#: Fewest rows the OOD detector and the range calibration fit on.
MIN_FIT = 20


def fit_size(n: int, config: GuardConfig) -> int:
    """Reference rows that fit the transform and centroids; the rest calibrate.

    Half the rows (at most ``ood_reference_size``); a small reference keeps
    ``1/alpha - 1`` held-out rows when it can (with at least 40 fit rows), so
    that the ranges and the OOD p-values can reach their false-alarm rates.
    """
    n_fit = min((n + 1) // 2, config.ood_reference_size)
    needed = math.ceil(1.0 / min(config.guard_alpha, config.ood_alpha) - 1.0 - 1e-9)
    if n - n_fit < needed:
        n_fit = min(n_fit, max(2 * MIN_FIT, n - needed))
    return n_fit


def range_threshold(
    transform: MarginalScores, held_out: NDArray[np.float64], learned: list[int], alpha: float
) -> float:
    """Split-conformal level ``t`` of the per-row score ``max_j |z_j|`` over learned columns.

    ``t`` is the ``ceil((m + 1)(1 - alpha))``-th smallest of the ``m`` held-out
    scores, so a row exchangeable with the reference exceeds it (some column out
    of range) with probability at most ``alpha``. With too few held-out rows for
    ``alpha`` (``m < 1/alpha - 1``) no finite level has that guarantee: ``inf``
    (the learned ranges are unbounded).
    """
    m = len(held_out)
    rank = math.ceil((m + 1) * (1.0 - alpha) - 1e-9)
    if m == 0 or rank > m:
        return math.inf
    z = transform.transform(held_out)[:, learned]
    scores = np.sort(np.abs(z).max(axis=1))
    return float(scores[rank - 1])


def range_bounds(
    transform: MarginalScores, threshold: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per numeric column, the values whose normal score is ``-t`` and ``+t``."""
    d = len(transform.n_knots)
    if math.isinf(threshold):
        return np.full(d, -np.inf), np.full(d, np.inf)
    low = transform.inverse(np.full(d, -threshold))
    high = transform.inverse(np.full(d, threshold))
    # widen by far more than the inverse's rounding, so that a value whose score is
    # exactly t (common in discrete columns) stays in range, as the score says
    return low - 1e-9 * np.maximum(np.abs(low), 1.0), high + 1e-9 * np.maximum(np.abs(high), 1.0)


def json_float(v: float | None) -> float | str | None:
    """``v`` for JSON: infinity as the string ``"inf"``."""
    if v is None or math.isfinite(v):
        return v
    return "inf"


def allow_missing_for(config: GuardConfig, override: Mapping[str, Any], seen: bool) -> bool:
    """Whether a column may be missing: its override, else ``missing_policy``."""
    if "allow_missing" in override:
        return bool(override["allow_missing"])
    if config.missing_policy == "always":
        return True
    if config.missing_policy == "never":
        return False
    return seen


#: The uncalibrated fallback of ``range_method="calibrated"`` on a small reference.
WIDE_NET = GuardConfig(range_method="minmax", range_margin=1.0)


def numeric_range(values: NDArray[np.float64], config: GuardConfig) -> tuple[float, float]:
    """The ``minmax`` / ``quantile`` range of a column, widened by ``range_margin``."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return -math.inf, math.inf
    if config.range_method == "quantile":
        lo, hi = (float(v) for v in np.quantile(finite, config.range_quantiles))
    else:
        lo, hi = float(finite.min()), float(finite.max())
    pad = config.range_margin * (hi - lo)
    return lo - pad, hi + pad


def bound(value: Any, column: str, key: str) -> float | None:
    """A ``min``/``max`` override as a float (``None``: unbounded)."""
    if value is None:
        return None
    if isinstance(value, bool) or not is_number(value):
        raise ConfigError(
            f"[guards.columns.{column}] {key} must be a number; got {describe(value)}."
        )
    v = float(value)
    return None if math.isinf(v) else v
