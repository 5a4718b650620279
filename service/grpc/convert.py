"""ModelInferRequest → the HTTP v2 route's (header, binary data) pair, so that service/tensors.py decodes both
protocols; Scored → ModelInferResponse; typed errors → gRPC status codes.

    header, blobs = v2_header(request)             # then service.tensors.decode_inputs(header, blobs, max_rows)
    data = infer_response(request, scored)         # serialised ModelInferResponse, `score` as raw FP32

Tensor values come either all in `raw_input_contents` (what tritonclient.grpc sends: one entry per input, in input
order, BYTES elements framed as 4-byte little-endian length + bytes, exactly the HTTP binary extension) or each in
its `contents` field of the datatype (fp64_contents for FP64, bytes_contents for BYTES, int64_contents, ...).
"""

from __future__ import annotations

from typing import Any

import grpc

from service.errors import MAX_ECHO, BadRequest, ServiceError, shown
from service.grpc.messages import ModelInferResponse
from service.oip import OUTPUT, OUTPUT_DATATYPE, check_output, check_output_parameters
from service.tensors import NUMPY, decode_text

# v2 datatype → the InferTensorContents field that carries it (FP16 and BF16 only travel raw)
CONTENTS = {
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}

# the HTTP status our typed errors carry → the gRPC status of the same error (the message stays the same)
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,  # too many rows (a too large message: gRPC's own RESOURCE_EXHAUSTED)
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,  # not ready, draining, overloaded: retry elsewhere or later
}


def status_of(exc: ServiceError) -> grpc.StatusCode:
    return STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


def error_metadata(exc: ServiceError) -> tuple[tuple[str, str], ...]:
    """The error's details beside its message, as trailing metadata: apg-error-code, -field, -row (when set)."""
    pairs = [("apg-error-code", exc.code)]
    if exc.field is not None and exc.field.isascii() and exc.field.isprintable():  # metadata values are ASCII
        pairs.append(("apg-error-field", exc.field[:MAX_ECHO]))  # a bounded prefix (ASCII: no marker)
    if exc.row is not None:
        pairs.append(("apg-error-row", str(exc.row)))
    return tuple(pairs)


def v2_header(request: Any) -> tuple[dict, bytes]:
    """The request's inputs as the HTTP route's JSON header (name, shape, datatype, data or binary_data_size) and its
    concatenated binary data; requested outputs are checked here (only `score`, no classification)."""
    _check_outputs(request.outputs)
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: one per input, in order",
            field="raw_input_contents",
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        entry: dict[str, Any] = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        if raw:
            if tensor.HasField("contents"):
                message = f"input {shown(tensor.name)} has both contents and raw_input_contents: send one"
                raise BadRequest(message, field=tensor.name)
            entry["parameters"] = {"binary_data_size": len(raw[i])}
        else:
            entry["data"] = _values(tensor)
        inputs.append(entry)
    return {"inputs": inputs}, b"".join(raw)


def _values(tensor: Any) -> list:
    """The tensor's values from its contents field of its datatype (a list, row-major)."""
    name, datatype = tensor.name, tensor.datatype
    field = CONTENTS.get(datatype)
    if field is None:
        if datatype in NUMPY:  # FP16, BF16
            raise BadRequest(f"input {shown(name)}: {datatype} values travel only in raw_input_contents", field=name)
        return []  # decode_inputs names the unsupported datatype
    given = [f.name for f, _ in tensor.contents.ListFields()]
    if any(g != field for g in given):
        wrong = next(g for g in given if g != field)
        message = f"input {shown(name)}: datatype {shown(datatype)} takes its values in contents.{field}, not {wrong}"
        raise BadRequest(message, field=name)
    values = getattr(tensor.contents, field)
    return decode_text(list(values), name) if field == "bytes_contents" else list(values)


def _check_outputs(outputs: Any) -> None:
    for o in outputs:
        check_output(o.name)
        check_output_parameters(o.parameters)


def infer_response(request: Any, scored: Any) -> bytes:
    """The serialised ModelInferResponse: output `score`, FP32 [B], in raw_output_contents (as Triton answers)."""
    response = ModelInferResponse(model_name=scored.name, model_version=scored.version, id=request.id)
    out = response.outputs.add(name=OUTPUT, datatype=OUTPUT_DATATYPE)
    out.shape.append(len(scored.scores))
    response.raw_output_contents.append(scored.scores.astype("<f4").tobytes())
    return response.SerializeToString()
