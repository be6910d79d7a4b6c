"""Conformal prediction: sets and intervals calibrated with MAPIE, served with numpy.

Calibration goes through MAPIE's ``SplitConformalClassifier`` /
``SplitConformalRegressor`` / ``ConformalizedQuantileRegressor``
``conformalize`` (:mod:`~safepredict.conformal._mapie`, the only module that
imports mapie). The calibrated state (the conformity scores, the quantile(s),
RAPS's ``k_star``/``lambda_star``, the residual model of
``residual_normalized``) is then extracted and kept, so the per-row path
computes prediction sets and intervals directly from the model output with plain
numpy, without paying MAPIE's per-call overhead. The arithmetic is MAPIE 1.x's
own (same operations in the same order, same ``EPSILON`` comparisons), and the
tests prove the sets and intervals are identical to MAPIE's ``predict_set`` /
``predict_interval``.

Per-row conformal p-values and the conformal confidence (Vovk's confidence: the
largest level at which the set is the predicted label alone) are derived from
the same calibration scores so that, for every level ``L`` MAPIE accepts,
``label in set(L)  <=>  p_value(label) > 1 - L``.

One module per job: :mod:`~safepredict.conformal.classification`,
:mod:`~safepredict.conformal.regression`, and the exact score counting they
share (:mod:`~safepredict.conformal._counts`).
"""

from __future__ import annotations

from safepredict.conformal._counts import EPSILON
from safepredict.conformal.classification import CLASSIFICATION_SCORES, ClassificationConformal
from safepredict.conformal.regression import REGRESSION_SCORES, RegressionConformal

__all__ = [
    "CLASSIFICATION_SCORES",
    "EPSILON",
    "REGRESSION_SCORES",
    "ClassificationConformal",
    "RegressionConformal",
]
