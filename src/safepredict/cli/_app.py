"""The Typer application: every command is registered here, explicitly.

Help text shows click-style metavars (``PATH``, ``FLOAT...``) instead of Typer's raw
type names (``<path>``, ``<list[float]>``) and none for flags (``--help``, ``--json``):
every command and group registered here is built with :class:`_Command` /
:class:`_Group`, which rewrite their parameters' metavars once, at construction.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from safepredict._version import __version__
from safepredict.cli.bench import BENCH_COMMAND, bench
from safepredict.cli.monitor import monitor_command
from safepredict.cli.review import review_app
from safepredict.cli.review_serve import serve

__all__ = ["app"]

_TYPE_NAMES = {
    "str": "TEXT",
    "text": "TEXT",
    "int": "INTEGER",
    "integer": "INTEGER",
    "float": "FLOAT",
    "path": "PATH",
    "bool": "",
    "boolean": "",
}


def _friendly(raw: str) -> str:
    """``<list[Path]>`` -> ``PATH...``, ``<int range>`` -> ``INTEGER``, ``<bool>`` -> ``""``."""
    text = raw.strip().removeprefix("<")
    multiple = text.endswith("...")
    text = text.removesuffix("...").removesuffix(">")
    if text.startswith("list[") and text.endswith("]"):
        multiple, text = True, text[5:-1]
    if "|" in text:
        name = "[" + text + "]"
    else:
        kind = text.split()[0].lower() if text.split() else ""
        name = _TYPE_NAMES.get(kind, kind.upper())
    return name + ("..." if multiple and name else "")


def _clean_metavars(params: list[Any]) -> None:
    # Typer (which may vendor its own click) renders the type column of its help from
    # display_type_rich(); click renders the metavar. Both are rewritten per instance.
    for param in params:
        flag = bool(getattr(param, "is_flag", False) or getattr(param, "count", False))
        if hasattr(param, "display_type_rich"):
            original = param.display_type_rich

            def rich(ctx: Any, original: Any = original, flag: bool = flag) -> str:
                shown = original(ctx)
                return "" if flag or shown is None else _friendly(str(shown))

            param.display_type_rich = rich
        elif getattr(param, "param_type_name", "") == "option" and param.metavar is None:
            param.metavar = "" if flag else _friendly(str(param.type.name))


class _Command(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _clean_metavars(self.params)

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        _clean_metavars(params[-1:])  # the --help option is made on demand
        return params


class _Group(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _clean_metavars(self.params)

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        _clean_metavars(params[-1:])
        return params


app = typer.Typer(
    name="safepredict",
    help="safepredict: monitor decision logs, work the review queue, benchmark abstention.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Group,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"safepredict {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Show the safepredict version and exit.",
    ),
) -> None:
    """Run a safepredict command."""


app.command("bench", cls=_Command, **BENCH_COMMAND)(bench)
app.command("monitor", cls=_Command)(monitor_command)
review_app.command("serve")(serve)
for _info in review_app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command
app.add_typer(review_app, name="review", cls=_Group)
