"""Routing into a review queue over any backend: batches of cases and the review context.

The write side the router uses: each case gets its priority and the number of
reviewers it needs from the review policy recorded with ``set_context``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from safepredict._jsonl import dumps
from safepredict._validation import describe
from safepredict.exceptions import ConfigError
from safepredict.review._codec import INSERT, case_params
from safepredict.review._reads import QueueReads, guarded, tier_settings
from safepredict.review.outcomes import OutcomeSpace
from safepredict.review.priority import check_priority, expected_value

_UPSERT_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class Tx(Protocol):
    """One transaction of a backend: rows back from ``run``, row counts from ``count``."""

    def run(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
    def count(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class QueueRouting(QueueReads):
    """Routing writes of every backend (see :class:`~safepredict.review._core.ReviewQueueCore`)."""

    # -------------------------------------------------------------- writes
    @guarded
    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Insert the cases in one transaction (a case already present is kept as is).

        Each case gets its ``priority`` and ``reviews_required`` from the review
        policy recorded with :meth:`set_context` (FIFO and one reviewer without one).
        """
        if not cases:
            return
        staged = dict(self._staged)
        tiers = tier_settings(self._policy_meta("tiers", staged, list))
        policy = self._policy_meta("review_priority", staged, str) or "fifo"
        params = [case_params(c) for c in cases]
        with self._transaction() as tx:
            ranks = self._tier_ranks(tx, cases) if policy == "oldest_per_tier" else {}
            for k, (case, row) in enumerate(zip(cases, params, strict=True)):
                tier = tiers.get(str(case.get("tier")))
                if policy == "expected_value":
                    priority = expected_value(case, tier)
                else:
                    priority = -float(ranks.get(k, 0))
                row.extend([priority, int((tier or {}).get("reviews_required", 1))])
            tx.many(INSERT, params)
            for key, text in staged.items():  # in the same transaction: one lock wait
                tx.run(_UPSERT_META, (key, text))
        for key, text in staged.items():
            self._meta_cache[key] = text
            if self._staged.get(key) == text:
                self._staged.pop(key, None)  # another thread may have done it

    def _tier_ranks(self, tx: Tx, cases: Sequence[Mapping[str, Any]]) -> dict[int, int]:
        """The k-th case each tier ever routed, for ``oldest_per_tier`` (tiers in name order)."""
        by_tier: dict[str, list[int]] = {}
        for k, case in enumerate(cases):
            by_tier.setdefault(str(case.get("tier") or ""), []).append(k)
        ranks: dict[int, int] = {}
        for tier in sorted(by_tier):  # a fixed lock order: no deadlock between writers
            rows = by_tier[tier]
            end = int(
                tx.run(
                    "INSERT INTO tier_seq (tier, n) VALUES (?, ?) ON CONFLICT (tier) "
                    "DO UPDATE SET n = tier_seq.n + excluded.n RETURNING n",
                    (tier, len(rows)),
                )[0]["n"]
            )
            ranks.update({k: end - len(rows) + 1 + j for j, k in enumerate(rows)})
        return ranks

    def _policy_meta(self, key: str, staged: Mapping[str, str], kind: type) -> Any:
        text = staged.get(key, self._meta_cache.get(key))
        if text is None:
            text = self._get_meta(key) or ""
            self._meta_cache.setdefault(key, text)
        if not text:
            return None
        value = text if kind is str else _loads(text)
        return value if isinstance(value, kind) else None

    def enqueue(self, case: Mapping[str, Any]) -> None:
        """Insert one case (its own transaction)."""
        self.write_batch([case])

    # ------------------------------------------------------ review context
    @guarded
    def set_outcome_space(self, space: OutcomeSpace) -> None:
        """Record what a valid outcome is (the predictor does this when it routes)."""
        if not isinstance(space, OutcomeSpace):
            raise ConfigError(f"space must be an OutcomeSpace; got {describe(space)}.")
        if self._meta_cache.get("outcome_space") != space.to_json():
            self._set_meta("outcome_space", space.to_json())

    @guarded
    def set_tiers(self, tiers: Sequence[Mapping[str, Any]]) -> None:
        """Record the tier policy's tiers (``TierPolicy.to_dict()["tiers"]``).

        The console words each case's "why" from its tier's rule; each tier's
        ``reviews_required`` and ``review_cost`` apply to the cases routed next.
        """
        text = dumps([dict(t) for t in tiers])
        if self._meta_cache.get("tiers") != text:
            self._set_meta("tiers", text)

    def set_context(
        self,
        space: OutcomeSpace | None,
        tiers: Sequence[Mapping[str, Any]] | None,
        priority: str | None = None,
    ) -> None:
        """Stage the outcome space, tiers and review priority; the next batch stores them.

        No I/O here: the router calls this before each batch, and the metadata is
        written (only when it changed) in the batch's own transaction, so a locked
        queue costs one busy timeout, not two.
        """
        staged = {}
        if space is not None:
            staged["outcome_space"] = space.to_json()
        if tiers is not None:
            staged["tiers"] = dumps([dict(t) for t in tiers])
        if priority is not None:
            staged["review_priority"] = check_priority(priority)
        for key, text in staged.items():
            if self._meta_cache.get(key) != text:
                self._staged[key] = text

    def _set_meta(self, key: str, text: str) -> None:
        with self._transaction() as tx:
            tx.run(_UPSERT_META, (key, text))
        self._meta_cache[key] = text


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
