"""The outermost layer of every HTTP request: request id, in-flight gauge, latency metrics, JSON access log (the rules
of service/observe.py, which gRPC follows too).

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

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import internal_error_body
from service.http import LeanRoute
from service.observe import REQUEST_ID, answered, arrived, request_id_of
from service.services import Services

log = logging.getLogger("apg.access")
HEADER = REQUEST_ID.encode()
QUIET_ROUTES = frozenset({"/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


class RequestMiddleware:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.metrics = services.metrics
        self.admission = services.admission
        self.feedback = services.feedback_admission  # POST /feedback's own admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = scope.get("path") not in QUIET_ROUTES  # a scrape must not count itself in flight
        start = arrived(self.metrics, counted)
        request_id, given = request_id_of(_header(scope, HEADER))
        state = scope.setdefault("state", {})
        state["request_id"], state["request_id_given"] = request_id, given
        status, started = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (HEADER, request_id.encode())]}
            await send(message)

        try:
            app = self.app
            if self.admission.full and _scoring_route(scope):  # one comparison unless the worker is full
                app = self.admission.refuse
            elif self.feedback.full and scope["path"] == "/feedback" and _routed(scope):
                app = self.feedback.refuse
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
            route = _route(scope)
            quiet = route in QUIET_ROUTES
            answered(self.metrics, start, counted, route, status, state, quiet, {"method": scope.get("method")})


def _scoring_route(scope: Scope) -> bool:
    """Whether the request is for a scoring route (a LeanRoute: every one is admitted, service/http.py), matched as
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


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
