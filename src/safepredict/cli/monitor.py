"""``safepredict monitor LOG.jsonl``: the health of a model from its decision log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from safepredict.exceptions import SafePredictError
from safepredict.monitoring.monitor import MonitorReport, monitor

__all__ = ["monitor_command", "print_report", "summary_lines"]

#: Logs at least this big get a progress bar (on a terminal).
PROGRESS_MIN_BYTES = 32 * 1024 * 1024


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def summary_lines(report: MonitorReport) -> list[str]:
    """One line per reading problem: malformed events skipped, files cut short.

    Examples
    --------
    >>> report = MonitorReport(["a.jsonl"], 0.0, {"decision": 9, "malformed": 1}, [], [], None,
    ...     [], malformed=[{"source": "a.jsonl", "event": "safepredict.decision",
    ...     "decision_id": "b-3", "problem": "'tier' must be a string"}])
    >>> summary_lines(report)
    ["1 malformed event skipped (first: a.jsonl, decision b-3: 'tier' must be a string)"]
    """
    lines = []
    n = int(report.events.get("malformed", 0))
    if n:
        first = report.malformed[0] if report.malformed else None
        where = ""
        if first is not None:
            ref = f", decision {first['decision_id']}" if first.get("decision_id") else ""
            where = f" (first: {first['source']}{ref}: {first['problem']})"
        lines.append(f"{n:,} malformed event{'s' if n != 1 else ''} skipped{where}")
    lines += [str(issue["detail"]) for issue in report.issues]
    return lines


def print_report(report: MonitorReport, console: Console) -> None:
    """Render the report as rich tables."""
    console.print(
        f"[bold]safepredict monitor[/bold]  {', '.join(report.sources)}  "
        + "  ".join(f"{k}={v}" for k, v in report.events.items())
    )
    table = Table(title="Per window", show_lines=False)
    for col in (
        "window",
        "n",
        "accept",
        "review",
        "abstain",
        "abstain (cal)",
        "guard flags",
        "conf mean",
        "PSI",
        "KS D",
        "KS p",
        "flags",
    ):
        table.add_column(col, justify="right" if col != "window" else "left")
    for w in report.windows:
        drift = w["drift"] or {}
        abst = w["abstention"] or {}
        flags = []
        if drift.get("flagged"):
            flags.append("drift")
        if abst.get("flagged"):
            flags.append("abstain")
        table.add_row(
            w["start"] or "all",
            str(w["n"]),
            _pct(w["actions"].get("accept", 0) / w["n"] if w["n"] else None),
            _pct(w["review_rate"]),
            _pct(w["abstain_rate"]),
            _pct(abst.get("baseline")),
            _pct(w["guard_flag_rate"]),
            _num(w["confidence"]["mean"]),
            _num(drift.get("psi")),
            _num(drift.get("ks_d")),
            _num(drift.get("ks_pvalue"), ".2g"),
            "[red]" + ",".join(flags) + "[/red]" if flags else "",
        )
    console.print(table)
    from safepredict.monitoring.html import feature_rows, guard_summary

    drifted = feature_rows(report)
    if drifted:
        t = Table(title="Input drift per feature (vs the calibration bins)")
        for col in ("window", "rows", "columns drifted", "worst columns"):
            t.add_column(col)
        for row in drifted:
            t.add_row(*map(escape, row))
        console.print(t)

    guards = guard_summary(report)
    if guards["flagged_rows"]:
        # Shares of rows, never of reason codes: a row can carry several codes.
        codes = ", ".join(f"{k} {v:,}" for k, v in guards["codes"].items())
        console.print(
            f"guards flagged {guards['flagged_rows']:,} of {guards['rows']:,} rows "
            f"({_pct(guards['flagged_share'])})"
            + (f"; reason codes (a row can have several): {codes}" if codes else "")
        )
    if report.outcomes is not None:
        t = Table(title=f"Realized error per tier ({100 * report.outcomes['ci_level']:.0f}% CI)")
        for col in ("tier", "action", "labelled", "errors", "error", "CI", "max_error", "flag"):
            t.add_column(col)
        for r in report.outcomes["tiers"]:
            t.add_row(
                str(r["tier"]),
                str(r["action"]),
                str(r["scored"]),
                str(r["errors"]),
                _pct(r["error_rate"]),
                f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]" if r["scored"] else "-",
                "-" if r["max_error"] is None else str(r["max_error"]),
                "[red]ABOVE max_error[/red]" if r["flagged"] else "",
            )
        console.print(t)
        console.print(
            f"outcomes: {report.outcomes['n_outcomes']}, joined to decisions: "
            f"{report.outcomes['n_joined']}"
        )
    if report.tier_health and report.tier_health["tiers"]:
        _print_tier_health(report.tier_health, console)
    if report.review_sla:
        _print_review_sla(report.review_sla, console)
    if report.alerts:
        console.print("[bold red]Alerts[/bold red]")
        for a in report.alerts:
            console.print(
                f"  [red]{a['kind']}[/red] "
                + (f"window {a['window']}" if "window" in a else f"tier {a.get('tier', '')}")
                + f": {a['detail']}"
            )
    else:
        console.print("[green]No alerts.[/green]")


def _print_tier_health(health: dict[str, Any], console: Console) -> None:
    """Per accepting tier: audited outcomes, weighted error, anytime-valid bounds, alarm."""
    level = f"{100 * (1 - health['delta']):.0f}%"
    t = Table(title=f"Tier health (anytime-valid {level} bounds, audit-weighted)")
    for col in ("tier", "audited", "errors", "weighted error", "bounds", "max_error", "alarm"):
        t.add_column(col)
    for h in health["tiers"]:
        t.add_row(
            str(h["tier"]),
            f"{h['n_outcomes']:,}",
            f"{h['n_errors']:,}",
            _pct(h["estimate"]),
            f"[{_pct(h['lower'])}, {_pct(h['upper'])}]",
            "-" if h["max_error"] is None else str(h["max_error"]),
            "[red]ALARM[/red]" if h["alarm"] else "",
        )
    console.print(t)


def _seconds(v: Any) -> str:
    """A duration for people: ``-`` when unknown, else s / min / h."""
    if v is None:
        return "-"
    v = float(v)
    return f"{v:.0f} s" if v < 120 else f"{v / 60:.0f} min" if v < 7200 else f"{v / 3600:.1f} h"


def _print_review_sla(sla: dict[str, Any], console: Console) -> None:
    """Per tier: oldest pending case, median time to claim and to resolve, adjudication."""
    t = Table(title="Review queue service levels")
    for col in ("tier", "oldest pending", "median to claim", "median to resolve", "adjudication"):
        t.add_column(col)
    for tier in sorted(sla, key=lambda k: (k == "*", k)):
        row = sla[tier]
        t.add_row(
            "all tiers" if tier == "*" else str(tier),
            _seconds(row.get("oldest_pending_s")),
            _seconds(row.get("claim_s")),
            _seconds(row.get("resolve_s")),
            str(row.get("adjudication", 0)),
        )
    console.print(t)


def monitor_command(
    log: Annotated[
        list[Path],
        typer.Argument(help="JSON-lines event log(s), .gz is fine, or directories of them."),
    ],
    feedback: Annotated[
        Path | None,
        typer.Option(help="Outcomes keyed by decision_id (CSV or JSONL with y_true)."),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(help="Review queue: a SQLite .db path or a postgresql:// URL."),
    ] = None,
    window: Annotated[str, typer.Option(help="Window length: 15m, 1h, 1d or 'all'.")] = "1h",
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report.")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar.")
    ] = None,
    fail_on_alert: Annotated[
        bool, typer.Option(help="Exit with status 2 when any alert is raised.")
    ] = False,
    workers: Annotated[
        str,
        typer.Option(
            help="Processes reading a plain log: 'auto' (one per CPU for logs of 64 MB or "
            "more) or a number (1: this process only)."
        ),
    ] = "auto",
) -> None:
    """Report volume, tier/action mix, drift and realized error from a decision log."""
    err = Console(stderr=True)
    n_workers: int | str = int(workers) if workers.strip().isdigit() else workers
    size = sum(p.stat().st_size for p in log if p.is_file())
    show = progress if progress is not None else (err.is_terminal and size >= PROGRESS_MIN_BYTES)
    try:
        if show:
            with Progress(
                TextColumn("reading"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as bar:
                task = bar.add_task("read", total=size)
                report = monitor(
                    log,
                    window=window,
                    labels=feedback,
                    queue=queue,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    workers=n_workers,
                )
        else:
            report = monitor(log, window=window, labels=feedback, queue=queue, workers=n_workers)
    except SafePredictError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    for line in summary_lines(report):  # on stderr: --json output stays parseable
        err.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    if html_out is not None:
        from safepredict.monitoring.html import render_html

        html_out.write_text(render_html(report), encoding="utf-8")
    if json_out:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    else:
        print_report(report, Console())
        if html_out is not None:
            Console().print(f"HTML report written to {html_out}")
    if fail_on_alert and report.alerts:
        raise typer.Exit(2)
