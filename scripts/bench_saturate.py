"""A fast HTTP/1.1 client for `apg bench`: keep-alive connections driven by one selector loop (no thread per
connection, no HTTP library), so the client is not what limits the count.

    cell = saturate(port, [raw_request, ...], connections=8, duration=2.0, warmup=0.3)   # closed loop, N in flight
    rec = open_loop(port, [raw_request, ...], schedule, connections=64)                   # open loop (Records)

saturate: one closed-loop connection measures a round trip (client + loopback + server); N connections with one
request in flight each measure how many requests per second the server's core can finish. open_loop: requests
leave on a schedule (the batch-1 micro-batching sweep), latency from the scheduled time; scripts/loadtest.py's
httpx client falls behind its schedule above ~400 requests/s on one core, this one keeps up with thousands.

Two more references besides the floor and the thin app, raw ASGI apps under the same uvicorn: `bare` reads the
body and answers a constant, the HTTP stack's own ceiling on this core (nothing of FastAPI, the encoder or
onnxruntime); `bare-onnx` also runs the bundle's session on one pre-encoded row per request, the ceiling of any
Python service on this stack that parses and encodes nothing:

    python -m scripts.bench_saturate --port 8002 [--bundle bundles/default]
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time

import numpy as np

from scripts.bench_http import HOST

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
    argv = [sys.executable, "-m", "scripts.bench_saturate", "--host", HOST, "--port", str(port)]
    return argv + (["--bundle", str(bundle)] if bundle else [])


def saturate(port: int, requests: list[bytes], connections: int, duration: float, warmup: float) -> dict:
    """`connections` keep-alive connections, each sending the next of `requests` as soon as its answer is complete;
    counts answers finished in `duration` s after `warmup` s. RuntimeError on any non-200 answer."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(connections):
        s = socket.create_connection((HOST, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
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
                status = _answer(key)
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
    raw = requests[data["i"] % len(requests)]
    data["i"] += 1
    data["sent"] = now
    key.fileobj.setblocking(True)  # small requests: one sendall, then back to non-blocking reads
    key.fileobj.sendall(raw)
    key.fileobj.setblocking(False)


def _answer(key) -> int | None:
    """Reads what arrived on the connection; the HTTP status once a whole answer is in (one is in flight), else
    None."""
    chunk = key.fileobj.recv(1 << 18)
    if not chunk:
        raise RuntimeError("the server closed a connection")
    buf = key.data["buf"]
    buf += chunk
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    at = head.find(b"\r\ncontent-length:")  # (not inference-header-content-length)
    if at < 0:
        raise RuntimeError(f"answer without Content-Length: {head[:80]!r}")
    n = int(head[at + 17 :].split(b"\r\n", 1)[0])
    if len(buf) < end + 4 + n:
        return None
    key.data["last"] = bytes(buf[end + 4 : end + 4 + n])
    del buf[: end + 4 + n]
    return int(head[9:12])


def open_loop(port: int, requests: list[bytes], schedule: np.ndarray, connections: int, drain: float = 5.0):
    """Open loop: requests[i % len] leaves at schedule[i] s from the start on an idle one of `connections`
    keep-alive connections, or waits for one (the wait counts: latency runs from the scheduled time, so there is
    no coordinated omission). Polls rather than sleeps when the next send is under 1 ms away (epoll's timer is
    1 ms), so the client keeps up with several thousand requests/s on one core. Returns scripts.loadtest's Records
    (for its summarise()); requests still unanswered `drain` s after the last send are errors."""
    from collections import deque

    from scripts.loadtest import Records

    rec = Records(np.asarray(schedule, dtype=np.float64))
    sel = selectors.DefaultSelector()
    for _ in range(connections):
        s = socket.create_connection((HOST, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, {"buf": bytearray(), "req": None})
    idle, due = deque(sel.get_map().values()), deque()
    n, i, busy = len(schedule), 0, 0
    clock, start = time.perf_counter, time.perf_counter()
    deadline = (schedule[-1] if n else 0.0) + drain
    try:
        while i < n or due or busy:
            now = clock() - start
            if now > deadline:
                break
            while i < n and schedule[i] <= now:
                rec.dispatched[i] = now
                due.append(i)
                i += 1
            while due and idle:
                j, key = due.popleft(), idle.popleft()
                key.fileobj.setblocking(True)
                key.fileobj.sendall(requests[j % len(requests)])
                key.fileobj.setblocking(False)
                rec.sent[j], key.data["req"] = clock() - start, j
                busy += 1
            wait = schedule[i] - (clock() - start) if i < n else 0.05
            for key, _ in sel.select(0 if wait < 1e-3 else wait - 1e-3):
                status = _answer(key)
                if status is None:
                    continue
                j = key.data["req"]
                rec.done[j], rec.status[j] = clock() - start, status
                if status != 200:
                    rec.error[j] = f"http_{status}"
                key.data["req"] = None
                idle.append(key)
                busy -= 1
    finally:
        for key in list(sel.get_map().values()):
            if key.data["req"] is not None:
                rec.error[key.data["req"]] = "timeout"
            sel.unregister(key.fileobj)
            key.fileobj.close()
    for j in list(due) + list(range(i, n)):
        rec.error[j] = "unsent"
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_saturate", description="Serve the bare ASGI reference.")
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
    uvicorn.run(bare_app(run), host=args.host, port=args.port, loop="auto", http="auto", log_level="warning",
                access_log=False)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
