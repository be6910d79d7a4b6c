"""Guard configuration: the ``[guards]`` table of a policy, or ``guards=`` of a predictor.

:class:`GuardConfig` says what each guard reason does to a row (``abstain``,
``review`` or ``ignore``), how wide the calibrated ranges are and which columns
have their own bounds. A plain dict of its fields is accepted wherever a
``GuardConfig`` is (:meth:`GuardConfig.coerce`).

Examples
--------
>>> GuardConfig.coerce({"ood": "review"}).action_for("ood")
'review'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from safepredict._validation import (
    check_fraction,
    check_one_of,
    check_positive_int,
    check_positive_number,
    check_unknown_keys,
    describe,
)
from safepredict.exceptions import ConfigError
from safepredict.reasons import GUARD_REASONS

__all__ = ["GUARD_ACTIONS", "GuardConfig"]

GuardAction = Literal["abstain", "review", "ignore"]
GUARD_ACTIONS: tuple[str, ...] = ("abstain", "review", "ignore")

_COLUMN_KEYS = ("min", "max", "allow_missing", "categories")


@dataclass(frozen=True)
class GuardConfig:
    """What each input guard does when a row fails it, and how guards are fitted.

    Parameters
    ----------
    missing, non_finite, out_of_range, unseen_category, type, ood : {"abstain", "review", "ignore"}
        Action for rows that fail the guard. Default: every violation abstains.
    empty, length, oov : {"abstain", "review", "ignore"}
        Text inputs only (:class:`~safepredict.guards.TextGuards`): an empty or
        whitespace-only string, a length outside the reference range, too many
        out-of-vocabulary tokens. Default: abstain.
    ood_alpha : float, default=0.01
        False-alarm rate of the out-of-distribution detector: on data like the
        reference data, at most this fraction of rows is flagged ``ood``.
    guard_alpha : float, default=0.01
        False-alarm rate of the calibrated range guard
        (``range_method="calibrated"``): on data like the reference data, at
        most this fraction of rows has any ``out_of_range`` reason.
    ood_method : {"centroids", "knn", "none"}, default="centroids"
        Out-of-distribution detector: distance to k-means centroids of >= 20
        reference rows each (stores no reference row); ``"knn"``, distance to
        the nearest reference rows (**opt-in: stores up to**
        ``ood_reference_size`` **reference rows** in the saved state);
        ``"none"`` turns the OOD check off.
    ood_neighbors : int, default=5
        ``ood_method="knn"``: number of nearest reference rows whose mean
        distance is the OOD score.
    ood_reference_size : int, default=2000
        At most this many reference rows fit the detector (and the per-column
        map of the calibrated ranges); the rest of the reference (its other
        half at least) calibrates the p-values and the ranges.
    range_method : {"calibrated", "minmax", "quantile"}, default="calibrated"
        How numeric ranges are learned: ``"calibrated"`` sets them on held-out
        reference rows so that at most ``guard_alpha`` of in-distribution rows
        are flagged; ``"minmax"`` (observed min/max) and ``"quantile"``
        (``range_quantiles``) are widened by ``range_margin`` and have no
        false-alarm control.
    range_quantiles : tuple of float, default=(0.001, 0.999)
        Lower and upper quantile for ``range_method="quantile"``.
    range_margin : float, default=0.1
        ``"minmax"`` and ``"quantile"``: widen each learned range by this
        fraction of its width on both sides.
    missing_policy : {"reference", "never", "always"}, default="reference"
        Whether a missing value is allowed in a column: if it was seen in the
        reference data, never, or always.
    columns : dict, default={}
        Per-column overrides, e.g. ``{"age": {"min": 0, "max": 120,
        "allow_missing": False}, "country": {"categories": ["FR", "DE"]}}``.
        Keys: ``min``, ``max``, ``allow_missing``, ``categories``.

    Examples
    --------
    >>> GuardConfig(ood="review").action_for("ood")
    'review'
    """

    missing: GuardAction = "abstain"
    non_finite: GuardAction = "abstain"
    out_of_range: GuardAction = "abstain"
    unseen_category: GuardAction = "abstain"
    type: GuardAction = "abstain"
    ood: GuardAction = "abstain"
    empty: GuardAction = "abstain"
    length: GuardAction = "abstain"
    oov: GuardAction = "abstain"
    ood_alpha: float = 0.01
    ood_method: str = "centroids"
    ood_neighbors: int = 5
    ood_reference_size: int = 2000
    range_method: str = "calibrated"
    range_quantiles: tuple[float, float] = (0.001, 0.999)
    range_margin: float = 0.1
    missing_policy: str = "reference"
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    guard_alpha: float = 0.01

    #: Names of the guards, in the order their reasons are reported.
    GUARDS = GUARD_REASONS

    def __post_init__(self) -> None:
        for guard in self.GUARDS:
            check_one_of(getattr(self, guard), guard, GUARD_ACTIONS, where="[guards] ")
        check_fraction(self.ood_alpha, "ood_alpha", where="[guards] ")
        check_fraction(self.guard_alpha, "guard_alpha", where="[guards] ")
        check_one_of(self.ood_method, "ood_method", ("centroids", "knn", "none"), where="[guards] ")
        check_one_of(
            self.range_method,
            "range_method",
            ("calibrated", "minmax", "quantile"),
            where="[guards] ",
        )
        check_one_of(
            self.missing_policy,
            "missing_policy",
            ("reference", "never", "always"),
            where="[guards] ",
        )
        q = self.range_quantiles
        if (
            not isinstance(q, tuple | list)
            or len(q) != 2
            or not all(isinstance(v, int | float) and 0 <= v <= 1 for v in q)
            or q[0] >= q[1]
        ):
            raise ConfigError(
                "[guards] range_quantiles must be two numbers 0 <= low < high <= 1, e.g. "
                f"[0.001, 0.999]; got {describe(q)}."
            )
        object.__setattr__(self, "range_quantiles", (float(q[0]), float(q[1])))
        check_positive_number(self.range_margin, "range_margin", "[guards]", allow_zero=True)
        check_positive_int(self.ood_neighbors, "ood_neighbors", where="[guards] ")
        check_positive_int(self.ood_reference_size, "ood_reference_size", where="[guards] ")
        if not isinstance(self.columns, Mapping):
            raise ConfigError(
                f"[guards] columns must be a table/dict; got {describe(self.columns)}."
            )
        for name, override in self.columns.items():
            where = f"[guards.columns.{name}]"
            if not isinstance(override, Mapping):
                raise ConfigError(f"{where} must be a table/dict; got {describe(override)}.")
            check_unknown_keys(override.keys(), _COLUMN_KEYS, where=where)
            for key in ("min", "max"):
                if key in override and not (
                    isinstance(override[key], int | float) and not isinstance(override[key], bool)
                ):
                    raise ConfigError(
                        f"{where} {key} must be a number; got {describe(override[key])}."
                    )
            if "allow_missing" in override and not isinstance(override["allow_missing"], bool):
                raise ConfigError(
                    f"{where} allow_missing must be true or false; got "
                    f"{describe(override['allow_missing'])}."
                )
            cats = override.get("categories", [])
            if isinstance(cats, str) or not isinstance(cats, Sequence):
                raise ConfigError(
                    f'{where} categories must be a list, e.g. ["FR", "DE"]; got {describe(cats)}.'
                )

    def action_for(self, reason: str) -> str:
        """The configured action for a reason code such as ``"out_of_range:age"``."""
        return str(getattr(self, reason.split(":", 1)[0]))

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a TOML/JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["range_quantiles"] = list(self.range_quantiles)
        out["columns"] = {k: dict(v) for k, v in self.columns.items()}
        return out

    @classmethod
    def coerce(cls, value: GuardConfig | Mapping[str, Any]) -> GuardConfig:
        """Turn what users pass as ``guards=`` into a configuration.

        Accepts a :class:`GuardConfig` or a dict of its fields (the ``[guards]``
        table of a policy file), as ``tiers=`` accepts a dict.

        Examples
        --------
        >>> GuardConfig.coerce({"ood": "review"}) == GuardConfig(ood="review")
        True
        >>> GuardConfig.coerce({"odd": "review"})
        Traceback (most recent call last):
        ...
        safepredict.exceptions.ConfigError: [guards]: unknown key 'odd' (did you mean 'ood'?). ...
        """
        if isinstance(value, GuardConfig):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ConfigError(
            "guards must be 'auto', 'off', a GuardConfig or a dict of its fields (e.g. "
            f'{{"ood": "review"}}); got {describe(value)}.'
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuardConfig:
        """Build from the ``[guards]`` table, reporting unknown keys."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"[guards] must be a table/dict; got {describe(data)}.")
        known = {f.name for f in dataclasses.fields(cls)}
        check_unknown_keys(data.keys(), known, where="[guards]")
        kwargs = dict(data)
        if "range_quantiles" in kwargs and isinstance(kwargs["range_quantiles"], list):
            kwargs["range_quantiles"] = tuple(kwargs["range_quantiles"])
        return cls(**kwargs)
