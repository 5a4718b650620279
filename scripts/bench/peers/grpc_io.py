"""The gRPC side of the peers bench (scripts/bench/peers/command.py): a thin ModelInfer client, a closed loop and a
saturated batch-1 rate, on the requests that scripts/clients/v2.py builds (the very tensors the HTTP servers get).

    raw = grpc_request(tensors, model)                # scripts/clients/v2.py: a serialised ModelInferRequest
    with Client(port) as client:
        scores = client.scores(raw)
    cell = measure(port, [raw, ...], rows, budget)    # p50/p99 per call, rows/s (as measure_path over HTTP)
    cell = saturate(port, [raw, ...], 4, duration=1.0, warmup=0.5)

The client is as thin as gRPC's Python API allows, so that it measures the server: one channel (one HTTP/2
connection, opened before the warm-up and kept for the whole cell), a unary-unary call with no serialiser
(prebuilt request bytes out, answer bytes in, parsed only for the check before timing), the synchronous stub
for the closed loop, grpc.aio with N calls in flight on the same channel for the saturated rate. Its own CPU per
request is still several times the raw HTTP client's (command.py reports both, measured the same way).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from scripts.bench.measure import Budget, stats, timed
from scripts.clients.http import HOST
from scripts.clients.v2 import grpc_scores
from service.grpc.messages import SERVICE

METHOD = f"/{SERVICE}/ModelInfer"
OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
TIMEOUT_S = 30.0


class Client:
    """One insecure channel to 127.0.0.1:port and its ModelInfer call (bytes in, bytes out)."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"{HOST}:{port}", options=OPTIONS)
        self.call = self.channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()

    def infer(self, raw: bytes) -> bytes:
        try:
            return self.call(raw, timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            raise RuntimeError(f"gRPC ModelInfer: {exc.code().name}: {exc.details()}") from None

    def scores(self, raw: bytes) -> np.ndarray:
        return grpc_scores(self.infer(raw))


def measure(port: int, reqs: list[bytes], rows: int, budget: Budget) -> dict:
    """Closed loop on one channel, one call at a time (as measure_path's keep-alive connection over HTTP)."""
    with Client(port) as client:
        if len(got := client.scores(reqs[0])) != rows:
            raise RuntimeError(f"port {port}, batch {rows}: {len(got)} scores over gRPC")
        cell = stats(*timed(client.infer, reqs, budget), rows)
    cell["request_bytes"] = round(sum(map(len, reqs)) / len(reqs))
    return cell


def saturate(port: int, requests: list[bytes], in_flight: int, duration: float, warmup: float) -> dict:
    """`in_flight` calls outstanding on one channel (HTTP/2 streams), each followed by the next as soon as it
    answers; counts calls finished in `duration` s after `warmup` s (the same figures as saturate.saturate)."""
    return asyncio.run(_saturate(port, requests, in_flight, duration, warmup))


async def _saturate(port: int, requests: list[bytes], in_flight: int, duration: float, warmup: float) -> dict:
    clock = time.perf_counter
    lat: list[float] = []
    async with grpc.aio.insecure_channel(f"{HOST}:{port}", options=OPTIONS) as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        await call(requests[0], timeout=TIMEOUT_S)  # connected before the clock starts
        t0 = clock() + warmup
        stop = t0 + duration

        async def loop(k: int) -> None:
            while (sent := clock()) < stop:
                await call(requests[k % len(requests)], timeout=TIMEOUT_S)
                if sent >= t0 and (now := clock()) <= stop:
                    lat.append(now - sent)
                k += in_flight

        try:
            await asyncio.gather(*(loop(k) for k in range(in_flight)))
        except grpc.aio.AioRpcError as exc:
            raise RuntimeError(f"saturation over gRPC: {exc.code().name}: {exc.details()}") from None
    ms = 1000 * np.array(lat or [0.0])
    return {
        "connections": in_flight,
        "requests": len(lat),
        "requests_per_s": round(len(lat) / duration, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }
