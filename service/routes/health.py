"""Probes, metrics and admin: GET /livez, GET /readyz, GET /metrics, POST /admin/reload.

/livez is 200 while the process serves HTTP at all; /readyz is 200 only once the model is loaded and
warmed up, and 503 while loading or draining (from SIGTERM on, while requests are still served: APG_DRAIN_GRACE_S).
/metrics is the Prometheus text format (all workers).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.errors import RequestInvalid, json_response
from service.routes.common import error_responses, parse_json, read_body, require_admin, state

RELOAD_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "bundle": {
                        "type": ["string", "null"],
                        "description": "bundle directory; default: the configured APG_BUNDLE",
                    }
                },
            }
        }
    },
}

router = APIRouter(tags=["operations"])


@router.get("/livez", summary="Liveness probe")
async def livez() -> Response:
    return json_response(200, {"status": "live"})


@router.get("/readyz", summary="Readiness probe", responses=error_responses(503))
async def readyz(request: Request) -> Response:
    model = state(request).runtime.readiness()  # NotReady → 503 (loading, draining)
    return json_response(200, {"status": "ready", "model": _describe(model)})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body, content_type = state(request).metrics.exposition()
    return Response(body, media_type=content_type)


@router.post(
    "/admin/reload",
    summary="Hot-reload a bundle",
    dependencies=[Depends(require_admin)],
    responses=error_responses(400, 401, 403, 408, 413, 415, 422),
    openapi_extra={"requestBody": RELOAD_BODY},
)
async def reload(request: Request) -> Response:
    app = state(request)
    target = _reload_target(await read_body(request, app.settings))  # read like /score's: no Content-Type needed
    previous = app.runtime.current
    model = await app.runtime.reload(target)
    return json_response(200, {"model": _describe(model), "previous": _describe(previous)})


def _reload_target(body: bytes) -> str | None:
    """`{"bundle": "path"}` → the path; no body, `{}` or a null bundle → None (the configured bundle)."""
    if not body.strip():
        return None
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise RequestInvalid('expected a JSON object: {"bundle": "path"}')
    target = payload.get("bundle")
    if not isinstance(target, str | None):
        raise RequestInvalid("'bundle' must be a bundle directory (a string) or null", field="bundle")
    return target


def _describe(model) -> dict[str, str]:
    return {"name": model.name, "version": model.version, "checksum": model.bundle.checksum, "provider": model.provider}
