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
from numpy.typing import ArrayLike, NDArray
from scipy import special

from safepredict._jsonl import to_builtin
from safepredict._stats import binomial_p_value, clopper_pearson, rows_needed
from safepredict.config import Tier, TierPolicy
from safepredict.exceptions import ConfigError

__all__ = [
    "ACCEPT_ALL",
    "CertifiedThreshold",
    "TierCalibration",
    "TierInputs",
    "accept_at",
    "assign_tiers",
    "binomial_p_value",
    "calibrate_tiers",
    "certification_power",
    "certify_threshold",
    "clopper_pearson",
    "group_labels",
    "plan_calibration",
    "probability_tie_breaks",
    "ranking_keys",
    "rows_needed",
]


@dataclass(frozen=True)
class CertifiedThreshold:
    """What :func:`certify_threshold` found.

    Parameters
    ----------
    threshold : float
        Rows with ``score >= threshold`` are accepted (the primary score; see
        ``key`` for ties); ``inf`` when nothing could be certified.
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
    key : tuple of float
        The full ranking key of the threshold (primary score first, then the
        tie-breaking scores): a row is accepted when its key is
        lexicographically ``>=`` this one. ``(threshold,)`` for a plain score.
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
    key: tuple[float, ...] = ()

    @property
    def acceptance_rate(self) -> float:
        """Fraction of the calibration rows accepted."""
        return self.n_accepted / self.n_calibration if self.n_calibration else 0.0

    def to_state(self) -> dict[str, Any]:
        """JSON-safe dict (``inf`` thresholds stored as ``None``)."""
        out: dict[str, Any] = dict(self.__dict__)
        out["threshold"] = self.threshold if math.isfinite(self.threshold) else None
        out["key"] = [v if math.isfinite(v) else None for v in self.key]
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CertifiedThreshold:
        """Inverse of :meth:`to_state`."""
        data = dict(state)
        data["threshold"] = math.inf if data["threshold"] is None else float(data["threshold"])
        data["key"] = tuple(math.inf if v is None else float(v) for v in data.get("key", ()))
        return cls(**data)


#: Threshold key of a tier certified on *every* calibration row it saw: it then
#: accepts every row with a finite score (the lowest float, so JSON keeps it).
ACCEPT_ALL = float(np.finfo(np.float64).min)


def ranking_keys(scores: ArrayLike) -> NDArray[np.float64]:
    """Scores as a ``(n, k)`` array of lexicographic ranking keys.

    Column 0 is the primary score, further columns break its ties (in order).
    A 1-D score is one column. A row whose primary score is not finite is never
    accepted; a missing (``nan``) tie-breaker counts as the lowest float (loses
    the tie).

    Examples
    --------
    >>> ranking_keys([0.9, 0.8]).shape
    (2, 1)
    """
    keys = np.asarray(scores, dtype=np.float64)
    if keys.ndim == 1:
        keys = keys[:, None]
    if keys.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D (rows x keys); got shape {keys.shape}.")
    if keys.shape[1] > 1 and np.isnan(keys[:, 1:]).any():
        keys = keys.copy()
        keys[:, 1:] = np.where(np.isnan(keys[:, 1:]), ACCEPT_ALL, keys[:, 1:])
    return keys


def accept_at(keys: ArrayLike, threshold: ArrayLike) -> NDArray[np.bool_]:
    """Rows whose ranking key is lexicographically ``>=`` the threshold key.

    ``threshold`` is one key ``(k,)`` for every row or one per row ``(n, k)``;
    an ``inf`` primary threshold accepts nothing. Keys with fewer columns than
    the threshold lose ties on the missing columns (conservative).

    Examples
    --------
    >>> keys = np.array([[0.9, 0.1], [0.9, 0.5], [0.8, 0.9], [0.95, 0.0]])
    >>> accept_at(keys, [0.9, 0.3]).tolist()
    [False, True, False, True]
    """
    k = ranking_keys(keys)
    t = np.asarray(threshold, dtype=np.float64)
    t = np.broadcast_to(t if t.ndim == 2 else t.reshape(1, -1), (len(k), t.shape[-1]))
    greater = np.zeros(len(k), dtype=bool)
    equal = np.ones(len(k), dtype=bool)
    for j in range(t.shape[1]):
        col = k[:, j] if j < k.shape[1] else np.full(len(k), ACCEPT_ALL)
        greater |= equal & (col > t[:, j])
        equal &= col == t[:, j]
    out = greater | equal
    out &= np.isfinite(k[:, 0]) & np.isfinite(t[:, 0])
    return np.asarray(out, dtype=bool)


def _sorted_keys(
    keys: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.intp]]:
    """Rows with a finite primary score, best first; and how many rows each key accepts.

    Returns ``(order, sorted_keys, accepts)``: ``accepts[i]`` is the number of
    rows whose key is ``>=`` the ``i``-th best key (rows with equal keys are
    accepted together, so a threshold never splits a tie).
    """
    rows = np.flatnonzero(np.isfinite(keys[:, 0]))
    sub = keys[rows]
    order = rows[np.lexsort(tuple(-sub[:, j] for j in reversed(range(sub.shape[1]))))]
    sk = keys[order]
    if len(sk) == 0:
        return order, sk, np.zeros(0, dtype=np.intp)
    new = np.concatenate([[True], np.any(sk[1:] != sk[:-1], axis=1)])
    gid = np.cumsum(new) - 1
    ends = np.append(np.flatnonzero(new)[1:], len(sk))
    return order, sk, ends[gid].astype(np.intp)


def _threshold_grid(
    sorted_keys: NDArray[np.float64], accepts: NDArray[np.intp], start_n: int, n_steps: int
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Label-free candidate threshold keys, strictest first, and how many rows each accepts.

    The first candidate is the strictest key that accepts at least ``start_n``
    rows; then the accepted count grows in ~equal steps of
    ``(n - start_n) / n_steps`` rows down to accepting every row.
    """
    n = len(sorted_keys)
    if n < start_n or n == 0:
        return np.zeros((0, sorted_keys.shape[1])), np.zeros(0, dtype=np.intp)
    targets = np.unique(np.linspace(start_n, n, num=max(n_steps, 1) + 1).round().astype(np.intp))
    counts = np.unique(accepts[targets - 1])
    return sorted_keys[counts - 1], counts.astype(np.intp)


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
    rejected hypothesis is true, so its error rate is ``<= max_error``. The
    last candidate is "accept every row" (threshold :data:`ACCEPT_ALL`), so a
    tier certified on all its calibration rows also accepts new rows scored
    below the lowest calibration score.

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
    scores : ndarray of shape (n,) or (n, k)
        Per-row score, higher = more confident; or ``k`` ranking keys per row
        (the primary score, then tie-breakers; see :func:`ranking_keys`): the
        grid then runs over the finest-grained order and a tie of the primary
        score can be split. Rows with a non-finite primary score are never
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
    keys = ranking_keys(scores)
    e = np.asarray(errors, dtype=bool).reshape(-1)
    if len(keys) != len(e):
        raise ValueError(
            f"scores and errors must have the same length; got {len(keys)} and {len(e)}."
        )
    need = rows_needed(max_error, delta)
    start = rows_needed(max_error, delta * first_weight)
    order, sorted_keys, accepts = _sorted_keys(keys)
    thresholds, counts = _threshold_grid(sorted_keys, accepts, start, n_steps)
    weights = _anchor_weights(counts, first_weight, anchor_factor)
    if len(counts) == 0 or weights[0] == 1.0:
        # Too few rows for several anchors: plain fixed sequence with all of delta.
        thresholds, counts = _threshold_grid(sorted_keys, accepts, need, n_steps)
        weights = np.zeros(len(counts))
        weights[:1] = 1.0
    chosen = -1
    n_tested = len(counts)
    if len(counts):
        cum_errors = np.concatenate([[0], np.cumsum(e[order])])
        k = cum_errors[counts]
        p = binomial_p_value(k, counts, max_error)
        rejected = np.flatnonzero(_fallback_rejections(p, weights * delta))
        chosen = int(rejected[-1]) if len(rejected) else -1
    if chosen < 0:
        return CertifiedThreshold(
            threshold=math.inf,
            certified=False,
            n_calibration=len(keys),
            n_accepted=0,
            n_errors=0,
            upper_bound=1.0,
            needed_n=need,
            max_error=float(max_error),
            delta=float(delta),
            n_tested=n_tested,
            key=(math.inf,) * keys.shape[1],
        )
    n_acc = int(counts[chosen])
    n_err = int(k[chosen])
    key = tuple(float(v) for v in thresholds[chosen])
    if n_acc == len(sorted_keys):  # "accept every row" is itself a label-free candidate
        key = (ACCEPT_ALL,) * keys.shape[1]
    return CertifiedThreshold(
        threshold=key[0],
        certified=True,
        n_calibration=len(keys),
        n_accepted=n_acc,
        n_errors=n_err,
        upper_bound=clopper_pearson(n_err, n_acc, 1.0 - delta)[1],
        needed_n=need,
        max_error=float(max_error),
        delta=float(delta),
        n_tested=n_tested,
        key=key,
    )


def _grid_counts(
    n: int, max_error: float, delta: float, n_steps: int = 50
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Accepted counts and delta shares of the :func:`certify_threshold` grid on ``n`` rows."""
    accepts = np.arange(1, n + 1, dtype=np.intp)
    keys = np.zeros((n, 1))
    start = rows_needed(max_error, delta * 0.25)
    _, counts = _threshold_grid(keys, accepts, start, n_steps)
    weights = _anchor_weights(counts, 0.25, 2.0)
    if len(counts) == 0 or weights[0] == 1.0:
        _, counts = _threshold_grid(keys, accepts, rows_needed(max_error, delta), n_steps)
        weights = np.zeros(len(counts))
        weights[:1] = 1.0
    return counts, weights * delta


def certification_power(
    n: int,
    *,
    max_error: float,
    delta: float,
    expected_error: float,
    target_accept: float,
    n_sim: int = 2000,
    seed: int = 0,
) -> float:
    """Probability that ``n`` calibration rows certify a tier at ``target_accept``.

    The model the planner assumes: the ``target_accept * n`` best-ranked rows
    are wrong independently with probability ``expected_error``, the rows below
    them are all wrong (nothing beyond the target can be certified). Success:
    :func:`certify_threshold` certifies a threshold accepting at least 90% of
    the target rows (of the largest grid candidate within them, when the grid
    is coarser than that). Monte Carlo over ``n_sim`` draws of the errors, run with
    the exact grid, p-values and fallback weights of :func:`certify_threshold`
    (vectorized over the draws); seeded, so the answer is reproducible.

    Examples
    --------
    >>> p = certification_power(1000, max_error=0.05, delta=0.1, expected_error=0.02,
    ...                         target_accept=0.8)
    >>> p > 0.9
    True
    """
    band = math.floor(target_accept * n)
    if band < 1:
        return 0.0
    counts, levels = _grid_counts(n, max_error, delta)
    counts = counts[counts <= band]
    levels = levels[: len(counts)]
    if len(counts) == 0:
        return 0.0
    goal = 0.9 * min(band, int(counts[-1]) / 0.9)
    rng = np.random.default_rng(seed)
    steps = np.diff(np.concatenate([[0], counts]))
    k = np.cumsum(rng.binomial(steps, expected_error, size=(n_sim, len(counts))), axis=1)
    p = np.empty(k.shape)
    for j, c in enumerate(counts.tolist()):  # CDF table per grid point, looked up per draw
        table = special.bdtr(np.arange(int(k[:, j].max()) + 1), c, max_error)
        p[:, j] = table[k[:, j]]
    best = np.zeros(n_sim, dtype=np.intp)
    carry = np.zeros(n_sim)
    for j in range(len(counts)):
        level = levels[j] + carry
        rejected = p[:, j] <= level
        best = np.where(rejected, counts[j], best)
        carry = np.where(rejected, level, 0.0)
    return float(np.mean(best >= goal))


def plan_calibration(
    *,
    max_error: float,
    delta: float,
    expected_error: float,
    target_accept: float,
    power: float = 0.9,
) -> int:
    """Labelled calibration rows needed to certify a ``max_error`` tier with probability ``power``.

    The smallest ``n`` at which a tier whose accepted rows are wrong at rate
    ``expected_error``, accepting a share ``target_accept`` of the rows that
    reach it, is certified (at 90% or more of that acceptance) with probability
    at least ``power`` (:func:`certification_power`; binary search over ``n``).
    Use the ``delta`` share the tier gets (``delta / m`` with ``m`` risk
    tiers, and divided again by the classes or groups of a ``per_class`` /
    ``group_by`` tier), and divide ``target_accept`` by the share of rows
    reaching the tier when earlier tiers take some.

    Parameters
    ----------
    max_error : float
        The tier's ``max_error``, in (0, 1).
    delta : float
        Its share of ``delta``, in (0, 1).
    expected_error : float
        The error rate expected among the accepted rows, in [0, max_error).
    target_accept : float
        The share of rows the tier should accept, in (0, 1].
    power : float, default=0.9
        Wanted probability of certifying, in (0, 1).

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        If an argument is out of range, or ``expected_error >= max_error``
        (no calibration size certifies that).

    Examples
    --------
    >>> plan_calibration(max_error=0.05, delta=0.1, expected_error=0.02, target_accept=0.8)
    787
    """
    for name, value, low_open in (
        ("max_error", max_error, True),
        ("delta", delta, True),
        ("target_accept", target_accept, True),
        ("power", power, True),
        ("expected_error", expected_error, False),
    ):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (value > 0 if low_open else value >= 0) and value <= 1
        ok = ok and not (name in ("max_error", "delta", "power") and value >= 1)
        if not ok:
            raise ConfigError(
                f"plan_calibration: {name} must be a number in "
                f"{'(0' if low_open else '[0'}, 1{']' if name == 'target_accept' else ')'}; "
                f"got {value!r}."
            )
    if expected_error >= max_error:
        raise ConfigError(
            f"plan_calibration: expected_error={expected_error} is not below "
            f"max_error={max_error}; no number of calibration rows certifies a tier whose "
            "accepted rows are that often wrong. Lower target_accept (so the accepted rows are "
            "more accurate) or raise max_error."
        )

    def enough(n: int) -> bool:
        return (
            certification_power(
                n,
                max_error=max_error,
                delta=delta,
                expected_error=expected_error,
                target_accept=target_accept,
            )
            >= power
        )

    lo = max(1, math.ceil(rows_needed(max_error, delta) / target_accept) - 1)
    hi = lo + 1
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > 10**7:
            raise ConfigError(
                "plan_calibration: more than 10,000,000 rows would be needed; raise max_error "
                "or delta, or lower power."
            )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass
class TierInputs:
    """Per-row quantities tier conditions are evaluated on.

    Parameters
    ----------
    task : {"classification", "regression"}
        The predictor's task.
    confidence : ndarray of shape (n,)
        Conformal confidence (``nan`` for regression).
    set_size : ndarray of shape (n,), optional
        Classification: size of the conformal set.
    width : ndarray of shape (n,), optional
        Regression: width of the conformal interval.
    scores : dict of str to ndarray, default={}
        Scores a ``max_error`` tier may threshold, by name (``"conformal"``,
        ``"top_prob"``, ``"margin"``); higher means more confident.
    predicted_class : ndarray of shape (n,), optional
        Index of the predicted class (for per-class thresholds).
    credibility : ndarray of shape (n,), optional
        Classification: conformal credibility (p-value of the predicted label).
    tie_break : dict of str to ndarray, default={}
        Per score name, finer scores ``(n,)`` or ``(n, j)`` that break the ties
        of the primary score (in order; higher = more confident). A
        ``max_error`` tier ranks rows lexicographically by the score and then
        these, so it can certify on the finest-grained order. Default for
        classification: :func:`probability_tie_breaks` of ``scores``.
    groups : dict of str to ndarray, default={}
        Per column name, each row's group value (for ``group_by`` tiers).
    """

    task: str
    confidence: NDArray[np.float64]
    set_size: NDArray[np.intp] | None = None
    width: NDArray[np.float64] | None = None
    scores: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    predicted_class: NDArray[np.intp] | None = None
    credibility: NDArray[np.float64] | None = None
    tie_break: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    groups: Mapping[str, NDArray[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.confidence)


def group_labels(values: Any) -> NDArray[Any]:
    """Group values as strings (the form thresholds are stored and reported under).

    Examples
    --------
    >>> group_labels([1, "a", None]).tolist()
    ['1', 'a', 'None']
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "fiubU":  # numbers and strings: vectorized, same text as str()
        return np.asarray(arr.astype(str), dtype=object)
    return np.array([str(v) for v in arr.astype(object).tolist()], dtype=object)


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def _json_threshold(t: Any) -> Any:
    if isinstance(t, Mapping):
        return {str(g): _json_threshold(v) for g, v in t.items()}
    arr = np.asarray(t, dtype=np.float64)
    if arr.ndim == 0:
        return _finite_or_none(float(arr))
    return [_json_threshold(v) for v in arr]


def _from_json_threshold(t: Any) -> Any:
    if t is None:
        return math.inf
    if isinstance(t, Mapping):
        return {str(g): _from_json_threshold(v) for g, v in t.items()}
    if isinstance(t, list):
        return np.array([_from_json_threshold(v) for v in t], dtype=np.float64)
    return float(t)


@dataclass
class TierCalibration:
    """Thresholds certified for the risk-controlled tiers.

    Parameters
    ----------
    thresholds : dict
        Tier name -> minimum primary score a row needs: a float, an array
        indexed by predicted class (``per_class`` tiers) or a dict by group
        value (``group_by`` tiers). ``inf`` means the tier (class, group) could
        not be certified and accepts nothing.
    report : dict
        Tier name -> what the calibration found (see
        ``SafePredictor.calibration_report``); JSON-safe.
    warnings : list of dict
        One entry per tier (or class, or group) that could not be certified:
        ``tier``, ``class`` / ``group``, ``reason`` (``"budget"``: too few
        calibration rows even with zero errors; ``"not_certified"``: too many
        errors), ``message``.
    keys : dict
        Tier name -> the full threshold key (primary score, then tie-breakers;
        same layout as ``thresholds`` with one more axis). Rows are accepted
        when their ranking key is lexicographically ``>=`` it. Missing for a
        tier: its ``thresholds`` alone.

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
    keys: dict[str, Any] = field(default_factory=dict)

    def is_certified(self, tier: str) -> bool:
        """Whether ``tier`` can accept any row at all."""
        t = self.thresholds.get(tier)
        if t is None:
            return False
        if isinstance(t, Mapping):
            return any(math.isfinite(float(v)) for v in t.values())
        return bool(np.any(np.isfinite(np.asarray(t, dtype=np.float64))))

    def key_for(self, tier: str) -> Any:
        """The threshold key(s) of ``tier`` (derived from ``thresholds`` if not stored)."""
        if tier in self.keys:
            return self.keys[tier]
        t = self.thresholds[tier]
        if isinstance(t, Mapping):
            return {g: np.array([float(v)]) for g, v in t.items()}
        return np.asarray(t, dtype=np.float64)[..., None]

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (``inf`` thresholds become ``None``)."""
        return {
            "thresholds": {k: _json_threshold(v) for k, v in self.thresholds.items()},
            "keys": {k: _json_threshold(v) for k, v in self.keys.items()},
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
            keys={k: _from_json_threshold(v) for k, v in state.get("keys", {}).items()},
        )


def _base_mask(tier: Tier, inputs: TierInputs) -> NDArray[np.bool_]:
    """Rows meeting every condition of ``tier`` except the ``max_error`` threshold."""
    n = len(inputs)
    mask = np.ones(n, dtype=bool)
    if tier.min_confidence is not None:
        mask &= inputs.confidence >= tier.min_confidence
    if tier.min_credibility is not None:  # unknown credibility never meets it (fail closed)
        if inputs.credibility is None:
            mask[:] = False
        else:
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


def probability_tie_breaks(
    scores: Mapping[str, NDArray[np.float64]],
) -> dict[str, NDArray[np.float64]]:
    """Tie-breakers of the classification scores, from the top probability and the margin.

    ``conformal``: ``1 - p_2`` (the runner-up's LAC conformity threshold, which
    the conformal confidence is a step function of), then ``p_1``;
    ``top_prob``: the margin; ``margin``: the top probability. Ranking by the
    score and then these is the finest-grained order the model output allows;
    for LAC it is the order of ``1 - p_2`` itself, which does not depend on the
    calibration labels. Empty when ``top_prob`` or ``margin`` is missing.

    Examples
    --------
    >>> tb = probability_tie_breaks({"top_prob": np.array([0.7]), "margin": np.array([0.5])})
    >>> np.round(tb["conformal"], 3).tolist()
    [[0.8, 0.7]]
    """
    top, margin = scores.get("top_prob"), scores.get("margin")
    if top is None or margin is None:
        return {}
    top = np.asarray(top, dtype=np.float64)
    margin = np.asarray(margin, dtype=np.float64)
    return {
        "conformal": np.column_stack([1.0 - (top - margin), top]),
        "top_prob": margin,
        "margin": top,
    }


def _tier_keys(tier: Tier, inputs: TierInputs) -> NDArray[np.float64]:
    """The ranking keys of a ``max_error`` tier: its score, then its tie-breakers."""
    primary = _tier_score(tier, inputs)
    extra = inputs.tie_break.get(tier.score)
    if extra is None and inputs.task == "classification":
        extra = probability_tie_breaks(inputs.scores).get(tier.score)
    if extra is None:
        return ranking_keys(primary)
    extra_2d = np.asarray(extra, dtype=np.float64).reshape(len(primary), -1)
    return ranking_keys(np.column_stack([primary, extra_2d]))


def _group_values(tier: Tier, inputs: TierInputs) -> NDArray[Any]:
    assert tier.group_by is not None
    values = inputs.groups.get(tier.group_by)
    if values is None:
        raise ConfigError(
            f"tier {tier.name!r}: group_by = {tier.group_by!r} needs that column's values; "
            f"got columns {sorted(inputs.groups)}. Calibrate and decide on data with a "
            f"{tier.group_by!r} column (a DataFrame column or a feature name)."
        )
    return group_labels(values)


def _row_thresholds(
    tier: Tier, calibration: TierCalibration, inputs: TierInputs
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-row threshold keys ``(n, k)`` of a ``max_error`` tier, and rows of unseen groups."""
    n = len(inputs)
    entry = calibration.key_for(tier.name)
    unseen = np.zeros(n, dtype=bool)
    if isinstance(entry, Mapping):
        values = _group_values(tier, inputs)
        width = max((len(np.atleast_1d(v)) for v in entry.values()), default=1)
        out = np.full((n, width), math.inf)
        for value in np.unique(values).tolist():
            rows = values == value
            if value in entry:
                key = np.asarray(entry[value], dtype=np.float64).reshape(-1)
                out[rows, : len(key)] = key
                out[rows, len(key) :] = ACCEPT_ALL
            else:
                unseen |= rows
        return out, unseen
    t = np.asarray(entry, dtype=np.float64)
    if t.ndim == 2:  # per predicted class
        if inputs.predicted_class is None:
            return np.full((n, t.shape[1]), math.inf), unseen
        return t[np.clip(inputs.predicted_class, 0, len(t) - 1)], unseen
    return np.broadcast_to(t.reshape(1, -1), (n, t.size)), unseen


def _tier_mask(
    tier: Tier, inputs: TierInputs, calibration: TierCalibration | None
) -> NDArray[np.bool_]:
    mask = _base_mask(tier, inputs)
    if tier.max_error is not None:
        if calibration is None or tier.name not in calibration.thresholds:
            return np.zeros(len(inputs), dtype=bool)
        thresholds, _ = _row_thresholds(tier, calibration, inputs)
        mask &= accept_at(_tier_keys(tier, inputs), thresholds)
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
    ``n_classes`` predicted classes, within a ``group_by`` tier across the
    ``G`` group values among the rows reaching it: with probability at least
    ``1 - delta`` every certified tier (class, group) keeps its ``max_error``
    at once. A group with fewer rows than :func:`rows_needed` at its share
    accepts nothing (``group_too_small``).

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
        keys = _tier_keys(tier, inputs)
        eligible = open_rows & _base_mask(tier, inputs)
        n_reaching = int(open_rows.sum())
        if tier.per_class or tier.group_by is not None:
            report, threshold, key, hit = _calibrate_strata(
                tier, inputs, keys, e, eligible, open_rows, delta_tier, n_classes, class_labels,
                out.warnings,
            )  # fmt: skip
        else:
            res = certify_threshold(
                keys[eligible], e[eligible], max_error=tier.max_error, delta=delta_tier
            )
            threshold, key = res.threshold, np.asarray(res.key, dtype=np.float64)
            hit = eligible & accept_at(keys, key)
            report = _tier_report(tier, res, n, n_reaching)
            report.update({"tier": tier.name, "per_class": False, "n_reaching": n_reaching})
            if not res.certified:
                report["calibration_rows_planned"] = _planned_rows(
                    tier, keys[eligible], e[eligible], delta_tier, n, n_reaching
                )
                out.warnings.append(_warning(tier, res, n, n_reaching, report=report))
        out.thresholds[tier.name] = threshold
        out.keys[tier.name] = key
        out.report[tier.name] = to_builtin(report)
        open_rows &= ~hit
    return out


def _calibrate_strata(
    tier: Tier,
    inputs: TierInputs,
    keys: NDArray[np.float64],
    e: NDArray[np.bool_],
    eligible: NDArray[np.bool_],
    open_rows: NDArray[np.bool_],
    delta_tier: float,
    n_classes: int | None,
    class_labels: Any,
    warnings: list[dict[str, Any]],
) -> tuple[dict[str, Any], Any, Any, NDArray[np.bool_]]:
    """Certify a ``per_class`` or ``group_by`` tier stratum by stratum (Bonferroni)."""
    assert tier.max_error is not None
    n = len(inputs)
    if tier.per_class:
        k = int(n_classes or 0)
        if k < 1 or inputs.predicted_class is None:
            raise ConfigError(
                f"tier {tier.name!r}: per_class = true needs a classifier (predicted "
                "classes); remove per_class for regression."
            )
        labels = [str(v) for v in (list(class_labels) if class_labels is not None else range(k))]
        strata = np.asarray(inputs.predicted_class)
        names: list[Any] = list(range(k))
    else:
        values = _group_values(tier, inputs)
        names = sorted(set(values[open_rows].tolist()))
        labels = list(names)
        strata = values
    share = delta_tier / max(len(names), 1)
    per: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    key_of: dict[str, NDArray[np.float64]] = {}
    hit = np.zeros(n, dtype=bool)
    for name, label in zip(names, labels, strict=True):
        rows = eligible & (strata == name)
        res = certify_threshold(keys[rows], e[rows], max_error=tier.max_error, delta=share)
        thresholds[label] = res.threshold
        key_of[label] = np.asarray(res.key, dtype=np.float64)
        hit |= rows & accept_at(keys, key_of[label])
        reach = int((open_rows & (strata == name)).sum())
        per[label] = _tier_report(tier, res, n, reach)
        if tier.group_by is not None:
            per[label]["too_small"] = bool(not res.certified and reach < res.needed_n)
        if not res.certified:
            per[label]["calibration_rows_planned"] = _planned_rows(
                tier, keys[rows], e[rows], share, n, reach
            )
            warnings.append(_warning(tier, res, n, reach, label=label, report=per[label]))
    n_acc = int(hit.sum())
    n_err = int(e[hit].sum())
    planned = [
        int(v["calibration_rows_planned"])
        for v in per.values()
        if v.get("calibration_rows_planned") is not None
    ]
    report: dict[str, Any] = {
        "tier": tier.name,
        "max_error": tier.max_error,
        "delta": delta_tier,
        "score": tier.score,
        "per_class": tier.per_class,
        "group_by": tier.group_by,
        "certified": any(math.isfinite(v) for v in thresholds.values()),
        "threshold": [thresholds[v] for v in labels] if tier.per_class else None,
        "n_calibration": n,
        "n_reaching": int(open_rows.sum()),
        "n_accepted": n_acc,
        "n_errors": n_err,
        "observed_error": n_err / n_acc if n_acc else None,
        "upper_bound": max((v["upper_bound"] for v in per.values() if v["certified"]), default=1.0),
        "acceptance_rate": n_acc / n if n else 0.0,
        "acceptance_interval": _rate_interval(n_acc, n),
        "rows_needed": rows_needed(tier.max_error, share),
        "calibration_rows_needed": max(
            (v["calibration_rows_needed"] for v in per.values()), default=0
        ),
        "calibration_rows_planned": max(planned, default=None),
        ("classes" if tier.per_class else "groups"): per,
    }
    if tier.per_class:
        threshold: Any = np.array([thresholds[v] for v in labels], dtype=np.float64)
        key: Any = np.stack([key_of[v] for v in labels]) if labels else np.zeros((0, 1))
        return report, threshold, key, hit
    report["threshold"] = {g: _finite_or_none(t) for g, t in thresholds.items()}
    return report, thresholds, key_of, hit


def _planned_rows(
    tier: Tier,
    keys: NDArray[np.float64],
    errors: NDArray[np.bool_],
    delta: float,
    n_total: int,
    n_reaching: int,
) -> int | None:
    """Calibration rows an uncertified tier needs, planned from what it observed.

    The operating point planned for is the largest acceptance of the eligible
    rows whose observed error is at most ``max_error / 2`` (room for the
    statistical margin); :func:`plan_calibration` then gives the rows needed
    to certify it with probability 0.9, scaled up by the share of calibration
    rows that reach the tier. ``None`` when even the most confident rows err
    more often than that.
    """
    assert tier.max_error is not None
    order, _, accepts = _sorted_keys(keys)
    if len(order) == 0 or n_reaching <= 0:
        return None
    cum = np.cumsum(errors[order])
    m = np.arange(1, len(order) + 1)
    ok = (cum <= tier.max_error / 2 * m) & (accepts == m)  # cut between distinct keys
    if not ok.any():
        return None
    best = int(np.flatnonzero(ok)[-1])
    try:
        rows = plan_calibration(
            max_error=tier.max_error,
            delta=delta,
            expected_error=float(cum[best] / m[best]),
            target_accept=float(m[best] / len(keys)),
        )
    except ConfigError:  # beyond any practical calibration size
        return None
    return _needed_total(rows, n_total, n_reaching)


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
    tier: Tier,
    res: CertifiedThreshold,
    n_total: int,
    n_reaching: int,
    label: str | None = None,
    report: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    kind = "group" if tier.group_by is not None else "predicted class"
    where = f"tier {tier.name!r}" + (f" ({kind} {label})" if label is not None else "")
    budget = res.n_calibration < res.needed_n
    total = _needed_total(res.needed_n, n_total, n_reaching)
    planned = None if report is None else report.get("calibration_rows_planned")
    plan = (
        f" At the error rate observed among its most confident rows, about {planned} "
        "calibration rows would certify it with probability 0.9 (plan_calibration)."
        if planned is not None
        else ""
    )
    if budget:
        message = (
            f"{where} cannot be certified: only {res.n_calibration} calibration rows reach it, "
            f"but certifying max_error={tier.max_error} at delta={res.delta:.4g} needs at least "
            f"{res.needed_n} even with zero errors (about {total} calibration rows in total). "
            "It accepts nothing until calibrated on more rows (or raise max_error/delta)." + plan
        )
    else:
        message = (
            f"{where} cannot be certified: no threshold keeps the error rate of accepted "
            f"calibration rows provably below max_error={tier.max_error} at "
            f"delta={res.delta:.4g}. It accepts nothing; the model may be too inaccurate for "
            "this max_error, or more calibration rows may help." + plan
        )
    return {
        "tier": tier.name,
        ("group" if tier.group_by is not None else "class"): label,
        "reason": "budget" if budget else "not_certified",
        "rows_available": res.n_calibration,
        "rows_needed": res.needed_n,
        "calibration_rows_needed": total,
        "calibration_rows_planned": planned,
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
        row still goes to the first tier whose conditions it meets),
        ``uncertified:<tier>`` (rows that reached a ``max_error`` tier which
        could not be certified, or, for a ``per_class`` / ``group_by`` tier,
        whose predicted class or group could not be certified),
        ``group_too_small:<value>`` (their group had too few calibration rows
        to certify) and ``unseen_group:<value>`` (a group value the calibration
        never saw: the row goes straight to the fallback tier).

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

    def note(rows: NDArray[np.bool_], reason: str) -> None:
        for row in np.flatnonzero(rows).tolist():
            extra.setdefault(row, []).append(reason)

    for index, tier in enumerate(policy.tiers[:-1]):
        if not open_rows.any():
            break
        if tier.max_error is None:
            hit = open_rows & _base_mask(tier, inputs)
        elif calibration is None or not calibration.is_certified(tier.name):
            note(open_rows, f"uncertified:{tier.name}")
            continue
        else:
            thresholds, unseen = _row_thresholds(tier, calibration, inputs)
            if unseen.any():
                values = _group_values(tier, inputs)
                for row in np.flatnonzero(open_rows & unseen).tolist():
                    extra.setdefault(row, []).append(f"unseen_group:{values[row]}")
                open_rows &= ~unseen  # straight to the fallback tier
            hit = open_rows & _base_mask(tier, inputs)
            hit &= accept_at(_tier_keys(tier, inputs), thresholds)
            blocked = open_rows & ~hit & np.isinf(thresholds[:, 0]) & ~unseen
            if tier.group_by is not None and blocked.any():
                values = _group_values(tier, inputs)
                groups = calibration.report.get(tier.name, {}).get("groups", {})
                small = np.array(
                    [bool(groups.get(v, {}).get("too_small")) for v in values.tolist()]
                )
                for row in np.flatnonzero(blocked).tolist():
                    why = (
                        f"group_too_small:{values[row]}"
                        if small[row]
                        else f"uncertified:{tier.name}"
                    )
                    extra.setdefault(row, []).append(why)
            else:
                note(blocked, f"uncertified:{tier.name}")
        codes[hit] = index
        open_rows &= ~hit
    if inputs.set_size is not None:
        note(inputs.set_size == 0, "empty_set")
    return codes, {row: tuple(r) for row, r in extra.items()}
