"""``adapt_to`` and ``estimate_performance`` of :class:`~safepredict.SafePredictor`.

A mixin, so the facade stays a thin lifecycle class; the work is in
:mod:`safepredict.shift.adapted`.
"""

from __future__ import annotations

from typing import Any

from safepredict.shift.adapted import adapt, estimate_performance
from safepredict.shift.performance import PerformanceEstimate

__all__ = ["ShiftAware"]


class ShiftAware:
    """Shift-aware calibration and label-free estimates (mixed into ``SafePredictor``)."""

    def adapt_to(
        self,
        X_production: Any,
        shift: str = "covariate",
        *,
        domain_classifier: Any = None,
        max_weight: float = 10.0,
        label_method: str = "bbse",
    ) -> Any:
        """A new predictor whose sets, intervals and ``max_error`` tiers hold on production rows.

        The calibration rows are re-weighted by the likelihood ratio of
        production to calibration: ``shift="covariate"`` estimates it with a
        domain classifier (calibration rows against the unlabelled
        ``X_production``), ``shift="label"`` from the class priors estimated by
        BBSE or EM (``label_method``). Sets and intervals use weighted conformal
        quantiles (Tibshirani et al., 2019), ``max_error`` tiers a weighted
        Learn-then-Test. The original predictor is untouched. The new one
        carries ``shift_`` (a :class:`~safepredict.shift.ShiftReport`: effective
        sample size, clipped rows, priors, weighted tier reports) and cannot be
        saved (adapt again after calibrating).

        Parameters
        ----------
        X_production : array-like or DataFrame
            Recent unlabelled production inputs (hundreds of rows or more).
        shift : {"covariate", "label"}, default="covariate"
        domain_classifier : scikit-learn classifier, optional
            Covariate shift: calibration (0) versus production (1) rows.
            Default: standardized logistic regression.
        max_weight : float, default=10
            Covariate shift: clip of the weights, the bound the tier test uses.
        label_method : {"bbse", "em"}, default="bbse"

        Returns
        -------
        SafePredictor

        Raises
        ------
        ShiftTooLargeError
            The effective sample size is below what the sets and tiers need.
        CalibrationRowsMissingError
            The predictor was loaded (calibration rows are never saved).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.linear_model import LogisticRegression
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> from safepredict import SafePredictor
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[::3], y[::3])
        >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
        >>> production = X[2::3][X[2::3, 0] > 13]             # larger tumours than usual
        >>> adapted = sp.adapt_to(production, shift="covariate")
        >>> adapted.shift_.effective_sample_size < sp.calibration_size_
        True
        >>> len(adapted.decide(production[:5]))
        5
        """
        return adapt(
            self,
            X_production,
            shift=shift,
            domain_classifier=domain_classifier,
            max_weight=max_weight,
            label_method=label_method,
        )

    def estimate_performance(
        self, X_unlabelled: Any, *, level: float = 0.95, recalibration: str = "isotonic"
    ) -> PerformanceEstimate:
        """Estimated error rate per tier on unlabelled rows (confidence-based, CBPE-style).

        Classifier: the model's top probability is recalibrated on the
        calibration rows (``"isotonic"`` or ``"temperature"``); the expected
        error of a tier is the mean of ``1 - P(right)`` over its rows.
        Regressor: for each ``max_error`` tier, ``P(|y - y_hat| > tolerance)``
        is mapped from the tier's ranking score (minus the interval width) by
        isotonic regression on the calibration rows, and averaged over the
        tier's rows; tiers without a tolerance define no error and get
        ``estimated_error=None`` (a policy without ``max_error`` tiers raises
        :class:`~safepredict.exceptions.ConfigError`). Either way the ``level``
        interval is for the realized error rate (Poisson-binomial variance plus
        the map's, from Bayesian-bootstrap refits). Assumes no concept shift
        (stated in the result). Nothing is logged or routed.

        Examples
        --------
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.linear_model import LogisticRegression
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> from safepredict import SafePredictor
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[::3], y[::3])
        >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
        >>> est = sp.estimate_performance(X[2::3])
        >>> sorted(est.tiers) == sorted(sp.decide(X[:1]).tier_names)
        True
        >>> est.assumption.startswith("no concept shift")
        True
        """
        return estimate_performance(self, X_unlabelled, level=level, recalibration=recalibration)
