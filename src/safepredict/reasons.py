"""The registry of reason codes: names, what follows the colon, and their plain wording (layer 0).

A decision's ``reasons`` are short codes, some with a detail after a colon: the column
a guard flagged (``"out_of_range:age"``), the tier that could not be certified
(``"uncertified:auto"``) or why an explanation was skipped
(``"explanation_skipped:budget"``). This module is their one home: the guards, tiers,
model call and explainer write them, the events, the review console, Prometheus and the
docs read them through :func:`reason_name`, :func:`is_guard_reason` and
:func:`describe_reason`.

Examples
--------
>>> reason_code("out_of_range", "age")
'out_of_range:age'
>>> reason_name("out_of_range:age"), is_guard_reason("out_of_range:age")
('out_of_range', True)
>>> describe_reason("missing:income")
'A value is missing for income.'
>>> describe_reason("model_error:timeout")
'The model did not answer in time (timed out after its retries).'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from safepredict.exceptions import ConfigError

__all__ = [
    "GUARD_REASONS",
    "REASONS",
    "ReasonCode",
    "describe_reason",
    "is_guard_reason",
    "reason_code",
    "reason_name",
]


@dataclass(frozen=True)
class ReasonCode:
    """One kind of reason code.

    Parameters
    ----------
    name : str
        The code, or its prefix when a detail follows (``"missing"`` in ``"missing:age"``).
    source : {"guard", "model", "scoring", "tier", "explain"}
        The pipeline stage that writes it.
    detail : str or None
        What follows the colon (``"column"``, ``"tier"``, ``"cause"``), ``None`` if nothing.
    wording : str
        The plain-language sentence shown to reviewers; ``{detail}`` is filled in.
    details : mapping of str to str, optional
        A sentence of its own for some details (``"model_error:timeout"``,
        ``"explanation_skipped:unsupported"``), used instead of ``wording``.
    """

    name: str
    source: str
    detail: str | None
    wording: str
    details: Mapping[str, str] = field(default_factory=dict)

    def describe(self, detail: str | None = None) -> str:
        """The wording with ``detail`` filled in (``"a feature"`` when a column is unknown)."""
        if detail is not None and detail in self.details:
            return self.details[detail]
        fallback = "a feature" if self.detail == "column" else "unknown"
        return self.wording.format(detail=detail or fallback)


_CODES = (
    ReasonCode("missing", "guard", "column", "A value is missing for {detail}."),
    ReasonCode("non_finite", "guard", "column", "{detail} is NaN or infinite."),
    ReasonCode(
        "type", "guard", "column", "{detail} has the wrong type (e.g. text in a numeric column)."
    ),
    ReasonCode(
        "unseen_category",
        "guard",
        "column",
        "{detail} has a category never seen in the reference data.",
    ),
    ReasonCode(
        "out_of_range",
        "guard",
        "column",
        "{detail} is outside the range seen in the reference data.",
    ),
    ReasonCode("empty", "guard", "column", "{detail} is empty or only whitespace."),
    ReasonCode(
        "length",
        "guard",
        "column",
        "{detail} is shorter or longer than the texts in the reference data.",
    ),
    ReasonCode(
        "oov",
        "guard",
        "column",
        "Too many words of {detail} are unknown to the model (out of vocabulary).",
    ),
    ReasonCode(
        "ood",
        "guard",
        None,
        "The row as a whole is unlike the reference data (out of distribution).",
    ),
    ReasonCode(
        "model_error",
        "model",
        None,
        "The model raised an error on this row.",
        {
            "timeout": "The model did not answer in time (timed out after its retries).",
        },
    ),
    ReasonCode(
        "invalid_output",
        "model",
        None,
        "The model's output for this row broke the output contract (probabilities not in "
        "[0, 1] or not summing to 1, a non-finite value, or a collapsed interval).",
    ),
    ReasonCode(
        "empty_set",
        "scoring",
        None,
        "Empty conformal set: the row is less typical than the calibration rows "
        "(no label reaches the configured confidence level).",
    ),
    ReasonCode(
        "small_stratum",
        "scoring",
        "stratum",
        "Conditional conformal set: the calibration had too few rows of {detail} to exclude "
        "labels at the configured level, so the set keeps them (trivially valid).",
    ),
    ReasonCode(
        "unseen_stratum",
        "scoring",
        "stratum",
        "Conditional conformal set: the calibration never saw the group value {detail}, so "
        "the set holds every label.",
    ),
    ReasonCode(
        "uncertified",
        "tier",
        "tier",
        "Tier {detail} could not be certified on the calibration data.",
    ),
    ReasonCode(
        "explanation_skipped",
        "explain",
        "cause",
        "The explanation was skipped ({detail}).",
        {
            "unsupported": "The explanation was skipped: this kind of input (arrays, or text "
            "with a model that is not a linear text pipeline) has no explainer.",
        },
    ),
)

#: Every reason code by name, in pipeline order (guards, model, scoring, tiers, explain).
REASONS: Mapping[str, ReasonCode] = MappingProxyType({c.name: c for c in _CODES})
#: The guard reason names, in the order guards check them (``GuardConfig.GUARDS``).
GUARD_REASONS: tuple[str, ...] = tuple(c.name for c in _CODES if c.source == "guard")
_GUARD_NAMES = frozenset(GUARD_REASONS)


def reason_name(code: str) -> str:
    """The registered part of a code: ``"out_of_range:age"`` -> ``"out_of_range"``.

    Examples
    --------
    >>> reason_name("uncertified:auto"), reason_name("ood")
    ('uncertified', 'ood')
    """
    return code.split(":", 1)[0]


def is_guard_reason(code: str) -> bool:
    """Whether an input guard wrote ``code``.

    Examples
    --------
    >>> is_guard_reason("missing:age"), is_guard_reason("empty_set")
    (True, False)
    """
    return code.split(":", 1)[0] in _GUARD_NAMES  # per reason of every event: keep it cheap


def reason_code(name: str, detail: str | None = None) -> str:
    """Build a registered code, checking the name and whether it takes a detail.

    Examples
    --------
    >>> reason_code("uncertified", "auto")
    'uncertified:auto'
    >>> reason_code("nope")
    Traceback (most recent call last):
    ...
    safepredict.exceptions.ConfigError: reason 'nope' is not registered; expected one of [...
    """
    entry = REASONS.get(name)
    if entry is None:
        raise ConfigError(
            f"reason {name!r} is not registered; expected one of {list(REASONS)}. "
            "Register new codes in safepredict/reasons.py."
        )
    if (entry.detail is None) != (detail is None):
        wanted = f"a {entry.detail}" if entry.detail else "no detail"
        raise ConfigError(
            f"reason {name!r} takes {wanted} after the colon; got detail={detail!r}. "
            f"Call reason_code({name!r}{', <' + entry.detail + '>' if entry.detail else ''})."
        )
    return name if detail is None else f"{name}:{detail}"


def describe_reason(code: str) -> str:
    """A reason code in plain words; unknown codes are returned unchanged.

    Examples
    --------
    >>> describe_reason("out_of_range:age")
    'age is outside the range seen in the reference data.'
    >>> describe_reason("something_new")
    'something_new'
    """
    name, _, detail = code.partition(":")
    entry = REASONS.get(name)
    return code if entry is None else entry.describe(detail or None)
