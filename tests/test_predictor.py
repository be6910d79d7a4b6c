"""SafePredictor on real models and bundled data: the contract in DESIGN.md."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris

from safepredict import (
    ConfigError,
    Decisions,
    InputSchemaError,
    NotCalibratedError,
    SafePredictor,
    TierPolicy,
)


def test_sklearn_conventions(iris_lr) -> None:
    sp = SafePredictor(iris_lr.model, confidence_level=0.8, log="off")
    assert sp.get_params(deep=False)["confidence_level"] == 0.8
    sp.set_params(confidence_level=0.85)
    assert sp.confidence_level == 0.85
    assert not any(k.endswith("_") for k in vars(sp))  # __init__ only stores
    sp.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    twin = clone(sp)
    assert twin.model is iris_lr.model  # the fitted model is kept, not refitted
    assert not hasattr(twin, "conformal_")
    assert twin.get_params(deep=False) == sp.get_params(deep=False)


def test_decide_follows_every_change_after_a_first_decide(iris_lr, tmp_path) -> None:
    """``decide`` looks its stages and writers up once per call; none may go stale."""
    sp = SafePredictor(iris_lr.model, log="off", guards="off")
    sp.calibrate(iris_lr.X_cal, iris_lr.y_cal)
    first = sp.decide(iris_lr.X_test)
    events = tmp_path / "events.jsonl"
    sp.set_params(logger=str(events), log="decision", log_inputs=True, redact=["x1"])
    sp.decide(iris_lr.X_test[:3])
    inputs = [json.loads(line)["inputs"] for line in events.read_text().splitlines()]
    assert len(inputs) == 3  # the new writers: events now flow, with inputs, redacted
    assert all("x0" in row and "x1" not in row for row in inputs)
    sp.set_params(confidence_level=0.5)
    sp.calibrate(iris_lr.X_cal, iris_lr.y_cal)  # new fitted stages
    again = sp.decide(iris_lr.X_test)
    sizes = [len(d.prediction_set or ()) for d in again]
    assert sum(sizes) < sum(len(d.prediction_set or ()) for d in first)


def test_decide_before_calibrate_says_what_to_call(iris_lr) -> None:
    with pytest.raises(NotCalibratedError, match=r"call predictor.calibrate\(X_cal, y_cal\)"):
        SafePredictor(iris_lr.model).decide(iris_lr.X_test)


def test_classification_decisions(iris_lr) -> None:
    sp = SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    batch = sp.decide(iris_lr.X_test)
    assert isinstance(batch, Decisions)
    assert len(batch) == len(iris_lr.X_test)
    sizes = batch.set_sizes
    accepted = batch.actions == "accept"
    assert np.all(sizes[accepted] == 1)  # multi-label and empty sets are never accepted
    for d in batch:
        assert d.prediction in d.prediction_set or d.action != "accept"
        if d.action == "accept":
            assert d.confidence >= 0.0
    # predictions follow the model
    np.testing.assert_array_equal(
        batch.predictions.astype(int), iris_lr.model.predict(iris_lr.X_test)
    )
    np.testing.assert_allclose(batch.probabilities, iris_lr.model.predict_proba(iris_lr.X_test))


def test_singleton_iff_confidence_reaches_level(wine_hgb) -> None:
    sp = SafePredictor(wine_hgb.model, confidence_level=0.9, log="off")
    sp.calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    batch = sp.decide(wine_hgb.X_test)
    singleton = batch.set_sizes == 1
    predicted_in_set = batch.set_mask[np.arange(len(batch)), np.argmax(batch.probabilities, axis=1)]
    # the set at 0.9 is {prediction} exactly when confidence >= 0.9 (and the set is not empty)
    np.testing.assert_array_equal(singleton, (batch.confidence >= 0.9) & predicted_in_set)


def test_regression_intervals(diabetes_rf) -> None:
    sp = SafePredictor(diabetes_rf.model, log="off").calibrate(diabetes_rf.X_cal, diabetes_rf.y_cal)
    batch = sp.decide(diabetes_rf.X_test)
    assert batch.intervals is not None
    lo, hi = batch.intervals.T
    pred = diabetes_rf.model.predict(diabetes_rf.X_test)
    assert np.all(lo <= pred)
    assert np.all(pred <= hi)
    assert batch[0].prediction_set is None
    assert batch[0].confidence is None
    # the default fallback accepts every row the input guards let through (rows outside the
    # calibration data's ranges abstain: see tests/test_guards.py)
    assert set(batch.actions[~batch.guard_flagged]) == {"accept"}
    assert set(batch.actions[batch.guard_flagged]) <= {"abstain"}


def test_dataframe_columns_are_checked_and_reordered(wine_hgb) -> None:
    sp = SafePredictor(wine_hgb.model, log="off").calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    X = wine_hgb.X_test
    reordered = X[list(reversed(X.columns))]
    np.testing.assert_array_equal(sp.decide(reordered).predictions, sp.decide(X).predictions)
    with pytest.raises(InputSchemaError) as info:
        sp.decide(X.drop(columns=["alcohol"]).assign(alcohool=1.0))
    assert info.value.missing == ("alcohol",)
    assert info.value.extra == ("alcohool",)
    assert "missing columns ['alcohol']" in str(info.value)
    with pytest.raises(InputSchemaError, match="calibrated on 13"):
        sp.decide(np.zeros((2, 5)))


def test_numpy_input_on_frame_model_gives_no_feature_name_warning(wine_hgb) -> None:
    sp = SafePredictor(wine_hgb.model, log="off").calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    # filterwarnings=error turns any sklearn feature-name warning into a failure
    batch = sp.decide(wine_hgb.X_test.to_numpy())
    assert len(batch) == len(wine_hgb.X_test)
    one = sp.decide_one(wine_hgb.X_test.iloc[0])
    assert one.prediction == batch[0].prediction
    as_dict = sp.decide_one(wine_hgb.X_test.iloc[0].to_dict())
    assert as_dict.prediction == one.prediction


def test_wrong_feature_count_raises(iris_lr) -> None:
    sp = SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    with pytest.raises(InputSchemaError, match="3 features but the predictor was calibrated on 4"):
        sp.decide(np.zeros((1, 3)))
    with pytest.raises(InputSchemaError, match="exactly one row"):
        sp.decide_one(np.zeros((2, 4)))
    with pytest.raises(InputSchemaError, match="2-D"):
        sp.decide(np.zeros((1, 2, 4)))
    assert len(sp.decide(np.zeros((0, 4)))) == 0


class FlakyModel:
    """A real fitted model that raises on rows whose first feature is negative."""

    def __init__(self, model) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict_proba(self, X):
        X = np.asarray(X)
        if np.any(X[:, 0] < 0):
            raise ValueError("cannot score negative sepal length")
        return self.model.predict_proba(X)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def test_model_errors_fail_closed_per_row(iris_lr) -> None:
    sp = SafePredictor(FlakyModel(iris_lr.model), log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    X = np.array(iris_lr.X_test[:10], dtype=float)
    X[[2, 7], 0] = -1.0
    batch = sp.decide(X)
    bad = [i for i, d in enumerate(batch) if "model_error" in d.reasons]
    assert bad == [2, 7]
    assert all(batch[i].action == "abstain" and batch[i].prediction is None for i in bad)
    good = sp.decide(np.delete(X, [2, 7], axis=0))
    np.testing.assert_array_equal(np.delete(batch.actions, [2, 7]), good.actions)


def test_tier_policy_from_dict_is_applied(iris_lr) -> None:
    policy = {
        "tiers": [
            {"name": "auto", "action": "accept", "min_confidence": 0.99},
            {"name": "suggest", "action": "review", "max_set_size": 2},
            {"name": "human", "action": "abstain"},
        ]
    }
    sp = SafePredictor(iris_lr.model, tiers=policy, log="off").calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    batch = sp.decide(iris_lr.X_test)
    conf = batch.confidence
    auto = batch.tiers == "auto"
    assert np.all(conf[auto] >= 0.99)
    suggest = batch.tiers == "suggest"
    assert np.all(batch.set_sizes[suggest] <= 2)
    assert np.all(batch.actions[suggest] == "review")


def test_policy_task_mismatch_is_a_config_error(iris_lr, diabetes_ridge) -> None:
    bad = {
        "tiers": [
            {"name": "a", "action": "accept", "max_interval_width": 3.0},
            {"name": "b", "action": "abstain"},
        ]
    }
    with pytest.raises(ConfigError, match="max_interval_width applies to regression"):
        SafePredictor(iris_lr.model, tiers=bad).calibrate(iris_lr.X_cal, iris_lr.y_cal)
    bad2 = {
        "tiers": [
            {"name": "a", "action": "accept", "min_confidence": 0.9},
            {"name": "b", "action": "abstain"},
        ]
    }
    with pytest.raises(ConfigError, match="apply to classification"):
        SafePredictor(diabetes_ridge.model, tiers=bad2).calibrate(
            diabetes_ridge.X_cal, diabetes_ridge.y_cal
        )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"confidence_level": 1.0}, "confidence_level must be a number in (0, 1)"),
        ({"task": "ranking"}, "task must be one of"),
        ({"log": "verbose"}, "log must be one of"),
        ({"conformity_score": "lca"}, "Did you mean 'lac'"),
        ({"guards": "on"}, "guards must be 'auto', 'off', a GuardConfig"),
    ],
)
def test_bad_parameters(iris_lr, kwargs, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        SafePredictor(iris_lr.model, **kwargs).calibrate(iris_lr.X_cal, iris_lr.y_cal)
    assert fragment in str(info.value)


def test_calibration_label_problems(iris_lr) -> None:
    with pytest.raises(ValueError, match="not among the model's classes"):
        SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, np.full(len(iris_lr.y_cal), 7))
    with pytest.raises(ValueError, match="one target per row"):
        SafePredictor(iris_lr.model).calibrate(iris_lr.X_cal, iris_lr.y_cal[:-1])


def test_thread_safety_matches_serial(wine_hgb) -> None:
    sp = SafePredictor(wine_hgb.model, log="off").calibrate(wine_hgb.X_cal, wine_hgb.y_cal)
    X = pd.concat([wine_hgb.X_test] * 5, ignore_index=True)
    chunks = [X.iloc[i : i + 7] for i in range(0, len(X), 7)]
    serial = [sp.decide(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(sp.decide, chunks * 4))
    for i, got in enumerate(parallel):
        want = serial[i % len(chunks)]
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.tiers, want.tiers)
        np.testing.assert_array_equal(got.set_mask, want.set_mask)
        np.testing.assert_allclose(got.confidence, want.confidence)


def test_audit_sample_is_deterministic(iris_lr) -> None:
    policy = TierPolicy.default("classification")
    policy = TierPolicy(tiers=policy.tiers, audit_rate=0.3, audit_seed=11)
    sp = SafePredictor(iris_lr.model, tiers=policy, log="off").calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    a = sp.decide(iris_lr.X_test)
    b = sp.decide(iris_lr.X_test[::-1])
    assert a.audit.any()
    assert np.all(a.actions[a.audit] == "accept")
    np.testing.assert_array_equal(a.audit, b.audit[::-1])
    X, _ = load_iris(return_X_y=True)
    share = sp.decide(np.repeat(X, 5, axis=0) + np.random.default_rng(0).normal(0, 1e-3, (750, 4)))
    acc = share.actions == "accept"
    assert 0.2 < share.audit[acc].mean() < 0.4
