"""The columnar decision log (layer 2 writer): one Arrow record batch per ``decide`` call.

``SafePredictor(model, logger="decisions.arrows")`` writes decision events column by
column into Apache Arrow IPC *stream* files instead of JSON lines: a batch's numeric
columns are handed to Arrow without copying, text columns with few distinct values
(tiers, actions, reasons) are dictionary-encoded, the fields every event of a call
shares are written once per batch (as the batch's custom metadata), and
``decision_id`` is not stored at all (it is ``<batch_id>-<row>``). It needs
``pyarrow`` (``pip install 'safepredict[arrow]'``).

Layout and crash safety
    ``decisions.arrows`` is a directory. Each log instance (each process, each
    unpickled copy on a worker) writes its own stream file in it,
    ``<time_ns>-<pid>-<random>.arrows``, and appends one record batch per
    ``decide`` call straight to the operating system (unbuffered). A stream file
    needs no footer, so a killed process leaves every batch it finished readable
    and loses at most the batch it was writing (a torn tail the reader reports).
    Parquet was not chosen: its footer is written on close, so a killed writer
    would lose the whole file. Other events (calibration, route, tier alarms)
    are written as JSON lines to ``<time_ns>-<pid>-<random>.jsonl`` beside it.

Reading
    :func:`read_events` yields the decision events of a stream file as the same
    dicts the JSON-lines log holds (schema v1, ``event`` and ``level`` included);
    :func:`json_blocks` yields them as JSON lines, which is how
    :func:`safepredict.monitoring.monitor.monitor` reads a ``*.arrows`` file.

Examples
--------
>>> import tempfile, pathlib
>>> from sklearn.datasets import load_iris
>>> from sklearn.linear_model import LogisticRegression
>>> from safepredict import SafePredictor
>>> X, y = load_iris(return_X_y=True)
>>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
>>> log = pathlib.Path(tempfile.mkdtemp()) / "decisions.arrows"
>>> sp = SafePredictor(model, logger=log).calibrate(X[1::2], y[1::2])
>>> d = sp.decide(X[:5])
>>> [f.suffix for f in sorted(log.iterdir())]
['.arrows', '.jsonl']
>>> events = [e for f in sorted(log.glob("*.arrows")) for e in read_events(f)]
>>> len(events), events[0]["decision_id"] == d.decision_ids[0], events[0]["tier"]
(5, True, 'auto')
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from safepredict._extras import require
from safepredict._jsonl import safe_text, to_builtin
from safepredict.decisions import Decisions
from safepredict.monitoring._event_fields import clean, explanation_fields, needs_clean
from safepredict.monitoring._event_files import JsonlEventLog
from safepredict.monitoring._event_json import dumps
from safepredict.reasons import is_guard_reason

__all__ = ["SUFFIX", "ArrowDecisionLog", "is_columnar", "json_blocks", "read_events"]

#: What a path given as ``logger=`` ends with to select the columnar log.
SUFFIX = ".arrows"
#: Schema-level metadata key: the format of the stream (one version per layout).
_FORMAT = b"safepredict.decision_log"
_FORMAT_VERSION = b"1"


def _pa() -> Any:
    return require("pyarrow", "arrow", "the columnar decision log (logger='*.arrows')")


def is_columnar(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a columnar decision log (it ends in :data:`SUFFIX`).

    Examples
    --------
    >>> is_columnar("decisions.arrows"), is_columnar("events.jsonl")
    (True, False)
    """
    return str(path).endswith(SUFFIX)


class _JsonOf(dict[Any, str]):
    """A row's reason tuple -> the JSON text of its reasons (or its guard reasons)."""

    def __init__(self, guard_only: bool) -> None:
        super().__init__()
        self.guard_only = guard_only

    def __missing__(self, key: Any) -> str:
        reasons = [safe_text(str(r)) for r in key]
        if self.guard_only:
            reasons = [r for r in reasons if is_guard_reason(r)]
        value = self[key] = dumps(reasons).decode("utf-8")
        return value


def _codes(values: list[Any], table: dict[Any, str]) -> tuple[Any, list[str]]:
    """Dictionary codes of ``values`` through ``table`` (value -> text), and the texts."""
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(table[v], len(index)) for v in values), dtype=np.int32, count=len(values)
    )
    return codes, list(index)


def _json_column(pa: Any, values: list[Any] | None) -> Any:
    return pa.array(
        [None if v is None else dumps(v).decode("utf-8") for v in values or []], pa.string()
    )


def _decision_batch(d: Decisions, inputs: list[Any] | None) -> tuple[Any, dict[str, Any]]:
    """The Arrow record batch of a ``Decisions``, and the schema facts the reader needs.

    Columns: ``inputs_hash``, ``guard_flagged``, ``guard_reasons`` and ``reasons``
    (dictionary-encoded JSON lists), ``ood_score``, ``prediction``,
    ``probabilities`` and ``set`` (fixed-size lists over the classes),
    ``interval``, ``confidence``, ``tier`` and ``action`` (dictionary-encoded),
    ``audit``, and ``route`` / ``explanation`` / ``inputs`` (JSON text) when the
    batch has them. ``nan`` stays ``nan`` in float columns (the reader writes
    ``null`` as the JSON log does).
    """
    pa = _pa()
    n = len(d)
    cols: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    cols["inputs_hash"] = pa.array(
        [None] * n if d.inputs_hash is None else d.inputs_hash.tolist(), pa.string()
    )
    cols["guard_flagged"] = pa.array(np.asarray(d.guard_flagged, dtype=bool))
    reasons: list[Any] = d.reasons
    if not all(map(tuple.__instancecheck__, reasons)):  # lists from a hand-built batch
        reasons = [tuple(r) for r in reasons]
    for name, guard_only in (("guard_reasons", True), ("reasons", False)):
        codes, texts = _codes(reasons, _JsonOf(guard_only))
        cols[name] = pa.DictionaryArray.from_arrays(codes, pa.array(texts, pa.string()))
    ood = np.full(n, np.nan) if d.ood_scores is None else d.ood_scores
    cols["ood_score"] = pa.array(np.asarray(ood, dtype=np.float64))
    cols["prediction"] = _predictions(pa, d)
    if d.classes is not None:
        labels = [clean(c) for c in d.classes.tolist()]
        facts["labels"] = labels
        k = len(labels)
        if d.probabilities is not None:
            flat = pa.array(np.ascontiguousarray(d.probabilities, dtype=np.float64).ravel())
            cols["probabilities"] = pa.FixedSizeListArray.from_arrays(flat, k)
        if d.set_mask is not None:
            flat = pa.array(np.ascontiguousarray(d.set_mask, dtype=bool).ravel())
            cols["set"] = pa.FixedSizeListArray.from_arrays(flat, k)
    if d.intervals is not None:
        flat = pa.array(np.ascontiguousarray(d.intervals, dtype=np.float64).ravel())
        cols["interval"] = pa.FixedSizeListArray.from_arrays(flat, 2)
    cols["confidence"] = pa.array(np.asarray(d.confidence, dtype=np.float64))
    tier_names = pa.array([safe_text(str(t)) for t in d.tier_names], pa.string())
    cols["tier"] = pa.DictionaryArray.from_arrays(
        np.asarray(d.tier_codes, dtype=np.int32), tier_names
    )
    cols["action"] = pa.array(d.actions.tolist(), pa.string()).dictionary_encode()
    cols["audit"] = pa.array(np.asarray(d.audit, dtype=bool))
    if d.route is not None:
        cols["route"] = _json_column(
            pa, [None if r is None else to_builtin(dict(r)) for r in d.route]
        )
    if d.explanations is not None:
        cols["explanation"] = _json_column(pa, [explanation_fields(e) for e in d.explanations])
    if inputs is not None:
        cols["inputs"] = _json_column(pa, inputs)
    return pa.RecordBatch.from_pydict(cols), facts


def _predictions(pa: Any, d: Decisions) -> Any:
    """The predictions as a typed column, or as JSON text (a ``json`` column) when mixed."""
    values = d.predictions.tolist()
    if any(map(needs_clean, values)):  # numpy scalars, nan, non-ASCII text, objects
        values = [clean(v) for v in values]
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        column = pa.array(values)
        kind = column.type
        if pa.types.is_null(kind):
            return column.cast(pa.string())
        if any(
            check(kind)
            for check in (
                pa.types.is_string,
                pa.types.is_integer,
                pa.types.is_floating,
                pa.types.is_boolean,
            )
        ):
            return column
    texts = [dumps(v).decode("utf-8") for v in values]
    return pa.array(texts, pa.string()).dictionary_encode()


class ArrowDecisionLog:
    """Decision events as Arrow record batches (``logger="decisions.arrows"``).

    Parameters
    ----------
    path : str or path-like
        The log directory (created on first write); see the module docstring for
        the files in it and what a crash loses.

    Notes
    -----
    Decision events go to this instance's stream file, one record batch per
    ``decide`` call; a batch with a different column layout (another model, a
    batch with explanations) starts a new stream file. Other events
    (``info`` / ``warning``) go to a JSON-lines file beside it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        _pa()  # fail early, naming the extra, when pyarrow is missing
        self.path = Path(path)
        self._stem = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(3).hex()}"
        self._lock = threading.Lock()
        self._file: Any = None
        self._writer: Any = None
        self._schema: Any = None
        self._streams = 0
        self._jsonl: JsonlEventLog | None = None

    def __repr__(self) -> str:
        return f"ArrowDecisionLog({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """End the current stream file (the next batch starts a new one)."""
        with self._lock:
            self._close_stream()
            if self._jsonl is not None:
                self._jsonl.close()

    def _close_stream(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._file.close()
                self._writer = self._file = self._schema = None

    def _events_file(self) -> JsonlEventLog:
        if self._jsonl is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._jsonl = JsonlEventLog(self.path / f"{self._stem}.jsonl")
        return self._jsonl

    def info(self, event: str, **fields: Any) -> None:
        """Write one info-level event (JSON line beside the stream files)."""
        self._events_file().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Write one warning-level event (JSON line beside the stream files)."""
        self._events_file().warning(event, **fields)

    def write_decisions(
        self,
        d: Decisions,
        head: Mapping[str, Any],
        confidence_level: float,
        inputs: list[Any] | None = None,
    ) -> None:
        """Append one record batch: the decision events of ``d``.

        ``head`` holds the fields every event of the batch shares (``event``,
        ``level``, ``timestamp``, ``batch_id``, ...), stored once as the batch's
        custom metadata with the sets' ``confidence_level``. Raises ``OSError``
        (or an Arrow error) on failure.
        """
        pa = _pa()
        batch, facts = _decision_batch(d, inputs)
        meta = {b"head": dumps(dict(head)), b"confidence_level": dumps(float(confidence_level))}
        with self._lock:
            if self._writer is None or not batch.schema.equals(self._schema):
                self._close_stream()
                self.path.mkdir(parents=True, exist_ok=True)
                name = f"{self._stem}-{self._streams:04d}{SUFFIX}"
                self._streams += 1
                schema = batch.schema.with_metadata(
                    {
                        b"format": _FORMAT,
                        b"format_version": _FORMAT_VERSION,
                        b"facts": dumps(facts),
                    }
                )
                # unbuffered: every message reaches the OS as it is written
                self._file = open(self.path / name, "xb", buffering=0)  # noqa: SIM115
                self._writer = pa.ipc.new_stream(self._file, schema)
                self._schema = batch.schema
            self._writer.write_batch(batch, custom_metadata=meta)


# ---------------------------------------------------------------- reading
def _finite(v: Any) -> Any:
    return v if v is None or math.isfinite(v) else None


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _column(batch: Any, name: str, loads: bool = False) -> list[Any]:
    if batch.schema.get_field_index(name) < 0:
        return [None] * batch.num_rows
    values: list[Any] = batch.column(name).to_pylist()
    return [_loads(v) for v in values] if loads else values


def _predictions_of(batch: Any) -> list[Any]:
    column = batch.column("prediction")
    values: list[Any] = column.to_pylist()
    if hasattr(column, "dictionary"):  # JSON text of predictions of mixed types
        return [_loads(v) for v in values]
    return [_finite(v) if type(v) is float else v for v in values]


def _rows(batch: Any, meta: Mapping[bytes, bytes], facts: Mapping[str, Any]) -> list[Any]:
    """The decision events of one record batch, as the JSON-lines log writes them."""
    head = json.loads(meta[b"head"])
    level = json.loads(meta[b"confidence_level"])
    labels = facts.get("labels")
    keys = None if labels is None else [safe_text(str(c)) for c in labels]
    probs, sets, intervals = (_column(batch, c) for c in ("probabilities", "set", "interval"))
    guard_reasons = _column(batch, "guard_reasons", loads=True)
    reasons = _column(batch, "reasons", loads=True)
    routes = _column(batch, "route", loads=True)
    explanations = _column(batch, "explanation", loads=True)
    has_inputs = batch.schema.get_field_index("inputs") >= 0
    inputs = _column(batch, "inputs", loads=True)
    hashes, flagged, ood = (
        _column(batch, c) for c in ("inputs_hash", "guard_flagged", "ood_score")
    )
    conf, tiers, actions, audit = (
        _column(batch, c) for c in ("confidence", "tier", "action", "audit")
    )
    preds = _predictions_of(batch)
    batch_id = head.get("batch_id")
    out = []
    for i in range(batch.num_rows):
        p, s, iv = probs[i], sets[i], intervals[i]
        event = {
            **head,
            "decision_id": f"{batch_id}-{i}",
            "inputs_hash": hashes[i],
            "guard": {
                "status": "flag" if flagged[i] else "pass",
                "reasons": guard_reasons[i],
                "ood_score": _finite(ood[i]),
            },
            "prediction": preds[i],
            "probabilities": (
                dict(zip(keys, p, strict=True))
                if p is not None and keys is not None and all(map(math.isfinite, p))
                else None
            ),
            "conformal": {
                "confidence_level": level,
                "set": (
                    None
                    if s is None or labels is None
                    else [c for c, m in zip(labels, s, strict=True) if m]
                ),
                "set_size": None if s is None else sum(s),
                "interval": (
                    None
                    if iv is None or math.isnan(iv[0]) or math.isnan(iv[1])
                    else [_finite(iv[0]), _finite(iv[1])]
                ),
            },
            "confidence": _finite(conf[i]),
            "tier": tiers[i],
            "action": actions[i],
            "reasons": reasons[i],
            "audit": audit[i],
            "route": routes[i],
            "explanation": explanations[i],
        }
        if has_inputs:
            event["inputs"] = inputs[i]
        out.append(event)
    return out


def _batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The decision events of a stream file, one list per record batch (per ``decide`` call).

    Raises ``EOFError`` after the last complete batch when the file ends inside a
    message (a writer killed mid-batch) or is not an Arrow stream.
    """
    pa = _pa()
    with pa.OSFile(str(path), "rb") as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError) as exc:
            raise EOFError(f"{path}: not a complete Arrow stream ({exc})") from exc
        metadata = reader.schema.metadata or {}
        if metadata.get(b"format") != _FORMAT:
            raise EOFError(f"{path}: an Arrow stream, but not a safepredict decision log")
        facts = json.loads(metadata.get(b"facts", b"{}"))
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as exc:
                raise EOFError(f"{path}: the stream ends inside a record batch ({exc})") from exc
            yield _rows(batch, meta, facts)


def read_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The decision events of one ``*.arrows`` stream file, as the JSON-lines log has them.

    Each event is the dict the JSON-lines log would hold for the same decision
    (``event``, ``level``, the batch-wide fields, then the row's fields).

    Raises
    ------
    EOFError
        After the last complete batch, when the file ends inside a batch (its
        writer was killed) or is not a safepredict decision log.
    """
    for rows in _batches(Path(path)):
        yield from rows


def json_blocks(path: str | os.PathLike[str]) -> Iterator[list[bytes]]:
    """The decision events of a ``*.arrows`` stream file as JSON lines, one list per batch.

    What :func:`safepredict.monitoring.monitor.monitor` reads in place of a
    JSON-lines file's lines; raises ``EOFError`` like :func:`read_events`.
    """
    for rows in _batches(Path(path)):
        yield [dumps(row) for row in rows]
