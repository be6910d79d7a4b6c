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
  rows (lower = better ordering).
* ``MAPIE (default)``: ``mapie.risk_control`` LTT controller with its default
  settings (``list_predict_params = linspace(0, 0.99, 100)``, Bonferroni-Holm,
  Hoeffding-Bentkus p-values, ``best_predict_param_choice="auto"``);
  ``MultiClassificationLTTController`` thresholding the top-class probability
  and controlling the accuracy among non-abstained rows for multiclass, and
  ``BinaryClassificationController`` controlling the precision of an "accept"
  decision (= accuracy among accepted rows) for binary problems.
* ``MAPIE (min abstention)``: the same controller, choosing among its valid
  thresholds the one with the least abstention (MAPIE's best case).
* ``oracle``: the largest fraction of the *test* rows a threshold on the same
  ranking could accept with realized error <= max_error (computed on the test
  rows themselves, so no method can beat it except by luck). ``/oracle`` divides
  by the best oracle of the setting (over the rankings).

Run: ``python benchmarks/bench_risk_tiers.py [--splits K]``.
"""

from __future__ import annotations

import argparse
import warnings
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
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict.conformal import ClassificationConformal
from safepredict.tiers import accept_at, certify_threshold, probability_tie_breaks

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


def _pool(model: Any, X: Any, y: Any, train: float, seed: int) -> tuple[Any, Any]:
    X_tr, X_pool, y_tr, y_pool = train_test_split(X, y, train_size=train, random_state=seed)
    model.fit(X_tr, y_tr)
    return np.asarray(model.predict_proba(X_pool)), np.asarray(y_pool)


def settings() -> list[Setting]:
    """The benchmark settings (models fitted once)."""
    out = []
    X, y = make_classification(
        n_samples=8000,
        n_features=20,
        n_informative=10,
        n_classes=5,
        n_clusters_per_class=1,
        class_sep=1.15,
        flip_y=0.0,
        random_state=0,
    )
    proba, yp = _pool(LogisticRegression(max_iter=2000), X, y, 0.5, 0)
    out.append(Setting("synthetic 5-class LR (hard)", proba, yp, 1000, 0.05, 0.1))
    proba, yp = _pool(HistGradientBoostingClassifier(max_iter=100, random_state=0), X, y, 0.5, 0)
    out.append(Setting("synthetic 5-class HGB", proba, yp, 1000, 0.05, 0.1))
    Xd, yd = load_digits(return_X_y=True)
    proba, yp = _pool(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), Xd, yd, 0.4, 0
    )
    out.append(Setting("digits LR (97% acc)", proba, yp, 500, 0.02, 0.1))
    Xb, yb = load_breast_cancer(return_X_y=True)
    proba, yp = _pool(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), Xb, yb, 0.4, 0
    )
    out.append(Setting("breast_cancer LR (binary)", proba, yp, 170, 0.05, 0.1))
    Xs, ys = make_classification(
        n_samples=6000, n_features=10, n_informative=4, flip_y=0.01, random_state=1
    )
    proba, yp = _pool(HistGradientBoostingClassifier(max_iter=100, random_state=0), Xs, ys, 0.5, 1)
    out.append(Setting("synthetic binary HGB", proba, yp, 1000, 0.05, 0.05))
    X7, y7 = make_classification(
        n_samples=6000,
        n_features=19,
        n_informative=12,
        n_classes=7,
        n_clusters_per_class=1,
        class_sep=2.2,
        random_state=2,
    )
    proba, yp = _pool(HistGradientBoostingClassifier(max_iter=100, random_state=0), X7, y7, 0.5, 2)
    out.append(Setting("synthetic 7-class HGB (accurate)", proba, yp, 1000, 0.05, 0.1))
    Xa, ya = make_classification(
        n_samples=8000, n_features=9, n_informative=6, class_sep=2.5, flip_y=0.0, random_state=3
    )
    proba, yp = _pool(HistGradientBoostingClassifier(max_iter=100, random_state=0), Xa, ya, 0.5, 3)
    out.append(Setting("synthetic binary HGB (accurate)", proba, yp, 1000, 0.05, 0.1))
    return out


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


def oracle(keys: NDArray[np.float64], errors: NDArray[np.bool_], max_error: float) -> float:
    """Largest share of rows a threshold on the ranking ``keys`` accepts with error <= max_error."""
    keys = keys if keys.ndim == 2 else keys[:, None]
    order = np.lexsort(tuple(-keys[:, j] for j in reversed(range(keys.shape[1]))))
    s, e = keys[order], errors[order]
    cum = np.cumsum(e)
    n_acc = np.arange(1, len(s) + 1)
    # only cut between distinct keys (a threshold accepts whole ties)
    cut_ok = np.append(np.any(s[1:] != s[:-1], axis=1), True)
    ok = (cum <= max_error * n_acc) & cut_ok
    return float(n_acc[ok].max() / len(s)) if ok.any() else 0.0


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


def run(st: Setting, n_splits: int, mapie: bool = True) -> dict[str, Any]:
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
        f"{'setting':34} {'method':34} {'accepted':>16} {'realized err':>13} "
        f"{'P(err>a)':>9} {'oracle':>7} {'/oracle':>8} {'AURC':>7}"
    )
    print(header)
    ratios: dict[str, list[float]] = {}
    # MC standard error of the mean share of the oracle: per setting s, the share
    # is mean(acc_s) / O_s (O_s the setting's best mean oracle, whose own noise is
    # ignored: the oracle of a split varies far less than the acceptance), so its
    # standard error is sd(acc_s) / (O_s sqrt(splits)); the settings' splits are
    # independent, so the mean over S settings has sqrt(sum_s se_s^2) / S.
    share_se: dict[str, list[float]] = {}
    for st in settings():
        acc_model = float((st.proba.argmax(axis=1) == st.y).mean())
        res = run(st, args.splits, mapie=not args.no_mapie)
        print(
            f"-- {st.name}: model accuracy {acc_model:.3f}, n_cal={st.n_cal}, "
            f"max_error={st.max_error}, delta={st.delta}"
        )
        best_oracle = max(float(arr[:, 2].mean()) for arr in res.values())
        for method, arr in res.items():
            acc, err, orc, area = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            sd = acc.std(ddof=1) / np.sqrt(len(acc))
            viol = float((err > st.max_error).mean())
            ratios.setdefault(method, []).append(acc.mean() / best_oracle)
            share_se.setdefault(method, []).append(sd / best_oracle)
            print(
                f"{'':34} {method:34} {acc.mean():8.3f} ({sd:.3f}) {err.mean():13.4f} "
                f"{viol:9.3f} {orc.mean():7.3f} {acc.mean() / best_oracle:8.2f} "
                f"{np.nanmean(area) if np.isfinite(area).any() else float('nan'):7.4f}"
            )
    print("mean share of the oracle over the settings (MC standard error):")
    for method, r in ratios.items():
        se = float(np.sqrt(np.sum(np.square(share_se[method])))) / len(r)
        print(f"  {method:34} {np.mean(r):.3f} ({se:.4f})")


if __name__ == "__main__":
    main()
