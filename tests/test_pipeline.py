"""The decide path as explicit stages (issue 16 deliverable 1): same decisions, new shape."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import safepredict
from safepredict import SafePredictor
from safepredict.merge import ACTIONS
from safepredict.tiers import TierInputs, assign_tiers

SRC = Path(safepredict.__file__).parent
#: Layer 0/1 modules an L2 stage may import (DESIGN.md "Layers").
L01 = {
    "safepredict._frames",
    "safepredict._hashing",
    "safepredict._jsonl",
    "safepredict._stats",
    "safepredict._validation",
    "safepredict.config",
    "safepredict.decisions",
    "safepredict.exceptions",
}


def reference_decide(sp: SafePredictor, X: Any) -> dict[str, Any]:
    """The decision rule written out row by row from the fitted parts (an oracle).

    Guards first (flagged rows they keep from the model are never scored), then
    the model, the conformal set / interval, the tier, and a blocked row's action
    is the stronger of its tier's and the block's (model failure blocks abstain).
    """
    X_model = np.asarray(X, dtype=float) if not hasattr(X, "columns") else X
    n = len(X_model)
    checked = sp.guards_.check(X_model)
    keep = np.flatnonzero(~checked.skip)
    rows = X_model.iloc[keep] if hasattr(X_model, "iloc") else X_model[keep]
    policy = sp.policy_
    if sp.task_ == "classification":
        out = np.zeros((n, len(sp.classes_)))
        out[keep] = sp.model.predict_proba(rows)
        predicted = out.argmax(axis=1)
        sets, confidence, credibility = sp.conformal_.set_confidence_credibility(out, predicted)
        sets[checked.skip] = False
        confidence[checked.skip] = np.nan
        credibility[checked.skip] = np.nan
        inputs = TierInputs(
            "classification",
            confidence,
            set_size=sets.sum(axis=1),
            predicted_class=predicted,
            credibility=credibility,
        )
    else:
        out = np.zeros(n)
        out[keep] = sp.model.predict(rows)
        sets = sp.conformal_.interval(X_model, out)
        sets[checked.skip] = np.nan
        width = sets[:, 1] - sets[:, 0]
        confidence = np.full(n, np.nan)
        inputs = TierInputs("regression", confidence, width=width)
    codes, _ = assign_tiers(policy, inputs, sp.tier_calibration_)
    tiers, actions = [], []
    for i in range(n):
        tier = policy.tiers[codes[i]]
        rank = ACTIONS.index(tier.action)
        if checked.rank[i] > 0:
            tiers.append(policy.guard_tier)
            actions.append(ACTIONS[max(rank, int(checked.rank[i]))])
        else:
            tiers.append(tier.name)
            actions.append(tier.action)
    return {"actions": actions, "tiers": tiers, "sets": sets, "confidence": confidence}


@pytest.mark.parametrize("split", ["iris_lr", "wine_hgb", "cancer_lr", "diabetes_rf"])
def test_decide_matches_the_rule_written_out(split: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(split)
    sp = SafePredictor(data.model, log="off", random_state=0).calibrate(data.X_cal, data.y_cal)
    X = data.X_test
    shifted = X * 6.0 if not hasattr(X, "columns") else X.mul(6.0)  # rows the guards flag
    for batch in (X, shifted):
        d = sp.decide(batch)
        ref = reference_decide(sp, batch)
        assert np.array_equal(d.actions, np.array(ref["actions"], dtype=object))
        assert np.array_equal(d.tiers, np.array(ref["tiers"], dtype=object))
        assert np.array_equal(d.confidence, ref["confidence"], equal_nan=True)
        got = d.set_mask if d.set_mask is not None else d.intervals
        assert np.array_equal(got, ref["sets"], equal_nan=True)
    assert d.guard_flagged.any()  # the shifted batch exercised the guard rule


def test_decisions_are_built_once_with_route_filled(iris_lr: Any) -> None:
    got: list[dict[str, Any]] = []
    sp = SafePredictor(iris_lr.model, log="off", router=got.append).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    built: list[int] = []
    original = safepredict.Decisions.__post_init__

    def count(self: Any) -> None:
        built.append(id(self))
        original(self)

    try:
        safepredict.Decisions.__post_init__ = count  # type: ignore[method-assign]
        d = sp.decide(np.vstack([iris_lr.X_test, iris_lr.X_test + 3.0]))
    finally:
        safepredict.Decisions.__post_init__ = original  # type: ignore[method-assign]
    assert len(built) == 2  # built once, then one copy carrying the route statuses
    assert built[-1] == id(d)
    routed = [i for i, r in enumerate(d.route or []) if r]
    assert routed == np.flatnonzero(d.actions != "accept").tolist()
    assert len(got) == len(routed)


def test_fitted_looking_names_are_deprecated(iris_lr: Any) -> None:
    sp = SafePredictor(iris_lr.model, log="off", router=[].append).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    with pytest.warns(DeprecationWarning, match="router_instance"):
        assert sp.router_ is sp.router_instance
    with pytest.warns(DeprecationWarning, match="events.dropped"):
        assert sp.dropped_events_ == sp.events.dropped == 0


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (TYPE_CHECKING blocks and functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("safepredict")}


@pytest.mark.parametrize("stage", ["inputs", "model", "merge"])
def test_l2_stages_import_only_layers_0_and_1(stage: str) -> None:
    imported = {m for m in _imports(SRC / f"{stage}.py") if m.count(".") == 1}
    modules = {m for m in imported if (SRC / f"{m.split('.')[1]}.py").exists()}
    assert modules <= L01, modules - L01


def test_persistence_does_not_import_the_predictor() -> None:
    imported = _imports(SRC / "persistence.py")
    assert not {m for m in imported if "predictor" in m or "lifecycle" in m}
    # negative control: the facade does import persistence (lazily, in save/load)
    assert "safepredict.persistence" in _imports(SRC / "lifecycle.py")


def test_the_facade_is_thin() -> None:
    lines = (SRC / "predictor.py").read_text(encoding="utf-8").count("\n")
    assert lines < 600
    for cls in (SafePredictor, *SafePredictor.__mro__[1:3]):
        if cls.__module__.startswith("safepredict"):
            assert len(inspect.getsourcelines(cls)[0]) < 400, cls


def _collapsed_reference(intervals: np.ndarray, quantile: float) -> np.ndarray:
    """The collapsed-interval rule written out row by row (COLLAPSE_ULPS spacings)."""
    from safepredict.pipeline import COLLAPSE_ULPS

    out = []
    for lo, hi in intervals.tolist():
        finite = bool(np.isfinite(lo) and np.isfinite(hi))
        if quantile <= 0:
            out.append(not finite)
            continue
        magnitude = max(abs(lo), abs(hi)) if finite else 0.0
        out.append(not finite or (hi - lo) <= COLLAPSE_ULPS * float(np.spacing(magnitude)))
    return np.array(out, dtype=bool)


def test_the_collapsed_interval_shortcut_agrees_with_the_rule() -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    from safepredict.pipeline import _collapsed

    X, y = load_diabetes(return_X_y=True)
    sp = SafePredictor(Ridge().fit(X[:200], y[:200]), log="off", guards="off")
    conformal = sp.calibrate(X[200:], y[200:]).conformal_
    assert float(conformal.quantile) > 0
    rng = np.random.default_rng(0)
    flagged = shortcut = 0
    for i in range(300):
        n = int(rng.integers(1, 40))
        decades = (-3, 300) if i % 2 else (2, 3)  # every other batch: one magnitude
        centre = rng.choice([1.0, -1.0], n) * 10.0 ** rng.uniform(*decades, n)
        # widths from far below to far above COLLAPSE_ULPS spacings of the bounds
        width = np.abs(centre) * 2.0**-52 * 10.0 ** rng.uniform(0 if i % 2 else 3, 4, n)
        intervals = np.column_stack([centre - width / 2, centre + width / 2])
        if rng.random() < 0.2:
            intervals[rng.integers(n), rng.integers(2)] = rng.choice([np.nan, np.inf])
        expected = _collapsed_reference(intervals, float(conformal.quantile))
        np.testing.assert_array_equal(_collapsed(intervals, conformal), expected)
        flagged += int(expected.any())
        widest = float(np.abs(intervals).max())
        narrowest = float((intervals[:, 1] - intervals[:, 0]).min())
        shortcut += int(np.isfinite(widest) and narrowest > 64 * np.spacing(widest))
    # both paths ran: batches with a collapsed row (the full check) and the shortcut
    assert flagged > 0
    assert shortcut > 50
