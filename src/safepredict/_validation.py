"""Parameter checks shared by every module (layer 0: no safepredict imports but exceptions).

Each check raises :class:`~safepredict.exceptions.ConfigError` with a message that
says which parameter, what was expected and what came, in the style of
scikit-learn's parameter validation.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable
from typing import Any

from safepredict.exceptions import ConfigError

__all__ = [
    "check_fraction",
    "check_one_of",
    "check_positive_int",
    "check_unknown_keys",
    "describe",
]


def describe(value: Any) -> str:
    """Short description of a value for error messages: its repr and its type.

    Examples
    --------
    >>> describe(1.5)
    '1.5 (float)'
    """
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_fraction(
    value: Any,
    name: str,
    *,
    low_open: bool = True,
    high_open: bool = True,
    where: str = "",
) -> float:
    """Check that ``value`` is a real number in the unit interval.

    Parameters
    ----------
    value : Any
        The value to check.
    name : str
        Parameter name used in the message.
    low_open, high_open : bool, default=True
        Whether 0 and 1 themselves are excluded.
    where : str, default=""
        Context prefix for the message (e.g. ``"tier 'auto': "``).

    Returns
    -------
    float
        The value as a float.

    Raises
    ------
    ConfigError
        If the value is not a number in the allowed interval.

    Examples
    --------
    >>> check_fraction(0.9, "confidence_level")
    0.9
    >>> check_fraction(1.2, "confidence_level")
    Traceback (most recent call last):
    ...
    safepredict.exceptions.ConfigError: confidence_level must be a number in (0, 1); ...
    """
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    interval = f"{lo}0, 1{hi}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}{name} must be a number in {interval}; got {describe(value)}.")
    v = float(value)
    ok = math.isfinite(v) and (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        raise ConfigError(f"{where}{name} must be a number in {interval}; got {describe(value)}.")
    return v


def check_positive_int(value: Any, name: str, *, where: str = "") -> int:
    """Check that ``value`` is an integer >= 1.

    Examples
    --------
    >>> check_positive_int(3, "max_set_size")
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}{name} must be an integer >= 1; got {describe(value)}.")
    return int(value)


def check_one_of(value: Any, name: str, options: Collection[Any], *, where: str = "") -> Any:
    """Check that ``value`` is one of ``options``.

    Examples
    --------
    >>> check_one_of("lac", "conformity_score", ("lac", "aps"))
    'lac'
    >>> check_one_of("lca", "conformity_score", ("lac", "aps"))
    Traceback (most recent call last):
    ...
    safepredict.exceptions.ConfigError: conformity_score must be one of ... Did you mean 'lac'?
    """
    if value in options:
        return value
    choices = ", ".join(repr(o) for o in options)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(o) for o in options], n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    raise ConfigError(f"{where}{name} must be one of {choices}; got {describe(value)}.{hint}")


def check_unknown_keys(keys: Iterable[str], known: Collection[str], *, where: str) -> None:
    """Raise if ``keys`` holds a key not in ``known``, suggesting the closest known key.

    Examples
    --------
    >>> known = ["name", "min_confidence"]
    >>> check_unknown_keys(["name", "min_confidense"], known, where="tier 'a'")
    Traceback (most recent call last):
    ...
    safepredict.exceptions.ConfigError: tier 'a': unknown key 'min_confidense' (did you mean ...
    """
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"{where}: unknown key {key!r}{hint}. Allowed keys: {allowed}.")


def check_positive_number(value: Any, name: str, where: str, *, allow_zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number ``> 0`` (``>= 0`` with ``allow_zero``).

    Examples
    --------
    >>> check_positive_number(0.5, "tolerance", "[guards]")
    >>> check_positive_number(0, "tolerance", "[guards]", allow_zero=True)
    """
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(
            f"{where}: {name} must be a finite number {bound}; got {describe(value)}."
        )
