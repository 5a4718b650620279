"""Probes, metrics and admin: GET /livez, GET /readyz, GET /metrics, POST /admin/reload.

/livez is 200 while the process serves HTTP at all; /readyz is 200 only once the model is loaded and
warmed up, and 503 while loading or draining (from SIGTERM on, while requests are still served: APG_DRAIN_GRACE_S),
or while the model's item store (APG_ITEM_STORE) holds no rows for its contract (503 item_store_mismatch, naming the
`apg items sync` to run; a store that is down leaves it ready: requests that carry their features still score).
/metrics is the Prometheus text format (all workers).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response

from service.auth import require_admin
from service.errors import Forbidden, RequestInvalid, json_response
from service.experiment import NAME
from service.http import error_responses, parse_json, read_body, state

RELOAD_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "bundle": {
                        "type": ["string", "null"],
                        "description": "bundle directory; default: the configured APG_BUNDLE (the model's directory"
                        " in APG_MODELS)",
                    },
                    "model": {
                        "type": ["string", "null"],
                        "description": "with APG_MODELS: the model to reload (a new name adds one); default: the"
                        " default model",
                    },
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
    app = state(request)
    runtime, items = app.runtime, app.items
    model = runtime.readiness()  # NotReady → 503 (loading, draining)
    body = {"status": "ready", "model": _describe(model)}
    if items is not None:
        body["item_store"] = await items.ready(model)  # ItemStoreMismatch → 503 naming the sync to run
    if runtime.repository:
        body["models"] = {name: _describe(m) for name, m in runtime.models.items()}
        body["unavailable"] = dict(runtime.failed)
        if items is not None:  # every model's store: one without rows for its contract names the sync to run
            for name, m in runtime.models.items():
                binding = await items.binding(m)
                body["models"][name]["item_store"] = binding.describe() if binding is not None else None
    return json_response(200, body)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body, content_type = state(request).metrics.exposition()
    return Response(body, media_type=content_type)


@router.post(
    "/admin/reload",
    summary="Hot-reload a bundle",
    dependencies=[Depends(require_admin)],
    responses=error_responses(400, 401, 403, 404, 408, 413, 415, 422),
    openapi_extra={"requestBody": RELOAD_BODY},
)
async def reload(request: Request) -> Response:
    app = state(request)
    root = app.settings.bundles()
    name, target = _reload_target(await read_body(request, app.settings), root)  # any Content-Type
    if target is None and name is not None and app.runtime.repository:  # a repository's model by name: its
        target = _confined(str(app.settings.models / name), root)  # directory, symlinks resolved as for a path
    previous = app.runtime.models.get(name) if name is not None else app.runtime.current
    model = await app.runtime.reload(target, name)
    if app.fanout is not None:  # --workers N: loaded here, then every other worker follows (service/fanout.py)
        app.fanout.announce(model)
    return json_response(200, {"model": _describe(model), "previous": _describe(previous) if previous else None})


def _reload_target(body: bytes, root: Path) -> tuple[str | None, Path | None]:
    """`{"bundle": "path", "model": "name"}` → (name, the path confined to `root`); a missing or null key → None
    (the default model; its configured bundle or directory)."""
    if not body.strip():
        return None, None
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise RequestInvalid('expected a JSON object: {"bundle": "path", "model": "name"}')
    target, name = payload.get("bundle"), payload.get("model")
    if not isinstance(target, str | None):
        raise RequestInvalid("'bundle' must be a bundle directory (a string) or null", field="bundle")
    if name is not None and not (isinstance(name, str) and NAME.fullmatch(name)):
        raise RequestInvalid("'model' must be a model name (letters, digits, '_', '.', '-') or null", field="model")
    return name, None if target is None else _confined(target, root)


def _confined(given: str, root: Path) -> Path:
    """`given` with its symlinks resolved, when that lies in `root` (APG_BUNDLE_ROOT); 403 otherwise, the same
    answer whether or not it exists, so that the admin API tells nothing about the rest of the file system."""
    outside = Forbidden(f"bundle {given!r} is not inside APG_BUNDLE_ROOT", field="bundle")
    try:
        path = Path(given).resolve()
    except (OSError, ValueError, RuntimeError):  # an embedded NUL byte, a symlink loop (RuntimeError before 3.13)
        raise outside from None
    if path != root and root not in path.parents:
        raise outside
    return path


def _describe(model) -> dict[str, str]:
    return {"name": model.name, "version": model.version, "checksum": model.bundle.checksum, "provider": model.provider}
