"""Probes, metrics and admin: GET /livez, GET /readyz, GET /metrics, POST /admin/reload.

/livez is 200 while the process serves HTTP at all; /readyz is 200 only once the model is loaded and
warmed up, and 503 while loading or draining. /metrics is the Prometheus text format (all workers).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from service.errors import json_response
from service.routes.common import error_responses, require_admin, state


class ReloadRequest(BaseModel):
    bundle: str | None = Field(None, description="bundle directory; default: the configured APG_BUNDLE")


router = APIRouter(tags=["operations"])


@router.get("/livez", summary="Liveness probe")
async def livez() -> Response:
    return json_response(200, {"status": "live"})


@router.get("/readyz", summary="Readiness probe", responses=error_responses(503))
async def readyz(request: Request) -> Response:
    model = state(request).runtime.current  # NotReady → 503
    return json_response(200, {"status": "ready", "model": _describe(model)})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body, content_type = state(request).metrics.exposition()
    return Response(body, media_type=content_type)


@router.post(
    "/admin/reload",
    summary="Hot-reload a bundle",
    dependencies=[Depends(require_admin)],
    responses=error_responses(400, 401, 403, 422),
)
async def reload(request: Request, body: ReloadRequest | None = None) -> Response:
    runtime = state(request).runtime
    previous = runtime.current
    model = await runtime.reload(body.bundle if body else None)
    return json_response(200, {"model": _describe(model), "previous": _describe(previous)})


def _describe(model) -> dict[str, str]:
    return {"name": model.name, "version": model.version, "checksum": model.bundle.checksum, "provider": model.provider}
