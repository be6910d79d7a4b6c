"""Sinks: where a router writes cases (a callable, a JSON-lines file).

The SQLite queue is in :mod:`~safepredict.review.queue`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from safepredict._jsonl import append_jsonl, read_jsonl, to_builtin
from safepredict._validation import describe
from safepredict.exceptions import ConfigError
from safepredict.review.cases import utc_now


# ---------------------------------------------------------------------- sinks
@runtime_checkable
class Sink(Protocol):
    """What a router writes to: anything with ``name`` and ``write_batch``."""

    name: str

    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Write every case or raise (all-or-nothing is the sink's best effort)."""


class CallableSink:
    """Send each case (a JSON-safe dict) to a Python callable.

    Parameters
    ----------
    fn : callable
        Called as ``fn(case)`` per case, or ``fn(cases)`` once per batch when
        ``batch=True``. Anything it raises counts as a sink failure.
    batch : bool, default=False
        Pass the whole batch in one call.

    Examples
    --------
    >>> seen = []
    >>> sink = CallableSink(seen.append)
    >>> sink.write_batch([{"decision_id": "a"}])
    >>> seen
    [{'decision_id': 'a'}]
    """

    def __init__(self, fn: Callable[..., Any], *, batch: bool = False) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableSink needs a callable; got {describe(fn)}.")
        self.fn = fn
        self.batch = batch
        self.name = f"callable:{getattr(fn, '__qualname__', type(fn).__name__)}"

    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Call the function."""
        if self.batch:
            self.fn(list(cases))
            return
        for case in cases:
            self.fn(case)


class JSONLSink:
    """Append each case as one JSON line to a file.

    Durability policy: a batch is written with a single ``write`` on a file
    opened in append mode (``O_APPEND``, so concurrent writers in several
    processes never interleave inside a line), then flushed and, with
    ``fsync=True`` (the default), ``os.fsync``-ed before :meth:`write_batch`
    returns: once ``decide`` returns, its cases survive a crash of the process
    and of the machine. ``fsync=False`` trades that for speed (a process crash
    still loses nothing already written; a power cut may).

    Parameters
    ----------
    path : str or path
        The ``.jsonl`` file (created if missing).
    fsync : bool, default=True
        ``fsync`` after every batch.

    Examples
    --------
    >>> import tempfile
    >>> sink = JSONLSink(tempfile.mkdtemp() + "/cases.jsonl")
    >>> sink.write_batch([{"decision_id": "a", "note": "it's"}])
    >>> sink.read()
    [{'decision_id': 'a', 'note': "it's"}]
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.name = f"jsonl:{self.path}"

    def write_batch(self, cases: Sequence[Mapping[str, Any]]) -> None:
        """Append the cases (one line each) in one write."""
        append_jsonl(self.path, cases, fsync=self.fsync)

    def read(self) -> list[dict[str, Any]]:
        """Every case in the file, in write order."""
        return read_jsonl(self.path)

    @property
    def outcomes_path(self) -> Path:
        """Where :meth:`record_outcome` appends (``<stem>.outcomes.jsonl``)."""
        return self.path.with_name(self.path.stem + ".outcomes.jsonl")

    def record_outcome(self, decision_id: str, outcome: Any, *, source: str = "external") -> str:
        """Append ``{decision_id, outcome, source, recorded_at}`` to :attr:`outcomes_path`."""
        row = {
            "decision_id": str(decision_id),
            "outcome": to_builtin(outcome),
            "source": source,
            "recorded_at": utc_now(),
        }
        append_jsonl(self.outcomes_path, [row], fsync=self.fsync)
        return "external"
