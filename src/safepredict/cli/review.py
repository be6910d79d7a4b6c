"""``safepredict review``: work the embedded review queue from a terminal.

Commands: ``list``, ``show``, ``claim``, ``resolve``, ``counts``, ``export``; ``serve`` is
added to :data:`review_app` in :mod:`safepredict.cli._app`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from safepredict.exceptions import SafePredictError
from safepredict.review import SQLiteReviewQueue

__all__ = ["open_queue", "review_app"]

review_app = typer.Typer(
    name="review",
    help="Work the human review queue (a SQLite file written by SafePredictor(router=...)).",
    no_args_is_help=True,
)

QueueOpt = Annotated[
    Path,
    typer.Option("--queue", "-q", help="The review queue database, e.g. reviews.db."),
]
ReviewerOpt = Annotated[str, typer.Option("--reviewer", "-r", help="Who is reviewing.")]

_console = Console()
_err = Console(stderr=True, soft_wrap=True)  # error lines are never re-wrapped


def open_queue(path: Path) -> SQLiteReviewQueue:
    """Open an existing queue (a missing file is an error, not a new empty queue)."""
    if not path.exists():
        _err.print(
            f"[red]error:[/red] no review queue at {str(path)!r}; pass the database the "
            "predictor routes to (SafePredictor(router='reviews.db'))."
        )
        raise typer.Exit(2)
    return SQLiteReviewQueue(path)


def _fail(exc: Exception) -> typer.Exit:
    _err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def _short(value: Any, width: int = 28) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _parse_outcome(text: str) -> Any:
    """JSON if it parses (``1``, ``2.5``, ``[1, 2]``, ``"a"``), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _list_title(
    q: SQLiteReviewQueue,
    cases: list[dict[str, Any]],
    status: str,
    tier: str | None,
    reason: str | None,
    limit: int,
    queue: Path,
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
    return f"{count}{label} case(s){where} in {queue}"


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
    queue: QueueOpt = Path("reviews.db"),
    status: Annotated[str, typer.Option(help="pending, claimed, resolved or all.")] = "pending",
    tier: Annotated[str | None, typer.Option(help="Only this tier.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only cases with this reason.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List cases, oldest first."""
    q = open_queue(queue)
    try:
        if status == "pending":
            cases = q.pending(limit, tier=tier, reason=reason)
        else:
            cases = q.cases(None if status == "all" else status, limit=limit, tier=tier,
                            reason=reason)  # fmt: skip
    except SafePredictError as exc:
        raise _fail(exc) from exc
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
    queue: QueueOpt = Path("reviews.db"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the case as JSON.")] = False,
) -> None:
    """Show every field of one case."""
    case = open_queue(queue).get(decision_id)
    if case is None:
        _err.print(f"[red]error:[/red] no case with decision_id {decision_id!r} in {queue}.")
        raise typer.Exit(1)
    if as_json:
        _console.print_json(json.dumps(case, ensure_ascii=False))
        return
    for table in _case_tables(case):
        _console.print(table)


@review_app.command("claim")
def claim(
    reviewer: ReviewerOpt,
    queue: QueueOpt = Path("reviews.db"),
    tier: Annotated[str | None, typer.Option(help="Only from this tier.")] = None,
) -> None:
    """Claim the oldest pending case and show it."""
    try:
        case = open_queue(queue).claim(reviewer, tier=tier)
    except SafePredictError as exc:
        raise _fail(exc) from exc
    if case is None:
        _console.print("no pending case")
        raise typer.Exit(3)
    _console.print_json(json.dumps(case, ensure_ascii=False))


@review_app.command("resolve")
def resolve(
    decision_id: str,
    outcome: Annotated[
        str, typer.Option(help='The true outcome: JSON (1, 2.5, "cat") or plain text.')
    ],
    reviewer: ReviewerOpt,
    queue: QueueOpt = Path("reviews.db"),
    note: Annotated[str | None, typer.Option(help="Free-text note.")] = None,
) -> None:
    """Resolve a case (a pending case is claimed for REVIEWER first)."""
    q = open_queue(queue)
    try:
        current = q.get(decision_id)
        if current is not None and current["status"] == "pending":
            q.claim_case(decision_id, reviewer)
        case = q.resolve(decision_id, _parse_outcome(outcome), reviewer, note=note)
    except SafePredictError as exc:
        raise _fail(exc) from exc
    _console.print(
        f"resolved {case['decision_id']!r} with outcome {json.dumps(case['outcome'])} "
        f"by {case['reviewer']}"
    )


@review_app.command("counts")
def counts(queue: QueueOpt = Path("reviews.db")) -> None:
    """Cases per tier and status."""
    data = open_queue(queue).counts()
    table = Table(title=f"cases in {queue}")
    for col in ("tier", "pending", "claimed", "resolved"):
        table.add_column(col, justify="left" if col == "tier" else "right")
    for tier, row in sorted(data.items(), key=lambda kv: (kv[0] == "*", kv[0])):
        table.add_row("all" if tier == "*" else tier, *(str(row[s]) for s in row))
    _console.print(table)


@review_app.command("export")
def export(
    out: Annotated[str, typer.Option("--out", "-o", help="Output file, or - for stdout.")],
    queue: QueueOpt = Path("reviews.db"),
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
) -> None:
    """Export every case (any status)."""
    q = open_queue(queue)
    try:
        n = q.export(sys.stdout if out == "-" else out, format=fmt)
    except SafePredictError as exc:
        raise _fail(exc) from exc
    if out != "-":
        _err.print(f"exported {n} case(s) to {out}")
