"""The model-output contract at the model seam (DESIGN.md trust contract 3; issue 17 item 2).

Every misbehaving model of the issue's reproduction: its rows abstain with
``invalid_output`` (or ``model_error`` when it raises), never ``accept``, and only
``SafePredictError`` subclasses escape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge

from safepredict import SafePredictor
from safepredict.model import PROBA_SUM_TOL, check_output, run_model


class Wrapped:
    """A real fitted classifier whose ``predict_proba`` output is transformed."""

    def __init__(self, model: Any, transform: Any) -> None:
        self.model = model
        self.transform = transform
        self.classes_ = model.classes_

    def predict_proba(self, X: Any) -> Any:
        return self.transform(self.model.predict_proba(X), X)

    def predict(self, X: Any) -> Any:
        return self.model.predict(X)


@pytest.fixture(scope="module")
def cancer() -> dict[str, Any]:
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = LogisticRegression(max_iter=2000).fit(X[:250], y[:250])
    good = SafePredictor(model, log="off", guards="off").calibrate(X[250:450], y[250:450])
    return {"model": model, "X": X[450:470], "good": good, "X_cal": X[250:450], "y_cal": y[250:450]}


def swapped(cancer: dict[str, Any], transform: Any) -> SafePredictor:
    """A predictor calibrated on the real model's output, then given a misbehaving one."""
    sp = SafePredictor(Wrapped(cancer["model"], lambda p, X: p), log="off", guards="off")
    sp.calibrate(cancer["X_cal"], cancer["y_cal"])
    sp.model = Wrapped(cancer["model"], transform)
    return sp


def margins(p: Any, X: Any) -> Any:
    logit = np.log(p[:, 1] / p[:, 0])
    return np.column_stack([-logit / 2, logit / 2])


MISBEHAVIOURS = {
    "margins": margins,
    "constant -0.5/1.5": lambda p, X: np.tile([-0.5, 1.5], (len(p), 1)),
    "7 * p": lambda p, X: 7 * p,
    "nan": lambda p, X: np.where(np.arange(len(p))[:, None] % 2 == 0, np.nan, p),
    "one-d": lambda p, X: p[:, 1],
    "n + 1 rows": lambda p, X: np.vstack([p, p[:1]]),
    "n - 1 rows": lambda p, X: p[1:] if len(p) > 1 else p[:0],
    "None": lambda p, X: None,
    "three columns": lambda p, X: np.column_stack([p * 0.5, p[:, :1] * 0 + 0.5]) / 1.0,
    "strings": lambda p, X: np.array([["a", "b"]] * len(p)),
}


@pytest.mark.parametrize("name", sorted(MISBEHAVIOURS))
def test_broken_output_is_never_accepted(cancer: dict[str, Any], name: str) -> None:
    transform = MISBEHAVIOURS[name]
    good = cancer["good"].decide(cancer["X"])
    assert (good.actions == "accept").sum() >= 10  # the real model is mostly accepted
    d = swapped(cancer, transform).decide(cancer["X"])
    broken = np.array(["invalid_output" in r for r in d.reasons])
    assert broken.any()
    assert not (d.actions[broken] == "accept").any()
    assert all(d.predictions[broken] == None)  # noqa: E711  # element-wise
    ok = ~broken  # rows whose output happens to pass decide as the good model does
    np.testing.assert_array_equal(d.actions[ok], good.actions[ok])


def test_lists_of_probabilities_are_accepted(cancer: dict[str, Any]) -> None:
    """A list output in the right shape is valid output, not a contract breach."""
    d = swapped(cancer, lambda p, X: p.tolist()).decide(cancer["X"])
    np.testing.assert_array_equal(d.actions, cancer["good"].decide(cancer["X"]).actions)


def test_raising_on_some_rows_fails_only_those(cancer: dict[str, Any]) -> None:
    def raise_on_negative(p: Any, X: Any) -> Any:
        if (np.asarray(X)[:, 0] < -4).any():
            raise ValueError("cannot score")
        return p

    sp = swapped(cancer, raise_on_negative)
    X = cancer["X"].copy()
    X[[3, 11], 0] = -5.0
    d = sp.decide(X)
    assert [i for i, r in enumerate(d.reasons) if "model_error" in r] == [3, 11]
    assert not any("invalid_output" in r for r in d.reasons)


def test_check_output_tolerance_is_stated_and_enforced() -> None:
    p = np.array([[0.3, 0.7]])
    assert not check_output(p + np.array([[PROBA_SUM_TOL / 4, 0.0]]), "classification")[0]
    assert check_output(p + np.array([[4 * PROBA_SUM_TOL, 0.0]]), "classification")[0]
    assert check_output(np.array([[1.5, -0.5]]), "classification")[0]
    assert check_output(np.array([[np.inf, 0.0]]), "classification")[0]
    float32 = np.full((1, 300), 1 / 300, dtype=np.float32).astype(np.float64)
    assert not check_output(float32, "classification")[0]


@pytest.fixture(scope="module")
def diabetes() -> dict[str, Any]:
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X[:200], y[:200])
    return {"model": model, "X": X[400:420], "X_cal": X[200:400], "y_cal": y[200:400]}


class Shifted:
    """A real fitted regressor whose predictions are replaced on some rows."""

    def __init__(self, model: Any, value: float) -> None:
        self.model = model
        self.value = value

    def predict(self, X: Any) -> Any:
        out = self.model.predict(X)
        out[::2] = self.value
        return out


@pytest.mark.parametrize("value", [1e308, -1e308, 1e300, np.inf, np.nan])
def test_regressor_outputs_whose_interval_collapses_are_invalid(
    diabetes: dict[str, Any], value: float
) -> None:
    sp = SafePredictor(Shifted(diabetes["model"], 0.0), log="off", guards="off")
    sp.calibrate(diabetes["X_cal"], diabetes["y_cal"])
    sp.model = Shifted(diabetes["model"], value)
    d = sp.decide(diabetes["X"])
    assert all("invalid_output" in d.reasons[i] for i in range(0, 20, 2))
    assert not (d.actions[::2] == "accept").any()
    assert np.isnan(d.intervals[::2]).all()
    assert not any("invalid_output" in d.reasons[i] for i in range(1, 20, 2))
    assert (d.actions[1::2] == "accept").all()  # the default fallback tier


def test_run_model_shapes_fall_back_per_row() -> None:
    X = np.zeros((5, 2))
    calls: list[int] = []

    def one_d(rows: Any) -> Any:
        calls.append(len(rows))
        return np.full(len(rows), 0.5)

    out = run_model(one_d, "classification", X, n_classes=2)
    assert out.invalid.all()
    assert calls == [5, 1, 1, 1, 1, 1]  # the batch, then each row on its own
    out = run_model(lambda rows: np.ones((len(rows), 1)), "regression", X)
    assert not out.invalid.any()
    np.testing.assert_array_equal(out.values, np.ones(5))
