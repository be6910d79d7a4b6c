"""The whole benchmark: curves, operating points, costs, conformal, policies."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from safepredict._jsonl import to_builtin
from safepredict._validation import check_fraction
from safepredict.config import TierPolicy
from safepredict.evaluation._costs import CostCurve, CostModel, cost_curve
from safepredict.evaluation._curves import (
    OperatingPoint,
    RiskCoverageCurve,
    apply_threshold,
    certify_threshold,
    risk_coverage,
)
from safepredict.evaluation._data import ScoredData, score_predictor
from safepredict.evaluation._policies import PolicyComparison, compare_policies
from safepredict.exceptions import ConfigError

if TYPE_CHECKING:
    from safepredict.predictor import SafePredictor


# --------------------------------------------------------------------------- reliability
def reliability(confidence: ArrayLike, correct: ArrayLike, *, bins: int = 10) -> dict[str, Any]:
    """Reliability diagram data and expected calibration error (ECE).

    Parameters
    ----------
    confidence : array-like of float in [0, 1]
        E.g. the top-class probability.
    correct : array-like of bool
        Whether the answer was right.
    bins : int, default=10
        Equal-width bins over [0, 1].

    Returns
    -------
    dict
        ``bin_lower``, ``bin_upper``, ``mean_confidence``, ``accuracy``,
        ``count`` (lists, one entry per bin; ``None`` for empty bins) and ``ece``.

    Examples
    --------
    >>> r = reliability([0.9, 0.9, 0.3, 0.3], [1, 1, 1, 0], bins=2)
    >>> r["accuracy"], round(r["ece"], 3)
    ([0.5, 1.0], 0.15)
    """
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct).astype(bool)
    keep = np.isfinite(c)
    c, ok = c[keep], ok[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=c, minlength=bins)
    acc_sum = np.bincount(which, weights=ok.astype(np.float64), minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = conf_sum / count
        acc = acc_sum / count
    n = max(len(c), 1)
    ece = float(np.nansum(count / n * np.abs(acc - mean_conf)))
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "mean_confidence": to_builtin(mean_conf),
        "accuracy": to_builtin(acc),
        "count": count.tolist(),
        "ece": ece,
    }


# --------------------------------------------------------------------------- evaluate
@dataclass
class Evaluation:
    """Everything the offline benchmark found; :meth:`to_dict` is ``summary.json``.

    Attributes
    ----------
    task : str
        ``"classification"`` or ``"regression"``.
    n_test, n_calibration : int
        Rows evaluated and rows used to choose / certify thresholds.
    curves : dict of str to RiskCoverageCurve
        One risk-coverage curve per score, on the test rows.
    at_coverage : list of OperatingPoint
        Selective risk at the requested coverages, per score.
    operating_points : list of dict
        Per score and error target: the naive empirical threshold and the
        certified (Learn-then-Test) one, both chosen on the calibration rows and
        realized on the test rows.
    cost : CostModel or None
        The cost model used.
    cost_curves : dict of str to CostCurve
        Cost per 1,000 cases per threshold, per score (with a cost model).
    conformal : dict
        Empirical coverage, mean set size / interval width, set-size counts and
        the coverage / set-size sweep.
    reliability : dict or None
        Reliability diagram of the top-class probability.
    policies : PolicyComparison
        The policies side by side.
    in_sample : bool
        True when thresholds were chosen on the test rows themselves (no
        calibration rows given): the operating points are then optimistic.
    """

    task: str
    n_test: int
    n_calibration: int
    curves: dict[str, RiskCoverageCurve]
    at_coverage: list[OperatingPoint]
    operating_points: list[dict[str, Any]]
    cost: CostModel | None
    cost_curves: dict[str, CostCurve]
    conformal: dict[str, Any]
    reliability: dict[str, Any] | None
    policies: PolicyComparison
    in_sample: bool
    delta: float = 0.05
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        """Error rate of the model over all test rows."""
        curve = next(iter(self.curves.values()), None)
        return curve.error_rate if curve is not None else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (curves down-sampled to at most 200 points each)."""
        out: dict[str, Any] = to_builtin(
            {
                "task": self.task,
                "n_test": self.n_test,
                "n_calibration": self.n_calibration,
                "in_sample": self.in_sample,
                "delta": self.delta,
                "error_rate": self.error_rate,
                "scores": {
                    k: {"aurc": c.aurc, "eaurc": c.eaurc, "optimal_aurc": c.optimal_aurc}
                    for k, c in self.curves.items()
                },
                "at_coverage": [p.to_dict() for p in self.at_coverage],
                "operating_points": self.operating_points,
                "cost_model": None if self.cost is None else self.cost.to_dict(),
                "cost_optimal": {k: c.optimal() for k, c in self.cost_curves.items()},
                "conformal": self.conformal,
                "reliability": self.reliability,
                "policies": self.policies.to_dict()["policies"],
                "curves": {k: c.to_dict() for k, c in self.curves.items()},
                "meta": self.meta,
            }
        )
        return out


def _conformal_summary(data: ScoredData) -> dict[str, Any]:
    out: dict[str, Any] = {"confidence_level": data.confidence_level}
    if data.covered is not None:
        out["coverage"] = float(np.mean(data.covered)) if len(data) else math.nan
    if data.set_size is not None:
        sizes = np.asarray(data.set_size)
        out["mean_set_size"] = float(np.mean(sizes)) if len(sizes) else math.nan
        values, counts = np.unique(sizes, return_counts=True)
        out["set_size_counts"] = {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
        if data.covered is not None:
            out["coverage_by_set_size"] = {
                str(int(v)): float(np.mean(data.covered[sizes == v])) for v in values
            }
    if data.width is not None:
        w = data.width[np.isfinite(data.width)]
        out["mean_interval_width"] = float(np.mean(w)) if len(w) else math.nan
        out["median_interval_width"] = float(np.median(w)) if len(w) else math.nan
    out["sweep"] = data.sweep
    return out


def evaluate(
    test: ScoredData,
    *,
    calibration: ScoredData | None = None,
    policies: Mapping[str, TierPolicy] | Sequence[TierPolicy] | None = None,
    cost: CostModel | None = None,
    coverages: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95, 1.0),
    error_targets: Sequence[float] = (0.01, 0.02, 0.05, 0.1),
    delta: float = 0.05,
    band: str = "wilson",
    confidence: float = 0.95,
    progress: Any = None,
) -> Evaluation:
    """Run the whole offline benchmark on scored data.

    Parameters
    ----------
    test : ScoredData
        Labelled rows the results are reported on.
    calibration : ScoredData, optional
        Labelled rows thresholds are chosen and certified on (then realized on
        ``test``). Without it, thresholds are chosen on ``test`` itself and the
        result is marked ``in_sample``.
    policies : dict of str to TierPolicy, or sequence, optional
        Policies to compare.
    cost : CostModel, optional
        Prices errors and human work.
    coverages : sequence of float
        Coverages to report the selective risk at.
    error_targets : sequence of float
        Error targets to report the naive and certified operating points for.
    delta : float, default=0.05
        Risk level of the certified operating points.
    band : {"wilson", "clopper-pearson"}, default="wilson"
        Pointwise band of the risk-coverage curves.
    confidence : float, default=0.95
        Coverage of the pointwise bands.
    progress : callable, optional
        Called with a short stage name as each stage starts.

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=4000)
    >>> data = ScoredData.from_arrays(rng.uniform(size=4000) < 0.3 * (1 - s), {"top_prob": s})
    >>> ev = evaluate(data.take(np.arange(2000, 4000)), calibration=data.take(np.arange(2000)),
    ...               error_targets=[0.05])
    >>> op = ev.operating_points[0]
    >>> op["certified"]["coverage"] <= op["empirical"]["coverage"]
    True
    """
    check_fraction(delta, "delta")

    def step(name: str) -> None:
        if progress is not None:
            progress(name)

    if test.errors is None:
        raise ConfigError(
            "these regression data have no errors; pass tolerance= to score_predictor (an "
            "error is |y - y_hat| > tolerance) to get risk-coverage curves."
        )
    in_sample = calibration is None
    cal = test if calibration is None else calibration
    assert cal.errors is not None
    step("curves")
    curves = {
        name: risk_coverage(s, test.errors, name=name, band=band, confidence=confidence)
        for name, s in test.scores.items()
    }
    at_cov = [p for c in curves.values() for p in c.at_coverage(coverages)]
    step("operating points")
    points = []
    for name, curve in curves.items():
        # Sort the calibration rows once per score; the curve and every certification
        # below then run on sorted input (no further O(n log n) sort).
        cal_s, cal_e = cal.sorted_by(name)
        cal_curve = curve if in_sample else risk_coverage(cal_s, cal_e, name=name, band=band)
        for target, naive in zip(error_targets, cal_curve.at_risk(error_targets), strict=True):
            t_cert = certify_threshold(cal_s, cal_e, max_error=target, delta=delta).threshold
            points.append(
                {
                    "score": name,
                    "max_error": float(target),
                    "delta": delta,
                    "empirical": apply_threshold(
                        test.scores[name], test.errors, naive.threshold, name=name, target=target
                    ).to_dict(),
                    "certified": apply_threshold(
                        test.scores[name],
                        test.errors,
                        t_cert,
                        name=name,
                        method="certified",
                        target=target,
                    ).to_dict(),
                }
            )
    step("costs")
    cost_curves = {} if cost is None else {k: cost_curve(c, cost) for k, c in curves.items()}
    rel = None
    if "top_prob" in test.scores:
        rel = reliability(test.scores["top_prob"], ~test.errors)
    step("policies")
    comparison = compare_policies(
        policies or {}, test, calibration=None if in_sample else calibration, cost=cost
    )
    if in_sample and policies:
        comparison = compare_policies(policies, test, calibration=test, cost=cost)
    return Evaluation(
        task=test.task,
        n_test=len(test),
        n_calibration=0 if in_sample else len(cal),
        curves=curves,
        at_coverage=at_cov,
        operating_points=points,
        cost=cost,
        cost_curves=cost_curves,
        conformal=_conformal_summary(test),
        reliability=rel,
        policies=comparison,
        in_sample=in_sample,
        delta=delta,
    )


def benchmark(
    predictor: SafePredictor,
    X_test: Any,
    y_test: Any,
    *,
    X_cal: Any = None,
    y_cal: Any = None,
    policies: Mapping[str, TierPolicy] | Sequence[TierPolicy] | None = None,
    cost: CostModel | None = None,
    tolerance: float | None = None,
    **kwargs: Any,
) -> Evaluation:
    """The offline benchmark of a calibrated predictor on labelled test data.

    The predictor's own policy is evaluated as ``"current"`` next to
    ``policies``. Pass the calibration rows (``X_cal``, ``y_cal``) so thresholds
    and certified operating points are chosen there and realized on the test
    rows; otherwise they are chosen on the test rows (optimistic).

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor.
    X_test, y_test : array-like
        Labelled rows to report on.
    X_cal, y_cal : array-like, optional
        The calibration rows.
    policies : dict of str to TierPolicy, or sequence, optional
        Other policies to compare ("what if").
    cost : CostModel, optional
        Prices errors and human work.
    tolerance : float, optional
        Regression: an error is ``|y - y_hat| > tolerance``.
    **kwargs
        Passed to :func:`evaluate`.

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from safepredict import SafePredictor
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    >>> ev = benchmark(sp, X[2::3], y[2::3], X_cal=X[1::3], y_cal=y[1::3])
    >>> [r.name for r in ev.policies.results]
    ['current']
    """
    test = score_predictor(predictor, X_test, y_test, tolerance=tolerance)
    cal = None
    if X_cal is not None:
        cal = score_predictor(predictor, X_cal, y_cal, tolerance=tolerance)
    named: dict[str, TierPolicy] = {"current": predictor.policy_}
    if isinstance(policies, Mapping):
        named.update({k: TierPolicy.coerce(v) for k, v in policies.items()})
    elif policies:
        named.update({f"policy {i + 1}": TierPolicy.coerce(p) for i, p in enumerate(policies)})
    ev = evaluate(test, calibration=cal, policies=named, cost=cost, **kwargs)
    ev.meta.update(
        {
            "model_name": predictor.model_name,
            "model_version": predictor.model_version,
            "source": "predictor",
        }
    )
    return ev
