"""Aliases for modules that moved in 0.2 (layer 0): they warn on use and go in 0.3.

Examples
--------
>>> import warnings
>>> getattr_ = moved_module("safepredict.old_name", "safepredict.exceptions")
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     cls = getattr_("ConfigError")
>>> cls.__name__, caught[0].category.__name__
('ConfigError', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["moved_module", "warn_deprecated"]


def moved_module(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that forwards ``old.<name>`` to ``new.<name>`` with a warning.

    Parameters
    ----------
    old : str
        The module path that moved (the alias module's ``__name__``).
    new : str
        Where its names live now.

    Returns
    -------
    callable
        Assign it to the alias module's ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:  # noqa: N807  # the module hook's required name
        if name.startswith("__"):
            raise AttributeError(name)
        target = importlib.import_module(new)  # the alias only exists to reach it
        try:
            value = getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r}") from None
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; import it from there "
            f"(the {old} alias will be removed in safepredict 0.3).",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` and goes in safepredict 0.3.

    Parameters
    ----------
    old : str
        What the caller used, e.g. ``"Decisions.prediction_set(i)"``.
    new : str
        What to use instead, e.g. ``"Decisions.prediction_sets[i]"``.
    stacklevel : int, default=3
        Points the warning at the caller of the deprecated function (which calls
        this one).

    Examples
    --------
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_deprecated("old()", "new()")
    >>> str(caught[0].message)
    'old() is deprecated and will be removed in safepredict 0.3; use new() instead.'
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in safepredict 0.3; use {new} instead.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
