"""N-D array inputs (#19): schema, per-row guards, OOD on a featurizer, events, state.

The model is scikit-learn's MLPClassifier on the bundled 8x8 digits, kept as
``(n, 8, 8)`` arrays and flattened inside the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from safepredict import ConfigError, InputSchemaError, PersistenceError, SafePredictor
from safepredict.guards import ArrayGuards


def flatten(a: Any) -> Any:
    """(n, 8, 8) -> (n, 64): the pipeline's first step."""
    arr = np.asarray(a)
    return arr.reshape(len(arr), -1)


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 8, 8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    tr, cal, te = order[:900], order[900:1400], order[1400:]
    model = make_pipeline(
        FunctionTransformer(flatten),
        MLPClassifier(hidden_layer_sizes=(32,), max_iter=400, random_state=0),
    ).fit(X[tr], y[tr])
    return {"model": model, "cal": (X[cal], y[cal]), "test": (X[te], y[te])}


@pytest.fixture(scope="module")
def array_sp(digits: dict[str, Any]) -> SafePredictor:
    X_cal, y_cal = digits["cal"]
    sp = SafePredictor(digits["model"], log="off", random_state=0, explainer="auto")
    return sp.calibrate(X_cal, y_cal)


def test_array_schema_and_whole_batch_errors(array_sp: SafePredictor) -> None:
    schema = array_sp._schema()
    assert (schema.modality, schema.item_shape, schema.dtype) == ("array", (8, 8), "float64")
    assert isinstance(array_sp.guards_, ArrayGuards)
    assert array_sp.decide_one(np.zeros((8, 8))).action in ("accept", "review", "abstain")
    with pytest.raises(InputSchemaError, match=r"shape \(3, 8, 7\)"):
        array_sp.decide(np.zeros((3, 8, 7)))
    with pytest.raises(InputSchemaError, match="numeric array"):
        array_sp.decide(np.full((2, 8, 8), "a"))
    with pytest.raises(InputSchemaError):
        array_sp.decide(np.zeros((3, 64)))


def test_array_rows_are_guarded_one_by_one(array_sp: SafePredictor, digits: dict[str, Any]) -> None:
    X_te, _ = digits["test"]
    batch = X_te[:4].copy()
    batch[1, 3, 3] = np.nan
    batch[2, 0, 0] = 1e4
    batch[3] = np.random.default_rng(1).uniform(0, 16, size=(8, 8))  # noise, in range
    d = array_sp.decide(batch)
    assert d.reasons[1] == ("non_finite:array",)
    assert d.predictions[1] is None  # never sent to the model
    assert "out_of_range:array" in d.reasons[2]
    assert "ood" in d.reasons[3]
    assert (d.actions[1:] == "abstain").all()


def test_noise_images_are_flagged_ood_and_digits_mostly_pass(
    array_sp: SafePredictor, digits: dict[str, Any]
) -> None:
    noise = np.random.default_rng(2).uniform(0, 16, size=(200, 8, 8))
    assert float(array_sp.guards_.check(noise).rank.astype(bool).mean()) > 0.95
    X_te, _ = digits["test"]
    r = array_sp.guards_.check(X_te)
    assert r.ood is not None
    # held-out digits: the OOD p-values are conformal, so about ood_alpha (0.01) are
    # flagged; 397 rows, so a rate over 0.05 would be > 5 binomial standard errors away
    assert float((r.ood <= 0.01).mean()) < 0.05


def test_integer_arrays_flag_values_their_dtype_cannot_hold(digits: dict[str, Any]) -> None:
    X_cal, y_cal = digits["cal"]
    sp = SafePredictor(digits["model"], log="off", random_state=0)
    sp.calibrate(X_cal.astype(np.uint8), y_cal)
    assert sp._schema().dtype == "uint8"
    batch = X_cal[:3].astype(np.float64)
    batch[1, 2, 2] = 3.5
    d = sp.decide(batch)
    assert d.reasons[1] == ("type:array",)
    assert d.predictions[1] is None
    assert "type:array" not in d.reasons[0]


def test_arrays_get_explanation_skipped_unsupported(
    array_sp: SafePredictor, digits: dict[str, Any]
) -> None:
    noise = np.random.default_rng(3).uniform(0, 16, size=(3, 8, 8))
    d = array_sp.decide(noise)
    assert all("explanation_skipped:unsupported" in why for why in d.reasons)
    X_cal, y_cal = digits["cal"]
    with pytest.raises(ConfigError, match="array inputs have no explainer"):
        SafePredictor(digits["model"], log="off", explainer="tree").calibrate(X_cal, y_cal)


def test_events_hash_arrays_and_round_trip_with_a_featurizer(
    digits: dict[str, Any], tmp_path: Path
) -> None:
    X_cal, y_cal = digits["cal"]
    X_te, _ = digits["test"]
    log = tmp_path / "events.jsonl"

    def featurizer(a: Any) -> Any:  # row sums and column sums: a 16-d embedding
        arr = np.asarray(a, dtype=np.float64)
        return np.hstack([arr.sum(axis=1), arr.sum(axis=2)])

    sp = SafePredictor(digits["model"], logger=log, featurizer=featurizer, random_state=0)
    sp.calibrate(X_cal, y_cal)
    assert sp.guards_.featurizer.kind == "user"
    d = sp.decide(X_te[:20])
    events = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    decisions = [e for e in events if e.get("event") == "safepredict.decision"]
    assert len(decisions) == 20
    assert all("inputs" not in e for e in decisions)
    assert len({e["inputs_hash"] for e in decisions}) == 20
    path = sp.save(tmp_path / "arrays.json")
    with pytest.raises(PersistenceError, match="featurizer"):
        SafePredictor.load(path, model=digits["model"], log="off")
    back = SafePredictor.load(path, model=digits["model"], log="off", featurizer=featurizer)
    d2 = back.decide(X_te[:20])
    assert d2.actions.tolist() == d.actions.tolist()
    assert np.allclose(d2.ood_scores, d.ood_scores, equal_nan=True)
