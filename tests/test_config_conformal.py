"""The policy's ``conditional`` / ``smoothed`` keys: TOML, validation, precedence, save/load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from safepredict import ConfigError, SafePredictor, TierPolicy

TIERS = """
[[tiers]]
name = "auto"
action = "accept"
max_set_size = 1

[[tiers]]
name = "human"
action = "abstain"
"""


def _policy(head: str) -> TierPolicy:
    return TierPolicy.from_toml(head + TIERS)


@pytest.fixture(scope="module")
def wine() -> tuple[Any, NDArray[np.intp], Any]:
    """Wine with a 'site' column; a scaled LR is trained on the first third."""
    X, y = load_wine(return_X_y=True, as_frame=True)
    X = X.assign(site=np.arange(len(X)) % 2)
    perm = np.random.default_rng(0).permutation(len(X))
    X, y = X.iloc[perm].reset_index(drop=True), np.asarray(y)[perm]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(X.iloc[:60], y[:60])
    return X, y, model


def _sets(sp: SafePredictor, X: pd.DataFrame) -> NDArray[np.bool_]:
    """The conformal sets (as label membership) of every row."""
    proba = sp.model.predict_proba(X)
    groups = None if sp.conformal_.conditional in (None, "class") else X["site"].to_numpy()
    return np.asarray(sp.conformal_.predict_set(proba, groups=groups))


def test_toml_keys_parse_and_round_trip() -> None:
    policy = _policy('conditional = "class"\nsmoothed = true\n')
    assert (policy.conditional, policy.smoothed) == ("class", True)
    assert TierPolicy.from_dict(policy.to_dict()) == policy
    assert TierPolicy.from_toml('conditional = "site"\n' + TIERS).conditional == "site"
    # Unset keys stay out of the dict, so the hash of existing policies does not move.
    plain = _policy("")
    assert "conditional" not in plain.to_dict()
    assert "smoothed" not in plain.to_dict()
    assert plain.policy_hash != policy.policy_hash
    assert _policy("smoothed = false\n").policy_hash == plain.policy_hash


@pytest.mark.parametrize(
    ("head", "fragment"),
    [
        ("conditional = 3\n", 'policy: conditional must be "class" or an input column name; got'),
        ('conditional = ""\n', 'Write e.g. conditional = "class"'),
        ('smoothed = "yes"\n', "policy: smoothed must be true or false; got 'yes'"),
        ("smoothed = 1\n", "Write e.g. smoothed = true"),
        ("smoothd = true\n", "smoothed"),  # a typo names the closest key
    ],
)
def test_bad_values_say_what_was_expected_and_how_to_fix(head: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        _policy(head)


def test_toml_keys_shape_the_sets_like_the_constructor(
    wine: tuple[Any, NDArray[np.intp], Any],
) -> None:
    X, y, model = wine
    cal, test = slice(60, 140), slice(140, None)
    kw: dict[str, Any] = {"log": "off", "guards": "off", "random_state": 3}
    by_toml = SafePredictor(model, tiers=_policy('conditional = "class"\n'), **kw)
    by_arg = SafePredictor(model, tiers=_policy(""), conditional="class", **kw)
    marginal = SafePredictor(model, tiers=_policy(""), **kw)
    fitted = [sp.calibrate(X.iloc[cal], y[cal]) for sp in (by_toml, by_arg, marginal)]
    sets = [_sets(sp, X.iloc[test]) for sp in fitted]
    assert by_toml.conformal_.conditional == "class"
    assert np.array_equal(sets[0], sets[1])
    assert not np.array_equal(sets[0], sets[2])  # the key changes the sets
    # A column name works from the TOML too.
    site = SafePredictor(model, tiers=_policy('conditional = "site"\n'), **kw)
    assert site.calibrate(X.iloc[cal], y[cal]).conformal_.conditional == "site"
    smooth = SafePredictor(model, tiers=_policy("smoothed = true\n"), **kw)
    smooth_arg = SafePredictor(model, tiers=_policy(""), smoothed=True, **kw)
    conf = [
        np.array([d.confidence for d in sp.calibrate(X.iloc[cal], y[cal]).decide(X.iloc[test])])
        for sp in (smooth, smooth_arg, marginal)
    ]
    assert smooth.conformal_.smoothed is True
    assert np.array_equal(conf[0], conf[1])
    assert not np.array_equal(conf[0], conf[2])


def test_the_constructor_wins_over_the_policy(wine: tuple[Any, NDArray[np.intp], Any]) -> None:
    X, y, model = wine
    policy = _policy('conditional = "site"\nsmoothed = true\n')
    kw: dict[str, Any] = {"log": "off", "guards": "off", "tiers": policy}
    both = SafePredictor(model, conditional="class", smoothed=False, **kw)
    both.calibrate(X.iloc[60:140], y[60:140])
    assert (both.conformal_.conditional, both.conformal_.smoothed) == ("class", False)
    neither = SafePredictor(model, **kw).calibrate(X.iloc[60:140], y[60:140])
    assert (neither.conformal_.conditional, neither.conformal_.smoothed) == ("site", True)
    assert policy.conformal_options() == ("site", True)
    assert policy.conformal_options("class", False) == ("class", False)
    # The winning value is checked like a constructor argument.
    with pytest.raises(ConfigError, match="smoothed must be True or False"):
        SafePredictor(model, smoothed="yes", **kw).calibrate(X.iloc[60:140], y[60:140])  # type: ignore[arg-type]
    # adapt_to sees the policy's keys too (it cannot weight these sets).
    with pytest.raises(ConfigError, match="Mondrian"):
        neither.adapt_to(X.iloc[140:])


def test_policy_keys_survive_save_and_load(
    tmp_path: Path, wine: tuple[Any, NDArray[np.intp], Any]
) -> None:
    X, y, model = wine
    policy = _policy('conditional = "site"\nsmoothed = true\n')
    sp = SafePredictor(model, tiers=policy, log="off", guards="off", random_state=5)
    sp.calibrate(X.iloc[60:140], y[60:140])
    before = sp.decide(X.iloc[140:])  # draws restart from the seed after calibrate and load
    sp.save(tmp_path / "p")
    loaded = SafePredictor.load(tmp_path / "p", model=model)
    assert loaded.policy_ == policy
    assert (loaded.conformal_.conditional, loaded.conformal_.smoothed) == ("site", True)
    after = loaded.decide(X.iloc[140:])
    assert [d.confidence for d in after] == [d.confidence for d in before]
    assert [d.tier for d in after] == [d.tier for d in before]


def test_a_regressor_refuses_the_keys_whichever_side_sets_them() -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X[:200], y[:200])
    policy = TierPolicy.from_toml('smoothed = true\n[[tiers]]\nname = "auto"\naction = "accept"\n')
    with pytest.raises(ConfigError, match="regression intervals take neither"):
        SafePredictor(model, tiers=policy, log="off").calibrate(X[200:400], y[200:400])
    # the constructor's explicit False wins, so the same policy calibrates
    sp = SafePredictor(model, tiers=policy, smoothed=False, log="off")
    assert sp.calibrate(X[200:400], y[200:400]).task_ == "regression"
