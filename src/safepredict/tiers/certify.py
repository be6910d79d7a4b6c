"""Learn-then-Test certification of one ``max_error`` threshold (pure numpy/scipy).

Fixed-sequence testing over an ordered, label-free grid of ranking-key
thresholds with exact binomial p-values (randomized or conservative; see
:data:`~safepredict.tier_config.CERTIFICATION_TESTS`) and a weighted (Wiens)
fallback, so that the error rate among the accepted rows is at most
``max_error`` with probability at least ``1 - delta`` (see
:func:`certify_threshold`). Rows are ranked lexicographically by their keys
(:func:`ranking_keys`), so ties of a coarse score are broken by finer ones.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict._binomial import (
    binomial_p_value,
    clopper_pearson,
    randomized_binomial_p_value,
    randomized_upper_bound,
    rows_needed,
)
from safepredict._validation import check_one_of
from safepredict.tier_config import CERTIFICATION_TESTS

__all__ = [
    "ACCEPT_ALL",
    "CertifiedThreshold",
    "accept_at",
    "anchor_weights",
    "certify_threshold",
    "data_draws",
    "ranking_keys",
    "sort_keys",
    "threshold_grid",
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
    test : {"conservative", "randomized"}
        The binomial test the certification ran
        (:data:`~safepredict.tier_config.CERTIFICATION_TESTS`); ``upper_bound``
        is that test's bound.
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
    test: str = "conservative"

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


def sort_keys(
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


def threshold_grid(
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


def anchor_weights(
    counts: NDArray[np.intp], first_weight: float, factor: float, start: int | None = None
) -> NDArray[np.float64]:
    """Share of delta given to each grid point: log-spaced anchors, zero in between.

    The first grid point gets ``first_weight``; the remaining share is split
    equally over the grid points where the accepted count first reaches
    ``start * factor`` and then ``factor`` times the previous anchor's count.
    ``start`` is the planned first count (default ``counts[0]``); a tie block can
    make the first grid point accept more than planned, and the anchors stay
    where the plan put them rather than moving up with the block. With no
    anchor the first point gets everything (plain fixed-sequence testing).

    Examples
    --------
    >>> anchor_weights(np.array([72, 100, 144, 200]), 0.25, 2.0).tolist()
    [0.25, 0.0, 0.75, 0.0]
    >>> anchor_weights(np.array([94, 144, 200]), 0.25, 2.0, start=72).tolist()
    [0.25, 0.75, 0.0]
    """
    w = np.zeros(len(counts))
    if len(counts) == 0:
        return w
    anchors = []
    nxt = (counts[0] if start is None else min(start, counts[0])) * factor
    if counts[0] >= nxt:  # the first point's tie block already spans a doubling
        nxt = counts[0] * factor
    for j, c in enumerate(counts[1:], start=1):
        if c >= nxt:
            anchors.append(j)
            nxt = c * factor
    if not anchors:
        w[0] = 1.0
        return w
    w[0] = first_weight
    w[anchors] = (1.0 - first_weight) / len(anchors)
    return w


def data_draws(
    sorted_keys: NDArray[np.float64], errors_through: NDArray[np.int64]
) -> np.random.Generator:
    """A generator seeded by a SHA-256 hash of the ranked rows (the randomized test's draws).

    ``sorted_keys`` are the ranking keys best first and ``errors_through[i]``
    the errors among the rows whose key is ``>=`` the ``i``-th (as
    :func:`sort_keys` orders them), so the seed depends on the multiset of
    ``(key, error)`` rows and not on their order.

    Examples
    --------
    >>> keys = np.array([[0.9], [0.8], [0.8]])
    >>> a = data_draws(keys, np.array([0, 1, 1])).uniform()
    >>> b = data_draws(keys, np.array([0, 1, 1])).uniform()
    >>> a == b, a != data_draws(keys, np.array([1, 1, 1])).uniform()
    (True, True)
    """
    digest = hashlib.sha256(np.ascontiguousarray(sorted_keys, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(errors_through, dtype=np.int64).tobytes())
    return np.random.default_rng(int.from_bytes(digest.digest()[:16], "little"))


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
    test: str = "randomized",
    random_state: int | np.random.Generator | None = None,
) -> CertifiedThreshold:
    """Loosest score threshold whose accepted-row error rate is <= ``max_error`` w.p. >= 1-delta.

    Learn-then-Test (Angelopoulos et al., 2021). Each candidate threshold
    ``t_j`` is a hypothesis ``H_j: the error rate among rows with score >= t_j
    exceeds max_error``, tested with the exact binomial test of ``k_j`` errors
    among the ``n_j`` calibration rows accepted (randomized by default, see
    below; ``test="conservative"``: the p-value ``P(Binomial(n_j, max_error) <=
    k_j)``). The threshold with the most accepted rows among
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
    accepted count has grown by ``anchor_factor`` (x2, x4, ...) from the
    planned start (a tie block that snaps the first candidate up does not move
    them: :func:`anchor_weights`). A rejection
    passes its level on to the next candidate (as in fixed-sequence testing),
    but a failure no longer ends the search: the next anchor starts afresh
    with its own share. A few errors among the most confident rows (label
    noise) therefore cannot block every looser threshold. When the data allow
    only one anchor, the whole ``delta`` goes to the first candidate (plain
    fixed-sequence testing starting at ``rows_needed(max_error, delta)``).

    Randomized tests (``test="randomized"``). The binomial is discrete, so the
    conservative p-value ``P(B <= k)`` has size below its level and a sequence
    can stop on a hypothesis the data nearly reject. The randomized p-value
    ``P(B < k) + U P(B = k)``, with ``U`` uniform and independent of the rows
    (one draw per candidate, from ``random_state``), is exactly uniform at the
    boundary and never larger than the conservative one, so every rejection of
    the conservative procedure is kept and more follow. The guarantee is then
    over the calibration draw and ``U``. By default (``random_state=None``) the
    draws come from a SHA-256 hash of the ranked keys and their error counts
    (:func:`data_draws`): pseudo-random, so independent of the rows for every
    practical purpose, yet the result is a deterministic function of the rows,
    independent of their order. Calibrating the same rows again gives the same
    threshold (reproducible for audits), and nobody can re-roll the draws until
    a looser threshold comes out, which would void the guarantee.

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
    test : {"randomized", "conservative"}, default="randomized"
        The binomial test (:data:`~safepredict.tier_config.CERTIFICATION_TESTS`); a tier policy's
        ``certification_test`` key chooses it for its tiers.
    random_state : int or numpy.random.Generator, optional
        Source of the uniform draws of the randomized test (ignored by the
        conservative one). ``None`` (the default, and what tier policies use):
        derived from the rows (:func:`data_draws`). A seed or generator draws
        independently of the rows instead (simulation studies).

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
    >>> exact = certify_threshold(scores, errors, max_error=0.05, delta=0.1, test="conservative")
    >>> res.n_accepted >= exact.n_accepted
    True
    """
    check_one_of(test, "test", CERTIFICATION_TESTS)
    keys = ranking_keys(scores)
    e = np.asarray(errors, dtype=bool).reshape(-1)
    if len(keys) != len(e):
        raise ValueError(
            f"scores and errors must have the same length; got {len(keys)} and {len(e)}."
        )
    need = rows_needed(max_error, delta)
    start = rows_needed(max_error, delta * first_weight)
    order, sorted_keys, accepts = sort_keys(keys)
    thresholds, counts = threshold_grid(sorted_keys, accepts, start, n_steps)
    weights = anchor_weights(counts, first_weight, anchor_factor, start)
    if len(counts) == 0 or weights[0] == 1.0:
        # Too few rows for several anchors: plain fixed sequence with all of delta.
        thresholds, counts = threshold_grid(sorted_keys, accepts, need, n_steps)
        weights = np.zeros(len(counts))
        weights[:1] = 1.0
    chosen = -1
    n_tested = len(counts)
    if len(counts):
        cum_errors = np.concatenate([[0], np.cumsum(e[order])])
        k = cum_errors[counts]
        if test == "randomized":
            rng = (
                data_draws(sorted_keys, cum_errors[accepts])
                if random_state is None
                else np.random.default_rng(random_state)
            )
            u = rng.uniform(size=len(counts))
            p = randomized_binomial_p_value(k, counts, max_error, u)
        else:
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
            test=test,
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
        upper_bound=(
            randomized_upper_bound(n_err, n_acc, float(u[chosen]), 1.0 - delta)
            if test == "randomized"
            else clopper_pearson(n_err, n_acc, 1.0 - delta)[1]
        ),
        needed_n=need,
        max_error=float(max_error),
        delta=float(delta),
        n_tested=n_tested,
        key=key,
        test=test,
    )
