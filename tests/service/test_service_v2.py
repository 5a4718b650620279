"""KServe v2 routes in-process: metadata, JSON and binary tensors, errors (tritonclient itself: test_service_live)."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from synthetic_bundle import ROWS, reference_scores

from service.bundle import load_bundle
from service.errors import InvalidShape, InvalidType
from service.tensors import decode_inputs

URL = "/v2/models/synthetic-apg/infer"
FEATURES = ["user_id", "item_id", "age", "gender", "zip_code", "genres"]


def as_v2(name, value):
    """The value a v2 client sends: a double for age, else text (lists joined with the multi separator)."""
    if name == "age":
        return value
    if isinstance(value, list):
        return "|".join(value)
    return "" if value is None else str(value)


def tensor(name, values):
    data = [as_v2(name, v) for v in values]
    return {"name": name, "shape": [len(values)], "datatype": "FP64" if name == "age" else "BYTES", "data": data}


def json_request(rows):
    return {"id": "req-1", "inputs": [tensor(f, [r.get(f) for r in rows]) for f in FEATURES]}


def rows_for_v2(rows):
    return [{f: as_v2(f, r.get(f)) for f in FEATURES} for r in rows]


def reference(bundle, rows):
    return reference_scores(bundle, load_bundle(bundle.path).encoder.encode_rows(rows_for_v2(rows)))


def assert_error(response, status: int, code: str | None = None, field: str | None = None):
    """v2 errors: {"error": "<message>", "code": ..., "field": ..., "row": ...} (a string, as KServe v2 wants)."""
    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert set(body) == {"error", "code", "field", "row"}
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert body["field"] == field, body


def test_metadata(client):
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2/models/synthetic-apg").json()
    assert meta["versions"] == ["v1"]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        **dict.fromkeys(["user_id", "item_id", "gender", "zip_code", "genres"], "BYTES"),
        "age": "FP64",
    }
    assert meta["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1]}]
    assert client.get("/v2/models/synthetic-apg/versions/v1").status_code == 200
    assert client.get("/v2/models/synthetic-apg/ready").status_code == 200
    assert_error(client.get("/v2/models/other"), 404, "not_found")
    assert_error(client.get("/v2/models/other/ready"), 404)
    assert_error(client.get("/v2/models/synthetic-apg/versions/v9"), 404)


def test_infer_json(client, bundle):
    rows = [r for r in ROWS if r.get("age") is not None]
    r = client.post(URL, json=json_request(rows))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("synthetic-apg", "v1", "req-1")
    (out,) = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("score", "FP32", [len(rows)])
    np.testing.assert_allclose(out["data"], reference(bundle, rows), atol=1e-6)


def test_infer_nested_data_and_2d_shapes(client):
    flat = client.post(URL, json=json_request(ROWS[:2])).json()["outputs"][0]["data"]
    request = json_request(ROWS[:2])
    for t in request["inputs"]:
        t["data"], t["shape"] = [[v] for v in t["data"]], [2, 1]
    assert client.post(URL, json=request).json()["outputs"][0]["data"] == flat
    # a multi-valued feature as [B, K] BYTES: one list per row
    genres = {"name": "genres", "shape": [2, 2], "datatype": "BYTES", "data": [["Comedy", "Drama"], ["Action", ""]]}
    request = json_request(ROWS[:2])
    request["inputs"][-1] = genres
    assert client.post(URL, json=request).json()["outputs"][0]["data"] == flat


def binary_request(rows, binary_output=True):
    header, blobs = {"inputs": []}, []
    for f in FEATURES:
        values = [r.get(f) for r in rows]
        if f == "age":
            raw = np.array([np.nan if v is None else v for v in values], dtype="<f8")[: len(values)].tobytes()
            datatype = "FP64"
        else:
            raw = b"".join(struct.pack("<I", len(s)) + s for s in (as_v2(f, v).encode() for v in values))
            datatype = "BYTES"
        header["inputs"].append(
            {"name": f, "shape": [len(rows)], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
        )
        blobs.append(raw)
    if binary_output:
        header["outputs"] = [{"name": "score", "parameters": {"binary_data": True}}]
    head = orjson.dumps(header)
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def test_infer_binary_in_and_out(client, bundle):
    rows = [r for r in ROWS if r.get("age") is not None]
    body, headers = binary_request(rows)
    r = client.post(URL, content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:n])
    size = head["outputs"][0]["parameters"]["binary_data_size"]
    scores = np.frombuffer(r.content[n : n + size], dtype="<f4")
    np.testing.assert_allclose(scores, reference(bundle, rows), atol=1e-6)
    # binary input, JSON output
    body, headers = binary_request(rows, binary_output=False)
    np.testing.assert_allclose(client.post(URL, content=body, headers=headers).json()["outputs"][0]["data"], scores)


def test_binary_nan_is_a_400(client):
    body, headers = binary_request([{**ROWS[0], "age": None}])  # packed as NaN
    assert_error(client.post(URL, content=body, headers=headers), 400, "non_finite", "age")


IDS = [tensor("user_id", ["1"]), tensor("item_id", ["1"])]
BAD = [
    ({"inputs": []}, "invalid_shape", "inputs"),
    ({"inputs": "x"}, "invalid_shape", "inputs"),
    ({"inputs": [5]}, "invalid_shape", "inputs"),
    ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES"}]}, "bad_request", "user_id"),
    ({"inputs": [{"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["1"]}]}, "invalid_shape", "user_id"),
    ({"inputs": [{"name": "user_id", "shape": [-1], "datatype": "BYTES", "data": ["1"]}]}, "invalid_shape", "user_id"),
    ({"inputs": [{"name": "user_id", "shape": [1, 1, 1], "datatype": "BYTES", "data": ["1"]}]}, "invalid_shape", None),
    ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "STRING", "data": ["1"]}]}, "bad_request", "user_id"),
    ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": "1"}]}, "invalid_shape", "user_id"),
    ({"inputs": [tensor("user_id", ["1"]), tensor("user_id", ["1"])]}, "invalid_shape", "user_id"),
    ({"inputs": [tensor("user_id", ["1"]), tensor("item_id", ["1", "2"])]}, "ragged_columns", "item_id"),
    ({"inputs": [tensor("user_id", ["1"]), tensor("colour", ["1"])]}, "unknown_feature", "colour"),
    ({"inputs": [tensor("item_id", ["1"])]}, "missing_feature", "user_id"),
    ({"inputs": [tensor("user_id", []), tensor("item_id", [])]}, "empty_batch", None),
    ({"inputs": [tensor("user_id", ["1"]), tensor("item_id", ["1"]), tensor("age", ["x"])]}, "invalid_type", "age"),
    ({"inputs": IDS, "outputs": [{"name": "prob"}]}, "bad_request", "outputs"),
    ({"inputs": IDS, "outputs": "score"}, "invalid_shape", "outputs"),
    ({"inputs": IDS, "outputs": [{"name": "score", "parameters": {"classification": 2}}]}, "bad_request", "outputs"),
    ([1, 2], "invalid_shape", None),
    ({"inputs": IDS, "parameters": [1]}, "invalid_shape", "parameters"),
    ({"inputs": IDS, "parameters": {"binary_data_output": "yes"}}, "invalid_shape", "parameters"),
    ({"inputs": IDS, "outputs": [{"name": "score", "parameters": 3}]}, "invalid_shape", "outputs"),
    ({"inputs": [{"name": "genres", "shape": [2, 0], "datatype": "BYTES", "data": []}]}, "invalid_shape", "genres"),
]


@pytest.mark.parametrize("case", BAD, ids=range(len(BAD)))
def test_bad_infer_requests(client, case):
    body, code, field = case
    assert_error(client.post(URL, json=body), 400, code, field)


def test_bad_binary_framing(client):
    body, headers = binary_request(ROWS[:1])
    assert_error(client.post(URL, content=body, headers={"Inference-Header-Content-Length": "999999"}), 400)
    assert_error(client.post(URL, content=body, headers={"Inference-Header-Content-Length": "-3"}), 400)
    assert_error(client.post(URL, content=body + b"junk", headers=headers), 400, "bad_request")
    assert_error(client.post(URL, content=body[:-3], headers=headers), 400)
    head = orjson.dumps(
        {"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}
    )
    bad_utf8 = struct.pack("<I", 2) + b"\xff\xfe"
    r = client.post(URL, content=head + bad_utf8, headers={"Inference-Header-Content-Length": str(len(head))})
    assert_error(r, 400, "invalid_type", "user_id")
    assert_error(client.post("/v2/models/nope/infer", json=json_request(ROWS[:1])), 404, "not_found")


def test_a_tiny_body_cannot_declare_a_huge_batch(client):
    """Rows are counted from the declared shape before any per-row work (an 80-byte body once cost 400 MB)."""
    body = {"inputs": [{"name": "genres", "shape": [5_000_000_000, 0], "datatype": "BYTES", "data": []}]}
    assert_error(client.post(URL, json=body), 413, "too_many_rows", None)


def test_non_ascii_digits_in_the_binary_header_length_are_a_400(client):
    body, _ = binary_request(ROWS[:1])
    r = client.post(URL, content=body, headers=[(b"Inference-Header-Content-Length", "\u00b2".encode("latin-1"))])
    assert_error(r, 400)


def _bytes_tensor(raw: bytes) -> tuple[dict, bytes]:
    tensor = {"name": "user_id", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    return {"inputs": [tensor]}, raw


@pytest.mark.parametrize(
    ("raw", "error", "row"),
    [
        (struct.pack("<I", 1) + b"a" + b"\x02\x00", InvalidShape, 1),  # element 1's length is cut short
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 5) + b"ab", InvalidShape, 1),  # element 1 overruns
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"\xff\xfe", InvalidType, 1),  # not UTF-8
    ],
)
def test_bytes_framing_errors_name_the_element(raw, error, row):
    with pytest.raises(error) as caught:
        decode_inputs(*_bytes_tensor(raw), max_rows=10)
    assert (caught.value.field, caught.value.row) == ("user_id", row)


def test_more_bytes_elements_than_the_shape_stop_the_framing():
    raw = struct.pack("<I", 0) * 1000  # 1000 empty elements for a shape of 2
    with pytest.raises(InvalidShape, match="more BYTES elements than its shape's 2"):
        decode_inputs(*_bytes_tensor(raw), max_rows=10)


def test_bytes_elements_decode():
    values = ["196", "", "zürich", "a|b"]
    raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    header, blobs = _bytes_tensor(raw)
    header["inputs"][0]["shape"] = [4]
    assert decode_inputs(header, blobs, max_rows=10) == ({"user_id": values}, 4)


@pytest.mark.parametrize("datatype", ["FP32", "INT64"])
def test_a_number_tensor_for_a_text_feature_is_400(client, datatype):
    # issue 25: an FP32 tensor for user_id (BYTES in the model's metadata) was accepted and read as text
    body = json_request(ROWS[:2])
    body["inputs"][0] = {"name": "user_id", "shape": [2], "datatype": datatype, "data": [196, 186]}
    r = client.post(URL, json=body)
    assert_error(r, 400, "invalid_type", "user_id")
    assert "BYTES" in r.json()["error"] and datatype in r.json()["error"]
    body["inputs"][2]["datatype"] = "INT64"  # a number feature takes any number datatype
    body["inputs"][2]["data"] = [49, 22]
    body["inputs"][0] = tensor("user_id", [row.get("user_id") for row in ROWS[:2]])
    assert client.post(URL, json=body).status_code == 200
