"""KServe v2 over gRPC (service/grpc) against a live server on 127.0.0.1, with the stock tritonclient.grpc: the same
scores, metadata, errors, auth, limits and metrics as the HTTP routes; and the committed descriptor is the .proto's."""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from live_server import free_port, stop, uvicorn_thread
from service_testing import make_app
from synthetic_bundle import ROWS, build_bundle
from test_service_process import ROOT, start, wait_for
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
    with uvicorn_thread(app, **uvicorn_options(app.state.services.settings)) as address:
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
    runtime = server[2].state.services.runtime
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


def test_the_access_line_names_the_error_and_field_as_for_http(server):
    # service/observe.py writes both protocols' lines: a refused call's carries its error code and the field it names
    def ours(records: list[logging.LogRecord]) -> list[dict]:
        return [r.fields for r in records if r.fields.get("request_id") == "grpc-line-1"]

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    apg, access = logging.getLogger("apg"), logging.getLogger("apg.access")
    level = apg.level
    apg.setLevel(logging.INFO)
    access.addHandler(handler)
    request = typed_request(V2_ROWS[:2])
    request.outputs.add(name="prob")
    channel, stub = raw_stub(server)
    try:
        with channel, pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=(*AUTH.items(), ("x-request-id", "grpc-line-1")), timeout=10)
        # the line is written once the server's handler returns, maybe after the call; an earlier test's late line
        # may arrive first, so wait for this call's own
        deadline = time.monotonic() + 10
        while not ours(records) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        access.removeHandler(handler)
        apg.setLevel(level)
    assert dict(caught.value.trailing_metadata())["x-request-id"] == "grpc-line-1"
    (line,) = ours(records)
    assert (line["protocol"], line["route"], line["status"]) == (
        "grpc",
        "/inference.GRPCInferenceService/ModelInfer",
        400,
    )
    assert (line["error"], line["field"], line["rows"]) == ("bad_request", "outputs", None)


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


def test_a_full_worker_answers_unavailable_as_http_answers_503(server, client):
    # the HTTP routes' admission rule (service/admission.py) holds for ModelInfer too: full → UNAVAILABLE, same message
    admission = server[2].state.services.admission
    admission.in_progress += admission.limit
    try:
        with pytest.raises(triton.InferenceServerException) as caught:
            client.infer(MODEL, inputs(V2_ROWS[:1]), headers=AUTH)
        http = httpx.post(f"{server[0]}/v2/models/{MODEL}/infer", json={"inputs": []}, headers=AUTH)
    finally:
        admission.in_progress -= admission.limit
    assert caught.value.status() == "StatusCode.UNAVAILABLE" and http.status_code == 503
    assert caught.value.message() == http.json()["error"] and "APG_MAX_QUEUE" in caught.value.message()
    assert client.get_model_metadata(MODEL).name == MODEL  # metadata is never refused for load


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


def test_each_model_of_a_repository_by_name(tmp_path):
    # APG_MODELS: ModelInfer scores with the model it names, as /score {"model": ...} does, and counts per model
    for name, seed in (("a", 0), ("b", 1)):
        build_bundle(tmp_path / "models" / name, version=f"v-{name}", seed=seed)
    app = make_app(tmp_path / "models" / "a", models=tmp_path / "models", grpc_port=0)
    with uvicorn_thread(app, **uvicorn_options(app.state.services.settings)) as address:
        url = f"http://{address}"
        with triton.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}") as c:
            got = {m: c.infer(m, inputs(V2_ROWS)).as_numpy("score") for m in ("a", "b")}
            assert c.get_model_metadata("b").versions == ["v-b"]
        for m, scores in got.items():
            answer = httpx.post(f"{url}/score", json={"model": m, "instances": V2_ROWS}).json()
            assert answer["model"]["name"] == m
            np.testing.assert_allclose(scores, answer["scores"], rtol=0, atol=1e-6)
        assert np.abs(got["a"] - got["b"]).max() > 1e-3  # two different models answered
        server = (url, None, app)
        assert metric(server, "apg_model_requests_total", arm="none", code="200", model="b") == 2  # gRPC + /score


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


# ---------------------------------------------------------------- as processes


def listening_sockets(port: int) -> int:
    """How many sockets LISTEN on 127.0.0.1:`port` (Linux /proc/net/tcp{,6}: local address, state 0A); gRPC binds
    IPv4-mapped IPv6 sockets (::ffff:127.0.0.1)."""
    wanted = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    lines = [line.split() for f in ("tcp", "tcp6") for line in Path(f"/proc/net/{f}").read_text().splitlines()[1:]]
    return sum(1 for fields in lines if fields[1] in wanted and fields[3] == "0A")


def grpc_requests_by_worker(directory: Path, route: str) -> list[float]:
    """apg_requests_total{route, code="200"} in each worker's own multiprocess file (one counter_<pid>.db each)."""
    from prometheus_client.mmap_dict import MmapedDict

    totals = []
    for path in sorted(directory.glob("counter_*.db")):
        total = 0.0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)
            if name == "apg_requests_total" and labels == {"code": "200", "route": route}:
                total += value
        totals.append(total)
    return totals


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts listening sockets in Linux's /proc/net/tcp")
def test_two_workers_share_the_grpc_port(tmp_path, bundle):
    # --workers 2: each worker binds the gRPC port with SO_REUSEPORT, and the kernel spreads new connections over them
    port, grpc_port = free_port(), free_port()
    code = (
        f"from service.server import serve; serve({str(bundle.path)!r}, '127.0.0.1', {port}, 2, grpc_port={grpc_port})"
    )
    proc = start(["-c", code], {"TMPDIR": str(tmp_path), "APG_WARMUP_BATCH_SIZES": "1"})
    try:
        text = lambda: httpx.get(f"http://127.0.0.1:{port}/metrics").text  # noqa: E731
        wait_for(
            lambda: "apg_model_info{" in text() and listening_sockets(grpc_port) == 2, "two gRPC workers", proc=proc
        )
        for _ in range(20):  # a new connection each (no shared subchannel): both workers get some
            args = [("grpc.use_local_subchannel_pool", 1)]
            with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}", channel_args=args) as c:
                assert c.infer(MODEL, inputs(V2_ROWS[:2])).as_numpy("score").shape == (2,)
        (shared,) = tmp_path.glob("apg-prometheus-*")
        by_worker = grpc_requests_by_worker(shared, "/inference.GRPCInferenceService/ModelInfer")
        assert len(by_worker) == 2 and sum(by_worker) == 20 and min(by_worker) > 0, by_worker
        assert 'route="/inference.GRPCInferenceService/ModelInfer"} 20.0' in text()  # the aggregate too
    finally:
        assert stop(proc) == 0


@pytest.mark.slow
def test_serve_refuses_a_taken_grpc_port(tmp_path, bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        args = [
            "-m",
            "service",
            "--bundle",
            str(bundle.path),
            "--port",
            str(free_port()),
            "--grpc-port",
            str(grpc_port),
        ]
        out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert f"cannot bind gRPC to 127.0.0.1:{grpc_port} (APG_GRPC_PORT)" in out.stderr
