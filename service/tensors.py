"""KServe v2 input tensors (JSON `data` or the binary extension) → raw feature columns for the Encoder.

    columns, rows = decode_inputs(header, blobs)   # {"user_id": ["196", ...], "age": [49.0, ...]}, B

A binary tensor of numbers of shape [B] stays a numpy array (the Encoder reads it without a Python loop).

Shape [B] or [B, 1] → one value per row; [B, K] → a list of K values per row (multi-valued features).
Values are checked by the Encoder afterwards; this only checks that each tensor is well formed.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from service.errors import BadRequest, InvalidShape, InvalidType, RaggedColumns, TooManyRows, shown

_U32 = struct.Struct("<I").unpack_from
MAX_NAME = 256  # characters of an input's name

# v2 datatype → little-endian numpy dtype of its binary form
NUMPY = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "BF16": "<u2",
}


def decode_inputs(
    header: Any, blobs: bytes, max_rows: int, text: frozenset[str] = frozenset()
) -> tuple[dict[str, list], int]:
    """(columns keyed by input name, batch size B). Binary tensors are read from `blobs` in input order.

    The declared batch is checked against `max_rows` before any per-row work: a tiny body must not be able to
    declare a shape of a billion rows. An input named in `text` (the model's text features: its metadata says BYTES)
    must be BYTES: a number tensor there is refused (400), as Triton refuses a datatype its model does not declare.
    """
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise InvalidShape("'inputs' must be a non-empty list of tensors", field="inputs")
    columns: dict[str, list] = {}
    offset, batch = 0, None
    for i, tensor in enumerate(inputs):
        name, shape, datatype = _tensor_header(tensor, i)
        if datatype != "BYTES" and name in text:
            message = f"input {shown(name)} is a text feature: its datatype is BYTES, not {datatype}"
            raise InvalidType(message, field=name)
        if shape[0] > max_rows:
            raise TooManyRows(f"input {shown(name)} declares {shape[0]} rows; the limit is {max_rows} (APG_MAX_ROWS)")
        if any(d == 0 for d in shape[1:]):
            raise InvalidShape(f"input {shown(name)}: shape {shape} has an empty dimension", field=name)
        if name in columns:
            raise InvalidShape(f"input {shown(name)} is given twice", field=name)
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(blobs):
                raise BadRequest(f"input {shown(name)}: binary_data_size {size!r} exceeds the binary data", field=name)
            flat = _from_binary(blobs[offset : offset + size], datatype, name, math.prod(shape))
            offset += size
        elif "data" in tensor:
            flat = _flatten(tensor["data"], name)
        else:
            raise BadRequest(f"input {shown(name)} has neither 'data' nor parameters.binary_data_size", field=name)
        if len(flat) != math.prod(shape):
            raise InvalidShape(
                f"input {shown(name)}: shape {shape} needs {math.prod(shape)} values, got {len(flat)}", field=name
            )
        if batch is not None and shape[0] != batch:
            raise RaggedColumns(f"input {shown(name)} has batch {shape[0]}, others have {batch}", field=name)
        batch = shape[0]
        columns[name] = _column(flat, shape)
    if offset != len(blobs):
        raise BadRequest(f"{len(blobs) - offset} bytes of binary data are not claimed by any input")
    return columns, batch or 0


def _tensor_header(tensor: Any, i: int) -> tuple[str, list[int], str]:
    if not isinstance(tensor, dict):
        raise InvalidShape(f"inputs[{i}] must be an object with name, shape, datatype", field="inputs", row=i)
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str):
        raise InvalidShape(f"inputs[{i}] needs a string 'name'", field="inputs", row=i)
    if len(name) > MAX_NAME:  # no feature has such a name: refused without quoting it
        raise InvalidShape(f"inputs[{i}]: a name of {len(name)} characters (at most {MAX_NAME})", field="inputs", row=i)
    ok = isinstance(shape, list) and 1 <= len(shape) <= 2
    if not ok or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidShape(
            f"input {shown(name)}: shape must be [B] or [B, K] of non-negative integers, got {shape!r}", field=name
        )
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in NUMPY):
        raise BadRequest(f"input {shown(name)}: unsupported datatype {shown(datatype)}", field=name)
    return name, shape, datatype


def _flatten(data: Any, name: str) -> list:
    """Row-major flattening of nested JSON lists (v2 allows flat or nested `data`)."""
    if not isinstance(data, list):
        raise InvalidShape(f"input {shown(name)}: 'data' must be a list", field=name)
    if not any(isinstance(x, list) for x in data):
        return data
    out: list = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _from_binary(raw: bytes, datatype: str, name: str, expected: int) -> list | np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(raw, name, expected)
    dtype = np.dtype(NUMPY[datatype])
    if len(raw) % dtype.itemsize:
        raise InvalidShape(f"input {shown(name)}: {len(raw)} bytes is not a whole number of {datatype}", field=name)
    values = np.frombuffer(raw, dtype=dtype)
    if datatype == "BF16":  # the upper half of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values  # an array: the Encoder takes numeric columns as they are, others via tolist()


def _bytes_elements(raw: bytes, name: str, expected: int) -> list[str]:
    # Each element: uint32 little-endian length, then that many bytes (UTF-8 text for our features). The loop
    # does only the framing (errors are looked for afterwards, off the common path), and at most the shape's
    # number of elements (a body of empty elements must not keep the loop busy); decoding is one map().
    out: list[bytes] = []
    append, pos, end = out.append, 0, len(raw)
    try:
        for _ in range(expected):
            if pos >= end:
                break
            (n,) = _U32(raw, pos)
            append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
    except struct.error:
        raise InvalidShape(f"input {shown(name)}: truncated BYTES element length", field=name, row=len(out)) from None
    if pos > end:
        row = len(out) - 1
        raise InvalidShape(f"input {shown(name)}: BYTES element {row} overruns the data", field=name, row=row)
    if pos < end:
        raise InvalidShape(f"input {shown(name)}: more BYTES elements than its shape's {expected}", field=name)
    return decode_text(out, name)


def decode_text(elements: list[bytes], name: str) -> list[str]:
    """BYTES elements as text: InvalidType names the first that is not UTF-8 (also gRPC's bytes_contents)."""
    try:
        return list(map(bytes.decode, elements))
    except UnicodeDecodeError:
        row = next(i for i, b in enumerate(elements) if not _utf8(b))
        raise InvalidType(f"input {shown(name)}: element {row} is not UTF-8 text", field=name, row=row) from None


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


def _column(flat: list | np.ndarray, shape: list[int]) -> list | np.ndarray:
    if len(shape) == 1 or shape[1] == 1:
        return flat
    if isinstance(flat, np.ndarray):
        flat = flat.tolist()
    k = shape[1]
    return [flat[r * k : (r + 1) * k] for r in range(shape[0])]
