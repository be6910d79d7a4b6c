"""Inputs are matched by name, never by position (DESIGN.md trust contract 2; issue 17 item 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import ConfigError, InputSchemaError, SafePredictor


@pytest.fixture(scope="module")
def wine_numpy() -> dict[str, Any]:
    """A classifier fitted on unnamed wine arrays (12+ features: x10 sorts before x2)."""
    X, y = load_wine(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.6, random_state=0)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    return {"model": model, "X_cal": X_cal, "y_cal": y_cal, "X_te": X_te, "X_tr": X_tr}


def routed(data: dict[str, Any], cases: list[dict[str, Any]], **kw: Any) -> SafePredictor:
    sp = SafePredictor(
        data["model"], log="off", log_inputs=True, router=cases.append, random_state=0, **kw
    )
    return sp.calibrate(data["X_cal"], data["y_cal"])


def test_sorted_key_json_round_trip_of_case_inputs_keeps_decisions(wine_numpy: Any) -> None:
    """Issue 17's reproduction: case inputs (x0..x12) after json.dumps(sort_keys=True).

    Sorted keys put x10, x11, x12 before x2; read by position, most predictions
    changed (263 of 400 in the issue). Read by name, every decision is identical.
    """
    cases: list[dict[str, Any]] = []
    sp = routed(
        wine_numpy,
        cases,
        tiers={
            "audit_rate": 1.0,
            "tiers": [
                {"name": "auto", "action": "accept", "min_confidence": 0.9},
                {"name": "human", "action": "review"},
            ],
        },
    )
    X = np.vstack([wine_numpy["X_te"], wine_numpy["X_tr"]])
    first = sp.decide(X)
    assert len(cases) == len(X)  # audit_rate=1: every row is routed, accepted or not
    by_id = {c["decision_id"]: c for c in cases}
    rows = [json.loads(json.dumps(by_id[i]["inputs"], sort_keys=True)) for i in first.decision_ids]
    assert list(rows[0])[:4] == ["x0", "x1", "x10", "x11"]  # the order that broke positions
    again = sp.decide(rows)
    np.testing.assert_array_equal(again.actions, first.actions)
    np.testing.assert_array_equal(again.predictions, first.predictions)
    np.testing.assert_array_equal(again.confidence, first.confidence)
    one = sp.decide_one(rows[3])
    assert (one.action, one.prediction) == (first[3].action, first[3].prediction)
    # negative control: the same values read by position (sorted order) do change predictions
    by_position = np.array([list(r.values()) for r in rows], dtype=float)
    moved = sp.decide(by_position).predictions != first.predictions
    assert moved.sum() > len(X) // 10


def test_unknown_and_missing_keys_raise_naming_them(wine_numpy: Any) -> None:
    sp = SafePredictor(wine_numpy["model"], log="off").calibrate(
        wine_numpy["X_cal"], wine_numpy["y_cal"]
    )
    row = {f"x{j}": float(v) for j, v in enumerate(wine_numpy["X_te"][0])}
    arbitrary = {"a": 1.0, "b": 2.0, "zz0": 3.0}
    with pytest.raises(InputSchemaError) as info:
        sp.decide(arbitrary)
    assert set(info.value.extra) == {"a", "b", "zz0"}
    assert len(info.value.missing) == 13
    renamed = {("x_1" if k == "x1" else k): v for k, v in row.items()}
    with pytest.raises(InputSchemaError, match=r"did you mean 'x1' for 'x_1'\?") as info:
        sp.decide(renamed)
    assert info.value.missing == ("x1",)
    assert info.value.extra == ("x_1",)
    missing = {k: v for k, v in row.items() if k != "x7"}
    with pytest.raises(InputSchemaError, match=r"missing keys \['x7'\]"):
        sp.decide([row, missing])
    with pytest.raises(InputSchemaError, match=r"extra keys \['x13'\]"):
        sp.decide({**row, "x13": 0.0})


def test_frames_are_matched_by_name_on_a_numpy_predictor(wine_numpy: Any) -> None:
    sp = SafePredictor(wine_numpy["model"], log="off").calibrate(
        wine_numpy["X_cal"], wine_numpy["y_cal"]
    )
    X = wine_numpy["X_te"]
    names = [f"x{j}" for j in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names)
    shuffled = frame[sorted(names)]
    base = sp.decide(X)
    np.testing.assert_array_equal(sp.decide(shuffled).predictions, base.predictions)
    np.testing.assert_array_equal(sp.decide(pd.DataFrame(X)).predictions, base.predictions)
    with pytest.raises(InputSchemaError, match="missing columns"):
        sp.decide(pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])]))


def test_feature_names_given_at_calibration(wine_numpy: Any) -> None:
    wine = load_wine()
    names = list(wine.feature_names)
    cases: list[dict[str, Any]] = []
    sp = SafePredictor(
        wine_numpy["model"], log="off", log_inputs=True, router=cases.append, redact=["proline"]
    ).calibrate(wine_numpy["X_cal"], wine_numpy["y_cal"], feature_names=names)
    X = wine_numpy["X_te"]
    base = sp.decide(X)
    records = [dict(zip(reversed(names), reversed(row.tolist()), strict=True)) for row in X]
    np.testing.assert_array_equal(sp.decide(records).predictions, base.predictions)
    assert cases, "some rows are routed"
    assert set(cases[0]["inputs"]) == set(names) - {"proline"}
    with pytest.raises(InputSchemaError, match="missing keys"):
        sp.decide({f"x{j}": 0.0 for j in range(len(names))})
    with pytest.raises(InputSchemaError, match="feature_names must name each"):
        sp.calibrate(wine_numpy["X_cal"], wine_numpy["y_cal"], feature_names=names[:3])


def test_masked_cells_are_missing_values_not_the_values_underneath(wine_numpy: Any) -> None:
    sp = SafePredictor(wine_numpy["model"], log="off").calibrate(
        wine_numpy["X_cal"], wine_numpy["y_cal"]
    )
    X = wine_numpy["X_te"][:20]
    mask = np.zeros(X.shape, dtype=bool)
    mask[::3, 5] = True
    d = sp.decide(np.ma.masked_array(X, mask=mask))
    rows = np.flatnonzero(mask.any(axis=1))
    assert all("missing:x5" in d.reasons[i] for i in rows)
    assert not (d.actions[rows] == "accept").any()
    plain = sp.decide(X)  # negative control: the values underneath would be scored
    assert (plain.actions[rows] == "accept").any()
    keep = np.flatnonzero(~mask.any(axis=1))
    np.testing.assert_array_equal(d.actions[keep], plain.actions[keep])


def test_redact_is_checked_at_construction_set_params_and_load(
    wine_hgb: Any, tmp_path: Path
) -> None:
    model = wine_hgb.model  # fitted on a frame: its feature names are known up front
    with pytest.raises(ConfigError, match="Did you mean 'alcohol'"):
        SafePredictor(model, redact=["alcohl"])
    sp = SafePredictor(model, log="off", redact=["alcohol", 1]).calibrate(
        wine_hgb.X_cal, wine_hgb.y_cal
    )
    with pytest.raises(ConfigError, match="Did you mean 'proline'"):
        sp.set_params(redact=["prolin"])
    with pytest.raises(ConfigError, match="position 99 is out of range"):
        sp.set_params(redact=[99])
    sp.set_params(redact=["proline"])
    path = sp.save(tmp_path / "wine.json")
    with pytest.raises(ConfigError, match="Did you mean 'hue'"):
        SafePredictor.load(path, model=model, redact=["hu"])
    assert list(SafePredictor.load(path, model=model).redact) == ["proline"]
    X = np.arange(90.0).reshape(30, 3)
    y = np.arange(30) % 2
    bare = LogisticRegression().fit(X, y)  # no feature names before calibration: types only
    with pytest.raises(ConfigError, match="column names"):
        SafePredictor(bare, redact="x0")
    with pytest.raises(ConfigError, match="position -1 is out of range"):
        SafePredictor(bare, redact=[-1])
    with pytest.raises(ConfigError, match="Did you mean 'x1'"):
        SafePredictor(bare, log="off", redact=["x_1"]).calibrate(X, y)
