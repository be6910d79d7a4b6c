"""Tier assignment and risk-controlled tier calibration (pure numpy/scipy).

The first tier whose conditions a row meets wins; the last tier is the fallback.
Every condition reads one documented per-row number (confidence, credibility,
set size, interval width, a certified score threshold), so the tier a row lands
in never contradicts what is shown for it. An empty conformal set is reported
(reason ``empty_set``: the row is less typical than the calibration rows), not
silently abstained; a policy that wants typicality says so with
``min_credibility``.

A ``max_error`` tier is certified with Learn-then-Test (Angelopoulos et al.,
2021): fixed-sequence testing over an ordered, label-free grid of score
thresholds with exact binomial p-values (see :func:`certify_threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from safepredict._jsonl import to_builtin
from safepredict.config import Tier, TierPolicy
from safepredict.exceptions import ConfigError

__all__ = [
    "CertifiedThreshold",
    "TierCalibration",
    "TierInputs",
    "assign_tiers",
    "binomial_p_value",
    "calibrate_tiers",
    "certify_threshold",
    "clopper_pearson",
    "rows_needed",
]


def rows_needed(max_error: float, delta: float) -> int:
    """Fewest accepted calibration rows that can certify ``max_error`` at ``delta``.

    Even with zero observed errors, ``n`` accepted rows only certify an error
    rate ``a`` when ``P(0 errors | rate a) = (1 - a) ** n <= delta``, i.e.
    ``n >= log(delta) / log(1 - a)``.

    Examples
    --------
    >>> rows_needed(0.05, 0.1)
    45
    >>> rows_needed(0.02, 0.05)
    149
    """
    return math.ceil(math.log(delta) / math.log1p(-max_error) - 1e-12)


def binomial_p_value(
    n_errors: NDArray[np.int64] | int, n: NDArray[np.int64] | int, max_error: float
) -> NDArray[np.float64]:
    """Exact p-value of ``H0: error rate > max_error`` after ``n_errors`` in ``n`` rows.

    ``P(Binomial(n, max_error) <= n_errors)``: small when so few errors would be
    unlikely if the true error rate exceeded ``max_error``. ``n = 0`` gives 1.

    Examples
    --------
    >>> float(binomial_p_value(0, 45, 0.05)) <= 0.1
    True
    >>> float(binomial_p_value(0, 44, 0.05)) <= 0.1
    False
    """
    return np.asarray(stats.binom.cdf(n_errors, n, max_error), dtype=np.float64)


def clopper_pearson(
    k: int, n: int, level: float, *, two_sided: bool = False
) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) confidence interval for a proportion.

    Parameters
    ----------
    k, n : int
        Successes and trials.
    level : float
        Confidence level, e.g. ``0.95``.
    two_sided : bool, default=False
        One-sided upper bound (lower is 0) or a two-sided interval.

    Examples
    --------
    >>> lo, hi = clopper_pearson(0, 45, 0.9)
    >>> lo, round(hi, 4)
    (0.0, 0.0499)
    """
    if n <= 0:
        return 0.0, 1.0
    tail = (1.0 - level) / 2.0 if two_sided else 1.0 - level
    hi = 1.0 if k >= n else float(stats.beta.ppf(1.0 - tail, k + 1, n - k))
    lo = 0.0 if (k <= 0 or not two_sided) else float(stats.beta.ppf(tail, k, n - k + 1))
    return lo, hi


@dataclass(frozen=True)
class CertifiedThreshold:
    """What :func:`certify_threshold` found.

    Parameters
    ----------
    threshold : float
        Rows with ``score >= threshold`` are accepted; ``inf`` when nothing
        could be certified.
    certified : bool
        Whether a threshold was certified.
    n_calibration : int
        Calibration rows the search ran on.
    n_accepted : int
        Calibration rows the chosen threshold accepts.
    n_errors : int
        Errors among them.
    upper_bound : float
        One-sided ``1 - delta`` Clopper-Pearson upper bound on the error rate
        among accepted rows (1.0 when nothing is accepted).
    needed_n : int
        Fewest accepted rows that can certify ``max_error`` at ``delta``
        (:func:`rows_needed`).
    max_error, delta : float
        The requested risk level and the (share of) delta used.
    n_tested : int
        Hypotheses tested before the sequence stopped.
    """

    threshold: float
    certified: bool
    n_calibration: int
    n_accepted: int
    n_errors: int
    upper_bound: float
    needed_n: int
    max_error: float
    delta: float
    n_tested: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Fraction of the calibration rows accepted."""
        return self.n_accepted / self.n_calibration if self.n_calibration else 0.0

    def to_state(self) -> dict[str, Any]:
        """JSON-safe dict (``inf`` threshold stored as ``None``)."""
        out: dict[str, Any] = dict(self.__dict__)
        out["threshold"] = self.threshold if math.isfinite(self.threshold) else None
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CertifiedThreshold:
        """Inverse of :meth:`to_state`."""
        data = dict(state)
        data["threshold"] = math.inf if data["threshold"] is None else float(data["threshold"])
        return cls(**data)


def _threshold_grid(
    scores: NDArray[np.float64], start_n: int, n_steps: int
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Label-free candidate thresholds, strictest first, and how many rows each accepts.

    The first candidate is the strictest score value that accepts at least
    ``start_n`` rows; then the accepted count grows in ~equal steps of
    ``(n - start_n) / n_steps`` rows down to accepting every row.
    """
    finite = np.sort(scores[np.isfinite(scores)])[::-1]
    n = len(finite)
    if n < start_n or n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.intp)
    targets = np.unique(np.linspace(start_n, n, num=max(n_steps, 1) + 1).round().astype(np.intp))
    # threshold = the score of the targets-th best row; ties accept more rows.
    thresholds = np.unique(finite[targets - 1])[::-1]
    counts = np.searchsorted(-finite, -thresholds, side="right").astype(np.intp)
    return thresholds, counts


def _anchor_weights(
    counts: NDArray[np.intp], first_weight: float, factor: float
) -> NDArray[np.float64]:
    """Share of delta given to each grid point: log-spaced anchors, zero in between.

    The first grid point gets ``first_weight``; the remaining share is split
    equally over the grid points where the accepted count first reaches
    ``counts[0] * factor ** k`` (k = 1, 2, ...). With a single anchor it gets
    everything (plain fixed-sequence testing).
    """
    w = np.zeros(len(counts))
    if len(counts) == 0:
        return w
    anchors = []
    nxt = counts[0] * factor
    for j, c in enumerate(counts):
        if c >= nxt:
            anchors.append(j)
            nxt = c * factor
    if not anchors:
        w[0] = 1.0
        return w
    w[0] = first_weight
    w[anchors] = (1.0 - first_weight) / len(anchors)
    return w


def _fallback_rejections(p: NDArray[np.float64], levels: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which hypotheses Wiens' fallback procedure rejects.

    ``H_j`` is tested at ``levels[j]`` plus the level carried from ``H_{j-1}``
    if that one was rejected. Strong FWER control at ``sum(levels)`` for any
    order fixed before seeing the labels (Wiens, 2003).
    """
    rejected = np.zeros(len(p), dtype=bool)
    carry = 0.0
    for j in range(len(p)):
        level = float(levels[j]) + carry
        if p[j] <= level:
            rejected[j] = True
            carry = level
        else:
            carry = 0.0
    return rejected


def certify_threshold(
    scores: NDArray[np.float64],
    errors: NDArray[np.bool_],
    *,
    max_error: float,
    delta: float,
    n_steps: int = 50,
    first_weight: float = 0.25,
    anchor_factor: float = 2.0,
) -> CertifiedThreshold:
    """Loosest score threshold whose accepted-row error rate is <= ``max_error`` w.p. >= 1-delta.

    Learn-then-Test (Angelopoulos et al., 2021). Each candidate threshold
    ``t_j`` is a hypothesis ``H_j: the error rate among rows with score >= t_j
    exceeds max_error``, tested with the exact binomial p-value
    ``P(Binomial(n_j, max_error) <= k_j)`` (``k_j`` errors among the ``n_j``
    calibration rows accepted). The threshold with the most accepted rows among
    the rejected hypotheses is returned; with probability ``>= 1 - delta`` no
    rejected hypothesis is true, so its error rate is ``<= max_error``.

    Order and power. The candidates come from the calibration *scores only*
    (never the labels), strictest first: the first accepts just enough rows to
    be rejectable (``rows_needed(max_error, first_weight * delta)``, so it has
    power when those rows are clean; a start where only a handful of rows are
    accepted could never reject), then the accepted count grows in ``n_steps``
    equal steps down to accepting every row. The family-wise error is
    controlled by the fallback procedure (Wiens, 2003), a generalisation of
    fixed-sequence testing: ``first_weight * delta`` goes to the first
    candidate and the rest is split equally over "anchor" candidates where the
    accepted count has grown by ``anchor_factor`` (x2, x4, ...). A rejection
    passes its level on to the next candidate (as in fixed-sequence testing),
    but a failure no longer ends the search: the next anchor starts afresh
    with its own share. A few errors among the most confident rows (label
    noise) therefore cannot block every looser threshold. When the data allow
    only one anchor, the whole ``delta`` goes to the first candidate (plain
    fixed-sequence testing starting at ``rows_needed(max_error, delta)``).

    Parameters
    ----------
    scores : ndarray of shape (n,)
        Per-row score, higher = more confident. Non-finite scores are never
        accepted.
    errors : ndarray of shape (n,)
        Whether the model's prediction on the row is wrong.
    max_error : float
        Largest tolerated error rate among accepted rows, in (0, 1).
    delta : float
        Probability, over the calibration draw, that the guarantee may fail.
    n_steps : int, default=50
        Number of steps of the threshold grid.
    first_weight : float, default=0.25
        Share of ``delta`` spent on the first (strictest) candidate.
    anchor_factor : float, default=2.0
        Growth of the accepted count between anchors.

    Returns
    -------
    CertifiedThreshold

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.uniform(size=2000)
    >>> errors = rng.uniform(size=2000) < 0.2 * (1 - scores)   # error prob 0.2*(1-s)
    >>> res = certify_threshold(scores, errors, max_error=0.05, delta=0.1)
    >>> res.certified, res.upper_bound <= 0.05
    (True, True)
    >>> certify_threshold(scores[:20], errors[:20], max_error=0.05, delta=0.1).certified
    False
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=bool).reshape(-1)
    if s.shape != e.shape:
        raise ValueError(f"scores and errors must have the same length; got {len(s)} and {len(e)}.")
    need = rows_needed(max_error, delta)
    start = rows_needed(max_error, delta * first_weight)
    thresholds, counts = _threshold_grid(s, start, n_steps)
    weights = _anchor_weights(counts, first_weight, anchor_factor)
    if len(counts) == 0 or weights[0] == 1.0:
        # Too few rows for several anchors: plain fixed sequence with all of delta.
        thresholds, counts = _threshold_grid(s, need, n_steps)
        weights = np.zeros(len(counts))
        weights[:1] = 1.0
    chosen = -1
    n_tested = len(counts)
    if len(thresholds):
        order = np.argsort(-np.where(np.isfinite(s), s, -np.inf), kind="stable")
        cum_errors = np.concatenate([[0], np.cumsum(e[order])])
        k = cum_errors[counts]
        p = binomial_p_value(k, counts, max_error)
        rejected = np.flatnonzero(_fallback_rejections(p, weights * delta))
        chosen = int(rejected[-1]) if len(rejected) else -1
    if chosen < 0:
        return CertifiedThreshold(
            threshold=math.inf,
            certified=False,
            n_calibration=len(s),
            n_accepted=0,
            n_errors=0,
            upper_bound=1.0,
            needed_n=need,
            max_error=float(max_error),
            delta=float(delta),
            n_tested=n_tested,
        )
    n_acc = int(counts[chosen])
    n_err = int(k[chosen])
    return CertifiedThreshold(
        threshold=float(thresholds[chosen]),
        certified=True,
        n_calibration=len(s),
        n_accepted=n_acc,
        n_errors=n_err,
        upper_bound=clopper_pearson(n_err, n_acc, 1.0 - delta)[1],
        needed_n=need,
        max_error=float(max_error),
        delta=float(delta),
        n_tested=n_tested,
    )


@dataclass
class TierInputs:
    """Per-row quantities tier conditions are evaluated on.

    Parameters
    ----------
    task : {"classification", "regression"}
        The predictor's task.
    confidence : ndarray of shape (n,)
        Conformal confidence (``nan`` for regression).
    credibility : ndarray of shape (n,), optional
        Classification: conformal credibility (p-value of the predicted label).
    set_size : ndarray of shape (n,), optional
        Classification: size of the conformal set.
    width : ndarray of shape (n,), optional
        Regression: width of the conformal interval.
    scores : dict of str to ndarray, default={}
        Scores a ``max_error`` tier may threshold, by name (``"conformal"``,
        ``"top_prob"``, ``"margin"``); higher means more confident.
    predicted_class : ndarray of shape (n,), optional
        Index of the predicted class (for per-class thresholds).
    """

    task: str
    confidence: NDArray[np.float64]
    set_size: NDArray[np.intp] | None = None
    width: NDArray[np.float64] | None = None
    scores: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    predicted_class: NDArray[np.intp] | None = None
    credibility: NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.confidence)


def _json_threshold(t: Any) -> Any:
    arr = np.asarray(t, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr) if math.isfinite(float(arr)) else None
    return [float(v) if math.isfinite(float(v)) else None for v in arr]


def _from_json_threshold(t: Any) -> Any:
    if t is None:
        return math.inf
    if isinstance(t, list):
        return np.array([math.inf if v is None else float(v) for v in t], dtype=np.float64)
    return float(t)


@dataclass
class TierCalibration:
    """Thresholds certified for the risk-controlled tiers.

    Parameters
    ----------
    thresholds : dict
        Tier name -> minimum score a row needs (a float, or an array indexed by
        predicted class when the tier is ``per_class``). ``inf`` means the tier
        (or that class) could not be certified and accepts nothing.
    report : dict
        Tier name -> what the calibration found (see
        ``SafePredictor.calibration_report``); JSON-safe.
    warnings : list of dict
        One entry per tier (or class) that could not be certified: ``tier``,
        ``reason`` (``"budget"``: too few calibration rows even with zero
        errors; ``"not_certified"``: too many errors), ``message``.

    Examples
    --------
    >>> cal = TierCalibration({"auto": 0.93, "suggest": math.inf})
    >>> cal.is_certified("auto"), cal.is_certified("suggest")
    (True, False)
    >>> TierCalibration.from_state(cal.to_state()).thresholds["suggest"]
    inf
    """

    thresholds: dict[str, Any] = field(default_factory=dict)
    report: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def is_certified(self, tier: str) -> bool:
        """Whether ``tier`` can accept any row at all."""
        t = self.thresholds.get(tier)
        return t is not None and bool(np.any(np.isfinite(np.asarray(t, dtype=np.float64))))

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (``inf`` thresholds become ``None``)."""
        return {
            "thresholds": {k: _json_threshold(v) for k, v in self.thresholds.items()},
            "report": to_builtin(self.report),
            "warnings": to_builtin(self.warnings),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TierCalibration:
        """Restore from :meth:`to_state`."""
        return cls(
            thresholds={k: _from_json_threshold(v) for k, v in state["thresholds"].items()},
            report={k: dict(v) for k, v in state.get("report", {}).items()},
            warnings=[dict(w) for w in state.get("warnings", [])],
        )


def _base_mask(tier: Tier, inputs: TierInputs) -> NDArray[np.bool_]:
    """Rows meeting every condition of ``tier`` except the ``max_error`` threshold."""
    n = len(inputs)
    mask = np.ones(n, dtype=bool)
    if tier.min_confidence is not None:
        mask &= inputs.confidence >= tier.min_confidence
    if tier.min_credibility is not None and inputs.credibility is not None:
        mask &= inputs.credibility >= tier.min_credibility
    if tier.max_set_size is not None and inputs.set_size is not None:
        mask &= inputs.set_size <= tier.max_set_size
    if tier.max_interval_width is not None and inputs.width is not None:
        mask &= inputs.width <= tier.max_interval_width
    return mask


def _tier_score(tier: Tier, inputs: TierInputs) -> NDArray[np.float64]:
    score = inputs.scores.get(tier.score)
    if score is None:
        if tier.score == "conformal" and inputs.task == "classification":
            return inputs.confidence
        raise ConfigError(
            f"tier {tier.name!r}: score {tier.score!r} is not available for {inputs.task}; "
            f'available: {sorted(inputs.scores) or ["conformal"]}. Use score = "conformal".'
        )
    return np.asarray(score, dtype=np.float64)


def _row_thresholds(threshold: Any, inputs: TierInputs) -> NDArray[np.float64]:
    t = np.asarray(threshold, dtype=np.float64)
    if t.ndim == 1:
        if inputs.predicted_class is None:
            return np.full(len(inputs), math.inf)
        pc = np.clip(inputs.predicted_class, 0, len(t) - 1)
        return t[pc]
    return np.full(len(inputs), float(t))


def _tier_mask(
    tier: Tier, inputs: TierInputs, calibration: TierCalibration | None
) -> NDArray[np.bool_]:
    mask = _base_mask(tier, inputs)
    if tier.max_error is not None:
        threshold = None if calibration is None else calibration.thresholds.get(tier.name)
        if threshold is None:
            return np.zeros(len(inputs), dtype=bool)
        mask &= _tier_score(tier, inputs) >= _row_thresholds(threshold, inputs)
    return mask


def _rate_interval(k: int, n: int) -> list[float]:
    lo, hi = clopper_pearson(k, n, 0.95, two_sided=True)
    return [lo, hi]


def calibrate_tiers(
    policy: TierPolicy,
    inputs: TierInputs,
    errors: NDArray[np.bool_] | Mapping[str, NDArray[np.bool_]],
    *,
    n_classes: int | None = None,
    class_labels: Any = None,
) -> TierCalibration:
    """Certify a threshold for every ``max_error`` tier of ``policy``.

    Tiers are walked in order, exactly as :func:`assign_tiers` will route rows:
    a tier is calibrated only on the calibration rows that reach it (rows that
    no earlier tier took), so its guarantee is about the rows it actually
    accepts. ``delta`` is split equally (Bonferroni) across the ``m``
    risk-controlled tiers, and within a ``per_class`` tier equally across the
    ``n_classes`` predicted classes: with probability at least ``1 - delta``
    every certified tier (and class) keeps its ``max_error`` at once.

    Parameters
    ----------
    policy : TierPolicy
        The tiers.
    inputs : TierInputs
        Per-row quantities of the calibration rows (as at decide time).
    errors : ndarray of shape (n,) or dict of str to ndarray
        Whether the model is wrong on each calibration row; a dict by tier name
        when tiers define errors differently (regression ``tolerance``).
    n_classes : int, optional
        Number of classes (classification, for ``per_class`` tiers).
    class_labels : sequence, optional
        Class labels used in the report of ``per_class`` tiers.

    Returns
    -------
    TierCalibration

    Examples
    --------
    >>> from safepredict.config import Tier, TierPolicy
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(size=3000)
    >>> wrong = rng.uniform(size=3000) < 0.3 * (1 - conf)
    >>> policy = TierPolicy((Tier("auto", "accept", max_error=0.05), Tier("human", "abstain")),
    ...                     delta=0.1)
    >>> cal = calibrate_tiers(policy, TierInputs("classification", conf), wrong)
    >>> cal.report["auto"]["certified"], cal.report["auto"]["upper_bound"] <= 0.05
    (True, True)
    """
    n = len(inputs)
    risk_tiers = policy.risk_controlled
    delta_tier = policy.delta / max(len(risk_tiers), 1)
    out = TierCalibration()
    open_rows = np.ones(n, dtype=bool)
    for tier in policy.tiers[:-1]:
        if tier.max_error is None:
            open_rows &= ~_tier_mask(tier, inputs, None)
            continue
        e = np.asarray(
            errors[tier.name] if isinstance(errors, Mapping) else errors, dtype=bool
        ).reshape(-1)
        if len(e) != n:
            raise ValueError(f"errors must have one entry per row ({n}); got {len(e)}.")
        if inputs.task == "classification" and tier.tolerance is not None:
            raise ConfigError(
                f"tier {tier.name!r}: 'tolerance' applies to regression (an error is "
                "|y - y_hat| > tolerance); for a classifier an error is a wrong label. "
                "Remove tolerance."
            )
        score = _tier_score(tier, inputs)
        eligible = open_rows & _base_mask(tier, inputs)
        n_reaching = int(open_rows.sum())
        if tier.per_class:
            k = int(n_classes or 0)
            if k < 1 or inputs.predicted_class is None:
                raise ConfigError(
                    f"tier {tier.name!r}: per_class = true needs a classifier (predicted "
                    "classes); remove per_class for regression."
                )
            labels = list(class_labels) if class_labels is not None else list(range(k))
            share = delta_tier / k
            thresholds = np.full(k, math.inf)
            per: dict[str, Any] = {}
            for c in range(k):
                rows = eligible & (inputs.predicted_class == c)
                res = certify_threshold(score[rows], e[rows], max_error=tier.max_error, delta=share)
                thresholds[c] = res.threshold
                reach_c = int((open_rows & (inputs.predicted_class == c)).sum())
                per[str(labels[c])] = _tier_report(tier, res, n, reach_c)
                if not res.certified:
                    out.warnings.append(_warning(tier, res, n, reach_c, label=str(labels[c])))
            hit = eligible & (score >= _row_thresholds(thresholds, inputs))
            n_acc = int(hit.sum())
            n_err = int(e[hit].sum())
            out.thresholds[tier.name] = thresholds
            report = {
                "tier": tier.name,
                "max_error": tier.max_error,
                "delta": delta_tier,
                "score": tier.score,
                "per_class": True,
                "certified": bool(np.isfinite(thresholds).any()),
                "threshold": thresholds.tolist(),
                "n_calibration": n,
                "n_reaching": n_reaching,
                "n_accepted": n_acc,
                "n_errors": n_err,
                "observed_error": n_err / n_acc if n_acc else None,
                "upper_bound": max(
                    (v["upper_bound"] for v in per.values() if v["certified"]), default=1.0
                ),
                "acceptance_rate": n_acc / n if n else 0.0,
                "acceptance_interval": _rate_interval(n_acc, n),
                "rows_needed": rows_needed(tier.max_error, share),
                "calibration_rows_needed": max(
                    (v["calibration_rows_needed"] for v in per.values()), default=0
                ),
                "classes": per,
            }
        else:
            res = certify_threshold(
                score[eligible], e[eligible], max_error=tier.max_error, delta=delta_tier
            )
            out.thresholds[tier.name] = res.threshold
            hit = eligible & (score >= res.threshold)
            report = _tier_report(tier, res, n, n_reaching)
            report.update({"tier": tier.name, "per_class": False, "n_reaching": n_reaching})
            if not res.certified:
                out.warnings.append(_warning(tier, res, n, n_reaching))
        out.report[tier.name] = to_builtin(report)
        open_rows &= ~hit
    return out


def _needed_total(need: int, n_total: int, n_reaching: int) -> int:
    """Calibration rows needed overall so that ``need`` rows reach the tier."""
    if n_total <= 0 or n_reaching <= 0:
        return need
    return math.ceil(need * n_total / n_reaching)


def _tier_report(
    tier: Tier, res: CertifiedThreshold, n_total: int, n_reaching: int
) -> dict[str, Any]:
    return {
        "tier": tier.name,
        "max_error": tier.max_error,
        "delta": res.delta,
        "score": tier.score,
        "certified": res.certified,
        "threshold": res.threshold if res.certified else None,
        "n_calibration": n_total,
        "n_reaching": n_reaching,
        "n_accepted": res.n_accepted,
        "n_errors": res.n_errors,
        "observed_error": res.n_errors / res.n_accepted if res.n_accepted else None,
        "upper_bound": res.upper_bound,
        "acceptance_rate": res.n_accepted / n_total if n_total else 0.0,
        "acceptance_interval": _rate_interval(res.n_accepted, n_total),
        "rows_needed": res.needed_n,
        "calibration_rows_needed": _needed_total(res.needed_n, n_total, n_reaching),
    }


def _warning(
    tier: Tier, res: CertifiedThreshold, n_total: int, n_reaching: int, label: str | None = None
) -> dict[str, Any]:
    where = f"tier {tier.name!r}" + (f" (predicted class {label})" if label is not None else "")
    budget = res.n_calibration < res.needed_n
    total = _needed_total(res.needed_n, n_total, n_reaching)
    if budget:
        message = (
            f"{where} cannot be certified: only {res.n_calibration} calibration rows reach it, "
            f"but certifying max_error={tier.max_error} at delta={res.delta:.4g} needs at least "
            f"{res.needed_n} even with zero errors (about {total} calibration rows in total). "
            "It accepts nothing until calibrated on more rows (or raise max_error/delta)."
        )
    else:
        message = (
            f"{where} cannot be certified: no threshold keeps the error rate of accepted "
            f"calibration rows provably below max_error={tier.max_error} at "
            f"delta={res.delta:.4g}. It accepts nothing; the model may be too inaccurate for "
            "this max_error, or more calibration rows may help."
        )
    return {
        "tier": tier.name,
        "class": label,
        "reason": "budget" if budget else "not_certified",
        "rows_available": res.n_calibration,
        "rows_needed": res.needed_n,
        "calibration_rows_needed": total,
        "message": message,
    }


def assign_tiers(
    policy: TierPolicy,
    inputs: TierInputs,
    calibration: TierCalibration | None = None,
) -> tuple[NDArray[np.intp], dict[int, tuple[str, ...]]]:
    """Tier index of each row, and extra reason codes for some rows.

    Parameters
    ----------
    policy : TierPolicy
        The ordered tiers.
    inputs : TierInputs
        Per-row confidence, set sizes, widths and scores.
    calibration : TierCalibration, optional
        Certified thresholds of the ``max_error`` tiers.

    Returns
    -------
    codes : ndarray of shape (n,)
        Index into ``policy.tiers``.
    reasons : dict of int to tuple of str
        Rows that get extra reasons: ``empty_set`` (classification rows whose
        conformal set is empty: less typical than the calibration rows; the
        row still goes to the first tier whose conditions it meets) and
        ``uncertified:<tier>`` (rows that reached a ``max_error`` tier which
        could not be certified, or, for a ``per_class`` tier, whose predicted
        class could not be certified).

    Examples
    --------
    >>> policy = TierPolicy.default("classification")  # max_set_size 1, min_credibility 0.1
    >>> inputs = TierInputs("classification", confidence=np.array([0.99, 0.4, 0.97]),
    ...                     set_size=np.array([1, 2, 0]),
    ...                     credibility=np.array([0.6, 0.7, 0.04]))
    >>> codes, reasons = assign_tiers(policy, inputs)
    >>> codes.tolist(), reasons
    ([0, 1, 1], {2: ('empty_set',)})
    """
    n = len(inputs)
    fallback = len(policy.tiers) - 1
    codes = np.full(n, fallback, dtype=np.intp)
    open_rows = np.ones(n, dtype=bool)
    extra: dict[int, list[str]] = {}
    for index, tier in enumerate(policy.tiers[:-1]):
        if not open_rows.any():
            break
        if tier.max_error is not None and not (
            calibration is not None and calibration.is_certified(tier.name)
        ):
            for row in np.flatnonzero(open_rows):
                extra.setdefault(int(row), []).append(f"uncertified:{tier.name}")
            continue
        hit = open_rows & _tier_mask(tier, inputs, calibration)
        if tier.max_error is not None and calibration is not None:
            t = _row_thresholds(calibration.thresholds[tier.name], inputs)
            for row in np.flatnonzero(open_rows & ~hit & np.isinf(t)):
                extra.setdefault(int(row), []).append(f"uncertified:{tier.name}")
        codes[hit] = index
        open_rows &= ~hit
    if inputs.set_size is not None:
        for row in np.flatnonzero(inputs.set_size == 0):
            extra.setdefault(int(row), []).append("empty_set")
    return codes, {row: tuple(r) for row, r in extra.items()}
