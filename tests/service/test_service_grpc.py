"""KServe v2 over gRPC (service/grpc) against a live server on 127.0.0.1, with the stock tritonclient.grpc: the same
scores, metadata, errors, auth, limits and metrics as the HTTP routes; and the committed descriptor is the .proto's."""

from __future__ import annotations

import math
import re

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from live_server import uvicorn_thread
from service_testing import make_app
from synthetic_bundle import ROWS
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.grpc import descriptor, generate
from service.server import uvicorn_options

MODEL = "synthetic-apg"
TOKEN = "grpc-test"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_ROWS = 64
MAX_BODY = 64 * 1024
TEXT = ["user_id", "item_id", "gender", "zip_code", "genres"]
# ROWS as a v2 client sends them: text for categorical features (multi-valued joined by '|'), a double for age.
# gRPC has no null, so the row without an age is left out.
V2_ROWS = [
    {**{f: "|".join(r[f]) if isinstance(r.get(f), list) else str(r.get(f, "")) for f in TEXT}, "age": float(r["age"])}
    for r in ROWS
    if r.get("age") is not None
]


@pytest.fixture(scope="module")
def server(bundle):
    """A real uvicorn server (as `apg serve` runs it) with gRPC on a free port: (http base URL, grpc address, app)."""
    app = make_app(bundle.path, grpc_port=0, auth_token=TOKEN, max_rows=MAX_ROWS, max_body_bytes=MAX_BODY)
    with uvicorn_thread(app, **uvicorn_options(app.state.settings)) as address:
        yield f"http://{address}", f"127.0.0.1:{app.state.grpc_port}", app


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server[1]) as c:
        yield c


def inputs(rows: list[dict]) -> list[triton.InferInput]:
    """One tensor per raw feature, as tritonclient.grpc sends them (raw_input_contents)."""
    tensors = []
    for name in TEXT:
        t = triton.InferInput(name, [len(rows)], "BYTES")
        t.set_data_from_numpy(np.array([r[name] for r in rows], dtype=object))
        tensors.append(t)
    age = triton.InferInput("age", [len(rows)], "FP64")
    age.set_data_from_numpy(np.array([r["age"] for r in rows], dtype=np.float64))
    return [*tensors, age]


def http_scores(server, rows: list[dict]) -> np.ndarray:
    answer = httpx.post(f"{server[0]}/score", json={"instances": rows}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["scores"])


def http_v2_error(server, body: dict) -> tuple[int, str]:
    answer = httpx.post(f"{server[0]}/v2/models/{MODEL}/infer", json=body, headers=AUTH)
    return answer.status_code, answer.json()["error"]


def metric(server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server[0]}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def raw_stub(server):
    """Triton's own generated stub, for requests tritonclient.grpc's helpers do not build (typed contents)."""
    channel = grpc.insecure_channel(server[1])
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def typed_request(rows: list[dict]) -> service_pb2.ModelInferRequest:
    """The same tensors in InferTensorContents (bytes_contents, fp64_contents) instead of raw_input_contents."""
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed-1")
    for name in TEXT:
        t = request.inputs.add(name=name, datatype="BYTES", shape=[len(rows)])
        t.contents.bytes_contents.extend(r[name].encode() for r in rows)
    t = request.inputs.add(name="age", datatype="FP64", shape=[len(rows)])
    t.contents.fp64_contents.extend(r["age"] for r in rows)
    return request


def test_tritonclient_scores_equal_score_route(server, client):
    answer = client.infer(MODEL, inputs(V2_ROWS), request_id="r-1", headers=AUTH)
    assert answer.get_response().model_name == MODEL and answer.get_response().id == "r-1"
    scores = answer.as_numpy("score")
    assert scores.dtype == np.float32 and scores.shape == (len(V2_ROWS),)
    np.testing.assert_allclose(scores, http_scores(server, V2_ROWS), rtol=0, atol=1e-6)


def test_typed_contents_score_the_same(server):
    channel, stub = raw_stub(server)
    with channel:
        answer = stub.ModelInfer(typed_request(V2_ROWS), metadata=tuple(AUTH.items()), timeout=10)
        ints = typed_request(V2_ROWS[:2])  # age as INT64 in int64_contents
        ints.inputs[-1].datatype = "INT64"
        ints.inputs[-1].contents.Clear()
        ints.inputs[-1].contents.int64_contents.extend(int(r["age"]) for r in V2_ROWS[:2])
        as_ints = stub.ModelInfer(ints, metadata=tuple(AUTH.items()), timeout=10)
    scores = np.frombuffer(answer.raw_output_contents[0], dtype="<f4")
    assert answer.id == "typed-1" and list(answer.outputs[0].shape) == [len(V2_ROWS)]
    np.testing.assert_allclose(scores, http_scores(server, V2_ROWS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.frombuffer(as_ints.raw_output_contents[0], "<f4"), scores[:2], rtol=0, atol=1e-6)


def test_multi_valued_feature_as_a_matrix(server, client):
    # genres as [B, K] BYTES, padded with "" (missing), scores as the '|'-joined form
    rows = [{**V2_ROWS[0], "genres": "Comedy|Drama"}, {**V2_ROWS[1], "genres": "Action"}]
    tensors = [t for t in inputs(rows) if t.name() != "genres"]
    genres = triton.InferInput("genres", [2, 2], "BYTES")
    genres.set_data_from_numpy(np.array([["Comedy", "Drama"], ["Action", ""]], dtype=object))
    scores = client.infer(MODEL, [*tensors, genres], headers=AUTH).as_numpy("score")
    np.testing.assert_allclose(scores, http_scores(server, rows), rtol=0, atol=1e-6)


def test_health_and_metadata_as_http(server, client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="v1")
    http_meta = httpx.get(f"{server[0]}/v2/models/{MODEL}").json()
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert (
        meta["name"] == MODEL and meta["versions"] == http_meta["versions"] and meta["platform"] == "onnxruntime_onnx"
    )
    for kind in ("inputs", "outputs"):
        got = [{**t, "shape": [int(d) for d in t["shape"]]} for t in meta[kind]]
        assert got == http_meta[kind]
    assert client.get_server_metadata(as_json=True) == httpx.get(f"{server[0]}/v2").json()


def test_readiness_false_while_draining(server, client):
    runtime = server[2].state.runtime
    runtime.draining = True
    try:
        assert client.is_server_live() and not client.is_server_ready()
    finally:
        runtime.draining = False
    assert client.is_server_ready()


def test_unknown_model_is_not_found_with_the_http_message(server, client):
    http = httpx.get(f"{server[0]}/v2/models/nope")
    with pytest.raises(triton.InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND" and caught.value.message() == http.json()["error"]
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer(MODEL, inputs(V2_ROWS), model_version="v9", headers=AUTH)
    assert caught.value.status() == "StatusCode.NOT_FOUND" and "unknown model" in caught.value.message()


def test_bad_input_is_invalid_argument_with_our_message(server, client):
    tensors = inputs(V2_ROWS[:2])
    bad = triton.InferInput("agee", [2], "FP64")
    bad.set_data_from_numpy(np.array([1.0, 2.0]))
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer(MODEL, [*tensors[:-1], bad], headers=AUTH)
    json_body = {"inputs": [{"name": "agee", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    json_body["inputs"] += [
        {"name": n, "shape": [2], "datatype": "BYTES", "data": [r[n] for r in V2_ROWS[:2]]} for n in TEXT
    ]
    status, message = http_v2_error(server, json_body)
    assert status == 400 and caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert caught.value.message() == message and "'agee'" in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r.inputs[0].contents.fp64_contents.append(1.0), "takes its values in contents.bytes_contents"),
        (lambda r: r.raw_input_contents.append(b"\x00"), "raw_input_contents has 1 entries for 6 inputs"),
        (lambda r: setattr(r.inputs[-1], "datatype", "FP16"), "FP16 values travel only in raw_input_contents"),
        (lambda r: r.inputs[1].shape.__setitem__(0, 3), "needs 3 values, got"),
        (lambda r: r.outputs.add(name="prob"), "unknown output 'prob'"),
        (lambda r: r.inputs[-1].contents.fp64_contents.__setitem__(0, math.nan), "age"),
        (lambda r: r.inputs[0].contents.bytes_contents.__setitem__(0, b"\xff"), "is not UTF-8 text"),
    ],
)
def test_malformed_tensors_are_invalid_argument(server, edit, expected):
    request = typed_request(V2_ROWS[:2])
    edit(request)
    channel, stub = raw_stub(server)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, metadata=tuple(AUTH.items()), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert expected in caught.value.details()
    trailing = dict(caught.value.trailing_metadata())
    assert trailing["apg-error-code"] and trailing["x-request-id"]


def test_auth_by_bearer_metadata(server, client):
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        with pytest.raises(triton.InferenceServerException) as caught:
            client.infer(MODEL, inputs(V2_ROWS[:1]), headers=headers)
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        assert caught.value.message() == "missing or invalid bearer token"
    assert client.get_model_metadata(MODEL).name == MODEL  # metadata and health stay open, as over HTTP


def test_row_and_message_limits(server, client):
    rows = V2_ROWS[:1] * (MAX_ROWS + 1)
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer(MODEL, inputs(rows), headers=AUTH)
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert f"declares {MAX_ROWS + 1} rows; the limit is {MAX_ROWS} (APG_MAX_ROWS)" in caught.value.message()
    big = [{**V2_ROWS[0], "zip_code": "5" * 2000}] * 40  # ~80 KB > APG_MAX_BODY_BYTES
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer(MODEL, inputs(big), headers=AUTH)
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED" and str(MAX_BODY) in caught.value.message()
    assert len(client.infer(MODEL, inputs(V2_ROWS[:1] * MAX_ROWS), headers=AUTH).as_numpy("score")) == MAX_ROWS


def test_metrics_by_rpc_route_and_http_status(server, client):
    route = "/inference.GRPCInferenceService/ModelInfer"
    ok, bad = (metric(server, "apg_requests_total", code=c, route=route) for c in ("200", "401"))
    parses = metric(server, "apg_stage_duration_seconds_count", stage="parse")
    timed = metric(server, "apg_request_duration_seconds_count", route=route)
    client.infer(MODEL, inputs(V2_ROWS), headers=AUTH)
    with pytest.raises(triton.InferenceServerException):
        client.infer(MODEL, inputs(V2_ROWS))
    assert metric(server, "apg_requests_total", code="200", route=route) == ok + 1
    assert metric(server, "apg_requests_total", code="401", route=route) == bad + 1
    assert metric(server, "apg_request_duration_seconds_count", route=route) == timed + 2
    assert metric(server, "apg_stage_duration_seconds_count", stage="parse") == parses + 1
    assert metric(server, "apg_inflight_requests") == 0  # back down after both


def test_descriptor_is_the_proto_compiled():
    # descriptor.py is generated (python -m service.grpc.generate); regenerate with grpcio-tools and compare
    compiled = generate.compile_proto()
    assert descriptor.SERIALIZED == compiled
    assert generate.TARGET.read_text() == generate.render(compiled)


def test_the_proto_is_the_official_text():
    text = generate.PROTO.read_text()
    header, _, official = text.partition("\n\n")
    assert "github.com/kserve/open-inference-protocol" in header and "Apache License 2.0" in header
    assert official.startswith("// Copyright 2023 The KServe Authors.")
    assert re.search(r"^package inference;$", official, re.M) and "service GRPCInferenceService" in official
