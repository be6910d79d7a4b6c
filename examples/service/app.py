"""A FastAPI service around a saved :class:`safepredict.SafePredictor`.

Start-up loads the calibration file (and the skops model next to it) once; every
request is decided off the event loop with ``await predictor.adecide(rows)``.

Configuration (environment variables):

- ``SAFEPREDICT_CALIBRATION`` — calibration file written by ``predictor.save``
  (default ``artifacts/diabetes.json`` next to this file; create it with
  ``python train.py``).
- ``SAFEPREDICT_TRUSTED`` — comma-separated skops types you accept beyond skops'
  defaults (see ``skops.io.get_untrusted_types``); empty by default.
- ``SAFEPREDICT_KEY`` — HMAC key if the calibration file was signed.
- ``SAFEPREDICT_REVIEW_DB`` — SQLite file of the review queue (needs
  ``safepredict.SQLiteReviewQueue``); without it ``/review/pending`` answers 404
  (the resource does not exist in this deployment; a client never gets a 5xx).
- ``SAFEPREDICT_MAX_ROWS`` (default 1000), ``SAFEPREDICT_MAX_BODY_BYTES``
  (default 5 MB) — request limits.

Endpoints: ``POST /predict`` (``{"rows": [{feature: value, ...}, ...]}`` or
``{"rows": [[v1, v2, ...], ...]}``) -> ``{"request_id", "decisions": [...]}``;
``GET /health``; ``GET /review/pending``; and the Open Inference Protocol (V2)
under ``/v2`` (see ``oip.py``), which KServe, MLServer and Triton clients speak.

Logging: the APP (not the library) configures structlog to write one JSON
object per line to stdout. The library's decision events and this app's
``service.request`` events carry the request id (header ``X-Request-ID`` or a
generated one). Run: ``uvicorn app:app --host 127.0.0.1 --port 8000 --no-access-log``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog  # noqa: TID251  # the APP configures logging; the ban is for the library
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

import safepredict as sp

if str(Path(__file__).resolve().parent) not in sys.path:  # oip.py lives beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import oip  # the Open Inference Protocol (V2) routes

HERE = Path(__file__).resolve().parent
CALIBRATION = Path(os.environ.get("SAFEPREDICT_CALIBRATION", HERE / "artifacts/diabetes.json"))
TRUSTED = [t.strip() for t in os.environ.get("SAFEPREDICT_TRUSTED", "").split(",") if t.strip()]
KEY = os.environ.get("SAFEPREDICT_KEY") or None
REVIEW_DB = os.environ.get("SAFEPREDICT_REVIEW_DB") or None
MAX_ROWS = int(os.environ.get("SAFEPREDICT_MAX_ROWS", "1000"))
MAX_BODY_BYTES = int(os.environ.get("SAFEPREDICT_MAX_BODY_BYTES", str(5 * 1024 * 1024)))
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def configure_logging() -> None:
    """One JSON object per line on stdout; ``request_id`` comes from contextvars."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            # "logged_at", not "timestamp": decision events carry their own timestamp.
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="logged_at"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


configure_logging()
log = structlog.get_logger("service")


def _make_queue() -> Any:
    """The review queue if this safepredict has one and a database is configured."""
    queue_cls = getattr(sp, "SQLiteReviewQueue", None)
    if queue_cls is None or REVIEW_DB is None:
        return None
    return queue_cls(REVIEW_DB)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    queue = _make_queue()
    extra = {} if queue is None else {"router": queue}
    predictor = sp.SafePredictor.load(CALIBRATION, trusted=TRUSTED, key=KEY, **extra)
    app.state.predictor = predictor
    app.state.queue = queue
    app.state.max_rows = MAX_ROWS
    app.state.max_body_bytes = MAX_BODY_BYTES
    # decide(request_id=...) when the library supports it; contextvars otherwise.
    app.state.pass_request_id = "request_id" in inspect.signature(predictor.decide).parameters
    log.info(
        "service.started",
        calibration=str(CALIBRATION),
        **{k: predictor.summary()[k] for k in ("calibration_id", "policy_hash", "task")},
        review_queue=queue is not None,
    )
    yield


app = FastAPI(title="safepredict service example", lifespan=lifespan)
app.include_router(oip.router)


class PredictRequest(BaseModel):
    """Rows to decide on: objects keyed by feature name, or lists in feature order."""

    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Any]] | list[list[Any]] = Field(min_length=1, max_length=MAX_ROWS)


def _error(request: Request, status: int, error: str, detail: str, **reasons: Any) -> JSONResponse:
    if request.url.path == "/v2" or request.url.path.startswith("/v2/"):
        return oip.error(status, detail)  # the protocol's error body: {"error": ...}
    body = {"request_id": request.state.request_id, "error": error, "detail": detail, **reasons}
    return JSONResponse(body, status_code=status)


@app.middleware("http")
async def request_context(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Request id in, request id out, one ``service.request`` event per request."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request.state.request_id = request_id
    request.state.n_rows = None
    t0 = time.perf_counter()
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            response: Response = _error(
                request,
                413,
                "body_too_large",
                f"request bodies are limited to {MAX_BODY_BYTES} bytes with a Content-Length "
                "header; send fewer rows per request.",
            )
        else:
            try:
                response = await call_next(request)
            except Exception:  # last resort: log it and answer with the request id
                log.exception("service.error")
                response = _error(request, 500, "internal", "internal error; see the logs.")
        response.headers["X-Request-ID"] = request_id
        log.info(
            "service.request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            n_rows=request.state.n_rows,
            latency_ms=round(1000 * (time.perf_counter() - t0), 3),
        )
    return response


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
        for err in exc.errors()
    ]
    return _error(
        request,
        422,
        "invalid_request",
        'the body must be JSON {"rows": [...]} with 1 to '
        f"{MAX_ROWS} rows, each an object of feature values or a list in feature order.",
        problems=problems[:20],
    )


@app.exception_handler(HTTPException)
async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """404, 405, unparsable bodies, ...: the same error shape as every other 4xx."""
    response = _error(request, exc.status_code, "http", str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


@app.exception_handler(sp.InputSchemaError)
async def input_schema(request: Request, exc: sp.InputSchemaError) -> JSONResponse:
    return _error(
        request,
        422,
        "input_schema",
        str(exc),
        missing=list(exc.missing),
        extra=list(exc.extra),
        problems=list(exc.problems),
    )


@app.exception_handler(sp.ConfigError)
async def config_error(request: Request, exc: sp.ConfigError) -> JSONResponse:
    return _error(request, 422, "config", str(exc))


@app.exception_handler(sp.SafePredictError)
async def safepredict_error(request: Request, exc: sp.SafePredictError) -> JSONResponse:
    return _error(request, 400, type(exc).__name__, str(exc))


def _rows_for(predictor: sp.SafePredictor, rows: list[Any]) -> Any:
    """Rows as the predictor takes them; list rows must have one value per feature."""
    if rows and isinstance(rows[0], dict):
        return rows
    n = predictor.n_features_in_
    bad = [f"row {i} has {len(r)} values, expected {n}" for i, r in enumerate(rows) if len(r) != n]
    if bad:
        raise sp.InputSchemaError(
            f"every list row needs exactly {n} values in feature order.", problems=bad[:20]
        )
    names = getattr(predictor, "feature_names_in_", None)
    if names is not None:
        return [dict(zip(names, r, strict=True)) for r in rows]
    return rows


@app.post("/predict")
async def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
    predictor: sp.SafePredictor = request.app.state.predictor
    request.state.n_rows = len(body.rows)
    rows = _rows_for(predictor, body.rows)
    kwargs = {"request_id": request.state.request_id} if request.app.state.pass_request_id else {}
    decisions = await predictor.adecide(rows, **kwargs)
    return {
        "request_id": request.state.request_id,
        "decisions": [d.to_dict() for d in decisions],
    }


@app.get("/health")
async def health(request: Request) -> dict[str, Any]:
    predictor: sp.SafePredictor = request.app.state.predictor
    summary = predictor.summary()
    return {
        "status": "ok",
        "model_name": predictor.model_name,
        "model_version": predictor.model_version,
        **{k: summary[k] for k in ("task", "calibration_id", "policy_hash", "safepredict_version")},
    }


@app.get("/review/pending", response_model=None)
async def review_pending(request: Request, limit: int = 50) -> dict[str, Any] | JSONResponse:
    queue = request.app.state.queue
    if queue is None:
        why = (
            "set SAFEPREDICT_REVIEW_DB to a SQLite file to enable the review queue"
            if hasattr(sp, "SQLiteReviewQueue")
            else "this safepredict has no SQLiteReviewQueue (the routing module)"
        )
        return _error(request, 404, "review_queue_unavailable", f"no review queue: {why}.")
    try:
        items = await asyncio.to_thread(queue.pending, limit=max(1, min(limit, 500)))
    except sp.ReviewQueueError as exc:  # locked, read-only, corrupt: the file, not the client
        return _error(request, 503, type(exc).__name__, str(exc))
    return {
        "request_id": request.state.request_id,
        "items": [item.to_dict() if hasattr(item, "to_dict") else item for item in items],
    }


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000, access_log=False)
