"""POST /feedback: clicks (and non-clicks) joined back to what the service scored, per arm (service/feedback/).

    {"feedback": [{"request_id": "9f2c...", "row": 0, "clicked": true}, ...]}
    → {"counts": {"accepted": 1, "duplicate": 0, "unknown": 0, "late": 0, "malformed": 0},
       "results": [{"outcome": "accepted", "message": "...", "request_id": "9f2c...", "row": 0}]}

`request_id` is the one /score answered with (the X-Request-ID it echoed or made), `row` the row's index in that
request. Every item gets its own outcome, in order, and the answer is 200 whatever they were: a batch with a bad item
is not refused whole. The per-arm online metrics are the apg_online_* gauges of /metrics.

/feedback never takes scoring's places: it has its own admission (APG_FEEDBACK_MAX_CONCURRENCY +
APG_FEEDBACK_MAX_QUEUE, then 503 `overloaded`) and its own threads, and waits at most APG_FEEDBACK_TIMEOUT_S for the
store. A store that cannot be opened, fails or does not answer in time is a 503 `feedback_unavailable` with
Retry-After (service/feedback/keeper.py), never a 500.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.auth import authorize
from service.errors import BadRequest, NotFound, TooManyRows, json_response
from service.feedback import feedback_response
from service.http import error_responses, parse_json, received_then_admitted, state

router = APIRouter(tags=["feedback"])

ITEM = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string", "description": "the request_id /score answered with"},
        "row": {"type": "integer", "minimum": 0, "description": "the row's index in that request"},
        "clicked": {"type": "boolean"},
    },
    "required": ["request_id", "row", "clicked"],
}
BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"feedback": {"type": "array", "items": ITEM, "minItems": 1}},
                "required": ["feedback"],
            },
            "example": {"feedback": [{"request_id": "9f2c4e1a", "row": 0, "clicked": True}]},
        }
    },
}
ANSWER = {
    "type": "object",
    "properties": {
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "results": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["counts", "results"],
}


@router.post(
    "/feedback",
    summary="Report clicks for scored rows",
    response_class=Response,
    responses={
        200: {"description": "One outcome per item, in order.", "content": {"application/json": {"schema": ANSWER}}},
        **error_responses(400, 401, 404, 408, 413, 415, 503),
    },
    openapi_extra={"requestBody": BODY},
)
async def feedback(request: Request) -> Response:
    authorize(request)
    app = state(request)
    if app.feedback_keeper is None:
        raise NotFound(
            "no feedback store: set APG_FEEDBACK (sqlite:///path or redis://host:port/db) or run an experiment"
        )
    if app.feedback is None:  # configured, not open (yet): 503 feedback_unavailable, its body left unread
        raise app.feedback_keeper.unavailable()
    return await received_then_admitted(request, _feedback, app.feedback_admission)  # its own places, not scoring's


async def _feedback(app, request: Request, body: bytes) -> Response:
    payload = parse_json(body)
    if not isinstance(payload, dict) or set(payload) != {"feedback"}:
        raise BadRequest('expected {"feedback": [{"request_id", "row", "clicked"}, ...]}', field="feedback")
    items = payload["feedback"]
    if isinstance(items, list) and len(items) > app.settings.max_rows:
        raise TooManyRows(f"{len(items)} feedback items in one request; the limit is {app.settings.max_rows}")
    outcomes = await app.feedback_keeper.feedback(items)  # its own threads, bounded in time; 503 on storage errors
    return json_response(200, feedback_response(outcomes))
