"""Power of risk-controlled (``max_error``) tiers: safepredict vs MAPIE vs the oracle.

For each setting a model is fitted once; its probabilities on a pool of held-out
rows are computed once, and then the pool is split ``K`` times at random into
calibration rows (the same rows for every method) and test rows. Per split we
record the fraction of test rows each method accepts and the realized error
among them:

* ``safepredict[score]``: :func:`safepredict.tiers.certify_threshold` on the
  tier's ranking keys, as ``SafePredictor`` builds them: the score
  (conformal confidence, top-class probability or margin), then its
  tie-breakers (:func:`safepredict.tiers.probability_tie_breaks`), so the grid
  runs over the finest-grained order; ``conformal (coarse)`` ranks by the
  conformal confidence alone (the former behaviour, ties unbroken). The AURC
  column is each ranking's area under the risk-coverage curve on the test
  rows (lower = better ordering). These run the default randomized exact
  binomial tests (``certification_test = "randomized"``);
  ``safepredict[conformal, conservative test]`` is the default ranking with
  the non-randomized tests (``certification_test = "conservative"``).
* ``MAPIE (default)``: ``mapie.risk_control`` LTT controller with its default
  settings (``list_predict_params = linspace(0, 0.99, 100)``, Bonferroni-Holm,
  Hoeffding-Bentkus p-values, ``best_predict_param_choice="auto"``);
  ``MultiClassificationLTTController`` thresholding the top-class probability
  and controlling the accuracy among non-abstained rows for multiclass, and
  ``BinaryClassificationController`` controlling the precision of an "accept"
  decision (= accuracy among accepted rows) for binary problems.
* ``MAPIE (min abstention)``: the same controller, choosing among its valid
  thresholds the one with the least abstention (MAPIE's best case).
* ``oracle`` (in-sample): the largest fraction of the split's *test* rows a
  threshold on the same ranking could accept with realized error <= max_error
  (computed on the test rows themselves). ``/oracle`` divides by the best mean
  in-sample oracle of the setting (over the rankings).
* population oracle: the share at which the error among accepted rows reaches
  ``max_error`` on the population the rows come from, best over the rankings:
  200,000 fresh rows from the same generator through the same fitted model for
  the synthetic settings (:func:`classification_source`), the whole held-out
  pool for the two real datasets (no more rows exist). ``/pop`` divides by it.
  The in-sample oracle is a maximum over thousands of cutoffs of a noisy
  curve, so it can sit above the population oracle, which is what a method
  with unlimited calibration rows accepts; the setting line prints both and
  their difference ("in-sample - population").
* ``population cut (infinite calibration)``: the population oracle's
  threshold applied to the split's test rows (what unlimited calibration data
  would give; not certified).
* ``fixed sequence, clairvoyant start``: plain fixed-sequence testing with all
  of ``delta`` from the start that maximizes the expected acceptance *given
  the population error curve* (:func:`clairvoyant_start`), with the same
  randomized tests as safepredict's default. Valid (the start is
  fixed before the split's labels are seen) but unavailable in practice: the
  acceptance a certified procedure could reach with ``n_cal`` rows if it knew
  where to look.

Run: ``python benchmarks/bench_risk_tiers.py [--splits K] [--no-mapie]``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from mapie.risk_control import (
    BinaryClassificationController,
    MultiClassificationLTTController,
    abstention_rate,
    precision,
)
from mapie.risk_control.risks import BinaryRisk
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.datasets._samples_generator import _generate_hypercube
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict._binomial import randomized_binomial_p_value, rows_needed
from safepredict.conformal import ClassificationConformal
from safepredict.tiers import (
    accept_at,
    certify_threshold,
    probability_tie_breaks,
    ranking_keys,
    sort_keys,
)
from safepredict.tiers.certify import data_draws, threshold_grid

#: Accuracy among the rows a multiclass controller does not abstain on.
accuracy_among_accepted = BinaryRisk(
    risk_occurrence=lambda y_true, y_pred: y_pred == y_true,
    risk_condition=lambda y_true, y_pred: y_pred == y_pred,  # False only for NaN
    higher_is_better=True,
)


@dataclass
class Setting:
    name: str
    proba: NDArray[np.float64]
    y: NDArray[np.intp]
    n_cal: int
    max_error: float
    delta: float
    #: Rows the population oracle is computed on: fresh rows from the generator
    #: (synthetic settings) or the whole held-out pool (real data, no more rows).
    pop_proba: NDArray[np.float64]
    pop_y: NDArray[np.intp]
    pop_source: str


#: Fresh rows per synthetic setting for its population oracle.
N_FRESH = 200_000


def classification_source(
    *,
    n_samples: int,
    n_features: int,
    n_informative: int = 2,
    n_redundant: int = 2,
    n_classes: int = 2,
    n_clusters_per_class: int = 2,
    flip_y: float = 0.01,
    class_sep: float = 1.0,
    random_state: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.intp], Callable[[int, int], tuple[Any, Any]]]:
    """``make_classification(...)`` (same rows, bit for bit) and a sampler of fresh rows.

    Replays scikit-learn's random stream (default ``shift=0``, ``scale=1``,
    ``hypercube``, ``shuffle``, no ``weights``) to recover the generator's
    parameters (cluster centroids and covariances, redundant-feature map,
    feature permutation); ``fresh(n, seed)`` draws ``n`` new rows from the same
    distribution (clusters equally likely, as in the original's equal counts),
    so a setting's population curves can be computed on as many rows as wanted.
    :func:`settings` checks the replay against ``make_classification``.
    """
    gen = np.random.RandomState(random_state)
    n_clusters = n_classes * n_clusters_per_class
    n_random = n_features - n_informative - n_redundant
    per = [n_samples // n_clusters] * n_clusters
    for i in range(n_samples - sum(per)):
        per[i % n_clusters] += 1
    cube = _generate_hypercube(n_clusters, n_informative, gen).astype(float)
    centroids = cube * 2 * class_sep - class_sep
    z = gen.standard_normal(size=(n_samples, n_informative))
    cov = [2 * gen.uniform(size=(n_informative, n_informative)) - 1 for _ in range(n_clusters)]
    red = 2 * gen.uniform(size=(n_informative, n_redundant)) - 1
    noise = gen.standard_normal(size=(n_samples, n_random)) if n_random else None
    flip = gen.uniform(size=n_samples) < flip_y
    new_y = gen.randint(n_classes, size=flip.sum())
    rows = np.arange(n_samples)
    gen.shuffle(rows)
    cols = np.arange(n_features)
    gen.shuffle(cols)

    def build(cluster: Any, z: Any, noise: Any, flip: Any, new_y: Any) -> tuple[Any, Any]:
        X = np.zeros((len(cluster), n_features))
        for k in range(n_clusters):
            m = cluster == k
            X[m, :n_informative] = z[m] @ cov[k] + centroids[k]
        X[:, n_informative : n_informative + n_redundant] = X[:, :n_informative] @ red
        if noise is not None:
            X[:, n_features - n_random :] = noise
        y = cluster % n_classes
        y[flip] = new_y
        return X[:, cols], y

    X, y = build(np.repeat(np.arange(n_clusters), per), z, noise, flip, new_y)

    def fresh(n: int, seed: int) -> tuple[Any, Any]:
        rng = np.random.default_rng(seed)
        cluster = rng.integers(n_clusters, size=n)
        flip = rng.uniform(size=n) < flip_y
        return build(
            cluster,
            rng.standard_normal((n, n_informative)),
            rng.standard_normal((n, n_random)) if n_random else None,
            flip,
            rng.integers(n_classes, size=int(flip.sum())),
        )

    return X[rows], y[rows], fresh


def _synthetic(
    name: str, model: Any, kw: dict[str, Any], n_cal: int, max_error: float, delta: float
) -> Setting:
    X, y, fresh = classification_source(**kw)
    X_ref, y_ref = make_classification(**kw)
    if not (np.array_equal(X, X_ref) and np.array_equal(y, y_ref)):
        raise RuntimeError("classification_source no longer replays make_classification")
    X_tr, X_pool, y_tr, y_pool = train_test_split(
        X, y, train_size=0.5, random_state=kw["random_state"]
    )
    model.fit(X_tr, y_tr)
    X_new, y_new = fresh(N_FRESH, 12345)
    return Setting(
        name,
        np.asarray(model.predict_proba(X_pool)),
        np.asarray(y_pool),
        n_cal,
        max_error,
        delta,
        np.asarray(model.predict_proba(X_new)),
        np.asarray(y_new),
        f"{N_FRESH:,} fresh rows",
    )


def _real(
    name: str, model: Any, X: Any, y: Any, train: float, n_cal: int, max_error: float
) -> Setting:
    X_tr, X_pool, y_tr, y_pool = train_test_split(X, y, train_size=train, random_state=0)
    model.fit(X_tr, y_tr)
    proba, yp = np.asarray(model.predict_proba(X_pool)), np.asarray(y_pool)
    return Setting(name, proba, yp, n_cal, max_error, 0.1, proba, yp, "whole pool")


def settings() -> list[Setting]:
    """The benchmark settings (models fitted once)."""
    hard = {
        "n_samples": 8000,
        "n_features": 20,
        "n_informative": 10,
        "n_classes": 5,
        "n_clusters_per_class": 1,
        "class_sep": 1.15,
        "flip_y": 0.0,
        "random_state": 0,
    }
    seven = {
        "n_samples": 6000,
        "n_features": 19,
        "n_informative": 12,
        "n_classes": 7,
        "n_clusters_per_class": 1,
        "class_sep": 2.2,
        "random_state": 2,
    }
    binary = {
        "n_samples": 6000,
        "n_features": 10,
        "n_informative": 4,
        "flip_y": 0.01,
        "random_state": 1,
    }
    accurate = {
        "n_samples": 8000,
        "n_features": 9,
        "n_informative": 6,
        "class_sep": 2.5,
        "flip_y": 0.0,
        "random_state": 3,
    }

    def hgb() -> Any:
        return HistGradientBoostingClassifier(max_iter=100, random_state=0)

    def scaled_lr() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    Xd, yd = load_digits(return_X_y=True)
    Xb, yb = load_breast_cancer(return_X_y=True)
    return [
        _synthetic(
            "synthetic 5-class LR (hard)", LogisticRegression(max_iter=2000), hard, 1000, 0.05, 0.1
        ),
        _synthetic("synthetic 5-class HGB", hgb(), hard, 1000, 0.05, 0.1),
        _real("digits LR (97% acc)", scaled_lr(), Xd, yd, 0.4, 500, 0.02),
        _real("breast_cancer LR (binary)", scaled_lr(), Xb, yb, 0.4, 170, 0.05),
        _synthetic("synthetic binary HGB", hgb(), binary, 1000, 0.05, 0.05),
        _synthetic("synthetic 7-class HGB (accurate)", hgb(), seven, 1000, 0.05, 0.1),
        _synthetic("synthetic binary HGB (accurate)", hgb(), accurate, 1000, 0.05, 0.1),
    ]


def scores_for(
    proba_cal: NDArray[np.float64], y_cal: NDArray[np.intp], proba: NDArray[np.float64]
) -> dict[str, NDArray[np.float64]]:
    """Ranking keys of ``proba`` rows per score, conformalized on the calibration rows.

    Each entry is ``(n, k)``: the score, then the tie-breakers ``SafePredictor``
    uses (:func:`safepredict.tiers.probability_tie_breaks`); ``conformal (coarse)``
    is the conformal confidence alone (no tie-breaking, the former behaviour).
    """
    n_classes = proba.shape[1]
    cal_scores = np.sort(1.0 - proba_cal[np.arange(len(y_cal)), y_cal])
    rank = int(np.ceil((len(cal_scores) + 1) * 0.9))
    quantile = float(cal_scores[min(rank, len(cal_scores)) - 1])
    cp = ClassificationConformal("lac", 0.9, np.arange(n_classes), cal_scores, quantile)
    top2 = np.sort(proba, axis=1)[:, -2:]
    plain = {
        "conformal": cp.confidence(proba),
        "top_prob": top2[:, 1],
        "margin": top2[:, 1] - top2[:, 0],
    }
    ties = probability_tie_breaks(plain)
    out = {k: np.column_stack([v, ties[k]]) for k, v in plain.items()}
    out["conformal (coarse)"] = plain["conformal"][:, None]
    return out


def aurc(keys: NDArray[np.float64], errors: NDArray[np.bool_]) -> float:
    """Area under the risk-coverage curve of the ranking ``keys`` (lower is better)."""
    order = np.lexsort(tuple(-keys[:, j] for j in reversed(range(keys.shape[1]))))
    e = errors[order]
    return float(np.mean(np.cumsum(e) / np.arange(1, len(e) + 1)))


def oracle_cut(
    keys: NDArray[np.float64], errors: NDArray[np.bool_], max_error: float
) -> tuple[float, NDArray[np.float64]]:
    """Largest share of rows a threshold on ``keys`` accepts with error <= max_error, and its key.

    The key is ``inf`` (accepts nothing) when even the best row's tie block errs too often.
    """
    keys = keys if keys.ndim == 2 else keys[:, None]
    order = np.lexsort(tuple(-keys[:, j] for j in reversed(range(keys.shape[1]))))
    s, e = keys[order], errors[order]
    cum = np.cumsum(e)
    n_acc = np.arange(1, len(s) + 1)
    # only cut between distinct keys (a threshold accepts whole ties)
    cut_ok = np.append(np.any(s[1:] != s[:-1], axis=1), True)
    ok = np.flatnonzero((cum <= max_error * n_acc) & cut_ok)
    if len(ok) == 0:
        return 0.0, np.full(keys.shape[1], np.inf)
    return float(n_acc[ok[-1]] / len(s)), s[ok[-1]]


def oracle(keys: NDArray[np.float64], errors: NDArray[np.bool_], max_error: float) -> float:
    """Largest share of rows a threshold on the ranking ``keys`` accepts with error <= max_error."""
    return oracle_cut(keys, errors, max_error)[0]


#: Rankings whose population oracle is computed, with their label-free columns:
#: the conformal confidence (column 0) depends on the calibration rows and, for
#: LAC, orders rows exactly as its tie-breakers ``1 - p_2, p_1`` do, so those
#: columns stand for it; the coarse ranking is a coarsening of the fine
#: conformal one (each of its cuts is one of the fine ranking's), so its
#: population oracle cannot be larger and it is left out.
POPULATION_RANKINGS = {"conformal": slice(1, None), "top_prob": slice(None), "margin": slice(None)}


@dataclass
class PopulationOracle:
    """The setting's population oracle: share, the ranking reaching it, its cut."""

    share: float
    ranking: str
    key: NDArray[np.float64]
    pool_share: float


def population_oracle(st: Setting) -> PopulationOracle:
    """Best share over the rankings at which the population error reaches ``max_error``.

    Computed on ``st.pop_proba`` (fresh rows, or the whole pool for real
    data); ``pool_share`` is the same maximum on the whole held-out pool.
    """
    pop_keys = scores_for(st.proba, st.y, st.pop_proba)
    pool_keys = scores_for(st.proba, st.y, st.proba)
    pop_wrong = st.pop_proba.argmax(axis=1) != st.pop_y
    pool_wrong = st.proba.argmax(axis=1) != st.y
    cuts = {
        name: oracle_cut(pop_keys[name][:, cols], pop_wrong, st.max_error)
        for name, cols in POPULATION_RANKINGS.items()
    }
    best = max(cuts, key=lambda name: cuts[name][0])
    pool_share = max(
        oracle(pool_keys[name][:, cols], pool_wrong, st.max_error)
        for name, cols in POPULATION_RANKINGS.items()
    )
    return PopulationOracle(cuts[best][0], best, cuts[best][1], pool_share)


def mapie_accept(
    st: Setting,
    proba_cal: NDArray[np.float64],
    y_cal: NDArray[np.intp],
    proba_te: NDArray[np.float64],
    *,
    least_abstention: bool,
) -> NDArray[np.bool_]:
    """Rows of ``proba_te`` the MAPIE controller accepts."""
    n_classes = proba_cal.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MAPIE warns when no threshold is valid
        if n_classes == 2:
            correct = (proba_cal.argmax(axis=1) == y_cal).astype(int)

            def as_accept(p: NDArray[np.float64]) -> NDArray[np.float64]:
                top = p.max(axis=1)
                return np.column_stack([1 - top, top])

            ctrl: Any = BinaryClassificationController(
                predict_function=as_accept,
                risk=precision,
                target_level=1 - st.max_error,
                confidence_level=1 - st.delta,
            )
            ctrl.calibrate(proba_cal, correct)
            if ctrl.best_predict_param is None:
                return np.zeros(len(proba_te), dtype=bool)
            params = np.asarray(ctrl.valid_predict_params, dtype=float)
            lam = params.min() if least_abstention else float(ctrl.best_predict_param)
        else:
            ctrl = MultiClassificationLTTController(
                predict_function=lambda p: p,
                risks=[accuracy_among_accepted],
                target_level=[1 - st.max_error],
                confidence_level=1 - st.delta,
                classes=np.arange(n_classes),
                **({"best_predict_param_choice": abstention_rate} if least_abstention else {}),
            )
            ctrl.calibrate(proba_cal, y_cal)
            if ctrl.best_predict_param is None:
                return np.zeros(len(proba_te), dtype=bool)
            lam = float(ctrl.best_predict_param)
    return np.asarray(proba_te.max(axis=1) >= lam)


SCORES = ("conformal", "top_prob", "margin", "conformal (coarse)")


def fixed_sequence(
    keys: NDArray[np.float64],
    errors: NDArray[np.bool_],
    max_error: float,
    delta: float,
    starts: list[int],
    n_steps: int = 50,
) -> list[NDArray[np.float64]]:
    """Threshold key of plain fixed-sequence testing from each start, with all of ``delta``.

    The grid of :func:`safepredict.tiers.certify_threshold` (``start`` rows,
    then ``n_steps`` equal steps to every row), its randomized exact binomial
    p-values (draws derived from the rows, as there), and the sequence stops
    at the first hypothesis it cannot reject. Valid for any start fixed before
    the calibration labels are seen.
    """
    order, sorted_keys, accepts = sort_keys(ranking_keys(keys))
    cum = np.concatenate([[0], np.cumsum(errors[order])])
    out = []
    for start in starts:
        thresholds, counts = threshold_grid(sorted_keys, accepts, start, n_steps)
        u = data_draws(sorted_keys, cum[accepts]).uniform(size=len(counts))
        p = randomized_binomial_p_value(cum[counts], counts, max_error, u)
        failed = np.flatnonzero(p > delta)
        last = (failed[0] if len(failed) else len(counts)) - 1
        out.append(thresholds[last] if last >= 0 else np.full(keys.shape[1], np.inf))
    return out


def clairvoyant_start(st: Setting, pop: PopulationOracle, n_draws: int = 100) -> int:
    """The fixed-sequence start with the most expected acceptance, knowing the population.

    A comparator, not a method: among 25 starts from ``rows_needed(max_error,
    delta)`` to ``n_cal`` it picks the one whose fixed sequence accepts the most
    rows on average over ``n_draws`` calibration draws from the population rows
    (``st.pop_*``; a seeded stream apart from the benchmark's splits). Knowing
    the population error curve is what no calibration-only method can; but the
    start is fixed before a split's labels are seen, so the sequence it then
    runs is valid: its acceptance is what a certified procedure could reach
    with ``n_cal`` rows if it knew where to look.
    """
    cols = POPULATION_RANKINGS[pop.ranking]
    keys = scores_for(st.proba, st.y, st.pop_proba)[pop.ranking][:, cols]
    wrong = st.pop_proba.argmax(axis=1) != st.pop_y
    starts = np.unique(
        np.linspace(rows_needed(st.max_error, st.delta), st.n_cal, 25).round().astype(int)
    )
    rng = np.random.default_rng(99)
    accepted = np.zeros(len(starts))
    for _ in range(n_draws):
        rows = rng.choice(len(wrong), size=st.n_cal, replace=len(wrong) < st.n_cal)
        cut = fixed_sequence(keys[rows], wrong[rows], st.max_error, st.delta, starts.tolist())
        accepted += [accept_at(keys[rows], key).sum() for key in cut]
    return int(starts[int(np.argmax(accepted))])


def run(
    st: Setting, n_splits: int, pop: PopulationOracle, start: int, mapie: bool = True
) -> dict[str, Any]:
    """Per method: (accepted share, realized error, oracle share, AURC) of every split."""
    rng = np.random.default_rng(0)
    n = len(st.y)
    wrong = st.proba.argmax(axis=1) != st.y
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for _ in range(n_splits):
        perm = rng.permutation(n)
        cal, te = perm[: st.n_cal], perm[st.n_cal :]
        sc = scores_for(st.proba[cal], st.y[cal], st.proba)
        for name in SCORES:
            res = certify_threshold(
                sc[name][cal], wrong[cal], max_error=st.max_error, delta=st.delta
            )
            acc = accept_at(sc[name][te], res.key)
            err = wrong[te][acc].mean() if acc.any() else 0.0
            orc = oracle(sc[name][te], wrong[te], st.max_error)
            area = aurc(sc[name][te], wrong[te])
            rows.setdefault(f"safepredict[{name}]", []).append((acc.mean(), err, orc, area))
            if name == "conformal":  # the default ranking with non-randomized tests
                res = certify_threshold(
                    sc[name][cal],
                    wrong[cal],
                    max_error=st.max_error,
                    delta=st.delta,
                    test="conservative",
                )
                acc = accept_at(sc[name][te], res.key)
                err = wrong[te][acc].mean() if acc.any() else 0.0
                rows.setdefault("safepredict[conformal, conservative test]", []).append(
                    (acc.mean(), err, orc, area)
                )
        # What infinite calibration data would give: the population oracle's cut,
        # applied to this split's test rows (no certification, no calibration).
        keys_all = sc[pop.ranking][:, POPULATION_RANKINGS[pop.ranking]]
        keys = keys_all[te]
        acc = accept_at(keys, pop.key)
        err = wrong[te][acc].mean() if acc.any() else 0.0
        orc = oracle(sc[pop.ranking][te], wrong[te], st.max_error)
        rows.setdefault("population cut (infinite calibration)", []).append(
            (acc.mean(), err, orc, np.nan)
        )
        # A certified comparator that knows where to start: fixed sequence from
        # the clairvoyant start, on this split's calibration rows.
        key = fixed_sequence(keys_all[cal], wrong[cal], st.max_error, st.delta, [start])[0]
        acc = accept_at(keys, key)
        err = wrong[te][acc].mean() if acc.any() else 0.0
        rows.setdefault("fixed sequence, clairvoyant start", []).append(
            (acc.mean(), err, orc, np.nan)
        )
        for least, label in ((False, "MAPIE (default)"), (True, "MAPIE (min abstention)")):
            if not mapie:  # its oracle (top_prob's) is safepredict[top_prob]'s
                break
            acc = mapie_accept(st, st.proba[cal], st.y[cal], st.proba[te], least_abstention=least)
            err = wrong[te][acc].mean() if acc.any() else 0.0
            orc = oracle(sc["top_prob"][te], wrong[te], st.max_error)
            rows.setdefault(label, []).append((acc.mean(), err, orc, np.nan))
    return {k: np.asarray(v) for k, v in rows.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument(
        "--no-mapie",
        action="store_true",
        help="safepredict rows only (MAPIE's controllers are most of the run time); "
        "the oracles, and so the shares of the oracle, are the same",
    )
    args = parser.parse_args(argv)
    print(f"{args.splits} random calibration/test splits per setting; mean (MC sd of the mean)")
    header = (
        f"{'setting':34} {'method':42} {'accepted':>16} {'realized err':>13} "
        f"{'P(err>a)':>9} {'oracle':>7} {'/oracle':>8} {'/pop':>6} {'AURC':>7}"
    )
    print(header)
    ratios: dict[str, list[tuple[float, float]]] = {}
    # MC standard error of the mean share of an oracle: per setting s, the share
    # is mean(acc_s) / O_s (O_s the setting's oracle, whose own noise is
    # ignored: the in-sample oracle's mean varies far less than the acceptance,
    # the population oracle is computed once on many rows), so its standard
    # error is sd(acc_s) / (O_s sqrt(splits)); the settings' splits are
    # independent, so the mean over S settings has sqrt(sum_s se_s^2) / S.
    share_se: dict[str, list[tuple[float, float]]] = {}
    for st in settings():
        acc_model = float((st.proba.argmax(axis=1) == st.y).mean())
        pop = population_oracle(st)
        start = clairvoyant_start(st, pop)
        res = run(st, args.splits, pop, start, mapie=not args.no_mapie)
        print(
            f"-- {st.name}: model accuracy {acc_model:.3f}, n_cal={st.n_cal}, "
            f"max_error={st.max_error}, delta={st.delta}"
        )
        in_sample = {m: arr[:, 2] for m, arr in res.items()}
        best_method = max(in_sample, key=lambda m: float(in_sample[m].mean()))
        best_oracle = float(in_sample[best_method].mean())
        se_oracle = float(in_sample[best_method].std(ddof=1) / np.sqrt(args.splits))
        print(
            f"{'':34} oracles: in-sample (test split, best ranking) {best_oracle:.3f} "
            f"({se_oracle:.3f}); whole pool {pop.pool_share:.3f}; population "
            f"{pop.share:.3f} ({st.pop_source}, "
            f"{pop.ranking}); in-sample - population {best_oracle - pop.share:+.3f}; "
            f"clairvoyant start {start} rows"
        )
        for method, arr in res.items():
            acc, err, orc, area = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            sd = acc.std(ddof=1) / np.sqrt(len(acc))
            viol = float((err > st.max_error).mean())
            ratios.setdefault(method, []).append((acc.mean() / best_oracle, acc.mean() / pop.share))
            share_se.setdefault(method, []).append((sd / best_oracle, sd / pop.share))
            print(
                f"{'':34} {method:42} {acc.mean():8.3f} ({sd:.3f}) {err.mean():13.4f} "
                f"{viol:9.3f} {orc.mean():7.3f} {acc.mean() / best_oracle:8.2f} "
                f"{acc.mean() / pop.share:6.2f} "
                f"{np.nanmean(area) if np.isfinite(area).any() else float('nan'):7.4f}"
            )
    print("mean share of the oracle over the settings (MC standard error):")
    print(f"  {'method':42} {'in-sample oracle':>18} {'population oracle':>18}")
    for method, r in ratios.items():
        share = np.asarray(r).mean(axis=0)
        se = np.sqrt(np.sum(np.square(share_se[method]), axis=0)) / len(r)
        print(f"  {method:42} {share[0]:9.3f} ({se[0]:.4f}) {share[1]:9.3f} ({se[1]:.4f})")


if __name__ == "__main__":
    main()
