"""The Typer application; each command module adds itself here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="safepredict",
    help="safepredict: monitor decision logs, work the review queue, benchmark abstention.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Run a safepredict command."""


from safepredict.cli import bench as _bench  # noqa: E402, F401  # registers `safepredict bench`
from safepredict.cli import monitor as _monitor  # noqa: E402, F401  # registers `safepredict monitor`
from safepredict.cli import review as _review  # noqa: E402, F401  # registers `review` on app
from safepredict.cli import review_serve as _review_serve  # noqa: E402, F401  # registers `review serve`
