"""Save/load as plain JSON: identical decisions, clear errors, nothing executed on load."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge

import safepredict as sp
from safepredict.conformal import ClassificationConformal, RegressionConformal
from safepredict.ood import KnnDetector, MarginalScores
from safepredict.persistence import SCHEMA_VERSION, raw_row_parts
from safepredict.tiers import TierCalibration

CLASSIFICATION_POLICIES: dict[str, Any] = {
    "default": None,
    "confidence": {
        "audit_rate": 0.3,
        "tiers": [
            {"name": "auto", "action": "accept", "min_confidence": 0.95},
            {"name": "pair", "action": "review", "max_set_size": 2},
            {"name": "human", "action": "abstain"},
        ],
    },
    "risk": {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.1},
            {"name": "human", "action": "review"},
        ],
    },
}
REGRESSION_POLICIES: dict[str, Any] = {
    "default": None,
    "width": {
        "audit_rate": 0.5,
        "tiers": [
            {"name": "narrow", "action": "accept", "max_interval_width": 150.0},
            {"name": "human", "action": "review"},
        ],
    },
}


def _strip_ids(decisions: sp.Decisions) -> list[dict[str, Any]]:
    out = []
    for d in decisions:
        row = d.to_dict()
        row.pop("decision_id")
        out.append(row)
    return out


def _assert_same_decisions(a: sp.Decisions, b: sp.Decisions) -> None:
    assert _strip_ids(a) == _strip_ids(b)
    frame_a = a.to_frame().drop(columns="decision_id")
    frame_b = b.to_frame().drop(columns="decision_id")
    pd.testing.assert_frame_equal(frame_a, frame_b)


def _rechecksum(doc: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in doc.items() if k != "checksum"}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    doc["checksum"] = {"algorithm": "sha256", "value": hashlib.sha256(blob.encode()).hexdigest()}
    return doc


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize("policy", sorted(CLASSIFICATION_POLICIES))
@pytest.mark.parametrize("fixture", ["iris_lr", "wine_hgb", "cancer_lr"])
def test_round_trip_classification_identical(
    request: pytest.FixtureRequest, fixture: str, policy: str, tmp_path: Path
) -> None:
    split = request.getfixturevalue(fixture)
    original = sp.SafePredictor(
        split.model, tiers=CLASSIFICATION_POLICIES[policy], log="off", model_name="m"
    ).calibrate(split.X_cal, split.y_cal)
    path = original.save(tmp_path / "cal.json")
    loaded = sp.SafePredictor.load(path, model=split.model)
    _assert_same_decisions(original.decide(split.X_test), loaded.decide(split.X_test))
    # numpy rows for a predictor calibrated on a DataFrame (and the reverse shape).
    X_np = np.asarray(split.X_test)
    _assert_same_decisions(original.decide(X_np), loaded.decide(X_np))
    assert loaded.summary() == original.summary()
    assert loaded.get_params()["model_name"] == "m"
    np.testing.assert_array_equal(
        loaded.conformal_.calibration_scores, original.conformal_.calibration_scores
    )


@pytest.mark.parametrize("policy", sorted(REGRESSION_POLICIES))
@pytest.mark.parametrize("fixture", ["diabetes_rf", "diabetes_ridge"])
def test_round_trip_regression_identical(
    request: pytest.FixtureRequest, fixture: str, policy: str, tmp_path: Path
) -> None:
    split = request.getfixturevalue(fixture)
    original = sp.SafePredictor(
        split.model, tiers=REGRESSION_POLICIES[policy], log="off", confidence_level=0.8
    ).calibrate(split.X_cal, split.y_cal)
    loaded = sp.SafePredictor.load(original.save(tmp_path / "cal.json"), model=split.model)
    a, b = original.decide(split.X_test), loaded.decide(split.X_test)
    _assert_same_decisions(a, b)
    np.testing.assert_array_equal(a.intervals, b.intervals)
    if isinstance(split.X_test, pd.DataFrame):  # columns in another order are reordered
        shuffled = split.X_test[list(reversed(split.X_test.columns))]
        _assert_same_decisions(original.decide(shuffled), loaded.decide(shuffled))


def test_file_is_plain_strict_json_with_versions(iris_lr: Any, tmp_path: Path) -> None:
    routed: list[Any] = []
    predictor = sp.SafePredictor(iris_lr.model, log="off", router=routed.append).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    # Non-finite and per-class thresholds must survive as strict JSON.
    predictor.tier_calibration_ = TierCalibration(
        thresholds={"auto": float("inf"), "pair": np.array([0.5, np.inf, 0.75])},
        report={"auto": {"n": np.int64(3), "bound": np.float64(0.25)}},
    )
    path = predictor.save(tmp_path / "cal.json")
    with path.open() as fh:
        doc = json.load(fh)

    def no_constants(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    json.loads(path.read_text(), parse_constant=no_constants)
    assert doc["format"] == "safepredict.calibration"
    assert doc["schema_version"] == SCHEMA_VERSION == "1.1"
    assert doc["raw_rows"] == []  # nothing opted in to storing rows
    assert set(doc["versions"]) >= {"safepredict", "numpy", "scikit-learn", "mapie", "python"}
    assert doc["versions"]["safepredict"] == sp.__version__
    assert doc["model"]["n_features"] == 4
    assert doc["model"]["classes"]["values"] == [0, 1, 2]
    assert doc["fitted"]["calibration_id_"] == predictor.calibration_id_
    body = {k: v for k, v in doc.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert doc["checksum"]["value"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert "router" in doc["params_not_saved"]
    # No calibration row is stored: none of the calibration values appears in the file.
    text = path.read_text()
    assert str(float(iris_lr.X_cal[0, 0] * 1.0001)) not in text
    loaded = sp.SafePredictor.load(path, model=iris_lr.model)
    assert loaded.router is None  # callables are not saved: pass them again to load()
    assert sp.SafePredictor.load(path, model=iris_lr.model, router=routed.append).router is not None
    assert loaded.tier_calibration_.thresholds["auto"] == float("inf")
    np.testing.assert_array_equal(loaded.tier_calibration_.thresholds["pair"], [0.5, np.inf, 0.75])
    assert loaded.tier_calibration_.report == {"auto": {"n": 3, "bound": 0.25}}


def test_state_objects_round_trip_and_pickle(iris_lr: Any, diabetes_ridge: Any) -> None:
    clf = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    reg = sp.SafePredictor(diabetes_ridge.model, log="off").calibrate(
        diabetes_ridge.X_cal, diabetes_ridge.y_cal
    )
    for obj, kind in (
        (clf.conformal_, ClassificationConformal),
        (reg.conformal_, RegressionConformal),
    ):
        state = obj.to_state()
        json.dumps(state, allow_nan=False)
        back = kind.from_state(json.loads(json.dumps(state)))
        np.testing.assert_array_equal(back.calibration_scores, obj.calibration_scores)
        assert back.quantile == obj.quantile
        assert back.method == obj.method
        again = pickle.loads(pickle.dumps(back))
        assert again.quantile == obj.quantile
    back_c = ClassificationConformal.from_state(clf.conformal_.to_state())
    assert back_c.classes.dtype == clf.conformal_.classes.dtype


# ---------------------------------------------------------------- errors
@pytest.fixture
def saved(iris_lr: Any, tmp_path: Path) -> tuple[Any, Path, dict[str, Any]]:
    predictor = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    path = predictor.save(tmp_path / "cal.json")
    return iris_lr, path, json.loads(path.read_text())


def test_missing_file(tmp_path: Path, iris_lr: Any) -> None:
    with pytest.raises(sp.PersistenceError, match="no calibration file"):
        sp.SafePredictor.load(tmp_path / "nope.json", model=iris_lr.model)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x80\x81 not text", "not valid JSON"),
        (b"model = pickle", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"[1, 2, 3]", "not a safepredict calibration file"),
        (b'{"format": "joblib"}', "not a safepredict calibration file"),
    ],
)
def test_not_a_safepredict_file(tmp_path: Path, iris_lr: Any, content: bytes, match: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(sp.PersistenceError, match=match):
        sp.SafePredictor.load(path, model=iris_lr.model)


def test_other_major_schema_version(saved: Any, tmp_path: Path) -> None:
    split, _, doc = saved
    doc["schema_version"] = "2.0"
    path = _write(tmp_path / "v2.json", _rechecksum(doc))
    with pytest.raises(sp.PersistenceError, match=r"schema_version '2.0'.*reads 1.x"):
        sp.SafePredictor.load(path, model=split.model)
    doc["schema_version"] = "1.7"  # a newer minor version of the same major still loads
    sp.SafePredictor.load(_write(tmp_path / "v17.json", _rechecksum(doc)), model=split.model)


def test_inconsistent_conformal_state_is_refused(saved: Any, tmp_path: Path) -> None:
    split, _, doc = saved
    bad = copy.deepcopy(doc)
    bad["state"]["conformal_"]["state"]["method"] = "aps"  # file says "lac" elsewhere
    with pytest.raises(sp.PersistenceError, match="inconsistent"):
        sp.SafePredictor.load(_write(tmp_path / "m.json", _rechecksum(bad)), model=split.model)
    bad = copy.deepcopy(doc)
    bad["fitted"]["task_"] = "regression"
    bad["model"]["classes"] = bad["model"]["probe_sha256"] = None  # a consistent fingerprint
    with pytest.raises(sp.PersistenceError, match="needs a RegressionConformal"):
        sp.SafePredictor.load(_write(tmp_path / "t.json", _rechecksum(bad)), model=split.model)


def test_tampered_checksum(saved: Any, tmp_path: Path) -> None:
    split, _, doc = saved
    doc["state"]["conformal_"]["state"]["quantile"] = 1.0  # accept everything
    with pytest.raises(sp.PersistenceError, match="checksum mismatch"):
        sp.SafePredictor.load(_write(tmp_path / "t.json", doc), model=split.model)
    del doc["checksum"]
    with pytest.raises(sp.PersistenceError, match="no checksum"):
        sp.SafePredictor.load(_write(tmp_path / "t2.json", doc), model=split.model)


def test_different_model_is_refused_naming_the_difference(
    saved: Any, wine_hgb: Any, cancer_lr: Any
) -> None:
    split, path, _ = saved
    with pytest.raises(sp.PersistenceError, match=r"n_features_in_: saved 4, given 30"):
        sp.SafePredictor.load(path, model=cancer_lr.model)
    with pytest.raises(sp.PersistenceError, match="model class"):
        sp.SafePredictor.load(path, model=wine_hgb.model)
    X, y = load_iris(return_X_y=True)
    two_class = clone(split.model).fit(X[y < 2], y[y < 2])
    with pytest.raises(sp.PersistenceError, match=r"classes: saved \[0, 1, 2\], given \[0, 1\]"):
        sp.SafePredictor.load(path, model=two_class)
    refit = clone(split.model).fit(X[::2], y[::2])  # same schema, other weights
    with pytest.raises(sp.PersistenceError, match="probe rows"):
        sp.SafePredictor.load(path, model=refit)
    assert sp.SafePredictor.load(path, model=refit, verify_model=False).task_ == "classification"


def test_feature_name_mismatch(wine_hgb: Any, tmp_path: Path) -> None:
    predictor = sp.SafePredictor(wine_hgb.model, log="off").calibrate(
        wine_hgb.X_cal, wine_hgb.y_cal
    )
    path = predictor.save(tmp_path / "w.json")
    renamed = wine_hgb.X_train.rename(columns={"alcohol": "ethanol"})
    other = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(
        renamed, wine_hgb.y_train
    )
    with pytest.raises(sp.PersistenceError, match=r"missing \['alcohol'\], extra \['ethanol'\]"):
        sp.SafePredictor.load(path, model=other)


def test_load_params(saved: Any) -> None:
    split, path, _ = saved
    loaded = sp.SafePredictor.load(path, model=split.model, model_version="v9", log="summary")
    assert loaded.model_version == "v9"
    assert loaded.log == "summary"
    with pytest.raises(sp.ConfigError, match="confidence_level"):
        sp.SafePredictor.load(path, model=split.model, confidence_level=0.5)
    with pytest.raises(sp.PersistenceError, match="pass the fitted model"):
        sp.SafePredictor.load(path)


def test_save_errors(iris_lr: Any, tmp_path: Path) -> None:
    with pytest.raises(sp.NotCalibratedError, match=r"before save\(\)"):
        sp.SafePredictor(iris_lr.model).save(tmp_path / "x.json")
    predictor = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    with pytest.raises(sp.PersistenceError, match="does not exist; create it"):
        predictor.save(tmp_path / "no" / "such" / "x.json")


def test_signed_file(iris_lr: Any, tmp_path: Path) -> None:
    predictor = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    signed = predictor.save(tmp_path / "s.json", key="s3cret")
    plain = predictor.save(tmp_path / "p.json")
    with pytest.raises(sp.PersistenceError, match="is signed"):
        sp.SafePredictor.load(signed, model=iris_lr.model)
    with pytest.raises(sp.PersistenceError, match="checksum mismatch"):
        sp.SafePredictor.load(signed, model=iris_lr.model, key="wrong")
    with pytest.raises(sp.PersistenceError, match="not signed"):
        sp.SafePredictor.load(plain, model=iris_lr.model, key="s3cret")
    # Anyone can recompute a plain SHA-256, but not the HMAC without the key.
    doc = _rechecksum(json.loads(signed.read_text()))
    with pytest.raises(sp.PersistenceError, match="not signed"):
        sp.SafePredictor.load(
            _write(tmp_path / "forged.json", doc), model=iris_lr.model, key="s3cret"
        )
    loaded = sp.SafePredictor.load(signed, model=iris_lr.model, key=b"s3cret")
    _assert_same_decisions(predictor.decide(iris_lr.X_test), loaded.decide(iris_lr.X_test))


# ---------------------------------------------------------------- never execute
EVIL_STRINGS = [
    "evil_mod.boom",
    "evil_mod:boom",
    "__import__('evil_mod')",
    "os.system",
    "posix.system",
    "__reduce__",
    "antigravity",
    "builtins.eval",
]


def _evil_variants(doc: dict[str, Any]) -> list[dict[str, Any]]:
    variants = []

    def variant(edit: Any) -> None:
        d = copy.deepcopy(doc)
        edit(d)
        variants.append(_rechecksum(d))

    for s in EVIL_STRINGS:
        variant(lambda d, s=s: d["model"].__setitem__("class", s))
        variant(lambda d, s=s: d["state"]["conformal_"].__setitem__("type", s))
        variant(lambda d, s=s: d["state"].__setitem__(s, {"type": s, "state": {}}))
        variant(lambda d, s=s: d["params"].__setitem__("model_name", s))
        variant(lambda d, s=s: d["params"].__setitem__(s, s))
        variant(lambda d, s=s: d["policy"]["tiers"][0].__setitem__("name", s))
        variant(lambda d, s=s: d["model"]["classes"].__setitem__("dtype", s))
        variant(lambda d, s=s: d["state"]["conformal_"]["state"].__setitem__("method", s))
        variant(lambda d, s=s: d["model"].__setitem__("file", {"format": "skops", "file": s}))
        variant(lambda d, s=s: d["fitted"].__setitem__("task_", s))
        variant(
            lambda d, s=s: d["state"]["conformal_"]["state"].__setitem__("quantile", {"$float": s})
        )
        variant(lambda d, s=s: d.__setitem__("__reduce__", [s, [s]]))
    variant(lambda d: d["model"].__setitem__("file", {"format": "skops", "file": "../evil_mod.py"}))
    variant(lambda d: d["model"].__setitem__("file", {"format": "pickle", "file": "evil_mod.py"}))
    return variants


def test_loading_never_imports_or_executes_code_named_in_the_file(
    saved: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split, _, doc = saved
    sentinel = tmp_path / "PWNED"
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    (evil_dir / "evil_mod.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('x')\n"
        "def boom(*a, **k):\n    pathlib.Path(" + repr(str(sentinel)) + ").write_text('boom')\n"
    )
    # The evil module sits next to the calibration files too (a referenced "model file").
    (tmp_path / "evil_mod.py").write_text((evil_dir / "evil_mod.py").read_text())
    monkeypatch.syspath_prepend(str(evil_dir))
    before = set(sys.modules)
    outcomes = {"loaded": 0, "refused": 0}
    for i, variant in enumerate(_evil_variants(doc)):
        path = _write(tmp_path / f"evil{i}.json", variant)
        try:
            loaded = sp.SafePredictor.load(path, model=split.model)
        except sp.PersistenceError:
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
            loaded.decide(split.X_test[:3])
        # Without model=, load follows the file's model reference (a skops file only).
        with contextlib.suppress(sp.PersistenceError):
            sp.SafePredictor.load(path)
    new_modules = set(sys.modules) - before
    assert not sentinel.exists()
    assert not {"evil_mod", "antigravity", "this"} & set(sys.modules)
    assert not any("evil" in m for m in new_modules)
    # Both paths were exercised: harmless strings load, structural ones are refused.
    assert outcomes["loaded"] >= len(EVIL_STRINGS)
    assert outcomes["refused"] >= 5 * len(EVIL_STRINGS)


# ---------------------------------------------------------------- skops
def test_skops_model_round_trip(iris_lr: Any, tmp_path: Path) -> None:
    predictor = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    path = predictor.save(tmp_path / "iris.json", model="skops")
    assert (tmp_path / "iris.skops").is_file()
    loaded = sp.SafePredictor.load(path)
    _assert_same_decisions(predictor.decide(iris_lr.X_test), loaded.decide(iris_lr.X_test))


def test_skops_untrusted_types_refused_unless_trusted(wine_hgb: Any, tmp_path: Path) -> None:
    predictor = sp.SafePredictor(wine_hgb.model, log="off").calibrate(
        wine_hgb.X_cal, wine_hgb.y_cal
    )
    path = predictor.save(tmp_path / "wine.json", model="skops")
    tree = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    with pytest.raises(sp.PersistenceError, match=f"does not trust by default: \\['{tree}'\\]"):
        sp.SafePredictor.load(path)
    loaded = sp.SafePredictor.load(path, trusted=[tree])
    _assert_same_decisions(predictor.decide(wine_hgb.X_test), loaded.decide(wine_hgb.X_test))


def test_skops_model_file_checked(iris_lr: Any, tmp_path: Path) -> None:
    predictor = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    path = predictor.save(tmp_path / "iris.json", model="skops")
    other = sp.SafePredictor(Ridge(), log="off")
    model_file = tmp_path / "iris.skops"
    import skops.io as sio

    sio.dump(LogisticRegression().fit(iris_lr.X_train, iris_lr.y_train), model_file)
    with pytest.raises(sp.PersistenceError, match="replaced or modified"):
        sp.SafePredictor.load(path)
    model_file.unlink()
    with pytest.raises(sp.PersistenceError, match="does not exist"):
        sp.SafePredictor.load(path)
    with pytest.raises(sp.ConfigError, match="joblib"):
        predictor.save(tmp_path / "x.json", model="joblib")
    assert other.model is not None


# ---------------------------------------------------------------- async
class _ThreadRecordingModel:
    """A real fitted classifier that records which thread scores each batch."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_
        self.threads: list[int] = []

    def predict_proba(self, X: Any) -> Any:
        self.threads.append(threading.get_ident())
        return self.model.predict_proba(X)


def test_adecide_runs_off_the_event_loop(iris_lr: Any) -> None:
    model = _ThreadRecordingModel(iris_lr.model)
    predictor = sp.SafePredictor(model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    model.threads.clear()

    async def main() -> tuple[int, list[sp.Decisions]]:
        loop_thread = threading.get_ident()
        batches = await asyncio.gather(*(predictor.adecide(iris_lr.X_test) for _ in range(4)))
        return loop_thread, list(batches)

    loop_thread, batches = asyncio.run(main())
    assert len(model.threads) == 4
    assert loop_thread not in model.threads
    expected = predictor.decide(iris_lr.X_test)
    for batch in batches:
        _assert_same_decisions(batch, expected)

    async def failing() -> None:
        await predictor.adecide(np.zeros((2, 7)))

    with pytest.raises(sp.InputSchemaError, match="7 features"):
        asyncio.run(failing())


# ---------------------------------------------------------------- new components
class _RangeState:
    """A small fitted object following the to_state/from_state protocol (like the guards)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low, self.high = low, high

    def to_state(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _RangeState:
        return cls(np.asarray(state["low"], dtype=float), np.asarray(state["high"], dtype=float))


def test_registering_a_component_is_one_line(
    iris_lr: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safepredict import persistence

    predictor = sp.SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    plain = predictor.save(tmp_path / "plain.json")
    extra = persistence.Component("ranges_", {"_RangeState": _RangeState.from_state})
    monkeypatch.setattr(persistence, "COMPONENTS", (*persistence.COMPONENTS, extra))
    # Absent -> saved as null, restored as None.
    assert (
        json.loads(predictor.save(tmp_path / "none.json").read_text())["state"]["ranges_"] is None
    )
    assert sp.SafePredictor.load(tmp_path / "none.json", model=iris_lr.model).ranges_ is None
    predictor.ranges_ = _RangeState(iris_lr.X_cal.min(axis=0), iris_lr.X_cal.max(axis=0))
    path = predictor.save(tmp_path / "ranges.json")
    loaded = sp.SafePredictor.load(path, model=iris_lr.model)
    np.testing.assert_array_equal(loaded.ranges_.low, predictor.ranges_.low)
    np.testing.assert_array_equal(loaded.ranges_.high, predictor.ranges_.high)
    # Files written before the component existed still load.
    assert sp.SafePredictor.load(plain, model=iris_lr.model).ranges_ is None
    # A version that does not know the component refuses the file instead of half-loading it.
    monkeypatch.setattr(persistence, "COMPONENTS", persistence.COMPONENTS[:-1])
    with pytest.raises(sp.PersistenceError, match=r"fitted state \['ranges_'\]"):
        sp.SafePredictor.load(path, model=iris_lr.model)
    # An object whose to_state is not JSON-safe is refused at save time.
    monkeypatch.setattr(persistence, "COMPONENTS", (*persistence.COMPONENTS, extra))
    predictor.ranges_ = _RangeState(np.array([object()]), np.array([1.0]))
    with pytest.raises(sp.PersistenceError, match=r"state.ranges_.low\[0\]: to_state\(\) must"):
        predictor.save(tmp_path / "bad.json")


def test_group_thresholds_and_ranking_keys_round_trip(tmp_path: Path) -> None:
    """Per-group thresholds, tie-breaking keys and min_credibility survive save/load (#18)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=3000, n_features=5, n_informative=4, n_redundant=0, class_sep=2.0,
        flip_y=0.0, random_state=3,
    )  # fmt: skip
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    frame["site"] = np.where(X[:, 1] > 0, "north", "south")
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0)
    model.fit(frame.iloc[:1000].drop(columns="site"), y[:1000])
    wrapped = sp.SafePredictor(
        _Columns(model),
        tiers={
            "delta": 0.1,
            "tiers": [
                {"name": "auto", "action": "accept", "max_error": 0.03, "group_by": "site"},
                {"name": "check", "action": "review", "min_credibility": 0.1},
                {"name": "human", "action": "abstain"},
            ],
        },
        guards="off",
        log="off",
    ).calibrate(frame.iloc[1000:2000], y[1000:2000])
    assert set(wrapped.tier_calibration_.keys["auto"]) == {"north", "south"}
    loaded = sp.SafePredictor.load(wrapped.save(tmp_path / "cal.json"), model=_Columns(model))
    for name, key in wrapped.tier_calibration_.keys["auto"].items():
        np.testing.assert_array_equal(loaded.tier_calibration_.keys["auto"][name], key)
    test = frame.iloc[2000:]
    np.testing.assert_array_equal(loaded.decide(test).tiers, wrapped.decide(test).tiers)


class _Columns:
    """A fitted classifier that ignores the group column (it is not a model feature)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict_proba(self, X: Any) -> Any:
        return self.model.predict_proba(X.drop(columns="site"))


# ------------------------------------------------------------------ privacy: no stored rows
def _number(v: Any) -> float | None:
    """A JSON number of the saved file (non-finite floats are saved as {"$float": ...})."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, dict) and set(v) == {"$float"}:
        return float(v["$float"])
    return None


def _numbers(v: Any) -> np.ndarray | None:
    if not isinstance(v, list) or len(v) < 2:
        return None
    out = [_number(x) for x in v]
    return None if any(x is None for x in out) else np.array(out, dtype=np.float64)


def _stored_vectors(
    doc: Any, names: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray], list[Any]]:
    """Every numeric vector of length >= 2 in a saved file: lists, rows and columns of
    matrices, rows of column-wise tables (dicts of equal-length lists, columns in the
    order of ``names`` when keyed by feature name); plus the lists that are not part of
    a matrix (candidate centers/scales) and every stored transform."""
    vectors: list[np.ndarray] = []
    singles: list[np.ndarray] = []
    transforms: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "transform" in node and isinstance(node["transform"], dict):
                transforms.append(MarginalScores.from_state(node["transform"]))
            if "knots" in node and "normal_scores" in node:  # the kNN opt-in, 0.1.0 files
                transforms.append(KnnDetector.from_state(node))
            keys = [k for k in names if k in node] if set(node) <= set(names) else list(node)
            cols = [c for c in (_numbers(node[k]) for k in keys) if c is not None]
            if len(cols) >= 2 and len({len(c) for c in cols}) == 1:
                vectors.extend(np.array(cols).T)
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            flat = _numbers(node)
            if flat is not None:
                vectors.append(flat)
                singles.append(flat)
                return
            rows = [r for r in (_numbers(x) for x in node) if r is not None]
            if len(rows) == len(node) >= 2 and len({len(r) for r in rows}) == 1:
                matrix = np.array(rows)
                vectors.extend(matrix)
                vectors.extend(matrix.T)
                return
            for v in node:
                visit(v)

    visit(doc)
    return vectors, singles, transforms


def _inverse(transform: Any, v: np.ndarray) -> np.ndarray:
    if isinstance(transform, MarginalScores):
        return transform.inverse(v)
    # the kNN quantile map: piecewise linear inside its knots, logarithmic beyond
    t = transform
    inside = np.array(
        [np.interp(v[j], t.normal_scores[:, j], t.knots[:, j]) for j in range(len(v))]
    )
    with np.errstate(over="ignore"):  # a far-out candidate inverts to inf: no match
        below = t._first_x - t.tail_scale * np.expm1(np.maximum(t._first_z - v, 0.0))
        above = t._last_x + t.tail_scale * np.expm1(np.maximum(v - t._last_z, 0.0))
    return np.where(v < t._first_z, below, np.where(v > t._last_z, above, inside))


def _matching_rows(rows: np.ndarray, candidates: list[np.ndarray]) -> set[int]:
    """Rows of which some candidate equals the whole row or a run of its cells (rtol 1e-6).

    Memory-bounded: per window start, the rows are sorted by their first cell, each
    candidate's first value is located with a binary search and only those rows are
    compared in full.
    """
    d = rows.shape[1]
    order = np.argsort(rows, axis=0, kind="stable")
    sorted_cols = np.take_along_axis(rows, order, axis=0)
    by_length: dict[int, list[np.ndarray]] = {}
    for v in candidates:
        if 2 <= len(v) <= d and np.isfinite(v).all():
            by_length.setdefault(len(v), []).append(v)
    found: set[int] = set()
    for n, group in by_length.items():
        V = np.array(group)
        tol = 1e-6 * np.abs(V[:, 0])
        for start in range(d - n + 1):
            col = sorted_cols[:, start]
            lo = np.searchsorted(col, V[:, 0] - tol, side="left")
            hi = np.searchsorted(col, V[:, 0] + tol, side="right")
            for k in np.flatnonzero(hi > lo):
                idx = order[lo[k] : hi[k], start]
                window = rows[idx, start : start + n]
                close = np.isclose(window, V[k][None, :], rtol=1e-6, atol=0.0).all(axis=1)
                found.update(idx[close].tolist())
    return found


def _leaked_rows(path: Path, rows: np.ndarray) -> set[int]:
    """Indices of ``rows`` that some stored vector equals or approximates (rtol 1e-6),
    directly, through a stored invertible transform, or scaled by a stored center/scale."""
    d = rows.shape[1]
    names = [f"x{j}" for j in range(d)]
    vectors, singles, transforms = _stored_vectors(json.loads(path.read_text()), names)
    full = [v for v in vectors if len(v) == d]
    candidates = list(vectors)
    for t in transforms:  # invertible-transform attack
        candidates += [_inverse(t, v) for v in full]
    scales = [s for s in singles if len(s) == d]
    for center in scales:  # center/scale attack
        for scale in scales:
            candidates += [v * scale + center for v in full]
    return _matching_rows(rows, candidates)


@pytest.fixture(scope="module")
def cancer_privacy() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_cal, y_tr, y_cal = train_test_split(X, y, test_size=0.4, random_state=0)
    model = LogisticRegression(max_iter=5000).fit(X_tr, y_tr)
    return {"model": model, "X_tr": X_tr, "X_cal": X_cal, "y_cal": y_cal}


def test_saved_state_holds_no_reference_or_calibration_row(
    cancer_privacy: dict[str, Any], tmp_path: Path
) -> None:
    c = cancer_privacy
    rows = np.vstack([c["X_tr"], c["X_cal"]])
    predictor = sp.SafePredictor(c["model"], explainer="auto", log="off", random_state=0)
    predictor.calibrate(c["X_cal"], c["y_cal"], reference=c["X_tr"])
    assert predictor.explainer_ is not None
    predictor.decide(c["X_cal"][:3] * 1.3)  # explainer built: its state is final
    path = predictor.save(tmp_path / "private.json")
    doc = json.loads(path.read_text())
    assert doc["raw_rows"] == []
    assert _leaked_rows(path, rows) == set()
    # the explainer keeps weighted centroids of >= 20 calibration rows each
    state = doc["state"]["explainer_"]["state"]
    assert state["background_kind"] == "kmeans"
    assert min(state["background_weights"]) >= 20
    assert sum(state["background_weights"]) == len(c["X_cal"])
    # negative control: the opt-ins store rows, and the same search finds them
    opted = sp.SafePredictor(
        c["model"],
        explainer="auto",
        explainer_background="sample",
        guards=sp.GuardConfig(ood_method="knn"),
        log="off",
        random_state=0,
    ).calibrate(c["X_cal"], c["y_cal"], reference=c["X_tr"])
    raw = opted.save(tmp_path / "raw.json")
    assert json.loads(raw.read_text())["raw_rows"] == [
        "guards_.detector.raw_reference_rows (GuardConfig(ood_method='knn'))",
        "explainer_.background (explainer_background='sample')",
    ]
    leaked = _leaked_rows(raw, rows)
    n_tr = len(c["X_tr"])
    in_reference = [i for i in leaked if i < n_tr]
    in_calibration = [i for i in leaked if i >= n_tr]
    # the kNN keeps half the reference (through its invertible quantile map) and the
    # sample keeps up to 100 calibration rows verbatim
    assert len(in_reference) == (n_tr + 1) // 2
    assert len(in_calibration) == min(100, len(c["X_cal"]))


def test_new_detector_and_background_round_trip_with_identical_decisions(
    cancer_privacy: dict[str, Any], tmp_path: Path
) -> None:
    c = cancer_privacy
    predictor = sp.SafePredictor(
        c["model"],
        explainer="permutation",
        log="off",
        random_state=3,
        tiers={
            "tiers": [
                {"name": "auto", "action": "accept", "max_set_size": 1},
                {"name": "human", "action": "review"},
            ],
            "explain": ["auto", "human", "guard"],
        },
    )
    predictor.calibrate(c["X_cal"], c["y_cal"], reference=c["X_tr"])
    rows = np.vstack([c["X_cal"][:8], c["X_cal"][:4] * 1.6, c["X_cal"][:2] * 0.1])
    before = predictor.decide(rows)
    assert before.guard_flagged.any()  # the shifted rows are flagged
    loaded = sp.SafePredictor.load(predictor.save(tmp_path / "p.json"), model=c["model"])
    after = loaded.decide(rows)
    _assert_same_decisions(before, after)
    np.testing.assert_array_equal(before.ood_scores, after.ood_scores)
    assert loaded.guards_.to_state() == predictor.guards_.to_state()
    assert loaded.explainer_.state.background == predictor.explainer_.state.background


def test_a_0_1_0_file_loads_as_the_knn_detector() -> None:
    # tests/data/iris-0.1.0.*: written by safepredict 0.1.0 (guards with kNN rows, the
    # explainer with a raw background sample) with the decisions it gave on 15 rows.
    data = Path(__file__).parent / "data"
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X[::2], y[::2])
    loaded = sp.SafePredictor.load(data / "iris-0.1.0.calibration.json", model=model)
    assert isinstance(loaded.guards_.detector, KnnDetector)
    assert loaded.explainer_.state.background_kind == "sample"
    recorded = json.loads((data / "iris-0.1.0.decisions.json").read_text())
    batch = loaded.decide(np.array(recorded["rows"]))
    assert batch.actions.tolist() == recorded["actions"]
    assert [list(r) for r in batch.reasons] == recorded["reasons"]
    np.testing.assert_array_equal(batch.ood_scores, recorded["ood_scores"])
    assert raw_row_parts(loaded) == [
        "guards_.detector.raw_reference_rows (GuardConfig(ood_method='knn'))",
        "explainer_.background (explainer_background='sample')",
    ]
