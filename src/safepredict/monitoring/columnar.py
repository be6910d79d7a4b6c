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
    ``<time_ns>-<pid>-<random>-<n>.arrows``, and appends one record batch per
    ``decide`` call, serialized in memory and handed to the operating system with
    one ``write`` loop before ``decide`` returns. A stream file
    needs no footer, so a killed process leaves every batch it finished readable
    and loses at most the batch it was writing (a torn tail the reader reports).
    Parquet was not chosen: its footer is written on close, so a killed writer
    would lose the whole file. Other events (calibration, route, tier alarms)
    are written as JSON lines to ``<time_ns>-<pid>-<random>.jsonl`` beside it,
    and so are the decision events of calls of at most :data:`SMALL_CALL` rows
    (a record batch costs a fixed ~0.5 ms however few its rows): nothing is
    buffered, every call's events are written before ``decide`` returns.

Reading
    :func:`read_events` yields the decision events of a stream file as the same
    dicts the JSON-lines log holds (schema v1, ``event`` and ``level`` included);
    :func:`json_blocks` yields them as JSON lines, which is how
    :func:`safepredict.monitoring.monitor.monitor` reads a ``*.arrows`` file.
    Given the directory, the monitor also reads the JSON lines beside the stream
    files (the small calls).

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
>>> d = sp.decide(X[:40])
>>> [f.suffix for f in sorted(log.iterdir())]
['.arrows', '.jsonl']
>>> events = [e for f in sorted(log.glob("*.arrows")) for e in read_events(f)]
>>> len(events), events[0]["decision_id"] == d.decision_ids[0], events[0]["tier"]
(40, True, 'auto')
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._extras import require
from safepredict._jsonl import safe_text, to_builtin
from safepredict.config import ACTIONS
from safepredict.decisions import Decisions
from safepredict.monitoring._event_fields import clean, explanation_fields, needs_clean
from safepredict.monitoring._event_files import JsonlEventLog
from safepredict.monitoring._event_json import dumps
from safepredict.reasons import is_guard_reason

__all__ = [
    "SMALL_CALL",
    "SUFFIX",
    "ArrowDecisionLog",
    "is_columnar",
    "json_blocks",
    "read_events",
]

#: What a path given as ``logger=`` ends with to select the columnar log.
SUFFIX = ".arrows"
#: Calls of at most this many rows are written as JSON lines beside the stream files:
#: a record batch costs a fixed ~0.5 ms however few its rows.
SMALL_CALL = 32
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


class _Codes(dict[Any, int]):
    """Value -> its dictionary code, numbered in order of first appearance."""

    def __missing__(self, key: Any) -> int:
        value = self[key] = len(self)
        return value


def _reason_texts(reasons: tuple[str, ...], guard_only: bool) -> str:
    texts = [safe_text(str(r)) for r in reasons]
    if guard_only:
        texts = [r for r in texts if is_guard_reason(r)]
    return dumps(texts).decode("utf-8")


def _dictionary(pa: Any, codes: Any, values: list[Any], nulls: Any = None) -> Any:
    indices = pa.array(np.asarray(codes, dtype=np.int32), mask=nulls)
    return pa.DictionaryArray.from_arrays(indices, pa.array(values), safe=False)


def _vocabulary_codes(values: NDArray[Any], vocabulary: list[Any]) -> NDArray[np.int32] | None:
    """Each value's index in ``vocabulary`` (-1 for ``None``), or ``None`` if one is not in it."""
    codes = np.full(len(values), -1, dtype=np.int32)
    for j, v in enumerate(vocabulary):
        codes[values == v] = j
    missing = codes < 0
    if missing.any() and not all(v is None for v in values[missing].tolist()):
        return None
    return codes


def _json_column(pa: Any, values: list[Any] | None) -> Any:
    return pa.array(
        [None if v is None else dumps(v).decode("utf-8") for v in values or []], pa.string()
    )


def _hashes(pa: Any, hashes: NDArray[Any] | None, n: int) -> Any:
    """``inputs_hash`` as unsigned 64-bit integers (16 hex digits each), or text if not."""
    if hashes is None:
        return pa.nulls(n, pa.uint64())
    values = hashes.tolist()
    joined = "".join(values)
    if len(joined) == 16 * n:
        with contextlib.suppress(ValueError):
            return pa.array(np.frombuffer(bytes.fromhex(joined), dtype=">u8").astype(np.uint64))
    return pa.array(values, pa.string())


def _decision_batch(d: Decisions, inputs: list[Any] | None) -> tuple[Any, dict[str, Any]]:
    """The Arrow record batch of a ``Decisions``, and the schema facts the reader needs.

    Columns: ``inputs_hash`` (64-bit integers), ``guard_flagged``,
    ``guard_reasons`` and ``reasons`` (dictionary-encoded JSON lists),
    ``ood_score``, ``prediction`` (dictionary-encoded class labels, floats, or
    JSON text as ``prediction_json``), ``probabilities`` and ``set`` (fixed-size
    lists over the classes), ``interval``, ``confidence``, ``tier`` and
    ``action`` (dictionary-encoded), ``audit``, and ``route`` / ``explanation`` /
    ``inputs`` (JSON text) when the batch has them. ``nan`` stays ``nan`` in float
    columns (the reader writes ``null``, as the JSON log does).
    """
    pa = _pa()
    n = len(d)
    cols: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    cols["inputs_hash"] = _hashes(pa, d.inputs_hash, n)
    cols["guard_flagged"] = pa.array(np.asarray(d.guard_flagged, dtype=bool))
    reasons: list[Any] = d.reasons
    if not all(map(tuple.__instancecheck__, reasons)):  # lists from a hand-built batch
        reasons = [tuple(r) for r in reasons]
    table = _Codes()
    codes = np.fromiter(map(table.__getitem__, reasons), dtype=np.int32, count=n)
    distinct = list(table)
    for name, guard_only in (("guard_reasons", True), ("reasons", False)):
        texts = [_reason_texts(r, guard_only) for r in distinct]
        cols[name] = _dictionary(pa, codes, texts)
    ood = np.full(n, np.nan) if d.ood_scores is None else d.ood_scores
    cols["ood_score"] = pa.array(np.asarray(ood, dtype=np.float64))
    cols.update(_predictions(pa, d))
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
    tier_names = [safe_text(str(t)) for t in d.tier_names]
    cols["tier"] = _dictionary(pa, d.tier_codes, tier_names)
    action_codes = _vocabulary_codes(d.actions, list(ACTIONS))
    if action_codes is None or (action_codes < 0).any():
        cols["action"] = pa.array([safe_text(str(a)) for a in d.actions.tolist()], pa.string())
    else:
        cols["action"] = _dictionary(pa, action_codes, list(ACTIONS))
    cols["audit"] = pa.array(np.asarray(d.audit, dtype=bool))
    if d.route is not None:
        cols["route"] = _json_column(
            pa, [None if r is None else to_builtin(dict(r)) for r in d.route]
        )
    if d.explanations is not None:
        cols["explanation"] = _json_column(pa, [explanation_fields(e) for e in d.explanations])
    if inputs is not None:
        cols["inputs"] = _json_column(pa, inputs)
    return pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols)), facts


def _predictions(pa: Any, d: Decisions) -> dict[str, Any]:
    """The predictions column: class codes, floats, a typed column, or JSON text."""
    preds = d.predictions
    if d.classes is not None and len(d.classes) <= 64:  # class labels or None
        labels = [clean(c) for c in d.classes.tolist()]
        codes = _vocabulary_codes(preds, d.classes.tolist())
        if codes is not None:
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                return {"prediction": _dictionary(pa, codes, labels, nulls=codes < 0)}
    if d.classes is None:  # regression: floats, None where the model failed
        with contextlib.suppress(TypeError, ValueError):
            return {"prediction": pa.array(np.asarray(preds, dtype=np.float64))}
    values = preds.tolist()
    if any(map(needs_clean, values)):  # numpy scalars, nan, non-ASCII text, objects
        values = [clean(v) for v in values]
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        column = pa.array(values)
        kind = column.type
        if pa.types.is_null(kind):
            return {"prediction": column.cast(pa.string())}
        if any(
            check(kind)
            for check in (
                pa.types.is_string,
                pa.types.is_integer,
                pa.types.is_floating,
                pa.types.is_boolean,
            )
        ):
            return {"prediction": column}
    return {"prediction_json": pa.array([dumps(v).decode("utf-8") for v in values], pa.string())}


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
    ``decide`` call of more than :data:`SMALL_CALL` rows; a batch with a different
    column layout (another model, a batch with explanations) starts a new stream
    file. Smaller calls' decision events and other events (``info`` /
    ``warning``) go to a JSON-lines file beside it (:meth:`events_file`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        _pa()  # fail early, naming the extra, when pyarrow is missing
        self.path = Path(path)
        self._stem = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(3).hex()}"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._buffer = io.BytesIO()
        self._writer: Any = None
        self._schema: Any = None
        self._facts: dict[str, Any] = {}
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
                self._writer.close()  # the end-of-stream marker
                self._flush()
            finally:
                assert self._fd is not None
                os.close(self._fd)
                self._writer = self._fd = self._schema = None

    def _flush(self) -> None:
        """Hand what the stream writer produced to the OS with one ``write`` loop."""
        data = memoryview(self._buffer.getbuffer())
        try:
            while data:
                assert self._fd is not None
                data = data[os.write(self._fd, data) :]
        finally:
            data.release()
            self._buffer.seek(0)
            self._buffer.truncate()

    def events_file(self) -> JsonlEventLog:
        """The JSON-lines file beside the stream files (other events, calls of few rows)."""
        if self._jsonl is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._jsonl = JsonlEventLog(self.path / f"{self._stem}.jsonl")
        return self._jsonl

    def info(self, event: str, **fields: Any) -> None:
        """Write one info-level event (JSON line beside the stream files)."""
        self.events_file().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Write one warning-level event (JSON line beside the stream files)."""
        self.events_file().warning(event, **fields)

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
            if (
                self._writer is None
                or facts != self._facts
                or not batch.schema.equals(self._schema)
            ):
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
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                self._fd = os.open(self.path / name, flags, 0o640)
                self._writer = pa.ipc.new_stream(self._buffer, schema)
                self._schema, self._facts = batch.schema, facts
            # the batch is serialized in memory, then written with one write loop:
            # a crash tears at most this batch, never an earlier one
            self._writer.write_batch(batch, custom_metadata=meta)
            self._flush()


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
    if batch.schema.get_field_index("prediction_json") >= 0:  # predictions of mixed types
        return _column(batch, "prediction_json", loads=True)
    values: list[Any] = batch.column("prediction").to_pylist()
    return [_finite(v) if type(v) is float else v for v in values]


def _hashes_of(batch: Any) -> list[Any]:
    values = _column(batch, "inputs_hash")
    if not _pa().types.is_integer(batch.schema.field("inputs_hash").type):
        return values
    return [None if h is None else f"{h:016x}" for h in values]


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
    flagged, ood = _column(batch, "guard_flagged"), _column(batch, "ood_score")
    hashes = _hashes_of(batch)
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
