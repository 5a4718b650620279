"""The bearer tokens, one rule for HTTP and gRPC alike: `Bearer <token>` (the scheme in any case, the token compared in
constant time), from the Authorization header of a request or the `authorization` metadata of a call.

    authorize(request)                              # a scoring route (APG_AUTH_TOKEN, when set): 401 otherwise
    check_bearer(settings, authorization)           # the same check, given the header's or the metadata's value
    dependencies=[Depends(require_admin)]           # /admin/*: always APG_ADMIN_TOKEN (403 when none is set)
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Forbidden, Unauthorized
from service.http import LeanRoute, state
from service.settings import Settings

# Declares the scheme in OpenAPI for /admin; the header itself is read by `check_token`, as on every other path
_bearer = HTTPBearer(auto_error=False, description="APG_AUTH_TOKEN for scoring (when set), APG_ADMIN_TOKEN for /admin.")


def authorize(request: Request) -> None:
    """When APG_AUTH_TOKEN is set, the request needs `Authorization: Bearer <token>` (401 otherwise).
    Called by the scoring endpoints themselves (LeanRoute runs no dependencies)."""
    check_bearer(state(request).settings, request.headers.get("authorization", ""))


def check_bearer(settings: Settings, authorization: str) -> None:
    """Unauthorized unless `authorization` is `Bearer <APG_AUTH_TOKEN>` (nothing to check when no token is set): the
    Authorization header of HTTP requests, the `authorization` metadata of gRPC calls (service/grpc)."""
    token = settings.token()
    if token is not None:
        check_token(authorization, token)


async def require_admin(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """/admin/* always needs a bearer token (it loads files from disk); with none configured it is off."""
    token = state(request).settings.admin()
    if token is None:
        raise Forbidden("the admin API is off: set APG_ADMIN_TOKEN; SIGHUP still reloads")
    check_token(request.headers.get("authorization", ""), token)


def check_token(authorization: str, token: str) -> None:
    """Unauthorized unless `authorization` is `Bearer <token>` (the scheme in any case, spaces around the token
    ignored, as FastAPI's HTTPBearer reads it), compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized()


def document_security(schema: dict[str, Any], routes: list[Any], token_set: bool) -> None:
    """OpenAPI: the LeanRoute operations need the bearer token exactly when APG_AUTH_TOKEN is set (authorize)."""
    if not token_set:
        return
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.setdefault("HTTPBearer", {"type": "http", "scheme": "bearer"})
    for route in routes:
        if isinstance(route, LeanRoute):
            for method in route.methods:
                schema["paths"][route.path_format][method.lower()]["security"] = [{"HTTPBearer": []}]
