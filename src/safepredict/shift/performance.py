"""Label-free performance estimates: confidence-based, per tier (CBPE-style).

Confidence-based performance estimation (NannyML's CBPE) reads the expected
error of a batch off *calibrated* probabilities: if ``c(x)`` is the probability
that the prediction on ``x`` is right, the expected error rate of rows ``R``
is ``mean_{x in R} (1 - c(x))``. The model's top probability is recalibrated
on the calibration rows first -- isotonic regression of "prediction right" on
the top probability (default), or one temperature for the whole softmax --
because raw probabilities are rarely calibrated.

The interval is the one of the realized error rate around the estimate: the
number of errors among ``n`` rows is Poisson-binomial with variance
``sum c (1 - c)``; the recalibration map, fitted on the ``n_cal`` calibration
rows of the tier, adds about ``e (1 - e) / n_cal`` (the binomial variance of an
error rate ``e`` estimated on them). So the interval is
``e +- z * sqrt(sum c (1 - c) / n^2 + e (1 - e) / n_cal)`` (normal approximation).

Assumption: **no concept shift** -- ``P(correct | x)`` is the same in
production as on the calibration rows. Covariate shift is allowed (that is
what the estimate is for); label shift is allowed only as far as it keeps
``P(correct | top probability)`` (a changed prior generally does not).

References
----------
NannyML documentation, "Confidence-based Performance Estimation (CBPE)",
https://nannyml.readthedocs.io (How it works: estimation of performance).

Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. (2017). On calibration of
modern neural networks. *ICML* (temperature scaling).

Zadrozny, B. and Elkan, C. (2002). Transforming classifier scores into accurate
multiclass probability estimates. *KDD* (isotonic calibration).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from safepredict.exceptions import ConfigError

__all__ = ["ASSUMPTION", "CorrectnessMap", "PerformanceEstimate", "TierEstimate", "estimate_tiers"]

ASSUMPTION = (
    "no concept shift: P(prediction right | inputs) is the same in production as on the "
    "calibration rows; the estimate follows covariate shift, not a change of the labelling rule"
)


@dataclass(frozen=True)
class CorrectnessMap:
    """Calibrated probability that the model's prediction is right.

    Fit with :meth:`fit` on the calibration rows' probabilities and labels.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> top = rng.uniform(0.5, 1.0, size=3000)
    >>> right = rng.uniform(size=3000) < top ** 2          # over-confident model
    >>> proba = np.column_stack([top, 1 - top])
    >>> cmap = CorrectnessMap.fit(proba, np.where(right, 0, 1))
    >>> round(float(cmap.correct(np.array([[0.9, 0.1]]))[0]), 1)
    0.8
    """

    method: str
    model: Any = field(repr=False)

    @classmethod
    def fit(
        cls, proba: NDArray[np.float64], y_index: NDArray[np.intp], method: str = "isotonic"
    ) -> CorrectnessMap:
        """Fit on the calibration rows: ``proba`` ``(n, K)``, labels as class indices."""
        p = np.asarray(proba, dtype=np.float64)
        right = (p.argmax(axis=1) == np.asarray(y_index)).astype(np.float64)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(p.max(axis=1), right)
            return cls("isotonic", iso)
        if method == "temperature":
            logp = np.log(np.clip(p, 1e-12, 1.0))
            y = np.asarray(y_index, dtype=np.intp)

            def nll(log_t: float) -> float:
                z = logp / np.exp(log_t)
                z = z - z.max(axis=1, keepdims=True)
                lse = np.log(np.exp(z).sum(axis=1))
                return float((lse - z[np.arange(len(y)), y]).mean())

            res = optimize.minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
            return cls("temperature", float(np.exp(res.x)))
        raise ConfigError(
            f"recalibration must be 'isotonic' or 'temperature'; got {method!r}. Use "
            "'isotonic' (flexible, needs ~1000 calibration rows) or 'temperature' (one number)."
        )

    def correct(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability that the arg-max prediction of each row is right."""
        p = np.asarray(proba, dtype=np.float64)
        if len(p) == 0:
            return np.zeros(0)
        if self.method == "isotonic":
            return np.asarray(self.model.predict(p.max(axis=1)), dtype=np.float64)
        z = np.log(np.clip(p, 1e-12, 1.0)) / float(self.model)
        z = z - z.max(axis=1, keepdims=True)
        soft = np.exp(z)
        return np.asarray(soft.max(axis=1) / soft.sum(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class TierEstimate:
    """Label-free error estimate of one tier on one batch.

    Attributes
    ----------
    tier : str
    n_rows : int
        Rows of the batch in the tier (with a prediction).
    estimated_error : float or None
        Expected error rate among them (``None`` for no rows).
    interval : tuple of float or None
        ``level`` interval of the realized error rate around the estimate.
    calibration_error : float or None
        The naive estimate: the tier's error rate on the calibration rows.
    """

    tier: str
    n_rows: int
    estimated_error: float | None
    interval: tuple[float, float] | None
    calibration_error: float | None = None


@dataclass(frozen=True)
class PerformanceEstimate:
    """Per-tier label-free error estimates of a batch, with the assumption they rest on.

    Attributes
    ----------
    tiers : dict of str to TierEstimate
    level : float
        Level of the intervals.
    method : str
        Recalibration of the probabilities (``"isotonic"`` or ``"temperature"``).
    assumption : str
        What the estimate assumes (:data:`ASSUMPTION`).
    n_rows : int
        Rows of the batch.
    """

    tiers: dict[str, TierEstimate]
    level: float
    method: str
    assumption: str = ASSUMPTION
    n_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "n_rows": self.n_rows,
            "level": self.level,
            "method": self.method,
            "assumption": self.assumption,
            "tiers": {
                name: {
                    "n_rows": t.n_rows,
                    "estimated_error": t.estimated_error,
                    "interval": None if t.interval is None else list(t.interval),
                    "calibration_error": t.calibration_error,
                }
                for name, t in self.tiers.items()
            },
        }


def estimate_tiers(
    tier_names: Sequence[str],
    codes: NDArray[np.intp],
    correct: NDArray[np.float64],
    *,
    level: float = 0.95,
    calibration_errors: dict[str, float | None] | None = None,
    calibration_rows: dict[str, int] | None = None,
    method: str = "isotonic",
) -> PerformanceEstimate:
    """Per-tier expected error rate and its Poisson-binomial interval.

    Parameters
    ----------
    tier_names : sequence of str
        Name of each tier code.
    codes : ndarray of int, shape (n,)
        Tier code of each row.
    correct : ndarray of shape (n,)
        Calibrated probability that each row's prediction is right (``nan``:
        no prediction; left out).
    calibration_errors, calibration_rows : dict, optional
        Per tier, the error rate and the number of calibration rows in it (the
        naive estimate, and the map's share of the interval).

    Examples
    --------
    >>> est = estimate_tiers(["auto", "human"], np.array([0, 0, 1, 1]),
    ...                      np.array([0.9, 0.7, 0.5, np.nan]))
    >>> round(est.tiers["auto"].estimated_error, 3), est.tiers["human"].n_rows
    (0.2, 1)
    """
    z = float(stats.norm.ppf(0.5 + level / 2))
    ok = np.isfinite(correct)
    out: dict[str, TierEstimate] = {}
    for code, name in enumerate(tier_names):
        rows = (codes == code) & ok
        n = int(rows.sum())
        naive = None if calibration_errors is None else calibration_errors.get(name)
        if n == 0:
            out[name] = TierEstimate(name, 0, None, None, naive)
            continue
        c = correct[rows]
        est = float((1.0 - c).mean())
        var = float((c * (1.0 - c)).sum()) / (n * n)
        n_cal = 0 if calibration_rows is None else calibration_rows.get(name, 0)
        if n_cal > 0:  # the recalibration map's own error
            var += est * (1.0 - est) / n_cal
        half = z * math.sqrt(var)
        out[name] = TierEstimate(name, n, est, (max(0.0, est - half), min(1.0, est + half)), naive)
    return PerformanceEstimate(out, float(level), method, n_rows=len(codes))
