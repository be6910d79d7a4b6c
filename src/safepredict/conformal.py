"""Conformal prediction adapter: the only module that imports mapie.

Calibration goes through MAPIE's ``SplitConformalClassifier`` /
``SplitConformalRegressor`` ``conformalize``. The calibrated state (the
conformity scores and the quantile) is then kept here, so the per-row path
computes prediction sets and intervals directly from the model output with
plain numpy, without paying MAPIE's per-call overhead. The tests prove the sets
and intervals are identical to MAPIE's ``predict_set`` / ``predict_interval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mapie.classification import SplitConformalClassifier
from mapie.regression import SplitConformalRegressor
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from safepredict._state import array_from_state, array_to_state, require_keys
from safepredict.exceptions import CalibrationError, ConfigError

__all__ = [
    "CLASSIFICATION_SCORES",
    "EPSILON",
    "REGRESSION_SCORES",
    "ClassificationConformal",
    "RegressionConformal",
]

#: MAPIE's tolerance when comparing a label's score to the quantile.
EPSILON = 1e-8
CLASSIFICATION_SCORES: tuple[str, ...] = ("lac", "aps", "raps")
REGRESSION_SCORES: tuple[str, ...] = ("absolute", "residual_normalized", "cqr")


class _PrefitClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
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

    def fit(self, X: Any, y: Any) -> _PrefitClassifier:
        raise TypeError("safepredict wraps fitted models; fit the model before wrapping it.")

    def predict_proba(self, X: Any) -> Any:
        return self.model.predict_proba(X)

    def predict(self, X: Any) -> Any:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class _PrefitRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """Regression counterpart of :class:`_PrefitClassifier`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def fitted_(self) -> bool:
        return True

    def fit(self, X: Any, y: Any) -> _PrefitRegressor:
        raise TypeError("safepredict wraps fitted models; fit the model before wrapping it.")

    def predict(self, X: Any) -> Any:
        return self.model.predict(X)


def _min_calibration_rows(confidence_level: float) -> int:
    """Smallest calibration size for which the conformal quantile is finite."""
    return int(np.ceil(confidence_level / (1 - confidence_level)))


def _check_size(n: int, confidence_level: float) -> None:
    need = _min_calibration_rows(confidence_level)
    if n < need:
        raise CalibrationError(
            f"calibration needs at least {need} rows for confidence_level={confidence_level} "
            f"(got {n}); pass more calibration rows or lower confidence_level."
        )


@dataclass
class ClassificationConformal:
    """Calibrated split-conformal state for a classifier.

    Parameters
    ----------
    method : {"lac", "aps", "raps"}
        Conformity score.
    confidence_level : float
        Target coverage of the prediction sets.
    classes : ndarray
        Class labels in the column order of ``predict_proba``.
    calibration_scores : ndarray
        Sorted conformity scores of the calibration rows.
    quantile : float
        The conformal quantile of ``calibration_scores`` at ``confidence_level``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> cp = ClassificationConformal.calibrate(model, X[1::2], y[1::2], method="lac",
    ...                                        confidence_level=0.9)
    >>> cp.predict_set(model.predict_proba(X[:2])).sum(axis=1)
    array([1, 1])
    """

    method: str
    confidence_level: float
    classes: NDArray[Any]
    calibration_scores: NDArray[np.float64]
    quantile: float

    @classmethod
    def calibrate(
        cls,
        estimator: Any,
        X: Any,
        y: Any,
        *,
        method: str = "lac",
        confidence_level: float = 0.9,
        random_state: int | None = None,
    ) -> ClassificationConformal:
        """Conformalize a fitted classifier on ``(X, y)`` with MAPIE."""
        if method not in ("lac",):
            raise ConfigError(f"conformity_score {method!r} is not supported yet; use 'lac'.")
        _check_size(len(y), confidence_level)
        mapie = SplitConformalClassifier(
            estimator=_PrefitClassifier(estimator),
            confidence_level=confidence_level,
            conformity_score=method,
            prefit=True,
            random_state=random_state,
        )
        mapie.conformalize(X, y)
        scores = np.sort(np.asarray(mapie.conformity_scores, dtype=np.float64).ravel())
        n = len(scores)
        rank = int(np.ceil((n + 1) * confidence_level))
        quantile = float(scores[min(rank, n) - 1])
        return cls(
            method=method,
            confidence_level=confidence_level,
            classes=np.asarray(estimator.classes_),
            calibration_scores=scores,
            quantile=quantile,
        )

    def to_state(self) -> dict[str, Any]:
        """The calibrated state as a JSON-safe dict (see :meth:`from_state`).

        Examples
        --------
        >>> cp = ClassificationConformal("lac", 0.9, np.array([0, 1]), np.array([0.1, 0.4]), 0.4)
        >>> ClassificationConformal.from_state(cp.to_state()).quantile
        0.4
        """
        return {
            "method": self.method,
            "confidence_level": float(self.confidence_level),
            "classes": array_to_state(self.classes),
            "calibration_scores": [float(v) for v in self.calibration_scores],
            "quantile": float(self.quantile),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClassificationConformal:
        """Rebuild from :meth:`to_state` output; raises ``ValueError`` if malformed."""
        keys = ("method", "confidence_level", "classes", "calibration_scores", "quantile")
        require_keys(state, keys, "classification conformal state")
        return cls(
            method=_method(state["method"], CLASSIFICATION_SCORES),
            confidence_level=float(state["confidence_level"]),
            classes=array_from_state(state["classes"]),
            calibration_scores=_scores(state["calibration_scores"]),
            quantile=float(state["quantile"]),
        )

    def label_scores(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Non-conformity score of every label for every row, shape ``(n, n_classes)``."""
        return 1.0 - proba

    def predict_set(self, proba: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Membership of each class in the prediction set, shape ``(n, n_classes)``."""
        return (self.label_scores(proba) - self.quantile) <= EPSILON

    def p_values(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Conformal p-value of every label: ``(1 + #{cal >= s}) / (n + 1)``."""
        s = self.label_scores(proba)
        n = len(self.calibration_scores)
        greater_equal = n - np.searchsorted(self.calibration_scores, s - EPSILON, side="left")
        return np.asarray((1.0 + greater_equal) / (n + 1.0), dtype=np.float64)

    def confidence(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Largest level at which the set is the predicted label alone (Vovk's confidence)."""
        p = self.p_values(proba)
        if p.shape[1] < 2:
            return np.ones(p.shape[0])
        second = np.partition(p, -2, axis=1)[:, -2]
        return 1.0 - second


@dataclass
class RegressionConformal:
    """Calibrated split-conformal state for a regressor.

    Parameters
    ----------
    method : {"absolute", "residual_normalized", "cqr"}
        Conformity score.
    confidence_level : float
        Target coverage of the intervals.
    calibration_scores : ndarray
        Sorted conformity scores of the calibration rows.
    quantile : float
        The conformal quantile of ``calibration_scores`` at ``confidence_level``.
    """

    method: str
    confidence_level: float
    calibration_scores: NDArray[np.float64]
    quantile: float

    @classmethod
    def calibrate(
        cls,
        estimator: Any,
        X: Any,
        y: Any,
        *,
        method: str = "absolute",
        confidence_level: float = 0.9,
        random_state: int | None = None,
    ) -> RegressionConformal:
        """Conformalize a fitted regressor on ``(X, y)`` with MAPIE."""
        if method not in ("absolute",):
            raise ConfigError(f"conformity_score {method!r} is not supported yet; use 'absolute'.")
        _check_size(len(y), confidence_level)
        mapie = SplitConformalRegressor(
            estimator=_PrefitRegressor(estimator),
            confidence_level=confidence_level,
            conformity_score=method,
            prefit=True,
        )
        mapie.conformalize(X, y)
        scores = np.sort(np.asarray(mapie._mapie_regressor.conformity_scores_, dtype=np.float64))
        n = len(scores)
        rank = int(np.ceil((n + 1) * confidence_level))
        quantile = float(scores[min(rank, n) - 1])
        return cls(method, confidence_level, scores, quantile)

    def to_state(self) -> dict[str, Any]:
        """The calibrated state as a JSON-safe dict (see :meth:`from_state`).

        Examples
        --------
        >>> cp = RegressionConformal("absolute", 0.9, np.array([1.0, 2.5]), 2.5)
        >>> RegressionConformal.from_state(cp.to_state()).quantile
        2.5
        """
        return {
            "method": self.method,
            "confidence_level": float(self.confidence_level),
            "calibration_scores": [float(v) for v in self.calibration_scores],
            "quantile": float(self.quantile),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RegressionConformal:
        """Rebuild from :meth:`to_state` output; raises ``ValueError`` if malformed."""
        keys = ("method", "confidence_level", "calibration_scores", "quantile")
        require_keys(state, keys, "regression conformal state")
        return cls(
            method=_method(state["method"], REGRESSION_SCORES),
            confidence_level=float(state["confidence_level"]),
            calibration_scores=_scores(state["calibration_scores"]),
            quantile=float(state["quantile"]),
        )

    def interval(self, X: Any, y_pred: NDArray[np.float64]) -> NDArray[np.float64]:
        """Lower and upper bounds per row, shape ``(n, 2)``."""
        return np.column_stack([y_pred - self.quantile, y_pred + self.quantile])


def _method(value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"unknown conformity score {value!r}; expected one of {options}.")
    return str(value)


def _scores(values: Any) -> NDArray[np.float64]:
    if not isinstance(values, list):
        raise ValueError(f"calibration_scores must be a list; got {type(values).__name__}.")
    return np.asarray(values, dtype=np.float64)
