"""The service example's Open Inference Protocol (V2) endpoints, against a real uvicorn.

Conformance is checked with a plain HTTP client (httpx) and with NVIDIA's
``tritonclient`` HTTP client; malformed requests are generated with hypothesis
(containers and shapes, not just values) and must get a 4xx with the protocol's
error body ``{"error": "..."}``, never a 5xx.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import numpy as np
import pytest
import tests.service_server as service_tests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.service_server import Service

pytestmark = pytest.mark.xdist_group("service")

MODEL = "diabetes-progression"
VERSION = "example-1"
CLASSIFICATION_OUTPUTS = [
    "decision_id",
    "action",
    "tier",
    "prediction",
    "confidence",
    "prediction_set",
    "reasons",
    "audit",
]


def _infer_url(service: Service, model: str = MODEL) -> str:
    return f"{service.url}/v2/models/{model}/infer"


def _column_tensors(service: Service, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One tensor per feature column: ``sex`` as BYTES, the rest FP64."""
    names = [str(c) for c in service.predictor.feature_names_in_]
    return [
        {
            "name": name,
            "shape": [len(rows)],
            "datatype": "BYTES" if name == "sex" else "FP64",
            "data": [str(r[name]) if name == "sex" else float(r[name]) for r in rows],
        }
        for name in names
    ]


def _json_rows_tensor(rows: list[Any]) -> dict[str, Any]:
    return {
        "name": "rows",
        "shape": [len(rows)],
        "datatype": "BYTES",
        "data": [json.dumps(r) for r in rows],
    }


def _outputs(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {o["name"]: o["data"] for o in body["outputs"]}


def _assert_error(r: httpx.Response, status: int, *words: str) -> None:
    """The protocol's error object and nothing else, with a 4xx status."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    for word in words:
        assert word in body["error"], (word, body["error"])


def _assert_matches_library(service: Service, outputs: dict[str, list[Any]], rows: Any) -> None:
    local = service.predictor.decide(rows)
    n = len(local)
    assert outputs["action"] == list(local.actions)
    assert outputs["tier"] == list(local.tiers)
    assert [json.loads(p) for p in outputs["prediction"]] == [
        d.to_dict()["prediction"] for d in local
    ]
    assert [json.loads(s) for s in outputs["prediction_set"]] == [
        d.to_dict()["prediction_set"] for d in local
    ]
    assert [json.loads(r) for r in outputs["reasons"]] == [list(r) for r in local.reasons]
    want_conf = [None if math.isnan(c) else float(c) for c in local.confidence]
    assert outputs["confidence"] == pytest.approx(want_conf)
    assert outputs["audit"] == [bool(a) for a in local.audit]
    assert len(set(outputs["decision_id"])) == n


# ------------------------------------------------------------------ health and metadata
def test_health_endpoints(service: Service) -> None:
    live = httpx.get(f"{service.url}/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = httpx.get(f"{service.url}/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    server = httpx.get(f"{service.url}/v2").json()
    assert server["name"] == "safepredict"
    assert server["extensions"] == []
    for path in (f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/{VERSION}/ready"):
        r = httpx.get(service.url + path)
        assert (r.status_code, r.json()) == (200, {"name": MODEL, "ready": True})
    _assert_error(httpx.get(f"{service.url}/v2/models/other/ready"), 404, "other", MODEL)


def test_model_metadata_follows_the_input_schema(service: Service) -> None:
    r = httpx.get(f"{service.url}/v2/models/{MODEL}")
    assert r.status_code == 200
    meta = r.json()
    assert meta["name"] == MODEL
    assert meta["versions"] == [VERSION]
    assert meta["platform"].startswith("safepredict")
    names = [str(c) for c in service.predictor.feature_names_in_]
    assert [t["name"] for t in meta["inputs"]] == names
    # sex was calibrated as string categories; every other column is numeric.
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {
        n: "BYTES" if n == "sex" else "FP64" for n in names
    }
    assert all(t["shape"] == [-1] for t in meta["inputs"])
    assert [t["name"] for t in meta["outputs"]] == CLASSIFICATION_OUTPUTS
    assert meta["parameters"]["calibration_id"] == service.predictor.calibration_id_
    versioned = httpx.get(f"{service.url}/v2/models/{MODEL}/versions/{VERSION}")
    assert versioned.json() == meta
    _assert_error(httpx.get(f"{service.url}/v2/models/{MODEL}/versions/2"), 404, VERSION)
    _assert_error(httpx.get(f"{service.url}/v2/models/nope"), 404, "nope", MODEL)


# ------------------------------------------------------------------ inference
def test_infer_with_column_tensors_matches_the_library(service: Service) -> None:
    rows = service.rows[:40]
    body = {"id": "req-42", "parameters": {"note": 1}, "inputs": _column_tensors(service, rows)}
    r = httpx.post(_infer_url(service), json=body, headers={"X-Request-ID": "oip-1"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["id"] == "req-42"
    assert got["model_name"] == MODEL
    assert got["model_version"] == VERSION
    assert got["parameters"]["request_id"] == "oip-1"
    assert [o["name"] for o in got["outputs"]] == CLASSIFICATION_OUTPUTS
    for o in got["outputs"]:
        assert o["shape"] == [40]
        assert len(o["data"]) == 40
    _assert_matches_library(service, _outputs(got), rows)
    # The same columns nested as [n, 1], and only two outputs requested, in that order.
    nested = [{**t, "shape": [40, 1], "data": [[v] for v in t["data"]]} for t in body["inputs"]]
    r2 = httpx.post(
        f"{service.url}/v2/models/{MODEL}/versions/{VERSION}/infer",
        json={"inputs": nested, "outputs": [{"name": "tier"}, {"name": "action"}]},
    )
    assert r2.status_code == 200, r2.text
    assert [o["name"] for o in r2.json()["outputs"]] == ["tier", "action"]
    assert _outputs(r2.json())["action"] == _outputs(got)["action"]
    # Without an id the response carries the request id.
    assert r2.json()["id"] == r2.headers["x-request-id"]


def test_infer_with_json_rows_matches_the_columns(service: Service) -> None:
    rows = service.rows[:30]
    names = [str(c) for c in service.predictor.feature_names_in_]
    mixed: list[Any] = [r if i % 2 else [r[c] for c in names] for i, r in enumerate(rows)]
    r = httpx.post(_infer_url(service), json={"inputs": [_json_rows_tensor(mixed)]})
    assert r.status_code == 200, r.text
    _assert_matches_library(service, _outputs(r.json()), rows)


def test_bad_rows_abstain_with_reasons(service: Service) -> None:
    good = service.rows[0]
    rows = [good, {**good, "sex": "9"}, {**good, "bmi": 1e6}, good]
    r = httpx.post(_infer_url(service), json={"inputs": _column_tensors(service, rows)})
    assert r.status_code == 200, r.text
    out = _outputs(r.json())
    for i in (1, 2):
        assert out["action"][i] != "accept"
        assert json.loads(out["reasons"][i])
    assert json.loads(out["reasons"][1]) == ["unseen_category:sex"]
    # Undefined numbers are JSON null, never NaN (not JSON) and never a made-up value.
    assert out["prediction"][1] == "null"
    assert out["confidence"][1] is None
    assert out["action"][0] == out["action"][3]


def _valid(service: Service, n: int = 2) -> dict[str, Any]:
    return {"inputs": _column_tensors(service, service.rows[:n])}


def _edit(body: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    inputs = [{**t, **changes} if t["name"] == name else t for t in body["inputs"]]
    return {**body, "inputs": inputs}


MALFORMED: list[tuple[str, Any, tuple[str, ...]]] = [
    ("not an object", [1, 2], ("JSON object",)),
    ("no inputs", {}, ("'inputs'",)),
    ("empty inputs", {"inputs": []}, ("'inputs'",)),
    ("unknown field", {"inputs": [], "evil": 1}, ("unknown request fields",)),
    ("id not a string", {"id": 5, "inputs": []}, ("'id'",)),
    ("parameters not an object", {"parameters": [1], "inputs": []}, ("'parameters'",)),
    ("tensor not an object", {"inputs": ["age"]}, ("inputs[0]",)),
    ("tensor lacks data", {"inputs": [{"name": "age", "shape": [1], "datatype": "FP64"}]},
     ("['data']",)),
    ("unknown datatype", {"inputs": [{"name": "rows", "shape": [1], "datatype": "FLOAT",
                                      "data": ["{}"]}]}, ("FLOAT", "BYTES")),
    ("negative shape", {"inputs": [{"name": "rows", "shape": [-1], "datatype": "BYTES",
                                    "data": []}]}, ("shape",)),
    ("2-D columns", {"inputs": [{"name": "rows", "shape": [1, 2], "datatype": "BYTES",
                                 "data": ["{}", "{}"]}]}, ("[n, 1]",)),
    ("shape/data mismatch", {"inputs": [{"name": "rows", "shape": [3], "datatype": "BYTES",
                                         "data": ["{}"]}]}, ("3 elements", "has 1")),
    ("row not JSON", {"inputs": [{"name": "rows", "shape": [1], "datatype": "BYTES",
                                  "data": ["{age: 3"]}]}, ("not JSON",)),
    ("row a number", {"inputs": [{"name": "rows", "shape": [1], "datatype": "BYTES",
                                  "data": ["3"]}]}, ("JSON object or array",)),
    ("short list row", {"inputs": [{"name": "rows", "shape": [1], "datatype": "BYTES",
                                    "data": ["[1, 2]"]}]}, ("2 values, expected 10",)),
    ("unknown row key", {"inputs": [{"name": "rows", "shape": [1], "datatype": "BYTES",
                                     "data": ['{"agee": 3}']}]}, ("missing keys",)),
    ("numeric single tensor", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64",
                                           "data": [1.0]}]}, ("not a feature",)),
    ("zero rows", {"inputs": [{"name": "rows", "shape": [0], "datatype": "BYTES",
                               "data": []}]}, ("1 to 100 rows",)),
    ("too many rows", {"inputs": [{"name": "rows", "shape": [101], "datatype": "BYTES",
                                   "data": ["{}"] * 101}]}, ("1 to 100 rows",)),
    ("unknown output", "OUTPUTS", ("unknown outputs", "'nope'")),
    ("missing column", "MISSING", ("missing", "'s6'")),
    ("duplicated column", "DUPLICATED", ("duplicated", "'age'")),
    ("lengths differ", "LENGTHS", ("different lengths",)),
    ("wrong datatype for column", "SEX_FP64", ("'sex'", "send BYTES")),
    ("element not of datatype", "TEXT_IN_FP64", ("'bmi'", "numbers", "element 1")),
    ("integer out of range", "INT8", ("'age'", "[-128, 127]")),
]  # fmt: skip


def _special(service: Service, key: str) -> dict[str, Any]:
    body = _valid(service)
    if key == "OUTPUTS":
        return {**body, "outputs": [{"name": "action"}, {"name": "nope"}]}
    if key == "MISSING":
        return {"inputs": [t for t in body["inputs"] if t["name"] != "s6"]}
    if key == "DUPLICATED":
        return {"inputs": [*body["inputs"], body["inputs"][0]]}
    if key == "LENGTHS":
        return _edit(body, "bmi", shape=[3], data=[1.0, 2.0, 3.0])
    if key == "SEX_FP64":
        return _edit(body, "sex", datatype="FP64", data=[1.0, 2.0])
    if key == "TEXT_IN_FP64":
        return _edit(body, "bmi", data=[30.0, "high"])
    assert key == "INT8"
    return _edit(body, "age", datatype="INT8", data=[50, 300])


@pytest.mark.parametrize(("label", "body", "words"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_the_protocol_error(
    service: Service, label: str, body: Any, words: tuple[str, ...]
) -> None:
    if isinstance(body, str):
        body = _special(service, body)
    r = httpx.post(_infer_url(service), json=body)
    _assert_error(r, 400, *words)


def test_transport_level_errors_use_the_protocol_body(service: Service) -> None:
    url = _infer_url(service)
    _assert_error(httpx.post(url, content=b'{"inputs": ['), 400, "not JSON")
    _assert_error(httpx.post(url, content=b"\xff\xfe\x00"), 400, "not JSON")
    deep = b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    _assert_error(httpx.post(url, content=deep), 400, "not JSON")
    _assert_error(httpx.post(url, content=b"x" * 250_000), 413, "200000 bytes")
    # A chunked body has no Content-Length: the limit holds while it is read.
    chunks = iter([b'{"inputs": [' + b" " * 50_000] * 6)
    _assert_error(httpx.post(url, content=chunks), 413, "200000 bytes")
    _assert_error(httpx.post(_infer_url(service, "nope"), json=_valid(service)), 404, "nope")
    _assert_error(httpx.get(url), 405)
    _assert_error(httpx.get(f"{service.url}/v2/models/{MODEL}/nothing"), 404)
    binary = httpx.post(
        url, json=_valid(service), headers={"Inference-Header-Content-Length": "10"}
    )
    _assert_error(binary, 400, "binary_data=False")
    # The protocol's error body only under /v2: the example's own routes keep theirs.
    assert set(httpx.get(f"{service.url}/nothing").json()) >= {"request_id", "detail"}


# ------------------------------------------------------------------ property: never a 5xx
_NAMES = st.sampled_from(
    ["age", "sex", "bmi", "s6", "rows", "", "é", "李雷", "\x00", "<script>", "a" * 300, "💥"]
)
_DATATYPES = st.sampled_from(
    ["BOOL", "INT8", "UINT64", "INT64", "FP16", "FP32", "FP64", "BYTES", "fp64", "", "STRING"]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(['{"age": 1}', "[1,2,3]", "[" * 200, "NaN", "{}", "null"]),
)
_DATA = st.recursive(
    st.lists(_SCALARS, max_size=6), lambda inner: st.lists(inner, max_size=4), max_leaves=20
)
_SHAPES = st.one_of(
    st.lists(st.integers(min_value=-2, max_value=4), min_size=0, max_size=3),
    st.lists(st.sampled_from([True, 1.5, "2", None, 2**65]), min_size=1, max_size=2),
    _SCALARS,
)
_TENSORS = st.fixed_dictionaries(
    {"name": _NAMES, "shape": _SHAPES, "datatype": _DATATYPES, "data": _DATA},
    optional={"parameters": st.one_of(st.dictionaries(st.text(max_size=5), _SCALARS), _SCALARS)},
)
_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(_TENSORS, max_size=12), _SCALARS)},
        optional={
            "id": _SCALARS,
            "parameters": st.one_of(st.dictionaries(st.text(max_size=5), _SCALARS), _SCALARS),
            "outputs": st.one_of(
                st.lists(st.fixed_dictionaries({"name": _NAMES}), max_size=3), _SCALARS
            ),
        },
    ),
    st.lists(_SCALARS, max_size=3),
    _SCALARS,
)


def _mutate(service: Service, data: st.DataObject) -> dict[str, Any]:
    """A valid request with one part replaced: reaches the checks behind the first ones."""
    n = data.draw(st.integers(min_value=1, max_value=4), label="rows")
    body = _valid(service, n)
    i = data.draw(st.integers(min_value=0, max_value=len(body["inputs"]) - 1), label="tensor")
    key = data.draw(st.sampled_from(["name", "shape", "datatype", "data", "drop"]), label="part")
    if key == "drop":
        del body["inputs"][i]
        return body
    strategy = {"name": _NAMES, "shape": _SHAPES, "datatype": _DATATYPES, "data": _DATA}[key]
    body["inputs"][i] = {**body["inputs"][i], key: data.draw(strategy, label=key)}
    return body


def _check_response(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code != 200:
        assert 400 <= r.status_code < 500
        assert set(body) == {"error"}
        assert isinstance(body["error"], str)
        return
    n = body["outputs"][0]["shape"][0]
    for out in body["outputs"]:
        assert out["shape"][0] == n
        assert len(out["data"]) == math.prod(out["shape"])
    actions = body["outputs"][1]["data"]
    assert set(actions) <= {"accept", "review", "abstain"}


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=_BODIES, data=st.data())
def test_property_any_request_shape_is_4xx_or_a_decision(
    service: Service, body: Any, data: st.DataObject
) -> None:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        r = client.post(f"/v2/models/{MODEL}/infer", json=body)
        _check_response(r)
        mutated = _mutate(service, data)
        r2 = client.post(f"/v2/models/{MODEL}/infer", json=mutated)
        _check_response(r2)


# ------------------------------------------------------------------ tritonclient
def test_tritonclient_http_conformance(service: Service) -> None:
    """NVIDIA's own HTTP client speaks to the example: health, metadata, infer, errors."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(url=service.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, VERSION)
        assert not client.is_model_ready("nope")
        meta = client.get_model_metadata(MODEL)
        assert meta["name"] == MODEL
        assert client.get_server_metadata()["name"] == "safepredict"
        rows = service.rows[:25]
        inputs = []
        for tensor in _column_tensors(service, rows):
            arr = np.array(tensor["data"], dtype=object if tensor["datatype"] == "BYTES" else float)
            t = triton.InferInput(tensor["name"], [len(rows)], tensor["datatype"])
            t.set_data_from_numpy(arr, binary_data=False)
            inputs.append(t)
        outputs = [
            triton.InferRequestedOutput(name, binary_data=False)
            for name in ("action", "tier", "confidence", "reasons")
        ]
        result = client.infer(MODEL, inputs, outputs=outputs, request_id="triton-1")
        local = service.predictor.decide(rows)
        assert [str(a) for a in result.as_numpy("action")] == list(local.actions)
        assert [str(t) for t in result.as_numpy("tier")] == list(local.tiers)
        np.testing.assert_allclose(result.as_numpy("confidence"), local.confidence)
        assert result.get_response()["id"] == "triton-1"
        with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
            client.infer("nope", inputs)
        # The client's default binary tensor extension is refused with the way out.
        binary = triton.InferInput("age", [1], "FP64")
        binary.set_data_from_numpy(np.array([50.0]))
        with pytest.raises(InferenceServerException, match="binary_data=False"):
            client.infer(MODEL, [binary])
    finally:
        client.close()


# ------------------------------------------------------------------ in process: a regressor
def _oip_module() -> Any:
    import importlib.util
    import sys

    path = service_tests.SERVICE / "oip.py"
    spec = importlib.util.spec_from_file_location("service_oip", path)
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules["service_oip"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regressor_outputs_are_intervals_and_numbers() -> None:
    """A regressor: FP64 predictions, an [n, 2] interval tensor, no confidence or set."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    import safepredict as sp

    oip = _oip_module()
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = Ridge().fit(X[:200], y[:200])
    predictor = sp.SafePredictor(model, model_name="ridge", log="off").calibrate(
        X[200:350], y[200:350]
    )
    meta = oip.model_metadata(predictor)
    assert {t["datatype"] for t in meta["inputs"]} == {"FP64"}
    outputs = {t["name"]: t for t in meta["outputs"]}
    assert "confidence" not in outputs
    assert "prediction_set" not in outputs
    assert outputs["interval"] == {"name": "interval", "datatype": "FP64", "shape": [-1, 2]}
    assert outputs["prediction"]["datatype"] == "FP64"
    rows = X[350:360].to_dict(orient="records")
    rows[3] = {**rows[3], "bmi": float("nan")}  # no prediction there: nulls, never NaN
    body = {"inputs": [{"name": "rows", "shape": [10], "datatype": "BYTES",
                        "data": [json.dumps(r) for r in rows]}]}  # fmt: skip
    decided = predictor.decide(oip.decode_rows(body, predictor, 100))
    out = {o["name"]: o for o in oip.encode_outputs(decided, predictor, list(outputs))}
    assert out["interval"]["shape"] == [10, 2]
    flat = out["interval"]["data"]
    assert len(flat) == 20
    want = decided.intervals
    assert want is not None
    for i in range(10):
        if i == 3:
            assert flat[6:8] == [None, None]
            assert out["prediction"]["data"][3] is None
            continue
        assert flat[2 * i : 2 * i + 2] == pytest.approx(want[i].tolist())
        assert out["prediction"]["data"][i] == pytest.approx(float(decided.predictions[i]))
    json.dumps(out, allow_nan=False)  # standard JSON: no NaN anywhere


def test_the_response_check_has_teeth() -> None:
    """Negative control: the property test's check fails on a 5xx and on a loose error body."""
    server_error = httpx.Response(500, json={"error": "boom"})
    with pytest.raises(AssertionError):
        _check_response(server_error)
    loose = httpx.Response(400, json={"error": "bad", "detail": "extra key"})
    with pytest.raises(AssertionError):
        _check_response(loose)
    torn = {"outputs": [{"shape": [2], "data": [1, 2]}, {"shape": [3], "data": [1, 2, 3]}]}
    with pytest.raises(AssertionError):  # outputs of different lengths
        _check_response(httpx.Response(200, json=torn))
