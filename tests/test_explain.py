"""Explanations: selection, additivity, pipelines, scope, budget, threads, pickling, plots."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler
from tests.conftest import Split, three_way

from safepredict import ConfigError, Explanation, SafePredictor
from safepredict.explain import (
    SKIPPED_BUDGET,
    ExplainerState,
    ModelExplainer,
    _shap,
    feature_groups,
    model_kind,
    to_shap,
)

# Tree and linear explainers are exact; their only error is floating-point
# round-off over a few hundred additions (~1e-13), so 1e-6 is generous. The
# Exact and Permutation explainers are exact in the *sum* as well: every
# (antithetic) permutation walks from "all features masked" (the base value,
# the model's mean output over the background) to "no feature masked" (the
# model's output on the row), so the per-feature deltas telescope to exactly
# f(x) - base; the sampling error only affects how that sum is split among
# features. So the same 1e-6 holds for them.
ATOL = 1e-6


def explain_all(task: str) -> dict[str, Any]:
    """A policy that explains every tier (so every scored row is explained)."""
    if task == "classification":
        return {
            "tiers": [
                {"name": "auto", "action": "accept", "max_set_size": 1},
                {"name": "human", "action": "abstain"},
            ],
            "explain": ["auto", "human", "guard"],
        }
    return {"tiers": [{"name": "auto", "action": "accept"}], "explain": ["auto", "guard"]}


def reference_output(model: Any, row: Any, output: str, classes: list[Any]) -> float:
    """The model output an explanation claims to explain, computed by sklearn."""
    if output == "prediction":
        return float(np.ravel(model.predict(row))[0])
    kind, label = output[:-1].split("[", 1)
    k = [str(c) for c in classes].index(label)
    if kind == "proba":
        return float(model.predict_proba(row)[0, k])
    margin = np.asarray(model.decision_function(row), dtype=float)
    if margin.ndim == 1:  # binary: the margin is the log-odds of classes[1]
        assert kind == "log_odds"
        return float(margin[0] if k == 1 else -margin[0])
    assert kind == "logit"
    return float(margin[0, k])


def mixed_diabetes() -> tuple[pd.DataFrame, pd.Series]:
    """Diabetes with ``bmi`` replaced by a categorical band (a mixed-type frame)."""
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X = X.copy()
    X["bmi_band"] = pd.cut(X["bmi"], 4, labels=["low", "mid", "high", "very_high"]).astype(str)
    return X.drop(columns=["bmi"]), y


def mixed_pipeline_split() -> Split:
    X, y = mixed_diabetes()
    X_tr, y_tr, X_cal, y_cal, X_te, y_te = three_way(X, y)
    ct = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["bmi_band"])],
        remainder="passthrough",
    )
    model = make_pipeline(ct, HistGradientBoostingRegressor(max_iter=40, random_state=0))
    return Split(model.fit(X_tr, y_tr), X_tr, y_tr, X_cal, y_cal, X_te, y_te)


def numpy_split(loader: Any, model: Any) -> Split:
    X, y = loader(return_X_y=True)
    X_tr, y_tr, X_cal, y_cal, X_te, y_te = three_way(X, y)
    return Split(model.fit(X_tr, y_tr), X_tr, y_tr, X_cal, y_cal, X_te, y_te)


MODELS = {
    "rf_binary": (
        lambda: numpy_split(load_breast_cancer, RandomForestClassifier(30, random_state=0)),
        "tree",
    ),
    "hgb_binary": (
        lambda: numpy_split(
            load_breast_cancer, HistGradientBoostingClassifier(max_iter=30, random_state=0)
        ),
        "tree",
    ),
    "hgb_multiclass": (
        lambda: numpy_split(load_wine, HistGradientBoostingClassifier(max_iter=30, random_state=0)),
        "tree",
    ),
    "logreg_pipeline_binary": (
        lambda: numpy_split(
            load_breast_cancer,
            make_pipeline(StandardScaler(), LogisticRegression_(max_iter=1000)),
        ),
        "linear",
    ),
    "logreg_pipeline_multiclass": (
        lambda: numpy_split(
            load_wine, make_pipeline(StandardScaler(), LogisticRegression_(max_iter=1000))
        ),
        "linear",
    ),
    "ridge": (lambda: numpy_split(load_diabetes, Ridge()), "linear"),
    "knn_iris_exact": (lambda: numpy_split(load_iris, KNeighborsClassifier()), "exact"),
    "knn_wine_permutation": (
        lambda: numpy_split(load_wine, make_pipeline(StandardScaler(), KNeighborsClassifier())),
        "permutation",
    ),
    "mixed_pipeline_hgb": (mixed_pipeline_split, "tree"),
}


def LogisticRegression_(**kw: Any) -> Any:  # noqa: N802  # a factory named after the class
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**kw)


def task_of(split: Split) -> str:
    return "classification" if hasattr(split.model, "predict_proba") else "regression"


@pytest.fixture(scope="module")
def splits() -> dict[str, Split]:
    return {name: make() for name, (make, _) in MODELS.items()}


def calibrated(split: Split, **kw: Any) -> SafePredictor:
    task = task_of(split)
    params: dict[str, Any] = {"explainer": "auto", "log": "off", "tiers": explain_all(task)}
    params.update(kw)
    return SafePredictor(split.model, **params).calibrate(split.X_cal, split.y_cal)


def rows_of(X: Any, idx: Any) -> Any:
    return X.iloc[idx] if hasattr(X, "iloc") else np.asarray(X)[idx]


@pytest.mark.parametrize("name", list(MODELS))
def test_additivity_and_method(name: str, splits: dict[str, Split]) -> None:
    split = splits[name]
    expected_method = MODELS[name][1]
    sp = calibrated(split)
    X = rows_of(split.X_test, np.arange(12))
    decisions = sp.decide(X)
    classes = [] if sp.task_ == "regression" else sp.classes_.tolist()
    assert decisions.explanations is not None
    for i, d in enumerate(decisions):
        e = d.explanation
        assert isinstance(e, Explanation), d.reasons
        assert e.method == expected_method
        n_inputs = X.shape[1]
        assert len(e.values) == len(e.feature_names) == n_inputs
        assert isinstance(e.base_value, float)
        row = rows_of(X, [i])
        ref = reference_output(split.model, row, e.output or "", classes)
        assert e.output_value == pytest.approx(ref, abs=ATOL), (e.output, e.method)
        if sp.task_ == "classification":  # explains the predicted class
            assert e.output is not None
            assert e.output.endswith(f"[{d.prediction}]")


def test_outputs_named_per_model(splits: dict[str, Split]) -> None:
    """Forests explain probabilities; boosting/linear classifiers explain margins."""

    def output_kind(name: str) -> str:
        sp = calibrated(splits[name])
        e = sp.decide(rows_of(splits[name].X_test, [0]))[0].explanation
        assert e is not None
        assert e.output is not None
        return e.output.split("[")[0]

    assert output_kind("rf_binary") == "proba"
    assert output_kind("hgb_binary") == "log_odds"
    assert output_kind("hgb_multiclass") == "logit"
    assert output_kind("logreg_pipeline_binary") == "log_odds"
    assert output_kind("knn_iris_exact") == "proba"
    assert output_kind("ridge") == "prediction"


def test_pipeline_contributions_in_input_columns(splits: dict[str, Split]) -> None:
    split = splits["mixed_pipeline_hgb"]
    sp = calibrated(split)
    X = split.X_test.iloc[:5]
    decisions = sp.decide(X)
    pre, final = split.model[:-1], split.model[-1]
    shap = _shap()
    raw = shap.TreeExplainer(final)(pre.transform(X)).values
    out_names = list(pre.get_feature_names_out())
    onehot = [j for j, n in enumerate(out_names) if n.startswith("cat__bmi_band_")]
    assert len(onehot) == 4
    for i, d in enumerate(decisions):
        e = d.explanation
        assert e is not None
        assert e.feature_names == tuple(X.columns)
        contrib = dict(zip(e.feature_names, e.values, strict=True))
        # the one-hot columns sum to their source column
        assert contrib["bmi_band"] == pytest.approx(raw[i, onehot].sum(), abs=1e-9)
        assert contrib["age"] == pytest.approx(raw[i, out_names.index("remainder__age")], abs=1e-9)
        assert e.data is not None
        assert e.data[list(X.columns).index("bmi_band")] == X.iloc[i]["bmi_band"]


def test_feature_groups_and_non_decomposable_pipeline() -> None:
    X, _y = mixed_diabetes()
    ct = ColumnTransformer(
        [("cat", OneHotEncoder(), ["bmi_band"]), ("num", StandardScaler(), ["age", "bp"])],
        remainder="drop",
    ).fit(X)
    groups = feature_groups(ct, X.iloc[:50])
    assert groups is not None
    cols = list(X.columns)
    assert groups.tolist() == [cols.index("bmi_band")] * 4 + [cols.index("age"), cols.index("bp")]
    # PolynomialFeatures mixes inputs: no per-column map, so "auto" explains the whole
    # pipeline model-agnostically in the input columns
    Xd, yd = load_diabetes(return_X_y=True)
    poly = make_pipeline(PolynomialFeatures(2), Ridge()).fit(Xd[:200], yd[:200])
    assert feature_groups(poly[:-1], Xd[:50]) is None
    sp = SafePredictor(poly, explainer="auto", log="off", tiers=explain_all("regression"))
    sp.calibrate(Xd[200:350], yd[200:350])
    d = sp.decide_one(Xd[400])
    assert d.explanation is not None
    assert d.explanation.method == "permutation"
    assert d.explanation.output_value == pytest.approx(poly.predict(Xd[400:401])[0], abs=ATOL)
    sp2 = SafePredictor(poly, explainer="linear", log="off", tiers=explain_all("regression"))
    with pytest.raises(ConfigError, match="mixes input columns"):
        sp2.calibrate(Xd[200:350], yd[200:350])


def test_explicit_explainer_must_fit_the_model(splits: dict[str, Split]) -> None:
    knn = splits["knn_iris_exact"]
    with pytest.raises(ConfigError, match="explainer='tree' needs a tree model"):
        calibrated(knn, explainer="tree")
    with pytest.raises(ConfigError, match="explainer='linear' needs a linear model"):
        calibrated(splits["rf_binary"], explainer="linear")
    with pytest.raises(ConfigError, match="explainer must be one of"):
        calibrated(knn, explainer="kernel")
    sp = calibrated(knn, explainer="permutation")
    e = sp.decide(rows_of(knn.X_test, [0]))[0].explanation
    assert e is not None
    assert e.method == "permutation"
    assert model_kind(splits["mixed_pipeline_hgb"].model) == "tree"


def test_scoped_default_explains_only_non_accepted(wine_hgb: Split) -> None:
    sp = SafePredictor(wine_hgb.model, explainer="auto", log="off", confidence_level=0.95)
    sp.calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    decisions = sp.decide(wine_hgb.X_test)
    accepted = decisions.actions == "accept"
    assert accepted.any()
    assert (~accepted).any()
    assert decisions.explanations is not None
    for d in decisions:
        assert (d.explanation is None) == (d.action == "accept")
        if d.explanation is not None:
            top = d.to_dict()["explanation"]
            assert top["method"] == "tree"
            assert d.explanation.to_dict(top_k=3)["top"][0][0] in wine_hgb.X_test.columns


def test_accepted_rows_pay_nothing(wine_hgb: Split) -> None:
    plain = SafePredictor(wine_hgb.model, log="off", confidence_level=0.95)
    full = plain.calibrate(wine_hgb.X_cal, wine_hgb.y_cal).decide(wine_hgb.X_test)
    sp = SafePredictor(wine_hgb.model, explainer="auto", log="off", confidence_level=0.95)
    sp.calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    accepted = np.flatnonzero(full.actions == "accept")
    only_accepted = sp.decide(wine_hgb.X_test.iloc[accepted])
    assert (only_accepted.actions == "accept").all()
    assert only_accepted.explanations == [None] * len(accepted)
    assert sp.explainer_ is not None
    assert sp.explainer_.method is None  # never built: no shap work at all
    assert sp.explainer_.state.per_row_ms == {}


def test_explainer_none_and_policy_list(wine_hgb: Split) -> None:
    sp = SafePredictor(wine_hgb.model, log="off").calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    assert all(d.explanation is None for d in sp.decide(wine_hgb.X_test))
    policy = explain_all("classification")
    policy["explain"] = ["auto"]
    sp = SafePredictor(wine_hgb.model, explainer="auto", log="off", tiers=policy)
    decisions = sp.calibrate(wine_hgb.X_cal, wine_hgb.y_cal).decide(wine_hgb.X_test)
    for d in decisions:
        assert (d.explanation is not None) == (d.tier == "auto")


def test_budget_skips_instead_of_blocking(splits: dict[str, Split]) -> None:
    split = splits["rf_binary"]
    sp = calibrated(split, explain_budget_ms=1e-6)
    decisions = sp.decide(rows_of(split.X_test, np.arange(10)))
    for d in decisions:
        assert d.explanation is None
        assert SKIPPED_BUDGET in d.reasons
    state = sp.explainer_.state
    # every candidate was measured, none fits
    assert set(state.per_row_ms) == {"tree", "permutation"}
    assert all(ms > 1e-6 for ms in state.per_row_ms.values())
    # a budget that fits keeps the most faithful (first) method
    generous = calibrated(split, explain_budget_ms=60_000.0)
    d = generous.decide(rows_of(split.X_test, [0]))[0]
    assert d.explanation is not None
    assert d.explanation.method == "tree"
    assert SKIPPED_BUDGET not in d.reasons
    assert set(generous.explainer_.state.per_row_ms) == {"tree"}


@pytest.mark.parametrize("name", ["hgb_multiclass", "knn_wine_permutation", "mixed_pipeline_hgb"])
def test_thread_pool_matches_serial(name: str, splits: dict[str, Split]) -> None:
    split = splits[name]
    X = rows_of(split.X_test, np.arange(16))
    chunks = [rows_of(X, np.arange(i, i + 2)) for i in range(0, 16, 2)]
    # the threaded predictor is fresh, so its threads also race to build the explainer
    threaded_sp = calibrated(split)
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda c: [d.explanation for d in threaded_sp.decide(c)], chunks))
    sp = calibrated(split)
    serial = [[d.explanation for d in sp.decide(c)] for c in chunks]
    assert threaded_sp.explainer_.method == sp.explainer_.method
    for s_chunk, t_chunk in zip(serial, threaded, strict=True):
        for s, t in zip(s_chunk, t_chunk, strict=True):
            assert s is not None
            assert t is not None
            np.testing.assert_allclose(t.values, s.values, rtol=0, atol=1e-12)
            assert t.base_value == pytest.approx(s.base_value, abs=1e-12)


def test_pickle_and_state_round_trip(splits: dict[str, Split]) -> None:
    split = splits["mixed_pipeline_hgb"]
    sp = calibrated(split)
    X = split.X_test.iloc[:4]
    before = [d.explanation for d in sp.decide(X)]
    assert sp.explainer_ is not None
    assert sp.explainer_.method == "tree"
    clone = pickle.loads(pickle.dumps(sp))
    assert clone.explainer_._built == {}  # shap objects are not pickled, rebuilt lazily
    after = [d.explanation for d in clone.decide(X)]
    assert after == before
    state = sp.explainer_.to_state()
    text = json.dumps(state, allow_nan=False)
    rebuilt = ModelExplainer.from_state(json.loads(text), model=split.model)
    assert rebuilt.state == sp.explainer_.state
    again, skipped = rebuilt.explain(X)
    assert skipped == [None] * 4
    assert [e.values for e in again if e] == [e.values for e in before if e]
    assert ExplainerState.from_state(state) == sp.explainer_.state


def test_to_shap_waterfall_renders_png(tmp_path: Any, splits: dict[str, Split]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = splits["mixed_pipeline_hgb"]
    e = calibrated(split).decide(split.X_test.iloc[:1])[0].explanation
    assert e is not None
    shap = _shap()
    sx = to_shap(e)
    assert isinstance(sx, shap.Explanation)
    assert sx.values.shape == (len(e.feature_names),)
    assert float(sx.base_values) + float(np.sum(sx.values)) == pytest.approx(e.output_value)
    shap.plots.waterfall(sx, show=False)
    path = tmp_path / "waterfall.png"
    plt.gcf().savefig(path)
    plt.close("all")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_explanation_to_shap_method_is_a_deprecated_shim() -> None:
    e = Explanation("tree", ("a", "b"), (0.5, -0.25), 1.0, output="y")
    with pytest.warns(DeprecationWarning, match=r"explain\.to_shap\(explanation\)"):
        sx = e.to_shap()
    expected = to_shap(e)
    np.testing.assert_array_equal(sx.values, expected.values)
    assert float(sx.base_values) == float(expected.base_values) == 1.0
    assert list(sx.feature_names) == ["a", "b"]


def test_explanation_shape_is_stable_across_class_counts(splits: dict[str, Split]) -> None:
    """Binary and multiclass give the same shape: one value per input, scalar base."""
    for name in ("hgb_binary", "hgb_multiclass", "rf_binary", "logreg_pipeline_multiclass"):
        split = splits[name]
        e = calibrated(split).decide(rows_of(split.X_test, [0]))[0].explanation
        assert e is not None
        assert len(e.values) == np.shape(split.X_test)[1]
        assert all(isinstance(v, float) for v in e.values)
        json.dumps(e.to_dict(), allow_nan=False)


def test_import_does_not_load_shap() -> None:
    import subprocess
    import sys

    code = "import sys, safepredict; print('shap' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_missing_values_are_explained_by_trees(splits: dict[str, Split]) -> None:
    split = splits["hgb_binary"]
    sp = calibrated(split, guards="off")
    X = np.array(split.X_test[:3], dtype=float)
    X[0, [0, 5]] = np.nan  # HistGradientBoosting routes missing values natively
    decisions = sp.decide(X)
    e = decisions[0].explanation
    assert e is not None
    assert e.data is not None
    assert np.isnan(e.data[0])
    ref = reference_output(split.model, X[:1], e.output or "", sp.classes_.tolist())
    assert e.output_value == pytest.approx(ref, abs=ATOL)


class _NotReallyLightGBM(KNeighborsClassifier):  # type: ignore[misc]  # sklearn has no stubs
    """A real KNN whose type claims to come from lightgbm (not installed here)."""


_NotReallyLightGBM.__module__ = "lightgbm.sklearn"


def test_tree_library_model_falls_back_gracefully() -> None:
    """A model detected as a tree library's that TreeExplainer rejects is still explained."""
    X, y = load_iris(return_X_y=True)
    model = _NotReallyLightGBM().fit(X[::2], y[::2])
    assert model_kind(model) == "tree"
    sp = SafePredictor(model, explainer="auto", log="off", tiers=explain_all("classification"))
    d = sp.calibrate(X[1::2], y[1::2]).decide_one(X[5])
    assert d.explanation is not None
    assert d.explanation.method == "permutation"
    assert "tree" in sp.explainer_.state.errors
    ref = reference_output(model, X[5:6], d.explanation.output or "", [0, 1, 2])
    assert d.explanation.output_value == pytest.approx(ref, abs=ATOL)
