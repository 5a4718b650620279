"""KServe v2 / Open Inference Protocol over gRPC, beside the HTTP routes, through the same scorer.

    APG_GRPC_PORT=8001 apg serve ...   # or `apg serve --grpc-port 8001`; off unless set
    tritonclient.grpc.InferenceServerClient("127.0.0.1:8001")   # works unchanged

The API is the official grpc_predict_v2.proto (package `inference`, service `GRPCInferenceService`; the copy here
says where it is from). The server (server.py) runs in the app's event loop, started and stopped by its lifespan;
convert.py turns a ModelInferRequest into the HTTP route's tensors for service/tensors.py, so both protocols decode,
check and score alike; messages.py builds the message classes from descriptor.py, which generate.py writes.

Importing this package imports no gRPC: the app calls `start` only when APG_GRPC_PORT is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.services import Services


async def start(services: Services) -> tuple[Any, int] | None:
    """(the running grpc.aio server of the app, its bound port), or None when APG_GRPC_PORT is not set."""
    if services.settings.grpc_port is None:
        return None
    from service.grpc import server

    return await server.start(services)


async def stop(running: Any) -> None:
    if running is not None:
        from service.grpc import server

        await server.stop(running)
