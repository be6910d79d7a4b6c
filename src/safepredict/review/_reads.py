"""The read side of a review queue over any backend: cases, counts, SLA figures, stats."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, ParamSpec, TypeVar

from safepredict._jsonl import dumps
from safepredict._validation import describe
from safepredict.exceptions import CaseNotFoundError, ConfigError, ReviewQueueError
from safepredict.review._codec import (
    REVIEW_SOURCES,
    STATUSES,
    cutoff,
    has_reason,
    parse_time,
    row_to_case,
    write_export,
)
from safepredict.review.agreement import reviewer_stats
from safepredict.review.cases import utc_now
from safepredict.review.outcomes import OutcomeSpace

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Resolved cases per tier the time-to-claim/resolve medians look back over.
SLA_WINDOW = 1000

_OUTCOME_KEYS = (
    "decision_id",
    "outcome",
    "outcome_source",
    "tier",
    "action",
    "audit",
    "audit_probability",
    "reasons",
    "prediction",
    "prediction_set",
    "interval",
    "confidence",
    "inputs",
    "inputs_hash",
    "model_name",
    "model_version",
    "created_at",
    "resolved_at",
    "reviewer",
)


def guarded(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a backend's database error raised by a queue method into a ReviewQueueError."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        queue: Any = args[0]
        try:
            return method(*args, **kwargs)
        except queue._db_errors as exc:
            raise queue._translate(exc) from exc

    return wrapper


class QueueReads(ABC):
    """Reads every backend shares; a backend supplies the storage seam.

    The seam: ``_read(sql, params)`` (rows as dicts), ``_transaction()`` (a
    context manager yielding ``run(sql, params) -> rows`` and ``many(sql,
    rows)``), ``_status_rows()`` and ``_summary_rows(today)``, ``_db_errors`` and
    ``_translate(exc)``, and the dialect names ``SEQ`` (insertion order column),
    ``SKIP_LOCKED`` (claim lock clause) and ``INSTR`` (substring position).
    """

    SEQ = "rowid"
    SKIP_LOCKED = ""
    INSTR = "instr"
    _db_errors: tuple[type[BaseException], ...] = ()
    name: str
    _meta_cache: dict[str, str]
    _staged: dict[str, str]

    # ------------------------------------------------------- storage seam
    @abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The backend's part of the storage seam."""

    @abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        """The backend's part of the storage seam."""

    @abstractmethod
    def _translate(self, exc: BaseException) -> ReviewQueueError:
        """The backend's part of the storage seam."""

    @abstractmethod
    def _status_rows(self) -> list[tuple[str, str, int]]:
        """``(tier, status, n)`` for every non-empty pair."""

    @abstractmethod
    def _summary_rows(self, today: str) -> dict[tuple[str, str], int]:
        """``{("resolved_on", today): n, ("audit", "n"): n, ("audit", "errors"): n}``."""

    # --------------------------------------------------------------- reads
    @guarded
    def get(self, decision_id: str) -> dict[str, Any] | None:
        """The case with this id (every column, JSON decoded), or None."""
        rows = self._read("SELECT * FROM cases WHERE decision_id = ?", (str(decision_id),))
        return row_to_case(rows[0]) if rows else None

    def _require(self, decision_id: str) -> dict[str, Any]:
        case = self.get(decision_id)
        if case is None:
            raise CaseNotFoundError(
                f"no case with decision_id {decision_id!r} in {self.name}; list the queue "
                "with queue.pending() or `safepredict review list`."
            )
        return case

    @guarded
    def _select(
        self,
        status: str | None,
        *,
        limit: int | None,
        tier: str | None,
        reason: str | None,
        older_than: Any,
        order: str | None = None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            if status not in STATUSES:
                raise ConfigError(f"status must be one of {STATUSES}; got {describe(status)}.")
            where.append("status = ?")
            params.append(status)
        if tier is not None:
            where.append("tier = ?")
            params.append(str(tier))
        if reason is not None:
            # Pre-filter on the JSON text (a superset: the encoded reason without its
            # closing quote), then match exactly in Python, where embedded NULs and
            # LIKE wildcards cannot confuse the comparison.
            where.append(f"{self.INSTR}(reasons, ?) > 0")
            params.append(dumps(str(reason))[:-1])
        if older_than is not None:
            where.append("created_at < ?")
            params.append(cutoff(older_than))
        sql = "SELECT * FROM cases"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order or f'created_at, {self.SEQ}'}"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ConfigError(f"limit must be an integer >= 0; got {describe(limit)}.")
            if reason is None:
                sql += " LIMIT ?"
                params.append(limit)
        out: list[dict[str, Any]] = []
        for row in self._read(sql, params):
            case = row_to_case(row)
            if reason is not None and not has_reason(case["reasons"], str(reason)):
                continue
            out.append(case)
            if limit is not None and len(out) >= limit:
                break
        return out

    def pending(
        self,
        limit: int | None = 50,
        tier: str | None = None,
        reason: str | None = None,
        older_than: Any = None,
    ) -> list[dict[str, Any]]:
        """Pending cases in claim order: highest priority first, then oldest first.

        With the default ``"fifo"`` priority that is oldest first (see
        :mod:`safepredict.review.priority`).

        Parameters
        ----------
        limit : int or None, default=50
            At most this many (None: all).
        tier : str, optional
            Only this tier.
        reason : str, optional
            Only cases with this reason code (``"out_of_range"`` also matches
            ``"out_of_range:age"``).
        older_than : timedelta, float seconds or datetime, optional
            Only cases created more than this long ago (or before this moment).
        """
        return self._select(
            "pending",
            limit=limit,
            tier=tier,
            reason=reason,
            older_than=older_than,
            order=f"priority DESC, created_at, {self.SEQ}",
        )

    def cases(
        self,
        status: str | None = None,
        *,
        limit: int | None = None,
        tier: str | None = None,
        reason: str | None = None,
    ) -> list[dict[str, Any]]:
        """Cases in any (or the given) status, oldest first."""
        return self._select(status, limit=limit, tier=tier, reason=reason, older_than=None)

    @guarded
    def counts(self, *, sla: bool = False) -> dict[str, dict[str, Any]]:
        """Number of cases per tier and status: ``{tier: {status: n}}``.

        Every status appears (zero when empty); the key ``"*"`` totals all tiers.

        With ``sla=True`` each tier's entry also carries the SLA figures of
        :meth:`sla` (``oldest_pending_s``, ``claim_s``, ``resolve_s``,
        ``adjudication``; seconds, None without data).
        """
        out: dict[str, dict[str, Any]] = {"*": dict.fromkeys(STATUSES, 0)}
        for tier, status, n in self._status_rows():
            if status not in STATUSES:
                continue
            out.setdefault(tier, dict.fromkeys(STATUSES, 0))[status] = int(n)
            out["*"][status] += int(n)
        if sla:
            for tier, figures in self.sla().items():
                out.setdefault(tier, dict.fromkeys(STATUSES, 0)).update(figures)
        return out

    @guarded
    def sla(self) -> dict[str, dict[str, Any]]:
        """Service-level figures per tier (and ``"*"`` over all tiers).

        ``oldest_pending_s``: age of the oldest pending case; ``claim_s`` and
        ``resolve_s``: median seconds from routing to the first claim and to
        resolution, over each tier's last :data:`SLA_WINDOW` resolved cases
        (reviewer-resolved only); ``adjudication``: pending cases waiting for an
        adjudicator after a tie. Seconds are None when there is nothing to measure.
        """
        now = parse_time(utc_now())
        oldest = self._read(
            "SELECT tier, MIN(created_at) AS t FROM cases WHERE status = 'pending' GROUP BY tier"
        )
        tally = self._read(
            "SELECT tier, COUNT(*) AS n FROM cases WHERE status = 'pending' "
            "AND stage = 'adjudication' GROUP BY tier"
        )
        sources = ", ".join(f"'{s}'" for s in REVIEW_SOURCES)
        claim: dict[str, list[float]] = {"*": []}
        resolve: dict[str, list[float]] = {"*": []}
        for tier in sorted({t for t, _, _ in self._status_rows()}):
            done = self._read(
                "SELECT created_at, first_claimed_at, resolved_at FROM cases WHERE tier = ? "
                f"AND status = 'resolved' AND outcome_source IN ({sources}) "
                "ORDER BY resolved_at DESC LIMIT ?",
                (tier, SLA_WINDOW),
            )
            for row in done:
                created = parse_time(row["created_at"])
                took = (parse_time(row["resolved_at"]) - created).total_seconds()
                for key in (tier, "*"):
                    resolve.setdefault(key, []).append(took)
                    if row["first_claimed_at"]:
                        waited = (parse_time(row["first_claimed_at"]) - created).total_seconds()
                        claim.setdefault(key, []).append(waited)
        ages = {r["tier"]: (now - parse_time(r["t"])).total_seconds() for r in oldest}
        if ages:
            ages["*"] = max(ages.values())
        adjudication = {r["tier"]: int(r["n"]) for r in tally}
        adjudication["*"] = sum(adjudication.values())
        tiers = {"*", *ages, *claim, *resolve, *adjudication}
        return {
            tier: {
                "oldest_pending_s": ages.get(tier),
                "claim_s": statistics.median(claim[tier]) if claim.get(tier) else None,
                "resolve_s": statistics.median(resolve[tier]) if resolve.get(tier) else None,
                "adjudication": adjudication.get(tier, 0),
            }
            for tier in sorted(tiers)
        }

    @guarded
    def summary(self) -> dict[str, Any]:
        """Counts, cases resolved on ``today`` (UTC) and the audit tally.

        Returns ``{"counts": counts(), "resolved_today": int, "audit_n": int,
        "audit_errors": int}``: ``audit_*`` count resolved audit samples of
        accepted rows and those whose outcome differs from the prediction.
        """
        today = utc_now()[:10]
        found = self._summary_rows(today)
        return {
            "counts": self.counts(),
            "resolved_today": found.get(("resolved_on", today), 0),
            "audit_n": found.get(("audit", "n"), 0),
            "audit_errors": found.get(("audit", "errors"), 0),
        }

    @guarded
    def reviews(self, decision_id: str | None = None) -> list[dict[str, Any]]:
        """Every reviewer answer (of one case, or all), in answer order.

        Each: ``decision_id, reviewer, stage ("review" or "adjudication"),
        outcome, note, answered_at``. A case needing k reviewers has k
        ``"review"`` answers once resolved (plus one ``"adjudication"`` after a tie).
        """
        sql = "SELECT decision_id, reviewer, stage, outcome, note, answered_at FROM reviews"
        params: list[Any] = []
        if decision_id is not None:
            sql += " WHERE decision_id = ?"
            params.append(str(decision_id))
        rows = self._read(sql + " ORDER BY answered_at, reviewer", params)
        return [{**r, "outcome": json.loads(r["outcome"])} for r in rows]

    @guarded
    def reviewer_stats(self) -> dict[str, Any]:
        """Agreement and accuracy of the reviewers (see :mod:`~safepredict.review.agreement`).

        Votes are the first-stage answers; gold outcomes are audited accepted
        rows whose outcome arrived from outside the queue (``record_outcome``).
        """
        votes = [r for r in self.reviews() if r["stage"] == "review"]
        sources = ", ".join(f"'{s}'" for s in REVIEW_SOURCES)
        gold_rows = self._read(
            "SELECT decision_id, outcome FROM cases WHERE status = 'resolved' AND audit = 1 "
            f"AND action = 'accept' AND outcome_source NOT IN ({sources})"
        )
        gold = {r["decision_id"]: json.loads(r["outcome"]) for r in gold_rows}
        return reviewer_stats(votes, gold)

    # ------------------------------------------------------- outcome space
    @guarded
    def outcome_space(self) -> OutcomeSpace | None:
        """The outcome space the predictor recorded, or None (no predictor routed here yet)."""
        text = self._get_meta("outcome_space")
        return None if text is None else OutcomeSpace.from_json(text)

    @guarded
    def tiers(self) -> list[dict[str, Any]] | None:
        """The tiers the predictor recorded (see :meth:`set_tiers`), or None."""
        text = self._get_meta("tiers")
        try:
            value = None if text is None else json.loads(text)
        except (ValueError, RecursionError):
            return None
        if isinstance(value, list) and all(isinstance(t, dict) for t in value):
            return value
        return None

    def _get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        text = str(rows[0]["value"]) if rows else None
        if text is not None:
            self._meta_cache[key] = text
        return text

    @guarded
    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) AS n FROM cases")[0]["n"])

    def outcomes(
        self, *, audited_only: bool = False, tier: str | None = None, include_external: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Resolved cases with their outcome, in resolution order.

        Each item: ``decision_id, outcome, outcome_source, tier, action, audit,
        reasons, prediction, prediction_set, interval, confidence, inputs,
        inputs_hash, model_name, model_version, created_at, resolved_at,
        reviewer``. With ``include_external=True``, outcomes recorded for
        decisions that were never routed follow, with ``tier``/``action`` None.
        """
        sql = "SELECT * FROM cases WHERE status = 'resolved'"
        params: list[Any] = []
        if audited_only:
            sql += " AND audit = 1"
        if tier is not None:
            sql += " AND tier = ?"
            params.append(str(tier))
        sql += f" ORDER BY resolved_at, {self.SEQ}"
        rows, ext = self._fetch_outcomes(
            sql, params, include_external and not audited_only and tier is None
        )
        for row in rows:
            case = row_to_case(row)
            yield {k: case[k] for k in _OUTCOME_KEYS}
        for row in ext:
            item: dict[str, Any] = dict.fromkeys(_OUTCOME_KEYS)
            item.update(
                decision_id=row["decision_id"],
                outcome=json.loads(row["outcome"]),
                outcome_source=row["source"],
                audit=False,
                resolved_at=row["recorded_at"],
            )
            yield item

    @guarded
    def _fetch_outcomes(
        self, sql: str, params: list[Any], external: bool
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = self._read(sql, params)
        ext: list[dict[str, Any]] = []
        if external:
            ext = self._read(f"SELECT * FROM external_outcomes ORDER BY recorded_at, {self.SEQ}")
        return rows, ext

    @guarded
    def export(self, dest: str | os.PathLike[str] | IO[str], format: str = "jsonl") -> int:
        """Write every case (any status) to a file or open text stream; return the count.

        ``format="jsonl"``: one JSON object per line. ``format="csv"``: one row
        per case, the JSON-valued columns (reasons, prediction, ...) as JSON text.
        """
        if format not in ("jsonl", "csv"):
            raise ConfigError(f"format must be 'jsonl' or 'csv'; got {describe(format)}.")
        cases = self.cases()
        if isinstance(dest, str | os.PathLike):
            with open(dest, "w", encoding="utf-8", newline="") as fh:
                write_export(fh, cases, format)
        else:
            write_export(dest, cases, format)
        return len(cases)


def tier_settings(tiers: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    """Tier dicts by name (empty without a recorded policy)."""
    return {str(t.get("name")): t for t in tiers or ()}
