"""The reviewer side of a review queue over any backend: claims, leases, consensus.

Backend-neutral SQL (``?`` placeholders, ``RETURNING``, ``ON CONFLICT``) over the
storage seam of :class:`~safepredict.review._reads.QueueReads`; the SQLite and
PostgreSQL queues differ only in connections, schema migrations, the claim's
row lock (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and error translation.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from safepredict._jsonl import dumps
from safepredict._validation import describe
from safepredict.exceptions import ConfigError, ReviewQueueError
from safepredict.review._codec import (
    check_reviewer,
    check_ttl,
    later,
    row_to_case,
)
from safepredict.review._reads import guarded
from safepredict.review._routing import QueueRouting, Tx
from safepredict.review.agreement import majority
from safepredict.review.cases import utc_now
from safepredict.review.outcomes import check_outcome

_CLAIMED = (
    "status = 'claimed', reviewer = ?, claimed_at = ?, "
    "first_claimed_at = coalesce(first_claimed_at, ?), lease_id = ?, lease_expires_at = ?"
)
_FREED = "reviewer = NULL, claimed_at = NULL, lease_id = NULL, lease_expires_at = NULL"
_ANSWERED = (
    "EXISTS (SELECT 1 FROM reviews r WHERE r.decision_id = cases.decision_id "
    "AND r.reviewer = ? AND r.stage = 'review')"
)
#: Default lease length: 30 minutes (Label Studio's lock TTL is 3x the mean task time).
DEFAULT_LEASE_TTL = 1800.0


class ReviewQueueCore(QueueRouting):
    """The reviewer API of every review queue (see :class:`SQLiteReviewQueue` for a tour)."""

    #: Lock clause on the row a resolve or heartbeat reads before writing.
    LOCK_ROW = ""
    lease_ttl: float = DEFAULT_LEASE_TTL

    # ---------------------------------------------------------- reviewers
    def _expire(self, tx: Tx, now: str) -> None:
        """Expired leases go back to pending, their reviewer kept as ``previous_reviewer``."""
        tx.count(
            f"UPDATE cases SET status = 'pending', previous_reviewer = reviewer, {_FREED} "
            f"WHERE {self.SEQ} IN (SELECT {self.SEQ} FROM cases WHERE status = 'claimed' "
            f"AND lease_expires_at < ?{self.SKIP_LOCKED})",
            (now,),
        )

    @guarded
    def expire_leases(self) -> int:
        """Return every case whose lease expired to pending now; how many went back.

        Claims do this on their own; call it before listing pending cases when
        the list must show expired leases as pending.
        """
        now = utc_now()
        with self._transaction() as tx:
            n: int = tx.count(
                f"UPDATE cases SET status = 'pending', previous_reviewer = reviewer, {_FREED} "
                "WHERE status = 'claimed' AND lease_expires_at < ?",
                (now,),
            )
        return n

    def _lease(self, reviewer: str, ttl: Any) -> tuple[str, list[Any]]:
        seconds = self.lease_ttl if ttl is None else check_ttl(ttl)
        now = utc_now()
        return now, [reviewer, now, now, secrets.token_hex(8), later(seconds)]

    @guarded
    def claim(
        self,
        reviewer: str,
        tier: str | None = None,
        *,
        ttl: float | None = None,
        adjudicate: bool = False,
    ) -> dict[str, Any] | None:
        """Atomically claim the next pending case (of ``tier``), or None if none is left.

        Two reviewers -- in threads, processes or hosts -- never get the same
        case. The case comes with a lease (``lease_id``, ``lease_expires_at``):
        extend it with :meth:`heartbeat`; once it expires the case returns to
        pending and another reviewer can claim it. A case needing several
        reviewers is never given twice to the same reviewer.

        Parameters
        ----------
        reviewer : str
            Who claims.
        tier : str, optional
            Only this tier.
        ttl : float, optional
            Lease length in seconds (default: the queue's ``lease_ttl``).
        adjudicate : bool, default=False
            Claim a case whose reviewers tied (it waits for an adjudicator,
            whose answer is final) instead of a case waiting for a review.
        """
        got = self.claim_many(reviewer, 1, tier, ttl=ttl, adjudicate=adjudicate)
        return got[0] if got else None

    @guarded
    def claim_many(
        self,
        reviewer: str,
        n: int,
        tier: str | None = None,
        *,
        ttl: float | None = None,
        adjudicate: bool = False,
    ) -> list[dict[str, Any]]:
        """Claim up to ``n`` pending cases in one transaction, in claim order (see :meth:`claim`).

        Each case gets its own lease of ``ttl`` seconds.
        """
        reviewer = check_reviewer(reviewer)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
            raise ConfigError(f"n must be an integer in [1, 10000]; got {describe(n)}.")
        now, lease = self._lease(reviewer, ttl)
        where = "status = 'pending' AND stage = ?"
        params: list[Any] = ["adjudication" if adjudicate else "review"]
        if tier is not None:
            where += " AND tier = ?"
            params.append(str(tier))
        if not adjudicate:
            where += f" AND NOT {_ANSWERED}"
            params.append(reviewer)
        params += [n, *lease]
        # MATERIALIZED: the locked pick runs once (an IN subquery may be re-run by a planner)
        sql = (
            f"WITH picked AS MATERIALIZED (SELECT {self.SEQ} AS k FROM cases WHERE {where} "
            f"ORDER BY priority DESC, created_at, {self.SEQ} LIMIT ?{self.SKIP_LOCKED}) "
            f"UPDATE cases SET {_CLAIMED} WHERE {self.SEQ} IN (SELECT k FROM picked) "
            "AND status = 'pending' RETURNING *"
        )
        with self._transaction() as tx:
            self._expire(tx, now)
            rows = [row_to_case(r) for r in tx.run(sql, params)]
        rows.sort(key=lambda c: (-c["priority"], c["created_at"]))
        return rows

    @guarded
    def claim_case(
        self, decision_id: str, reviewer: str, *, ttl: float | None = None
    ) -> dict[str, Any]:
        """Claim one given case; it must be pending (or already claimed by ``reviewer``).

        Claiming your own claimed case again renews its lease.
        """
        reviewer = check_reviewer(reviewer)
        now, lease = self._lease(reviewer, ttl)
        with self._transaction() as tx:
            self._expire(tx, now)
            rows = tx.run(
                f"UPDATE cases SET {_CLAIMED} WHERE decision_id = ? AND (status = 'pending' "
                "OR (status = 'claimed' AND reviewer = ?)) "
                f"AND NOT (stage = 'review' AND {_ANSWERED}) RETURNING *",
                (*lease, str(decision_id), reviewer, reviewer),
            )
        if rows:
            return row_to_case(rows[0])
        case = self._require(decision_id)
        if case["status"] == "pending":
            raise ReviewQueueError(
                f"{reviewer!r} already answered case {decision_id!r}; it needs "
                f"{case['reviews_required']} distinct reviewers, so another reviewer must "
                "take it. Claim another case with queue.claim(reviewer)."
            )
        raise ReviewQueueError(
            f"case {decision_id!r} cannot be claimed by {reviewer!r}: it is {case['status']}"
            + (f" by {case['reviewer']!r}" if case["reviewer"] else "")
            + ". Only pending cases can be claimed; pick another with queue.claim(reviewer)."
        )

    @guarded
    def heartbeat(
        self, decision_id: str, reviewer: str, ttl: float | None = None
    ) -> dict[str, Any]:
        """Extend ``reviewer``'s lease on a claimed case by ``ttl`` seconds from now.

        Refused (ReviewQueueError) once the lease expired or when the case is
        someone else's: claim it again instead.
        """
        reviewer = check_reviewer(reviewer)
        now, lease = self._lease(reviewer, ttl)
        with self._transaction() as tx:
            rows = tx.run(
                "UPDATE cases SET lease_expires_at = ? WHERE decision_id = ? "
                "AND status = 'claimed' AND reviewer = ? "
                "AND (lease_expires_at IS NULL OR lease_expires_at >= ?) RETURNING *",
                (lease[4], str(decision_id), reviewer, now),
            )
        if rows:
            return row_to_case(rows[0])
        raise ReviewQueueError(self._refusal("extend the lease of", decision_id, reviewer))

    @guarded
    def release(self, decision_id: str, reviewer: str) -> dict[str, Any]:
        """Give a claimed case back to the pending pool (only its reviewer can)."""
        reviewer = check_reviewer(reviewer)
        with self._transaction() as tx:
            rows = tx.run(
                f"UPDATE cases SET status = 'pending', {_FREED} "
                "WHERE decision_id = ? AND status = 'claimed' AND reviewer = ? RETURNING *",
                (str(decision_id), reviewer),
            )
        if rows:
            return row_to_case(rows[0])
        case = self._require(decision_id)
        raise ReviewQueueError(
            f"case {decision_id!r} is {case['status']}"
            + (f" by {case['reviewer']!r}" if case["reviewer"] else "")
            + f"; only the reviewer who claimed it can release it (got {reviewer!r})."
        )

    @guarded
    def resolve(
        self, decision_id: str, outcome: Any, reviewer: str, note: str | None = None
    ) -> dict[str, Any]:
        """Record the reviewer's answer (e.g. the true label) under a live lease.

        With one reviewer required (the default) the case is resolved with this
        outcome. A case needing ``k`` reviewers returns to pending until ``k``
        distinct reviewers answered; then the majority answer resolves it
        (``outcome_source="consensus"``) and a tie sends it to adjudication
        (``stage="adjudication"``, claimed with ``claim(..., adjudicate=True)``;
        the adjudicator's answer is final, ``outcome_source="adjudication"``).

        The outcome is checked against the queue's outcome space (see
        :func:`~safepredict.review.outcomes.check_outcome`).

        Raises
        ------
        InvalidOutcomeError
            The outcome is not a valid label / finite number (the message lists
            the valid choices).
        CaseNotFoundError
            No such case.
        ReviewQueueError
            The case is pending (claim it first), claimed by someone else, its
            lease expired, or it is already resolved.
        """
        reviewer = check_reviewer(reviewer)
        payload = dumps(check_outcome(outcome, self.outcome_space()))
        text = None if note is None else str(note)
        now = utc_now()
        rows: list[dict[str, Any]] = []
        with self._transaction() as tx:
            found = tx.run(
                "SELECT stage, reviews_required FROM cases WHERE decision_id = ? "
                "AND status = 'claimed' AND reviewer = ? "
                f"AND (lease_expires_at IS NULL OR lease_expires_at >= ?){self.LOCK_ROW}",
                (str(decision_id), reviewer, now),
            )
            if found:
                rows = self._answer(tx, str(decision_id), reviewer, payload, text, now, found[0])
        if found:
            return row_to_case(rows[0])
        raise ReviewQueueError(self._refusal("resolve", decision_id, reviewer))

    def _answer(
        self,
        tx: Tx,
        decision_id: str,
        reviewer: str,
        payload: str,
        note: str | None,
        now: str,
        case: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        tx.run(
            "INSERT INTO reviews (decision_id, reviewer, stage, outcome, note, answered_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (decision_id, reviewer, case["stage"], payload, note, now),
        )
        final = "UPDATE cases SET status = 'resolved', outcome = ?, outcome_source = ?, "
        final += "note = ?, resolved_at = ?, lease_id = NULL, lease_expires_at = NULL "
        final += "WHERE decision_id = ? RETURNING *"
        if case["stage"] == "adjudication":
            return tx.run(final, (payload, "adjudication", note, now, decision_id))
        votes = tx.run(
            "SELECT outcome FROM reviews WHERE decision_id = ? AND stage = 'review'",
            (decision_id,),
        )
        required = int(case["reviews_required"])
        if len(votes) < required:
            return tx.run(
                f"UPDATE cases SET status = 'pending', {_FREED} WHERE decision_id = ? RETURNING *",
                (decision_id,),
            )
        winner = majority([v["outcome"] for v in votes])
        if winner is None:
            return tx.run(
                f"UPDATE cases SET status = 'pending', stage = 'adjudication', {_FREED} "
                "WHERE decision_id = ? RETURNING *",
                (decision_id,),
            )
        source = "review" if required == 1 else "consensus"
        return tx.run(final, (winner, source, note, now, decision_id))

    def _refusal(self, verb: str, decision_id: str, reviewer: str) -> str:
        case = self._require(decision_id)
        status, holder = case["status"], case["reviewer"]
        if status == "claimed" and holder == reviewer:
            hint = (
                f"your lease expired at {case['lease_expires_at']}; claim it again with "
                f"queue.claim_case(id, {reviewer!r}) (heartbeat() keeps a lease alive)"
            )
        elif status == "pending" and case.get("previous_reviewer") == reviewer:
            hint = "your lease expired and the case went back to pending; claim it again"
        elif status == "pending":
            hint = f"it is pending: claim it first with queue.claim_case(id, {reviewer!r})"
        elif status == "claimed":
            hint = (
                f"it is claimed by {holder!r}; only that reviewer can {verb} it "
                "(or they can release it, or let the lease expire)"
            )
        else:
            hint = f"it was already resolved by {holder!r} at {case['resolved_at']}"
        return f"{reviewer!r} cannot {verb} case {decision_id!r}: {hint}."

    @guarded
    def record_outcome(self, decision_id: str, outcome: Any, *, source: str = "external") -> str:
        """Store an outcome that arrived by another path (e.g. the realized label).

        If the decision is a case in the queue, its outcome is set and it is
        resolved (a reviewer's earlier outcome is replaced; the reviewer is kept).
        Otherwise (an accepted row that was not routed) the outcome goes to the
        ``external_outcomes`` table. Returns ``"case"`` or ``"external"``.
        The outcome is validated like :meth:`resolve`'s.
        """
        payload = dumps(check_outcome(outcome, self.outcome_space()))
        now = utc_now()
        with self._transaction() as tx:
            if tx.count(
                "UPDATE cases SET status = 'resolved', outcome = ?, outcome_source = ?, "
                "resolved_at = ?, lease_id = NULL, lease_expires_at = NULL "
                "WHERE decision_id = ?",
                (payload, source, now, str(decision_id)),
            ):
                return "case"
            tx.run(
                "INSERT INTO external_outcomes (decision_id, outcome, source, recorded_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (decision_id) DO UPDATE SET "
                "outcome = excluded.outcome, source = excluded.source, "
                "recorded_at = excluded.recorded_at",
                (str(decision_id), payload, source, now),
            )
        return "external"
