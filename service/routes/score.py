"""POST /score: TF-Serving-style JSON of raw feature values → click probabilities.

    {"instances": [{"user_id": "196", "item_id": "242", "age": 49, ...}, ...]}     rows
    {"inputs": {"user_id": ["196", ...], "item_id": ["242", ...], ...}}             columns
    {"context": {"user_id": "196", "age": 49}, "candidates": [{"item_id": "242"}, ...]}   ranking
    → {"scores": [0.73, ...], "model": {"name": ..., "version": ...}}

The body is parsed with orjson from raw bytes (no pydantic models on the hot path); the OpenAPI request
schema and examples are generated from the served model's schema (`request_body_doc`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from features import Encoder
from service.routes.common import LeanRoute, authorize, error_responses, parse_json, read_body, state

router = APIRouter(tags=["scoring"], route_class=LeanRoute)

RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
        "model": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            "required": ["name", "version"],
        },
    },
    "required": ["scores", "model"],
}


@router.post(
    "/score",
    summary="Score raw feature rows",
    response_class=Response,
    responses={
        200: {
            "description": "One probability per row, in order.",
            "content": {"application/json": {"schema": RESPONSE_SCHEMA}},
        },
        **error_responses(400, 401, 408, 413, 415, 503),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def score(request: Request) -> Response:
    authorize(request)
    app = state(request)
    t = time.perf_counter()
    body = await read_body(request, app.settings)  # first: a body on its way holds no place in admission
    app.metrics.stage("receive", time.perf_counter() - t)
    async with app.admission:
        return await _score(app, request, body)


async def _score(app, request: Request, body: bytes) -> Response:
    t0 = time.perf_counter()
    payload = parse_json(body)
    app.metrics.stage("parse", time.perf_counter() - t0)
    if app.settings.log_features:
        request.state.features = payload
    scored = await app.scorer.score_payload(payload)
    t1 = time.perf_counter()
    out = orjson.dumps(
        {"scores": scored.scores, "model": {"name": scored.name, "version": scored.version}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    app.metrics.stage("serialise", time.perf_counter() - t1)
    request.state.rows = len(scored.scores)
    return Response(out, media_type="application/json")


def request_body_doc(encoder: Encoder, max_rows: int) -> dict[str, Any]:
    """OpenAPI requestBody for /score: the three shapes, with this model's features and real examples."""
    info = encoder.describe()
    props = {name: _value_schema(f.numeric, f.multi) for name, f in info.items()}
    required = sorted(name for name, f in info.items() if f.required)
    row = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    partial = {"type": "object", "properties": props, "additionalProperties": False}
    columns = {name: {"type": "array", "items": s, "minItems": 1, "maxItems": max_rows} for name, s in props.items()}
    shapes = [
        _object(instances={"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}),
        _object(inputs={"type": "object", "properties": columns, "required": required, "additionalProperties": False}),
        _object(context=partial, candidates={"type": "array", "items": partial, "minItems": 1, "maxItems": max_rows}),
    ]
    rows = encoder.example_rows(3)
    user = [n for n in info if "user" in n] or list(info)[:1]
    context = {k: v for k, v in rows[0].items() if k in user}
    examples = {
        "rows": {"summary": "rows (TF-Serving 'instances')", "value": {"instances": rows}},
        "columns": {
            "summary": "columns (TF-Serving 'inputs')",
            "value": {"inputs": {k: [r[k] for r in rows] for k in info}},
        },
        "ranking": {
            "summary": "one context against several candidates",
            "value": {
                "context": context,
                "candidates": [{k: v for k, v in r.items() if k not in context} for r in rows],
            },
        },
    }
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": shapes}, "examples": examples}}}


def _value_schema(numeric: bool, multi: bool) -> dict[str, Any]:
    if numeric:
        return {"type": ["number", "null"]}
    scalar: dict[str, Any] = {"type": ["string", "integer", "boolean", "null"]}
    if multi:  # one string split on the field's separator, or a list of values
        return {"anyOf": [scalar, {"type": "array", "items": {"type": ["string", "integer"]}}]}
    return scalar


def _object(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}
