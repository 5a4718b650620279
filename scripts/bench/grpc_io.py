"""The gRPC side of the peers bench (scripts/bench/peers.py): KServe v2 ModelInfer requests built from the very
v2 JSON bodies the HTTP servers get, scores from the answers, a closed loop and a saturated batch-1 rate.

    raw = infer_request(v2_json_body, model)          # a serialised ModelInferRequest, the same tensors
    with Client(port) as client:
        scores = client.scores(raw)
    cell = measure(port, [raw, ...], rows, budget)    # p50/p99 per call, rows/s (as measure_path over HTTP)
    cell = saturate(port, [raw, ...], 4, duration=1.0, warmup=0.5)

The client is as thin as gRPC's Python API allows, so that it measures the server: one channel (one HTTP/2
connection, opened before the warm-up and kept for the whole cell), a unary-unary call with no serialiser
(prebuilt request bytes out, answer bytes in, parsed only for the check before timing), the synchronous stub
for the closed loop, grpc.aio with N calls in flight on the same channel for the saturated rate. Its own CPU per
request is still several times the raw HTTP client's (peers.py reports both, measured the same way).
"""

from __future__ import annotations

import asyncio
import struct
import time

import grpc
import numpy as np
import orjson

from scripts.bench.http_io import HOST
from scripts.bench.measure import Budget, stats, timed
from service.grpc.messages import SERVICE, ModelInferRequest, ModelInferResponse

METHOD = f"/{SERVICE}/ModelInfer"
OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
DTYPES = {"FP32": "<f4", "FP64": "<f8"}
TIMEOUT_S = 30.0


def infer_request(body: bytes, model: str) -> bytes:
    """The v2 JSON request `body` as a ModelInferRequest for `model`: the same inputs (name, shape, datatype) with
    their values in raw_input_contents, as tritonclient.grpc sends them (FP64 little-endian; BYTES elements as
    4-byte little-endian length + UTF-8)."""
    request = ModelInferRequest(model_name=model)
    for tensor in orjson.loads(body)["inputs"]:
        request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        if tensor["datatype"] == "FP64":
            raw = np.asarray(tensor["data"], dtype="<f8").tobytes()
        else:
            raw = b"".join(struct.pack("<I", len(t)) + t for t in (str(v).encode() for v in tensor["data"]))
        request.raw_input_contents.append(raw)
    return request.SerializeToString()


def response_scores(data: bytes) -> np.ndarray:
    """The `score` output of a serialised ModelInferResponse (raw FP32 or FP64, as the service and Triton answer)."""
    response = ModelInferResponse.FromString(data)
    datatype = response.outputs[0].datatype
    return np.frombuffer(response.raw_output_contents[0], dtype=DTYPES[datatype]).astype(np.float64)


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
        return response_scores(self.infer(raw))


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
