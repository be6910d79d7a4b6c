"""Open Inference Protocol (V2) endpoints for the service example.

The Open Inference Protocol (also "KServe V2" / "predict protocol v2") is the REST
API that KServe, Seldon MLServer and NVIDIA Triton speak. This module serves one
calibrated :class:`safepredict.SafePredictor` through it:

- ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready``;
- ``GET /v2/models/{name}[/versions/{version}]`` (model metadata) and ``.../ready``;
- ``POST /v2/models/{name}[/versions/{version}]/infer``.

Inputs are either one tensor per feature column (named like the column, shape
``[n]`` or ``[n, 1]``) or a single ``BYTES`` tensor of ``n`` JSON rows (objects keyed
by feature name, or lists in feature order). Outputs are the decision fields, one
tensor each, ``n`` rows long. Every error is ``{"error": "<message>"}`` with a 4xx
status, as the protocol prescribes; the message says what was expected, what came
and how to fix it.

Specification: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import safepredict as sp

__all__ = [
    "DATATYPES",
    "OUTPUT_NAMES",
    "OIPError",
    "decode_rows",
    "encode_outputs",
    "model_metadata",
    "router",
]

#: Tensor datatypes of the protocol (``Tensor Data Types``).
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BYTES"}
)
_INT_RANGES = {
    **{f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (0, 2**b - 1) for b in (8, 16, 32, 64)},
}
_NUMERIC = frozenset(_INT_RANGES) | {"FP16", "FP32", "FP64"}
#: Output tensors, in the order a response lists them (those that apply to the task).
OUTPUT_NAMES = (
    "decision_id",
    "action",
    "tier",
    "prediction",
    "confidence",
    "prediction_set",
    "interval",
    "reasons",
    "audit",
)
_CLASSIFICATION_ONLY = frozenset({"confidence", "prediction_set"})
_REGRESSION_ONLY = frozenset({"interval"})
_SHOWN = 60  # characters of a client's string quoted back in an error message


class OIPError(Exception):
    """A request the protocol answers with ``{"error": message}`` and a 4xx status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _names(values: list[Any], limit: int = 10) -> str:
    """Up to ``limit`` of a client's names, quoted: ``'a', 'b' (+3 more)``."""
    shown = ", ".join(_quote(v) for v in values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _quote(value: Any) -> str:
    """A client's value, quoted and shortened for an error message."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


# ------------------------------------------------------------------ metadata
@dataclass(frozen=True)
class _Column:
    name: str
    datatype: str  # what metadata advertises
    accepts: frozenset[str]  # what infer takes for this column


def _feature_names(predictor: sp.SafePredictor) -> list[str]:
    """The calibrated input names (``x0 ..`` for a predictor calibrated on unnamed arrays)."""
    for attr in ("feature_names_in_", "feature_names_"):
        names = getattr(predictor, attr, None)
        if names is not None:
            return [str(c) for c in names]
    return [f"x{i}" for i in range(predictor.n_features_in_)]


def _columns(predictor: sp.SafePredictor) -> list[_Column]:
    """Input columns with datatypes read from the calibrated guards (FP64 if unknown)."""
    names = _feature_names(predictor)
    guards = getattr(predictor, "guards_", None)
    kinds = dict(zip(guards.columns, guards.kinds, strict=True)) if guards is not None else {}
    cats = dict(zip(guards.columns, guards.categories, strict=True)) if guards is not None else {}
    out = []
    for name in names:
        kind = kinds.get(name)
        if kind == "numeric":
            out.append(_Column(name, "FP64", _NUMERIC))
        elif kind == "categorical":
            values = cats.get(name) or []
            ints = bool(values) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in values
            )
            out.append(
                _Column(name, "INT64", frozenset(_INT_RANGES))
                if ints
                else _Column(name, "BYTES", frozenset({"BYTES"}))
            )
        else:  # no guards: the predictor's own checks decide per row
            out.append(_Column(name, "FP64", DATATYPES))
    return out


def _output_specs(predictor: sp.SafePredictor) -> list[dict[str, Any]]:
    classification = predictor.task_ == "classification"
    types = {
        "decision_id": ("BYTES", [-1]),
        "action": ("BYTES", [-1]),
        "tier": ("BYTES", [-1]),
        # A class label as JSON text ("1", "\"cat\"", "null"): integer tensors have no null.
        "prediction": ("BYTES" if classification else "FP64", [-1]),
        "confidence": ("FP64", [-1]),
        "prediction_set": ("BYTES", [-1]),
        "interval": ("FP64", [-1, 2]),
        "reasons": ("BYTES", [-1]),
        "audit": ("BOOL", [-1]),
    }
    skip = _REGRESSION_ONLY if classification else _CLASSIFICATION_ONLY
    return [
        {"name": name, "datatype": types[name][0], "shape": types[name][1]}
        for name in OUTPUT_NAMES
        if name not in skip
    ]


def model_metadata(predictor: sp.SafePredictor) -> dict[str, Any]:
    """The ``$metadata_model_response`` of a calibrated predictor.

    Parameters
    ----------
    predictor : SafePredictor
        Calibrated (or loaded) predictor.

    Returns
    -------
    dict
        ``name``, ``versions``, ``platform``, ``inputs`` (one tensor per feature
        column, shape ``[-1]``) and ``outputs`` (the decision fields).
    """
    summary = predictor.summary()
    return {
        "name": _model_name(predictor),
        "versions": [_model_version(predictor)],
        "platform": f"safepredict_{summary['safepredict_version']}",
        "inputs": [
            {"name": c.name, "datatype": c.datatype, "shape": [-1]} for c in _columns(predictor)
        ],
        "outputs": _output_specs(predictor),
        "parameters": {
            "task": summary["task"],
            "calibration_id": summary["calibration_id"],
            "policy_hash": summary["policy_hash"],
        },
    }


def _model_name(predictor: sp.SafePredictor) -> str:
    return str(predictor.model_name or "model")


def _model_version(predictor: sp.SafePredictor) -> str:
    return str(predictor.model_version or "1")


# ------------------------------------------------------------------ request decoding
def _shape(tensor: dict[str, Any], name: str) -> list[int]:
    shape = tensor.get("shape")
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise OIPError(
            f"input {name!r}: 'shape' must be a non-empty list of non-negative integers, "
            f"got {_quote(shape)}; send e.g. [n] or [n, 1] for n rows."
        )
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise OIPError(
            f"input {name!r}: shape {shape} is not one column of rows; send shape [n] or [n, 1]."
        )
    return shape


def _flatten(data: Any, shape: list[int], name: str) -> list[Any]:
    """Row-major elements of ``data``, given flat or nested as ``shape``."""
    if not isinstance(data, list):
        raise OIPError(f"input {name!r}: 'data' must be a JSON array, got {type(data).__name__}.")
    n = math.prod(shape)
    if all(not isinstance(v, list) for v in data):
        flat = data
    elif (
        len(shape) == 2
        and len(data) == shape[0]
        and all(isinstance(v, list) and len(v) == 1 and not isinstance(v[0], list) for v in data)
    ):
        flat = [v[0] for v in data]
    else:
        raise OIPError(
            f"input {name!r}: 'data' must be flat (row-major) or nested exactly as shape "
            f"{shape}; send a flat array of {n} elements."
        )
    if len(flat) != n:
        raise OIPError(
            f"input {name!r}: shape {shape} holds {n} elements but 'data' has {len(flat)}; "
            "make the shape match the data."
        )
    return flat


def _check_elements(values: list[Any], datatype: str, name: str) -> None:
    if datatype == "BOOL":
        ok = [isinstance(v, bool) for v in values]
        want = "true/false"
    elif datatype in _INT_RANGES:
        lo, hi = _INT_RANGES[datatype]
        ok = [isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in values]
        want = f"integers in [{lo}, {hi}]"
    elif datatype == "BYTES":
        ok = [isinstance(v, str) for v in values]
        want = "strings"
    else:  # FP16/32/64
        ok = [isinstance(v, int | float) and not isinstance(v, bool) for v in values]
        want = "numbers"
    if not all(ok):
        i = ok.index(False)
        raise OIPError(
            f"input {name!r}: datatype {datatype} needs {want}; element {i} is "
            f"{_quote(values[i])}. Change the datatype or the data."
        )


def _tensor(raw: Any, i: int) -> tuple[str, str, list[int], list[Any]]:
    if not isinstance(raw, dict):
        raise OIPError(f"inputs[{i}] must be an object with name, shape, datatype and data.")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in raw]
    if missing:
        raise OIPError(
            f"inputs[{i}] lacks {missing}; every input needs name, shape, datatype, data."
        )
    name = raw["name"]
    if not isinstance(name, str):
        raise OIPError(f"inputs[{i}]: 'name' must be a string, got {_quote(name)}.")
    datatype = raw["datatype"]
    if datatype not in DATATYPES:
        raise OIPError(
            f"input {name!r}: unknown datatype {_quote(datatype)}; use one of {sorted(DATATYPES)}."
        )
    if not isinstance(raw.get("parameters", {}), dict):
        raise OIPError(f"input {name!r}: 'parameters' must be an object.")
    shape = _shape(raw, name)
    values = _flatten(raw["data"], shape, name)
    _check_elements(values, datatype, name)
    return name, datatype, shape, values


def _n_rows(n: int, max_rows: int) -> int:
    if not 1 <= n <= max_rows:
        raise OIPError(f"a request decides 1 to {max_rows} rows, got {n}; split the batch.")
    return n


def _json_rows(name: str, values: list[Any], columns: list[_Column]) -> list[Any]:
    names = [c.name for c in columns]
    rows: list[Any] = []
    for i, text in enumerate(values):
        try:
            row = json.loads(text)
        except (ValueError, RecursionError):
            raise OIPError(
                f"input {name!r}: element {i} is not JSON ({_quote(text)}); send one JSON "
                "object (feature -> value) or array (values in feature order) per row."
            ) from None
        if isinstance(row, list):
            if len(row) != len(names):
                raise OIPError(
                    f"input {name!r}: row {i} has {len(row)} values, expected {len(names)} "
                    f"in the order {names}."
                )
            row = dict(zip(names, row, strict=True))
        if not isinstance(row, dict):
            raise OIPError(
                f"input {name!r}: row {i} is {type(row).__name__}; send a JSON object or array."
            )
        rows.append(row)
    return rows


def decode_rows(body: Any, predictor: sp.SafePredictor, max_rows: int) -> list[dict[str, Any]]:
    """Rows (dicts keyed by feature name) from an ``$inference_request`` body.

    Parameters
    ----------
    body : Any
        The parsed JSON request body.
    predictor : SafePredictor
        The model the request is for (its input schema).
    max_rows : int
        Rows allowed per request.

    Returns
    -------
    list of dict
        One dict per row.

    Raises
    ------
    OIPError
        The request does not follow the protocol or this model's inputs.
    """
    if not isinstance(body, dict):
        raise OIPError("the body must be a JSON object with an 'inputs' array.")
    unknown = sorted(set(body) - {"id", "parameters", "inputs", "outputs"})
    if unknown:
        raise OIPError(
            f"unknown request fields {_names(unknown, 5)}; an inference request "
            "has id, parameters, inputs and outputs."
        )
    if "id" in body and not isinstance(body["id"], str):
        raise OIPError(f"'id' must be a string, got {_quote(body['id'])}.")
    if not isinstance(body.get("parameters", {}), dict):
        raise OIPError("'parameters' must be an object.")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise OIPError("'inputs' must be a non-empty array of input tensors.")
    if len(raw_inputs) > 4 * len(_columns(predictor)) + 1:
        raise OIPError(f"{len(raw_inputs)} input tensors; this model takes one per feature.")
    columns = _columns(predictor)
    by_name = {c.name: c for c in columns}
    tensors = [_tensor(raw, i) for i, raw in enumerate(raw_inputs)]
    if len(tensors) == 1 and tensors[0][0] not in by_name:
        name, datatype, shape, values = tensors[0]
        if datatype != "BYTES":
            raise OIPError(
                f"input {name!r} is not a feature of this model; send one tensor per feature "
                f"column {list(by_name)} or a single BYTES tensor of JSON rows."
            )
        _n_rows(shape[0], max_rows)
        return _json_rows(name, values, columns)
    names = [t[0] for t in tensors]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    unknown_inputs = [n for n in names if n not in by_name]
    missing = [c.name for c in columns if c.name not in names]
    if duplicated or unknown_inputs or missing:
        parts = [
            f"{label} {_names(group)}"
            for label, group in (
                ("missing", missing),
                ("unknown", unknown_inputs),
                ("duplicated", duplicated),
            )
            if group
        ]
        raise OIPError(
            f"inputs do not match the model's columns ({'; '.join(parts)}); send one tensor "
            f"per feature {list(by_name)} (see GET /v2/models/<name>)."
        )
    lengths = {name: shape[0] for name, _, shape, _ in tensors}
    if len(set(lengths.values())) != 1:
        raise OIPError(
            f"input tensors have different lengths {lengths}; every column needs one value per row."
        )
    n = _n_rows(next(iter(lengths.values())), max_rows)
    for name, datatype, _, _ in tensors:
        column = by_name[name]
        if datatype not in column.accepts:
            raise OIPError(
                f"input {name!r}: datatype {datatype} does not fit this column (metadata says "
                f"{column.datatype}); send {column.datatype}."
            )
    values = {name: vals for name, _, _, vals in tensors}
    return [{c.name: values[c.name][i] for c in columns} for i in range(n)]


def requested_outputs(body: dict[str, Any], available: list[str]) -> list[str]:
    """Names of the output tensors to return (all when the request names none)."""
    raw = body.get("outputs")
    if raw is None:
        return available
    if not isinstance(raw, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw
    ):
        raise OIPError("'outputs' must be an array of objects with a 'name'.")
    names = [o["name"] for o in raw]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise OIPError(f"unknown outputs {_names(unknown)}; this model has {available}.")
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------ response encoding
def _number(value: Any) -> float | None:
    """JSON has no NaN: an undefined number is ``null`` (as MLServer writes NaN)."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def encode_outputs(
    decisions: sp.Decisions, predictor: sp.SafePredictor, names: Iterable[str]
) -> list[dict[str, Any]]:
    """The ``$response_output`` tensors of a batch of decisions.

    Parameters
    ----------
    decisions : Decisions
        What ``decide`` returned.
    predictor : SafePredictor
        The predictor that decided (for the output datatypes).
    names : iterable of str
        The outputs to return, in order.

    Returns
    -------
    list of dict
        One tensor per name: ``name``, ``datatype``, ``shape`` and row-major ``data``.
    """
    specs = {s["name"]: s for s in _output_specs(predictor)}
    rows = [d.to_dict() for d in decisions]
    n = len(rows)

    def column(name: str) -> list[Any]:
        if name in ("decision_id", "action", "tier"):
            return [str(r[name]) for r in rows]
        if name == "prediction" and specs[name]["datatype"] == "BYTES":
            return [_json_text(r[name]) for r in rows]
        if name in ("prediction", "confidence"):
            return [_number(r[name]) for r in rows]
        if name in ("prediction_set", "reasons"):
            return [_json_text(r[name]) for r in rows]
        if name == "interval":
            return [_number(v) for r in rows for v in (r[name] or (None, None))]
        return [bool(r[name]) for r in rows]  # audit

    out = []
    for name in names:
        spec = specs[name]
        shape = [n, 2] if name == "interval" else [n]
        out.append(
            {"name": name, "datatype": spec["datatype"], "shape": shape, "data": column(name)}
        )
    return out


# ------------------------------------------------------------------ routes
def error(status: int, message: str) -> JSONResponse:
    """The protocol's error body, ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status)


router = APIRouter(prefix="/v2")


def _predictor_for(request: Request, name: str, version: str | None) -> sp.SafePredictor:
    predictor: sp.SafePredictor = request.app.state.predictor
    served = _model_name(predictor)
    if name != served:
        raise OIPError(f"unknown model {_quote(name)}; this server serves {served!r}.", 404)
    if version is not None and version != _model_version(predictor):
        raise OIPError(
            f"model {served!r} has no version {_quote(version)}; it serves version "
            f"{_model_version(predictor)!r} (or omit /versions/...).",
            404,
        )
    return predictor


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """``$metadata_server_response``."""
    return {"name": "safepredict", "version": sp.__version__, "extensions": []}


@router.get("/health/live")
async def live() -> dict[str, Any]:
    """``$live_server_response``: the process answers."""
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> Any:
    """``$ready_server_response``: the model is loaded (start-up loads it before serving)."""
    is_ready = getattr(request.app.state, "predictor", None) is not None
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def metadata(request: Request, name: str, version: str | None = None) -> Any:
    """``$metadata_model_response``."""
    try:
        return model_metadata(_predictor_for(request, name, version))
    except OIPError as exc:
        return error(exc.status, str(exc))


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None) -> Any:
    """``$ready_model_response``."""
    try:
        predictor = _predictor_for(request, name, version)
    except OIPError as exc:
        return error(exc.status, str(exc))
    return {"name": _model_name(predictor), "ready": True}


async def _body(request: Request, limit: int) -> bytes:
    """The request body, read up to ``limit`` bytes (a chunked body has no Content-Length)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise OIPError(
                f"request bodies are limited to {limit} bytes; send fewer rows per request.", 413
            )
    return bytes(raw)


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(request: Request, name: str, version: str | None = None) -> Any:
    """``$inference_request`` in, ``$inference_response`` out (or ``{"error"}``)."""
    try:
        predictor = _predictor_for(request, name, version)
        if "inference-header-content-length" in request.headers:
            raise OIPError(
                "the binary tensor data extension is not supported; send JSON tensors "
                "(tritonclient: set_data_from_numpy(..., binary_data=False) and "
                "InferRequestedOutput(name, binary_data=False))."
            )
        raw = await _body(request, request.app.state.max_body_bytes)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise OIPError("the body is not JSON; send an inference request object.") from None
        rows = decode_rows(body, predictor, request.app.state.max_rows)
        available = [s["name"] for s in _output_specs(predictor)]
        wanted = requested_outputs(body, available)
    except OIPError as exc:
        return error(exc.status, str(exc))
    request.state.n_rows = len(rows)
    kwargs = {"request_id": request.state.request_id} if request.app.state.pass_request_id else {}
    try:
        decisions = await predictor.adecide(rows, **kwargs)
    except sp.SafePredictError as exc:
        return error(400, str(exc))
    response: dict[str, Any] = {
        "model_name": _model_name(predictor),
        "model_version": _model_version(predictor),
        "id": body.get("id", request.state.request_id),
        "parameters": {
            "request_id": request.state.request_id,
            "calibration_id": predictor.calibration_id_,
            "policy_hash": predictor.summary()["policy_hash"],
        },
        "outputs": encode_outputs(decisions, predictor, wanted),
    }
    return response
