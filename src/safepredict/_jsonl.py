"""JSON-safe values and JSON lines (layer 0): convert, serialize, append durably, read back.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
>>> append_jsonl(path, [{"a": 1}, {"b": "é"}], fsync=False)
>>> read_jsonl(path)
[{'a': 1}, {'b': 'é'}]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["append_jsonl", "dumps", "read_jsonl", "safe_text", "to_builtin"]


def to_builtin(value: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) to JSON-safe Python values.

    Non-finite floats become ``None`` so the result is strict JSON.

    Examples
    --------
    >>> to_builtin({"a": np.float64(1.5), "b": np.array([1, 2]), "c": float("nan")})
    {'a': 1.5, 'b': [1, 2], 'c': None}
    """
    if isinstance(value, Mapping):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_builtin(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_builtin(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return safe_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return safe_text(str(value))


def safe_text(text: str) -> str:
    r"""``text`` with what UTF-8 cannot encode (lone surrogates) escaped, never dropped.

    Valid JSON such as ``"\ud800"`` decodes to a lone surrogate that no UTF-8
    writer (a file, SQLite, a socket) accepts; it is stored as the six characters
    ``\ud800`` instead.

    Examples
    --------
    >>> lone = chr(0xD800)  # what json.loads('"\ud800"') returns
    >>> safe_text("ok " + lone)
    'ok \\ud800'
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def dumps(value: Any) -> str:
    """Strict JSON; numpy values and non-finite floats are converted only when present."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(to_builtin(value), ensure_ascii=False, allow_nan=False)


def append_jsonl(path: Path, rows: Sequence[Mapping[str, Any]], *, fsync: bool) -> None:
    data = "".join(dumps(r) + "\n" for r in rows).encode("utf-8")
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
    return out
