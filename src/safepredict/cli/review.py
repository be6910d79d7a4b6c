"""``safepredict review``: work the embedded review queue from a terminal.

Commands: ``list``, ``show``, ``claim``, ``resolve``, ``counts``, ``stats``, ``export``;
``serve`` is
added to :data:`review_app` in :mod:`safepredict.cli._app`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from safepredict.exceptions import SafePredictError
from safepredict.review import PostgresReviewQueue, SQLiteReviewQueue
from safepredict.review._core import ReviewQueueCore
from safepredict.review.outcomes import check_outcome, parse_outcome

__all__ = ["open_queue", "review_app"]

review_app = typer.Typer(
    name="review",
    help="Work the human review queue (the SQLite file or PostgreSQL database that "
    "SafePredictor(router=...) writes).",
    no_args_is_help=True,
)

QueueOpt = Annotated[
    str,
    typer.Option(
        "--queue",
        "-q",
        help="The review queue: a SQLite file (reviews.db) or a postgresql:// URL.",
    ),
]
ReviewerOpt = Annotated[str, typer.Option("--reviewer", "-r", help="Who is reviewing.")]

_console = Console()
_err = Console(stderr=True, soft_wrap=True)  # error lines are never re-wrapped


def open_queue(target: str | Path) -> ReviewQueueCore:
    """Open an existing queue (a missing file is an error, not a new empty queue)."""
    if isinstance(target, str) and target.lower().startswith(("postgresql://", "postgres://")):
        return PostgresReviewQueue(target)
    path = Path(target)
    if not path.exists():
        _err.print(
            f"[red]error:[/red] no review queue at {str(path)!r}; pass the database the "
            "predictor routes to (SafePredictor(router='reviews.db'))."
        )
        raise typer.Exit(2)
    return SQLiteReviewQueue(path)


def display_name(target: str) -> str:
    """The queue as printed: a path as given, a database URL without its password."""
    if target.lower().startswith(("postgresql://", "postgres://")):
        with contextlib.suppress(SafePredictError):
            return PostgresReviewQueue(target).name
        return "a PostgreSQL database"
    return target


def fail(exc: Exception) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(1)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A SafePredictError (bad file, bad outcome, locked queue, ...) ends in one line, exit 1."""
    try:
        yield
    except SafePredictError as exc:
        raise fail(exc) from exc


def _short(value: Any, width: int = 28) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _list_title(
    q: ReviewQueueCore,
    cases: list[dict[str, Any]],
    status: str,
    tier: str | None,
    reason: str | None,
    limit: int,
    queue: str,
) -> str:
    """``"5 of 20 pending case(s) in reviews.db"`` (or ``"20 ..."`` when all are shown)."""
    shown = len(cases)
    total = shown
    if shown >= limit:  # the list may be cut short: count what matches
        if reason is None:
            row = q.counts().get("*" if tier is None else tier, {})
            total = sum(row.values()) if status == "all" else row.get(status, 0)
        else:
            wanted = None if status == "all" else status
            total = len(q.cases(wanted, limit=None, tier=tier, reason=reason))
    where = "".join(
        f" with {k} {v!r}" for k, v in (("tier", tier), ("reason", reason)) if v is not None
    )
    count = f"{shown} of {total}" if total > shown else f"{shown}"
    label = "" if status == "all" else f" {status}"
    return f"{count}{label} case(s){where} in {display_name(queue)}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ", ".join(_cell(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def _case_tables(case: dict[str, Any]) -> list[Table]:
    """One field/value table for the case, one more per mapping field (inputs, explanation)."""
    main = Table(title=f"case {case['decision_id']}", show_header=False)
    main.add_column("field", style="bold", no_wrap=True)
    main.add_column("value", overflow="fold")
    nested: list[Table] = []
    for key, value in case.items():
        if isinstance(value, dict) and value:
            sub = Table(title=key)
            sub.add_column("name", no_wrap=True)
            sub.add_column("value", overflow="fold")
            for k, v in value.items():
                sub.add_row(str(k), _cell(v))
            nested.append(sub)
            main.add_row(key, f"{len(value)} field(s), below")
        else:
            main.add_row(key, _cell(value))
    return [main, *nested]


@review_app.command("list")
def list_cases(
    queue: QueueOpt = "reviews.db",
    status: Annotated[str, typer.Option(help="pending, claimed, resolved or all.")] = "pending",
    tier: Annotated[str | None, typer.Option(help="Only this tier.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only cases with this reason.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List cases, oldest first."""
    with _one_line_errors():
        q = open_queue(queue)
        if status == "pending":
            cases = q.pending(limit, tier=tier, reason=reason)
        else:
            cases = q.cases(None if status == "all" else status, limit=limit, tier=tier,
                            reason=reason)  # fmt: skip
    if as_json:
        for case in cases:
            sys.stdout.write(json.dumps(case, ensure_ascii=False) + "\n")
        return
    table = Table(title=_list_title(q, cases, status, tier, reason, limit, queue))
    table.add_column("decision_id", no_wrap=True)
    for col in ("tier", "action", "audit", "prediction", "conf.", "reasons", "status"):
        table.add_column(col, overflow="fold")
    table.add_column("reviewer", overflow="fold")
    for c in cases:
        conf = "" if c["confidence"] is None else f"{c['confidence']:.3f}"
        table.add_row(
            c["decision_id"],
            c["tier"],
            c["action"],
            "yes" if c["audit"] else "",
            _short(c["prediction"]),
            conf,
            ", ".join(c["reasons"]),
            c["status"],
            c["reviewer"] or "",
        )
    _console.print(table)


@review_app.command("show")
def show(
    decision_id: str,
    queue: QueueOpt = "reviews.db",
    as_json: Annotated[bool, typer.Option("--json", help="Print the case as JSON.")] = False,
) -> None:
    """Show every field of one case."""
    with _one_line_errors():
        case = open_queue(queue).get(decision_id)
    if case is None:
        _err.print(
            f"[red]error:[/red] no case with decision_id {decision_id!r} in {display_name(queue)}."
        )
        raise typer.Exit(1)
    if as_json:
        _console.print_json(json.dumps(case, ensure_ascii=False))
        return
    for table in _case_tables(case):
        _console.print(table)


@review_app.command("claim")
def claim(
    reviewer: ReviewerOpt,
    queue: QueueOpt = "reviews.db",
    tier: Annotated[str | None, typer.Option(help="Only from this tier.")] = None,
) -> None:
    """Claim the oldest pending case and show it."""
    with _one_line_errors():
        case = open_queue(queue).claim(reviewer, tier=tier)
    if case is None:
        _console.print("no pending case")
        raise typer.Exit(3)
    _console.print_json(json.dumps(case, ensure_ascii=False))


@review_app.command("resolve")
def resolve(
    decision_id: str,
    outcome: Annotated[
        str,
        typer.Option(
            help="The true outcome: one of the model's labels (e.g. 1 or cat) or, for "
            "regression, a number. Anything else is refused with the valid choices."
        ),
    ],
    reviewer: ReviewerOpt,
    queue: QueueOpt = "reviews.db",
    note: Annotated[str | None, typer.Option(help="Free-text note.")] = None,
) -> None:
    """Resolve a case (a pending case is claimed for REVIEWER first)."""
    with _one_line_errors():
        q = open_queue(queue)
        value = check_outcome(parse_outcome(outcome), q.outcome_space())  # before claiming
        current = q.get(decision_id)
        if current is not None and current["status"] == "pending":
            q.claim_case(decision_id, reviewer)
        case = q.resolve(decision_id, value, reviewer, note=note)
    _console.print(
        f"resolved {case['decision_id']!r} with outcome {json.dumps(case['outcome'])} "
        f"by {case['reviewer']}"
    )


@review_app.command("counts")
def counts(queue: QueueOpt = "reviews.db") -> None:
    """Cases per tier and status."""
    with _one_line_errors():
        data = open_queue(queue).counts()
    table = Table(title=f"cases in {display_name(queue)}")
    for col in ("tier", "pending", "claimed", "resolved"):
        table.add_column(col, justify="left" if col == "tier" else "right")
    for tier, row in sorted(data.items(), key=lambda kv: (kv[0] == "*", kv[0])):
        table.add_row("all" if tier == "*" else tier, *(str(row[s]) for s in row))
    _console.print(table)


def _seconds(value: Any) -> str:
    return "" if value is None else f"{value:,.0f} s" if value >= 10 else f"{value:.2g} s"


@review_app.command("stats")
def stats(
    queue: QueueOpt = "reviews.db",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """SLA figures per tier, reviewer agreement (Cohen's kappa, Krippendorff's alpha), accuracy."""
    with _one_line_errors():
        q = open_queue(queue)
        sla = q.counts(sla=True)
        people = q.reviewer_stats()
    if as_json:
        _console.print_json(json.dumps({"tiers": sla, **people}))
        return
    table = Table(title=f"service levels in {display_name(queue)}")
    columns = ("pending", "claimed", "resolved", "oldest_pending_s", "claim_s", "resolve_s")
    for col in (
        "tier",
        "pending",
        "claimed",
        "resolved",
        "oldest pending",
        "to claim",
        "to resolve",
        "adjudication",
    ):
        table.add_column(col, justify="left" if col == "tier" else "right")
    for tier, row in sorted(sla.items(), key=lambda kv: (kv[0] == "*", kv[0])):
        cells = [str(row[c]) if c in columns[:3] else _seconds(row[c]) for c in columns]
        table.add_row("all" if tier == "*" else tier, *cells, str(row["adjudication"]))
    _console.print(table)
    who = Table(title="reviewers")
    for col in ("reviewer", "answers", "gold", "accuracy"):
        who.add_column(col, justify="left" if col == "reviewer" else "right")
    for name, row in people["reviewers"].items():
        accuracy = "" if row["accuracy"] is None else f"{row['accuracy']:.1%}"
        who.add_row(
            escape(name), str(row["answers"]), f"{row['gold_correct']}/{row['gold_n']}", accuracy
        )
    _console.print(who)
    for pair in people["pairs"]:
        if pair["n"]:
            _console.print(
                f"kappa {escape(pair['a'])} vs {escape(pair['b'])}: {pair['kappa']:.3f} "
                f"over {pair['n']} shared case(s)"
            )
    alpha = people["alpha"]
    _console.print(
        "Krippendorff's alpha: "
        + ("n/a (no case has two answers)" if alpha is None else f"{alpha:.3f}")
        + f" over {people['units']} case(s)"
    )


@review_app.command("export")
def export(
    out: Annotated[str, typer.Option("--out", "-o", help="Output file, or - for stdout.")],
    queue: QueueOpt = "reviews.db",
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
) -> None:
    """Export every case (any status)."""
    with _one_line_errors():
        try:
            n = open_queue(queue).export(sys.stdout if out == "-" else out, format=fmt)
        except OSError as exc:
            raise fail(exc) from exc
    if out != "-":
        _err.print(f"exported {n} case(s) to {out}")
