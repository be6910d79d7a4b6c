"""Weighted conformal sets and intervals (covariate or label shift).

**Sets and intervals** (Tibshirani et al., 2019). With calibration conformity
scores ``s_i``, weights ``w_i = w(x_i)`` (covariate shift) or ``w(y_i)`` (label
shift) and the weight ``w`` of the test point, the prediction set at level
``1 - alpha`` is the set of labels whose score is at most the ``1 - alpha``
quantile of ``sum_i p_i delta_{s_i} + p_{n+1} delta_{+inf}`` with
``p_i = w_i / (sum_j w_j + w)``. Equivalently, label ``y`` is in the set when
its weighted p-value ``(sum_{s_i >= s_y} w_i + w) / (sum_i w_i + w)`` exceeds
``alpha``. Under label shift the test weight is the candidate label's
``w(y)`` (Podkopaev and Ramdas, 2021). Both are computed for a whole batch with
one ``searchsorted`` on the sorted scores and their cumulated weights. Equal
weights give back the usual split-conformal p-values ``(1 + c) / (n + 1)``.

The ``max_error`` tiers are re-certified in :mod:`safepredict.shift.weighted_tiers`.

References
----------
Tibshirani, R. J., Foygel Barber, R., Candes, E. J. and Ramdas, A. (2019).
Conformal prediction under covariate shift. *NeurIPS 32* (arXiv:1904.06019).

Podkopaev, A. and Ramdas, A. (2021). Distribution-free uncertainty
quantification for classification under label shift. *UAI* (arXiv:2103.03323).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.conformal import EPSILON, ClassificationConformal, RegressionConformal
from safepredict.exceptions import ConfigError, PersistenceError

__all__ = [
    "WeightedClassificationConformal",
    "WeightedRegressionConformal",
    "weighted_p_values",
    "weighted_quantiles",
]

_NOT_SAVED = (
    "an adapted predictor (adapt_to) is not saved: its weights come from calibration rows, "
    "which a saved state never holds. Save the original predictor and call adapt_to again "
    "after calibrating it in the serving process."
)


def _sorted_with_suffix(
    scores: NDArray[np.float64], weights: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scores sorted ascending and ``suffix[k] = sum of weights of sorted[k:]`` (``n + 1``)."""
    order = np.argsort(scores, kind="stable")
    w = np.asarray(weights, dtype=np.float64)[order]
    suffix = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])
    return np.asarray(scores, dtype=np.float64)[order], suffix


def weighted_p_values(
    scores: NDArray[np.float64],
    weights: NDArray[np.float64],
    t: NDArray[np.float64],
    test_weights: NDArray[np.float64],
    *,
    tolerance: float = 0.0,
) -> NDArray[np.float64]:
    """Weighted conformal p-values ``(sum_{s_i >= t - tol} w_i + w) / (sum_i w_i + w)``.

    Parameters
    ----------
    scores, weights : ndarray of shape (n,)
        Calibration conformity scores and their weights.
    t : ndarray of any shape
        Test conformity scores.
    test_weights : ndarray broadcastable to ``t``
        Weight of each test point (per candidate label under label shift).
    tolerance : float
        Scores within ``tolerance`` below ``t`` count as ``>= t`` (MAPIE's LAC rule).

    Examples
    --------
    >>> s = np.arange(1.0, 10.0)                 # 9 scores, equal weights: (1 + c) / 10
    >>> weighted_p_values(s, np.ones(9), np.array([0.5, 5.0, 9.5]), np.ones(3)).tolist()
    [1.0, 0.6, 0.1]
    """
    sorted_scores, suffix = _sorted_with_suffix(scores, weights)
    t_arr = np.asarray(t, dtype=np.float64)
    idx = np.searchsorted(sorted_scores, t_arr - tolerance, side="left")
    w = np.broadcast_to(np.asarray(test_weights, dtype=np.float64), t_arr.shape)
    return np.asarray((suffix[idx] + w) / (suffix[0] + w), dtype=np.float64)


def weighted_quantiles(
    scores: NDArray[np.float64],
    weights: NDArray[np.float64],
    test_weights: NDArray[np.float64],
    level: float,
) -> NDArray[np.float64]:
    """Per test point, the ``level`` quantile of ``sum_i p_i delta_{s_i} + p_{n+1} delta_{+inf}``.

    ``+inf`` where the calibration mass cannot reach ``level`` (the test point's
    own weight is too large: the shift is too strong at that point).

    Examples
    --------
    >>> s = np.arange(1.0, 10.0)                   # equal weights: the ceil(0.8 * 10) = 8th
    >>> weighted_quantiles(s, np.ones(9), np.array([1.0, 5.0]), 0.8).tolist()
    [8.0, inf]
    """
    order = np.argsort(scores, kind="stable")
    s = np.asarray(scores, dtype=np.float64)[order]
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    w = np.asarray(test_weights, dtype=np.float64)
    target = level * (cum[-1] + w) * (1.0 - 1e-12) if len(cum) else np.full(w.shape, np.inf)
    idx = np.searchsorted(cum, target, side="left")
    padded = np.concatenate([s, [np.inf]])
    return np.asarray(padded[np.minimum(idx, len(s))], dtype=np.float64)


# ------------------------------------------------------------------ classification
@dataclass
class WeightedClassificationConformal(ClassificationConformal):
    """Classification conformal state whose p-values are weighted (covariate or label shift).

    Built by :meth:`SafePredictor.adapt_to`; the inherited fields are the
    original state's (``quantile`` is the unweighted one, for reference).
    Covariate shift: each decided batch is bound to its rows' weights
    (:meth:`bind_rows`); unbound, every row gets the largest weight (wider
    sets, never narrower). Label shift: the test weight of a candidate label is
    its prior ratio.

    Attributes
    ----------
    row_scores : ndarray of shape (n,)
        Conformity score of each calibration row (``label_scores`` of its label).
    row_weights : ndarray of shape (n,)
        Weight of each calibration row.
    class_weights : ndarray of shape (K,) or None
        Label shift: prior ratio of each class.
    domain : DomainWeights or None
        Covariate shift: the weights of new rows.
    test_weights : ndarray or None
        Covariate shift: the weights of the bound batch.
    """

    row_scores: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)
    row_weights: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)
    class_weights: NDArray[np.float64] | None = None
    domain: Any = field(default=None, repr=False)
    test_weights: NDArray[np.float64] | None = field(default=None, repr=False)

    @classmethod
    def from_base(
        cls,
        base: ClassificationConformal,
        proba: NDArray[np.float64],
        y_index: NDArray[np.intp],
        row_weights: NDArray[np.float64],
        *,
        class_weights: NDArray[np.float64] | None = None,
        domain: Any = None,
    ) -> WeightedClassificationConformal:
        """Weighted state from the original one and the calibration rows' outputs."""
        t = base.label_scores(proba)
        row_scores = np.take_along_axis(t, y_index[:, None], axis=1)[:, 0]
        init = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
        return cls(
            **init,
            row_scores=np.asarray(row_scores, dtype=np.float64),
            row_weights=np.asarray(row_weights, dtype=np.float64),
            class_weights=class_weights,
            domain=domain,
        )

    @property
    def _alpha(self) -> float:
        """``1 - confidence_level`` as the decimal it is (``0.1``, not ``0.0999...``)."""
        return round(1.0 - self.confidence_level, 12)

    def bind_rows(self, X_model: Any) -> WeightedClassificationConformal:
        """The state bound to the weights of the rows of ``X_model`` (covariate shift)."""
        if self.domain is None:
            return self
        return dataclasses.replace(self, test_weights=self.domain.weights(X_model))

    def _test_weights(self, shape: tuple[int, ...]) -> NDArray[np.float64]:
        if self.class_weights is not None:
            return np.broadcast_to(self.class_weights[None, :], shape)
        w = self.test_weights
        if w is None or len(w) != shape[0]:  # unbound: the most conservative weight
            top = float(self.domain.max_weight) if self.domain is not None else 1.0
            return np.full(shape, top)
        return np.broadcast_to(w[:, None], shape)

    def p_values(self, proba: NDArray[np.float64], groups: Any = None) -> NDArray[np.float64]:
        """Weighted conformal p-value of every label, shape ``(n, n_classes)``.

        ``groups`` is accepted for the base signature; an adapted predictor is never
        conditional (``adapt_to`` refuses a Mondrian predictor).
        """
        t = self.label_scores(proba)
        tol = EPSILON if self.method == "lac" else 0.0
        return weighted_p_values(
            self.row_scores, self.row_weights, t, self._test_weights(t.shape), tolerance=tol
        )

    def predict_set(self, proba: NDArray[np.float64], groups: Any = None) -> NDArray[np.bool_]:
        """Labels whose weighted p-value exceeds ``1 - confidence_level``."""
        return np.asarray(self.p_values(proba) > self._alpha)

    def set_at(self, proba: NDArray[np.float64], quantile: float) -> NDArray[np.bool_]:
        """Not defined for weighted p-values (the quantile differs per row)."""
        raise ConfigError(
            "set_at(quantile) has no meaning for an adapted (weighted) predictor: each row has "
            "its own quantile. Compare p_values(proba) with 1 - level instead."
        )

    def _conf_cred(
        self, p: NDArray[np.float64], predicted: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n, k = p.shape
        if k < 2:
            return np.ones(n), np.ones(n)
        own = np.take_along_axis(p, predicted[:, None], axis=1)[:, 0]
        others = p.copy()
        np.put_along_axis(others, predicted[:, None], -np.inf, axis=1)
        best_other = others.max(axis=1)
        confidence = np.where(own >= best_other, 1.0 - best_other, 0.0)
        return np.asarray(confidence, dtype=np.float64), np.asarray(own, dtype=np.float64)

    def confidence(
        self,
        proba: NDArray[np.float64],
        predicted: NDArray[np.intp] | None = None,
        groups: Any = None,
    ) -> NDArray[np.float64]:
        """``1 -`` the largest weighted p-value among the other labels (0 if one beats it)."""
        pred = np.argmax(proba, axis=1) if predicted is None else predicted
        return self._conf_cred(self.p_values(proba), pred)[0]

    def credibility(
        self,
        proba: NDArray[np.float64],
        predicted: NDArray[np.intp] | None = None,
        groups: Any = None,
    ) -> NDArray[np.float64]:
        """The weighted p-value of the predicted label."""
        pred = np.argmax(proba, axis=1) if predicted is None else predicted
        return self._conf_cred(self.p_values(proba), pred)[1]

    def set_confidence_credibility(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp], groups: Any = None
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """Set, confidence and credibility from one pass of weighted p-values."""
        p = self.p_values(proba)
        conf, cred = self._conf_cred(p, predicted)
        return np.asarray(p > self._alpha), conf, cred

    def to_state(self) -> dict[str, Any]:
        """Refused: an adapted predictor is rebuilt with ``adapt_to``, never saved."""
        raise PersistenceError(_NOT_SAVED)


# ------------------------------------------------------------------ regression
@dataclass
class WeightedRegressionConformal(RegressionConformal):
    """Regression conformal state with a weighted quantile per row (covariate shift).

    ``"absolute"``: ``y_hat +- q(x)``; ``"cqr"``: ``[lo(x) - q(x), up(x) + q(x)]``
    with the symmetric CQR score ``max(lo - y, y - up)``. ``q(x)`` is the
    weighted quantile of :func:`weighted_quantiles`; ``+inf`` (an infinite
    interval, so the row abstains as ``invalid_output``) where the row's weight
    is too large for the calibration mass.
    """

    row_scores: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)
    row_weights: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0), repr=False)
    domain: Any = field(default=None, repr=False)

    @classmethod
    def from_base(
        cls,
        base: RegressionConformal,
        X_model: Any,
        y: NDArray[np.float64],
        y_pred: NDArray[np.float64],
        row_weights: NDArray[np.float64],
        *,
        domain: Any,
    ) -> WeightedRegressionConformal:
        """Weighted state from the original one and the calibration rows."""
        if base.method == "absolute":
            scores = np.abs(y - y_pred)
        elif base.method == "cqr":
            lo, up = _cqr_bounds(base, X_model)
            scores = np.maximum(lo - y, y - up)
        else:
            raise ConfigError(
                f"adapt_to supports conformity_score 'absolute' and 'cqr' for regression; this "
                f"predictor uses {base.method!r} (its residual model was fitted on part of the "
                "calibration rows). Calibrate with conformity_score='absolute' to adapt it."
            )
        init = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
        ok = np.isfinite(scores)
        return cls(
            **init,
            row_scores=np.asarray(scores[ok], dtype=np.float64),
            row_weights=np.asarray(row_weights[ok], dtype=np.float64),
            domain=domain,
        )

    def quantiles(self, X: Any) -> NDArray[np.float64]:
        """The weighted conformal quantile of each row of ``X``."""
        w = self.domain.weights(X)
        return weighted_quantiles(self.row_scores, self.row_weights, w, self.confidence_level)

    def interval(self, X: Any, y_pred: NDArray[np.float64]) -> NDArray[np.float64]:
        """Lower and upper bounds per row with the row's weighted quantile."""
        q = self.quantiles(X)
        if self.method == "absolute":
            return np.column_stack([y_pred - q, y_pred + q])
        lo, up = _cqr_bounds(self, X)
        return np.column_stack([lo - q, up + q])

    def to_state(self) -> dict[str, Any]:
        """Refused: an adapted predictor is rebuilt with ``adapt_to``, never saved."""
        raise PersistenceError(_NOT_SAVED)


def _cqr_bounds(
    conformal: RegressionConformal, X: Any
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    assert conformal.quantile_models is not None
    lower, upper = conformal.quantile_models
    lo = np.asarray(lower.predict(X), dtype=np.float64).ravel()
    up = np.asarray(upper.predict(X), dtype=np.float64).ravel()
    return lo, up
