"""POST /score: TF-Serving-style JSON of raw feature values → click probabilities.

    {"instances": [{"user_id": "196", "item_id": "242", "age": 49, ...}, ...]}     rows
    {"inputs": {"user_id": ["196", ...], "item_id": ["242", ...], ...}}             columns
    {"context": {"user_id": "196", "age": 49}, "candidates": [{"item_id": "242"}, ...]}   ranking
    {"context": {"user_id": "196", "age": 49}, "candidates": ["242", "302", ...]}          ranking by id (item store)
    → {"scores": [0.73, ...], "model": {"name": ..., "version": ...}, "arm": null, "request_id": "..."}

Which model scores: the one named by a "model" key in the body or the X-APG-Model header; else, while an experiment
runs (APG_EXPERIMENT), the arm of the request's key value; else the default model (service/experiment.py).

The body is parsed with orjson from raw bytes (no pydantic models on the hot path); the OpenAPI request
schema and examples are generated from the served model's schema (`request_body_doc`).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from features import Encoder
from service.auth import authorize
from service.experiment import MODEL_HEADER, select
from service.http import LeanRoute, error_responses, parse_json, received_then_admitted
from service.metrics import NO_ARM

router = APIRouter(tags=["scoring"], route_class=LeanRoute)

OOV_NOTE = (
    "A value outside the vocabulary scores like a missing value, without an error; apg_oov_values_total{feature}"
    " counts them."
)
MODEL_NOTE = "The model to score with (as X-APG-Model); default: the experiment's arm, else the default model."
RANKING_DESCRIPTION = (
    "One context scored against each candidate: a feature is given in the context or in the candidates, not both"
    " (400 invalid_shape); a required feature in the context or in every candidate."
)
BY_ID_DESCRIPTION = (
    " With an item store (APG_ITEM_STORE), a candidate may be its id alone, or an object that carries only some item"
    " features: the store gives the others, and the features a candidate carries override the store's. An id the"
    " store does not hold scores with its item features missing (counted in apg_item_store_misses_total), or is a"
    " 400 unknown_items with APG_ITEM_MISS=error; the store down or slow is a 503 item_store_unavailable."
)

RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
        "model": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            "required": ["name", "version"],
        },
        "arm": {"type": ["string", "null"], "description": "the experiment arm that chose the model, if one did"},
        "request_id": {
            "type": "string",
            "description": "what POST /feedback joins clicks on: unique per answer (the X-Request-ID header when the"
            " service made it; a fresh id when the client sent its own, which the header echoes)",
        },
    },
    "required": ["scores", "model", "arm", "request_id"],
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
        **error_responses(400, 401, 404, 408, 413, 415, 503),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def score(request: Request) -> Response:
    authorize(request)
    return await received_then_admitted(request, _score)


async def _score(app, request: Request, body: bytes) -> Response:
    with app.metrics.timed("parse"):
        payload = parse_json(body)
    if app.settings.log_features:
        request.state.features = payload
    model, arm = select(app.runtime, app.experiment, payload, request.headers.get(MODEL_HEADER))
    request.state.model, request.state.arm = model.name, arm  # the middleware's per-model metrics
    scored = await app.scorer.score_payload(payload, model, arm)
    request_id = feedback_id(request.state)
    if app.feedback is not None:  # traffic no experiment assigned is reported per model: arm "none:<model>"
        app.feedback.record(request_id, arm or f"{NO_ARM}:{scored.name}", scored.name, scored.version, scored.scores)
    elif app.feedback_keeper is not None:  # a store is configured but not open (keeper.py): not recorded, counted
        app.feedback_metrics.count("dropped_rows", len(scored.scores))
    with app.metrics.timed("serialise"):
        answer = {
            "scores": scored.scores,
            "model": {"name": scored.name, "version": scored.version},
            "arm": arm,
            "request_id": request_id,
        }
        out = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    request.state.rows = len(scored.scores)
    return Response(out, media_type="application/json")


def feedback_id(state: Any) -> str:
    """The answer's request_id, the key POST /feedback joins on: the request's X-Request-ID when the service made it
    (a fresh uuid), a fresh uuid when the client sent its own (clients and gateways reuse ids; a join key must not)."""
    return uuid.uuid4().hex if state.request_id_given else state.request_id


def request_body_doc(
    encoder: Encoder, max_rows: int, models: list[str] | None = None, by_id: bool = False
) -> dict[str, Any]:
    """OpenAPI requestBody for /score: the three shapes, with this model's features and real examples, and the
    optional "model" key naming one of `models`. As strict as the encoder, but for one ranking rule, stated in the
    description only: a feature is given in the context or in the candidates, not both (as JSON Schema, one anyOf per
    feature: 2^features branches, which generators such as schemathesis cannot expand). `by_id`: an item store is
    configured, so a candidate may also be an id, and a required item feature may come from the store."""
    info = encoder.describe()
    seps = {f.source: f.sep for f in encoder.fields if f.kind == "multi"}
    props = {name: _value_schema(f.numeric, f.multi, f.required) for name, f in info.items()}
    for name, sep in seps.items():
        props[name]["description"] = _multi_description(sep)
    required = sorted(name for name, f in info.items() if f.required)
    row = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    partial = {"type": "object", "properties": props, "additionalProperties": False}
    columns = {name: {"type": "array", "items": s, "minItems": 1, "maxItems": max_rows} for name, s in props.items()}
    candidate = {"anyOf": [partial, {"type": ["string", "number"]}]} if by_id else partial
    ranking = _object(
        context=partial, candidates={"type": "array", "items": candidate, "minItems": 1, "maxItems": max_rows}
    )
    ranking["description"] = RANKING_DESCRIPTION + (BY_ID_DESCRIPTION if by_id else "")
    if not by_id:  # (with a store, a required item feature may come from it)
        ranking["allOf"] = [_context_or_candidates(name) for name in required]
    shapes = [
        _object(instances={"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}),
        _object(inputs={"type": "object", "properties": columns, "required": required, "additionalProperties": False}),
        ranking,
    ]
    if models:  # optional in every shape: pins the request to one model (no experiment arm)
        for shape in shapes:
            shape["properties"]["model"] = {"type": "string", "enum": sorted(models), "description": MODEL_NOTE}
    rows = encoder.example_rows(3)
    user = [n for n in info if "user" in n] or list(info)[:1]
    context = {k: v for k, v in rows[0].items() if k in user}
    listed = [{k: v.split(seps[k]) if seps.get(k) and isinstance(v, str) else v for k, v in r.items()} for r in rows]
    examples = {
        "rows": {"summary": "rows (TF-Serving 'instances')", "value": {"instances": rows}},
        "lists": {"summary": "rows, multi-valued features as JSON lists", "value": {"instances": listed}},
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
    if by_id and "item_id" in info:
        examples["by_id"] = {
            "summary": "one context against candidates named by id (the item store gives their item features)",
            "value": {"context": context, "candidates": [r["item_id"] for r in rows]},
        }
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": shapes}, "examples": examples}}}


def _value_schema(numeric: bool, multi: bool, required: bool) -> dict[str, Any]:
    """What the encoder reads; null and blank strings are missing, which a required feature may not be."""
    if numeric:
        return {"type": "number"} if required else {"type": ["number", "null"]}
    kinds: list[dict[str, Any]] = [{"type": "string", "pattern": r"\S"} if required else {"type": "string"}]
    kinds.append({"type": ["number", "boolean"] if required else ["number", "boolean", "null"]})
    if multi:  # one string split on the field's separator, or a list of values
        kinds.append({"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}})
    return {"anyOf": kinds}


def _multi_description(sep: str | None) -> str:
    """What a client can send for a multi-valued feature, and what an unknown value becomes."""
    if not sep:
        return "Multi-valued: a JSON list (['Comedy', 'Drama']). " + OOV_NOTE
    other = ";" if sep == "," else ","
    return (
        f"Multi-valued: one string joined with {sep!r} ('Comedy{sep}Drama') or a JSON list (['Comedy', 'Drama']). A"
        f" string joined with another separator ('Comedy{other}Drama') is one unknown value. " + OOV_NOTE
    )


def _context_or_candidates(name: str) -> dict[str, Any]:
    """A required feature: in the context (and then in no candidate) or in every candidate."""
    has, lacks = {"required": [name]}, {"not": {"required": [name]}}
    return {"anyOf": [_ranking(has, lacks), _ranking(lacks, has)]}


def _ranking(context: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {"context": context, "candidates": {"items": candidate}}}


def _object(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}
