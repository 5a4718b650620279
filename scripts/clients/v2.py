"""The tools' one KServe v2 codec: raw rows → one tensor per raw feature → a JSON body, a binary-extension body or a
gRPC ModelInferRequest; and the scores out of their answers.

    tensors = to_tensors(rows, sampler.numeric)          # [Tensor("user_id", [B], "BYTES", ["196", ...]), ...]
    body = json_body(tensors)                            # POST /v2/models/NAME/infer, application/json
    body, header_length = binary_body(tensors)           # the binary tensor extension (Inference-Header-Content-Length)
    request = grpc_request(tensors, "synthetic-apg")     # a serialised ModelInferRequest, values in raw_input_contents
    json_scores(answer); grpc_scores(answer); count_scores(headers, answer)

Numeric features are FP64; every other feature is BYTES, its values as text by the encoder's rule 1
(features.rules.normalise: 196 → "196", as /score reads it; a missing value → "", which the encoder reads as missing).
`trailing_one=True` sends a single-valued column as [B, 1] (Triton's batched inputs need the trailing 1; the service
takes [B] and [B, 1] alike).

The multi-valued rule, the service's own decoding (service/tensors.py: a [B, K] tensor → K values per row): a row
whose value is a list sends its values as they are, the column as a [B, K] BYTES tensor padded with "" (missing,
skipped by the encoder); a value given as one string stays one string in a [B] column, and the service splits it on
the field's own `sep`. Values are never joined here: the separator is the schema's (a field without one would read
"a|b" as a single value). In a column of lists, a lone string is a row of one value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from features.rules import normalise

V2_HEADER = "Inference-Header-Content-Length"
SCORE_DTYPES = {"FP32": "<f4", "FP64": "<f8"}  # a `score` output as the service (FP32) or a peer may answer it


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: list[int]  # [B], [B, 1] or [B, K]
    datatype: str  # "FP64" or "BYTES"
    values: list  # row-major, flat: floats, or text


def to_tensors(rows: list[dict], numeric: set[str] | frozenset[str] = frozenset(), trailing_one: bool = False):
    """One Tensor per feature of rows[0], in its order (every row carries the same features)."""
    return [_tensor(name, [r[name] for r in rows], name in numeric, trailing_one) for name in rows[0]]


def _tensor(name: str, column: list, numeric: bool, trailing_one: bool) -> Tensor:
    single = [len(column), 1] if trailing_one else [len(column)]
    if numeric:
        return Tensor(name, single, "FP64", [float(v) for v in column])
    if any(isinstance(v, list | tuple) for v in column):  # multi-valued: [B, K], padded with missing
        rows = [list(v) if isinstance(v, list | tuple) else [v] for v in column]
        k = max(2, *map(len, rows))  # at least 2: the service reads a [B, 1] column as one text per row, split on sep
        return Tensor(name, [len(rows), k], "BYTES", [_text(v) for r in rows for v in [*r, *[None] * (k - len(r))]])
    return Tensor(name, single, "BYTES", [_text(v) for v in column])


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value  # as given: the service strips and reads it
    return normalise(value) or ""


# ---------------------------------------------------------------- the three encodings


def json_body(tensors: list[Tensor]) -> bytes:
    """{"inputs": [{name, shape, datatype, data}]}: `data` flat, or one list per row for a [B, K] tensor, K > 1."""
    return orjson.dumps({"inputs": [_json(t) for t in tensors]})


def _json(t: Tensor) -> dict:
    data = t.values
    if len(t.shape) == 2 and t.shape[1] > 1:
        k = t.shape[1]
        data = [data[i : i + k] for i in range(0, len(data), k)]
    return {"name": t.name, "shape": t.shape, "datatype": t.datatype, "data": data}


def binary_body(tensors: list[Tensor]) -> tuple[bytes, int]:
    """(body, length of its JSON header): the header names each tensor's binary_data_size and asks for `score` back
    in binary; the raw tensors follow it, in input order."""
    raws = [raw_tensor(t) for t in tensors]
    inputs = [
        {"name": t.name, "shape": t.shape, "datatype": t.datatype, "parameters": {"binary_data_size": len(raw)}}
        for t, raw in zip(tensors, raws, strict=True)
    ]
    head = orjson.dumps({"inputs": inputs, "outputs": [{"name": "score", "parameters": {"binary_data": True}}]})
    return head + b"".join(raws), len(head)


def grpc_request(tensors: list[Tensor], model: str) -> bytes:
    """A serialised ModelInferRequest for `model`: the same inputs, their values in raw_input_contents (as
    tritonclient.grpc sends them: the binary extension's framing)."""
    from service.grpc.messages import ModelInferRequest

    request = ModelInferRequest(model_name=model)
    for t in tensors:
        request.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        request.raw_input_contents.append(raw_tensor(t))
    return request.SerializeToString()


def raw_tensor(t: Tensor) -> bytes:
    """A tensor's binary form: FP64 little-endian, or each BYTES element as a 4-byte little-endian length + UTF-8."""
    if t.datatype == "FP64":
        return np.asarray(t.values, dtype="<f8").tobytes()
    return b"".join(struct.pack("<I", len(b)) + b for b in (v.encode() for v in t.values))


# ---------------------------------------------------------------- answers


def json_scores(body: bytes) -> np.ndarray:
    """The first output of a v2 JSON answer, flat, as float64."""
    return np.asarray(orjson.loads(body)["outputs"][0]["data"], dtype=np.float64).reshape(-1)


def grpc_scores(data: bytes) -> np.ndarray:
    """The `score` output of a serialised ModelInferResponse (raw FP32 or FP64, as the service and Triton answer)."""
    from service.grpc.messages import ModelInferResponse

    response = ModelInferResponse.FromString(data)
    dtype = SCORE_DTYPES[response.outputs[0].datatype]
    return np.frombuffer(response.raw_output_contents[0], dtype=dtype).astype(np.float64)


def count_scores(headers: dict[str, str], body: bytes) -> int:
    """How many scores an HTTP answer carries (/score JSON, v2 JSON or v2 binary, whose `score` is FP32)."""
    if V2_HEADER.lower() in headers:
        return (len(body) - int(headers[V2_HEADER.lower()])) // 4
    doc = orjson.loads(body)
    return len(doc["scores"]) if "scores" in doc else len(doc["outputs"][0]["data"])
