"""The calibration file's format (layer 0): strict JSON, checksums, reading and verifying.

The one home of what a safepredict calibration file looks like on disk: the format
marker and schema version, non-finite floats as ``{"$float": "inf"}`` (so the file is
strict JSON), the canonical JSON the checksum or HMAC signature covers, and
:func:`read_document`, which refuses anything that is not an intact calibration file
before a single object is rebuilt. :mod:`safepredict.persistence` builds and restores
the predictor.

File layout (``schema_version`` "1.1")::

    {"format": "safepredict.calibration", "schema_version": "1.1",
     "created_at": ..., "versions": {...}, "model": {fingerprint, file},
     "params": {...}, "params_not_saved": [...], "fitted": {...},
     "raw_rows": [...],
     "policy": {...}, "state": {"conformal_": {"type": ..., "state": ...}, ...},
     "checksum": {"algorithm": "sha256" | "hmac-sha256", "value": hex}}

``raw_rows`` (new in 1.1) names every part of the state that holds raw
reference or calibration rows; it is empty unless the user opted in
(``GuardConfig(ood_method="knn")``, ``explainer_background="sample"``). Files
of schema 1.0 (safepredict 0.1.0) load unchanged: their guard state holds kNN
rows and loads as the ``"knn"`` detector, their explainer background as a raw
sample.

The checksum covers the canonical JSON (sorted keys, no whitespace) of every
other key. A plain SHA-256 detects corruption and casual edits; pass ``key=``
to sign with HMAC-SHA256 so that only holders of the key can produce a file
that loads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safepredict._version import __version__
from safepredict.exceptions import ConfigError, PersistenceError

__all__ = [
    "FORMAT",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "SCHEMA_VERSION",
    "check_json_safe",
    "decode_floats",
    "digest",
    "encode_floats",
    "key_bytes_of",
    "read_document",
]

FORMAT = "safepredict.calibration"
SCHEMA_VERSION = "1.1"
#: Files larger than this are refused before parsing (a calibration file is a few MB).
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Deepest nesting a calibration file may have (real files nest about 8 levels).
MAX_DEPTH = 64
_NONFINITE = "$float"


def encode_floats(value: Any) -> Any:
    """Replace non-finite floats by ``{"$float": "inf"}`` so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return {_NONFINITE: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        return {str(k): encode_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_floats(v) for v in value]
    return value


def decode_floats(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _NONFINITE in value:
            token = value[_NONFINITE]
            if token not in ("nan", "inf", "-inf"):
                raise PersistenceError(
                    f"malformed calibration file: {_NONFINITE} must be 'nan', 'inf' or '-inf'; "
                    f"got {token!r}."
                )
            return float(token)
        return {k: decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    return value


def check_json_safe(value: Any, where: str) -> None:
    """Raise ``PersistenceError`` if ``value`` is not made of JSON types only."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise PersistenceError(f"{where}: keys must be strings; got {k!r}.")
            check_json_safe(v, f"{where}.{k}")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_json_safe(v, f"{where}[{i}]")
        return
    raise PersistenceError(
        f"{where}: to_state() must return only dict/list/str/int/float/bool/None; got "
        f"{type(value).__name__}. Fix the component's to_state()."
    )


def _canonical(doc: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(doc: Mapping[str, Any], key: bytes | None) -> dict[str, str]:
    data = _canonical(doc)
    if key is None:
        return {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()}
    return {"algorithm": "hmac-sha256", "value": hmac.new(key, data, hashlib.sha256).hexdigest()}


def key_bytes_of(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or not key:
        raise ConfigError("key must be a non-empty str or bytes (the HMAC signing key).")
    return key


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def read_document(path: str | Path, *, key: bytes | str | None = None) -> dict[str, Any]:
    """Read and verify a calibration file; return its (decoded) JSON document.

    Checks, in order: the file exists, is JSON, has the safepredict format
    marker, a readable schema major version, and an intact checksum (or HMAC
    signature when ``key`` is given).

    Raises
    ------
    PersistenceError
        With a message naming what is wrong and how to fix it.
    """
    p = Path(path)
    if not p.is_file():
        raise PersistenceError(
            f"no calibration file at {str(p)!r}; save one with predictor.save(path) first."
        )
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PersistenceError(
            f"{p} is {size} bytes, more than the {MAX_FILE_BYTES} a calibration file may have; "
            "this is not a safepredict calibration file."
        )
    try:
        doc = json.loads(p.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PersistenceError(
            f"{p} is not a safepredict calibration file (not valid JSON: {exc})."
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PersistenceError(
            f"{p} is not a safepredict calibration file: expected format {FORMAT!r}, found "
            f"{found!r}. Create one with predictor.save(path)."
        )
    version = doc.get("schema_version")
    major = version.split(".", 1)[0] if isinstance(version, str) else None
    if major != SCHEMA_VERSION.split(".", 1)[0]:
        raise PersistenceError(
            f"{p} has schema_version {version!r}; this safepredict ({__version__}) reads "
            f"{SCHEMA_VERSION.split('.')[0]}.x. Re-save the predictor with a matching "
            "safepredict version (or recalibrate)."
        )
    checksum = doc.get("checksum")
    if not isinstance(checksum, dict) or not isinstance(checksum.get("value"), str):
        raise PersistenceError(f"{p} has no checksum; it was not written by predictor.save().")
    key_bytes = key_bytes_of(key)
    algorithm = checksum.get("algorithm")
    if key_bytes is None and algorithm == "hmac-sha256":
        raise PersistenceError(
            f"{p} is signed (hmac-sha256); pass the signing key: SafePredictor.load(path, key=...)."
        )
    if key_bytes is not None and algorithm != "hmac-sha256":
        raise PersistenceError(
            f"{p} is not signed (algorithm {algorithm!r}) but a key was given; refusing an "
            "unsigned file. Re-save it with predictor.save(path, key=...)."
        )
    if algorithm not in ("sha256", "hmac-sha256"):
        raise PersistenceError(f"{p}: unknown checksum algorithm {algorithm!r}.")
    expected = digest(doc, key_bytes)["value"]
    if not hmac.compare_digest(expected, checksum["value"]):
        raise PersistenceError(
            f"{p}: checksum mismatch — the file was modified after it was saved (or the key is "
            "wrong). Do not load it; re-save the predictor from its source."
        )
    depth = _depth(doc)
    if depth > MAX_DEPTH:
        raise PersistenceError(
            f"{p} nests {depth} levels deep; a calibration file nests at most {MAX_DEPTH}. It "
            "was not written by predictor.save(): do not load it."
        )
    decoded: dict[str, Any] = decode_floats(doc)
    return decoded


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((v, level + 1) for v in children if isinstance(v, dict | list))
    return deepest if isinstance(value, dict | list) else 0
