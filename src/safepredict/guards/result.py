"""What the input guards found in one batch, and the action ranks (shared by every modality)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["MODEL_UNSAFE", "RANK", "GuardResult"]

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
