"""Risk-coverage curves, binomial bands, operating points and certified thresholds."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict._binomial import binomial_interval
from safepredict._jsonl import to_builtin
from safepredict._validation import check_fraction, check_one_of
from safepredict.exceptions import ConfigError
from safepredict.tiers import CertifiedThreshold
from safepredict.tiers import certify_threshold as _certify

#: Scores computed for classifiers (higher means more confident).
CLASSIFICATION_SCORES: tuple[str, ...] = ("conformal", "top_prob", "margin", "entropy")
_BANDS = ("wilson", "clopper-pearson")


# --------------------------------------------------------------------------- intervals
# --------------------------------------------------------------------------- curves
def _as_scores_errors(
    scores: ArrayLike, errors: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e_raw = np.asarray(errors)
    if e_raw.dtype != bool and not np.isin(e_raw, (0, 1)).all():
        raise ConfigError(
            "errors must be booleans (True = the prediction was wrong) or 0/1; got values "
            f"{np.unique(e_raw)[:5].tolist()}. Pass errors = prediction != y_true."
        )
    e = e_raw.astype(bool).reshape(-1)
    if len(s) != len(e):
        raise ConfigError(
            f"scores and errors must have one value per row; got {len(s)} scores and "
            f"{len(e)} errors."
        )
    # Rows without a score (the model failed) rank below every scored row.
    return np.where(np.isnan(s), -np.inf, s), e


def _optimal_aurc(n: int, n_errors: int) -> float:
    """AURC of the oracle ranking (every correct row before every wrong row)."""
    if n == 0 or n_errors == 0:
        return 0.0
    n_correct = n - n_errors
    k = np.arange(n_correct + 1, n + 1, dtype=np.float64)
    return float(np.sum((k - n_correct) / k) / n)


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Selective risk against coverage for one score, one point per distinct score.

    Point ``j`` accepts every row whose score is at least ``thresholds[j]``.
    Build it with :func:`risk_coverage`.

    Attributes
    ----------
    name : str
        The score's name.
    thresholds : ndarray
        Distinct scores, descending.
    n_accepted, n_errors : ndarray of int
        Rows accepted and errors among them at each threshold.
    n : int
        Number of rows.
    risk_lower, risk_upper : ndarray
        Pointwise confidence band of the selective risk (computed on first
        access; :meth:`band_at` computes it at chosen points only).
    confidence : float
        Coverage of each pointwise band.
    band : str
        ``"wilson"`` or ``"clopper-pearson"``.
    """

    name: str
    thresholds: NDArray[np.float64]
    n_accepted: NDArray[np.int64]
    n_errors: NDArray[np.int64]
    n: int
    confidence: float = 0.95
    band: str = "wilson"

    def band_at(self, idx: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Lower and upper band of the selective risk at the points ``idx``."""
        i = np.asarray(idx, dtype=np.intp)
        return binomial_interval(
            self.n_errors[i], self.n_accepted[i], confidence=self.confidence, method=self.band
        )

    @cached_property
    def _band(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self.band_at(np.arange(len(self.thresholds)))

    @property
    def risk_lower(self) -> NDArray[np.float64]:
        """Lower end of the pointwise band at every point."""
        return self._band[0]

    @property
    def risk_upper(self) -> NDArray[np.float64]:
        """Upper end of the pointwise band at every point."""
        return self._band[1]

    @property
    def coverage(self) -> NDArray[np.float64]:
        """Fraction of rows accepted at each threshold."""
        return np.asarray(self.n_accepted / max(self.n, 1), dtype=np.float64)

    @property
    def risk(self) -> NDArray[np.float64]:
        """Selective risk (error rate among accepted rows) at each threshold."""
        return np.asarray(self.n_errors / np.maximum(self.n_accepted, 1), dtype=np.float64)

    @property
    def error_rate(self) -> float:
        """Error rate over all rows (the risk at full coverage)."""
        return float(self.n_errors[-1] / self.n) if self.n else float("nan")

    @property
    def aurc(self) -> float:
        """Area under the risk-coverage curve.

        Each row contributes the selective risk at the threshold equal to its own
        score, divided by ``n``; without ties this is the usual
        ``mean_k risk(top k)``.
        """
        if self.n == 0:
            return float("nan")
        steps = np.diff(self.n_accepted, prepend=0)
        return float(np.sum(steps * self.risk) / self.n)

    @property
    def optimal_aurc(self) -> float:
        """AURC of an oracle that ranks every correct row above every error."""
        return _optimal_aurc(self.n, int(self.n_errors[-1]) if self.n else 0)

    @property
    def eaurc(self) -> float:
        """Excess AURC: ``aurc - optimal_aurc`` (0 for a perfect ranking)."""
        return self.aurc - self.optimal_aurc

    def at_coverage(self, coverages: Iterable[float]) -> list[OperatingPoint]:
        """Selective risk at target coverages.

        Ties are accepted together, so the point used for a target ``c`` is the
        one with the largest coverage that does not exceed ``c`` (never accept
        more than asked). A target below the first point gives coverage 0.

        Examples
        --------
        >>> c = risk_coverage([3, 2, 2, 1], [0, 0, 1, 1])
        >>> [(p.coverage, p.risk) for p in c.at_coverage([0.5, 0.75])]
        [(0.25, 0.0), (0.75, 0.3333333333333333)]
        """
        cov = self.coverage
        out = []
        for target in coverages:
            j = int(np.searchsorted(cov, float(target) + 1e-12, side="right")) - 1
            out.append(self._point(j, "at_coverage", target=float(target)))
        return out

    def at_risk(self, targets: Iterable[float]) -> list[OperatingPoint]:
        """Largest coverage whose *empirical* selective risk is at most each target.

        This is the naive operating point: it carries no guarantee on new data
        (compare :func:`certified_threshold`).

        Examples
        --------
        >>> c = risk_coverage([3, 2, 2, 1], [0, 0, 1, 1])
        >>> [p.coverage for p in c.at_risk([0.0, 0.4, 0.5])]
        [0.25, 0.75, 1.0]
        """
        risk = self.risk
        out = []
        for target in targets:
            ok = np.flatnonzero(risk <= float(target) + 1e-12)
            j = int(ok[-1]) if len(ok) else -1
            out.append(self._point(j, "empirical", target=float(target)))
        return out

    def _point(self, j: int, method: str, target: float | None = None) -> OperatingPoint:
        if j < 0:
            return OperatingPoint(
                self.name, math.inf, 0.0, math.nan, math.nan, 0, 0, method, target
            )
        return OperatingPoint(
            score=self.name,
            threshold=float(self.thresholds[j]),
            coverage=float(self.coverage[j]),
            risk=float(self.risk[j]),
            risk_upper=float(self.band_at([j])[1][0]),
            n_accepted=int(self.n_accepted[j]),
            n_errors=int(self.n_errors[j]),
            method=method,
            target=target,
        )

    def downsample(self, max_points: int = 400) -> NDArray[np.intp]:
        """Indices of at most ``max_points`` points spread evenly over coverage."""
        m = len(self.thresholds)
        if m <= max_points:
            return np.arange(m)
        grid = np.linspace(0, self.n, max_points)
        idx = np.searchsorted(self.n_accepted, grid, side="left").clip(0, m - 1)
        return np.unique(np.concatenate([idx, [m - 1]]))

    def to_dict(self, max_points: int = 200) -> dict[str, Any]:
        """JSON-safe summary with at most ``max_points`` curve points."""
        idx = self.downsample(max_points)
        lower, upper = self.band_at(idx)
        return {
            "score": self.name,
            "n": self.n,
            "aurc": self.aurc,
            "eaurc": self.eaurc,
            "error_rate": self.error_rate,
            "band": self.band,
            "confidence": self.confidence,
            "points": {
                "threshold": to_builtin(self.thresholds[idx]),
                "coverage": to_builtin(self.coverage[idx]),
                "risk": to_builtin(self.risk[idx]),
                "risk_lower": to_builtin(lower),
                "risk_upper": to_builtin(upper),
            },
        }


def risk_coverage(
    scores: ArrayLike,
    errors: ArrayLike,
    *,
    name: str = "score",
    band: str = "wilson",
    confidence: float = 0.95,
) -> RiskCoverageCurve:
    """Risk-coverage curve of one score, with a pointwise confidence band.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Confidence score per row, higher is more confident; ``nan`` ranks last.
    errors : array-like of bool of shape (n,)
        Whether the model's answer on the row is wrong.
    name : str, default="score"
        Label of the curve.
    band : {"wilson", "clopper-pearson"}, default="wilson"
        Pointwise interval of the selective risk at each threshold.
    confidence : float, default=0.95
        Coverage of the pointwise band.

    Returns
    -------
    RiskCoverageCurve

    Examples
    --------
    >>> c = risk_coverage([0.2, 0.9, 0.9, 0.5], [1, 0, 1, 0], name="p")
    >>> c.thresholds.tolist(), c.n_accepted.tolist(), c.n_errors.tolist()
    ([0.9, 0.5, 0.2], [2, 3, 4], [1, 1, 2])
    """
    s, e = _as_scores_errors(scores, errors)
    if len(s) == 0:
        return curve_from_counts([], [], [], name=name, band=band, confidence=confidence)
    order = np.argsort(-s)  # ties are grouped below, so their order does not matter
    s_sorted = s[order]
    cum_errors = np.cumsum(e[order], dtype=np.int64)
    # Last row of each group of tied scores: accepting a score accepts the whole group.
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    n_rows = np.diff(ends + 1, prepend=0)
    n_errs = np.diff(cum_errors[ends], prepend=0)
    return curve_from_counts(
        s_sorted[ends], n_rows, n_errs, name=name, band=band, confidence=confidence
    )


def curve_from_counts(
    values: ArrayLike,
    n_rows: ArrayLike,
    n_errors: ArrayLike,
    *,
    name: str = "score",
    band: str = "wilson",
    confidence: float = 0.95,
) -> RiskCoverageCurve:
    """Risk-coverage curve from per-score counts: how many rows, and errors, have each score.

    The exact curve of the rows those counts summarize, so partial counts computed
    on shards (e.g. Dask partitions) and summed give the in-memory curve.

    Parameters
    ----------
    values : array-like of shape (k,)
        Distinct scores (any order; ``nan`` ranks last).
    n_rows, n_errors : array-like of int of shape (k,)
        Rows, and wrong rows among them, with each score.
    name, band, confidence
        As in :func:`risk_coverage`.

    Examples
    --------
    >>> c = curve_from_counts([0.5, 0.9, 0.2], [1, 2, 1], [0, 1, 1])
    >>> c.n_accepted.tolist(), c.n_errors.tolist()
    ([2, 3, 4], [1, 1, 2])
    """
    check_fraction(confidence, "confidence")
    check_one_of(band, "band", _BANDS)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = np.where(np.isnan(v), -np.inf, v)
    rows = np.asarray(n_rows, dtype=np.int64).reshape(-1)
    errs = np.asarray(n_errors, dtype=np.int64).reshape(-1)
    order = np.argsort(-v, kind="stable")
    n_acc = np.cumsum(rows[order], dtype=np.int64)
    n_err = np.cumsum(errs[order], dtype=np.int64)
    n = int(n_acc[-1]) if len(n_acc) else 0
    return RiskCoverageCurve(name, v[order], n_acc, n_err, n, float(confidence), band)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold on one score and what it gives.

    Attributes
    ----------
    score : str
        Which score is thresholded.
    threshold : float
        Rows with ``score >= threshold`` are accepted (``inf``: none).
    coverage, risk : float
        Fraction accepted and error rate among them (``nan`` if none).
    risk_upper : float
        Upper end of the pointwise band of ``risk``.
    n_accepted, n_errors : int
        Counts behind ``coverage`` and ``risk``.
    method : str
        How the threshold was chosen: ``"empirical"`` (largest coverage whose
        observed risk meets the target), ``"certified"`` (Learn-then-Test),
        ``"at_coverage"`` or ``"cost_optimal"``.
    target : float, optional
        The target coverage / error the point was chosen for.
    """

    score: str
    threshold: float
    coverage: float
    risk: float
    risk_upper: float
    n_accepted: int
    n_errors: int
    method: str
    target: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (infinite thresholds become ``None``)."""
        return {k: to_builtin(v) for k, v in self.__dict__.items()}


def apply_threshold(
    scores: ArrayLike,
    errors: ArrayLike,
    threshold: float,
    *,
    name: str = "score",
    method: str = "empirical",
    target: float | None = None,
    confidence: float = 0.95,
) -> OperatingPoint:
    """Coverage and risk of accepting ``score >= threshold`` on (new) data.

    Examples
    --------
    >>> apply_threshold([0.9, 0.8, 0.1], [0, 1, 1], 0.8).risk
    0.5
    """
    s, e = _as_scores_errors(scores, errors)
    acc = s >= threshold
    k, err = int(acc.sum()), int(e[acc].sum())
    _, hi = binomial_interval([err], [k], confidence=confidence)
    return OperatingPoint(
        score=name,
        threshold=float(threshold),
        coverage=k / len(s) if len(s) else math.nan,
        risk=err / k if k else math.nan,
        risk_upper=float(hi[0]),
        n_accepted=k,
        n_errors=err,
        method=method,
        target=target,
    )


# ------------------------------------------------------------------ certification
def certify_threshold(
    scores: ArrayLike,
    errors: ArrayLike,
    *,
    max_error: float,
    delta: float,
    test: str = "randomized",
    random_state: int | np.random.Generator | None = None,
) -> CertifiedThreshold:
    """Lowest threshold whose selective risk is at most ``max_error`` w.p. ``1 - delta``.

    Learn-then-Test (fixed-sequence testing, exact binomial p-values) on array-likes,
    delegated to :func:`safepredict.tiers.certify_threshold`, the same procedure the
    risk-controlled tiers use: this is the single place the evaluation certifies a
    threshold. ``.threshold`` is ``inf`` when nothing could be certified (accept
    nothing). ``test`` and ``random_state`` are passed on (by default the
    randomized test, its draws derived from the rows: reproducible).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(size=2000)
    >>> err = rng.uniform(size=2000) < 0.3 * (1 - s)
    >>> cert = certify_threshold(s, err, max_error=0.05, delta=0.1)
    >>> bool(cert.certified and 0.5 < cert.threshold < 1.0)
    True
    """
    check_fraction(max_error, "max_error")
    check_fraction(delta, "delta")
    s, e = _as_scores_errors(scores, errors)
    return _certify(s, e, max_error=max_error, delta=delta, test=test, random_state=random_state)


def certified_threshold(
    scores: ArrayLike, errors: ArrayLike, *, max_error: float, delta: float
) -> float:
    """Deprecated (0.2, removed in 0.3): ``certify_threshold(...).threshold``.

    One verb, one meaning: ``certify_threshold`` runs the procedure here and in
    :mod:`safepredict.tiers`; the certified threshold is what it returns.
    """
    warnings.warn(
        "safepredict.evaluation.certified_threshold is deprecated and will be removed in "
        "safepredict 0.3; use certify_threshold(scores, errors, max_error=..., "
        "delta=...).threshold instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return float(certify_threshold(scores, errors, max_error=max_error, delta=delta).threshold)
