"""Shift-aware calibration and label-free performance estimates.

* :mod:`~safepredict.shift.weights` -- covariate shift: domain classifier to
  likelihood-ratio weights, clipping, effective sample size;
* :mod:`~safepredict.shift.label_shift` -- label shift: class priors by BBSE or EM;
* :mod:`~safepredict.shift.weighted` -- weighted conformal sets and intervals;
* :mod:`~safepredict.shift.weighted_tiers` -- weighted certification of ``max_error`` tiers;
* :mod:`~safepredict.shift.performance` -- confidence-based (CBPE-style) error
  estimates per tier;
* :mod:`~safepredict.shift.regression_estimate` -- the same for a regressor's
  ``max_error`` tiers (``P(|y - y_hat| > tolerance | score)``);
* :mod:`~safepredict.shift.adapted` -- ``SafePredictor.adapt_to`` and
  ``SafePredictor.estimate_performance``.

See the docs page "When production differs from calibration".
"""

from __future__ import annotations

from safepredict.shift.adapted import (
    CalibrationRowsMissingError,
    ShiftReport,
    ShiftTooLargeError,
    rows_needed_under_shift,
)
from safepredict.shift.label_shift import LabelShift, estimate_label_shift
from safepredict.shift.mixin import ShiftAware
from safepredict.shift.performance import (
    ASSUMPTION,
    REGRESSION_ASSUMPTION,
    CorrectnessMap,
    ExceedanceMap,
    PerformanceEstimate,
    TierEstimate,
)
from safepredict.shift.regression_estimate import ToleranceErrors
from safepredict.shift.weighted import (
    WeightedClassificationConformal,
    WeightedRegressionConformal,
    weighted_p_values,
    weighted_quantiles,
)
from safepredict.shift.weighted_tiers import certify_weighted
from safepredict.shift.weights import DomainWeights, effective_sample_size

__all__ = [
    "ASSUMPTION",
    "REGRESSION_ASSUMPTION",
    "CalibrationRowsMissingError",
    "CorrectnessMap",
    "DomainWeights",
    "ExceedanceMap",
    "LabelShift",
    "PerformanceEstimate",
    "ShiftAware",
    "ShiftReport",
    "ShiftTooLargeError",
    "TierEstimate",
    "ToleranceErrors",
    "WeightedClassificationConformal",
    "WeightedRegressionConformal",
    "certify_weighted",
    "effective_sample_size",
    "estimate_label_shift",
    "rows_needed_under_shift",
    "weighted_p_values",
    "weighted_quantiles",
]
