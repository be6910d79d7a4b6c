"""Property-based suite: containers and shapes crossed with a zoo of misbehaving models.

Issue 17 "Must show": generated dicts (shuffled, renamed, missing, extra keys),
frames (shuffled columns, nullable dtypes), masked arrays, lists, 1-D rows and
batches of 0, 1 or many rows, fed to predictors whose model misbehaves in every
way the issue lists (margins, scaled or NaN probabilities, wrong column count,
1-D output, n +/- 1 rows, ``None``, lists, raising on some rows, inf / huge
regressors). Each generated container is decided by every member of the zoo
(15 classifier, 12 regressor behaviours): 1,000 x 15 + 1,100 x 12 + 2,000 dict
cases = 30,200 generated cases. In every one, ``decide`` either raises a
``SafePredictError`` subclass or returns one decision per row, and no row is
accepted whose model output was invalid or whose input had a missing cell.

Each zoo member states which rows it breaks (``bad``), computed from the inputs
alone, so the check does not trust the library's own verdict.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge

from safepredict import SafePredictError, SafePredictor

#: Hypothesis examples per test (classifier, regressor, dicts); set
#: SAFEPREDICT_PROPERTY_SCALE=10 for a ten times longer search.
SCALE = float(os.environ.get("SAFEPREDICT_PROPERTY_SCALE", "1"))
EXAMPLES = {"clf": int(1000 * SCALE), "reg": int(1100 * SCALE), "dicts": int(2000 * SCALE)}
SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same cases on every run (CI and laptops alike)
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRIGGER = 100.0  # a raising model raises on rows whose first feature exceeds this
SHIFT = np.array([0.5, -0.5, 0.0])  # rows still sum to 1; valid only where p1 >= 0.5


@dataclass(frozen=True)
class Misbehaviour:
    """A model output transform and the rows it makes invalid."""

    transform: Callable[[np.ndarray, np.ndarray], Any]
    bad: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (X, real output) -> row mask


def _all(X: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.ones(len(X), dtype=bool)


def _none(X: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.zeros(len(X), dtype=bool)


def _raise_some(out: np.ndarray, X: np.ndarray) -> Any:
    if (X[:, 0] > TRIGGER).any():
        raise ValueError("cannot score this row")
    return out


def _nan_odd_rows(out: np.ndarray, X: np.ndarray) -> Any:
    out = np.array(out, dtype=float)
    out[(np.floor(X[:, 0]) % 2) == 1] = np.nan
    return out


CLASSIFIER_ZOO = {
    "good": Misbehaviour(lambda p, X: p, _none),
    "lists": Misbehaviour(lambda p, X: p.tolist(), _none),
    "margins": Misbehaviour(
        lambda p, X: np.log(p + 1e-12) - np.log(p + 1e-12).mean(1)[:, None], _all
    ),
    "scaled": Misbehaviour(lambda p, X: 7 * p, _all),
    "shrunk": Misbehaviour(lambda p, X: 0.9 * p, _all),
    "shifted": Misbehaviour(lambda p, X: p + SHIFT, lambda X, p: ((p + SHIFT) < 0).any(1)),
    "nan rows": Misbehaviour(_nan_odd_rows, lambda X, p: (np.floor(X[:, 0]) % 2) == 1),
    "one column too many": Misbehaviour(lambda p, X: np.column_stack([p, p[:, :1] * 0]), _all),
    "one column short": Misbehaviour(lambda p, X: p[:, :2] / p[:, :2].sum(1)[:, None], _all),
    "one-d": Misbehaviour(lambda p, X: p[:, 0], _all),
    "n + 1 rows": Misbehaviour(lambda p, X: np.vstack([p, p[:1]]), _all),
    "n - 1 rows": Misbehaviour(lambda p, X: p[1:], _all),
    "None": Misbehaviour(lambda p, X: None, _all),
    "strings": Misbehaviour(lambda p, X: np.full(p.shape, "p"), _all),
    "raises on some rows": Misbehaviour(_raise_some, lambda X, p: X[:, 0] > TRIGGER),
}
REGRESSOR_ZOO = {
    "good": Misbehaviour(lambda y, X: y, _none),
    "lists": Misbehaviour(lambda y, X: y.tolist(), _none),
    "column": Misbehaviour(lambda y, X: y[:, None], _none),
    "huge": Misbehaviour(lambda y, X: y + 1e308, _all),
    "huge negative": Misbehaviour(lambda y, X: y - 1e300, _all),
    "inf": Misbehaviour(lambda y, X: np.full_like(y, np.inf), _all),
    "nan rows": Misbehaviour(_nan_odd_rows, lambda X, y: (np.floor(X[:, 0]) % 2) == 1),
    "two columns": Misbehaviour(lambda y, X: np.column_stack([y, y]), _all),
    "n + 1 rows": Misbehaviour(lambda y, X: np.append(y, y[:1]), _all),
    "n - 1 rows": Misbehaviour(lambda y, X: y[1:], _all),
    "None": Misbehaviour(lambda y, X: None, _all),
    "raises on some rows": Misbehaviour(_raise_some, lambda X, y: X[:, 0] > TRIGGER),
}


class Zoo:
    """A real fitted linear model (its coefficients, in numpy: cheap) behind a misbehaviour."""

    def __init__(self, model: Any, kind: str) -> None:
        self.coef = np.asarray(model.coef_, dtype=float)
        self.intercept = np.asarray(model.intercept_, dtype=float)
        self.kind = kind
        self.behaviour = (CLASSIFIER_ZOO if kind == "classification" else REGRESSOR_ZOO)["good"]
        if kind == "classification":
            self.classes_ = model.classes_

    def real(self, X: Any) -> np.ndarray:
        """The fitted model's own output (raises on missing values, as sklearn does)."""
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != self.coef.shape[-1] or not np.isfinite(arr).all():
            raise ValueError("Input contains NaN or has the wrong shape")
        if self.kind != "classification":
            return np.asarray(arr @ self.coef + self.intercept)
        logits = arr @ self.coef.T + self.intercept
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def _out(self, X: Any) -> Any:
        return self.behaviour.transform(self.real(X), np.asarray(X, dtype=float))

    def predict_proba(self, X: Any) -> Any:
        return self._out(X)

    def predict(self, X: Any) -> Any:
        return self._out(X)


@pytest.fixture(scope="module")
def predictors() -> dict[str, Any]:
    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(X[::2], y[::2])
    Xr, yr = load_diabetes(return_X_y=True)
    Xr = Xr[:, :4] * 20  # four features on a scale like iris
    reg = Ridge().fit(Xr[::2], yr[::2])
    out: dict[str, Any] = {"X_iris": X, "X_diab": Xr}
    for guards in ("auto", "off"):
        zoo_c = Zoo(clf, "classification")
        out[f"clf-{guards}"] = SafePredictor(zoo_c, log="off", guards=guards).calibrate(
            X[1::2], y[1::2]
        )
        zoo_r = Zoo(reg, "regression")
        out[f"reg-{guards}"] = SafePredictor(zoo_r, log="off", guards=guards).calibrate(
            Xr[1::2], yr[1::2]
        )
    return out


NAMES = ["x0", "x1", "x2", "x3"]


@st.composite
def batches(draw: st.DrawFn, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows near the calibration data (some pushed past the raise trigger) and a missing mask."""
    n = draw(st.sampled_from([0, 1, 1, 2, 3, 5, 8]))
    start = draw(st.integers(0, len(base) - 8))
    rows = base[start : start + n].astype(float)
    if n and draw(st.booleans()):
        rows = rows * draw(st.floats(0.5, 3.0))
    if n and draw(st.integers(0, 4)) == 0:
        rows[draw(st.integers(0, n - 1)), 0] = TRIGGER + 1 + draw(st.floats(0, 10))
    missing = np.zeros(rows.shape, dtype=bool)
    if n and draw(st.integers(0, 3)) == 0:
        missing[draw(st.integers(0, n - 1)), draw(st.integers(0, 3))] = True
    return rows, missing


def containers(rows: np.ndarray, missing: np.ndarray, kind: str, draw: st.DrawFn) -> Any:
    """The batch in one of the containers callers send."""
    with_nan = np.where(missing, np.nan, rows)
    order = draw(st.permutations(NAMES))
    if kind == "array":
        return with_nan
    if kind == "masked":
        return np.ma.masked_array(rows, mask=missing)
    if kind == "list":
        return [[None if np.isnan(v) else float(v) for v in r] for r in with_nan]
    if kind == "frame":
        return pd.DataFrame(with_nan, columns=NAMES)[list(order)]
    if kind == "nullable frame":
        frame = pd.DataFrame(with_nan, columns=NAMES).astype("Float64")
        return frame.mask(pd.DataFrame(missing, columns=NAMES))[list(order)]
    if kind == "dicts":
        cols = [NAMES.index(k) for k in order]
        return [
            {NAMES[j]: (None if missing[i, j] else float(rows[i, j])) for j in cols}
            for i in range(len(rows))
        ]
    if kind == "row" and len(rows) == 1:
        return with_nan[0]
    return with_nan


def check_case(
    sp: SafePredictor, X: Any, rows: np.ndarray, missing: np.ndarray, bad: np.ndarray
) -> None:
    try:
        d = sp.decide(X)
    except SafePredictError:
        return
    assert len(d) == len(rows)
    accepted = d.actions == "accept"
    assert not (accepted & bad).any(), "an invalid model output was accepted"
    assert not (accepted & missing.any(axis=1)).any(), "a row with a missing cell was accepted"


KINDS = ["array", "masked", "list", "frame", "nullable frame", "dicts", "row"]


def _run(predictors: dict[str, Any], task: str, data: st.DataObject) -> None:
    """One generated container, decided by every member of the zoo (one case each)."""
    zoo = CLASSIFIER_ZOO if task == "classification" else REGRESSOR_ZOO
    key = "clf" if task == "classification" else "reg"
    guards = data.draw(st.sampled_from(["auto", "off"]))
    sp = predictors[f"{key}-{guards}"]
    rows, missing = data.draw(batches(predictors["X_iris" if key == "clf" else "X_diab"]))
    kind = data.draw(st.sampled_from(KINDS))
    X = containers(rows, missing, kind, data.draw)
    real = sp.model.real(np.where(missing, 0.0, rows)) if len(rows) else None
    for name in sorted(zoo):
        behaviour = zoo[name]
        sp.model.behaviour = behaviour
        bad = behaviour.bad(rows, real) if len(rows) else np.zeros(0, dtype=bool)
        check_case(sp, X, rows, missing, bad)


@settings(SETTINGS, max_examples=EXAMPLES["clf"])
@given(data=st.data())
def test_classifier_zoo_never_accepts_invalid_rows(
    predictors: dict[str, Any], data: st.DataObject
) -> None:
    _run(predictors, "classification", data)


@settings(SETTINGS, max_examples=EXAMPLES["reg"])
@given(data=st.data())
def test_regressor_zoo_never_accepts_invalid_rows(
    predictors: dict[str, Any], data: st.DataObject
) -> None:
    _run(predictors, "regression", data)


@st.composite
def keyed_rows(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str]:
    """Dicts with shuffled, renamed, missing or extra keys (and what was done)."""
    n = draw(st.integers(1, 4))
    change = draw(st.sampled_from(["shuffled", "renamed", "missing", "extra", "numeric keys"]))
    values = draw(st.lists(st.floats(-5, 10), min_size=4 * n, max_size=4 * n))
    out = []
    for i in range(n):
        keys = list(draw(st.permutations(NAMES)))
        row = dict(zip(keys, values[4 * i : 4 * i + 4], strict=True))
        if change == "renamed" and i == n - 1:
            old = draw(st.sampled_from(NAMES))
            row[draw(st.sampled_from(["X" + old[1:], old + " ", "x" + old, "a", "zz0"]))] = row.pop(
                old
            )
        elif change == "missing" and i == n - 1:
            row.pop(draw(st.sampled_from(NAMES)))
        elif change == "extra" and i == n - 1:
            row[draw(st.sampled_from(["x4", "x10", "y", "id"]))] = 0.0
        elif change == "numeric keys":
            row = {int(k[1:]): v for k, v in row.items()}
        out.append(row)
    return out, change


@settings(SETTINGS, max_examples=EXAMPLES["dicts"])
@given(case=keyed_rows(), guards=st.sampled_from(["auto", "off"]))
def test_dict_keys_are_matched_by_name(predictors: dict[str, Any], case: Any, guards: str) -> None:
    rows, change = case
    sp = predictors[f"clf-{guards}"]
    sp.model.behaviour = CLASSIFIER_ZOO["good"]
    if change == "shuffled":
        arr = np.array([[r[k] for k in NAMES] for r in rows])
        got, want = sp.decide(rows), sp.decide(arr)
        assert np.array_equal(got.actions, want.actions)
        assert np.array_equal(got.confidence, want.confidence, equal_nan=True)
        return
    with pytest.raises(SafePredictError):  # InputSchemaError naming the keys
        sp.decide(rows)
