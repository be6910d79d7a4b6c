"""Which pending case a reviewer gets next: the review priority policies.

A queue stores each case's ``priority`` when it is enqueued and claims the
highest first (ties: oldest first). The policy is the tier policy's
``review_priority`` (TOML, policy level):

- ``"fifo"`` (default): every case 0, so the oldest pending case comes first.
- ``"oldest_per_tier"``: tiers are served in turn, oldest first within each
  tier: the k-th case a tier routes gets priority ``-k``, so the first case of
  every tier comes before the second case of any tier. A burst in one tier cannot
  starve the others.
- ``"expected_value"``: the expected cost of leaving the row unreviewed, the
  tier's ``review_cost`` (default 1) times the row's :func:`uncertainty`.

A priority is fixed when the case is enqueued: changing the policy orders the
cases routed afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from safepredict._validation import describe
from safepredict.exceptions import ConfigError

__all__ = ["PRIORITIES", "check_priority", "expected_value", "uncertainty"]

#: The review priority policies, by name.
PRIORITIES: tuple[str, ...] = ("expected_value", "fifo", "oldest_per_tier")


def check_priority(name: Any) -> str:
    """The policy name, or a :class:`~safepredict.exceptions.ConfigError` listing the choices.

    Examples
    --------
    >>> check_priority("fifo")
    'fifo'
    """
    if not isinstance(name, str) or name not in PRIORITIES:
        raise ConfigError(
            f"review_priority must be one of {', '.join(map(repr, PRIORITIES))}; got "
            f'{describe(name)}. Set it at the policy level, e.g. review_priority = "fifo".'
        )
    return name


def uncertainty(case: Mapping[str, Any]) -> float:
    """How unsure the model was about a routed row, from what the case stores.

    - Classification with a conformal ``confidence``: ``1 - confidence``, the
      chance the prediction is wrong at the level where it stands alone.
    - Classification without one: from the prediction set, ``1 - 1/size``
      (a singleton 0, two labels 0.5, ...); an empty set is 1.
    - Regression: the width of the conformal ``interval`` (in target units).
    - Nothing stored (a guard stopped the row before scoring): 1.

    Examples
    --------
    >>> uncertainty({"confidence": 0.75})
    0.25
    >>> uncertainty({"prediction_set": [0, 2]})
    0.5
    >>> uncertainty({"interval": [1.0, 4.5]})
    3.5
    >>> uncertainty({"prediction": 3})
    1.0
    """
    confidence = case.get("confidence")
    if isinstance(confidence, int | float) and _finite(confidence):
        return min(1.0, max(0.0, 1.0 - float(confidence)))
    labels = case.get("prediction_set")
    if isinstance(labels, list):
        return 1.0 if not labels else 1.0 - 1.0 / len(labels)
    interval = case.get("interval")
    if isinstance(interval, list) and len(interval) == 2 and all(map(_finite, interval)):
        return abs(float(interval[1]) - float(interval[0]))
    return 1.0


def expected_value(case: Mapping[str, Any], tier: Mapping[str, Any] | None) -> float:
    """The ``expected_value`` priority: the tier's ``review_cost`` times :func:`uncertainty`.

    Examples
    --------
    >>> expected_value({"confidence": 0.9}, {"name": "human", "review_cost": 50.0})
    5.0
    """
    cost = 1.0 if tier is None else float(tier.get("review_cost", 1.0))
    return cost * uncertainty(case)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
