"""The ``safepredict`` command line (layer 4): ``monitor``, ``review``, ``bench``.

Each command lives in its own module in this package; :mod:`safepredict.cli._app`
registers them all on the Typer app, explicitly.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI (entry point of the ``safepredict`` script)."""
    try:
        from safepredict.cli._app import app
    except ImportError as exc:  # typer/rich are the optional 'cli' extra
        sys.exit(
            f"the safepredict command line needs the 'cli' extra ({exc.name} is missing): "
            "pip install 'safepredict[cli]'"
        )
    from safepredict.exceptions import MissingExtraError

    try:
        app(args=argv)
    except MissingExtraError as exc:  # an optional feature's extra: one line, not a traceback
        sys.exit(f"error: {exc}")
