"""HTTP plumbing every route shares: the app's objects, the OpenAPI error entries, bounded body reading, JSON parsing,
and LeanRoute, the route class of the scoring hot path. (The bearer token is service/auth.py's.)

    app = state(request)                                        # the app's Services: settings, runtime, scorer...
    return await received_then_admitted(request, handler)       # a scoring route: body read, then admitted
    payload = parse_json(body)                                  # 400 invalid_json on anything orjson refuses
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.routing import request_response

from service.errors import (
    BadRequest,
    ClientClosedRequest,
    InvalidJSON,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from service.settings import Settings

if TYPE_CHECKING:  # (service/admission.py imports this module)
    from service.admission import Admission, BodyHold
    from service.services import Services

_DETAILS = {"code": {"type": "string"}, "field": {"type": ["string", "null"]}, "row": {"type": ["integer", "null"]}}
_MESSAGE = {"type": "string"}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "object", "properties": {**_DETAILS, "message": _MESSAGE}, "required": ["code", "message"]}
    },
    "required": ["error"],
}
# KServe v2 routes send the message as a string `error` (the protocol; tritonclient reads it), details beside it
V2_ERROR_SCHEMA = {"type": "object", "properties": {"error": _MESSAGE, **_DETAILS}, "required": ["error", "code"]}


def error_responses(*statuses: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer (v2: in the KServe v2 shape)."""
    text = {
        400: "Malformed JSON or an invalid feature value (the error names the field and row).",
        401: "Missing or wrong bearer token.",
        403: "The admin API is off (no APG_ADMIN_TOKEN), or the bundle lies outside APG_BUNDLE_ROOT.",
        404: "Unknown model (the error names the served ones).",
        408: "The body did not arrive within APG_BODY_TIMEOUT_S.",
        413: "Body larger than APG_MAX_BODY_BYTES or more rows than APG_MAX_ROWS.",
        415: "A compressed body, or a form or text/plain Content-Type (send application/json, or none).",
        422: "Request validation failed.",
        503: "Not ready, draining, or overloaded (see Retry-After).",
    }
    schema = V2_ERROR_SCHEMA if v2 else ERROR_SCHEMA
    return {s: {"description": text[s], "content": {"application/json": {"schema": schema}}} for s in statuses}


def state(request: Request) -> Services:
    """The app's Services (service/services.py: settings, metrics, runtime, admission, scorer...; create_app)."""
    return request.app.state.services


class LeanRoute(APIRoute):
    """The route class of the scoring hot path: documented by FastAPI like any route (OpenAPI from the
    declaration), dispatched without its dependency solver and response serialisation, which cost more than
    the model at batch 1 (docs/OPTIMISATIONS.md). Every LeanRoute is a scoring route: its endpoint starts with
    `received_then_admitted`, and while the worker is full the middleware answers its 503 before routing
    (service/admission.py). The endpoint takes the Request and the path parameters as
    keyword arguments, returns a Response, and checks the token itself with service/auth.py's `authorize`
    (`document_security` there declares the bearer scheme in OpenAPI, when a token is configured). Route dependencies
    would silently not run, so they are refused; for the same reason these routes are put in the app's route list
    directly, never through `include_router(..., dependencies=...)`, whose dependencies would be skipped too."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        if kwargs.get("dependencies"):
            raise TypeError(f"LeanRoute {path} runs no dependencies: call authorize(request) in the endpoint")
        super().__init__(path, endpoint, **kwargs)
        # Starlette's request/response wrapper, without FastAPI's per-request exit stacks (they serve dependencies
        # with yield, which this route has none of) and its body-size wrapper (read_body enforces the limit).
        self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Any:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request, **request.path_params)

        return handler


DRAIN_MAX_BYTES = 64 * 1024 * 1024  # of a body refused for its size, read on and dropped before the 413
# The types a browser may send cross-origin without a CORS preflight: refused, so that no web page can make its
# visitors' browsers score or reload here. No Content-Type at all (tritonclient.http sends none) stays accepted.
SIMPLE_FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


async def read_body(request: Request, settings: Settings, hold: BodyHold | None = None) -> bytes:
    """The whole body, read before the request is admitted (service/admission.py), so that a body still on its way
    holds no place there: 413 when it exceeds APG_MAX_BODY_BYTES, 408 when it has not all arrived
    APG_BODY_TIMEOUT_S after the route began to read it, 499 when the client leaves first. With a `hold` on the
    worker's body budget, the bytes are taken before they are read (503 when they do not fit); the caller releases
    it once the request is answered (on an error here it is released already)."""
    limit = settings.max_body_bytes
    declared = _declared_length(request)
    deadline = asyncio.get_running_loop().time() + settings.body_timeout_s
    stream = request.stream()
    if declared is None or declared <= limit:
        if hold is not None and declared is not None and not hold.take(declared):
            await _refuse_unread(request, stream, limit, deadline, hold.refused(declared))
        body = None
        try:
            async with asyncio.timeout_at(deadline):
                body = await _read(stream, limit, hold if declared is None else None, deadline)
        except TimeoutError:
            raise RequestTimeout(
                f"the body did not arrive within {settings.body_timeout_s:g} s (APG_BODY_TIMEOUT_S)"
            ) from None
        except ClientDisconnect:
            raise ClientClosedRequest("the client closed the connection before its body had arrived") from None
        finally:
            if hold is not None and body is None:
                hold.release()  # refused, cut short or failed: nothing stays taken
        if body is not None:
            return body
    if declared is None or declared <= DRAIN_MAX_BYTES:  # a larger declared body is refused at once
        await drain(stream, DRAIN_MAX_BYTES, deadline)
    body = f"body of {declared} bytes" if declared is not None and declared > limit else "body"
    message = f"{body} larger than the limit of {limit} bytes (APG_MAX_BODY_BYTES)"
    raise PayloadTooLarge(message, headers={"Connection": "close"})


async def _refuse_unread(request: Request, stream: AsyncIterator[bytes], limit: int, deadline: float, exc) -> None:
    """Raise `exc` (the body budget's 503) for a body not read into memory: read on and dropped first (bounded), so
    that clients which send it all before reading get the answer, unless the client waits for `100 Continue` (it
    then never sends the body). The connection closes when the body was not read whole."""
    whole = False
    if request.headers.get("expect", "").lower() != "100-continue":
        whole = await drain(stream, limit, deadline)
    if not whole:
        exc.headers = {**exc.headers, "Connection": "close"}
    raise exc


def _declared_length(request: Request) -> int | None:
    """Content-Length, once Content-Type and Content-Encoding are ones we read (415 otherwise)."""
    headers = request.headers
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type in SIMPLE_FORM_TYPES:
        raise UnsupportedMediaType(f"Content-Type {media_type!r} is not accepted; send application/json")
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send an uncompressed body")
    declared = headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise BadRequest(f"invalid Content-Length {declared!r}")
    return None if declared is None else int(declared)


async def _read(stream: AsyncIterator[bytes], limit: int, hold: BodyHold | None, deadline: float) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` bytes (the rest left unread in `stream`). With a `hold` (a body
    of undeclared length), its chunks are taken from the body budget as they come: 503 where it runs out (the rest
    read on and dropped until just before `deadline`, the caller's)."""
    chunks, size = [], 0
    async for chunk in stream:  # returning early leaves the generator suspended: drain reads on from there
        size += len(chunk)
        if size > limit:
            return None
        if hold is not None and not hold.take(len(chunk)):
            chunks.clear()
            whole = await drain(stream, limit, deadline - 0.01)
            exc = hold.refused(None)
            if not whole:
                exc.headers = {**exc.headers, "Connection": "close"}
            raise exc
        chunks.append(chunk)
    return b"".join(chunks)


async def drain(stream: AsyncIterator[bytes], limit: int, deadline: float) -> bool:
    """Read on and drop the rest of a refused body, up to `limit` bytes and until `deadline`; True when all of it was
    read. Clients that send the whole body before they read (urllib, http.client) then get the answer (413, or the 503
    of service/admission.py); with unread data left, the close that follows would be a connection reset instead."""
    size = 0
    with contextlib.suppress(TimeoutError, ClientDisconnect):
        async with asyncio.timeout_at(deadline):
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    return False
            return True
    return False


def parse_json(body: bytes) -> Any:
    """orjson.loads with errors as 400 invalid_json (NaN/Infinity literals, bad UTF-8, too deep, empty...)."""
    if not body:
        raise InvalidJSON("empty body: expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = " (NaN and Infinity are not JSON numbers)" if b"NaN" in body or b"Infinity" in body else ""
        raise InvalidJSON(f"malformed JSON{hint}: {exc}") from None


async def received_then_admitted(request: Request, handler, admission: Admission | None = None) -> Response:
    """The start of every scoring route (and of POST /feedback, with its own `admission`): read the body within the
    worker's body budget (timed as the `receive` stage), then take a place in admission for the rest (a body on its
    way holds no place), and run `handler(app, request, body)` there; the body's bytes go back to the budget once it
    is answered."""
    app = state(request)
    hold = app.bodies.hold()
    with app.metrics.timed("receive"):
        body = await read_body(request, app.settings, hold)
    try:
        async with admission or app.admission:
            return await handler(app, request, body)
    finally:
        hold.release()
