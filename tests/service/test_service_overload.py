"""Overload (issue 13 item 5): a request refused for load must cost a fraction of one scored, so that refusing does not
eat the capacity it would take to score. While the worker is full, a scoring request is answered by the middleware
with the route's own 503, its body read and dropped, and none of the route's work done (docs/OPTIMISATIONS.md §11)."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from live_server import http, uvicorn_thread, wait_for
from service_testing import make_app, run, serving
from synthetic_bundle import ROWS
from test_service_admission import hold_model_run

from service import http as plumbing
from service.server import uvicorn_options

LIMITS = {"max_concurrency": 1, "max_queue": 2}
MODEL = "synthetic-apg"


def asgi_post(app, path: str, chunks: list[bytes], pause: asyncio.Event | None = None):
    """A POST of `chunks` (one http.request message each; the last one only once `pause` is set) for the ASGI
    interface: (scope, receive, send, the answer as it comes: status, headers, body, the body messages read)."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    read, answer = [], {}

    async def receive():
        if len(read) < len(messages):
            if pause is not None and len(read) == len(messages) - 1:
                await pause.wait()
            read.append(1)
            return messages[len(read) - 1]
        await asyncio.Event().wait()  # a client that stays

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], dict(message["headers"])
        else:
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json")],
    }
    return scope, receive, send, answer, read


@pytest.mark.parametrize("path", ["/score", f"/v2/models/{MODEL}/infer"])
def test_a_full_worker_refuses_before_the_route_with_the_routes_answer(bundle, monkeypatch, path):
    app = make_app(bundle.path, **LIMITS)
    body = orjson.dumps({"instances": ROWS})
    routed = []  # the route's work: reading the body for itself, parsing it
    for name in ("read_body", "parse_json"):
        original = getattr(plumbing, name)
        monkeypatch.setattr(plumbing, name, lambda *a, _f=original, _n=name: routed.append(_n) or _f(*a))

    async def main():
        async with serving(app):
            app.state.services.admission.in_progress = app.state.services.admission.limit  # full
            post = asgi_post(app, path, [body[:10], body[10:]])  # the body in two messages: read all, then answered
            await app(*post[:3])
            app.state.services.admission.in_progress = 0
            return post

    _, _, _, answer, read = run(main())
    assert answer["status"] == 503 and answer["headers"][b"retry-after"] == b"1"
    assert b"connection" not in answer["headers"], "a refused body read whole keeps its connection"
    assert len(read) == 2, "the refused body is read to its end (no unread rest to reset the connection)"
    assert not routed, "the route ran"
    error = orjson.loads(answer["body"])
    error = error["error"] if not path.startswith("/v2/") else {**error, "message": error["error"]}
    assert error["code"] == "overloaded" and "APG_MAX_CONCURRENCY + APG_MAX_QUEUE = 3" in error["message"]
    registry = app.state.services.metrics.registry
    route = path.replace(MODEL, "{name}")
    assert registry.get_sample_value("apg_requests_total", {"route": route, "code": "503"}) == 1


def test_the_early_answer_is_the_one_the_route_gives(bundle):
    # The same bytes whether the middleware refuses (the worker was full as the head arrived) or the gate (it filled
    # while the body arrived): one rule, one answer.
    app = make_app(bundle.path, **LIMITS)
    body = orjson.dumps({"instances": ROWS[:1]})

    async def main():
        async with serving(app):
            gate = app.state.services.admission
            gate.in_progress = gate.limit
            early = asgi_post(app, "/score", [body])
            await app(*early[:3])
            rest = asyncio.Event()
            late = asgi_post(app, "/score", [body[:5], body[5:]], pause=rest)
            gate.in_progress = 0
            task = asyncio.create_task(app(*late[:3]))
            while len(late[4]) < 1:  # the route has begun to read the body: the worker fills before the rest comes
                await asyncio.sleep(0.001)
            gate.in_progress = gate.limit
            rest.set()
            await asyncio.wait_for(task, 10)
            gate.in_progress = 0
            return early[3], late[3]

    early, late = run(main())
    assert early["status"] == late["status"] == 503
    assert early["body"] == late["body"]
    assert early["headers"][b"retry-after"] == late["headers"][b"retry-after"] == b"1"


def test_a_refused_body_over_the_limit_closes_the_connection(bundle):
    app = make_app(bundle.path, **LIMITS, max_body_bytes=1024)

    async def main():
        async with serving(app):
            app.state.services.admission.in_progress = app.state.services.admission.limit
            post = asgi_post(app, "/score", [b" " * 1000, b" " * 1000, b"{}"])
            await app(*post[:3])
            app.state.services.admission.in_progress = 0
            return post[3], post[4]

    answer, read = run(main())
    assert answer["status"] == 503 and answer["headers"][b"connection"] == b"close"
    assert len(read) == 2, "reading stops past APG_MAX_BODY_BYTES"


def read_answer(s: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP answer with a Content-Length, read from `s`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += s.recv(65536)
    return head, body


def test_over_http_a_refused_upload_reads_its_503_and_keeps_its_connection(bundle, monkeypatch):
    # A real server, full (one request held in Model.run): a plain client sending 7 MB then asking to close reads the
    # 503 (no reset: the body was read before the answer); a keep-alive client reads it and sends its next request on
    # the same connection (the refused body did not become the start of that request).
    app = make_app(bundle.path, max_concurrency=1, max_queue=0)
    with uvicorn_thread(app, **uvicorn_options(app.state.services.settings)) as address, ThreadPoolExecutor(1) as pool:
        release = hold_model_run(monkeypatch)  # after the warm-up
        held = pool.submit(http, "POST", f"http://{address}/score", {"instances": ROWS[:1]}, 20)
        try:
            wait_for(lambda: app.state.services.admission.full, 10, interval=0.01, what="the worker to be full")
            body = orjson.dumps({"instances": ROWS[:1], "pad": "x" * 7_000_000})  # more than socket buffers hold
            status, answer = http("POST", f"http://{address}/score", body, timeout=20)  # urllib: Connection: close
            assert status == 503 and orjson.loads(answer)["error"]["code"] == "overloaded"
            host, port = address.split(":")
            with socket.create_connection((host, int(port)), timeout=20) as s:
                big = b" " * 100_000
                s.sendall(
                    b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(big), big)
                )
                head, _ = read_answer(s)
                assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower()
                s.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
                head, live = read_answer(s)
                assert head.startswith(b"HTTP/1.1 200 ") and orjson.loads(live) == {"status": "live"}
        finally:
            release.set()
        assert held.result(timeout=20)[0] == 200
    registry = app.state.services.metrics.registry
    assert registry.get_sample_value("apg_requests_total", {"route": "/score", "code": "503"}) == 2
