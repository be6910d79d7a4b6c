"""Issue 22 study: tier alarms and adaptive thresholds on bundled data, through the review queue.

A logistic regression on scikit-learn's bundled digits is wrapped in a
``SafePredictor`` whose ``auto`` tier promises ``max_error = 0.05`` (``delta =
0.1``); accepted rows are audited through a real ``SQLiteReviewQueue`` (route,
claim, resolve) and the tier's health is read back from the queue's outcomes.

Scenarios, each a stream of rows drawn from the held-out digits (the *pool*):

* ``none``: rows drawn uniformly (the tier keeps its promise: about 2% error);
* ``label shift``: the class mix moves to the three classes the model finds
  hardest (``P(y)`` changes, ``P(x | y)`` does not), still within the promise;
* ``boundary``: labels of correctly predicted rows change with a probability that
  puts the tier's error exactly at ``max_error`` (the hardest null);
* ``label noise 2x``: the same, to ``2 * max_error`` (concept shift);
* ``covariate 2x``: rows tilted towards low confidence (``P(x)`` changes,
  ``P(y | x)`` does not) until the tier's error is ``2 * max_error``.

Every error rate is known exactly from the pool, so each claim is checked against
the truth. :func:`queue_run` streams rows through the predictor and the queue and
monitors after every outcome with :class:`TierHealthTracker`; the many-run
statistics use :func:`safepredict._stats.betting_alarm_times` on outcome streams
drawn from the same pool, and ``tests/test_tier_health_study.py`` checks that both
give the same alarm times on the queue's streams.

Run: ``PYTHONPATH=src python benchmarks/study_tier_health_queue.py [--runs R]``
(prints the tables of docs/keeping-the-promise.md, with MAPIE's ``RiskMonitoring``
side by side on the first ``--mapie-runs`` streams of each scenario: it is a Python
loop per stream).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from safepredict import SafePredictor
from safepredict._hashing import row_hashes, unit_interval
from safepredict._stats import betting_alarm_times
from safepredict.adaptive import realized_error_bound
from safepredict.monitoring.tier_health import TierHealthTracker, tier_outcomes
from safepredict.review import SQLiteReviewQueue

MAX_ERROR = 0.05
DELTA = 0.1
SCENARIOS = ("none", "label shift", "boundary", "label noise 2x", "covariate 2x")


def policy(audit_rate: float, *, adapt: bool = False) -> dict[str, Any]:
    auto: dict[str, Any] = {"name": "auto", "action": "accept", "max_error": MAX_ERROR,
                            "score": "top_prob", "audit_rate": audit_rate}  # fmt: skip
    if adapt:
        auto.update(adapt=True, adapt_step=0.005)
    return {"delta": DELTA, "tiers": [auto, {"name": "human", "action": "review"}]}


@dataclass
class Pool:
    """The held-out digits as the calibrated predictor decides them."""

    model: Any
    X_cal: NDArray[Any]
    y_cal: NDArray[Any]
    X: NDArray[np.float64]
    y: NDArray[np.int64]
    accepted: NDArray[np.bool_]
    wrong: NDArray[np.bool_]
    confidence: NDArray[np.float64]

    def error(self, weights: NDArray[np.float64], flip: float = 0.0) -> float:
        """Error among accepted rows when rows are drawn with ``weights``, labels flipped."""
        a = weights * self.accepted
        e0 = float((a * self.wrong).sum() / a.sum())
        return e0 + (1.0 - e0) * flip


def build_pool() -> Pool:
    X, y = load_digits(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=600, random_state=0,
                                                  stratify=y)  # fmt: skip
    X_cal, X_pool, y_cal, y_pool = train_test_split(X_rest, y_rest, train_size=600,
                                                    random_state=0, stratify=y_rest)  # fmt: skip
    model = LogisticRegression(max_iter=3000).fit(X_tr, y_tr)
    sp = SafePredictor(model, log="off", tiers=policy(0.05), random_state=0)
    sp.calibrate(X_cal, y_cal)
    d = sp.decide(X_pool)
    return Pool(model, X_cal, y_cal, X_pool.astype(np.float64), y_pool,
                d.actions == "accept", d.predictions.astype(np.int64) != y_pool,
                np.asarray(d.confidence, dtype=np.float64))  # fmt: skip


def scenario(pool: Pool, name: str) -> tuple[NDArray[np.float64], float]:
    """Row sampling weights over the pool and the label-flip probability of a scenario."""
    n = len(pool.y)
    uniform = np.full(n, 1.0 / n)
    if name == "none":
        return uniform, 0.0
    if name == "label shift":
        per_class = np.array([pool.wrong[pool.accepted & (pool.y == c)].mean() for c in range(10)])
        hard = np.argsort(per_class)[-3:]
        prior = np.where(np.isin(np.arange(10), hard), 3.0, 1.0)
        w = prior[pool.y] / np.bincount(pool.y, minlength=10)[pool.y]
        return w / w.sum(), 0.0
    e0 = pool.error(uniform)
    if name == "boundary":
        return uniform, (MAX_ERROR - e0) / (1.0 - e0)
    if name == "label noise 2x":
        return uniform, (2 * MAX_ERROR - e0) / (1.0 - e0)
    if name == "covariate 2x":

        def tilt(lam: float) -> NDArray[np.float64]:
            w = np.exp(lam * (1.0 - pool.confidence))
            return w / w.sum()

        lam = brentq(lambda v: pool.error(tilt(v)) - 2 * MAX_ERROR, 0.0, 200.0)
        return tilt(lam), 0.0
    raise ValueError(f"unknown scenario {name!r}; one of {SCENARIOS}")


def outcome_streams(
    pool: Pool, name: str, runs: int, n: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Errors (0/1) of ``n`` uniformly audited accepted rows per run, in arrival order."""
    weights, flip = scenario(pool, name)
    acc = np.flatnonzero(pool.accepted)
    p = weights[acc] / weights[acc].sum()
    rows = rng.choice(acc, size=(runs, n), p=p)
    flipped = rng.random((runs, n)) < flip
    return (pool.wrong[rows] | flipped).astype(np.float64)


def queue_run(
    pool: Pool, name: str, n_rows: int, audit_rate: float, seed: int, work: Path
) -> dict[str, Any]:
    """Stream ``n_rows`` through the predictor and a real review queue; monitor per outcome.

    Rows are drawn from the pool as the scenario says and jittered by 1e-6 (distinct
    rows, distinct audit hashes); reviewers claim and resolve the audit cases in a
    random order with the scenario's labels. Returns the outcome stream read back
    from the queue, the alarm time of a tracker updated after every outcome, and the
    tier's true error among the accepted rows of the run.
    """
    rng = np.random.default_rng(seed)
    weights, flip = scenario(pool, name)
    idx = rng.choice(len(pool.y), size=n_rows, p=weights)
    X = pool.X[idx] + 1e-6 * rng.standard_normal((n_rows, pool.X.shape[1]))
    db = work / f"{name.replace(' ', '_')}-{seed}.db"
    sp = SafePredictor(
        pool.model, log="off", tiers=policy(audit_rate), router=str(db), random_state=0
    )
    sp.calibrate(pool.X_cal, pool.y_cal)
    d = sp.decide(X)
    pred = d.predictions.astype(np.int64)
    y = pool.y[idx]
    change = (rng.random(n_rows) < flip) & (pred == y)
    truth = np.where(change, (pred + rng.integers(1, 10, n_rows)) % 10, y)
    queue = SQLiteReviewQueue(db)
    index = {str(did): i for i, did in enumerate(d.decision_ids)}
    audits = [c["decision_id"] for c in queue.cases() if c["audit"]]
    for did in rng.permutation(audits).tolist():  # outcomes arrive in any order
        queue.claim_case(did, "reviewer")
        queue.resolve(did, int(truth[index[did]]), "reviewer")
    outcomes = list(queue.outcomes(audited_only=True))
    tracker = TierHealthTracker(sp.policy_)
    alarm = -1
    for t, outcome in enumerate(outcomes, start=1):  # monitoring after every outcome
        if tracker.update([outcome]) and alarm < 0:
            alarm = t
    errors, w = tier_outcomes(outcomes, sp.policy_)["auto"]
    accepted = d.actions == "accept"
    return {
        "errors": errors,
        "weights": w,
        "alarm": alarm,
        "health": tracker.report()["auto"],
        "true_error": float((pred[accepted] != truth[accepted]).mean()),
        "audited": len(outcomes),
        "accepted": int(accepted.sum()),
    }


def cp_alarm_times(errors: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    """A one-sided ``1 - delta`` Clopper-Pearson bound recomputed after every outcome."""
    from scipy import stats

    k = np.cumsum(errors, axis=-1)
    t = np.arange(1, errors.shape[-1] + 1)
    hit = stats.binom.sf(k - 1, t, threshold) <= DELTA / 2
    return np.where(hit.any(-1), np.argmax(hit, -1) + 1, -1).astype(np.int64)


def mapie_alarm_times(errors: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    """MAPIE 1.x ``RiskMonitoring`` (empirical-Bernstein sequence) on each stream."""
    from mapie.exchangeability_testing import RiskMonitoring

    out = np.full(len(errors), -1, dtype=np.int64)
    for r, stream in enumerate(errors):
        e = stream.astype(int)
        mon = RiskMonitoring(risk="accuracy", threshold=threshold, test_level=DELTA, warn=False)
        mon.update(e, np.zeros_like(e))
        hit = mon.online_risk_lower_bound_sequence_history > threshold
        if hit.any():
            out[r] = int(np.argmax(hit)) + 1
    return out


def sp_alarm_times(errors: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    return betting_alarm_times(errors, threshold=threshold, delta=DELTA)


def rows_delay(
    outcomes: NDArray[np.int64], audit_rate: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Accepted rows until the k-th uniformly audited one: ``k + NegBin(k, rate)``."""
    return outcomes + rng.negative_binomial(outcomes, audit_rate)


def adaptive_run(
    pool: Pool, n_rows: int, seed: int, work: Path, audit_rate: float = 0.2
) -> dict[str, Any]:
    """An ``adapt = true`` tier and a static one on the same drifting stream, via the queue.

    The label-flip probability rises linearly from 0 to 3x what doubles the error.
    The adaptive tier learns as the bound of :func:`safepredict.adaptive.realized_error_bound`
    assumes: each audited outcome is resolved in the queue, and ``adapt_thresholds()``
    replays the threshold path from it, before the next audited row is decided. Rows
    are decided in chunks that end at the next row the tier will audit (its audit
    draw, a hash of the row, is known in advance; whether it is accepted follows from
    its score and the current threshold); ``late`` counts chunks that held more than
    one audited row (0 when that prediction is exact). The static tier decides the
    same rows at its certified threshold.
    """
    rng = np.random.default_rng(seed)  # the same rows and labels for both tiers
    e0 = pool.error(np.full(len(pool.y), 1.0 / len(pool.y)))
    flip = 3 * (2 * MAX_ERROR - e0) / (1.0 - e0) * (np.arange(n_rows) + 0.5) / n_rows
    idx = rng.choice(len(pool.y), size=n_rows)
    X = pool.X[idx] + 1e-6 * rng.standard_normal((n_rows, pool.X.shape[1]))
    proba = pool.model.predict_proba(X)
    pred, score = pool.model.classes_[proba.argmax(axis=1)].astype(np.int64), proba.max(axis=1)
    y = pool.y[idx]
    change = (rng.random(n_rows) < flip) & (pred == y)
    truth = np.where(change, (pred + rng.integers(1, 10, n_rows)) % 10, y)
    out: dict[str, Any] = {}
    for mode in ("adaptive", "static"):
        db = work / f"adapt-{mode}-{seed}.db"
        sp = SafePredictor(pool.model, log="off", router=str(db), random_state=0,
                           tiers=policy(audit_rate, adapt=mode == "adaptive"))  # fmt: skip
        sp.calibrate(pool.X_cal, pool.y_cal)
        queue = SQLiteReviewQueue(db)
        draw = unit_interval(row_hashes(X), sp.policy_.audit_seed) < audit_rate
        accepted = np.zeros(n_rows, dtype=bool)
        pos, late, report = 0, 0, {}
        while pos < n_rows:
            if mode == "static":
                end = n_rows
            else:  # up to the next row the tier will accept and audit at its threshold now
                tau = float(sp.tier_calibration_.thresholds["auto"])
                ahead = np.flatnonzero(draw[pos:] & (score[pos:] >= tau))
                end = pos + int(ahead[0]) + 1 if len(ahead) else n_rows
            d = sp.decide(X[pos:end])
            accepted[pos:end] = d.actions == "accept"
            audited = np.flatnonzero(d.audit)
            late += int(len(audited) > 1)
            for i in audited:
                did = str(d.decision_ids[i])
                queue.claim_case(did, "reviewer")
                queue.resolve(did, int(truth[pos + i]), "reviewer")
            if mode == "adaptive" and len(audited):
                report = sp.adapt_thresholds()["auto"]
            pos = end
        n_acc = int(accepted.sum())
        res: dict[str, Any] = {
            "realized_error": float((pred[accepted] != truth[accepted]).mean()),
            "acceptance": n_acc / n_rows,
        }
        if mode == "adaptive":
            bound = realized_error_bound(
                start=report["start"], step=0.005, max_error=MAX_ERROR, n_accepted=n_acc,
                min_audit_probability=audit_rate, delta=0.05,
            )  # fmt: skip
            res.update(
                bound=bound,
                weighted_error=report["weighted_error"],
                weighted_bound=MAX_ERROR + report["bound"],
                audited=report["n_outcomes"],
                late=late,
            )
        out[mode] = res
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--n", type=int, default=2000, help="outcomes per stream")
    parser.add_argument(
        "--mapie-runs",
        type=int,
        default=50,
        help="streams MAPIE's RiskMonitoring sees (a Python loop per stream)",
    )
    args = parser.parse_args()
    pool = build_pool()
    rng = np.random.default_rng(2212)
    print(f"digits pool: {len(pool.y)} rows, accepted {pool.accepted.mean():.1%}, "
          f"max_error={MAX_ERROR}, delta={DELTA}, runs={args.runs}, n={args.n}\n")  # fmt: skip
    methods = {"safepredict": sp_alarm_times, "MAPIE RiskMonitoring": mapie_alarm_times,
               "repeated CP": cp_alarm_times}  # fmt: skip
    print("| scenario | tier error | " + " | ".join(methods) + " |")
    for name in SCENARIOS:
        weights, flip = scenario(pool, name)
        streams = outcome_streams(pool, name, args.runs, args.n, rng)
        cells = []
        for label, fn in methods.items():
            times = fn(streams[: args.mapie_runs] if label.startswith("MAPIE") else streams,
                       MAX_ERROR)  # fmt: skip
            hit = times[times > 0]
            p = float((times > 0).mean())
            se = math.sqrt(p * (1 - p) / len(times))
            med = f", median {np.median(hit):.0f}" if len(hit) else ""
            cells.append(f"{p:.3f} ± {se:.3f}{med}")
        print(f"| {name} | {pool.error(weights, flip):.3f} | " + " | ".join(cells) + " |")
    print("\nmedian delay in accepted rows (2x error, safepredict vs MAPIE):")
    for name in ("label noise 2x", "covariate 2x"):
        streams = outcome_streams(pool, name, args.runs, args.n, rng)
        for label, fn in (("safepredict", sp_alarm_times), ("MAPIE", mapie_alarm_times)):
            times = fn(streams[: args.mapie_runs] if label == "MAPIE" else streams, MAX_ERROR)
            hit = times[times > 0]
            cells = [
                f"{r:.0%}: {np.median(rows_delay(hit, r, rng)):,.0f}" for r in (0.01, 0.05, 0.2)
            ]
            print(f"  {name}, {label}: outcomes {np.median(hit):.0f}; rows " + ", ".join(cells))
    with tempfile.TemporaryDirectory() as tmp:
        for name in SCENARIOS:
            run = queue_run(pool, name, 3000, 0.2, seed=1, work=Path(tmp))
            print(f"queue run {name}: audited {run['audited']}, alarm at {run['alarm']}, "
                  f"true error {run['true_error']:.3f}")  # fmt: skip
        res = adaptive_run(pool, n_rows=10_000, seed=3, work=Path(tmp))
    a, b = res["adaptive"], res["adaptive"]["bound"]
    print(f"adaptive (20% audits): realized error {a['realized_error']:.4f}, acceptance "
          f"{a['acceptance']:.3f}, audited {a['audited']}, late chunks {a['late']}; "
          f"weighted {a['weighted_error']:.4f} <= {a['weighted_bound']:.4f}; realized bound "
          f"{MAX_ERROR} + {b.deterministic:.4f} + {b.sampling:.4f} = {b.total:.4f}")  # fmt: skip
    st = res["static"]
    print(f"static: realized error {st['realized_error']:.4f}, acceptance {st['acceptance']:.3f}")


if __name__ == "__main__":
    main()
