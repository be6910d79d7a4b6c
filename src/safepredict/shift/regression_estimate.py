"""Label-free error estimates of a regressor's ``max_error`` tiers.

A regression ``max_error`` tier calls a prediction wrong when
``|y - y_hat| > tolerance``, and ranks rows by its score (minus the conformal
interval width: narrower is more confident). For each such tier an
:class:`~safepredict.shift.performance.ExceedanceMap` is fitted on the
calibration rows -- isotonic regression of "within tolerance" on the score --
and the expected error rate of the production rows the tier accepts is the mean
of ``P(|y - y_hat| > tolerance | score)`` over them. The interval is the one of
the classifier path (:func:`~safepredict.shift.performance.estimate_tiers`):
Poisson-binomial outcome noise plus the variance of the estimate across
Bayesian-bootstrap refits of the map.

Only ``max_error`` tiers get an estimate: elsewhere a regression has no
definition of an error (no tolerance). The interval miss rate is ``1 - level``
by construction only marginally and under exchangeability -- neither per tier
nor under shift -- so it is not reported as an estimate.

The fit needs each calibration row's score and whether its error exceeded each
tolerance: numbers derived from the labels, which the predictor keeps in memory
only after ``calibrate`` (never saved), like the classifier path's
probabilities and labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from safepredict.exceptions import CalibrationError
from safepredict.shift.performance import (
    REGRESSION_ASSUMPTION,
    ExceedanceMap,
    PerformanceEstimate,
    estimate_tiers,
)

__all__ = ["ToleranceErrors"]


@dataclass(frozen=True)
class ToleranceErrors:
    """Per ``max_error`` tier of a regressor: ``P(|y - y_hat| > tolerance | score)``.

    Fit once on the calibration rows with :meth:`fit`, then :meth:`estimate`
    any number of unlabelled batches.

    Attributes
    ----------
    tier_names : tuple of str
        Every tier of the policy, in order (codes index it).
    maps : dict of str to ExceedanceMap
        Per ``max_error`` tier, the map fitted on all calibration rows.
    draws : dict of str to list of ExceedanceMap
        Per ``max_error`` tier, its Bayesian-bootstrap refits.
    calibration_errors : dict of str to float or None
        Per ``max_error`` tier, its error rate on the calibration rows it took
        (the naive estimate).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sigma = rng.uniform(0.5, 2.0, size=3000)
    >>> residual = np.abs(sigma * rng.normal(size=3000))
    >>> codes = (sigma > 1.0).astype(np.intp)          # "auto" takes the narrow intervals
    >>> errors = ToleranceErrors.fit(["auto", "human"], {"auto": 1.5}, -sigma, residual,
    ...                              codes, n_boot=20)
    >>> prod_sigma = rng.uniform(0.5, 1.0, size=500)   # production: only narrow rows
    >>> est = errors.estimate(-prod_sigma, np.zeros(500, dtype=np.intp))
    >>> est.tiers["auto"].estimated_error < est.tiers["auto"].calibration_error
    True
    >>> est.tiers["human"].estimated_error is None     # no tolerance: no error defined
    True
    """

    tier_names: tuple[str, ...]
    maps: dict[str, ExceedanceMap]
    draws: dict[str, list[ExceedanceMap]]
    calibration_errors: dict[str, float | None]

    @classmethod
    def fit(
        cls,
        tier_names: Sequence[str],
        tolerances: Mapping[str, float],
        score: NDArray[np.float64],
        abs_residual: NDArray[np.float64],
        codes: NDArray[np.intp],
        *,
        n_boot: int = 100,
        seed: int = 0,
    ) -> ToleranceErrors:
        """Fit the maps on the calibration rows.

        Parameters
        ----------
        tier_names : sequence of str
            Name of each tier code.
        tolerances : mapping of str to float
            Per ``max_error`` tier, its ``tolerance``.
        score : ndarray of shape (n,)
            The tiers' ranking score of each calibration row (``nan``: failed, left out).
        abs_residual : ndarray of shape (n,)
            ``|y - y_hat|`` of each calibration row.
        codes : ndarray of int, shape (n,)
            Tier code each calibration row got (for the naive estimate).
        n_boot, seed : int
            Bayesian-bootstrap refits of each map, and their seed.
        """
        s = np.asarray(score, dtype=np.float64).reshape(-1)
        r = np.asarray(abs_residual, dtype=np.float64).reshape(-1)
        c = np.asarray(codes).reshape(-1)
        ok = np.isfinite(s) & np.isfinite(r)
        if not ok.any():
            raise CalibrationError(
                f"none of the {len(s)} calibration rows has both an interval and a residual "
                "(every row failed), so P(|y - y_hat| > tolerance) cannot be fitted. Calibrate "
                "again on rows the model and the conformal intervals can score."
            )
        names = tuple(tier_names)
        maps: dict[str, ExceedanceMap] = {}
        draws: dict[str, list[ExceedanceMap]] = {}
        naive: dict[str, float | None] = {}
        for name, tolerance in tolerances.items():
            exceeds = r[ok] > float(tolerance)
            maps[name] = ExceedanceMap.fit(s[ok], exceeds)
            draws[name] = ExceedanceMap.bootstrap(s[ok], exceeds, n_boot=n_boot, seed=seed)
            rows = ok & (c == names.index(name))
            naive[name] = float((r[rows] > float(tolerance)).mean()) if rows.any() else None
        return cls(names, maps, draws, naive)

    def probabilities(
        self, score: NDArray[np.float64], codes: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per row, ``P(within tolerance)`` of its tier, and the same under each refit.

        Rows of tiers without a map and rows without a score are ``nan``.
        Shapes ``(n,)`` and ``(B, n)``.
        """
        s = np.asarray(score, dtype=np.float64).reshape(-1)
        c = np.asarray(codes).reshape(-1)
        n_boot = max((len(d) for d in self.draws.values()), default=0)
        correct = np.full(len(s), np.nan)
        correct_draws = np.full((n_boot, len(s)), np.nan)
        for name, emap in self.maps.items():
            rows = (c == self.tier_names.index(name)) & np.isfinite(s)
            if not rows.any():
                continue
            correct[rows] = 1.0 - emap.exceed(s[rows])
            for b, draw in enumerate(self.draws[name]):
                correct_draws[b, rows] = 1.0 - draw.exceed(s[rows])
        return correct, correct_draws

    def estimate(
        self, score: NDArray[np.float64], codes: NDArray[np.intp], *, level: float = 0.95
    ) -> PerformanceEstimate:
        """Per-tier label-free error estimate of a batch (``None`` for tiers without a tolerance).

        ``n_rows`` of a tier without a tolerance counts its scored rows all the same.
        """
        s = np.asarray(score, dtype=np.float64).reshape(-1)
        c = np.asarray(codes).reshape(-1)
        correct, correct_draws = self.probabilities(s, c)
        est = estimate_tiers(
            self.tier_names,
            c,
            correct,
            level=level,
            calibration_errors=self.calibration_errors,
            correct_draws=correct_draws,
            method="isotonic",
        )
        tiers = dict(est.tiers)
        for code, name in enumerate(self.tier_names):
            if name not in self.maps:
                tiers[name] = replace(tiers[name], n_rows=int(((c == code) & np.isfinite(s)).sum()))
        return replace(est, tiers=tiers, assumption=REGRESSION_ASSUMPTION)
