"""``safepredict review serve``: the reviewer console in a browser."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer

from safepredict._extras import require
from safepredict.cli.review import QueueOpt, display_name, fail, open_queue
from safepredict.exceptions import SafePredictError

__all__ = ["serve"]


def serve(
    queue: QueueOpt = "reviews.db",
    host: Annotated[str, typer.Option(help="Interface to bind (default: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            help="Access token every page needs. Default: $SAFEPREDICT_REVIEW_TOKEN, or a new "
            "random token printed at start-up.",
        ),
    ] = None,
) -> None:
    """Serve the reviewer console (pending list, case pages, claim / resolve)."""
    uvicorn = require("uvicorn", "review", "safepredict review serve")
    from safepredict.review.console import TOKEN_ENV, create_app

    q = open_queue(queue)
    try:
        q.counts()  # a corrupt, locked or newer file: one line now, not a failing page later
    except SafePredictError as exc:
        raise fail(exc) from exc
    token = token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    if len(token) < 8:
        typer.echo("error: the token must have at least 8 characters.", err=True)
        raise typer.Exit(2)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"warning: binding to {host} exposes the console beyond this machine; anyone who "
            "can reach it still needs the token.",
            err=True,
        )
    typer.echo(
        f"Reviewer console for {display_name(queue)}: http://{host}:{port}/?token={token}", err=True
    )
    uvicorn.run(create_app(q, token), host=host, port=port, log_level="warning")
