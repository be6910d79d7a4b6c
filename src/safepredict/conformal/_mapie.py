"""MAPIE, behind four functions: the only module that imports mapie.

Calibration goes through MAPIE's ``SplitConformalClassifier`` /
``SplitConformalRegressor`` / ``ConformalizedQuantileRegressor``
``conformalize``; the functions here return the calibrated numbers (conformity
scores, quantile, RAPS's ``k_star``/``lambda_star``, the residual model) and the
rest of :mod:`safepredict.conformal` works from them with plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from mapie import __version__ as mapie_version
from mapie.classification import SplitConformalClassifier
from mapie.conformity_scores import ResidualNormalisedScore
from mapie.regression import ConformalizedQuantileRegressor, SplitConformalRegressor
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from safepredict.exceptions import CalibrationError

__all__ = [
    "ClassifierFit",
    "PrefitClassifier",
    "PrefitRegressor",
    "alpha_of",
    "classifier_backend",
    "conformalize_classifier",
    "conformalize_cqr",
    "conformalize_regressor",
    "mapie_private",
    "raps_regularized",
    "regressor_backend",
]


class PrefitClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """Hands MAPIE an already fitted model of any kind.

    MAPIE accepts only scikit-learn estimators and probes them by predicting on
    a row of zeros, which breaks pipelines whose first step is not numeric and
    warns for models fitted on DataFrames. This wrapper delegates to the user's
    model and tells MAPIE it is fitted (``fitted_``), so no probe runs.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def classes_(self) -> NDArray[Any]:
        return np.asarray(self.model.classes_)

    @property
    def fitted_(self) -> bool:
        return True

    def fit(self, X: Any, y: Any) -> PrefitClassifier:
        raise TypeError("safepredict wraps fitted models; fit the model before wrapping it.")

    def predict_proba(self, X: Any) -> Any:
        return self.model.predict_proba(X)

    def predict(self, X: Any) -> Any:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class PrefitRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """Regression counterpart of :class:`PrefitClassifier`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def fitted_(self) -> bool:
        return True

    def fit(self, X: Any, y: Any) -> PrefitRegressor:
        raise TypeError("safepredict wraps fitted models; fit the model before wrapping it.")

    def predict(self, X: Any) -> Any:
        return self.model.predict(X)


def alpha_of(confidence_level: float) -> float:
    """``1 - confidence_level`` computed in decimal, exactly as MAPIE 1.x derives its alpha.

    Examples
    --------
    >>> alpha_of(0.9)
    0.1
    """
    return float(Decimal("1") - Decimal(str(confidence_level)))


# MAPIE private API. Each private name is reached through exactly one of the three
# functions below; tests/test_conformal.py calls each on real MAPIE objects, so an
# upgrade that renames one fails there with the message of mapie_private.
def mapie_private(obj: Any, name: str) -> Any:
    """``obj.name``, or a CalibrationError naming the MAPIE version that lacks it."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise CalibrationError(
            f"MAPIE {mapie_version} has no {type(obj).__name__}.{name}, which "
            "safepredict reads to extract the calibrated state (tested with MAPIE 1.x); "
            "install a MAPIE version supported by this safepredict release."
        ) from None


def classifier_backend(split: Any) -> Any:
    """The v0 classifier behind ``SplitConformalClassifier`` (holds the conformity scores)."""
    return mapie_private(split, "_mapie_classifier")


def regressor_backend(split: Any) -> Any:
    """The v0 regressor behind ``SplitConformalRegressor`` (holds the conformity scores)."""
    return mapie_private(split, "_mapie_regressor")


def raps_regularized(score_fn: Any, raw: NDArray[np.float64]) -> NDArray[np.float64]:
    """RAPS's regularized calibration scores (``k_star``/``lambda_star`` applied)."""
    regularize = mapie_private(score_fn, "_regularize_conformity_score")
    out = regularize(score_fn.k_star, score_fn.lambda_star, raw, score_fn.cutoff)
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class ClassifierFit:
    """What MAPIE calibrated for a classifier.

    Attributes
    ----------
    scores : ndarray
        Conformity scores of the calibration rows (``"raps"``: regularized).
    quantile : float
        The conformal quantile MAPIE's ``predict_set`` uses.
    k_star, lambda_star : float or None
        RAPS regularization.
    """

    scores: NDArray[np.float64]
    quantile: float
    k_star: float | None = None
    lambda_star: float | None = None


def conformalize_classifier(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    method: str,
    confidence_level: float,
    random_state: int | None = None,
) -> ClassifierFit:
    """Conformalize a fitted classifier on ``(X, y)`` with ``SplitConformalClassifier``."""
    mapie = SplitConformalClassifier(
        estimator=PrefitClassifier(estimator),
        confidence_level=confidence_level,
        conformity_score=method,
        prefit=True,
        random_state=random_state,
    )
    try:
        mapie.conformalize(X, y)
        inner = classifier_backend(mapie)
        score_fn = inner.conformity_score_function_
        raw = np.asarray(inner.conformity_scores_, dtype=np.float64)
        alpha_np = np.array([alpha_of(confidence_level)], dtype=np.float64)
        # Exactly what MAPIE's predict_set computes (include_last_label=True).
        quantiles = score_fn.get_conformity_score_quantiles(
            raw, alpha_np, "prefit", agg_scores="mean", include_last_label=True
        )
    except ValueError as err:  # MAPIE's "too few samples" and label checks
        raise CalibrationError(
            f"MAPIE could not conformalize with conformity_score={method!r}: "
            f"{str(err).rstrip('.')}. Pass more calibration rows (every class present) "
            "or lower confidence_level."
        ) from err
    if method != "raps":
        return ClassifierFit(raw.ravel(), float(np.ravel(quantiles)[0]))
    return ClassifierFit(
        raps_regularized(score_fn, raw).ravel(),
        float(np.ravel(quantiles)[0]),
        k_star=float(np.ravel(score_fn.k_star)[0]),
        lambda_star=float(np.ravel(score_fn.lambda_star)[0]),
    )


def conformalize_regressor(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    method: str,
    confidence_level: float,
    random_state: int | None = None,
) -> tuple[NDArray[np.float64], Any]:
    """Conformity scores (NaN where MAPIE drops a row) and the residual model, if any."""
    score: Any = method
    if method == "residual_normalized":
        score = ResidualNormalisedScore(random_state=random_state)
    mapie = SplitConformalRegressor(
        estimator=PrefitRegressor(estimator),
        confidence_level=confidence_level,
        conformity_score=score,
        prefit=True,
    )
    try:
        mapie.conformalize(X, y)
    except ValueError as err:
        raise CalibrationError(
            f"MAPIE could not conformalize with conformity_score={method!r}: "
            f"{str(err).rstrip('.')}. "
            + (
                "residual_normalized fits a LinearRegression on the raw features, so they "
                "must be numeric; use 'absolute' otherwise."
                if method == "residual_normalized"
                else "Check the calibration data."
            )
        ) from err
    inner = regressor_backend(mapie)
    raw = np.asarray(inner.conformity_scores_, dtype=np.float64)
    residual_model = None
    if method == "residual_normalized":
        residual_model = inner.conformity_score_function_.residual_estimator_
    return raw, residual_model


def conformalize_cqr(
    lower: Any, median: Any, upper: Any, X: Any, y: Any, *, confidence_level: float
) -> NDArray[np.float64]:
    """CQR conformity scores, shape ``(3, n)``: lower side, upper side, their maximum."""
    # MAPIE's order is (lower, upper, median).
    mapie = ConformalizedQuantileRegressor(
        [PrefitRegressor(lower), PrefitRegressor(upper), PrefitRegressor(median)],
        confidence_level=confidence_level,
        prefit=True,
    )
    try:
        mapie.conformalize(X, y)
    except ValueError as err:
        raise CalibrationError(
            f"MAPIE could not conformalize with CQR: {str(err).rstrip('.')}."
        ) from err
    return np.asarray(mapie.conformity_scores, dtype=np.float64)
