"""The gRPC server: KServe v2 / Open Inference Protocol RPCs on a grpc.aio server in the app's own event loop, so
they share its scorer, runtime, admission and metrics with the HTTP routes (service/grpc/__init__.py says how).

    server = await start(app)     # the lifespan, when APG_GRPC_PORT is set; app.state.grpc_port is the bound port
    await stop(server)            # in-flight RPCs get GRACE_S to finish

Each RPC is what its HTTP route does: ServerLive/ServerReady (/v2/health/*, ready false while loading or draining),
ModelReady, ServerMetadata, ModelMetadata (the same bodies), ModelInfer (the bearer token, admission, the same
tensor decoding and scorer), each parsing its own request (garbage is INVALID_ARGUMENT with our message). At most
APG_GRPC_MAX_CALLS calls are in our handlers per worker; one more call is
UNAVAILABLE `overloaded` (retryable), counted like any; grpc-core is told never to shed calls itself (it cancelled them
at random beyond 1,000 waiting, uncounted). Error messages are clipped (service/errors.py `clipped`). Metrics:
apg_requests_total and apg_request_duration_seconds with `route` the RPC's
full method name (/inference.GRPCInferenceService/ModelInfer) and `code` the HTTP status the same outcome has on
the HTTP routes (so dashboards' `code!~"2.."` error rates hold for both); the stages as for HTTP (parse = protobuf
parsing + tensor decoding).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from service.errors import BadRequest, ConfigError, NotReady, Overloaded, ServiceError, clipped
from service.grpc import messages as pb
from service.grpc.convert import error_metadata, infer_response, status_of, v2_header
from service.items import ItemStoreMismatch
from service.metrics import multiprocess_dir
from service.routes.common import check_bearer
from service.routes.v2 import metadata_body, server_metadata_body
from service.tensors import decode_inputs

log = logging.getLogger("apg.grpc")
access = logging.getLogger("apg.access")
GRACE_S = 5.0
QUIET = frozenset({"ServerLive", "ServerReady"})  # probes: not counted in flight nor refused, logged at debug level
PENDING_CALLS = 1 << 16  # calls grpc-core may hold for the application before it sheds them itself


async def start(app: Any) -> grpc.aio.Server:
    """Bind APG_GRPC_HOST:APG_GRPC_PORT (0: any free port) and start serving. With several workers (a shared
    PROMETHEUS_MULTIPROC_DIR) every worker binds the same port with SO_REUSEPORT and the kernel spreads connections
    over them; alone, a port already taken fails the start (RuntimeError) instead of being shared."""
    settings = app.settings
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),  # APG_MAX_BODY_BYTES, as for HTTP bodies
        ("grpc.so_reuseport", 1 if multiprocess_dir() else 0),
        # grpc-core drops calls waiting for the application beyond 1,000 at random (CANCELLED, which clients do not
        # retry, and never seen here: 177 of 2,000 concurrent calls, issue 25). Calls are taken at once and refused
        # by our own limit instead (UNAVAILABLE, counted). (A stream limit, grpc.max_concurrent_streams, would reset
        # the streams beyond it: UNAVAILABLE for clients, but uncounted, so it is left at grpc's default.)
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * PENDING_CALLS),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(pb.SERVICE, _handlers(app)),))
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        app.grpc_port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
        raise ConfigError(f"cannot bind gRPC to {address} (APG_GRPC_PORT): {exc}") from None
    await server.start()
    log.info("gRPC (KServe v2) on %s:%d", settings.grpc_host, app.grpc_port)
    return server


async def stop(server: grpc.aio.Server) -> None:
    await server.stop(GRACE_S)


def _handlers(app: Any) -> dict[str, grpc.RpcMethodHandler]:
    rpcs = {
        "ServerLive": _server_live,
        "ServerReady": _server_ready,
        "ModelReady": _model_ready,
        "ServerMetadata": _server_metadata,
        "ModelMetadata": _model_metadata,
        "ModelInfer": _model_infer,
    }
    handlers, calls = {}, Calls(app.settings.grpc_max_calls)
    for name, rpc in rpcs.items():
        # Every RPC parses its own bytes (garbage: INVALID_ARGUMENT with our message, not grpc's UNKNOWN); ModelInfer
        # times its parse stage and serialises its own answer
        raw = name == "ModelInfer"
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _observed(app, name, rpc if raw else _parsed(pb.METHODS[name][0], rpc), calls),
            request_deserializer=None,
            response_serializer=None if raw else _serialise,
        )
    return handlers


class Calls:
    """The RPCs of this worker in our handlers, and our limit on them (APG_GRPC_MAX_CALLS): one more is refused at
    once with UNAVAILABLE (retryable) and counted, as HTTP's 503 `overloaded`. Probes are never refused."""

    __slots__ = ("limit", "n", "refused")

    def __init__(self, limit: int) -> None:
        self.limit, self.n = limit, 0
        self.refused = Overloaded(
            f"{limit} gRPC calls in progress, the most this worker takes (APG_GRPC_MAX_CALLS = {limit})"
        )


def _parsed(request_type: Any, rpc: Rpc) -> Rpc:
    """`rpc` taking the serialised request: parsed here, BadRequest (INVALID_ARGUMENT) when it is not one."""
    kind = request_type.DESCRIPTOR.name

    async def parsed(app: Any, data: bytes, context: Any, fields: dict) -> Any:
        try:
            request = request_type.FromString(data)
        except DecodeError:
            raise BadRequest(f"malformed {kind}: not a serialised inference.{kind}") from None
        return await rpc(app, request, context, fields)

    return parsed


def _serialise(message: Any) -> bytes:
    return message.SerializeToString()


Rpc = Callable[[Any, Any, grpc.aio.ServicerContext, dict], Awaitable[Any]]  # (app, request, context, log fields)


def _observed(app: Any, name: str, rpc: Rpc, calls: Calls) -> Callable:
    """`rpc` with what the HTTP middleware gives every request: metrics, the access log, typed errors → status, and
    our limit on calls in progress."""
    route = f"/{pb.SERVICE}/{name}"
    metrics, quiet = app.metrics, name in QUIET
    duration = metrics.request_duration.labels(route)

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start, status, fields = time.perf_counter(), 200, {}
        request_id = _request_id(context)
        if not quiet:
            metrics.inflight.inc()
        calls.n += 1
        try:
            context.set_trailing_metadata((("x-request-id", request_id),))
            if calls.n > calls.limit and not quiet:
                raise calls.refused
            return await rpc(app, request, context, fields)
        except ServiceError as exc:
            status = exc.status
            trailing = (("x-request-id", request_id), *error_metadata(exc))
            await context.abort(status_of(exc), clipped(exc.message), trailing)
        except asyncio.CancelledError:  # the client went away (or the deadline passed)
            status = 499
            raise
        except Exception:
            status = 500
            log.exception("unhandled error", extra={"fields": {"request_id": request_id, "route": route}})
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error", (("x-request-id", request_id),))
        finally:
            calls.n -= 1
            elapsed = time.perf_counter() - start
            if not quiet:
                metrics.inflight.dec()
            duration.observe(elapsed)
            metrics.requests.labels(route, str(status)).inc()
            if "model" in fields:  # ModelInfer found its model: the per-model metrics, as the middleware does
                metrics.observe_model_request(fields["model"], None, status, elapsed)
            _access_log(route, status, elapsed, request_id, fields, quiet)

    return handler


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The client's x-request-id metadata when sane (≤ 128 visible ASCII characters), else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
            if value.isascii() and value.isprintable() and " " not in value:
                return value
    return uuid.uuid4().hex


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str:
    for k, value in context.invocation_metadata() or ():
        if k == key and isinstance(value, str):
            return value
    return ""


def _access_log(route: str, status: int, elapsed: float, request_id: str, fields: dict, quiet: bool) -> None:
    """The HTTP access log's line (service/middleware.py), with protocol "grpc" and the HTTP-equivalent status."""
    level = logging.DEBUG if quiet and status < 400 else logging.INFO
    if access.isEnabledFor(level):
        line = {"request_id": request_id, "protocol": "grpc", "route": route, "status": status, **fields}
        access.log(level, "request", extra={"fields": {**line, "duration_s": round(elapsed, 6)}})


def _model(app: Any, name: str, version: str) -> Any:
    """The served model `name` (and `version` when not empty), as the HTTP v2 routes find it (NotFound names the
    served ones; NotReady while loading)."""
    return app.runtime.get(name, version or None)


# ---------------------------------------------------------------- the RPCs


async def _server_live(app: Any, request: Any, context: Any, fields: dict) -> Any:
    return pb.ServerLiveResponse(live=True)


async def _server_ready(app: Any, request: Any, context: Any, fields: dict) -> Any:
    try:
        model = app.runtime.readiness()
        if app.items is not None:
            await app.items.ready(model)
    except (NotReady, ItemStoreMismatch):  # loading, draining, no item rows: the protocol's answer is ready=false
        return pb.ServerReadyResponse(ready=False)
    return pb.ServerReadyResponse(ready=True)


async def _model_ready(app: Any, request: Any, context: Any, fields: dict) -> Any:
    try:
        model = _model(app, request.name, request.version)
        if app.items is not None:
            await app.items.ready(model)
    except (NotReady, ItemStoreMismatch):
        return pb.ModelReadyResponse(ready=False)
    return pb.ModelReadyResponse(ready=True)  # an unknown model is NOT_FOUND, as HTTP's 404


async def _server_metadata(app: Any, request: Any, context: Any, fields: dict) -> Any:
    return pb.ServerMetadataResponse(**server_metadata_body())


async def _model_metadata(app: Any, request: Any, context: Any, fields: dict) -> Any:
    body = metadata_body(_model(app, request.name, request.version))
    response = pb.ModelMetadataResponse(name=body["name"], versions=body["versions"], platform=body["platform"])
    for kind in ("inputs", "outputs"):
        for tensor in body[kind]:
            getattr(response, kind).add(**tensor)
    return response


async def _model_infer(app: Any, data: bytes, context: Any, fields: dict) -> bytes:
    check_bearer(app.settings, _metadata(context, "authorization"))
    async with app.admission:
        t0 = time.perf_counter()
        request = _parse(data)
        model = _model(app, request.model_name, request.model_version)
        fields["model"] = model.name
        header, blobs = v2_header(request)
        columns, rows = decode_inputs(header, blobs, app.settings.max_rows, model.text_features)
        app.metrics.stage("parse", time.perf_counter() - t0)
        scored = await app.scorer.score_columns(columns, rows, model)
        t1 = time.perf_counter()
        answer = infer_response(request, scored)
        app.metrics.stage("serialise", time.perf_counter() - t1)
    fields["rows"] = rows
    return answer


def _parse(data: bytes) -> Any:
    try:
        return pb.ModelInferRequest.FromString(data)
    except DecodeError as exc:
        raise BadRequest(f"malformed ModelInferRequest: {exc}") from None
