"""The merge stage of ``decide`` (layer 2): guards, model failures and tiers into actions.

One rule, shared by :meth:`SafePredictor.decide` and :mod:`safepredict.evaluation`:

- every row gets the action of the tier it landed in;
- a row a guard flagged with a configured action (rank 1 = review, 2 = abstain),
  a row the model raised on (``model_error``) and a row whose output broke the
  output contract (``invalid_output``) leaves the tiers for the policy's guard
  tier, with the stronger of the tier's action and the block's
  (``accept < review < abstain``); model failures block with ``abstain``, so such
  a row is never accepted;
- reasons are the guard reasons, then the tier reasons (none for rows the guards
  kept from the model), then ``model_error`` / ``invalid_output``.

Examples
--------
>>> import numpy as np
>>> codes, actions = merge_actions(
...     np.array([0, 0, 1]), ("accept", "review"), np.array([0, 1, 2]))
>>> codes.tolist(), actions.tolist()
([0, 2, 2], ['accept', 'review', 'abstain'])
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ACTIONS",
    "INVALID_OUTPUT",
    "MODEL_ERROR",
    "MODEL_FAILURES",
    "MODEL_TIMEOUT",
    "action_ranks",
    "block_ranks",
    "merge_actions",
    "merge_reasons",
]

#: Actions in increasing order of caution; an action's rank is its index.
ACTIONS = ("accept", "review", "abstain")
#: Reason of a row the model raised on.
MODEL_ERROR = "model_error"
#: Reason of a row whose model output broke the output contract.
INVALID_OUTPUT = "invalid_output"
#: Reason of a row whose (remote, async) model timed out after its retries.
MODEL_TIMEOUT = "model_error:timeout"
#: The reasons of a row the model gave no valid output for.
MODEL_FAILURES = frozenset({MODEL_ERROR, INVALID_OUTPUT, MODEL_TIMEOUT})

_RANK = {a: i for i, a in enumerate(ACTIONS)}
_NAMES = np.array(ACTIONS, dtype=object)


def action_ranks(actions: Sequence[str] | NDArray[np.object_]) -> NDArray[np.intp]:
    """Rank of each action (``""`` or any non-action: 0).

    Examples
    --------
    >>> action_ranks(["abstain", "", "review"]).tolist()
    [2, 0, 1]
    """
    return np.array([_RANK.get(str(a), 0) for a in actions], dtype=np.intp)


def block_ranks(
    guard_rank: NDArray[np.intp], model_failed: NDArray[np.bool_] | None = None
) -> NDArray[np.intp]:
    """Per-row block rank: the guards' rank, raised to abstain where the model failed.

    Examples
    --------
    >>> block_ranks(np.array([0, 1, 0]), np.array([False, False, True])).tolist()
    [0, 1, 2]
    """
    if model_failed is None or not model_failed.any():
        return guard_rank
    return np.where(model_failed, _RANK["abstain"], guard_rank).astype(np.intp)


def merge_actions(
    tier_codes: NDArray[np.intp],
    tier_actions: Sequence[str],
    block_rank: NDArray[np.intp] | None,
) -> tuple[NDArray[np.intp], NDArray[np.object_]]:
    """Tier code and action of every row after blocked rows leave the tiers.

    Parameters
    ----------
    tier_codes : ndarray of int, shape (n,)
        Index into the policy's tiers (from ``assign_tiers``).
    tier_actions : sequence of str
        Action of each tier, in policy order.
    block_rank : ndarray of int, shape (n,), or None
        0 (not blocked), 1 (review) or 2 (abstain): see :func:`block_ranks`
        (``None``: no row is blocked).

    Returns
    -------
    codes : ndarray of int
        ``tier_codes`` with blocked rows at ``len(tier_actions)`` (the guard tier).
    actions : ndarray of object
        The stronger of the tier's action and the block's.
    """
    per_tier, names = _per_tier(tuple(tier_actions))
    n_tiers = len(per_tier)
    actions: NDArray[np.object_] = names[tier_codes]
    if block_rank is None:
        return tier_codes, actions
    blocked = block_rank > 0
    if not blocked.any():
        return tier_codes, actions
    codes = np.where(blocked, n_tiers, tier_codes).astype(np.intp)
    ranks = np.maximum(per_tier[tier_codes], block_rank)
    return codes, _NAMES[ranks]


@functools.lru_cache(maxsize=64)
def _per_tier(tier_actions: tuple[str, ...]) -> tuple[NDArray[np.intp], NDArray[np.object_]]:
    """Rank and action (object array) of each tier (a policy's constants, computed once)."""
    ranks = action_ranks(tier_actions)
    return ranks, _NAMES[ranks]


def merge_reasons(
    n: int,
    tier_reasons: Mapping[int, tuple[str, ...]],
    guard_reasons: Mapping[int, tuple[str, ...]],
    skipped: NDArray[np.bool_],
    raised: NDArray[np.bool_],
    invalid: NDArray[np.bool_],
    *,
    any_failed: bool = True,
    timed_out: NDArray[np.bool_] | None = None,
) -> list[tuple[str, ...]]:
    """Reason codes of every row: guard, then tier, then model-failure reasons.

    Rows the guards kept from the model (``skipped``) carry their guard reasons
    only: they were never scored, so a tier reason (e.g. ``empty_set``) or a
    model reason would be false. Raised rows that are ``timed_out`` carry
    ``model_error:timeout`` instead of ``model_error``.

    Examples
    --------
    >>> no = np.zeros(3, dtype=bool)
    >>> merge_reasons(3, {1: ("empty_set",)}, {0: ("missing:x0",)}, no, no,
    ...               np.array([False, False, True]))
    [('missing:x0',), ('empty_set',), ('invalid_output',)]
    """
    reasons: list[tuple[str, ...]] = [()] * n
    for row, extra in tier_reasons.items():
        if not skipped[row]:
            reasons[row] = extra
    for row, why in guard_reasons.items():
        reasons[row] = why + reasons[row]
    if not any_failed:  # the common case: no model failure to add
        return reasons
    timeout = np.zeros(n, dtype=bool) if timed_out is None else timed_out
    failures = (
        (raised & ~timeout, MODEL_ERROR),
        (timeout, MODEL_TIMEOUT),
        (invalid, INVALID_OUTPUT),
    )
    for mask, code in failures:
        if mask.any():
            for row in np.flatnonzero(mask & ~skipped).tolist():
                reasons[row] = (*reasons[row], code)
    return reasons
