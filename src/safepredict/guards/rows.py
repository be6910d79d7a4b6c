"""The plain-Python guard check of one row or a few: :class:`RowChecker`.

For a batch of a handful of rows, numpy's per-call cost dominates the vectorized
check of :class:`~safepredict.guards.tabular.InputGuards`; this path walks the
values in plain Python with the same per-value rules
(:func:`~safepredict.guards.values.numeric_scalar`,
:func:`~safepredict.guards.values.category_status`), so reasons, ranks, skips and
OOD p-values are identical (``tests/test_guards_fast.py`` checks it property-wise).
``InputGuards.check`` chooses it by batch size. One all-numeric row whose values all
pass takes :meth:`RowChecker.check_row`, which leaves only the OOD guard to compute
(``tests/test_guards_single_row.py``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.config import GuardConfig
from safepredict.guards.result import GuardResult
from safepredict.guards.values import (
    CATEGORY_MISSING,
    CATEGORY_UNSEEN,
    CATEGORY_WRONG,
    category_status,
    numeric_scalar,
)
from safepredict.ood import CentroidDetector

__all__ = ["ROW_GUARDS", "RowChecker"]

_BIG = sys.float_info.max

#: The per-value guards (OOD is per row and comes from the detector).
ROW_GUARDS = ("missing", "non_finite", "type", "unseen_category", "out_of_range")


class RowChecker:
    """Per-column bounds and reason codes of a fitted ``InputGuards``, as Python lists.

    Built once by ``InputGuards`` after fitting or loading; holds nothing learned
    beyond what the guards hold.
    """

    def __init__(
        self,
        *,
        numeric: list[bool],
        low: list[float],
        high: list[float],
        allow_missing: list[bool],
        sets: Sequence[frozenset[Any] | None],
        str_cats: Sequence[bool],
        codes: Mapping[str, list[str]],
        action_rank: Mapping[str, int],
        unsafe: Sequence[str],
    ) -> None:
        self.numeric, self.low, self.high, self.allow_missing = numeric, low, high, allow_missing
        self.sets, self.str_cats = list(sets), list(str_cats)
        self.order = [g for g in GuardConfig.GUARDS if g in ROW_GUARDS]
        self.rank = [action_rank[g] for g in self.order]
        self.skip = [g in unsafe for g in self.order]
        self.codes = [codes[g] for g in self.order]
        self.slot = {g: self.order.index(g) for g in ROW_GUARDS}
        self.ood_rank = action_rank["ood"]
        # one row of an all-numeric table passes every per-value guard exactly when
        # each value is finite and within its bounds: lo <= x <= hi with the infinite
        # bounds replaced by the largest finite float (NaN and +-inf then fail)
        self.pass_low = [max(v, -_BIG) for v in low]
        self.pass_high = [min(v, _BIG) for v in high]
        # a passing row's rank and skip never change: shared, read-only
        self._rank_none = np.zeros(1, dtype=np.intp)
        self._rank_none.flags.writeable = False
        self._skip_none = np.zeros(1, dtype=bool)
        self._skip_none.flags.writeable = False

    def check_row(
        self, matrix: NDArray[np.float64], detector: Any, alpha: float
    ) -> GuardResult | None:
        """:meth:`check` of one all-numeric row that every per-value guard passes.

        ``None`` when a value is missing, infinite or out of range (the caller then
        takes :meth:`check`, which names the reasons). Otherwise only the OOD guard
        can flag the row, and its p-value comes from
        :meth:`CentroidDetector.pvalue_row` (bit for bit :meth:`CentroidDetector.pvalues`)
        or the detector's :meth:`pvalues`.
        """
        row: list[float] = matrix[0].tolist()
        for x, lo, hi in zip(row, self.pass_low, self.pass_high, strict=True):
            if not lo <= x <= hi:
                return None
        if detector is None:
            return GuardResult({}, self._rank_none, None, self._skip_none)
        if isinstance(detector, CentroidDetector):
            p = detector.pvalue_row(row)
        else:
            p = float(detector.pvalues(matrix)[0])
        ood = np.array([p], dtype=np.float64)
        if p <= alpha:
            rank = np.array([self.ood_rank], dtype=np.intp)
            return GuardResult({0: ("ood",)}, rank, ood, np.zeros(1, dtype=bool))
        return GuardResult({}, self._rank_none, ood, self._skip_none)

    def check(
        self,
        matrix: NDArray[np.float64] | None,
        cols: list[NDArray[Any]],
        n: int,
        detector: Any,
        alpha: float,
    ) -> GuardResult:
        """:meth:`check` of a small batch in plain Python: the same reasons, ranks and skips.

        The per-value rules are the vectorized path's own (:func:`numeric_scalar`,
        :func:`category_status`); OOD p-values come from
        :meth:`CentroidDetector.pvalues_rows` (equal to :meth:`CentroidDetector.pvalues`),
        or the detector's :meth:`pvalues` on the same numeric values.
        """
        d = len(self.numeric)
        numeric, lo, hi, miss_ok = self.numeric, self.low, self.high, self.allow_missing
        slot = self.slot
        s_missing, s_inf, s_type = slot["missing"], slot["non_finite"], slot["type"]
        s_unseen, s_range = slot["unseen_category"], slot["out_of_range"]
        if matrix is not None:
            columns: list[list[Any]] = [list(c) for c in zip(*matrix.tolist(), strict=True)]
            exact = [True] * d
        else:
            columns, exact = [], []
            for j, col in enumerate(cols):
                floats = numeric[j] and col.dtype.kind in "biuf"
                exact.append(floats)
                columns.append(
                    col.astype(np.float64, copy=False).tolist() if floats else col.tolist()
                )
        num_rows: list[list[float]] = []
        hits_rows: list[list[list[int]]] = []
        for i in range(n):
            hits: list[list[int]] = [[] for _ in self.order]
            num_row: list[float] = []
            for j in range(d):
                v = columns[j][i]
                if numeric[j]:
                    x, wrong = (v, False) if exact[j] else numeric_scalar(v)
                    num_row.append(x)
                    if wrong:
                        hits[s_type].append(j)
                    elif x != x:
                        if not miss_ok[j]:
                            hits[s_missing].append(j)
                    elif x == math.inf or x == -math.inf:
                        hits[s_inf].append(j)
                    elif x < lo[j] or x > hi[j]:
                        hits[s_range].append(j)
                else:
                    allowed = self.sets[j]
                    assert allowed is not None
                    status = category_status(allowed, self.str_cats[j], v)
                    if status == CATEGORY_MISSING:
                        if not miss_ok[j]:
                            hits[s_missing].append(j)
                    elif status == CATEGORY_UNSEEN:
                        hits[s_unseen].append(j)
                    elif status == CATEGORY_WRONG:
                        hits[s_type].append(j)
            num_rows.append(num_row)
            hits_rows.append(hits)
        ood: list[float] | None = None
        if detector is not None:
            if isinstance(detector, CentroidDetector):
                ood = detector.pvalues_rows(num_rows)
            else:
                ood = detector.pvalues(np.array(num_rows, dtype=np.float64)).tolist()
        ood_rank = self.ood_rank
        reasons: dict[int, tuple[str, ...]] = {}
        ranks: list[int] = []
        skips: list[bool] = []
        for i, hits in enumerate(hits_rows):
            rank, skip = 0, False
            why: list[str] = []
            for g, cols_hit in enumerate(hits):
                if cols_hit:
                    rank = max(rank, self.rank[g])
                    skip = skip or self.skip[g]
                    codes = self.codes[g]
                    why.extend(codes[j] for j in cols_hit)
            if ood is not None and ood[i] <= alpha:
                rank = max(rank, ood_rank)
                why.append("ood")
            if why:
                reasons[i] = tuple(why)
            ranks.append(rank)
            skips.append(skip)
        return GuardResult(
            reasons,
            np.array(ranks, dtype=np.intp),
            None if ood is None else np.array(ood, dtype=np.float64),
            np.array(skips, dtype=bool),
        )
