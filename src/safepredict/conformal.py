"""Conformal prediction adapter: the only module that imports mapie.

Calibration goes through MAPIE's ``SplitConformalClassifier`` /
``SplitConformalRegressor`` / ``ConformalizedQuantileRegressor``
``conformalize``. The calibrated state (the conformity scores, the quantile(s),
RAPS's ``k_star``/``lambda_star``, the residual model of
``residual_normalized``) is then extracted and kept here, so the per-row path
computes prediction sets and intervals directly from the model output with plain
numpy, without paying MAPIE's per-call overhead. The arithmetic is MAPIE 1.x's
own (same operations in the same order, same ``EPSILON`` comparisons), and the
tests prove the sets and intervals are identical to MAPIE's ``predict_set`` /
``predict_interval``.

Per-row conformal p-values and the conformal confidence (Vovk's confidence: the
largest level at which the set is the predicted label alone) are derived from
the same calibration scores so that, for every level ``L`` MAPIE accepts,
``label in set(L)  <=>  p_value(label) > 1 - L``.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
from mapie import __version__ as mapie_version
from mapie.classification import SplitConformalClassifier
from mapie.conformity_scores import ResidualNormalisedScore
from mapie.regression import ConformalizedQuantileRegressor, SplitConformalRegressor
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LinearRegression

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


def _check_size(n: int, confidence_level: float, what: str = "calibration") -> None:
    need = _min_calibration_rows(confidence_level)
    if n < need:
        raise CalibrationError(
            f"{what} needs at least {need} rows for confidence_level={confidence_level} "
            f"(got {n}); pass more calibration rows or lower confidence_level."
        )


def _alpha(confidence_level: float) -> float:
    """``1 - confidence_level`` computed in decimal, exactly as MAPIE 1.x derives its alpha."""
    return float(Decimal("1") - Decimal(str(confidence_level)))


# MAPIE private API. Each private name is reached through exactly one of the three
# functions below; tests/test_conformal.py calls each on real MAPIE objects, so an
# upgrade that renames one fails there with the message of _mapie_private.
def _mapie_private(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise CalibrationError(
            f"MAPIE {mapie_version} has no {type(obj).__name__}.{name}, which "
            "safepredict reads to extract the calibrated state (tested with MAPIE 1.x); "
            "install a MAPIE version supported by this safepredict release."
        ) from None


def _classifier_backend(split: Any) -> Any:
    """The v0 classifier behind ``SplitConformalClassifier`` (holds the conformity scores)."""
    return _mapie_private(split, "_mapie_classifier")


def _regressor_backend(split: Any) -> Any:
    """The v0 regressor behind ``SplitConformalRegressor`` (holds the conformity scores)."""
    return _mapie_private(split, "_mapie_regressor")


def _raps_regularized(score_fn: Any, raw: NDArray[np.float64]) -> NDArray[np.float64]:
    """RAPS's regularized calibration scores (``k_star``/``lambda_star`` applied)."""
    regularize = _mapie_private(score_fn, "_regularize_conformity_score")
    out = regularize(score_fn.k_star, score_fn.lambda_star, raw, score_fn.cutoff)
    return np.asarray(out, dtype=np.float64)


def _kept_counts(
    sorted_scores: NDArray[np.float64], thresholds: NDArray[np.float64], *, strict: bool
) -> NDArray[np.intp]:
    """For every threshold ``t``: how many calibration scores ``q`` keep the label.

    MAPIE keeps a label when ``t - q <= EPSILON`` (LAC, ``t = 1 - p``) or when
    ``t - q < -EPSILON`` (APS/RAPS, ``t`` = cumulated score before the label).
    Both predicates are monotone in ``q``, so the kept scores are the top of the
    sorted array; ``searchsorted`` finds the boundary and a correction pass
    re-checks it with MAPIE's own floating-point expression, so the count is
    exact even for probabilities within rounding of ``EPSILON``.
    """
    n = len(sorted_scores)

    def keeps(t: NDArray[np.float64], q: NDArray[np.float64]) -> NDArray[np.bool_]:
        return np.asarray(t - q < -EPSILON) if strict else np.asarray(t - q <= EPSILON)

    side: Any = "right" if strict else "left"
    keys = (thresholds + EPSILON if strict else thresholds - EPSILON).ravel()
    if keys.size > 1000:  # sorted keys let searchsorted reuse its last position
        order = np.argsort(keys)
        flat = np.empty(keys.size, dtype=np.intp)
        flat[order] = np.searchsorted(sorted_scores, keys[order], side=side)
    else:
        flat = np.searchsorted(sorted_scores, keys, side=side)
    if n == 0:
        return np.zeros(thresholds.shape, dtype=np.intp)
    t_flat = thresholds.ravel()
    # Re-check the boundary with MAPIE's exact expression; fix only the few rows off by
    # a rounding unit (jumping over runs of tied scores).
    wrong = ((flat > 0) & keeps(t_flat, sorted_scores[np.maximum(flat - 1, 0)])) | (
        (flat < n) & ~keeps(t_flat, sorted_scores[np.minimum(flat, n - 1)])
    )
    fix = np.flatnonzero(wrong)
    if len(fix):
        counts = _kept_counts_small(sorted_scores.tolist(), t_flat[fix].tolist(), strict=strict)
        flat[fix] = n - np.asarray(counts, dtype=np.intp)
    return np.asarray(n - flat, dtype=np.intp).reshape(thresholds.shape)


def _kept_counts_small(
    sorted_list: list[float], thresholds: list[float], *, strict: bool
) -> list[int]:
    """:func:`_kept_counts` for a handful of thresholds, in plain Python floats.

    Python floats are IEEE doubles like numpy's float64, so ``t - q`` rounds
    identically; ``bisect`` avoids numpy's per-call overhead on single rows.
    """
    n = len(sorted_list)
    out = []
    for t in thresholds:
        if strict:
            i = bisect_right(sorted_list, t + EPSILON)
            while i > 0 and t - sorted_list[i - 1] < -EPSILON:
                i = bisect_left(sorted_list, sorted_list[i - 1])
            while i < n and not t - sorted_list[i] < -EPSILON:
                i = bisect_right(sorted_list, sorted_list[i])
        else:
            i = bisect_left(sorted_list, t - EPSILON)
            while i > 0 and t - sorted_list[i - 1] <= EPSILON:
                i = bisect_left(sorted_list, sorted_list[i - 1])
            while i < n and not t - sorted_list[i] <= EPSILON:
                i = bisect_right(sorted_list, sorted_list[i])
        out.append(n - i)
    return out


#: Batches up to this many rows take the plain-Python counting path.
_SMALL_BATCH = 4


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
        Sorted conformity scores of the calibration rows (for ``"raps"``: the
        regularized scores, with ``k_star``/``lambda_star`` of
        ``confidence_level``).
    quantile : float
        The conformal quantile MAPIE computes at ``confidence_level``.
    k_star, lambda_star : float, optional
        RAPS regularization (rank from which labels are penalized, penalty).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> cp = ClassificationConformal.calibrate(model, X[1::2], y[1::2], method="lac",
    ...                                        confidence_level=0.9)
    >>> proba = model.predict_proba(X[:2])
    >>> cp.predict_set(proba).sum(axis=1)
    array([1, 1])
    >>> bool((cp.confidence(proba) >= 0.9).all())
    True
    """

    method: str
    confidence_level: float
    classes: NDArray[Any]
    calibration_scores: NDArray[np.float64]
    quantile: float
    k_star: float | None = None
    lambda_star: float | None = None
    _scores_list: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._scores_list = self.calibration_scores.tolist()

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
        """Conformalize a fitted classifier on ``(X, y)`` with MAPIE.

        ``"aps"`` and ``"raps"`` use MAPIE's randomized calibration scores and
        ``"raps"`` holds out part of the calibration rows to choose
        ``k_star``/``lambda_star``: pass ``random_state`` to make them
        reproducible (MAPIE draws from numpy's global generator otherwise).
        """
        if method not in CLASSIFICATION_SCORES:
            raise ConfigError(
                f"conformity_score {method!r} is not a classification score; use one of "
                f"{list(CLASSIFICATION_SCORES)}."
            )
        classes = np.asarray(estimator.classes_)
        if method != "lac" and len(classes) < 3:
            raise ConfigError(
                f"conformity_score={method!r} needs 3 or more classes; binary targets support "
                "'lac' only. Use conformity_score='lac'."
            )
        _check_size(len(y), confidence_level)
        mapie = SplitConformalClassifier(
            estimator=_PrefitClassifier(estimator),
            confidence_level=confidence_level,
            conformity_score=method,
            prefit=True,
            random_state=random_state,
        )
        try:
            mapie.conformalize(X, y)
            inner = _classifier_backend(mapie)
            score_fn = inner.conformity_score_function_
            raw = np.asarray(inner.conformity_scores_, dtype=np.float64)
            alpha_np = np.array([_alpha(confidence_level)], dtype=np.float64)
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
        k_star = lambda_star = None
        scores = raw
        if method == "raps":
            k_star = float(np.ravel(score_fn.k_star)[0])
            lambda_star = float(np.ravel(score_fn.lambda_star)[0])
            scores = _raps_regularized(score_fn, raw)
        return cls(
            method=method,
            confidence_level=float(confidence_level),
            classes=classes,
            calibration_scores=np.sort(scores.ravel()),
            quantile=float(np.ravel(quantiles)[0]),
            k_star=k_star,
            lambda_star=lambda_star,
        )

    # ------------------------------------------------------------ sets
    def _sorted_cumsum(
        self, proba: NDArray[np.float64]
    ) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
        """Labels by decreasing probability and their (regularized) cumulated scores."""
        index_sorted = np.flip(np.argsort(proba, axis=1), axis=1)
        cumsum = np.cumsum(np.take_along_axis(proba, index_sorted, axis=1), axis=1)
        if self.method == "raps":
            assert self.k_star is not None
            assert self.lambda_star is not None
            ranks = np.cumsum(np.ones(cumsum.shape), axis=1)
            cumsum += self.lambda_star * np.maximum(0, ranks - self.k_star)
        return index_sorted, cumsum

    def predict_set(self, proba: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Membership of each class in the prediction set, shape ``(n, n_classes)``.

        Identical to MAPIE's ``predict_set`` (``include_last_label=True``).
        """
        if self.method == "lac":
            return np.asarray((1 - proba) - self.quantile <= EPSILON)
        return self._adaptive_set(proba, self.quantile)

    def _adaptive_set(self, proba: NDArray[np.float64], quantile: float) -> NDArray[np.bool_]:
        # MAPIE's APS/RAPS prediction phase, without the alpha axis.
        index_sorted, sorted_cumsum = self._sorted_cumsum(proba)
        cumsum = np.take_along_axis(sorted_cumsum, np.argsort(index_sorted, axis=1), axis=1)
        diff = cumsum - quantile
        # np.ma.masked_less(diff, -EPSILON).argmin(axis=1): masked entries count as +inf.
        index_last = np.where(diff < -EPSILON, np.inf, diff).argmin(axis=1)[:, None]
        proba_last = np.take_along_axis(proba, index_last, axis=1)
        zero = proba_last <= EPSILON
        if zero.any():
            smallest = np.where(proba < EPSILON, np.inf, proba).min(axis=1, keepdims=True)
            proba_last = np.where(zero, smallest, proba_last)
        return np.asarray(proba - proba_last >= -EPSILON)

    def set_at(self, proba: NDArray[np.float64], quantile: float) -> NDArray[np.bool_]:
        """The prediction set for another ``quantile`` of the calibration scores.

        ``quantile = calibration_scores[k - 1]`` gives the set at any level ``L``
        with ``ceil((n + 1) * L) == k``. For ``"raps"`` the regularization stays
        the one calibrated at ``confidence_level``.
        """
        if self.method == "lac":
            return np.asarray((1 - proba) - quantile <= EPSILON)
        return self._adaptive_set(proba, quantile)

    # ------------------------------------------------------------ p-values
    def label_scores(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per-label threshold the quantile is compared to, shape ``(n, n_classes)``.

        LAC: ``1 - p``. APS/RAPS: the (regularized) cumulated score of the labels
        ranked before the first label MAPIE's rule would keep together with this
        one; ``-inf`` for labels always kept, ``+inf`` for labels never kept.
        """
        if self.method == "lac":
            return np.asarray(1.0 - proba)
        n_rows, n_classes = proba.shape
        index_sorted, sorted_cumsum = self._sorted_cumsum(proba)
        proba_sorted = np.take_along_axis(proba, index_sorted, axis=1)
        # Probability of the last kept label if the set stops at sorted rank r
        # (MAPIE replaces a (near) zero probability by the row's smallest non-zero).
        last = proba_sorted.copy()
        zero = last <= EPSILON
        if zero.any():
            smallest = np.where(proba < EPSILON, np.inf, proba).min(axis=1, keepdims=True)
            last = np.where(zero, smallest, last)
        # kept[i, y, r]: label y is in the set when the set stops at rank r.
        kept = proba[:, :, None] - last[:, None, :] >= -EPSILON
        first = np.where(kept.any(axis=2), kept.argmax(axis=2), n_classes)
        padded = np.concatenate(
            [np.full((n_rows, 1), -np.inf), sorted_cumsum, np.full((n_rows, 1), np.inf)], axis=1
        )
        # Stopping at rank >= r needs the cumulated score up to rank r - 1 below q.
        return np.take_along_axis(padded, first, axis=1)

    def _counts(self, proba: NDArray[np.float64]) -> NDArray[np.intp]:
        """Per label: how many calibration scores, taken as the quantile, keep it."""
        t = self.label_scores(proba)
        counts = _kept_counts(self.calibration_scores, t, strict=self.method != "lac")
        if self.method != "lac":
            n = len(self.calibration_scores)
            counts = np.where(t == -np.inf, n, np.where(t == np.inf, 0, counts))
        return counts

    def p_values(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Conformal p-value of every label, shape ``(n, n_classes)``.

        ``p = (1 + c) / (n + 1)`` where ``c`` counts the calibration scores that
        keep the label when used as the quantile, so
        ``label in set at level L  <=>  p_value > 1 - L`` for every level MAPIE
        accepts (``L <= n / (n + 1)``; compare with ``1 - L`` computed exactly,
        e.g. ``0.2`` for ``L = 0.8``). APS/RAPS labels MAPIE never keeps get
        ``1 / (n + 1)``, the top label (always kept) gets ``1``.
        """
        n = len(self.calibration_scores)
        return np.asarray((self._counts(proba) + 1.0) / (n + 1.0), dtype=np.float64)

    def confidence(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp] | None = None
    ) -> NDArray[np.float64]:
        """Vovk's confidence: ``1 -`` the largest p-value among the other labels.

        The largest level at which the set holds no label but the predicted
        one (the set is the predicted label alone, or empty). Computed as
        ``(n - c) / (n + 1)`` so it equals a decimal level exactly when it
        should; ``0`` when another label has a larger p-value than the
        predicted one. ``predicted`` defaults to ``argmax(proba)`` (MAPIE's
        prediction). So, at every level ``L`` MAPIE accepts: ``set size <= 1``
        (with the predicted label, if any)  ``<=>  confidence >= L``.
        """
        if predicted is None:
            predicted = np.argmax(proba, axis=1)
        return self._confidence_credibility(proba, self.label_scores(proba), predicted)[0]

    def credibility(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp] | None = None
    ) -> NDArray[np.float64]:
        """Conformal credibility: the p-value of the predicted label.

        For the arg-max prediction this is the largest p-value of the row. A row
        exchangeable with the calibration rows has
        ``P(credibility < a) <= a`` for every ``a`` (its true label's p-value is
        super-uniform and never exceeds the largest one): a credibility check
        ``credibility >= a`` raises false alarms on at most a fraction ``a`` of
        typical rows. The set at level ``L`` is empty exactly when
        ``credibility <= 1 - L``. APS/RAPS always keep the top label, so its
        credibility is 1 there: the check is informative with ``"lac"``.
        """
        if predicted is None:
            predicted = np.argmax(proba, axis=1)
        return self._confidence_credibility(proba, self.label_scores(proba), predicted)[1]

    def _confidence_credibility(
        self, proba: NDArray[np.float64], t: NDArray[np.float64], predicted: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n_rows, n_classes = t.shape
        n = len(self.calibration_scores)
        if n_classes < 2:
            return np.ones(n_rows), np.ones(n_rows)
        if self.method == "lac":
            # The predicted (arg-max) label has the smallest threshold 1 - p: partition
            # gives it and the best other label's threshold in one call.
            pair = np.partition(t, 1, axis=1)[:, :2]
        else:
            own = np.take_along_axis(t, predicted[:, None], axis=1)
            others = t.copy()
            np.put_along_axis(others, predicted[:, None], np.inf, axis=1)
            pair = np.concatenate([own, others.min(axis=1, keepdims=True)], axis=1)
        strict = self.method != "lac"
        if n_rows <= _SMALL_BATCH:  # plain Python end to end: numpy calls cost more here
            keys = pair.ravel().tolist()
            c = _kept_counts_small(self._scores_list, keys, strict=strict)
            conf: list[float] = []
            cred: list[float] = []
            for r in range(n_rows):
                own_c, other_c = c[2 * r], c[2 * r + 1]
                if strict:  # -inf: label always kept, +inf: never kept
                    own_c = n if keys[2 * r] == -math.inf else own_c
                    other_c = 0 if keys[2 * r + 1] == math.inf else other_c
                conf.append((n - other_c) / (n + 1.0) if own_c >= other_c else 0.0)
                cred.append((own_c + 1.0) / (n + 1.0))
            return np.array(conf, dtype=np.float64), np.array(cred, dtype=np.float64)
        counts = _kept_counts(self.calibration_scores, pair, strict=strict)
        if strict:  # -inf: label always kept, +inf: never kept
            counts = np.where(pair == -np.inf, n, np.where(pair == np.inf, 0, counts))
        own_counts, other_counts = counts[:, 0], counts[:, 1]
        confidence = np.where(own_counts >= other_counts, (n - other_counts) / (n + 1.0), 0.0)
        credibility = np.asarray((own_counts + 1.0) / (n + 1.0), dtype=np.float64)
        return np.asarray(confidence, dtype=np.float64), credibility

    def _lac_small(
        self, proba: NDArray[np.float64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """LAC set, confidence and credibility for a few rows in plain Python floats.

        Same IEEE double arithmetic as the numpy path (``1 - p``, ``t - q <= EPSILON``),
        without numpy's per-call cost; the tests check both paths agree bit for bit.
        """
        q = self.quantile
        n = len(self.calibration_scores)
        masks: list[list[bool]] = []
        conf: list[float] = []
        cred: list[float] = []
        for row in proba.tolist():
            t = [1 - p for p in row]
            masks.append([ti - q <= EPSILON for ti in t])
            own_t, other_t = sorted(t)[:2]
            own_c, other_c = _kept_counts_small(self._scores_list, [own_t, other_t], strict=False)
            conf.append((n - other_c) / (n + 1.0) if own_c >= other_c else 0.0)
            cred.append((own_c + 1.0) / (n + 1.0))
        mask = np.array(masks, dtype=bool).reshape(proba.shape)  # keeps (0, K) for no rows
        return mask, np.array(conf, dtype=np.float64), np.array(cred, dtype=np.float64)

    def set_and_confidence(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        """:meth:`predict_set` and :meth:`confidence` in one pass."""
        mask, conf, _ = self.set_confidence_credibility(proba, predicted)
        return mask, conf

    def set_confidence_credibility(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`predict_set`, :meth:`confidence` and :meth:`credibility` in one pass.

        The hot path of ``decide``.
        """
        if self.method == "lac":
            if len(proba) <= _SMALL_BATCH and proba.shape[1] >= 2:
                return self._lac_small(proba)
            t = 1 - proba
            conf, cred = self._confidence_credibility(proba, t, predicted)
            return np.asarray(t - self.quantile <= EPSILON), conf, cred
        conf, cred = self._confidence_credibility(proba, self.label_scores(proba), predicted)
        return self.predict_set(proba), conf, cred

    # ------------------------------------------------------------ persistence
    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (floats round-trip exactly through ``json``)."""
        return {
            "kind": "classification",
            "method": self.method,
            "confidence_level": self.confidence_level,
            "classes": self.classes.tolist(),
            "calibration_scores": self.calibration_scores.tolist(),
            "quantile": self.quantile,
            "k_star": self.k_star,
            "lambda_star": self.lambda_star,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClassificationConformal:
        """Restore what :meth:`to_state` saved."""
        return cls(
            method=str(state["method"]),
            confidence_level=float(state["confidence_level"]),
            classes=np.asarray(state["classes"]),
            calibration_scores=np.asarray(state["calibration_scores"], dtype=np.float64),
            quantile=float(state["quantile"]),
            k_star=None if state.get("k_star") is None else float(state["k_star"]),
            lambda_star=None if state.get("lambda_star") is None else float(state["lambda_star"]),
        )


def _regression_quantile(scores: NDArray[np.float64], level: float) -> float:
    """The split-conformal quantile at ``level`` with the finite-sample correction.

    MAPIE 1.x's rule (NaNs ignored): the ``ceil(level * (n + 1)) / n`` empirical
    quantile with numpy's ``method="lower"``; ``_check_size`` ensures it is finite.

    Examples
    --------
    >>> _regression_quantile(np.arange(1.0, 11.0), 0.8)  # ceil(8.8) = 9th of 10
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
        _check_size(len(y), confidence_level)
        score: Any = method
        if method == "residual_normalized":
            score = ResidualNormalisedScore(random_state=random_state)
        mapie = SplitConformalRegressor(
            estimator=_PrefitRegressor(estimator),
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
        inner = _regressor_backend(mapie)
        raw = np.asarray(inner.conformity_scores_, dtype=np.float64)
        alpha = _alpha(confidence_level)
        used = raw[~np.isnan(raw)]
        _check_size(len(used), confidence_level, "the conformal quantile")
        residual_model = None
        if method == "residual_normalized":
            residual_model = inner.conformity_score_function_.residual_estimator_
        return cls(
            method=method,
            confidence_level=float(confidence_level),
            calibration_scores=np.sort(used),
            quantile=_regression_quantile(raw, 1 - alpha),
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
        # MAPIE's order is (lower, upper, median).
        mapie = ConformalizedQuantileRegressor(
            [_PrefitRegressor(lower), _PrefitRegressor(upper), _PrefitRegressor(median)],
            confidence_level=confidence_level,
            prefit=True,
        )
        _check_size(len(y), 1 - (1 - confidence_level) / 2, "one-sided CQR calibration")
        try:
            mapie.conformalize(X, y)
        except ValueError as err:
            raise CalibrationError(
                f"MAPIE could not conformalize with CQR: {str(err).rstrip('.')}."
            ) from err
        scores = np.asarray(mapie.conformity_scores, dtype=np.float64)
        alpha = _alpha(confidence_level)
        # predict_interval's default (symmetric_correction=False): alpha / 2 per side.
        level = 1 - alpha / 2
        return cls(
            method="cqr",
            confidence_level=float(confidence_level),
            calibration_scores=np.sort(scores[2]),
            quantile=_regression_quantile(scores[0], level),
            quantile_upper=_regression_quantile(scores[1], level),
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
        if self.method == "absolute":
            return np.column_stack([y_pred + (-q), y_pred + q])
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
