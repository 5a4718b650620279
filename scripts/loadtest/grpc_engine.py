"""The gRPC engine of `apg loadtest --protocol grpc`: KServe v2 ModelInfer calls over grpc.aio, open loop.

    bodies = build_requests(sampler, "synthetic-apg", rows=16, pool=256)    # serialised ModelInferRequests
    rec = asyncio.run(run_load("127.0.0.1:8001", cfg, bodies, schedule))

Same contract as the HTTP engines: each call starts at its scheduled time (or waits for one of `--concurrency`
places), latency runs from the scheduled time. Bodies are serialised before the run (raw_input_contents, as
tritonclient.grpc sends them) and answers are not parsed: only their status is recorded (200 for OK; an error is
`grpc_<code>`, e.g. grpc_invalid_argument). Calls go round-robin over up to CHANNELS channels, each on its own
connection, so that a server with several workers (which share the port with SO_REUSEPORT) sees them all.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import grpc
import numpy as np

from features import RowSampler
from scripts.clients.v2 import grpc_request, to_tensors
from scripts.loadtest.records import LoadConfig, Records, dispatch
from service.grpc.messages import SERVICE

METHOD = f"/{SERVICE}/ModelInfer"
CHANNELS = 8


def build_requests(sampler: RowSampler, model: str, rows: int, pool: int) -> list[bytes]:
    """`pool` distinct serialised requests of `rows` rows each: one tensor per raw feature, as the v2 JSON and binary
    bodies carry them (scripts/clients/v2.py)."""
    return [grpc_request(to_tensors(sampler.rows(rows), sampler.numeric), model) for _ in range(pool)]


async def run_load(target: str, cfg: LoadConfig, bodies: list[bytes], schedule: np.ndarray) -> Records:
    """Send bodies[i % len(bodies)] at schedule[i] (open loop) to `target` (host:port) and record every call."""
    rec = Records(schedule)
    metadata = (("authorization", f"Bearer {cfg.token}"),) if cfg.token else None
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel, not one shared by all
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(min(cfg.concurrency, CHANNELS))]
    calls = [c.unary_unary(METHOD, request_serializer=None, response_deserializer=None) for c in channels]
    gate = asyncio.Semaphore(cfg.concurrency)

    def send(i: int, t0: float):
        return _send(calls[i % len(calls)], gate, cfg, rec, i, bodies[i % len(bodies)], t0, metadata)

    try:
        await dispatch(rec, send, cfg.drain)
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return rec


async def _send(call, gate, cfg: LoadConfig, rec: Records, i: int, body: bytes, t0: float, metadata) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with gate:  # the concurrency cap: waiting here counts in the latency
            rec.sent[i] = loop.time() - t0
            await call(body, timeout=cfg.timeout, metadata=metadata)
            rec.status[i] = 200
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        rec.error[i] = "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else f"grpc_{code.name.lower()}"
    except asyncio.CancelledError:  # still outstanding when the drain time ran out
        rec.error[i] = "unsent" if np.isnan(rec.sent[i]) else "cancelled"
        raise
    except Exception as exc:  # anything else is still one failed call, named, not a crashed run
        rec.error[i] = f"error_{type(exc).__name__}"
    rec.done[i] = loop.time() - t0


def plan(args, sampler: RowSampler, bundle_model: str | None) -> tuple[str, str, list[bytes]]:
    """(grpc://host:port, method, request bodies) of `apg loadtest --protocol grpc`: --url's host, --grpc-port."""
    model = args.model or bundle_model
    if not model:
        raise ValueError("--protocol grpc needs a model name: pass --model or use a bundle whose bundle.json names it")
    host = urlsplit(args.url).hostname
    return f"grpc://{host}:{args.grpc_port}", METHOD, build_requests(sampler, model, args.rows, args.pool)
