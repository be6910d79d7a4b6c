"""The Typer application: every command is registered here, explicitly."""

from __future__ import annotations

import typer

from safepredict.cli.bench import BENCH_COMMAND, bench
from safepredict.cli.monitor import monitor_command
from safepredict.cli.review import review_app
from safepredict.cli.review_serve import serve

__all__ = ["app"]

app = typer.Typer(
    name="safepredict",
    help="safepredict: monitor decision logs, work the review queue, benchmark abstention.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Run a safepredict command."""


app.command("bench", **BENCH_COMMAND)(bench)
app.command("monitor")(monitor_command)
review_app.command("serve")(serve)
app.add_typer(review_app, name="review")
