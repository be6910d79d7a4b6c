"""What the input guards found in one batch, and the action ranks (shared by every modality)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from safepredict.config import GuardConfig

__all__ = ["MODEL_UNSAFE", "RANK", "GuardResult", "collect", "collect_columns"]

#: Guards whose failure means the model may be unable to take the value at all.
MODEL_UNSAFE = ("missing", "non_finite", "type", "unseen_category")
#: Action rank of each configured guard action.
RANK = {"ignore": 0, "review": 1, "abstain": 2}


@dataclass(frozen=True)
class GuardResult:
    """What the guards found in one batch.

    Attributes
    ----------
    reasons : dict of int to tuple of str
        Reason codes of every flagged row (rows that pass are absent), including
        reasons whose guard is configured to ``"ignore"``.
    rank : ndarray of int, shape (n,)
        Strongest configured action per row: 0 none/ignore, 1 review, 2 abstain.
    ood : ndarray of float, shape (n,), or None
        OOD conformal p-values (small means unusual); ``None`` without a detector.
    skip : ndarray of bool, shape (n,)
        Rows not to send to the model (a non-ignored missing, non-finite, type or
        unseen-category reason).
    """

    reasons: dict[int, tuple[str, ...]]
    rank: NDArray[np.intp]
    ood: NDArray[np.float64] | None
    skip: NDArray[np.bool_]


def collect(
    n: int,
    masks: Mapping[str, NDArray[np.bool_]],
    column: str,
    config: GuardConfig,
    ood: NDArray[np.float64] | None,
) -> GuardResult:
    """The :class:`GuardResult` of per-row guard masks on one input (text, arrays).

    Parameters
    ----------
    n : int
        Rows in the batch.
    masks : mapping of str to ndarray of bool, shape (n,)
        Rows each guard flags, by guard name (``"missing"``, ``"oov"``, ...).
    column : str
        The input's name, the detail of every reason (``"oov:text"``).
    config : GuardConfig
        The configured action of each guard.
    ood : ndarray of float, shape (n,), or None
        OOD p-values (``nan`` where a row was not scored).

    Examples
    --------
    >>> from safepredict.config import GuardConfig
    >>> r = collect(2, {"empty": np.array([False, True])}, "text", GuardConfig(), None)
    >>> r.reasons, r.rank.tolist(), r.skip.tolist()
    ({1: ('empty:text',)}, [0, 2], [False, False])
    """
    rank = np.zeros(n, dtype=np.intp)
    skip = np.zeros(n, dtype=bool)
    hits: dict[str, NDArray[np.bool_]] = {}
    for guard in config.GUARDS:
        if guard == "ood":
            if ood is None:
                continue
            with np.errstate(invalid="ignore"):
                hit = np.asarray(ood <= config.ood_alpha, dtype=bool)
        elif guard in masks:
            hit = np.asarray(masks[guard], dtype=bool)
        else:
            continue
        if not hit.any():
            continue
        hits[guard] = hit
        action = RANK[config.action_for(guard)]
        np.maximum(rank, np.where(hit, action, 0), out=rank)
        if guard in MODEL_UNSAFE and action:
            skip |= hit
    reasons: dict[int, tuple[str, ...]] = {}
    for i in sorted({int(i) for hit in hits.values() for i in np.flatnonzero(hit)}):
        reasons[i] = tuple(
            guard if guard == "ood" else f"{guard}:{column}"
            for guard, hit in hits.items()
            if hit[i]
        )
    return GuardResult(reasons, rank, ood, skip)


def collect_columns(
    n: int,
    masks: Mapping[str, NDArray[np.bool_]],
    ood: NDArray[np.float64] | None,
    codes: Mapping[str, Sequence[str]],
    action_rank: Mapping[str, int],
    unsafe: Collection[str],
    ood_alpha: float,
) -> GuardResult:
    """The :class:`GuardResult` of per-cell guard masks of a table, shape ``(n, d)`` each.

    ``codes[guard][j]`` is the reason of column ``j`` (``"missing:age"``),
    ``action_rank`` the configured rank of each guard, ``unsafe`` the guards whose rows
    never reach the model. Reasons list guards in ``GuardConfig.GUARDS`` order, then
    ``"ood"`` when the row's p-value is at most ``ood_alpha``.
    """
    rank = np.zeros(n, dtype=np.intp)
    skip = np.zeros(n, dtype=bool)
    row_hit: dict[str, NDArray[np.bool_]] = {}
    for guard, mask in masks.items():
        hit = np.asarray(mask.any(axis=1), dtype=bool)
        if hit.any():
            row_hit[guard] = hit
            np.maximum(rank, np.where(hit, action_rank[guard], 0), out=rank)
            if guard in unsafe:
                skip |= hit
    ood_hit = None
    if ood is not None:
        ood_hit = np.asarray(ood <= ood_alpha, dtype=bool)
        if ood_hit.any():
            np.maximum(rank, np.where(ood_hit, action_rank["ood"], 0), out=rank)
        else:
            ood_hit = None
    reasons: dict[int, tuple[str, ...]] = {}
    if row_hit or ood_hit is not None:
        flagged = np.zeros(n, dtype=bool)
        for hit in row_hit.values():
            flagged |= hit
        if ood_hit is not None:
            flagged |= ood_hit
        order = [g for g in GuardConfig.GUARDS if g in row_hit]
        for i in np.flatnonzero(flagged).tolist():
            why: list[str] = []
            for guard in order:
                if row_hit[guard][i]:
                    column_codes = codes[guard]
                    why.extend(column_codes[j] for j in np.flatnonzero(masks[guard][i]).tolist())
            if ood_hit is not None and ood_hit[i]:
                why.append("ood")
            reasons[i] = tuple(why)
    return GuardResult(reasons, rank, ood, skip)
