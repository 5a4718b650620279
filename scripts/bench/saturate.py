"""Batch-1 throughput with the server saturated, for `apg bench`: keep-alive connections driven by one selector
loop (no thread per connection, no HTTP library), so the client is not what limits the count.

    cell = saturate(port, [raw_request, ...], connections=8, duration=2.0, warmup=0.3)   # closed loop, N in flight

One closed-loop connection measures a round trip (client + loopback + server); N connections with one request in
flight each measure how many requests per second the server's core can finish. (The sockets and the framing are
scripts/clients/http.py's, as in the open-loop engine of `apg loadtest`, used by the bench's batching sweep.)

Two more references besides the floor and the thin app, raw ASGI apps under the same uvicorn: `bare` reads the
body and answers a constant, the HTTP stack's own ceiling on this core (nothing of FastAPI, the encoder or
onnxruntime); `bare-onnx` also runs the bundle's session on one pre-encoded row per request, the ceiling of any
Python service on this stack that parses and encodes nothing:

    python -m scripts.bench.saturate --port 8002 [--bundle bundles/default]
"""

from __future__ import annotations

import argparse
import selectors
import sys
import time

import numpy as np

from scripts.clients.http import HOST, connect, read_answer, send

BARE_BODY = b'{"scores":[0.5]}'


def bare_app(run=None):
    """The raw ASGI app: reads the request body, calls run() when given, answers BARE_BODY."""

    async def app(scope, receive, send) -> None:
        await _bare(scope, receive, send, run)

    return app


async def _bare(scope, receive, send, run) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    if run is not None:
        run()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BARE_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BARE_BODY})


def bare_command(port: int, bundle: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "scripts.bench.saturate", "--host", HOST, "--port", str(port)]
    return argv + (["--bundle", str(bundle)] if bundle else [])


def saturate(port: int, requests: list[bytes], connections: int, duration: float, warmup: float) -> dict:
    """`connections` keep-alive connections, each sending the next of `requests` as soon as its answer is complete;
    counts answers finished in `duration` s after `warmup` s. RuntimeError on any non-200 answer."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(connections):
        s = connect(HOST, port)
        sel.register(s, selectors.EVENT_READ, {"buf": bytearray(), "sent": 0.0, "i": len(socks)})
        socks.append(s)
    clock = time.perf_counter
    start = clock()
    t0, stop = start + warmup, start + warmup + duration
    lat: list[float] = []
    done = 0
    try:
        for key in sel.get_map().values():
            _send(key, requests, clock())
        pending = connections
        while pending:
            events = sel.select(5.0)
            if not events:
                raise RuntimeError("saturation: no answer within 5 s")
            for key, _ in events:
                now = clock()
                status = read_answer(key)
                if status is None:
                    continue
                if status != 200:
                    raise RuntimeError(f"saturation: HTTP {status}: {key.data['last'][:300]!r}")
                if key.data["sent"] >= t0 and now <= stop:
                    lat.append(now - key.data["sent"])
                    done += 1
                if now < stop:
                    _send(key, requests, now)
                else:
                    pending -= 1
    finally:
        for s in socks:
            sel.unregister(s)
            s.close()
    ms = 1000 * np.array(lat or [0.0])
    return {
        "connections": connections,
        "requests": done,
        "requests_per_s": round(done / duration, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


def _send(key, requests: list[bytes], now: float) -> None:
    data = key.data
    data["sent"] = now
    send(key, requests[data["i"] % len(requests)])
    data["i"] += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.saturate", description="Serve the bare ASGI reference.")
    p.add_argument("--host", default=HOST)
    p.add_argument("--port", type=int, default=8002)
    p.add_argument("--bundle", help="also run this bundle's session ($APG_INTRA_OP_THREADS threads) on one row")
    args = p.parse_args(argv)
    import uvicorn

    run = None
    if args.bundle:
        from service.runtime import load_model
        from service.settings import Settings

        model = load_model(args.bundle, Settings(providers="cpu"))
        feeds = model.encoder.encode_rows(model.encoder.example_rows(1))
        run = lambda: model.run(feeds)  # noqa: E731
    uvicorn.run(
        bare_app(run), host=args.host, port=args.port, loop="auto", http="auto", log_level="warning", access_log=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
