"""Typed errors that carry their HTTP status, and the one place that turns them into responses.

Every error body has one shape, whatever raised it (our code, FastAPI's validation, Starlette's routing):

    {"error": {"code": "unknown_feature", "message": "...", "field": "agee", "row": 3}}

`field` and `row` are null when they do not apply. Under /v2 (KServe v2 / Open Inference Protocol) the
protocol wants `error` to be the message string, so there the same details sit beside it:
{"error": "...", "code": "unknown_feature", "field": "agee", "row": 3}. Scoring code raises these classes and never an
`HTTPException`; bad input must end here as a 4xx, and only a bug in our code may produce the 500.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from features.errors import (  # noqa: F401 (re-exported: the service's typed errors in one namespace)
    BadRequest,
    BundleError,
    ContractError,
    EmptyBatch,
    FeatureError,
    InvalidJSON,
    InvalidShape,
    InvalidType,
    MissingFeature,
    NonFinite,
    RaggedColumns,
    SchemaError,
    UnknownFeature,
)

log = logging.getLogger("apg.errors")


# The encoder's errors live with the contract (features/errors.py, no HTTP framework there); each already carries its
# status. ServiceError is their base, so one handler maps every typed error, the encoder's and the service's alike.
ServiceError = ContractError


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "missing or invalid bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class RequestTimeout(ServiceError):
    """The body did not arrive in time. The connection is closed: its unread rest is not the next request."""

    status, code = 408, "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class ClientClosedRequest(ServiceError):
    """The client went away before its body had arrived: nginx's 499, counted as such, not an error of ours
    (and nobody reads the answer)."""

    status, code = 499, "client_closed_request"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class TooManyRows(PayloadTooLarge):
    code = "too_many_rows"


class HeaderFieldsTooLarge(ServiceError):
    """A request head over APG_MAX_HEADER_BYTES or APG_MAX_HEADERS (answered by service/protocol.py, before the app)."""

    status, code = 431, "header_fields_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class ConfigError(ServiceError):
    """Settings the process cannot honour (e.g. `providers=cuda` without CUDA)."""

    code = "config"


class NotReady(ServiceError):
    status, code = 503, "not_ready"

    def __init__(self, message: str = "model not loaded yet (or draining)") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class Overloaded(ServiceError):
    status, code = 503, "overloaded"

    def __init__(self, message: str = "too many requests waiting for inference") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class FeedbackUnavailable(ServiceError):
    """POST /feedback while the click store cannot be opened, fails, or does not answer in time (scoring is not
    affected): retry after `retry_after` seconds."""

    status, code = 503, "feedback_unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


def json_response(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


MAX_MESSAGE = 1024  # characters of an error message, and of its `field`, that an answer carries at most
MAX_ECHO = 64  # characters of a client's value (a name, an id) an error message quotes


def clipped(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, cut to `limit` characters (marked): no answer echoes more than a bounded prefix of the client's input,
    whatever a message quotes (a 1 MB input name was echoed whole, issue 25)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object, limit: int = MAX_ECHO) -> str:
    """repr() of a client's value for a message, its text cut to `limit` characters (marked)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"… ({len(value)} characters)"
    return clipped(repr(value), limit + 2)


def error_json(exc: ServiceError, path: str) -> bytes:
    """The error body of a request to `path`. KServe v2 routes put the message in a string `error` (the protocol, and
    what tritonclient reads) with the same details beside it: {"error": msg, "code": ..., "field": ..., "row": ...}.
    The message and the field are clipped (`clipped`)."""
    body = exc.body()
    error = body["error"]
    error["message"] = clipped(error["message"])
    if isinstance(error.get("field"), str):
        error["field"] = clipped(error["field"])
    if path.startswith("/v2/"):
        body = {**body["error"], "error": body["error"]["message"]}
        del body["message"]
    return orjson.dumps(body)


def render(request: Request, exc: ServiceError) -> Response:
    # the access line names what was wrong, not just the status (service/observe.py reads these)
    request.state.error_code, request.state.error_field = exc.code, exc.field
    return Response(error_json(exc, request.url.path), exc.status, exc.headers, media_type="application/json")


def _loc_to_field(loc: tuple) -> tuple[str | None, int | None]:
    # FastAPI locations look like ("body", "bundle") or ("path", "name"); keep the names and any index.
    names = [str(p) for p in loc[1:] if not isinstance(p, int)]
    rows = [p for p in loc if isinstance(p, int)]
    return (".".join(names) or None), (rows[0] if rows else None)


class RequestInvalid(ServiceError):
    status, code = 422, "validation_error"


class HTTPError(ServiceError):
    """Starlette's own errors (unknown route 404, wrong method 405) in our shape."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")


async def _service_error(request: Request, exc: ServiceError) -> Response:
    return render(request, exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":  # loc is ("body", character offset): no field, no row
        detail = (first.get("ctx") or {}).get("error", first.get("msg"))
        return render(request, InvalidJSON(f"malformed JSON at character {loc[-1] if loc else '?'}: {detail}"))
    field, row = _loc_to_field(loc)
    return render(request, RequestInvalid(str(first.get("msg")), field=field, row=row))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return render(request, HTTPError(exc.status_code, str(exc.detail), getattr(exc, "headers", None)))


def install_error_handlers(app: FastAPI) -> None:
    """Map every typed error to its JSON response. Unexpected exceptions are the middleware's (500)."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def internal_error_body(path: str) -> bytes:
    """The 500 body (written by the middleware, outside the exception handlers), shaped as `render` does."""
    return error_json(ServiceError("internal server error"), path)
