"""Tier policies: what a product owner writes in TOML.

(The ``[guards]`` table is :class:`~safepredict.guard_config.GuardConfig` and one
``[[tiers]]`` entry is :class:`~safepredict.tier_config.Tier`, both re-exported here.)

A :class:`TierPolicy` is an ordered list of :class:`Tier` s. Each row goes to the
first tier whose conditions it meets; the last tier is the fallback and has no
conditions. The same structure loads from a TOML file, a TOML string or a dict,
and every mistake is reported with the tier, the key and what was expected.

Examples
--------
>>> policy = TierPolicy.from_toml('''
... [[tiers]]
... name = "auto"
... action = "accept"
... min_confidence = 0.95
...
... [[tiers]]
... name = "human"
... action = "abstain"
... ''')
>>> [t.name for t in policy.tiers]
['auto', 'human']
>>> policy.fallback.action
'abstain'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from safepredict._validation import (
    check_fraction,
    check_one_of,
    check_unknown_keys,
    describe,
)
from safepredict.exceptions import ConfigError
from safepredict.guard_config import GUARD_ACTIONS, GuardConfig
from safepredict.tier_config import ACTIONS, CERTIFICATION_TESTS, SCORES, Tier

__all__ = [
    "ACTIONS",
    "GUARD_ACTIONS",
    "SCORES",
    "GuardConfig",
    "Tier",
    "TierPolicy",
]


def _check_conformal_keys(conditional: Any, smoothed: Any, where: str) -> None:
    """``conditional``: ``"class"`` or a column name; ``smoothed``: a bool."""
    if conditional is not None and (not isinstance(conditional, str) or not conditional.strip()):
        raise ConfigError(
            f'{where}conditional must be "class" or an input column name; got '
            f'{describe(conditional)}. Write e.g. conditional = "class".'
        )
    if not isinstance(smoothed, bool):
        raise ConfigError(
            f"{where}smoothed must be true or false; got {describe(smoothed)}. Write e.g. "
            "smoothed = true."
        )


@dataclass(frozen=True)
class TierPolicy:
    """Ordered confidence tiers plus the policy-wide settings.

    Parameters
    ----------
    tiers : sequence of Tier
        Ordered; the first tier whose conditions a row meets wins. The last tier
        is the fallback and must have no conditions.
    delta : float, default=0.05
        Risk level shared by the risk-controlled (``max_error``) tiers.
    explain : sequence of str, optional
        Names of the tiers whose rows get an explanation. Default (``None``):
        every tier whose action is not ``"accept"``.
    audit_rate : float, default=0.0
        Fraction of accepted rows also sent to human review for audit.
    audit_seed : int, default=0
        Seed of the deterministic audit sample.
    guard_tier : str, default="guard"
        Tier name reported for rows that fail a guard or that the model cannot
        score; their action is the guard's action (``"abstain"`` by default), never
        ``"accept"``. It may name one of ``tiers`` or be a name of its own.
    guards : GuardConfig, default=GuardConfig()
        Per-guard actions and guard fitting options.
    review_priority : {"fifo", "oldest_per_tier", "expected_value"}, default="fifo"
        Which pending case a reviewer gets next (see
        :mod:`safepredict.review.priority`).
    conditional : str, optional
        Classification: conditional (Mondrian) conformal sets, so coverage holds
        within every true class (``"class"``) or every value of an input column
        (its name). The predictor's ``conditional=`` wins when it sets one.
    smoothed : bool, default=False
        Classification (``"lac"``): smoothed (randomized) p-values, exact coverage
        in expectation with tied scores. The predictor's ``smoothed=`` wins when it
        sets one.
    certification_test : {"randomized", "conservative"}, default="randomized"
        The exact binomial test that certifies the ``max_error`` tiers:
        randomized (exact size ``delta``, so it certifies at least what the
        conservative test does and often more; its draws come from a hash of
        the calibration rows, so the same rows give the same thresholds) or
        conservative (no randomization in the test). Both keep ``max_error``
        with probability ``>= 1 - delta``; each tier's calibration report says
        which ran (``test``). See :func:`safepredict.tiers.certify_threshold`.

    Examples
    --------
    >>> policy = TierPolicy.from_dict({
    ...     "tiers": [
    ...         {"name": "auto", "action": "accept", "max_set_size": 1},
    ...         {"name": "human", "action": "abstain"},
    ...     ],
    ...     "guards": {"ood": "review"},
    ... })
    >>> policy.explain_tiers
    ('human',)
    >>> policy.guards.ood
    'review'
    """

    tiers: tuple[Tier, ...]
    delta: float = 0.05
    explain: tuple[str, ...] | None = None
    audit_rate: float = 0.0
    audit_seed: int = 0
    guard_tier: str = "guard"
    guards: GuardConfig = field(default_factory=GuardConfig)
    review_priority: str = "fifo"  # review at team scale (issue 25)
    conditional: str | None = None  # conformal set options (issue 18)
    smoothed: bool = False
    certification_test: str = "randomized"

    def __post_init__(self) -> None:
        _check_conformal_keys(self.conditional, self.smoothed, "policy: ")
        check_one_of(
            self.certification_test, "certification_test", CERTIFICATION_TESTS, where="policy: "
        )
        check_one_of(
            self.review_priority,
            "review_priority",
            ("fifo", "oldest_per_tier", "expected_value"),
            where="policy: ",
        )
        tiers = tuple(self.tiers)
        object.__setattr__(self, "tiers", tiers)
        if not tiers:
            raise ConfigError(
                "a tier policy needs at least one tier; add a fallback such as "
                '[[tiers]] name = "human" action = "abstain".'
            )
        for i, tier in enumerate(tiers):
            if not isinstance(tier, Tier):
                raise ConfigError(f"tiers[{i}] must be a Tier; got {describe(tier)}.")
        names = [t.name for t in tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"tier names must be unique; {', '.join(map(repr, dupes))} repeats.")
        if tiers[-1].conditions:
            raise ConfigError(
                f"the last tier ({tiers[-1].name!r}) is the fallback and must have no "
                f"conditions; it has {', '.join(tiers[-1].conditions)}. Add a final tier "
                'without conditions, e.g. name = "human", action = "abstain".'
            )
        check_fraction(self.delta, "delta", where="policy: ")
        check_fraction(
            self.audit_rate, "audit_rate", low_open=False, high_open=False, where="policy: "
        )
        if isinstance(self.audit_seed, bool) or not isinstance(self.audit_seed, int):
            raise ConfigError(
                f"policy: audit_seed must be an integer; got {describe(self.audit_seed)}."
            )
        if self.explain is not None:
            raw: Any = self.explain
            if isinstance(raw, str) or not isinstance(raw, Sequence):
                raise ConfigError(
                    f"policy: explain must be a list of tier names; got {describe(raw)}."
                )
        if not isinstance(self.guard_tier, str) or not self.guard_tier.strip():
            raise ConfigError(
                "policy: guard_tier must be a non-empty tier name; got "
                f"{describe(self.guard_tier)}."
            )
        if self.explain is not None:
            explain = tuple(raw)
            for name in explain:  # the guard tier may be listed too
                check_one_of(name, "explain entry", (*names, self.guard_tier), where="policy: ")
            object.__setattr__(self, "explain", explain)
        if not isinstance(self.guards, GuardConfig):
            raise ConfigError(f"policy: guards must be a GuardConfig; got {describe(self.guards)}.")

    # ------------------------------------------------------------------ views
    @property
    def fallback(self) -> Tier:
        """The last tier, which catches every row no other tier takes."""
        return self.tiers[-1]

    @property
    def names(self) -> tuple[str, ...]:
        """Tier names in order."""
        return tuple(t.name for t in self.tiers)

    @property
    def explain_tiers(self) -> tuple[str, ...]:
        """Names of the tiers whose rows are explained."""
        if self.explain is not None:
            return self.explain
        return tuple(t.name for t in self.tiers if t.action != "accept")

    @property
    def risk_controlled(self) -> tuple[Tier, ...]:
        """The tiers with a ``max_error`` guarantee."""
        return tuple(t for t in self.tiers if t.is_risk_controlled)

    # ------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        """The policy as a TOML/JSON-ready dict (round-trips through :meth:`from_dict`)."""
        out: dict[str, Any] = {
            "delta": self.delta,
            "audit_rate": self.audit_rate,
            "audit_seed": self.audit_seed,
            "tiers": [t.to_dict() for t in self.tiers],
            "guard_tier": self.guard_tier,
            "guards": self.guards.to_dict(),
        }
        if self.explain is not None:
            out["explain"] = list(self.explain)
        if self.review_priority != "fifo":  # review at team scale (issue 25)
            out["review_priority"] = self.review_priority
        if self.conditional is not None:  # conformal set options (issue 18)
            out["conditional"] = self.conditional
        if self.smoothed:
            out["smoothed"] = True
        if self.certification_test != "randomized":
            out["certification_test"] = self.certification_test
        return out

    def conformal_options(
        self, conditional: str | None = None, smoothed: bool | None = None
    ) -> tuple[str | None, bool]:
        """The conformal sets' ``(conditional, smoothed)``: the predictor's where set, else ours.

        A value the predictor sets (anything but ``None``) wins over the policy's
        key, as ``guards=`` does over the ``[guards]`` table; ``None`` reads the
        policy. (The predictor checks the winning values when it calibrates.)

        Examples
        --------
        >>> policy = TierPolicy.from_dict(
        ...     {"conditional": "class", "tiers": [{"name": "human", "action": "abstain"}]}
        ... )
        >>> policy.conformal_options()
        ('class', False)
        >>> policy.conformal_options("region", smoothed=True)
        ('region', True)
        """
        return (
            self.conditional if conditional is None else conditional,
            self.smoothed if smoothed is None else smoothed,
        )

    @cached_property
    def policy_hash(self) -> str:
        """A stable short hash of the policy, logged with every decision (computed once)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TierPolicy:
        """Build a policy from a dict of the TOML structure."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a tier policy must be a table/dict; got {describe(data)}.")
        known = {f.name for f in dataclasses.fields(cls)}
        check_unknown_keys(data.keys(), known, where="policy")
        if "tiers" not in data:
            raise ConfigError(
                "policy: missing the [[tiers]] list; add at least a fallback tier, e.g. "
                '[[tiers]] name = "human" action = "abstain".'
            )
        raw_tiers = data["tiers"]
        if isinstance(raw_tiers, Mapping | str) or not isinstance(raw_tiers, Sequence):
            raise ConfigError(
                "policy: 'tiers' must be a list of tables ([[tiers]] in TOML); got "
                f"{describe(raw_tiers)}."
            )
        kwargs = {k: v for k, v in data.items() if k not in ("tiers", "guards")}
        if "explain" in kwargs and isinstance(kwargs["explain"], list):
            kwargs["explain"] = tuple(kwargs["explain"])
        guards = GuardConfig.from_dict(data.get("guards", {}))
        tiers = tuple(Tier.from_dict(t, index=i) for i, t in enumerate(raw_tiers))
        return cls(tiers=tiers, guards=guards, **kwargs)

    @classmethod
    def from_toml(cls, text: str) -> TierPolicy:
        """Build a policy from TOML text."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the tier policy is not valid TOML: {exc}.") from exc
        return cls.from_dict(data)

    @classmethod
    def from_path(cls, path: str | Path) -> TierPolicy:
        """Load a policy from a TOML file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the tier policy file {str(p)!r}: {exc}.") from exc
        try:
            return cls.from_toml(text)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from exc

    @classmethod
    def coerce(cls, value: TierPolicy | Mapping[str, Any] | str | Path) -> TierPolicy:
        """Turn what users pass as ``tiers=`` into a policy.

        Accepts a :class:`TierPolicy`, a dict, a TOML string, or a path to a TOML
        file (a string is a path when it names an existing file or ends in
        ``.toml``).
        """
        if isinstance(value, TierPolicy):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, Path):
            return cls.from_path(value)
        if isinstance(value, str):
            if "\n" not in value and (value.endswith(".toml") or Path(value).is_file()):
                return cls.from_path(value)
            return cls.from_toml(value)
        raise ConfigError(
            "tiers must be a TierPolicy, a dict, a TOML string or a path to a TOML file; "
            f"got {describe(value)}."
        )

    @classmethod
    def default(cls, task: str) -> TierPolicy:
        """The policy used when none is given.

        Classification: accept rows whose conformal set holds at most the
        predicted label (``max_set_size = 1``, i.e. confidence at least
        ``confidence_level``) and whose predicted label is typical
        (``min_credibility = 0.1``: at most 10% false alarms on rows like the
        calibration rows); abstain otherwise. At ``confidence_level = 0.9`` this
        accepts the rows whose set is the predicted label alone (and those whose
        credibility is exactly 0.1).
        Regression: accept every row that passes the guards (the interval carries
        the uncertainty); guard failures abstain.

        Examples
        --------
        >>> auto = TierPolicy.default("classification").tiers[0]
        >>> auto.max_set_size, auto.min_credibility
        (1, 0.1)
        """
        if task == "classification":
            auto = Tier("auto", "accept", max_set_size=1, min_credibility=0.1)
            return cls(tiers=(auto, Tier("human", "abstain")))
        return cls(tiers=(Tier("auto", "accept"),))
