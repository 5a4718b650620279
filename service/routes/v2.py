"""KServe v2 / Open Inference Protocol over HTTP, as spoken by the stock `tritonclient.http` client.

Inputs are one tensor per RAW feature (not per graph input): BYTES for string-like features, FP64 (or any
numeric datatype) for numeric ones; shape [B] (or [B, 1]); a multi-valued feature may also be [B, K].
The output is `score`, FP32 [B]. JSON `data` may be flat or nested. The binary tensor extension is
supported both ways: `Inference-Header-Content-Length` splits the body into a JSON header and the
concatenated raw tensors (BYTES elements are 4-byte little-endian length + UTF-8), and outputs come back
binary when asked via `parameters.binary_data` (per output) or `binary_data_output` (per request).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from service import oip
from service.auth import authorize
from service.errors import BadRequest, InvalidShape, json_response
from service.http import LeanRoute, error_responses, parse_json, received_then_admitted, state
from service.tensors import NUMPY

router = APIRouter(prefix="/v2", tags=["kserve-v2"])  # health and metadata
scoring = APIRouter(prefix="/v2", tags=["kserve-v2"], route_class=LeanRoute)  # the infer routes (hot path)

HEADER = "Inference-Header-Content-Length"


def _model(request: Request, name: str, version: str | None = None):
    """A served model (NotFound names the served ones; NotReady while loading)."""
    return oip.find_model(state(request), name, version)


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return json_response(200, oip.server_metadata_body())


@router.get("/health/live", summary="Liveness")
async def live() -> Response:
    return json_response(200, {"live": True})


@router.get("/health/ready", summary="Readiness", responses=error_responses(503, v2=True))
async def ready(request: Request) -> Response:
    await oip.server_ready(state(request))  # NotReady, ItemStoreMismatch → 503 (loading, draining; the sync to run)
    return json_response(200, {"ready": True})


@router.get("/models", summary="The served models", responses=error_responses(503, v2=True))
async def models(request: Request) -> Response:
    """Every model of the repository (one without APG_MODELS), with its version and whether it is ready; a model that
    failed to load is listed with the reason, as Triton's repository index does."""
    runtime = state(request).runtime
    _ = runtime.current  # NotReady while loading
    listed = [{"name": m.name, "version": m.version, "state": "READY"} for m in runtime.models.values()]
    listed += [{"name": n, "state": "UNAVAILABLE", "reason": why} for n, why in runtime.failed.items()]
    return json_response(200, {"models": sorted(listed, key=lambda m: m["name"]), "default": runtime.default})


@router.get("/models/{name}", summary="Model metadata", responses=error_responses(404, 503, v2=True))
async def model_metadata(request: Request, name: str) -> Response:
    return _metadata(_model(request, name))


@router.get("/models/{name}/versions/{version}", summary="Model metadata", responses=error_responses(404, 503, v2=True))
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return _metadata(_model(request, name, version))


@router.get("/models/{name}/ready", summary="Model readiness", responses=error_responses(404, 503, v2=True))
async def model_ready(request: Request, name: str) -> Response:
    model = await oip.model_ready(state(request), name)  # ItemStoreMismatch → 503 naming the sync to run
    return json_response(200, {"name": model.name, "ready": True})


@router.get(
    "/models/{name}/versions/{version}/ready", summary="Model readiness", responses=error_responses(404, 503, v2=True)
)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    model = await oip.model_ready(state(request), name, version)  # the same rule as gRPC's ModelReady
    return json_response(200, {"name": model.name, "ready": True})


def _metadata(model: Any) -> Response:
    return json_response(200, oip.metadata_body(model))


INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {
                                        "type": "array",
                                        "items": {"type": "integer", "minimum": 1},
                                        "minItems": 1,
                                        "maxItems": 2,
                                    },
                                    "datatype": {"type": "string", "enum": ["BYTES", *NUMPY]},
                                    "data": {"type": "array"},
                                    "parameters": {"type": "object"},
                                },
                                "required": ["name", "shape", "datatype"],
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string", "enum": [oip.OUTPUT]},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                                "required": ["name"],
                            },
                        },
                    },
                    "required": ["inputs"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


INFER = {
    "summary": "Infer (JSON or binary tensors)",
    "openapi_extra": INFER_DOC,
    "responses": error_responses(400, 401, 404, 408, 413, 415, 503, v2=True),
}


@scoring.post("/models/{name}/infer", **INFER)
async def infer(request: Request, name: str) -> Response:
    authorize(request)
    return await _infer(request, _model(request, name))  # 404 before reading the body


@scoring.post("/models/{name}/versions/{version}/infer", **INFER)
async def infer_version(request: Request, name: str, version: str) -> Response:
    authorize(request)
    return await _infer(request, _model(request, name, version))


async def _infer(request: Request, model: Any) -> Response:
    request.state.model, request.state.arm = model.name, None  # the middleware's per-model metrics
    return await received_then_admitted(request, lambda app, request, body: _infer_admitted(app, request, body, model))


async def _infer_admitted(app, request: Request, body: bytes, model: Any) -> Response:
    with app.metrics.timed("parse"):
        header, blobs = _split(body, request.headers.get(HEADER))
        columns, rows = oip.decode(app, model, header, blobs)
        binary = _binary_output(header)
    scored = await app.scorer.score_columns(columns, rows, model)
    with app.metrics.timed("serialise"):
        response = _response(header, scored, binary)
    request.state.rows = rows
    return response


def _split(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(JSON header, binary tail) — the tail is empty without the binary extension."""
    if header_length is None:
        return parse_json(body), b""
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise BadRequest(f"{HEADER} {header_length!r} does not fit a body of {len(body)} bytes")
    n = int(header_length)
    return parse_json(body[:n]), body[n:]


def _binary_output(header: dict) -> bool:
    """Whether `score` goes back as binary: outputs[].parameters.binary_data, else parameters.binary_data_output."""
    binary = _flag(header.get("parameters"), "binary_data_output", False, "parameters")
    outputs = header.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidShape("'outputs' must be a list of objects", field="outputs")
    for o in outputs:
        oip.check_output(o.get("name"))
        binary = _flag(o.get("parameters"), "binary_data", binary, "outputs")
        oip.check_output_parameters(o.get("parameters") or {})
    return binary


def _flag(params: Any, key: str, default: bool, field: str) -> bool:
    if params is None:
        return default
    if not isinstance(params, dict) or not isinstance(params.get(key, default), bool):
        raise InvalidShape(f"'parameters' must be an object and {key!r} a boolean", field=field)
    return params.get(key, default)


def _response(header: dict, scored: Any, binary: bool) -> Response:
    out: dict[str, Any] = {"name": oip.OUTPUT, "datatype": oip.OUTPUT_DATATYPE, "shape": [len(scored.scores)]}
    body: dict[str, Any] = {"model_name": scored.name, "model_version": scored.version, "outputs": [out]}
    if isinstance(header.get("id"), str):
        body["id"] = header["id"]
    if not binary:
        out["data"] = scored.scores
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
    raw = scored.scores.astype("<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    head = orjson.dumps(body)
    return Response(head + raw, media_type="application/octet-stream", headers={HEADER: str(len(head))})


def document_model(schema: dict[str, Any], model: Any, models: list[Any] | None = None) -> None:
    """OpenAPI for the served models: `name`/`version` path parameters are their names and versions (the only ones
    that exist; others answer 404), and the infer request names the default `model`'s raw features (the required
    ones present) and gets an example with one tensor per raw feature."""
    models = models or [model]
    allowed = {"name": sorted({m.name for m in models}), "version": sorted({m.version for m in models})}
    features = model.encoder.describe()
    for path, item in schema["paths"].items():
        if not path.startswith("/v2/models/"):
            continue
        for operation in item.values():
            for param in operation.get("parameters", []):
                if param.get("in") == "path" and param.get("name") in allowed:
                    param["schema"] = {"type": "string", "enum": allowed[param["name"]]}
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is not None:
                content["schema"] = body = copy.deepcopy(content["schema"])
                inputs = body["properties"]["inputs"]
                inputs["items"]["properties"]["name"]["enum"] = list(features)
                inputs["allOf"] = [
                    {"contains": {"properties": {"name": {"const": name}}}}
                    for name, f in features.items()
                    if f.required
                ]
                content["example"] = _infer_example(model.encoder)


def _infer_example(encoder: Any) -> dict[str, Any]:
    rows = encoder.example_rows(2)
    inputs = []
    for name, info in encoder.describe().items():
        values = [r[name] for r in rows]
        data = [float(v) for v in values] if info.numeric else [str(v) for v in values]
        inputs.append(
            {"name": name, "shape": [len(rows)], "datatype": "FP64" if info.numeric else "BYTES", "data": data}
        )
    return {"inputs": inputs, "outputs": [{"name": oip.OUTPUT}]}
