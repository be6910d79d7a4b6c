"""Split-conformal intervals for regressors (absolute, residual-normalized, CQR).

Calibration goes through MAPIE (:mod:`safepredict.conformal._mapie`); the
intervals are computed here with MAPIE 1.x's arithmetic, identical to its
``predict_interval``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LinearRegression

from safepredict.conformal._counts import check_size
from safepredict.conformal._mapie import alpha_of, conformalize_cqr, conformalize_regressor
from safepredict.exceptions import CalibrationError, ConfigError

__all__ = ["REGRESSION_SCORES", "RegressionConformal", "regression_quantile"]

REGRESSION_SCORES: tuple[str, ...] = ("absolute", "residual_normalized", "cqr")


def regression_quantile(scores: NDArray[np.float64], level: float) -> float:
    """The split-conformal quantile at ``level`` with the finite-sample correction.

    MAPIE 1.x's rule (NaNs ignored): the ``ceil(level * (n + 1)) / n`` empirical
    quantile with numpy's ``method="lower"``; ``check_size`` ensures it is finite.

    Examples
    --------
    >>> regression_quantile(np.arange(1.0, 11.0), 0.8)  # ceil(8.8) = 9th of 10
    9.0
    """
    n = int(np.sum(~np.isnan(scores)))
    corrected = math.ceil(level * (n + 1)) / n if n else math.inf
    if corrected > 1:
        raise CalibrationError(
            f"{n} calibration scores are too few for the conformal quantile at level {level}; "
            "pass more calibration rows or lower confidence_level."
        )
    return float(np.nanquantile(scores, corrected, method="lower"))


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
        Sorted conformity scores of the calibration rows (for ``"cqr"``: the
        larger of the two signed residuals, for reference).
    quantile : float
        The conformal quantile (``"cqr"``: of the lower side).
    quantile_upper : float, optional
        ``"cqr"``: the conformal quantile of the upper side.
    residual_model : LinearRegression, optional
        ``"residual_normalized"``: MAPIE's model of ``log |y - y_hat|``.
    quantile_models : tuple of (lower, upper) estimators, optional
        ``"cqr"``: the user's fitted quantile regressors.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = Ridge().fit(X[:200], y[:200])
    >>> cp = RegressionConformal.calibrate(model, X[200:400], y[200:400])
    >>> bounds = cp.interval(X[400:402], model.predict(X[400:402]))
    >>> bool((bounds[:, 0] < bounds[:, 1]).all())
    True
    """

    method: str
    confidence_level: float
    calibration_scores: NDArray[np.float64]
    quantile: float
    quantile_upper: float | None = None
    residual_model: Any = None
    quantile_models: tuple[Any, Any] | None = field(default=None, repr=False)

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
        quantile_models: Sequence[Any] | None = None,
    ) -> RegressionConformal:
        """Conformalize a fitted regressor on ``(X, y)`` with MAPIE.

        ``"residual_normalized"`` fits MAPIE's residual model (a
        ``LinearRegression`` of ``log |y - y_hat|`` on the features) on a random
        quarter of the calibration rows, seeded by ``random_state``.
        ``"cqr"`` needs ``quantile_models=(lower, median, upper)``, regressors
        fitted at the quantiles ``(1 - confidence_level) / 2``, ``0.5`` and
        ``(1 + confidence_level) / 2``.
        """
        if method not in REGRESSION_SCORES:
            raise ConfigError(
                f"conformity_score {method!r} is not a regression score; use one of "
                f"{list(REGRESSION_SCORES)}."
            )
        if method == "cqr":
            return cls._calibrate_cqr(X, y, confidence_level, quantile_models)
        check_size(len(y), confidence_level)
        raw, residual_model = conformalize_regressor(
            estimator,
            X,
            y,
            method=method,
            confidence_level=confidence_level,
            random_state=random_state,
        )
        alpha = alpha_of(confidence_level)
        used = raw[~np.isnan(raw)]
        check_size(len(used), confidence_level, "the conformal quantile")
        return cls(
            method=method,
            confidence_level=float(confidence_level),
            calibration_scores=np.sort(used),
            quantile=regression_quantile(raw, 1 - alpha),
            residual_model=residual_model,
        )

    @classmethod
    def _calibrate_cqr(
        cls, X: Any, y: Any, confidence_level: float, quantile_models: Sequence[Any] | None
    ) -> RegressionConformal:
        if quantile_models is None or len(quantile_models) != 3:
            raise ConfigError(
                "conformity_score='cqr' needs quantile_models=(lower, median, upper): three "
                "regressors already fitted at the quantiles (1 - confidence_level) / 2, 0.5 and "
                f"(1 + confidence_level) / 2; got {quantile_models!r}."
            )
        lower, median, upper = quantile_models
        check_size(len(y), 1 - (1 - confidence_level) / 2, "one-sided CQR calibration")
        scores = conformalize_cqr(lower, median, upper, X, y, confidence_level=confidence_level)
        alpha = alpha_of(confidence_level)
        # predict_interval's default (symmetric_correction=False): alpha / 2 per side.
        level = 1 - alpha / 2
        return cls(
            method="cqr",
            confidence_level=float(confidence_level),
            calibration_scores=np.sort(scores[2]),
            quantile=regression_quantile(scores[0], level),
            quantile_upper=regression_quantile(scores[1], level),
            quantile_models=(lower, upper),
        )

    def interval(self, X: Any, y_pred: NDArray[np.float64]) -> NDArray[np.float64]:
        """Lower and upper bounds per row, shape ``(n, 2)``.

        Identical to MAPIE's ``predict_interval``. ``"absolute"`` uses only
        ``y_pred``; ``"residual_normalized"`` also runs the residual model on
        ``X``; ``"cqr"`` runs the lower/upper quantile models on ``X`` (and
        ignores ``y_pred``).
        """
        q = self.quantile
        if self.method == "absolute":  # written in place: no column_stack copy
            bounds = np.empty((len(y_pred), 2))
            np.add(y_pred, -q, out=bounds[:, 0])
            np.add(y_pred, q, out=bounds[:, 1])
            return bounds
        if self.method == "residual_normalized":
            r_pred = np.exp(np.asarray(self.residual_model.predict(X), dtype=np.float64))
            return np.column_stack([y_pred + (-q) * r_pred, y_pred + q * r_pred])
        if self.quantile_models is None:
            raise CalibrationError(
                "this CQR state has no quantile models; restore it with "
                "RegressionConformal.from_state(state, quantile_models=(lower, median, upper))."
            )
        assert self.quantile_upper is not None
        lower, upper = self.quantile_models
        low = np.asarray(lower.predict(X), dtype=np.float64).ravel()
        up = np.asarray(upper.predict(X), dtype=np.float64).ravel()
        return np.column_stack([low - q, up + self.quantile_upper])

    def absolute_interval_rows(self, y_pred: Sequence[float]) -> list[tuple[float, float]]:
        """:meth:`interval` of an ``"absolute"`` state for a few rows, as plain Python floats.

        ``y - q`` and ``y + q`` are the same IEEE double operations numpy runs, so the
        bounds are bit for bit :meth:`interval`'s; Python floats overflow to ``inf``
        without a warning, so no error-state context is needed (single-row ``decide``).

        Examples
        --------
        >>> rc = RegressionConformal("absolute", 0.9, np.array([1.0]), 2.0)
        >>> rc.absolute_interval_rows([1.0, 1e308])
        [(-1.0, 3.0), (1e+308, 1e+308)]
        """
        q = float(self.quantile)
        return [(y - q, y + q) for y in y_pred]

    # ------------------------------------------------------------ persistence
    def to_state(self) -> dict[str, Any]:
        """JSON-safe state; CQR's quantile models are not included (pass them back)."""
        residual = None
        if self.residual_model is not None:
            m = self.residual_model
            names = getattr(m, "feature_names_in_", None)
            residual = {
                "coef": np.asarray(m.coef_, dtype=np.float64).tolist(),
                "intercept": float(m.intercept_),
                "feature_names": None if names is None else [str(c) for c in names],
            }
        return {
            "kind": "regression",
            "method": self.method,
            "confidence_level": self.confidence_level,
            "calibration_scores": self.calibration_scores.tolist(),
            "quantile": self.quantile,
            "quantile_upper": self.quantile_upper,
            "residual_model": residual,
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], *, quantile_models: Sequence[Any] | None = None
    ) -> RegressionConformal:
        """Restore what :meth:`to_state` saved (CQR: with the same quantile models)."""
        residual_model = None
        saved = state.get("residual_model")
        if saved is not None:
            residual_model = LinearRegression()
            residual_model.coef_ = np.asarray(saved["coef"], dtype=np.float64)
            residual_model.intercept_ = float(saved["intercept"])
            residual_model.n_features_in_ = len(saved["coef"])
            if saved.get("feature_names") is not None:
                residual_model.feature_names_in_ = np.asarray(saved["feature_names"], dtype=object)
        models = None
        if quantile_models is not None:
            models = (quantile_models[0], quantile_models[2])
        upper = state.get("quantile_upper")
        return cls(
            method=str(state["method"]),
            confidence_level=float(state["confidence_level"]),
            calibration_scores=np.asarray(state["calibration_scores"], dtype=np.float64),
            quantile=float(state["quantile"]),
            quantile_upper=None if upper is None else float(upper),
            residual_model=residual_model,
            quantile_models=models,
        )
