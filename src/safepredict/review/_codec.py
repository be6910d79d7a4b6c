"""Backend-neutral case codecs of the review queues: rows in, cases out (private)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from safepredict._jsonl import dumps
from safepredict._validation import describe
from safepredict.exceptions import ConfigError
from safepredict.review.cases import utc_now

STATUSES = ("pending", "claimed", "resolved")
#: What a pending case waits for: another reviewer's answer, or an adjudicator after a tie.
STAGES = ("review", "adjudication")
#: ``outcome_source`` values written by reviewers (anything else came from outside).
REVIEW_SOURCES = ("review", "consensus", "adjudication")

_JSON_COLUMNS = ("reasons", "prediction", "prediction_set", "interval", "explanation", "inputs")
_COLUMNS = (
    "decision_id",
    "created_at",
    "model_name",
    "model_version",
    "tier",
    "action",
    "reasons",
    "prediction",
    "prediction_set",
    "interval",
    "confidence",
    "explanation",
    "inputs",
    "inputs_hash",
    "audit",
    "audit_probability",
)
#: Columns a queue fills at enqueue time from its review policy (see ``review.priority``).
_POLICY_COLUMNS = ("priority", "reviews_required")
_INSERTED = (*_COLUMNS, *_POLICY_COLUMNS)
INSERT = (
    f"INSERT INTO cases ({', '.join(_INSERTED)}) VALUES ({', '.join('?' * len(_INSERTED))}) "
    "ON CONFLICT (decision_id) DO NOTHING"
)


def case_params(case: Mapping[str, Any]) -> list[Any]:
    """The :data:`INSERT` parameters of the case's own columns (the policy columns follow)."""
    out: list[Any] = []
    for col in _COLUMNS:
        value = case.get(col)
        if col == "decision_id":
            if value is None:
                raise ConfigError("a case needs a 'decision_id'; got None.")
            out.append(str(value))
        elif col == "created_at":
            out.append(str(value) if value is not None else utc_now())
        elif col in ("tier", "action"):
            out.append("" if value is None else str(value))
        elif col in _JSON_COLUMNS:
            if col == "reasons":
                out.append(dumps(list(value or ())))
            else:
                out.append(None if value is None else dumps(value))
        elif col == "confidence":
            out.append(None if value is None else float(value))
        elif col == "audit":
            out.append(1 if value else 0)
        elif col == "audit_probability":
            out.append(audit_probability(value))
        else:
            out.append(None if value is None else str(value))
    return out


def audit_probability(value: Any) -> float | None:
    """A case's ``audit_probability``: ``None`` or a number in (0, 1].

    Examples
    --------
    >>> audit_probability(0.05), audit_probability(None)
    (0.05, None)
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 < value <= 1.0:
        return float(value)
    raise ConfigError(
        "a case's 'audit_probability' must be None or a number in (0, 1] (the probability "
        f"the row was sampled for audit); got {describe(value)}."
    )


def row_to_case(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as a case: JSON columns decoded, ``audit`` a bool, the ordering key dropped."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "seq":
            continue
        if key in _JSON_COLUMNS or key == "outcome":
            value = None if value is None else json.loads(value)
        elif key == "audit":
            value = bool(value)
        out[key] = value
    return out


def has_reason(reasons: Sequence[str], reason: str) -> bool:
    """A reason matches itself and its qualified forms (``ood`` ~ ``ood:x``)."""
    return any(r == reason or r.startswith(reason + ":") for r in reasons)


def cutoff(older_than: Any) -> str:
    """``created_at`` bound for ``older_than``; an age beyond the calendar matches nothing."""
    if isinstance(older_than, datetime):
        moment = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(older_than, timedelta):
        seconds = older_than.total_seconds()
    elif isinstance(older_than, int | float) and not isinstance(older_than, bool):
        seconds = float(older_than)
    else:
        raise ConfigError(
            "older_than must be a datetime (created before), a timedelta or a number of "
            f"seconds (age); got {describe(older_than)}."
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"older_than must be a finite age >= 0 (seconds or a timedelta); got "
            f"{describe(older_than)}."
        )
    try:
        moment = datetime.now(UTC) - timedelta(seconds=seconds)
    except OverflowError:  # older than year 1: no case can be that old
        return "0000"
    return moment.isoformat(timespec="microseconds")


def write_export(fh: IO[str], cases: list[dict[str, Any]], format: str) -> None:
    if format == "jsonl":
        for case in cases:
            fh.write(dumps(case) + "\n")
        return
    columns = (*_COLUMNS, "status", "reviewer", "claimed_at", "resolved_at", "outcome", "note")
    writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for case in cases:
        row = {
            k: (dumps(case.get(k)) if k in (*_JSON_COLUMNS, "outcome") else case.get(k))
            for k in columns
        }
        writer.writerow(row)


def check_reviewer(reviewer: Any) -> str:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ConfigError(
            f"reviewer must be a non-empty string (who is reviewing); got {describe(reviewer)}."
        )
    return reviewer


def parse_time(text: str) -> datetime:
    """A stored ISO 8601 timestamp as an aware datetime.

    Examples
    --------
    >>> parse_time("2026-01-02T03:04:05.000006+00:00").microsecond
    6
    """
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def later(seconds: float) -> str:
    """The UTC moment ``seconds`` from now, formatted like :func:`utc_now` (sorts as text).

    Examples
    --------
    >>> later(60) > utc_now()
    True
    """
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def check_ttl(ttl: Any, name: str = "ttl") -> float:
    """A lease length in seconds: a finite number in (0, 7 days].

    Examples
    --------
    >>> check_ttl(90)
    90.0
    """
    ok = (
        isinstance(ttl, int | float)
        and not isinstance(ttl, bool)
        and math.isfinite(ttl)
        and 0 < ttl <= 7 * 86400
    )
    if not ok:
        raise ConfigError(
            f"{name} must be a lease length in seconds in (0, 604800] (e.g. 1800 for 30 "
            f"minutes); got {describe(ttl)}."
        )
    return float(ttl)
