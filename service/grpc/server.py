"""The gRPC server: KServe v2 / Open Inference Protocol RPCs on a grpc.aio server in the app's own event loop, so
they share its scorer, runtime, admission and metrics with the HTTP routes (service/grpc/__init__.py says how).

    server, port = await start(services)   # the lifespan, when APG_GRPC_PORT is set (services: service/services.py)
    await stop(server)                     # in-flight RPCs get GRACE_S to finish

Each RPC is what its HTTP route does: ServerLive/ServerReady (/v2/health/*, ready false while loading or draining),
ModelReady, ServerMetadata, ModelMetadata (the same bodies), ModelInfer (the bearer token, admission, the same
tensor decoding and scorer), each parsing its own request (garbage is INVALID_ARGUMENT with our message). At most
APG_GRPC_MAX_CALLS calls are in our handlers per worker; one more call is
UNAVAILABLE `overloaded` (retryable), counted like any; grpc-core is told never to shed calls itself (it cancelled them
at random beyond 1,000 waiting, uncounted). Error messages are clipped (service/errors.py `clipped`). Metrics:
apg_requests_total and apg_request_duration_seconds with `route` the RPC's
full method name (/inference.GRPCInferenceService/ModelInfer) and `code` the HTTP status the same outcome has on
the HTTP routes (so dashboards' `code!~"2.."` error rates hold for both); the stages as for HTTP (parse = protobuf
parsing + tensor decoding); the request id (x-request-id metadata, echoed in the trailing metadata) and the access
line as for HTTP, with protocol "grpc" and, for a refused call, its error code and field (service/observe.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from service import oip
from service.auth import check_bearer
from service.errors import BadRequest, ConfigError, NotReady, Overloaded, ServiceError, clipped
from service.grpc import messages as pb
from service.grpc.convert import error_metadata, infer_response, status_of, v2_header
from service.items import ItemStoreMismatch
from service.observe import REQUEST_ID, answered, arrived, request_id_of
from service.prometheus import multiprocess_dir
from service.services import Services

log = logging.getLogger("apg.grpc")
GRACE_S = 5.0
QUIET = frozenset({"ServerLive", "ServerReady"})  # probes: not counted in flight nor refused, logged at debug level
GRPC = {"protocol": "grpc"}  # the protocol's own part of the access line (HTTP's is the method)
PENDING_CALLS = 1 << 16  # calls grpc-core may hold for the application before it sheds them itself


async def start(app: Services) -> tuple[grpc.aio.Server, int]:
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
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
        raise ConfigError(f"cannot bind gRPC to {address} (APG_GRPC_PORT): {exc}") from None
    await server.start()
    log.info("gRPC (KServe v2) on %s:%d", settings.grpc_host, port)
    return server, port


async def stop(server: grpc.aio.Server) -> None:
    await server.stop(GRACE_S)


def _handlers(app: Services) -> dict[str, grpc.RpcMethodHandler]:
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

    async def parsed(app: Services, data: bytes, context: Any, state: dict) -> Any:
        try:
            request = request_type.FromString(data)
        except DecodeError:
            raise BadRequest(f"malformed {kind}: not a serialised inference.{kind}") from None
        return await rpc(app, request, context, state)

    return parsed


def _serialise(message: Any) -> bytes:
    return message.SerializeToString()


Rpc = Callable[[Any, Any, grpc.aio.ServicerContext, dict], Awaitable[Any]]  # (app, request, context, state)


def _observed(app: Services, name: str, rpc: Rpc, calls: Calls) -> Callable:
    """`rpc` with what the HTTP middleware gives every request (service/observe.py: request id, metrics, the access
    line), typed errors → status, and our limit on calls in progress."""
    route, metrics, quiet = f"/{pb.SERVICE}/{name}", app.metrics, name in QUIET

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = arrived(metrics, not quiet)
        request_id, _ = request_id_of(_metadata(context, REQUEST_ID))
        status, state = 200, {"request_id": request_id}  # the RPC adds model and rows (ModelInfer)
        calls.n += 1
        try:
            context.set_trailing_metadata(((REQUEST_ID, request_id),))
            if calls.n > calls.limit and not quiet:
                raise calls.refused
            return await rpc(app, request, context, state)
        except ServiceError as exc:
            status = exc.status
            state["error_code"], state["error_field"] = exc.code, exc.field  # the access line's, as for HTTP
            trailing = ((REQUEST_ID, request_id), *error_metadata(exc))
            await context.abort(status_of(exc), clipped(exc.message), trailing)
        except asyncio.CancelledError:  # the client went away (or the deadline passed)
            status = 499
            raise
        except Exception:
            status = 500
            log.exception("unhandled error", extra={"fields": {"request_id": request_id, "route": route}})
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error", ((REQUEST_ID, request_id),))
        finally:
            calls.n -= 1
            who = {"protocol": "grpc", "model": state["model"]} if "model" in state else GRPC
            answered(metrics, start, not quiet, route, status, state, quiet, who)

    return handler


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """The first value of metadata `key`, or None."""
    for k, value in context.invocation_metadata() or ():
        if k == key and isinstance(value, str):
            return value
    return None


# ---------------------------------------------------------------- the RPCs: service/oip.py's rules, as protobuf


async def _server_live(app: Services, request: Any, context: Any, state: dict) -> Any:
    return pb.ServerLiveResponse(live=True)


async def _server_ready(app: Services, request: Any, context: Any, state: dict) -> Any:
    try:
        await oip.server_ready(app)
    except (NotReady, ItemStoreMismatch):  # loading, draining, no item rows: the protocol's answer is ready=false
        return pb.ServerReadyResponse(ready=False)
    return pb.ServerReadyResponse(ready=True)


async def _model_ready(app: Services, request: Any, context: Any, state: dict) -> Any:
    try:
        await oip.model_ready(app, request.name, request.version)
    except (NotReady, ItemStoreMismatch):
        return pb.ModelReadyResponse(ready=False)
    return pb.ModelReadyResponse(ready=True)  # an unknown model is NOT_FOUND, as HTTP's 404


async def _server_metadata(app: Services, request: Any, context: Any, state: dict) -> Any:
    return pb.ServerMetadataResponse(**oip.server_metadata_body())


async def _model_metadata(app: Services, request: Any, context: Any, state: dict) -> Any:
    body = oip.metadata_body(oip.find_model(app, request.name, request.version))
    response = pb.ModelMetadataResponse(name=body["name"], versions=body["versions"], platform=body["platform"])
    for kind in ("inputs", "outputs"):
        for tensor in body[kind]:
            getattr(response, kind).add(**tensor)
    return response


async def _model_infer(app: Services, data: bytes, context: Any, state: dict) -> bytes:
    check_bearer(app.settings, _metadata(context, "authorization") or "")
    async with app.admission:
        with app.metrics.timed("parse"):  # protobuf parsing + tensor decoding
            request = _parse(data)
            model = oip.find_model(app, request.model_name, request.model_version)
            state["model"] = model.name
            header, blobs = v2_header(request)
            columns, rows = oip.decode(app, model, header, blobs)
        scored = await app.scorer.score_columns(columns, rows, model)
        with app.metrics.timed("serialise"):
            answer = infer_response(request, scored)
    state["rows"] = rows
    return answer


def _parse(data: bytes) -> Any:
    try:
        return pb.ModelInferRequest.FromString(data)
    except DecodeError as exc:
        raise BadRequest(f"malformed ModelInferRequest: {exc}") from None
