"""JSON-safe values and JSON lines (layer 0): convert, serialize, append durably, read back.

The one home for reading JSON lines: :func:`iter_lines` streams the raw lines of a
file (gzip-compressed when its name ends in ``.gz``), :func:`iter_jsonl` parses them
into objects with their line numbers, :func:`read_jsonl` reads a whole file. The
monitor, the decision-log replay and the review spool all read through them.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
>>> append_jsonl(path, [{"a": 1}, {"b": "é"}], fsync=False)
>>> read_jsonl(path)
[{'a': 1}, {'b': 'é'}]
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from safepredict.exceptions import InputSchemaError

try:  # orjson is ~5x faster on long logs; the stdlib parser is the fallback
    import orjson

    loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is installed in CI
    loads = json.loads

__all__ = [
    "append_jsonl",
    "dumps",
    "iter_jsonl",
    "iter_lines",
    "loads",
    "read_jsonl",
    "safe_text",
    "to_builtin",
]

#: Lines between two progress callbacks of :func:`iter_lines`.
PROGRESS_EVERY = 1 << 16


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


def iter_lines(
    path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None
) -> Iterator[bytes]:
    r"""Stream the raw lines of ``path``; a name ending in ``.gz`` is decompressed on the fly.

    Parameters
    ----------
    path : path-like
        The file.
    progress : callable, optional
        Called as ``progress(bytes_read, file_size)`` every :data:`PROGRESS_EVERY`
        lines and once at the end (sizes on disk, so compressed for ``.gz``).

    Examples
    --------
    >>> import gzip, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl.gz"
    >>> _ = p.write_bytes(gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
    >>> list(iter_lines(p))
    [b'{"a": 1}\n', b'\n', b'{"a": 2}\n']
    """
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as raw:
        handle: IO[bytes] = raw
        if p.suffix == ".gz":
            handle = io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), 1 << 20)
        with handle:
            for count, line in enumerate(handle, 1):
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(raw.tell(), size)
                yield line
    if progress is not None:
        progress(size, size)


def iter_jsonl(
    path: str | os.PathLike[str], *, bad: list[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    r"""The JSON objects of a JSON-lines file (``.gz`` too) with their 1-based line numbers.

    Blank lines are skipped. A line that is not a JSON object raises
    :class:`~safepredict.exceptions.InputSchemaError`, unless ``bad`` is a list: then
    ``"line <n>: <why>"`` is appended to it and the line is skipped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> _ = p.write_text('{"a": 1}\nnot json\n[1]\n', encoding="utf-8")
    >>> problems: list[str] = []
    >>> list(iter_jsonl(p, bad=problems))
    [(1, {'a': 1})]
    >>> [why.split(":")[0] for why in problems], problems[1]
    (['line 2', 'line 3'], 'line 3: not a JSON object')
    """
    for lineno, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        why = "not a JSON object"
        try:
            obj = loads(line)
        except ValueError as exc:  # json's and orjson's JSONDecodeError
            obj, why = None, getattr(exc, "msg", str(exc))
        if isinstance(obj, dict):
            yield lineno, obj
            continue
        if bad is None:
            raise InputSchemaError(
                f"{path}: line {lineno} is not a JSON object ({why}). Each line must be one "
                "JSON object; fix or remove that line.",
                problems=[f"line {lineno}: {why}"],
            )
        bad.append(f"line {lineno}: {why}")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file (``.gz`` too); a missing file reads as ``[]``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> read_jsonl(pathlib.Path(tempfile.mkdtemp()) / "absent.jsonl")
    []
    """
    if not Path(path).exists():
        return []
    return [obj for _, obj in iter_jsonl(path)]
