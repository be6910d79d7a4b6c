"""Scored data: per-row scores, errors and conformal results, from a predictor."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict.config import Tier
from safepredict.conformal import ClassificationConformal
from safepredict.exceptions import ConfigError, InputSchemaError
from safepredict.tiers import (
    TierInputs,
)

if TYPE_CHECKING:
    from safepredict.predictor import SafePredictor


# --------------------------------------------------------------------------- data
@dataclass
class ScoredData:
    """Per-row scores, errors and conformal results the benchmark works on.

    Build it with :func:`score_predictor` (a calibrated predictor and labelled
    data), :func:`load_decision_log` (a production log joined with outcomes) or
    :meth:`from_arrays`.

    Attributes
    ----------
    task : {"classification", "regression"}
        What the model predicts.
    errors : ndarray of bool or None
        Whether each answer is wrong (regression: ``|y - y_hat| > tolerance``;
        ``None`` when no tolerance was given).
    scores : dict of str to ndarray
        Confidence scores by name, higher is more confident (classification:
        ``conformal``, ``top_prob``, ``margin``, ``entropy`` = minus the
        entropy of the predicted probabilities).
    set_size : ndarray of int or None
        Size of the conformal prediction set (classification).
    covered : ndarray of bool or None
        Whether the true label / value is in the conformal set / interval.
    width : ndarray or None
        Width of the conformal interval (regression).
    predicted_class : ndarray of int or None
        Index of the predicted class (for per-class thresholds).
    abs_residual : ndarray or None
        ``|y - y_hat|`` (regression), for ``max_error`` tiers with a tolerance.
    blocked_action : ndarray of str or None
        ``"review"``/``"abstain"`` for rows a guard (or a model failure) took
        out of the tiers, ``""`` otherwise. Such rows never reach a tier.
    logged_tier, logged_action : ndarray or None
        The tier and action the rows actually got (predictor output or log).
    confidence_level : float or None
        Level of the conformal sets / intervals.
    sweep : list of dict or None
        Empirical coverage and mean set size at several confidence levels.
    ids : ndarray or None
        Decision ids.
    guard_tier : str
        Tier name of the rows a guard blocked.
    n_classes : int or None
        Number of classes (classification), for per-class tiers.
    credibility : ndarray or None
        Conformal credibility of each row (classification), for
        ``min_credibility`` tiers.
    """

    task: str
    errors: NDArray[np.bool_] | None
    scores: dict[str, NDArray[np.float64]]
    set_size: NDArray[np.intp] | None = None
    covered: NDArray[np.bool_] | None = None
    width: NDArray[np.float64] | None = None
    predicted_class: NDArray[np.intp] | None = None
    abs_residual: NDArray[np.float64] | None = None
    blocked_action: NDArray[Any] | None = None
    logged_tier: NDArray[Any] | None = None
    logged_action: NDArray[Any] | None = None
    confidence_level: float | None = None
    sweep: list[dict[str, float]] | None = None
    ids: NDArray[Any] | None = None
    guard_tier: str = "guard"
    n_classes: int | None = None
    credibility: NDArray[np.float64] | None = None
    _orders: dict[str, NDArray[np.intp]] = field(default_factory=dict, repr=False, compare=False)
    _views: dict[str, ScoredData] = field(default_factory=dict, repr=False, compare=False)

    def order(self, score: str) -> NDArray[np.intp]:
        """Row order by ``score``, most confident first (``nan`` last); computed once."""
        if score not in self._orders:
            s = self.scores[score]
            self._orders[score] = np.argsort(-np.where(np.isnan(s), -np.inf, s))
        return self._orders[score]

    def _certification_view(self, score: str) -> ScoredData:
        """Rows no guard blocked, sorted by ``score``; built once per score and cached.

        Certification on sorted rows skips its ``O(n log n)`` sort, and its result
        does not depend on the row order.
        """
        view = self._views.get(score)
        if view is None:
            rows = self.order(score) if score in self.scores else np.arange(len(self))
            if self.blocked_action is not None:
                rows = rows[(self.blocked_action == "")[rows]]
            view = self.take(rows)
            self._views[score] = view
        return view

    def sorted_by(self, score: str) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Scores and errors sorted by ``score``, most confident first.

        Curves and certification of sorted input skip the ``O(n log n)`` sort.
        """
        if self.errors is None:
            raise ConfigError("these data have no errors; pass labelled data.")
        idx = self.order(score)
        return self.scores[score][idx], self.errors[idx]

    def __len__(self) -> int:
        if self.errors is not None:
            return len(self.errors)
        return len(next(iter(self.scores.values()))) if self.scores else 0

    @classmethod
    def from_arrays(
        cls,
        errors: ArrayLike,
        scores: Mapping[str, ArrayLike],
        *,
        set_size: ArrayLike | None = None,
        covered: ArrayLike | None = None,
        predicted_class: ArrayLike | None = None,
    ) -> ScoredData:
        """Classification data from plain arrays (e.g. scores computed elsewhere).

        Examples
        --------
        >>> d = ScoredData.from_arrays([0, 1], {"conformal": [0.99, 0.4]}, set_size=[1, 2])
        >>> len(d), d.errors.tolist()
        (2, [False, True])
        """
        e = np.asarray(errors).astype(bool).reshape(-1)
        s = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in scores.items()}
        for k, v in s.items():
            if len(v) != len(e):
                raise ConfigError(
                    f"score {k!r} has {len(v)} values but errors has {len(e)}; pass one value "
                    "per row."
                )
        return cls(
            task="classification",
            errors=e,
            scores=s,
            set_size=None if set_size is None else np.asarray(set_size, dtype=np.intp),
            covered=None if covered is None else np.asarray(covered, dtype=bool),
            predicted_class=None
            if predicted_class is None
            else np.asarray(predicted_class, dtype=np.intp),
        )

    def take(self, rows: NDArray[np.intp]) -> ScoredData:
        """The same data restricted to ``rows``."""

        def sub(a: Any) -> Any:
            return None if a is None else a[rows]

        return ScoredData(
            task=self.task,
            errors=sub(self.errors),
            scores={k: v[rows] for k, v in self.scores.items()},
            set_size=sub(self.set_size),
            covered=sub(self.covered),
            width=sub(self.width),
            predicted_class=sub(self.predicted_class),
            abs_residual=sub(self.abs_residual),
            blocked_action=sub(self.blocked_action),
            logged_tier=sub(self.logged_tier),
            logged_action=sub(self.logged_action),
            confidence_level=self.confidence_level,
            sweep=None,
            ids=sub(self.ids),
            guard_tier=self.guard_tier,
            n_classes=self.n_classes,
            credibility=sub(self.credibility),
        )

    def tier_inputs(self) -> TierInputs:
        """The per-row quantities :func:`safepredict.tiers.assign_tiers` needs."""
        n = len(self)
        if self.task == "regression":
            # As the predictor: no conformal confidence; a max_error tier thresholds minus
            # the interval width (narrower = surer) under the name "conformal".
            width = self.width if self.width is not None else np.full(n, np.nan)
            return TierInputs(
                self.task, np.full(n, np.nan), width=width, scores={"conformal": -width}
            )
        confidence = self.scores.get("conformal", np.full(n, np.nan))
        return TierInputs(
            self.task,
            confidence,
            set_size=self.set_size,
            width=self.width,
            scores={
                k: v for k, v in self.scores.items() if k in ("conformal", "top_prob", "margin")
            },
            predicted_class=self.predicted_class,
            credibility=self.credibility,
        )

    def tier_errors(self, tier: Tier) -> NDArray[np.bool_]:
        """What counts as an error for ``tier`` (regression uses its tolerance)."""
        if self.task == "regression":
            if self.abs_residual is None or tier.tolerance is None:
                return np.ones(len(self), dtype=bool)
            return np.asarray(self.abs_residual > tier.tolerance, dtype=bool)
        if self.errors is None:
            raise ConfigError("these data have no errors; pass labelled data.")
        return self.errors


def probability_scores(proba: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """Top-class probability, margin and minus entropy of each row's probabilities."""
    n, k = proba.shape
    if k >= 2:
        top2 = np.partition(proba, -2, axis=1)[:, -2:]
        top, second = top2[:, 1], top2[:, 0]
    else:
        top, second = (proba[:, 0] if k else np.zeros(n)), np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(proba > 0, proba * np.log(np.where(proba > 0, proba, 1.0)), 0.0)
    return {"top_prob": top, "margin": top - second, "entropy": plogp.sum(axis=1)}


_SWEEP_LEVELS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99)


def score_predictor(
    predictor: SafePredictor,
    X: Any,
    y: Any,
    *,
    tolerance: float | None = None,
    levels: Sequence[float] = _SWEEP_LEVELS,
) -> ScoredData:
    """Score labelled data with a calibrated predictor, without side effects.

    The predictor decides on a copy with logging, routing and explanations
    switched off, so benchmarking neither writes events nor fills the review
    queue.

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor.
    X : array-like or DataFrame
        Rows with the calibration features.
    y : array-like
        True labels / values.
    tolerance : float, optional
        Regression: an answer is an error when ``|y - y_hat| > tolerance``.
    levels : sequence of float
        Confidence levels of the coverage / set-size sweep (classification).

    Returns
    -------
    ScoredData

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from safepredict import SafePredictor
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    >>> data = score_predictor(sp, X[2::3], y[2::3])
    >>> sorted(data.scores), len(data)
    (['conformal', 'entropy', 'margin', 'top_prob'], 50)
    """
    predictor._check_calibrated("score_predictor")
    quiet = copy.copy(predictor)
    quiet.router = None
    quiet.log = "off"
    quiet.explainer = None
    decisions = quiet.decide(X)
    y_arr = np.asarray(y).reshape(-1)
    if len(y_arr) != len(decisions):
        raise InputSchemaError(
            f"y has {len(y_arr)} values but X has {len(decisions)} rows; pass one label per row.",
            problems=[f"len(y)={len(y_arr)}, rows={len(decisions)}"],
        )
    policy = predictor.policy_
    guard_code = len(policy.tiers)
    blocked = decisions.tier_codes == guard_code
    blocked_action = np.where(blocked, decisions.actions, "").astype(object)
    common: dict[str, Any] = {
        "blocked_action": blocked_action,
        "logged_tier": decisions.tiers,
        "logged_action": np.asarray(decisions.actions, dtype=object),
        "confidence_level": float(predictor.confidence_level),
        "ids": decisions.decision_ids,
        "guard_tier": policy.guard_tier,
    }
    failed = np.array([p is None for p in decisions.predictions], dtype=bool)
    if predictor.task_ == "classification":
        assert decisions.probabilities is not None
        assert decisions.set_mask is not None
        classes = np.asarray(predictor.classes_)
        proba = np.where(failed[:, None], 0.0, decisions.probabilities)
        predicted = np.argmax(proba, axis=1)
        lookup = {c: i for i, c in enumerate(classes.tolist())}
        y_idx = np.array([lookup.get(v, -1) for v in y_arr.tolist()], dtype=np.intp)
        errors = (predicted != y_idx) | failed
        scores = {"conformal": np.asarray(decisions.confidence, dtype=np.float64)}
        scores.update(probability_scores(proba))
        for v in scores.values():
            v[failed] = np.nan
        rows = np.arange(len(y_idx))
        known = y_idx >= 0
        covered = np.zeros(len(y_idx), dtype=bool)
        covered[known] = decisions.set_mask[rows[known], y_idx[known]]
        sweep = _conformal_sweep(predictor, proba, y_idx, failed, levels)
        return ScoredData(
            task="classification",
            errors=np.asarray(errors, dtype=bool),
            scores=scores,
            set_size=np.asarray(decisions.set_mask.sum(axis=1), dtype=np.intp),
            covered=covered,
            predicted_class=np.asarray(predicted, dtype=np.intp),
            sweep=sweep,
            n_classes=len(classes),
            credibility=np.where(failed, np.nan, _credibility(predictor, proba, predicted)),
            **common,
        )
    assert decisions.intervals is not None
    y_true = y_arr.astype(np.float64)
    y_hat = np.array([np.nan if p is None else float(p) for p in decisions.predictions])
    lo, hi = decisions.intervals[:, 0], decisions.intervals[:, 1]
    width = hi - lo
    residual = np.abs(y_true - y_hat)
    residual[failed] = np.inf
    return ScoredData(
        task="regression",
        errors=None if tolerance is None else np.asarray(residual > tolerance, dtype=bool),
        scores={"interval": -width},
        covered=np.asarray((lo <= y_true) & (y_true <= hi), dtype=bool),
        width=width,
        abs_residual=residual,
        **common,
    )


def _conformal_sweep(
    predictor: SafePredictor,
    proba: NDArray[np.float64],
    y_idx: NDArray[np.intp],
    failed: NDArray[np.bool_],
    levels: Sequence[float],
) -> list[dict[str, float]] | None:
    """Empirical coverage and mean set size of the conformal sets at several levels."""
    conformal = predictor.conformal_
    p_values_fn = getattr(conformal, "p_values", None)
    if p_values_fn is None or len(proba) == 0:
        return None
    if getattr(conformal, "conditional", None) not in (None, "class"):
        return None  # group-conditional sets need each row's group, which the sweep lacks
    ok = ~failed & (y_idx >= 0)
    p = np.asarray(p_values_fn(proba[ok]))
    truth = p[np.arange(len(p)), y_idx[ok]]
    out = []
    for level in sorted(set(levels)):
        alpha = 1.0 - float(level)
        out.append(
            {
                "confidence_level": float(level),
                "coverage": float(np.mean(truth > alpha)) if len(p) else math.nan,
                "mean_set_size": float(np.mean((p > alpha).sum(axis=1))) if len(p) else math.nan,
            }
        )
    return out


def _credibility(predictor: Any, proba: NDArray[np.float64], predicted: NDArray[Any]) -> Any:
    """Conformal credibility of each row (what ``min_credibility`` tiers read)."""
    conformal = predictor.conformal_
    assert isinstance(conformal, ClassificationConformal)
    return conformal.credibility(proba, np.asarray(predicted, dtype=np.intp))
