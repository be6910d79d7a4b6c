"""Optional dependencies: import one, or say which extra installs it (layer 0)."""

from __future__ import annotations

import importlib
from types import ModuleType

from safepredict.exceptions import MissingExtraError

__all__ = ["missing_extra", "require"]


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the extra to install.

    Parameters
    ----------
    module : str
        The module to import, e.g. ``"uvicorn"``.
    extra : str
        The safepredict extra that installs it, e.g. ``"review"``.
    feature : str
        What needs it, in words (``"the reviewer console"``).

    Examples
    --------
    >>> require("json", "core", "parsing").__name__
    'json'
    >>> require("no_such_module_xyz", "review", "the reviewer console")
    Traceback (most recent call last):
    ...
    safepredict.exceptions.MissingExtraError: the reviewer console needs no_such_module_xyz, \
which is not installed: pip install 'safepredict[review]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(exc, extra, feature, module) from exc


def missing_extra(
    exc: ImportError, extra: str, feature: str, module: str | None = None
) -> MissingExtraError:
    """The :class:`MissingExtraError` for a failed import (for module-level ``try`` imports).

    Examples
    --------
    >>> try:
    ...     import no_such_module_xyz
    ... except ImportError as exc:
    ...     print(missing_extra(exc, "prometheus", "safepredict.monitoring.prometheus"))
    safepredict.monitoring.prometheus needs no_such_module_xyz, which is not installed: \
pip install 'safepredict[prometheus]'
    """
    missing = exc.name or module or "an optional dependency"
    return MissingExtraError(
        f"{feature} needs {missing}, which is not installed: pip install 'safepredict[{extra}]'"
    )
