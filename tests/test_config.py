from pathlib import Path

import pytest

from safepredict import ConfigError, GuardConfig, Tier, TierPolicy

POLICY_TOML = """
delta = 0.05
explain = ["suggest", "human"]
audit_rate = 0.01

[[tiers]]
name = "auto"
action = "accept"
min_confidence = 0.95

[[tiers]]
name = "suggest"
action = "review"
max_set_size = 2

[[tiers]]
name = "human"
action = "abstain"

[guards]
out_of_range = "abstain"
ood = "review"
ood_alpha = 0.02
"""


def test_toml_string_file_and_dict_give_the_same_policy(tmp_path: Path) -> None:
    from_text = TierPolicy.from_toml(POLICY_TOML)
    path = tmp_path / "tiers.toml"
    path.write_text(POLICY_TOML)
    assert TierPolicy.coerce(str(path)) == from_text
    assert TierPolicy.coerce(path) == from_text
    assert TierPolicy.coerce(POLICY_TOML) == from_text
    assert TierPolicy.from_dict(from_text.to_dict()) == from_text
    assert from_text.names == ("auto", "suggest", "human")
    assert from_text.explain_tiers == ("suggest", "human")
    assert from_text.guards.ood == "review"
    assert from_text.guards.ood_alpha == 0.02


def test_policy_hash_is_stable_and_sensitive() -> None:
    a = TierPolicy.from_toml(POLICY_TOML)
    b = TierPolicy.from_toml(POLICY_TOML.replace("0.95", "0.96"))
    assert a.policy_hash == TierPolicy.from_toml(POLICY_TOML).policy_hash
    assert a.policy_hash != b.policy_hash


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"tiers": [{"name": "a", "action": "acept"}]}, "Did you mean 'accept'"),
        (
            {
                "tiers": [
                    {"name": "a", "action": "accept", "min_confidense": 0.9},
                    {"name": "b", "action": "abstain"},
                ]
            },
            "did you mean 'min_confidence'",
        ),
        (
            {
                "tiers": [
                    {"name": "a", "action": "accept", "min_confidence": 1.5},
                    {"name": "b", "action": "abstain"},
                ]
            },
            "tier 'a': min_confidence must be a number in [0, 1]; got 1.5",
        ),
        (
            {
                "tiers": [
                    {"name": "a", "action": "accept", "max_set_size": 0},
                    {"name": "b", "action": "abstain"},
                ]
            },
            "max_set_size must be an integer >= 1",
        ),
        ({"tiers": [{"name": "a", "action": "accept", "min_confidence": 0.9}]}, "fallback"),
        ({"tiers": []}, "at least one tier"),
        ({}, "missing the [[tiers]] list"),
        ({"tiers": [{"action": "accept"}]}, "missing required key 'name'"),
        (
            {"tiers": [{"name": "a", "action": "abstain"}], "delta": 2},
            "delta must be a number in (0, 1)",
        ),
        (
            {"tiers": [{"name": "a", "action": "abstain"}], "explain": ["b"]},
            "explain entry must be one of 'a'",
        ),
        (
            {"tiers": [{"name": "a", "action": "abstain"}, {"name": "a", "action": "abstain"}]},
            "unique",
        ),
        (
            {"tiers": [{"name": "a", "action": "abstain"}], "guards": {"ood": "panic"}},
            "[guards] ood must be one of",
        ),
        (
            {"tiers": [{"name": "a", "action": "abstain"}], "guards": {"odd_alpha": 0.1}},
            "did you mean 'ood_alpha'",
        ),
        ({"tiers": "auto"}, "must be a list of tables"),
        (
            {
                "tiers": [
                    {"name": "a", "action": "accept", "tolerance": 1.0},
                    {"name": "b", "action": "abstain"},
                ]
            },
            "only applies to a 'max_error' tier",
        ),
    ],
)
def test_invalid_policies_say_what_and_where(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TierPolicy.from_dict(data)
    assert fragment in str(info.value)


def test_bad_toml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[tiers]]\nname = 'a'\naction = 'accept'\nmin_confidence = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        TierPolicy.coerce(path)
    with pytest.raises(ConfigError, match="not valid TOML"):
        TierPolicy.from_toml("[[tiers]\nname=")
    with pytest.raises(ConfigError, match="cannot read"):
        TierPolicy.coerce(tmp_path / "missing.toml")


def test_coerce_rejects_other_types() -> None:
    with pytest.raises(ConfigError, match=r"got 3 \(int\)"):
        TierPolicy.coerce(3)  # type: ignore[arg-type]


def test_defaults() -> None:
    cls = TierPolicy.default("classification")
    assert [t.name for t in cls.tiers] == ["auto", "human"]
    assert cls.tiers[0].max_set_size == 1
    reg = TierPolicy.default("regression")
    assert reg.fallback.action == "accept"
    assert GuardConfig().action_for("out_of_range:age") == "abstain"
    assert Tier("x", "review", max_error=0.1, score="margin").is_risk_controlled
