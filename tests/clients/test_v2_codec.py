"""scripts/clients/v2.py, the tools' one v2 codec, against the service's own decoders: rows sent as JSON, binary or
gRPC tensors encode exactly as the same rows through /score, multi-valued features included; and no tool builds
v2 tensors of its own."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import numpy as np
import orjson
import pytest

from features import Encoder, RowSampler
from scripts.clients.v2 import (
    Tensor,
    binary_body,
    count_scores,
    grpc_request,
    grpc_scores,
    json_body,
    json_scores,
    to_tensors,
)
from service.grpc.convert import v2_header
from service.grpc.messages import ModelInferRequest, ModelInferResponse
from service.tensors import decode_inputs

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SCHEMA = {
    "name": "codec",
    "fields": [
        {"name": "user_id", "kind": "categorical", "vocab": ["7", "8", "196"]},
        {"name": "age", "kind": "numeric", "edges": [18, 25, 35]},
        {"name": "genres", "kind": "multi", "sep": "|", "max_len": 4, "vocab": ["Comedy", "Drama", "War"]},
        {"name": "tags", "kind": "multi", "max_len": 4, "vocab": ["a|b", "x", "y", "z"]},  # no separator
    ],
}
ROWS = {  # a multi value as a list ([B, K]) or as one string the service splits on the field's own sep ([B])
    "lists": [
        {"user_id": "196", "age": 30, "genres": ["Comedy", "Drama"], "tags": ["x", "y"]},
        {"user_id": 7, "age": 19.5, "genres": "War", "tags": ["a|b"]},  # a lone string in a column of lists
        {"user_id": "8", "age": 40, "genres": ["War", "Comedy", "Drama"], "tags": ["z", "x", "y", "unseen"]},
    ],
    "one-value lists": [  # still [B, K >= 2]: a [B, 1] column would be one text per row, split on the field's sep
        {"user_id": "7", "age": 30, "genres": ["War"], "tags": ["a|b"]},
        {"user_id": "8", "age": 20, "genres": ["Comedy|Drama"], "tags": ["x"]},
    ],
    "strings": [
        {"user_id": "196", "age": 30, "genres": "Comedy|Drama", "tags": ["x"]},
        {"user_id": 8.0, "age": 19.5, "genres": "War", "tags": ["a|b"]},
        {"user_id": "unseen", "age": 40, "genres": "War|Comedy|nope", "tags": ["y"]},
    ],
}


def over_json(tensors: list[Tensor]) -> dict:
    return decode_inputs(orjson.loads(json_body(tensors)), b"", 64)[0]


def over_binary(tensors: list[Tensor]) -> dict:
    body, n = binary_body(tensors)
    return decode_inputs(orjson.loads(body[:n]), body[n:], 64)[0]


def over_grpc(tensors: list[Tensor]) -> dict:
    return decode_inputs(*v2_header(ModelInferRequest.FromString(grpc_request(tensors, "codec"))), 64)[0]


@pytest.mark.parametrize("trailing_one", [False, True])
@pytest.mark.parametrize("rows", ROWS.values(), ids=ROWS.keys())
@pytest.mark.parametrize("decode", [over_json, over_binary, over_grpc])
def test_every_encoding_reaches_the_encoder_as_the_rows_do(decode, rows, trailing_one):
    encoder = Encoder(SCHEMA)
    expected = encoder.encode_rows(rows)  # what /score makes of the same rows
    got = encoder.encode_columns(decode(to_tensors(rows, {"age"}, trailing_one)))
    assert got.keys() == expected.keys()
    for name, ids in expected.items():
        np.testing.assert_array_equal(got[name], ids, err_msg=name)


def test_joining_a_list_would_change_a_field_without_separator():
    # the rule the tools once had for gRPC and the peers' bodies ('|'-joined strings): a different encoding
    encoder = Encoder(SCHEMA)
    rows = [{"user_id": "7", "age": 30, "genres": "War", "tags": ["x", "y"]}]
    joined = [{**rows[0], "tags": "x|y"}]
    assert not np.array_equal(encoder.encode_rows(joined)["tags"], encoder.encode_rows(rows)["tags"])
    np.testing.assert_array_equal(
        encoder.encode_columns(over_grpc(to_tensors(rows)))["tags"], encoder.encode_rows(rows)["tags"]
    )


def test_the_tensors_of_rows():
    rows = [{"user_id": "196", "age": 49, "genres": ["Comedy", "Drama"]}, {"user_id": 7, "age": 25.5, "genres": "War"}]
    assert to_tensors(rows, {"age"}, trailing_one=True) == [
        Tensor("user_id", [2, 1], "BYTES", ["196", "7"]),
        Tensor("age", [2, 1], "FP64", [49.0, 25.5]),
        Tensor("genres", [2, 2], "BYTES", ["Comedy", "Drama", "War", ""]),
    ]
    body = orjson.loads(json_body(to_tensors(rows, {"age"})))
    assert body["inputs"] == [
        {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": ["196", "7"]},
        {"name": "age", "shape": [2], "datatype": "FP64", "data": [49.0, 25.5]},
        {"name": "genres", "shape": [2, 2], "datatype": "BYTES", "data": [["Comedy", "Drama"], ["War", ""]]},
    ]
    request = ModelInferRequest.FromString(grpc_request(to_tensors(rows, {"age"}), "m"))
    assert request.model_name == "m"
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("user_id", "BYTES", [2]),
        ("age", "FP64", [2]),
        ("genres", "BYTES", [2, 2]),
    ]
    user, age, genres = request.raw_input_contents
    assert user == struct.pack("<I", 3) + b"196" + struct.pack("<I", 1) + b"7"
    assert np.frombuffer(age, "<f8").tolist() == [49.0, 25.5]
    assert genres == b"".join(struct.pack("<I", len(v)) + v for v in (b"Comedy", b"Drama", b"War", b""))


def test_binary_bodies_of_sampled_rows_decode_with_the_service_decoder(schema):
    sampler = RowSampler(schema, seed=0, unseen=0.1)
    rows = sampler.rows(7)
    body, n = binary_body(to_tensors(rows, sampler.numeric))
    header = orjson.loads(body[:n])
    columns, batch = decode_inputs(header, body[n:], 1 << 20)
    assert batch == 7 and header["outputs"] == [{"name": "score", "parameters": {"binary_data": True}}]
    for name in rows[0]:
        expected = [float(r[name]) if name in sampler.numeric else r[name] for r in rows]
        assert list(columns[name]) == expected  # numbers may stay a numpy array (service/tensors.py)
    body, n = binary_body(to_tensors([{"tags": ["x"]}, {"tags": ["y", "z"]}]))
    assert decode_inputs(orjson.loads(body[:n]), body[n:], 1 << 20)[0]["tags"] == [["x", ""], ["y", "z"]]


def test_scores_out_of_each_answer():
    head = orjson.dumps({"outputs": [{"name": "score"}]})
    raw = np.arange(5, dtype="<f4").tobytes()
    assert count_scores({"inference-header-content-length": str(len(head))}, head + raw) == 5
    assert count_scores({}, orjson.dumps({"outputs": [{"data": [0.1, 0.2]}]})) == 2
    assert count_scores({}, orjson.dumps({"scores": [0.1, 0.2, 0.3]})) == 3
    assert json_scores(orjson.dumps({"outputs": [{"data": [[0.25], [0.5]]}]})).tolist() == [0.25, 0.5]
    response = ModelInferResponse()
    response.outputs.add(name="score", datatype="FP32", shape=[2])
    response.raw_output_contents.append(np.array([0.25, 0.5], "<f4").tobytes())
    assert grpc_scores(response.SerializeToString()).tolist() == [0.25, 0.5]


def v2_tensors_built(tree: ast.AST) -> list[int]:
    """Lines that build a v2 input tensor: a dict with a "datatype" key (JSON and binary headers), a call given
    datatype= (a gRPC `inputs.add`, `dict(...)`; not the peers' own response outputs), a ModelInferRequest."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "datatype" for k in node.keys):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            given = any(k.arg == "datatype" for k in node.keywords)
            if name == "ModelInferRequest" or (given and name not in ("InferOutput", "ResponseOutput")):
                lines.append(node.lineno)
    return lines


def test_the_checker_finds_a_builder():
    code = 'a = {"name": n, "datatype": "BYTES"}\nr = ModelInferRequest()\nr.inputs.add(name=n, datatype="FP64")\n'
    assert v2_tensors_built(ast.parse(code)) == [1, 2, 3]
    assert v2_tensors_built(ast.parse('InferOutput(name="score", datatype="FP32")')) == []


def test_no_tool_builds_v2_requests_but_the_codec():
    found = {
        f"{path.relative_to(SCRIPTS.parent)}:{line}"
        for path in SCRIPTS.rglob("*.py")
        if path.parent.name != "clients"
        for line in v2_tensors_built(ast.parse(path.read_text()))
    }
    assert not found, f"v2 tensors built outside scripts/clients/v2.py (use its to_tensors and encoders): {found}"
