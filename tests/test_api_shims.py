"""Issue #26, point 5: the API inconsistencies, fixed with deprecation shims.

- ``Decisions.prediction_sets`` (all sets, like ``predictions``); ``prediction_set(i)``
  still works and warns (removed in 0.3).
- ``guards=`` takes a plain dict, as ``tiers=`` does, checked through ``GuardConfig``.
- ``quantile_models`` in the wrong order are refused at calibrate.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from safepredict import ConfigError, GuardConfig, SafePredictor


@pytest.fixture(scope="module")
def iris_decisions() -> Any:
    X, y = load_iris(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.6, random_state=0)
    X_cal, X_te, y_cal, _ = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X_tr, y_tr)
    predictor = SafePredictor(model, log="off", random_state=0).calibrate(X_cal, y_cal)
    # A row the model cannot score (NaN: no prediction, so no set) and one far outside.
    X_te = np.vstack([X_te, [[np.nan, 1.0, 1.0, 1.0], [99.0, 99.0, 99.0, 99.0]]])
    return predictor, predictor.decide(X_te)


# ------------------------------------------------------------------ prediction_sets
def test_prediction_sets_is_every_rows_set(iris_decisions: Any) -> None:
    _, decisions = iris_decisions
    sets = decisions.prediction_sets
    assert isinstance(sets, list)
    assert len(sets) == len(decisions)
    assert sets == [d.prediction_set for d in decisions]
    # A row without a prediction has no set, as in Decision; every other row a tuple.
    assert decisions.predictions[-2] is None
    assert sets[-2] is None
    assert all(isinstance(s, tuple) for i, s in enumerate(sets) if i != len(sets) - 2)
    assert [len(s) for s in sets[:-2]] == decisions.set_sizes[:-2].tolist()
    assert decisions[3:7].prediction_sets == sets[3:7]


def test_prediction_sets_is_none_for_a_regressor() -> None:
    X, y = load_diabetes(return_X_y=True)
    model = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X[:200], y[:200])
    predictor = SafePredictor(model, log="off", random_state=0).calibrate(X[200:400], y[200:400])
    decisions = predictor.decide(X[400:])
    assert decisions.prediction_sets is None
    assert decisions.set_sizes is None


def test_prediction_set_method_still_works_and_warns(iris_decisions: Any) -> None:
    _, decisions = iris_decisions
    with pytest.warns(DeprecationWarning, match=r"prediction_set\(i\).*0\.3.*prediction_sets\[i\]"):
        first = decisions.prediction_set(0)
    assert first == decisions.prediction_sets[0]
    # Reading decisions the normal ways warns about nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [d.prediction_set for d in decisions] == decisions.prediction_sets


# ------------------------------------------------------------------ guards= dict
def _iris() -> tuple[Any, ...]:
    X, y = load_iris(return_X_y=True)
    X_tr, X_cal, y_tr, y_cal = train_test_split(X, y, test_size=0.5, random_state=1)
    return LogisticRegression(max_iter=500).fit(X_tr, y_tr), X_cal, y_cal


def test_guards_accepts_a_dict_like_tiers() -> None:
    model, X_cal, y_cal = _iris()
    as_dict = {"ood": "review", "out_of_range": "review", "range_method": "minmax"}
    from_dict = SafePredictor(model, guards=as_dict, log="off", random_state=0)
    from_config = SafePredictor(model, guards=GuardConfig(**as_dict), log="off", random_state=0)
    from_dict.calibrate(X_cal, y_cal)
    from_config.calibrate(X_cal, y_cal)
    assert from_dict.guard_config_ == GuardConfig(**as_dict)
    far = np.array([[99.0, 99.0, 99.0, 99.0], *X_cal[:5]])
    a, b = from_dict.decide(far), from_config.decide(far)
    assert list(a.actions) == list(b.actions)
    assert a.actions[0] == "review"  # the dict's action, not the default abstain
    assert list(a.tiers) == list(b.tiers)


def test_guards_dict_survives_save_and_load(tmp_path: Any) -> None:
    model, X_cal, y_cal = _iris()
    predictor = SafePredictor(model, guards={"ood": "review"}, log="off", random_state=0)
    path = predictor.calibrate(X_cal, y_cal).save(tmp_path / "p.json")
    loaded = SafePredictor.load(path, model=model)
    assert loaded.guard_config_ == GuardConfig(ood="review")
    assert list(loaded.decide(X_cal).actions) == list(predictor.decide(X_cal).actions)


def test_guards_dict_with_a_bad_key_names_the_valid_keys() -> None:
    model, X_cal, y_cal = _iris()
    with pytest.raises(ConfigError, match=r"unknown key 'odd'.*did you mean 'ood'.*ood_alpha"):
        SafePredictor(model, guards={"odd": "review"}, log="off").calibrate(X_cal, y_cal)
    with pytest.raises(ConfigError, match=r"ood must be one of 'abstain', .*; got 'panic'"):
        SafePredictor(model, guards={"ood": "panic"}, log="off").calibrate(X_cal, y_cal)
    with pytest.raises(ConfigError, match=r"guards must be 'auto', 'off', a GuardConfig or a dict"):
        SafePredictor(model, guards=["ood"], log="off").calibrate(X_cal, y_cal)


# ------------------------------------------------------------------ quantile order
@pytest.fixture(scope="module")
def quantile_split() -> tuple[Any, ...]:
    X, y = load_diabetes(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, random_state=2)
    X_cal, X_te, y_cal, y_te = train_test_split(X_rest, y_rest, test_size=0.5, random_state=2)
    models = [
        GradientBoostingRegressor(loss="quantile", alpha=a, n_estimators=60, random_state=0).fit(
            X_tr, y_tr
        )
        for a in (0.05, 0.5, 0.95)
    ]
    return models, X_cal, y_cal, X_te, y_te


def test_quantile_models_in_order_calibrate(quantile_split: tuple[Any, ...]) -> None:
    (lower, median, upper), X_cal, y_cal, X_te, _ = quantile_split
    predictor = SafePredictor(median, quantile_models=(lower, median, upper), log="off")
    predictor.calibrate(X_cal, y_cal)
    assert predictor.conformity_score_ == "cqr"
    assert predictor.decide(X_te).intervals is not None


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ((2, 1, 0), r"lower.*above.*upper.*\(lower, median, upper\)"),
        ((0, 2, 1), r"median.*outside.*\(lower, median, upper\)"),
        ((1, 0, 2), r"median.*outside.*\(lower, median, upper\)"),
    ],
)
def test_quantile_models_in_the_wrong_order_are_refused(
    quantile_split: tuple[Any, ...], order: tuple[int, int, int], words: str
) -> None:
    models, X_cal, y_cal, _, _ = quantile_split
    given = tuple(models[i] for i in order)
    predictor = SafePredictor(models[1], quantile_models=given, log="off")
    with pytest.raises(ConfigError, match=words):
        predictor.calibrate(X_cal, y_cal)


class _CrossingOn:
    """A fitted quantile regressor that jumps by ``shift`` where feature 0 exceeds ``above``.

    A real misbehaving model (DESIGN.md "Habits": models that misbehave), not a mock.
    """

    def __init__(self, base: Any, above: float, shift: float) -> None:
        self.base, self.above, self.shift = base, above, shift

    def predict(self, X: Any) -> Any:
        out = np.asarray(self.base.predict(X), dtype=np.float64).copy()
        out[np.asarray(X)[:, 0] > self.above] += self.shift
        return out


def test_rows_where_the_quantiles_cross_abstain(quantile_split: tuple[Any, ...]) -> None:
    """Crossing on a few rows calibrates; those rows' inverted intervals are invalid_output."""
    (lower, median, upper), X_cal, y_cal, X_te, _ = quantile_split
    above = float(np.max(X_cal[:, 0]))  # no calibration row crosses
    crossing = _CrossingOn(lower, above, shift=1e4)
    predictor = SafePredictor(median, quantile_models=(crossing, median, upper), log="off")
    predictor.calibrate(X_cal, y_cal)
    X_new = X_te[:20].copy()
    X_new[:5, 0] = above + 1.0  # these five rows cross: lower is far above upper
    decisions = predictor.decide(X_new)
    for i in range(5):
        assert decisions.actions[i] == "abstain"
        assert "invalid_output" in decisions.reasons[i]
    assert not any("invalid_output" in r for r in decisions.reasons[5:])
    # The same rows with the honest lower model are not invalid.
    honest = SafePredictor(median, quantile_models=(lower, median, upper), log="off")
    honest.calibrate(X_cal, y_cal)
    assert not any("invalid_output" in r for r in honest.decide(X_new).reasons)


@pytest.mark.parametrize("level", [0.05, 0.2, 0.9])
def test_honest_quantile_models_are_not_refused_at_narrow_levels(level: float) -> None:
    """Near-equal quantiles cross often, but not on most rows: the check leaves them be."""
    X, y = load_diabetes(return_X_y=True)
    X_tr, X_cal, y_tr, y_cal = train_test_split(X, y, train_size=0.5, random_state=3)
    models = tuple(
        GradientBoostingRegressor(loss="quantile", alpha=a, n_estimators=40, random_state=0).fit(
            X_tr, y_tr
        )
        for a in ((1 - level) / 2, 0.5, (1 + level) / 2)
    )
    predictor = SafePredictor(models[1], quantile_models=models, confidence_level=level, log="off")
    predictor.calibrate(X_cal, y_cal)
    assert predictor.conformity_score_ == "cqr"
