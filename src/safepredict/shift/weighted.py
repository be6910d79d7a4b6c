"""Weighted conformal sets/intervals and weighted certification of ``max_error`` tiers.

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

**max_error tiers.** A tier accepting rows with ranking key ``>= t`` keeps the
production error rate among accepted rows at most ``m`` exactly when
``E_cal[w a_t (e - m)] <= 0`` (``a_t``: accepted, ``e``: wrong), because
``E_prod[f] = E_cal[w f]`` for the true likelihood ratio ``w``. With weights
bounded by ``B`` (the clip), ``z = w a_t (e - m) / B`` lies in ``[-1, 1]`` and the
null hypothesis ``H_t: rate > m`` makes ``E[z] > 0``. The test martingale of
the betting confidence sequence in :mod:`safepredict._stats`
(Waudby-Smith and Ramdas, 2024) then gives a valid p-value
``1 / max_k K_k`` for ``H_t`` (Ville's inequality). Candidate thresholds are
tested strictest first in a fixed sequence (Learn-then-Test, Angelopoulos et
al., 2021), so with probability ``>= 1 - delta`` the certified threshold's
production error rate is at most ``m``. Assumptions: the weights are the true
likelihood ratio (a domain classifier or prior estimate that is right, and
clipping that does not bind) and there is no concept shift.

References
----------
Tibshirani, R. J., Foygel Barber, R., Candes, E. J. and Ramdas, A. (2019).
Conformal prediction under covariate shift. *NeurIPS 32* (arXiv:1904.06019).

Podkopaev, A. and Ramdas, A. (2021). Distribution-free uncertainty
quantification for classification under label shift. *UAI* (arXiv:2103.03323).

Angelopoulos, A. N., Bates, S., Candes, E. J., Jordan, M. I. and Lei, L. (2021).
Learn then test: calibrating predictive algorithms to achieve risk control.
arXiv:2110.01052.

Waudby-Smith, I. and Ramdas, A. (2024). Estimating means of bounded random
variables by betting. *JRSS-B* 86(1), 1-27.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._stats import betting_log_capital, rows_needed
from safepredict.config import TierPolicy
from safepredict.conformal import EPSILON, ClassificationConformal, RegressionConformal
from safepredict.exceptions import ConfigError, PersistenceError
from safepredict.tiers import (
    ACCEPT_ALL,
    CertifiedThreshold,
    TierCalibration,
    TierInputs,
    accept_at,
    assign_tiers,
    probability_tie_breaks,
    ranking_keys,
)

__all__ = [
    "WeightedClassificationConformal",
    "WeightedRegressionConformal",
    "betting_start",
    "calibrate_tiers_weighted",
    "certify_weighted",
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

    def p_values(self, proba: NDArray[np.float64]) -> NDArray[np.float64]:
        """Weighted conformal p-value of every label, shape ``(n, n_classes)``."""
        t = self.label_scores(proba)
        tol = EPSILON if self.method == "lac" else 0.0
        return weighted_p_values(
            self.row_scores, self.row_weights, t, self._test_weights(t.shape), tolerance=tol
        )

    def predict_set(self, proba: NDArray[np.float64]) -> NDArray[np.bool_]:
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
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp] | None = None
    ) -> NDArray[np.float64]:
        """``1 -`` the largest weighted p-value among the other labels (0 if one beats it)."""
        pred = np.argmax(proba, axis=1) if predicted is None else predicted
        return self._conf_cred(self.p_values(proba), pred)[0]

    def credibility(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp] | None = None
    ) -> NDArray[np.float64]:
        """The weighted p-value of the predicted label."""
        pred = np.argmax(proba, axis=1) if predicted is None else predicted
        return self._conf_cred(self.p_values(proba), pred)[1]

    def set_confidence_credibility(
        self, proba: NDArray[np.float64], predicted: NDArray[np.intp]
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


# ------------------------------------------------------------------ tiers
#: Candidates tested per vectorized block by :func:`certify_weighted`.
_BLOCK = 5


def _sorted_keys(keys: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows with a finite primary key, best first, and how many rows each key accepts."""
    rows = np.flatnonzero(np.isfinite(keys[:, 0]))
    sub = keys[rows]
    order = rows[np.lexsort(tuple(-sub[:, j] for j in reversed(range(sub.shape[1]))))]
    sk = keys[order]
    if len(sk) == 0:
        return order, np.zeros(0, dtype=np.intp)
    new = np.concatenate([[True], np.any(sk[1:] != sk[:-1], axis=1)])
    ends = np.append(np.flatnonzero(new)[1:], len(sk))
    return order, ends[np.cumsum(new) - 1].astype(np.intp)


def betting_start(max_error: float, delta: float, max_weight: float) -> int:
    """Accepted rows of the first (strictest) candidate of :func:`certify_weighted`.

    A clean accepted row of average weight (1) multiplies the betting capital by
    at most ``1 + c m / ((1 - m) B)`` (``c = 1/2``, the bet truncation of
    :mod:`safepredict._stats`), so ``log(1 / delta)`` needs ``log(1 / delta) /
    log(1 + c m / ((1 - m) B))`` of them. At a weighted error rate of ``m / 2``
    the gain per row roughly halves and errors cost capital, so the first
    candidate asks for 3 times that; the fixed sequence stops at its first
    failure, so a first candidate too small to be rejected would block every
    looser one. Label-free: it depends on ``m``, ``delta`` and ``B`` only.

    Examples
    --------
    >>> betting_start(0.05, 0.1, 1.0), betting_start(0.1, 0.1, 5.0)
    (266, 626)
    """
    gain = math.log1p(0.5 * max_error / ((1.0 - max_error) * max_weight))
    return math.ceil(3.0 * math.log(1.0 / delta) / gain)


def certify_weighted(
    scores: NDArray[np.float64],
    errors: NDArray[np.bool_],
    weights: NDArray[np.float64],
    *,
    max_error: float,
    delta: float,
    max_weight: float,
    n_steps: int = 20,
    seed: int = 0,
) -> CertifiedThreshold:
    """Loosest ranking threshold whose *production* error rate is <= ``max_error`` w.p. >= 1-delta.

    Rows with a non-finite primary score are never accepted (pass every
    calibration row: the test is over the whole calibration sample). See the
    module docstring for the test. The candidates are label-free (from the
    scores), strictest first, the first accepting :func:`betting_start` rows
    (every row, if fewer); the sequence stops at the first
    candidate not rejected. The betting order is a fixed permutation of the
    rows (``seed``), so a calibration file sorted by time or label cannot bias
    the bets.

    Parameters
    ----------
    scores : ndarray of shape (n,) or (n, k)
        Ranking keys (higher = surer), as in :func:`safepredict.tiers.certify_threshold`.
    errors : ndarray of bool, shape (n,)
    weights : ndarray of shape (n,)
        Likelihood-ratio weights, each in ``[0, max_weight]``.
    max_error, delta : float
    max_weight : float
        The bound ``B`` of the weights, fixed before the labels are seen.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=4000)
    >>> e = rng.uniform(size=4000) < 0.2 * (1 - s)
    >>> res = certify_weighted(s, e, np.ones(4000), max_error=0.05, delta=0.1, max_weight=1.0)
    >>> res.certified, 0.3 < res.acceptance_rate < 0.9
    (True, True)
    """
    keys = ranking_keys(scores)
    e = np.asarray(errors, dtype=bool).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    n = len(keys)
    if len(e) != n or len(w) != n:
        raise ValueError(f"scores, errors and weights need one entry per row ({n}).")
    if n and (float(w.min()) < 0 or float(w.max()) > max_weight * (1 + 1e-9)):
        raise ConfigError(
            f"weights must lie in [0, max_weight={max_weight:.4g}]; got "
            f"[{float(w.min()):.4g}, {float(w.max()):.4g}]. Clip them at max_weight."
        )
    need = rows_needed(max_error, delta)
    start = betting_start(max_error, delta, max_weight)
    order, accepts = _sorted_keys(keys)
    n_ok = len(order)
    fail = CertifiedThreshold(
        threshold=math.inf, certified=False, n_calibration=n, n_accepted=0, n_errors=0,
        upper_bound=1.0, needed_n=need, max_error=float(max_error), delta=float(delta),
        n_tested=0, key=(math.inf,) * keys.shape[1],
    )  # fmt: skip
    if n_ok < need:
        return fail
    first = min(max(start, need), n_ok)
    targets = np.unique(np.linspace(first, n_ok, num=max(n_steps, 1) + 1).round().astype(np.intp))
    counts = np.unique(accepts[targets - 1])
    rank = np.empty(n, dtype=np.intp)
    rank[:] = n  # never accepted
    rank[order] = np.arange(n_ok)
    perm = np.random.default_rng(seed).permutation(n)
    rank_bet, e_perm = rank[perm], e[perm]
    floor = max_weight * 1e-9  # _stats takes weights >= 1: scale by the floor (u = w / B)
    w_pos = np.maximum(w[perm], floor) / floor
    cap = max(float(w_pos.max()), max_weight / floor)
    n_rejected = 0
    for start in range(0, len(counts), _BLOCK):  # the sequence stops early: test in blocks
        block = counts[start : start + _BLOCK]
        accepted = rank_bet[None, :] < block[:, None]  # (block, n) in betting order
        e_bet = np.where(accepted, e_perm[None, :], max_error)  # not accepted: z = 0
        log_minus = betting_log_capital(
            e_bet, np.broadcast_to(w_pos, accepted.shape), m=[max_error], max_weight=cap
        )[1][..., 0]
        rejected = np.exp(-np.maximum(log_minus.max(axis=1), 0.0)) <= delta
        if not rejected.all():
            n_rejected += int(np.argmin(rejected))
            break
        n_rejected += len(block)
    if n_rejected == 0:
        return dataclasses.replace(fail, n_tested=1)
    j = n_rejected - 1
    n_acc = int(counts[j])
    acc_rows = order[:n_acc]
    key = tuple(float(v) for v in keys[order[n_acc - 1]])
    if n_acc == n_ok:
        key = (ACCEPT_ALL,) * keys.shape[1]
    return CertifiedThreshold(
        threshold=key[0],
        certified=True,
        n_calibration=n,
        n_accepted=n_acc,
        n_errors=int(e[acc_rows].sum()),
        upper_bound=float(max_error),
        needed_n=need,
        max_error=float(max_error),
        delta=float(delta),
        n_tested=min(n_rejected + 1, len(counts)),
        key=key,
    )


def tier_keys(tier: Any, inputs: TierInputs) -> NDArray[np.float64]:
    """Ranking keys of a ``max_error`` tier: its score, then the score's tie-breakers."""
    primary = inputs.scores.get(tier.score)
    if primary is None and tier.score == "conformal" and inputs.task == "classification":
        primary = inputs.confidence
    if primary is None:
        raise ConfigError(
            f"tier {tier.name!r}: score {tier.score!r} is not available for {inputs.task}; "
            f"available: {sorted(inputs.scores)}."
        )
    extra = inputs.tie_break.get(tier.score)
    if extra is None and inputs.task == "classification":
        extra = probability_tie_breaks(inputs.scores).get(tier.score)
    if extra is None:
        return ranking_keys(primary)
    return ranking_keys(np.column_stack([primary, np.reshape(extra, (len(primary), -1))]))


def calibrate_tiers_weighted(
    policy: TierPolicy,
    inputs: TierInputs,
    errors: NDArray[np.bool_] | Mapping[str, NDArray[np.bool_]],
    weights: NDArray[np.float64],
    *,
    max_weight: float,
) -> TierCalibration:
    """Certify every ``max_error`` tier for the production distribution (weighted).

    Tiers are walked in order as :func:`safepredict.tiers.assign_tiers` routes
    rows; ``delta`` is split equally (Bonferroni) over the risk-controlled
    tiers, as in :func:`safepredict.tiers.calibrate_tiers`. ``per_class`` and
    ``group_by`` tiers are not supported under shift (a ``ConfigError`` says so).
    """
    risk = policy.risk_controlled
    for tier in risk:
        if tier.per_class or tier.group_by is not None:
            raise ConfigError(
                f"tier {tier.name!r}: adapt_to does not support per_class or group_by tiers "
                "yet. Adapt a policy without them, or recalibrate on labelled production rows."
            )
    delta_tier = policy.delta / max(len(risk), 1)
    out = TierCalibration()
    names = [t.name for t in policy.tiers]
    for index, tier in enumerate(policy.tiers[:-1]):
        if tier.max_error is None:
            continue
        probe = TierCalibration(
            thresholds={**out.thresholds, tier.name: ACCEPT_ALL},
            keys={**out.keys, tier.name: np.array([ACCEPT_ALL])},
        )
        for later in policy.tiers[index + 1 : -1]:
            if later.max_error is not None:
                probe.thresholds[later.name] = math.inf
        codes = assign_tiers(policy, inputs, probe)[0]
        eligible = codes == names.index(tier.name)
        keys = tier_keys(tier, inputs).copy()
        keys[~eligible, 0] = np.nan
        e = np.asarray(errors[tier.name] if isinstance(errors, Mapping) else errors, dtype=bool)
        res = certify_weighted(
            keys, e, weights, max_error=tier.max_error, delta=delta_tier, max_weight=max_weight
        )
        out.thresholds[tier.name] = res.threshold
        out.keys[tier.name] = np.asarray(res.key, dtype=np.float64)
        reach = eligible & np.isfinite(keys[:, 0])
        hit = reach & accept_at(keys, np.asarray(res.key, dtype=np.float64))
        w_hit = float(weights[hit].sum())
        out.report[tier.name] = {
            "tier": tier.name,
            "weighted": True,
            "max_error": tier.max_error,
            "delta": delta_tier,
            "score": tier.score,
            "certified": res.certified,
            "threshold": res.threshold if res.certified else None,
            "n_calibration": res.n_calibration,
            "n_reaching": int(reach.sum()),
            "n_accepted": res.n_accepted,
            "n_errors": res.n_errors,
            # the production error rate the calibration rows estimate (importance-weighted)
            "weighted_error": float((weights[hit] * e[hit]).sum() / w_hit) if w_hit else None,
            "acceptance_rate": res.acceptance_rate,
            # production share of rows the tier accepts, as the weights estimate it
            "weighted_acceptance_rate": w_hit / float(weights.sum()) if weights.sum() else 0.0,
            "rows_needed": res.needed_n,
            "first_candidate_rows": betting_start(tier.max_error, delta_tier, max_weight),
        }
        if not res.certified:
            out.warnings.append(
                {
                    "tier": tier.name,
                    "class": None,
                    "reason": "not_certified",
                    "message": (
                        f"tier {tier.name!r} cannot be certified for the production "
                        f"distribution: the weighted test found no threshold whose error rate "
                        f"is provably below max_error={tier.max_error} at delta="
                        f"{delta_tier:.4g}. It accepts nothing; more calibration rows, a "
                        "smaller max_weight or a milder shift would help."
                    ),
                }
            )
    return out
