"""Label-free performance estimates: confidence-based, per tier (CBPE-style).

Confidence-based performance estimation (NannyML's CBPE) reads the expected
error of a batch off *calibrated* probabilities: if ``c(x)`` is the probability
that the prediction on ``x`` is right, the expected error rate of rows ``R``
is ``mean_{x in R} (1 - c(x))``. The model's top probability is recalibrated
on the calibration rows first -- isotonic regression of "prediction right" on
the top probability (default), or one temperature for the whole softmax --
because raw probabilities are rarely calibrated.

The interval is the one of the realized error rate around the estimate. It
adds two variances. The number of errors among the ``n`` rows is
Poisson-binomial with variance ``sum c (1 - c)``, so the rate contributes
``sum c (1 - c) / n^2``. The recalibration map is itself estimated from the
calibration rows; its error on *this batch* depends on where the batch's
confidences fall (a batch concentrated where calibration had few rows gets a
noisy map), so it is measured directly: the map is refitted on ``B`` Bayesian
bootstrap re-weightings of the calibration rows (Rubin, 1981; weights
``Exp(1)``, seeded, so results are reproducible), each refit gives an estimate
``e_b`` of the batch's error, and their variance ``var_b(e_b)`` is added. So the
interval is ``e +- z * sqrt(sum c (1 - c) / n^2 + var_b(e_b))`` (normal
approximation).

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

Rubin, D. B. (1981). The Bayesian bootstrap. *The Annals of Statistics* 9(1),
130-134.

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

__all__ = [
    "ASSUMPTION",
    "REGRESSION_ASSUMPTION",
    "CorrectnessMap",
    "ExceedanceMap",
    "PerformanceEstimate",
    "TierEstimate",
    "bayesian_weights",
    "estimate_tiers",
]

ASSUMPTION = (
    "no concept shift: P(prediction right | inputs) is the same in production as on the "
    "calibration rows; the estimate follows covariate shift, not a change of the labelling rule"
)

REGRESSION_ASSUMPTION = (
    "no concept shift: P(|y - y_hat| > tolerance | the tier's ranking score) is the same in "
    "production as on the calibration rows (the residual distribution given the score is "
    "unchanged); the estimate follows covariate shift, not a change of the target's relation "
    "to the inputs"
)


@dataclass(frozen=True)
class CorrectnessMap:
    """Calibrated probability that the model's prediction is right.

    Fit with :meth:`fit` on the calibration rows' probabilities and labels;
    :meth:`bootstrap` gives refits on Bayesian-bootstrap re-weightings of the
    same rows (the map's own estimation error).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> top = rng.uniform(0.5, 1.0, size=3000)
    >>> right = rng.uniform(size=3000) < top ** 2          # over-confident model
    >>> proba = np.column_stack([top, 1 - top])
    >>> cmap = CorrectnessMap.fit(proba, np.where(right, 0, 1))
    >>> round(float(cmap.correct(np.array([[0.9, 0.1]]))[0]), 1)
    0.8
    >>> draws = CorrectnessMap.bootstrap(proba, np.where(right, 0, 1), n_boot=20)
    >>> len(draws), 0.7 < float(draws[0].correct(np.array([[0.9, 0.1]]))[0]) < 0.9
    (20, True)
    """

    method: str
    model: Any = field(repr=False)

    @classmethod
    def fit(
        cls,
        proba: NDArray[np.float64],
        y_index: NDArray[np.intp],
        method: str = "isotonic",
        *,
        sample_weight: NDArray[np.float64] | None = None,
    ) -> CorrectnessMap:
        """Fit on the calibration rows: ``proba`` ``(n, K)``, labels as class indices.

        ``sample_weight`` (positive, one per row) weights the fit.
        """
        if method not in ("isotonic", "temperature"):
            raise ConfigError(
                f"recalibration must be 'isotonic' or 'temperature'; got {method!r}. Use "
                "'isotonic' (flexible, needs ~1000 calibration rows) or 'temperature' (one number)."
            )
        p = np.asarray(proba, dtype=np.float64)
        y = np.asarray(y_index, dtype=np.intp)
        w = np.ones(len(p)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if method == "isotonic":
            return cls("isotonic", _isotonic(p.max(axis=1), (p.argmax(axis=1) == y), w))
        logp = np.log(np.clip(p, 1e-12, 1.0))
        w_norm = w / w.sum()

        def nll(log_t: float) -> float:
            z = logp / np.exp(log_t)
            z = z - z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1))
            return float(((lse - z[np.arange(len(y)), y]) * w_norm).sum())

        res = optimize.minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
        return cls("temperature", float(np.exp(res.x)))

    @classmethod
    def bootstrap(
        cls,
        proba: NDArray[np.float64],
        y_index: NDArray[np.intp],
        method: str = "isotonic",
        *,
        n_boot: int = 100,
        seed: int = 0,
    ) -> list[CorrectnessMap]:
        """``n_boot`` refits on Bayesian-bootstrap weights ``Exp(1)`` of the rows (seeded)."""
        weights = bayesian_weights(len(np.asarray(proba)), n_boot=n_boot, seed=seed)
        if method == "isotonic":  # one sort of the rows for all refits
            p = np.asarray(proba, dtype=np.float64)
            right = p.argmax(axis=1) == np.asarray(y_index, dtype=np.intp)
            knots, values = _isotonic_fits(p.max(axis=1), right, weights)
            return [cls("isotonic", (knots, v)) for v in values]
        return [cls.fit(proba, y_index, method, sample_weight=w) for w in weights]

    def correct(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability that the arg-max prediction of each row is right."""
        p = np.asarray(proba, dtype=np.float64)
        if len(p) == 0:
            return np.zeros(0)
        if self.method == "isotonic":
            knots, values = self.model
            return np.asarray(np.interp(p.max(axis=1), knots, values), dtype=np.float64)
        z = np.log(np.clip(p, 1e-12, 1.0)) / float(self.model)
        z = z - z.max(axis=1, keepdims=True)
        soft = np.exp(z)
        return np.asarray(soft.max(axis=1) / soft.sum(axis=1), dtype=np.float64)


def bayesian_weights(n: int, *, n_boot: int = 100, seed: int = 0) -> NDArray[np.float64]:
    """``n_boot`` Bayesian-bootstrap re-weightings of ``n`` rows: ``Exp(1)`` draws, seeded.

    The one source of the bootstrap refits of :class:`CorrectnessMap` and
    :class:`ExceedanceMap` (Rubin, 1981).

    Examples
    --------
    >>> w = bayesian_weights(4, n_boot=3, seed=1)
    >>> w.shape, bool((w > 0).all()), bool(np.array_equal(w, bayesian_weights(4, n_boot=3, seed=1)))
    ((3, 4), True, True)
    """
    return np.random.default_rng(seed).exponential(size=(n_boot, n))


@dataclass(frozen=True)
class ExceedanceMap:
    """Calibrated probability that a regressor's error exceeds a tolerance, given a score.

    The regression counterpart of :class:`CorrectnessMap`: an isotonic fit of
    "``|y - y_hat| <= tolerance``" on the score a ``max_error`` tier ranks rows
    by (higher = more confident, e.g. minus the interval width), so
    ``P(|y - y_hat| > tolerance | score)`` falls as the score rises. Fitted on
    the calibration rows' scores and exceedance indicators (numbers derived
    from the labels, not input rows); :meth:`bootstrap` gives refits on
    Bayesian-bootstrap re-weightings of them.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sigma = rng.uniform(0.5, 2.0, size=4000)          # per-row noise scale
    >>> residual = sigma * rng.normal(size=4000)
    >>> emap = ExceedanceMap.fit(-sigma, np.abs(residual) > 1.0)
    >>> p = emap.exceed(np.array([-0.6, -1.0, -1.8]))    # true: 0.10, 0.32, 0.58
    >>> np.round(p, 1).tolist()
    [0.1, 0.3, 0.6]
    >>> len(ExceedanceMap.bootstrap(-sigma, np.abs(residual) > 1.0, n_boot=5))
    5
    """

    knots: NDArray[np.float64] = field(repr=False)
    within: NDArray[np.float64] = field(repr=False)

    @classmethod
    def fit(
        cls,
        score: NDArray[np.float64],
        exceeds: NDArray[np.bool_],
        *,
        sample_weight: NDArray[np.float64] | None = None,
    ) -> ExceedanceMap:
        """Fit on the calibration rows: each row's score and whether its error exceeded."""
        x = np.asarray(score, dtype=np.float64).reshape(-1)
        e = np.asarray(exceeds, dtype=bool).reshape(-1)
        w = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        return cls(*_isotonic(x, ~e, w))

    @classmethod
    def bootstrap(
        cls,
        score: NDArray[np.float64],
        exceeds: NDArray[np.bool_],
        *,
        n_boot: int = 100,
        seed: int = 0,
    ) -> list[ExceedanceMap]:
        """``n_boot`` refits on Bayesian-bootstrap weights ``Exp(1)`` of the rows (seeded)."""
        x = np.asarray(score, dtype=np.float64).reshape(-1)
        within = ~np.asarray(exceeds, dtype=bool).reshape(-1)
        weights = bayesian_weights(len(x), n_boot=n_boot, seed=seed)
        knots, values = _isotonic_fits(x, within, weights)
        return [cls(knots, v) for v in values]

    def exceed(self, score: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability that each row's error exceeds the tolerance."""
        x = np.asarray(score, dtype=np.float64).reshape(-1)
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(1.0 - np.interp(x, self.knots, self.within), dtype=np.float64)


def _isotonic(
    x: NDArray[np.float64], right: NDArray[np.bool_], w: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted isotonic fit of ``right`` on ``x``: knots and values, clipped outside.

    Ties in ``x`` are pooled first (weighted mean), then pool-adjacent-violators
    runs on the sorted unique values -- what scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")`` does, with linear interpolation
    between knots.
    """
    knots, values = _isotonic_fits(x, right, np.asarray(w, dtype=np.float64).reshape(1, -1))
    return knots, values[0]


def _isotonic_fits(
    x: NDArray[np.float64], right: NDArray[np.bool_], weights: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`_isotonic` under each row of ``weights`` ``(B, n)``: shared knots, values ``(B, K)``.

    The rows are sorted and their ties found once for all ``B`` fits.
    """
    from sklearn import config_context
    from sklearn.isotonic import isotonic_regression

    knots, inverse = np.unique(x, return_inverse=True)
    out = np.empty((len(weights), len(knots)))
    # the inputs are built here (finite, 1-D, positive weights): skip the per-call
    # parameter validation, most of the cost of the bootstrap's 100 refits
    with config_context(skip_parameter_validation=True):
        for b, w in enumerate(weights):
            weight = np.bincount(inverse, weights=w, minlength=len(knots))
            mean = np.bincount(inverse, weights=w * right, minlength=len(knots)) / weight
            out[b] = isotonic_regression(mean, sample_weight=weight, y_min=0.0, y_max=1.0)
    return knots, out


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
    correct_draws: NDArray[np.float64] | None = None,
    method: str = "isotonic",
) -> PerformanceEstimate:
    """Per-tier expected error rate and its interval (outcome noise plus the map's error).

    Parameters
    ----------
    tier_names : sequence of str
        Name of each tier code.
    codes : ndarray of int, shape (n,)
        Tier code of each row.
    correct : ndarray of shape (n,)
        Calibrated probability that each row's prediction is right (``nan``:
        no prediction; left out).
    calibration_errors : dict, optional
        Per tier, the error rate on the calibration rows (the naive estimate).
    correct_draws : ndarray of shape (B, n), optional
        ``correct`` under ``B`` bootstrap refits of the recalibration map; the
        variance of the tier's estimate across them is the map's share of the
        interval (without it, the interval covers outcome noise only).

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
        if correct_draws is not None and len(correct_draws) > 1:  # the map's own error
            var += float(np.var((1.0 - correct_draws[:, rows]).mean(axis=1), ddof=1))
        half = z * math.sqrt(var)
        out[name] = TierEstimate(name, n, est, (max(0.0, est - half), min(1.0, est + half)), naive)
    return PerformanceEstimate(out, float(level), method, n_rows=len(codes))
