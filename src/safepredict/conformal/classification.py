"""Split-conformal prediction sets, p-values, confidence and credibility for classifiers.

Calibration goes through MAPIE (:mod:`safepredict.conformal._mapie`); the
calibrated scores and quantile are kept here, so the per-row path computes
prediction sets with plain numpy, with MAPIE 1.x's own arithmetic (same
operations, same ``EPSILON`` comparisons): the sets are identical to MAPIE's
``predict_set``. For every level ``L`` MAPIE accepts,
``label in set(L)  <=>  p_value(label) > 1 - L``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import group_labels
from safepredict.conformal._counts import (
    EPSILON,
    SMALL_BATCH,
    check_size,
    kept_counts,
    kept_counts_small,
    lac_small,
)
from safepredict.conformal._mapie import conformalize_classifier
from safepredict.conformal.conditional import StratifiedPValues, check_options
from safepredict.exceptions import ConfigError

__all__ = ["CLASSIFICATION_SCORES", "ClassificationConformal"]

CLASSIFICATION_SCORES: tuple[str, ...] = ("lac", "aps", "raps")


@dataclass
class ClassificationConformal(StratifiedPValues):
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
    conditional : str, optional
        ``"class"``: label-conditional (Mondrian) p-values, each label against
        the calibration rows of that class; a column name: group-conditional,
        each row against the calibration rows of its group. ``None``: marginal.
    strata : dict of str to ndarray, default={}
        Sorted calibration scores per class label / group value (as text).
    smoothed : bool, default=False
        Smoothed (randomized) p-values: ties broken by a uniform draw per row,
        so coverage is exactly ``confidence_level`` in expectation (``"lac"``).
    random_state : int, optional
        Seed of the smoothing draws (one generator per state; reproducible).

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
    conditional: str | None = None
    strata: dict[str, NDArray[np.float64]] = field(default_factory=dict, repr=False)
    smoothed: bool = False
    random_state: int | None = None
    _scores_list: list[float] = field(default_factory=list, init=False, repr=False, compare=False)
    _rng: np.random.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._scores_list = self.calibration_scores.tolist()
        self._rng = np.random.default_rng(self.random_state)

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
        conditional: str | None = None,
        groups: Any = None,
        smoothed: bool = False,
    ) -> ClassificationConformal:
        """Conformalize a fitted classifier on ``(X, y)`` with MAPIE.

        ``"aps"`` and ``"raps"`` use MAPIE's randomized calibration scores and
        ``"raps"`` holds out part of the calibration rows to choose
        ``k_star``/``lambda_star``: pass ``random_state`` to make them
        reproducible (MAPIE draws from numpy's global generator otherwise).
        ``conditional`` (``"class"`` or a column name, with that column's
        values in ``groups``) keeps the calibration scores per class / group
        (:mod:`safepredict.conformal.pvalues`); ``smoothed`` randomizes ties.
        """
        check_options(method, conditional, groups, smoothed, len(y))
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
        check_size(len(y), confidence_level)
        fit = conformalize_classifier(
            estimator,
            X,
            y,
            method=method,
            confidence_level=confidence_level,
            random_state=random_state,
        )
        strata: dict[str, NDArray[np.float64]] = {}
        if conditional is not None:
            keys = group_labels(y if conditional == "class" else groups)
            strata = {str(k): np.sort(fit.scores[keys == k]) for k in np.unique(keys).tolist()}
        return cls(
            method=method,
            confidence_level=float(confidence_level),
            classes=classes,
            calibration_scores=np.sort(fit.scores),
            quantile=fit.quantile,
            k_star=fit.k_star,
            lambda_star=fit.lambda_star,
            conditional=conditional,
            strata=strata,
            smoothed=bool(smoothed),
            random_state=random_state,
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

    @property
    def plain(self) -> bool:
        """Marginal, unsmoothed: the sets are MAPIE's own (the fast path)."""
        return self.conditional is None and not self.smoothed

    def predict_set(self, proba: NDArray[np.float64], groups: Any = None) -> NDArray[np.bool_]:
        """Membership of each class in the prediction set, shape ``(n, n_classes)``.

        Identical to MAPIE's ``predict_set`` (``include_last_label=True``) when
        :attr:`plain`; otherwise ``{y : p_value(y) > 1 - confidence_level}``.
        """
        if not self.plain:
            return self._from_p_values(self.label_scores(proba), proba.argmax(axis=1), groups)[0]
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
        counts = kept_counts(self.calibration_scores, t, strict=self.method != "lac")
        if self.method != "lac":
            n = len(self.calibration_scores)
            counts = np.where(t == -np.inf, n, np.where(t == np.inf, 0, counts))
        return counts

    def p_values(self, proba: NDArray[np.float64], groups: Any = None) -> NDArray[np.float64]:
        """Conformal p-value of every label, shape ``(n, n_classes)``.

        ``p = (1 + c) / (n + 1)`` where ``c`` counts the calibration scores that
        keep the label when used as the quantile, so
        ``label in set at level L  <=>  p_value > 1 - L`` for every level MAPIE
        accepts (``L <= n / (n + 1)``; compare with ``1 - L`` computed exactly,
        e.g. ``0.2`` for ``L = 0.8``). APS/RAPS labels MAPIE never keeps get
        ``1 / (n + 1)``, the top label (always kept) gets ``1``. Conditional and
        smoothed states: :mod:`safepredict.conformal.pvalues`.
        """
        if not self.plain:
            num, den = self._stratified(self.label_scores(proba), groups)
            return num / den
        n = len(self.calibration_scores)
        return np.asarray((self._counts(proba) + 1.0) / (n + 1.0), dtype=np.float64)

    def confidence(
        self,
        proba: NDArray[np.float64],
        predicted: NDArray[np.intp] | None = None,
        groups: Any = None,
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
        if not self.plain:
            return self._from_p_values(self.label_scores(proba), predicted, groups)[1]
        return self._confidence_credibility(proba, self.label_scores(proba), predicted)[0]

    def credibility(
        self,
        proba: NDArray[np.float64],
        predicted: NDArray[np.intp] | None = None,
        groups: Any = None,
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
        if not self.plain:
            return self._from_p_values(self.label_scores(proba), predicted, groups)[2]
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
        if n_rows <= SMALL_BATCH:  # plain Python end to end: numpy calls cost more here
            keys = pair.ravel().tolist()
            c = kept_counts_small(self._scores_list, keys, strict=strict)
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
        counts = kept_counts(self.calibration_scores, pair, strict=strict)
        if strict:  # -inf: label always kept, +inf: never kept
            counts = np.where(pair == -np.inf, n, np.where(pair == np.inf, 0, counts))
        own_counts, other_counts = counts[:, 0], counts[:, 1]
        confidence = np.where(own_counts >= other_counts, (n - other_counts) / (n + 1.0), 0.0)
        credibility = np.asarray((own_counts + 1.0) / (n + 1.0), dtype=np.float64)
        return np.asarray(confidence, dtype=np.float64), credibility

    def set_and_confidence(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
        """:meth:`predict_set` and :meth:`confidence` in one pass."""
        mask, conf, _ = self.set_confidence_credibility(proba, predicted)
        return mask, conf

    def set_confidence_credibility(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp], groups: Any = None
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """:meth:`predict_set`, :meth:`confidence` and :meth:`credibility` in one pass.

        The hot path of ``decide`` (smoothed: one draw per row shared by all three).
        """
        if not self.plain:
            return self._from_p_values(self.label_scores(proba), predicted, groups)
        if self.method == "lac":
            if len(proba) <= SMALL_BATCH and proba.shape[1] >= 2:
                return lac_small(proba, self.quantile, self._scores_list)
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
            "conditional": self.conditional,
            "strata": {k: v.tolist() for k, v in self.strata.items()},
            "smoothed": self.smoothed,
            "random_state": self.random_state,
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
            conditional=None if state.get("conditional") is None else str(state["conditional"]),
            strata={
                str(k): np.asarray(v, dtype=np.float64)
                for k, v in (state.get("strata") or {}).items()
            },
            smoothed=bool(state.get("smoothed", False)),
            random_state=None if state.get("random_state") is None else int(state["random_state"]),
        )
