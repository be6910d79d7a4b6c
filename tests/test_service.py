"""The service example, run for real: uvicorn on 127.0.0.1, httpx clients, stdout JSON logs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import random
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from tests.service_server import Service

ACTIONS = {"accept", "review", "abstain"}
DECISION_KEYS = {
    "decision_id",
    "prediction",
    "prediction_set",
    "interval",
    "confidence",
    "tier",
    "action",
    "reasons",
    "explanation",
    "audit",
}
#: Does this safepredict emit per-decision events? (the events module, once merged)
EMITS_DECISION_EVENTS = importlib.util.find_spec("safepredict.monitoring.events") is not None

pytestmark = pytest.mark.xdist_group("service")


def _check_decision(d: dict[str, Any]) -> None:
    assert set(d) == DECISION_KEYS
    assert d["action"] in ACTIONS
    assert isinstance(d["tier"], str)
    assert d["tier"]
    assert isinstance(d["reasons"], list)
    if d["action"] == "accept":
        assert d["prediction"] in (0, 1)
        assert d["prediction_set"] == [d["prediction"]]
        assert 0.0 <= d["confidence"] <= 1.0


def _check_response(r: httpx.Response, n_rows: int | None = None) -> None:
    """A decision list, or a 4xx that says why; never a 5xx."""
    assert r.status_code < 500, r.text
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    if r.status_code == 200:
        assert n_rows is None or len(body["decisions"]) == n_rows
        for d in body["decisions"]:
            _check_decision(d)
    else:
        assert 400 <= r.status_code < 500
        assert body["error"]
        assert body["detail"]


def test_health(service: Service) -> None:
    r = httpx.get(f"{service.url}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["calibration_id"] == service.predictor.calibration_id_
    assert body["model_name"] == "diabetes-progression"


def test_predict_matches_the_library(service: Service) -> None:
    r = httpx.post(f"{service.url}/predict", json={"rows": service.rows[:40]})
    _check_response(r, 40)
    served = r.json()["decisions"]
    local = service.predictor.decide(service.rows[:40])
    for got, want in zip(served, local, strict=True):
        expected = want.to_dict()
        for key in ("prediction", "prediction_set", "confidence", "tier", "action", "reasons"):
            assert got[key] == expected[key]
    # List rows in feature order give the same decisions.
    names = list(service.predictor.feature_names_in_)
    as_lists = [[row[c] for c in names] for row in service.rows[:40]]
    r2 = httpx.post(f"{service.url}/predict", json={"rows": as_lists})
    _check_response(r2, 40)
    assert [d["action"] for d in r2.json()["decisions"]] == [d["action"] for d in served]


def test_request_id_propagated(service: Service) -> None:
    r = httpx.post(
        f"{service.url}/predict", json={"rows": service.rows[:2]}, headers={"X-Request-ID": "rq-1"}
    )
    assert r.headers["x-request-id"] == "rq-1"
    assert r.json()["request_id"] == "rq-1"
    bogus = httpx.post(
        f"{service.url}/predict", json={"rows": service.rows[:1]}, headers={"X-Request-ID": "a b"}
    )
    generated = bogus.headers["x-request-id"]
    assert generated != "a b"
    assert len(generated) == 32
    events = [e for e in service.log_lines() if e.get("request_id") == "rq-1"]
    assert [e["event"] for e in events if e["event"] == "service.request"] == ["service.request"]


MALFORMED: list[tuple[str, Any, int, str]] = [
    ("not json", b"{rows: [", 422, "invalid_request"),
    ("empty object", b"{}", 422, "invalid_request"),
    ("no rows", b'{"rows": []}', 422, "invalid_request"),
    ("rows not a list", b'{"rows": "age=3"}', 422, "invalid_request"),
    ("scalar rows", b'{"rows": [1, 2]}', 422, "invalid_request"),
    ("mixed rows", b'{"rows": [{"age": 1}, [1]]}', 422, "invalid_request"),
    ("extra key", b'{"rows": [[1]], "evil": "os.system"}', 422, "invalid_request"),
    ("json array", b"[1, 2, 3]", 422, "invalid_request"),
    ("too many rows", json.dumps({"rows": [[0] * 10] * 101}).encode(), 422, "invalid_request"),
    ("short list row", b'{"rows": [[1, 2, 3]]}', 422, "input_schema"),
    ("deep nesting", b'{"rows": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "http"),
]


@pytest.mark.parametrize(("name", "content", "status", "error"), MALFORMED)
def test_malformed_bodies_are_4xx_with_reasons(
    service: Service, name: str, content: bytes, status: int, error: str
) -> None:
    r = httpx.post(
        f"{service.url}/predict", content=content, headers={"content-type": "application/json"}
    )
    _check_response(r)
    assert r.status_code == status, name
    assert r.json()["error"] == error


def test_schema_errors_name_the_columns(service: Service) -> None:
    row = dict(service.rows[0])
    row.pop("bmi")
    row["bmii"] = 30.0
    r = httpx.post(f"{service.url}/predict", json={"rows": [row]})
    _check_response(r)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "input_schema"
    assert body["missing"] == ["bmi"]
    assert body["extra"] == ["bmii"]
    big = json.dumps({"rows": [service.rows[0]] * 90, "pad": "x" * 250_000}).encode()
    r = httpx.post(
        f"{service.url}/predict", content=big, headers={"content-type": "application/json"}
    )
    _check_response(r)
    assert r.status_code == 413
    assert r.json()["error"] == "body_too_large"


def test_wrong_method_and_path(service: Service) -> None:
    for r, status in ((httpx.get(f"{service.url}/predict"), 405), (httpx.get(service.url), 404)):
        _check_response(r)
        assert r.status_code == status
        assert r.json()["error"] == "http"


@pytest.mark.parametrize(
    ("edit", "label"),
    [
        ({"age": float("nan")}, "nan"),
        ({"bmi": float("inf")}, "inf"),
        ({"s1": None}, "null"),
        ({"bp": "high"}, "text in a numeric column"),
        ({"sex": "3"}, "unseen category"),
        ({"sex": 2}, "category of the wrong type"),
        ({"s5": [1, 2]}, "nested value"),
    ],
)
def test_bad_values_are_never_accepted(service: Service, edit: dict[str, Any], label: str) -> None:
    good = service.rows[0]
    bad = {**good, **edit}
    # NaN/Infinity are not standard JSON; clients that send them get them parsed.
    content = json.dumps({"rows": [good, bad, good]}, allow_nan=True).encode()
    r = httpx.post(
        f"{service.url}/predict", content=content, headers={"content-type": "application/json"}
    )
    _check_response(r, 3)
    decisions = r.json()["decisions"]
    assert decisions[1]["action"] != "accept", label
    assert decisions[1]["reasons"], label
    assert decisions[0] == {**decisions[2], "decision_id": decisions[0]["decision_id"]}


def test_review_pending(service: Service) -> None:
    r = httpx.get(f"{service.url}/review/pending")
    # Not configured: 404 (the resource does not exist here), never a 5xx to a client.
    assert r.json()["request_id"] == r.headers["x-request-id"]
    assert r.status_code == 404
    # The example only enables the queue with SAFEPREDICT_REVIEW_DB (unset here).
    assert "SAFEPREDICT_REVIEW_DB" in r.json()["detail"]


def _payloads(rows: list[dict[str, Any]]) -> list[tuple[bytes, int, int | None]]:
    """Request bodies for the burst, rows each decides (0: a 4xx), the bad row if any."""
    nan_row = {**rows[1], "age": math.nan}
    unseen = {**rows[2], "sex": "9"}
    missing = {k: v for k, v in rows[3].items() if k != "s6"}
    cases: list[tuple[dict[str, Any], int, int | None]] = [
        ({"rows": rows[:1]}, 1, None),
        ({"rows": rows[5:10]}, 5, None),
        ({"rows": [rows[4], nan_row]}, 2, 1),
        ({"rows": [unseen]}, 1, 0),
        ({"rows": [missing]}, 0, None),
        ({"rows": []}, 0, None),
    ]
    out = [(json.dumps(c, allow_nan=True).encode(), n, bad) for c, n, bad in cases]
    out.append((b'{"rows": [', 0, None))
    return out


@pytest.mark.slow
def test_concurrent_burst_is_served_and_logged_once(service: Service) -> None:
    n_clients, per_client = 16, 200
    payloads = _payloads(service.rows)
    results: list[tuple[str, int, int, list[str]]] = []
    never_accepted: list[str] = []

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for i in range(per_client):
            content, n_rows, bad_row = payloads[(c + i) % len(payloads)]
            rid = f"burst-{c}-{i}"
            r = await http.post(
                "/predict",
                content=content,
                headers={"content-type": "application/json", "X-Request-ID": rid},
            )
            _check_response(r, n_rows or None)
            assert (r.status_code == 200) == (n_rows > 0), r.text
            assert r.headers["x-request-id"] == rid
            actions = [d["action"] for d in r.json().get("decisions", [])]
            results.append((rid, r.status_code, n_rows, actions))
            if bad_row is not None:
                never_accepted.append(actions[bad_row])

    async def main() -> None:
        limits = httpx.Limits(max_connections=n_clients)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
            await asyncio.wait_for(
                asyncio.gather(*(client(c, http) for c in range(n_clients))), timeout=400
            )

    t0 = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - t0
    assert len(results) == n_clients * per_client
    assert all(status < 500 for _, status, _, _ in results)
    # The NaN row and the unseen category are never accepted, even under load.
    assert len(never_accepted) >= 2 * n_clients * per_client // len(payloads) - n_clients
    assert "accept" not in never_accepted
    events = service.log_lines()
    burst = [e for e in events if str(e.get("request_id", "")).startswith("burst-")]
    per_request = Counter(e["request_id"] for e in burst if e["event"] == "service.request")
    assert set(per_request) == {rid for rid, *_ in results}
    assert set(per_request.values()) == {1}
    status_logged = {e["request_id"]: e["status"] for e in burst if e["event"] == "service.request"}
    assert status_logged == {rid: status for rid, status, _, _ in results}
    decision_events = Counter(
        e["request_id"] for e in burst if e["event"] == "safepredict.decision"
    )
    if EMITS_DECISION_EVENTS:
        # One decision event per decided row, attributed to its request; none for a 4xx.
        assert decision_events == Counter(
            {rid: n for rid, status, n, _ in results if status == 200}
        )
    else:
        assert not decision_events
    rate = len(results) / elapsed
    print(f"\nburst: {len(results)} requests in {elapsed:.1f} s ({rate:.0f} req/s)")


# ------------------------------------------------------------------ fuzz
_FUZZ_PATHS = ["/predict", "/predict", "/predict", "/health", "/review/pending", "/", "/docs",
               "/openapi.json", "/predict/", "/%FF", "/nope", "//predict"]  # fmt: skip
_FUZZ_TEXT = ["", "é", "李雷", "\x00", "[" * 3000, "NaN", "Infinity", "null", "1e400", "-1",
              "<script>", "%FF", "a" * 3000, "💥"]  # fmt: skip


_COOKIE_BYTES = [b for b in range(33, 256) if b != 0x7F]  # what h11 lets a client send


def _fuzz_body(rng: random.Random, rows: list[dict[str, Any]]) -> bytes:
    kind = rng.randrange(9)
    row = dict(rng.choice(rows))
    if kind == 0:  # a valid request
        return json.dumps({"rows": [row] * rng.randrange(1, 4)}).encode()
    if kind == 1:  # a value of any type in a valid row
        key = rng.choice(list(row))
        row[key] = rng.choice([None, "x", [], {}, True, 1e308, -1e308, 10**30, "[" * 50])
        return json.dumps({"rows": [row]}).encode()
    if kind == 2:  # non-UTF-8 and random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 3:  # deep nesting
        depth = rng.choice([100, 1000, 5000])
        return b'{"rows": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 4:  # wrong shapes
        return json.dumps(rng.choice([[], {}, {"rows": []}, {"rows": 1}, {"rows": [[1, 2]]},
                                      {"rows": [row], "x": 1}, "rows", None])).encode()  # fmt: skip
    if kind == 5:  # non-standard constants
        return b'{"rows": [{"age": NaN, "bmi": Infinity, "s1": -Infinity}]}'
    if kind == 6:  # strings for keys and values in any script
        return json.dumps({"rows": [{rng.choice(_FUZZ_TEXT): rng.choice(_FUZZ_TEXT)}]}).encode()
    if kind == 7:  # a list row of the right length with odd values
        return json.dumps({"rows": [[rng.choice([0, "a", None, 1e300]) for _ in row]]}).encode()
    return json.dumps({"rows": [row] * 101}).encode()  # too many rows


@pytest.mark.slow  # ~30 s: a real decide per valid request
def test_fuzz_2000_requests_never_5xx(service: Service) -> None:
    """Random paths, methods, headers, query values and bodies (incl. non-UTF-8): no 5xx."""
    rng = random.Random(21)
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for i in range(2000):
            path = rng.choice(_FUZZ_PATHS)
            method = "POST" if path.startswith("/predict") and rng.random() < 0.8 else "GET"
            if rng.random() < 0.1:
                method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
            headers: dict[str, bytes] = {
                "content-type": rng.choice(
                    [b"application/json"] * 6 + [b"text/plain", b"\xff", b"multipart/form-data"]
                )
            }
            if rng.random() < 0.3:
                headers["x-request-id"] = rng.choice(
                    [b"ok-1", "é".encode(), b"\xff\xfe", b"a" * 500, b"$(rm -rf)"]
                )
            if rng.random() < 0.2:
                headers["cookie"] = bytes(rng.choice(_COOKIE_BYTES) for _ in range(20))
            params = {}
            if rng.random() < 0.3:
                params["limit"] = rng.choice(
                    [*_FUZZ_TEXT, "10", "0", "-5", "100000000000000000000"]
                )
            body = _fuzz_body(rng, service.rows) if method in ("POST", "PUT", "PATCH") else None
            r = client.request(method, path, headers=headers, params=params, content=body)
            statuses[r.status_code] += 1
            assert r.status_code < 500, (i, method, path, body and body[:200], r.text[:300])
    assert statuses[200] > 200, statuses
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) > 500, statuses
