"""The outermost layer of every HTTP request: request id, in-flight gauge, latency metrics, JSON access log.

A plain ASGI middleware (no BaseHTTPMiddleware: it would buffer responses and cost a task per request).
It also turns any exception that escaped the routes into a 500 JSON error, so that response carries the
request id too; a 500 is a bug in our code, never the answer to bad input. And while the worker is full, it answers
a scoring request (a LeanRoute's), or a POST /feedback while its own admission is full, with service/admission.py's
503 itself, before routing and the route: counted and logged like any request, for a fraction of what the route's
refusal costs (docs/OPTIMISATIONS.md, section 11).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.admission import Admission
from service.errors import clipped, internal_error_body
from service.metrics import Metrics
from service.routes.common import LeanRoute

log = logging.getLogger("apg.access")
QUIET_ROUTES = frozenset({"/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, admission: Admission, feedback: Admission) -> None:
        self.app = app
        self.metrics = metrics
        self.admission = admission
        self.feedback = feedback  # POST /feedback's own admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id, given = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"], state["request_id_given"] = request_id, given
        status, started = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        app = self.app
        if self.admission.full and _scoring_route(scope):  # one comparison unless the worker is full
            app = self.admission.refuse
        elif self.feedback.full and scope["path"] == "/feedback" and _routed(scope):
            app = self.feedback.refuse
        counted = scope.get("path") not in QUIET_ROUTES  # a scrape must not count itself in flight
        if counted:
            self.metrics.inflight.inc()
        try:
            await app(scope, receive, send_with_id)
        except asyncio.CancelledError:  # the client went away first: nginx's 499, not a server error
            status = status if started else 499
            raise
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request_id, "path": scope.get("path")}})
            if not started:
                headers = [(b"content-type", b"application/json")]
                await send_with_id({"type": "http.response.start", "status": 500, "headers": headers})
                body = internal_error_body(scope.get("path", ""))
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            if counted:
                self.metrics.inflight.dec()
            elapsed = time.perf_counter() - start
            route = _route(scope)
            self.metrics.request_duration.labels(route).observe(elapsed)
            self.metrics.requests.labels(route, str(status)).inc()
            if "model" in state:  # a scoring route chose a model (service/routes/score.py, v2.py)
                self.metrics.observe_model_request(state["model"], state.get("arm"), status, elapsed)
            _access_log(scope, state, route, status, elapsed)


def _scoring_route(scope: Scope) -> bool:
    """Whether the request is for a scoring route (a LeanRoute: every one is admitted, routes/common.py), matched as
    the router would; the match goes into the scope, so that metrics and the access log name its route."""
    return _routed(scope, LeanRoute)


def _routed(scope: Scope, kind: type = object) -> bool:
    """Whether a route of type `kind` matches the request fully (its method too); the match goes into the scope.
    (POST /feedback, with an admission of its own, is matched this way while that admission is full.)"""
    for route in scope["app"].router.routes:
        if isinstance(route, kind):
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                return True
    return False


def _route(scope: Scope) -> str:
    # The path template (FastAPI sets scope["route"]); plain Starlette routes here (/docs, /openapi.json) are
    # static, so their path is their template. Anything unrouted is one label: no cardinality from URL scans.
    template = getattr(scope.get("route"), "path", None)
    if template:
        return template
    return scope.get("path", "unmatched") if "endpoint" in scope else "unmatched"


def _request_id(scope: Scope) -> tuple[str, bool]:
    # Echo a sane client id (≤ 128 visible ASCII characters); otherwise make one. (id, whether the client gave it)
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            if 0 < len(value) <= 128 and all(33 <= b <= 126 for b in value):
                return value.decode("ascii"), True
            break
    return uuid.uuid4().hex, False


def _access_log(scope: Scope, state: dict[str, Any], route: str, status: int, elapsed: float) -> None:
    level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "route": route,
        "status": status,
        "rows": state.get("rows"),
        "duration_s": round(elapsed, 6),
    }
    if "error_code" in state:  # a refused request: which error, and the feature it names (clipped, never a value)
        field = state.get("error_field")
        fields["error"], fields["field"] = state["error_code"], clipped(field, 64) if isinstance(field, str) else None
    if "features" in state:  # only with APG_LOG_FEATURES=true
        fields["features"] = state["features"]
    handler = _sole_handler()
    if handler is None:  # someone attached their own handlers: go through logging as usual
        log.log(level, "request", extra={"fields": fields})
        return
    # The service's own JSON handler is the only one: write the line it would write, without a LogRecord.
    # Through logging this cost ~34 µs a request in the running service, a seventh of all its work at batch 1
    # (docs/OPTIMISATIONS.md); the line and its flush are the same.
    line = {"ts": round(time.time(), 6), "level": logging.getLevelName(level).lower(), "logger": log.name}
    line.update(msg="request", **fields)
    text = orjson.dumps(line, default=str).decode() + "\n"
    try:
        with handler.lock:
            handler.stream.write(text)
            handler.stream.flush()
    except Exception:  # a closed or broken stream: logging's own error handling decides, as for any record
        log.log(level, "request", extra={"fields": fields})


def _sole_handler() -> logging.StreamHandler | None:
    """configure_logging's handler when it is the only one an access record would reach, else None."""
    if log.handlers or not log.propagate:
        return None
    parent = log.parent
    handlers = parent.handlers if parent is not None and parent.name == "apg" else ()
    if len(handlers) != 1 or not getattr(handlers[0], "_apg", False) or parent.propagate:
        return None
    handler = handlers[0]
    plain = type(handler.formatter) is JsonFormatter and handler.level <= logging.DEBUG
    return handler if plain and not handler.filters and not log.filters and not parent.filters else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the `apg` loggers (idempotent: one handler however many apps are built)."""
    logger = logging.getLogger("apg")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_apg", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler._apg = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
