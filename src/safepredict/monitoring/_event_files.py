"""The JSON-lines event file (layer 2 writer): ``logger="events.jsonl"``.

:class:`JsonlEventLog` appends whole lines with one ``write`` call per batch
(``O_APPEND``); it renders single events itself and writes the bytes of a batch that
:func:`safepredict.monitoring._event_json.decision_lines` rendered column by column.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safepredict.monitoring._event_json import dumps

__all__ = ["JsonlEventLog"]


class JsonlEventLog:
    """Append events as JSON lines to a file: the fast path for ``logger="events.jsonl"``.

    A batch of decision events is serialized column by column and written with one
    ``write`` call (``O_APPEND``, so lines of several writers never interleave);
    single events (calibration, route) are one line each. Each line carries
    ``event`` and ``level`` like structlog's JSON recipe
    (``add_log_level`` + ``JSONRenderer``); the
    :class:`~safepredict.monitoring.events.EventEmitter` adds any structlog
    contextvars, as structlog's ``merge_contextvars`` would. The file is opened on
    first use and reopened after unpickling.

    Parameters
    ----------
    path : str or path-like
        The file (created if missing, appended to otherwise).

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> log = JsonlEventLog(path)
    >>> log.info("safepredict.route", status="queued")
    >>> json.loads(path.read_text())
    {'event': 'safepredict.route', 'level': 'info', 'status': 'queued'}
    >>> log.close()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlEventLog({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Close the file (it is reopened by the next write)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines) with one ``write`` call; raises ``OSError`` on failure."""
        if not data:
            return
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            written = os.write(self._fd, data)  # one system call unless the kernel takes part
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(self._fd, view) :]

    def _line(self, level: str, event: str, fields: Mapping[str, Any]) -> bytes:
        return dumps({"event": event, "level": level, **fields}) + b"\n"

    def info(self, event: str, **fields: Any) -> None:
        """Write one info-level event."""
        self.write(self._line("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        """Write one warning-level event."""
        self.write(self._line("warning", event, fields))
