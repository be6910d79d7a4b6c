"""Input guards on real data: reason codes, actions, skipping, state and the OOD guarantee."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from safepredict import (
    CalibrationError,
    ConfigError,
    Decisions,
    GuardConfig,
    InputSchemaError,
    SafePredictError,
    SafePredictor,
    TierPolicy,
)
from safepredict.guards import CentroidDetector, InputGuards, KnnDetector

NO_OOD = GuardConfig(ood_method="none")


# ------------------------------------------------------------------ fixtures
def wine_mixed_frame() -> tuple[pd.DataFrame, pd.Series]:
    """Wine with two categorical columns derived from it and missing magnesium values."""
    X, y = load_wine(return_X_y=True, as_frame=True)
    X = X[["alcohol", "malic_acid", "magnesium", "color_intensity", "hue", "proline"]].copy()
    X["alcohol_band"] = pd.cut(X["alcohol"], 3, labels=["low", "mid", "high"])  # categorical
    X["hue_band"] = np.where(X["hue"] > X["hue"].median(), "pale", "deep").astype(object)
    X.loc[X.index[::15], "magnesium"] = np.nan  # seen missing in the reference: allowed
    return X, y


class CountingModel:
    """A real fitted model that counts its ``predict_proba`` calls (not a mock)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_
        self.calls = 0

    def predict_proba(self, X: Any) -> Any:
        self.calls += 1
        return self.model.predict_proba(X)

    def predict(self, X: Any) -> Any:
        return self.model.predict(X)


@pytest.fixture(scope="module")
def wine_pipeline() -> dict[str, Any]:
    X, y = wine_mixed_frame()
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.5, random_state=0)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    cats = ["alcohol_band", "hue_band"]
    nums = [c for c in X.columns if c not in cats]
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="error"), cats),
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), nums),
        ]
    )
    model = make_pipeline(pre, LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    return {"model": model, "X_tr": X_tr, "X_cal": X_cal, "y_cal": y_cal, "X_te": X_te}


# ------------------------------------------------------------------ fitting
def test_fit_learns_kinds_ranges_categories_and_missing() -> None:
    X, _ = wine_mixed_frame()
    g = InputGuards.fit(X, GuardConfig(range_method="minmax", range_margin=0.0, ood_method="none"))
    kinds = dict(zip(g.columns, g.kinds, strict=True))
    assert kinds["alcohol"] == "numeric"
    assert kinds["alcohol_band"] == "categorical"
    assert kinds["hue_band"] == "categorical"
    j = g.columns.index("proline")
    assert (g.low[j], g.high[j]) == (X["proline"].min(), X["proline"].max())
    assert g.categories[g.columns.index("alcohol_band")] == ["high", "low", "mid"]
    allow = dict(zip(g.columns, g.allow_missing, strict=True))
    assert allow["magnesium"] is True  # seen missing in the reference
    assert allow["alcohol"] is False


def test_range_methods_and_margin() -> None:
    X = np.arange(1001.0).reshape(-1, 1)
    minmax = InputGuards.fit(
        X, GuardConfig(range_method="minmax", range_margin=0.0, ood_method="none")
    )
    assert (minmax.low[0], minmax.high[0]) == (0.0, 1000.0)
    padded = InputGuards.fit(
        X, GuardConfig(range_method="minmax", range_margin=0.1, ood_method="none")
    )
    assert (padded.low[0], padded.high[0]) == (-100.0, 1100.0)
    q = InputGuards.fit(
        X,
        GuardConfig(
            range_method="quantile",
            range_quantiles=(0.01, 0.99),
            range_margin=0.0,
            ood_method="none",
        ),
    )
    assert (q.low[0], q.high[0]) == pytest.approx((10.0, 990.0))
    assert q.check(np.array([[5.0], [500.0]])).reasons == {0: ("out_of_range:x0",)}


def test_missing_policy_and_column_overrides() -> None:
    X = np.array([[1.0, np.nan], [2.0, 3.0], [3.0, 4.0]])
    row = np.array([[np.nan, np.nan]])
    assert InputGuards.fit(X, NO_OOD).check(row).reasons == {0: ("missing:x0",)}
    never = GuardConfig(ood_method="none", missing_policy="never")
    assert InputGuards.fit(X, never).check(row).reasons == {0: ("missing:x0", "missing:x1")}
    always = GuardConfig(ood_method="none", missing_policy="always")
    assert InputGuards.fit(X, always).check(row).reasons == {}
    override = GuardConfig(
        ood_method="none", columns={"x0": {"allow_missing": True, "min": 0, "max": 2.5}}
    )
    g = InputGuards.fit(X, override)
    assert g.check(row).reasons == {}
    assert g.check(np.array([[2.9, 3.0]])).reasons == {0: ("out_of_range:x0",)}


def test_column_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"\[guards.columns.age\]: unknown key 'maximum'"):
        GuardConfig(columns={"age": {"maximum": 3}})
    with pytest.raises(ConfigError, match="min must be a number"):
        GuardConfig(columns={"age": {"min": "zero"}})
    with pytest.raises(ConfigError, match=r"names columns \['agee'\]"):
        InputGuards.fit(np.zeros((5, 2)), GuardConfig(columns={"agee": {"min": 0}}))
    with pytest.raises(CalibrationError, match="empty reference"):
        InputGuards.fit(np.zeros((0, 2)))


def test_toml_guards_table_with_columns() -> None:
    policy = TierPolicy.from_toml(
        """
        [[tiers]]
        name = "human"
        action = "abstain"

        [guards]
        ood = "review"
        ood_alpha = 0.05
        range_method = "quantile"
        range_quantiles = [0.005, 0.995]

        [guards.columns.age]
        min = 0
        max = 120

        [guards.columns.country]
        categories = ["FR", "DE"]
        """
    )
    assert policy.guards.ood == "review"
    assert policy.guards.columns["age"] == {"min": 0, "max": 120}
    ref = pd.DataFrame({"age": [30, 40, 50] * 10, "country": ["FR"] * 30})
    g = InputGuards.fit(ref, policy.guards)
    out = g.check(pd.DataFrame({"age": [119, 121], "country": ["DE", "IT"]}))
    assert out.reasons == {1: ("unseen_category:country", "out_of_range:age")}


# ------------------------------------------------------------------ checks
def test_every_reason_code_on_numpy() -> None:
    X, _ = load_breast_cancer(return_X_y=True)
    g = InputGuards.fit(X, GuardConfig(range_margin=0.0), random_state=0)
    bad = np.array([X[0], X[1], X[2], X[3]], dtype=object)
    bad[0, 3] = np.nan
    bad[1, 5] = np.inf
    bad[2, 7] = "12.5"  # a string in a numeric column
    bad[3, 0] = 1e9
    bad[3, 1] = None
    res = g.check(bad)
    assert res.reasons[0] == ("missing:x3",)
    assert res.reasons[1] == ("non_finite:x5",)
    assert res.reasons[2] == ("type:x7",)
    assert res.reasons[3][:2] == ("missing:x1", "out_of_range:x0")
    assert res.rank.tolist() == [2, 2, 2, 2]
    assert res.skip.tolist() == [True, True, True, True]  # the model cannot take these
    clean = g.check(X[10:20])
    assert clean.reasons == {}
    assert not clean.skip.any()


def test_pandas_mixed_dtypes_categoricals_and_missing_markers() -> None:
    X, _ = wine_mixed_frame()
    g = InputGuards.fit(X, GuardConfig(ood_method="none"))
    rows = X.iloc[:6].copy()
    rows["alcohol"] = rows["alcohol"].astype(object)
    rows["hue_band"] = rows["hue_band"].astype(object)
    rows.iloc[0, rows.columns.get_loc("alcohol")] = pd.NA
    rows.iloc[1, rows.columns.get_loc("alcohol")] = "strong"
    rows.iloc[2, rows.columns.get_loc("hue_band")] = "purple"
    rows.iloc[3, rows.columns.get_loc("hue_band")] = 3.5  # a number where a category belongs
    rows.iloc[4, rows.columns.get_loc("hue_band")] = None
    rows.iloc[5, rows.columns.get_loc("magnesium")] = np.nan  # allowed: seen in reference
    res = g.check(rows)
    assert res.reasons == {
        0: ("missing:alcohol",),
        1: ("type:alcohol",),
        2: ("unseen_category:hue_band",),
        3: ("type:hue_band",),
        4: ("missing:hue_band",),
    }
    assert res.skip.tolist() == [True, True, True, True, True, False]


def test_pandas_nullable_and_string_dtypes() -> None:
    X, _ = wine_mixed_frame()
    ref = pd.DataFrame(
        {
            "proline": X["proline"].astype("Int64"),
            "hue": X["hue"].astype("Float64"),
            "band": X["hue_band"].astype("string"),
        }
    )
    ref.loc[ref.index[:3], "hue"] = pd.NA  # missing allowed in hue only
    g = InputGuards.fit(ref, NO_OOD)
    assert g.kinds == ("numeric", "numeric", "categorical")
    rows = pd.DataFrame(
        {
            "proline": pd.array([pd.NA, 800, 10**6], dtype="Int64"),
            "hue": pd.array([pd.NA, 1.0, 1.0], dtype="Float64"),
            "band": pd.array(["pale", pd.NA, "teal"], dtype="string"),
        }
    )
    assert g.check(rows).reasons == {
        0: ("missing:proline",),
        1: ("missing:band",),
        2: ("unseen_category:band", "out_of_range:proline"),
    }


def test_unhashable_and_huge_integer_values() -> None:
    ref = pd.DataFrame({"n": np.arange(50.0), "c": ["a", "b"] * 25})
    g = InputGuards.fit(ref, NO_OOD)
    rows = pd.DataFrame({"n": [10**400, 3], "c": ["a", ["a"]]}, dtype=object)
    res = g.check(rows)
    assert res.reasons == {0: ("non_finite:n",), 1: ("type:c",)}


def test_actions_rank_and_ignore() -> None:
    X = np.random.default_rng(0).normal(size=(400, 3))
    cfg = GuardConfig(out_of_range="review", missing="ignore", range_margin=0.0)
    g = InputGuards.fit(X, cfg, random_state=0)
    res = g.check(np.array([[0.0, 0.0, 50.0], [np.nan, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert res.reasons[0] == ("out_of_range:x2", "ood")  # ood abstains by default
    assert res.rank.tolist() == [2, 0, 0]
    assert res.reasons[1] == ("missing:x0",)  # ignored, but still reported
    assert not res.skip[1]  # ignored: the model gets the row


def test_state_round_trip_json_and_pickle() -> None:
    X, _ = wine_mixed_frame()
    g = InputGuards.fit(X, GuardConfig(ood="review"), random_state=3)
    state = json.loads(json.dumps(g.to_state()))  # JSON-safe
    twin = InputGuards.from_state(state)
    assert twin.to_state() == g.to_state()
    unpickled = pickle.loads(pickle.dumps(g))
    rows = X.iloc[:20].copy()
    rows.iloc[0, 0] = 99.0
    a, b, c = g.check(rows), twin.check(rows), unpickled.check(rows)
    assert a.reasons == b.reasons == c.reasons
    assert a.ood is not None
    np.testing.assert_array_equal(a.ood, b.ood)
    np.testing.assert_array_equal(a.ood, c.ood)
    with pytest.raises(ConfigError, match="to_state"):
        InputGuards.from_state({"version": 7})


# ------------------------------------------------------------------ in the predictor
def test_predictor_guard_tier_reasons_and_report(cancer_lr) -> None:
    sp = SafePredictor(cancer_lr.model, log="off", random_state=0)
    sp.calibrate(cancer_lr.X_cal, cancer_lr.y_cal, reference=cancer_lr.X_train)
    X = np.array(cancer_lr.X_test[:4], dtype=np.float64)
    X[1, 2] = np.nan
    X[2, 0] = 1e6
    batch = sp.decide(X)
    assert batch.tiers[1] == batch.tiers[2] == "guard"
    assert batch.actions[1] == batch.actions[2] == "abstain"
    assert batch[1].reasons[0] == "missing:x2"
    assert "out_of_range:x0" in batch[2].reasons
    assert "model_error" not in batch[1].reasons  # skipped, not failed
    assert "empty_set" not in batch[1].reasons  # never scored: no tier reasons
    assert batch[1].prediction is None  # not sent to the model
    report = batch.guard_report(2)
    assert report.status == "flag"
    assert "out_of_range:x0" in report.reasons
    assert report.ood_score is not None
    assert 0 < report.ood_score <= 0.01  # 1e6 is far outside the reference
    assert batch.guard_report(0).status in ("pass", "flag")
    assert batch.guard_report(0).to_dict()["ood_score"] == pytest.approx(batch.ood_scores[0])


def test_predictor_review_and_ignore_actions(cancer_lr) -> None:
    X = np.array(cancer_lr.X_test[:3], dtype=np.float64)
    X[0, 0] = 1e4  # out of range, still scorable
    review = SafePredictor(
        cancer_lr.model, guards=GuardConfig(out_of_range="review", ood="ignore"), log="off"
    ).calibrate(cancer_lr.X_cal, cancer_lr.y_cal, reference=cancer_lr.X_train)
    d = review.decide(X)[0]
    assert d.action in ("review", "abstain")  # max(guard action, tier action), never accept
    assert d.tier == "guard"
    assert d.prediction is not None  # out_of_range rows are still scored
    ignore = SafePredictor(
        cancer_lr.model, guards=GuardConfig(out_of_range="ignore", ood="ignore"), log="off"
    ).calibrate(cancer_lr.X_cal, cancer_lr.y_cal, reference=cancer_lr.X_train)
    batch = ignore.decide(X)
    assert "out_of_range:x0" in batch[0].reasons  # reported ...
    assert batch.tiers[0] != "guard"  # ... but the tiers decide
    assert batch.guard_report(0).status == "flag"
    off = SafePredictor(cancer_lr.model, guards="off", log="off")
    off.calibrate(cancer_lr.X_cal, cancer_lr.y_cal)
    assert off.guards_ is None
    assert not off.decide(X).guard_flagged.any()


def test_one_bad_row_does_not_force_per_row_scoring(wine_pipeline) -> None:
    counting = CountingModel(wine_pipeline["model"])
    sp = SafePredictor(counting, log="off", random_state=0)
    sp.calibrate(wine_pipeline["X_cal"], wine_pipeline["y_cal"], reference=wine_pipeline["X_tr"])
    rows = wine_pipeline["X_te"].iloc[:30].copy()
    rows["hue_band"] = rows["hue_band"].astype(object)
    rows["alcohol"] = rows["alcohol"].astype(object)
    rows.iloc[3, rows.columns.get_loc("hue_band")] = "ultraviolet"  # OneHotEncoder would raise
    rows.iloc[7, rows.columns.get_loc("alcohol")] = "thirteen"
    counting.calls = 0
    batch = sp.decide(rows)
    assert counting.calls == 1  # one batched call, no per-row fallback
    assert batch[3].action == "abstain"
    assert batch[3].reasons[0] == "unseen_category:hue_band"
    assert batch[7].reasons[0] == "type:alcohol"
    assert "model_error" not in batch[3].reasons + batch[7].reasons
    scored = [i for i in range(30) if i not in (3, 7)]
    expected = wine_pipeline["model"].predict(wine_pipeline["X_te"].iloc[scored])
    np.testing.assert_array_equal(batch.predictions[scored].astype(int), expected)


def test_schema_errors_distinguish_missing_and_extra(wine_pipeline) -> None:
    sp = SafePredictor(wine_pipeline["model"], log="off")
    sp.calibrate(wine_pipeline["X_cal"], wine_pipeline["y_cal"])
    rows = wine_pipeline["X_te"].iloc[:2]
    with pytest.raises(InputSchemaError, match=r"missing columns \['hue'\]") as err:
        sp.decide(rows.drop(columns=["hue"]))
    assert err.value.missing == ("hue",)
    assert err.value.extra == ()
    with pytest.raises(InputSchemaError, match=r"extra columns \['zzz'\]") as err:
        sp.decide(rows.assign(zzz=1))
    assert err.value.extra == ("zzz",)
    assert err.value.missing == ()
    with pytest.raises(InputSchemaError, match=r"missing columns \['hue'\]"):
        SafePredictor(wine_pipeline["model"], log="off").calibrate(
            wine_pipeline["X_cal"],
            wine_pipeline["y_cal"],
            reference=wine_pipeline["X_tr"].drop(columns=["hue"]),
        )
    with pytest.raises(InputSchemaError, match="cannot be read as a 2-D table"):
        SafePredictor(
            make_pipeline(StandardScaler(), LogisticRegression()).fit(
                np.random.default_rng(0).normal(size=(20, 2)), [0, 1] * 10
            ),
            log="off",
        ).calibrate(np.zeros((10, 2)), [0, 1] * 5).decide([[1.0, 2.0], [1.0]])


def test_guard_state_on_the_predictor_pickles(cancer_lr) -> None:
    sp = SafePredictor(cancer_lr.model, log="off", random_state=0)
    sp.calibrate(cancer_lr.X_cal, cancer_lr.y_cal, reference=cancer_lr.X_train)
    twin = pickle.loads(pickle.dumps(sp))
    X = np.array(cancer_lr.X_test[:50], dtype=np.float64)
    X[5, 5] = np.inf
    a, b = sp.decide(X), twin.decide(X)
    assert a.reasons == b.reasons
    np.testing.assert_array_equal(a.ood_scores, b.ood_scores)


# ------------------------------------------------------------------ OOD guarantee
def _draw(rng: np.random.Generator, n: int, shift: Any = 0.0) -> np.ndarray:
    """Correlated, skewed 6-D data (log-normal mixed with Gaussian features)."""
    cov = 0.6 * np.ones((6, 6)) + 0.4 * np.eye(6)
    z = rng.multivariate_normal(np.zeros(6), cov, size=n)
    z[:, :3] = np.exp(z[:, :3])
    return z + shift


def _detector(kind: str, X: np.ndarray, rng: np.random.Generator) -> Any:
    if kind == "centroids":
        return CentroidDetector.fit(X, max_fit=2000, rng=rng)
    return KnnDetector.fit(X, k=5, max_fit=2000, rng=rng)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["centroids", "knn"])
def test_ood_false_alarm_rate_is_controlled_on_fresh_data(kind: str) -> None:
    # Each of R=100 repetitions draws a fresh iid reference (n_ref=1000: 500 fit rows and
    # m=500 calibration rows) and 500 fresh test rows from the same distribution, so the
    # repetitions are independent. Conformal validity: with l = floor(alpha (m+1)) = 5, the
    # flag probability given the calibration set is pi ~ Beta(l, m+1-l) (continuous scores),
    # with E[pi] = l/(m+1) = 0.00998 <= alpha. Per repetition the flag rate F has
    # Var(F) = Var(pi) + E[pi(1-pi)]/500 <= 1.97e-5 + 2.0e-5 = 3.97e-5, so the mean over R
    # has sd <= sqrt(3.97e-5 / 100) = 6.3e-4. We allow 4 sd (one-sided false failure
    # < 4e-5): mean <= alpha + 0.0025. The same bound from below checks the detector is
    # not vacuous (mean >= E[pi] - 0.0025).
    alpha, reps = 0.01, 100
    rng = np.random.default_rng(2026)
    rates, miscalibrated = [], []
    for _ in range(reps):
        det = _detector(kind, _draw(rng, 1000), rng)
        test = _draw(rng, 500)
        rates.append(np.mean(det.pvalues(test) <= alpha))
        if kind == "centroids":
            # negative control: calibration scores from rows 10% less spread than the
            # reference (a miscalibrated split); the same harness must catch it
            tight = CentroidDetector(
                det.transform, det.centroids, det.counts, det.scores(0.9 * _draw(rng, 500))
            )
            miscalibrated.append(np.mean(tight.pvalues(test) <= alpha))
    mean = float(np.mean(rates))
    tol = 4 * np.sqrt(3.97e-5 / reps)
    assert mean <= alpha + tol, mean
    assert mean >= 5 / 501 - tol, mean
    if kind == "centroids":
        assert float(np.mean(miscalibrated)) > alpha + tol, np.mean(miscalibrated)


@pytest.mark.slow
def test_ood_false_alarm_rate_on_real_data_splits() -> None:
    # Breast cancer (569 rows, 30 features) through the full default guard: R=100 random
    # splits into a 400-row reference (200 fit, m=200 calibration) and 169 test rows. Per
    # split E[F] <= l/(m+1) = 2/201 with Var(F) <= Var(pi) + alpha/169 = 4.9e-5 + 5.9e-5 =
    # 1.08e-4. The splits re-use one data set, so they are not independent; without
    # independence the variance of the mean is still <= the per-split variance
    # (Cauchy-Schwarz), which gives the dependence-proof tolerance 3 * sqrt(1.08e-4) = 0.031.
    X, _ = load_breast_cancer(return_X_y=True)
    cfg = GuardConfig(missing="ignore", non_finite="ignore", out_of_range="ignore", type="ignore")
    rates = []
    for seed in range(100):
        ref, test = train_test_split(X, train_size=400, random_state=seed)
        g = InputGuards.fit(ref, cfg, random_state=seed)
        assert isinstance(g.detector, CentroidDetector)
        res = g.check(test)
        assert res.ood is not None
        rates.append(np.mean(res.ood <= cfg.ood_alpha))
    assert float(np.mean(rates)) <= 0.01 + 3 * np.sqrt(1.08e-4)


def _shift_power() -> dict[str, dict[str, float]]:
    """Share of shifted rows flagged ood by each detector, measured side by side."""
    out: dict[str, dict[str, float]] = {}
    for kind in ("centroids", "knn"):
        rng = np.random.default_rng(7)
        rates = []
        for _ in range(20):
            det = _detector(kind, _draw(rng, 1000), rng)
            # +-3 on the correlated Gaussian features: a contrast the reference never shows
            shift = np.array([0.0, 0.0, 0.0, 3.0, -3.0, 3.0])
            rates.append(np.mean(det.pvalues(_draw(rng, 500, shift=shift)) <= 0.01))
        out.setdefault("synthetic contrast", {})[kind] = float(np.mean(rates))
        # breast cancer rows shifted by +2 IQR on even and -2 IQR on odd features (against
        # the features' strong positive correlation), and rows whose last 20 features
        # come in units 10x smaller
        X, _ = load_breast_cancer(return_X_y=True)
        anti, units = [], []
        for seed in range(5):
            ref, test = train_test_split(X, train_size=400, random_state=seed)
            g = InputGuards.fit(ref, GuardConfig(ood_method=kind), random_state=seed)
            iqr = np.subtract(*np.percentile(ref, [75, 25], axis=0))
            sign = np.where(np.arange(X.shape[1]) % 2 == 0, 1.0, -1.0)
            unit = np.where(np.arange(X.shape[1]) < 10, 1.0, 0.1)
            for sink, shifted in ((anti, test + 2 * sign * iqr), (units, test * unit)):
                res = g.check(shifted)
                assert res.ood is not None
                sink.append(np.mean(res.ood <= 0.01))
        out.setdefault("cancer anti-correlated", {})[kind] = float(np.mean(anti))
        out.setdefault("cancer units", {})[kind] = float(np.mean(units))
    return out


@pytest.mark.slow
def test_ood_power_of_centroids_is_within_5_points_of_knn() -> None:
    # The default detector (no stored rows) against the kNN opt-in, same shifts, same
    # splits; measured on 20 x 500 synthetic and 5 x 169 real rows per shift.
    power = _shift_power()
    for shift, by_kind in power.items():
        assert by_kind["centroids"] > 0.9, (shift, by_kind)
        assert by_kind["centroids"] >= by_kind["knn"] - 0.05, (shift, by_kind)


@pytest.mark.parametrize("kind", ["centroids", "knn"])
def test_ood_score_of_a_row_does_not_depend_on_its_batch(kind: str) -> None:
    X, _ = load_breast_cancer(return_X_y=True)
    ref, test = train_test_split(X, train_size=400, random_state=0)
    det = _detector(kind, ref, np.random.default_rng(0))
    alone = np.concatenate([det.scores(test[i : i + 1]) for i in range(len(test))])
    np.testing.assert_allclose(alone, det.scores(test), rtol=1e-6)  # float32 BLAS rounding
    p_alone = np.concatenate([det.pvalues(test[i : i + 1]) for i in range(len(test))])
    np.testing.assert_array_equal(p_alone, det.pvalues(test))


def test_centroids_aggregate_at_least_20_rows_and_state_round_trips() -> None:
    X, _ = load_breast_cancer(return_X_y=True)
    g = InputGuards.fit(X, random_state=0)
    det = g.detector
    assert isinstance(det, CentroidDetector)
    assert det.counts.min() >= 20
    assert int(det.counts.sum()) == min((len(X) + 1) // 2, 2000)  # every fit row, once
    state = json.loads(json.dumps(g.to_state()))
    assert state["stores_raw_rows"] is False
    assert state["detector"]["kind"] == "centroids"
    assert "raw_reference_rows" not in json.dumps(state)
    knn = InputGuards.fit(X, GuardConfig(ood_method="knn"), random_state=0).to_state()
    assert knn["stores_raw_rows"] is True
    assert len(knn["detector"]["raw_reference_rows"]) == (len(X) + 1) // 2  # named as such
    twin = InputGuards.from_state(state)
    np.testing.assert_array_equal(twin.check(X * 1.5).ood, g.check(X * 1.5).ood)


def test_guard_state_of_safepredict_0_1_0_loads_as_knn() -> None:
    # a 0.1.0 guard state (version 1, kNN rows under "fit_rows") loads as the kNN opt-in
    X, _ = load_breast_cancer(return_X_y=True)
    g = InputGuards.fit(X, GuardConfig(ood_method="knn", range_method="minmax"), random_state=0)
    state = json.loads(json.dumps(g.to_state()))
    old = dict(state, version=1)
    old.pop("stores_raw_rows")
    old.pop("range_threshold")
    old.pop("range_held_out")
    old["detector"] = dict(state["detector"])
    old["detector"]["fit_rows"] = old["detector"].pop("raw_reference_rows")
    old["detector"].pop("kind")
    old["detector"].pop("stores_raw_rows")
    old["config"] = {k: v for k, v in state["config"].items() if k != "guard_alpha"}
    twin = InputGuards.from_state(old)
    assert isinstance(twin.detector, KnnDetector)
    assert twin.to_state()["stores_raw_rows"] is True
    rows = X[:50] * np.linspace(0.5, 2.0, X.shape[1])
    np.testing.assert_array_equal(twin.check(rows).ood, g.check(rows).ood)
    assert twin.check(rows).reasons == g.check(rows).reasons


# ------------------------------------------------------------------ range false alarms
def _range_datasets() -> dict[str, tuple[np.ndarray, int]]:
    """Four bundled data sets and the reference size of each split."""
    return {
        "breast_cancer": (load_breast_cancer(return_X_y=True)[0], 400),
        "diabetes": (load_diabetes(return_X_y=True)[0], 320),
        "digits": (load_digits(return_X_y=True)[0], 1200),
        "wine": (load_wine(return_X_y=True)[0], 150),
    }


def _range_alarm_rates(config: GuardConfig, splits: int) -> dict[str, tuple[float, float]]:
    """Per data set: mean share of clean held-out rows with an out_of_range reason over
    ``splits`` random splits, and the variance bound of one split's rate (see below)."""
    out = {}
    for name, (X, n_ref) in _range_datasets().items():
        rates = []
        for seed in range(splits):
            ref, test = train_test_split(X, train_size=n_ref, random_state=seed)
            g = InputGuards.fit(ref, config, random_state=seed)
            res = g.check(test)
            rates.append(len(res.reasons) / len(test))
        # split-conformal threshold at rank k = ceil((m+1)(1-alpha)) of m held-out rows
        # (m from the guards' own split): given the held-out rows, a fresh row exceeds
        # it with probability pi ~ Beta(m+1-k, k) (continuous scores; ties only lower
        # pi), E[pi] = (m+1-k)/(m+1) <= alpha. One split's rate F over t test rows has
        # Var(F) <= Var(pi) + E[pi]/t.
        m = g.range_held_out or 0
        k = math.ceil((m + 1) * (1 - config.guard_alpha) - 1e-9)
        a, b = m + 1 - k, k
        var = a * b / ((a + b) ** 2 * (a + b + 1)) + (a / (a + b)) / len(test)
        out[name] = (float(np.mean(rates)), var)
    return out


@pytest.mark.slow
def test_range_guard_false_alarm_rate_is_at_most_guard_alpha() -> None:
    # R=100 random splits of each of 4 bundled data sets into reference and clean test
    # rows. Given a data set, a random split makes reference and test rows exchangeable,
    # so E[F] <= guard_alpha holds per split, and the R splits (independent permutations)
    # are iid: the mean over R has variance Var(F)/R. With the bound above, the total
    # (mean over the 4 data sets, independent splits) has sd = sqrt(sum var_i / R) / 4;
    # we allow 3 sd (one-sided false failure ~1e-3).
    alpha, reps = 0.01, 100
    config = GuardConfig(ood_method="none", guard_alpha=alpha)
    rates = _range_alarm_rates(config, reps)
    for name, (rate, var) in rates.items():
        assert rate <= alpha + 3 * np.sqrt(var / reps), (name, rate)
    total = float(np.mean([r for r, _ in rates.values()]))
    tol = 3 * np.sqrt(sum(v for _, v in rates.values()) / reps) / len(rates)
    assert total <= alpha + tol, (total, tol, rates)
    assert total >= 0.5 * alpha, rates  # not vacuous: the guard does fire
    # negative control: the old min/max ranges (+10% of the width), same harness
    old = _range_alarm_rates(GuardConfig(ood_method="none", range_method="minmax"), 20)
    assert float(np.mean([r for r, _ in old.values()])) > alpha + tol, old


def test_small_reference_keeps_enough_held_out_rows() -> None:
    X, _ = load_wine(return_X_y=True)  # 178 rows: 79 fit, 99 held out
    g = InputGuards.fit(X, GuardConfig(ood_method="none"), random_state=0)
    assert g.range_held_out == 99
    assert g.ranges_calibrated is True
    small = InputGuards.fit(X[:100], GuardConfig(ood_method="none"), random_state=0)
    assert small.ranges_calibrated is False  # no finite range holds guard_alpha
    # ... so the ranges are a wide net (min/max widened by the span) that still stops
    # gross values: a row far outside everything seen is never silently accepted
    span = X[:100].max(axis=0) - X[:100].min(axis=0)
    np.testing.assert_allclose(small.high, X[:100].max(axis=0) + span)
    np.testing.assert_allclose(small.low, X[:100].min(axis=0) - span)
    assert small.check(X[:20]).reasons == {}
    assert set(small.check(X[:1] * 6.0).reasons[0]) >= {"out_of_range:x12"}
    overridden = InputGuards.fit(
        X[:100], GuardConfig(ood_method="none", columns={"x0": {"max": 15.0}}), random_state=0
    )
    assert overridden.high[0] == 15.0
    row = X[:1].copy()
    row[0, 0] = 16.0  # above the override, inside the wide net
    assert overridden.check(row).reasons == {0: ("out_of_range:x0",)}


def test_calibrated_ranges_flag_gross_errors() -> None:
    X, _ = load_breast_cancer(return_X_y=True)
    g = InputGuards.fit(X, GuardConfig(ood_method="none"), random_state=0)
    rows = np.repeat(X[:1], 3, axis=0)
    rows[0, 3] = 1e6
    rows[1, 4] = -1e6
    res = g.check(rows)
    assert res.reasons == {0: ("out_of_range:x3",), 1: ("out_of_range:x4",)}
    assert g.range_threshold is not None
    assert 2.0 < g.range_threshold < 10.0  # the level, in normal scores


# ------------------------------------------------------------------ property-based
# >= 10,000 generated bad inputs in total: 2,000 mixed-frame batches + 5,500 numpy
# batches + 2,500 structurally wrong inputs, each thrown at a calibrated predictor.
PROPERTY = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BAD_NUMBER = st.one_of(
    st.sampled_from([np.nan, np.inf, -np.inf, None, pd.NA, float("-nan")]),
    st.floats(min_value=1e6, max_value=1e308),
    st.floats(min_value=-1e308, max_value=-1e6),
    st.integers(min_value=10**17, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.just(b"\x00"),
    st.lists(st.integers(), max_size=2),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
)


def _bad_category(known: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(max_size=6),
        st.sampled_from(known),
        st.integers(),
        st.floats(allow_nan=True),
        st.none(),
        st.just(pd.NA),
        st.booleans(),
        st.lists(st.text(max_size=2), max_size=2),
    )


def _expected_numeric(v: Any, lo: float, hi: float, allow_missing: bool) -> str | None:
    """Which guard a value in a numeric column must trip (None: possibly fine)."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None if allow_missing else "missing"
    if isinstance(v, str | bytes | list):
        return "type"
    try:
        f = float(v)
    except OverflowError:
        return "non_finite"
    if np.isinf(f):
        return "non_finite"
    return "out_of_range" if (f < lo or f > hi) else None


def _expected_category(v: Any, known: list[str]) -> str | None:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "missing"
    if isinstance(v, str):
        return None if v in known else "unseen_category"
    return "type"


def _ranges(guards: InputGuards, by_index: bool = False) -> dict[Any, tuple[float, float]]:
    """The spec of the range guard: the fitted bounds (None: unbounded)."""
    out: dict[Any, tuple[float, float]] = {}
    for j, (name, lo, hi) in enumerate(zip(guards.columns, guards.low, guards.high, strict=True)):
        out[j if by_index else name] = (
            -math.inf if lo is None else lo,
            math.inf if hi is None else hi,
        )
    return out


def _decide(sp: SafePredictor, X: Any) -> Decisions | SafePredictError:
    """Decide, returning (not raising) a SafePredictError; any other exception escapes."""
    try:
        return sp.decide(X)
    except SafePredictError as exc:
        return exc


def _assert_guarded(batch: Any, expected: list[list[str]]) -> None:
    assert isinstance(batch, Decisions)
    assert len(batch) == len(expected)
    for i, codes in enumerate(expected):
        if codes:
            d = batch[i]
            assert d.action != "accept", (codes, d)
            for code in codes:
                assert code in d.reasons, (code, d.reasons)
            assert batch.guard_report(i).status == "flag"


@pytest.fixture(scope="module")
def wine_guarded(wine_pipeline) -> dict[str, Any]:
    sp = SafePredictor(wine_pipeline["model"], log="off", random_state=0)
    sp.calibrate(wine_pipeline["X_cal"], wine_pipeline["y_cal"], reference=wine_pipeline["X_tr"])
    ref = wine_pipeline["X_tr"]
    nums = [c for c in ref.columns if c not in ("alcohol_band", "hue_band")]
    return {
        "sp": sp,
        "pool": wine_pipeline["X_te"].astype(object).to_dict("records"),
        "columns": list(ref.columns),
        "ranges": {c: r for c, r in _ranges(sp.guards_).items() if c in nums},
        "known": {
            "alcohol_band": sorted(map(str, ref["alcohol_band"].dropna().unique())),
            "hue_band": sorted(map(str, ref["hue_band"].dropna().unique())),
        },
    }


@pytest.mark.slow
@settings(PROPERTY, max_examples=2000)
@given(data=st.data())
def test_property_mixed_frames_never_accept_a_bad_row(wine_guarded, data) -> None:
    w = wine_guarded
    cols = w["columns"]
    n = data.draw(st.integers(0, 4), label="rows")
    records, expected = [], []
    for _ in range(n):
        rec = dict(w["pool"][data.draw(st.integers(0, len(w["pool"]) - 1))])
        codes = []
        for col in data.draw(st.lists(st.sampled_from(cols), max_size=3, unique=True)):
            if col in w["known"]:
                v = data.draw(_bad_category(w["known"][col]))
                why = _expected_category(v, w["known"][col])
            else:
                v = data.draw(BAD_NUMBER)
                lo, hi = w["ranges"][col]
                why = _expected_numeric(v, lo, hi, allow_missing=col == "magnesium")
            rec[col] = v
            if why:
                codes.append(f"{why}:{col}")
        records.append(rec)
        expected.append(codes)
    form = data.draw(st.sampled_from(["frame", "records", "numpy"]))
    if form == "records" and records:
        X: Any = records
    elif form == "numpy" and records:
        X = np.array([[r[c] for c in cols] for r in records] + [[None] * len(cols)], dtype=object)
        X = X[:-1]  # the extra row keeps numpy from unpacking list values into a 3-D array
    else:
        X = pd.DataFrame.from_records(records, columns=cols)
    batch = _decide(w["sp"], X)
    if isinstance(batch, SafePredictError):  # allowed, but it must say what is wrong
        assert str(batch)
        return
    _assert_guarded(batch, expected)


@pytest.fixture(scope="module")
def cancer_guarded(cancer_lr) -> dict[str, Any]:
    sp = SafePredictor(cancer_lr.model, log="off", random_state=0)
    sp.calibrate(cancer_lr.X_cal, cancer_lr.y_cal, reference=cancer_lr.X_train)
    return {
        "sp": sp,
        "pool": np.asarray(cancer_lr.X_test),
        "ranges": _ranges(sp.guards_, by_index=True),
    }


@pytest.mark.slow
@settings(PROPERTY, max_examples=5500)
@given(data=st.data())
def test_property_numpy_batches_never_accept_a_bad_row(cancer_guarded, data) -> None:
    c = cancer_guarded
    pool, d = c["pool"], c["pool"].shape[1]
    n = data.draw(st.integers(0, 5), label="rows")
    rows = [pool[data.draw(st.integers(0, len(pool) - 1))].astype(object) for _ in range(n)]
    expected = []
    for row in rows:
        codes = []
        for j in data.draw(st.lists(st.integers(0, d - 1), max_size=4, unique=True)):
            v = data.draw(BAD_NUMBER)
            row[j] = v
            lo, hi = c["ranges"][j]
            why = _expected_numeric(v, lo, hi, allow_missing=False)
            if why:
                codes.append(f"{why}:x{j}")
        expected.append(codes)
    X = np.empty((n, d), dtype=object)
    for i, row in enumerate(rows):
        for j in range(d):
            X[i, j] = row[j]
    whole = data.draw(st.sampled_from(["object", "float", "str"]))
    if whole == "float" and all(
        all(isinstance(v, float | int) and not isinstance(v, bool) for v in r) for r in rows
    ):
        with contextlib.suppress(OverflowError):  # ints beyond float range stay objects
            X = X.astype(np.float64)
    elif whole == "str" and n:
        X = np.array([[str(v) for v in r] for r in rows])  # strings: all type errors
        expected = [[f"type:x{j}" for j in range(d)] for _ in range(n)]
    batch = _decide(c["sp"], X)
    if isinstance(batch, SafePredictError):  # allowed, but it must say what is wrong
        assert str(batch)
        return
    _assert_guarded(batch, expected)


@st.composite
def _malformed(draw: st.DrawFn, cols: list[str]) -> tuple[Any, tuple[str, ...]]:
    """A structurally wrong input and words its error message must contain."""
    kind = draw(st.sampled_from(["drop", "extra", "rename", "shape", "ndim", "ragged", "junk"]))
    n = draw(st.integers(1, 3))
    frame = pd.DataFrame(np.ones((n, len(cols))), columns=cols)
    if kind == "drop":
        gone = draw(st.lists(st.sampled_from(cols), min_size=1, max_size=3, unique=True))
        return frame.drop(columns=gone), tuple(gone)
    if kind == "extra":
        name = draw(st.text(min_size=1, max_size=5).filter(lambda s: s not in cols))
        return frame.assign(**{name: 1.0}), (name,)
    if kind == "rename":
        old = draw(st.sampled_from(cols))
        new = draw(st.text(min_size=1, max_size=5).filter(lambda s: s not in cols))
        return frame.rename(columns={old: new}), (old, new)
    if kind == "shape":
        width = draw(st.integers(0, 40).filter(lambda w: w != len(cols)))
        return np.ones((n, width)), ("features",)
    if kind == "ndim":
        return np.ones(draw(st.lists(st.integers(1, 3), min_size=3, max_size=4))), ("2-D",)
    if kind == "ragged":
        return [[1.0] * len(cols), [1.0] * draw(st.integers(0, 3))], ("2-D",)
    junk = draw(st.one_of(st.none(), st.text(max_size=3), st.floats(), st.integers()))
    return junk, ("2-D",)


@pytest.mark.slow
@settings(PROPERTY, max_examples=2500)
@given(data=st.data())
def test_property_malformed_batches_raise_schema_errors(wine_guarded, data) -> None:
    X, words = data.draw(_malformed(wine_guarded["columns"]))
    with pytest.raises(InputSchemaError) as err:
        wine_guarded["sp"].decide(X)
    message = str(err.value)
    for word in words:
        assert word in message or repr(word) in message, (word, message)
