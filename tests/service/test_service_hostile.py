"""Hostile and unlucky clients against a real uvicorn on 127.0.0.1 (issue 13): each test replays one attack with raw
sockets or a plain client, bounded in time (socket timeouts, polled waits with a deadline), and asserts on what the
server answered and counted, never on how fast."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from http.client import HTTPConnection

import pytest
from live_server import http, uvicorn_thread, wait_for
from service_testing import make_app
from synthetic_bundle import ROWS

from service.server import uvicorn_options

LIMITS = {"max_concurrency": 1, "max_queue": 2}  # admission takes 3 scoring requests
BODY_TIMEOUT_S = 3.0  # long enough for a normal request to be answered while the stalled ones wait
SOCKET_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def server(bundle):
    """(app, host:port): one server for the module; tests compare counters before and after."""
    app = make_app(bundle.path, **LIMITS, body_timeout_s=BODY_TIMEOUT_S)
    with uvicorn_thread(app, **uvicorn_options(app.state.services.settings)) as address:  # as `apg serve` runs it
        yield app, address


def sample(app, name: str, labels: dict | None = None) -> float:
    return app.state.services.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def answered(app, code: int, route: str = "/score") -> float:
    return sample(app, "apg_requests_total", {"route": route, "code": str(code)})


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)


def start_upload(address: str, length: int, sent: bytes, path: str = "/score") -> socket.socket:
    """A POST announcing `length` body bytes of which only `sent` go out (the rest: never, or later)."""
    s = connect(address)
    head = f"POST {path} HTTP/1.1\r\nHost: apg.test\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {length}\r\n\r\n"
    s.sendall(head.encode() + sent)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the socket timeout)."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_stalled_uploads_hold_no_admission_place_and_get_408(server):
    # More stalled uploads than admission takes: a normal request is still scored, and each stalled one is
    # answered 408 once APG_BODY_TIMEOUT_S has passed, and its connection closed.
    app, address = server
    before = answered(app, 408)
    stalled = [start_upload(address, 1000, b'{"instances": [') for _ in range(app.state.services.admission.limit + 2)]
    try:
        wait_for(lambda: sample(app, "apg_inflight_requests") >= len(stalled), 10, what="the uploads to be in flight")
        status, _ = http("POST", f"http://{address}/score", {"instances": ROWS[:1]}, timeout=SOCKET_TIMEOUT_S)
        assert status == 200
        assert answered(app, 408) == before, "the stalled uploads were answered before the normal request"
        answers = [read_until_closed(s) for s in stalled]
    finally:
        for s in stalled:
            s.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"code":"request_timeout"' in answer and b"APG_BODY_TIMEOUT_S" in answer
    assert answered(app, 408) - before == len(stalled)
    assert app.state.services.admission.in_progress == 0


@contextlib.contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """The ERROR records of the service's loggers while the block runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("apg")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_a_client_leaving_mid_upload_is_a_499_not_an_error_of_ours(server):
    app, address = server
    before = {code: answered(app, code) for code in (499, 500)}
    with errors_logged() as errors:
        upload = start_upload(address, 1000, b'{"instances": [')
        wait_for(lambda: sample(app, "apg_inflight_requests") >= 1, 10, what="the upload to be in flight")
        upload.close()
        wait_for(lambda: answered(app, 499) > before[499], 10, what="the 499 to be counted")
    assert answered(app, 499) - before[499] == 1
    assert answered(app, 500) == before[500]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("size", [9_000_000, 64_000_000])
def test_a_plain_client_posting_too_large_a_body_reads_the_413(server, size):
    # http.client sends the whole body before it reads: the server reads (and drops) it, then answers and closes.
    app, address = server
    connection = HTTPConnection(*address.split(":"), timeout=SOCKET_TIMEOUT_S)
    try:
        connection.request("POST", "/score", body=b" " * size, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413 and response.getheader("connection") == "close"
    assert body["error"]["code"] == "payload_too_large" and f"body of {size} bytes" in body["error"]["message"]


def test_too_large_a_streamed_body_is_413_for_urllib_and_chunked_uploads(server):
    app, address = server
    status, body = http("POST", f"http://{address}/score", b" " * 9_000_000, timeout=SOCKET_TIMEOUT_S)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    connection = HTTPConnection(*address.split(":"), timeout=SOCKET_TIMEOUT_S)
    try:
        chunks = (b" " * 1_000_000 for _ in range(16))  # no Content-Length: chunked
        connection.request("POST", "/score", body=chunks, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 413 and body["error"]["message"].startswith("body larger than the limit")


def livez(address: str) -> int:
    return http("GET", f"http://{address}/livez", timeout=SOCKET_TIMEOUT_S)[0]


def send_head(address: str, head: bytes) -> bytes:
    """Send a request head (as much of it as the server takes) and return what it answers; b"" if it reset."""
    with connect(address) as s:
        try:
            s.sendall(head)
            return read_until_closed(s)
        except (ConnectionResetError, BrokenPipeError):
            return b""


def test_a_huge_header_is_refused_early_and_livez_answers_meanwhile(server):
    # 1 MB in one header field, sent from a thread while /livez is asked: the server stops reading after
    # APG_MAX_HEADER_BYTES and one socket read, answers 431 and closes (a client still sending may see a reset).
    app, address = server
    head = b"GET /livez HTTP/1.1\r\nHost: apg.test\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(send_head, address, head)
        assert livez(address) == 200
        refused = answer.result(timeout=SOCKET_TIMEOUT_S)
    assert refused == b"" or refused.startswith(b"HTTP/1.1 431 "), refused[:200]
    assert livez(address) == 200


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ([b"X-Big: " + b"a" * 20_000], 431),  # complete, in one read: checked exactly
        ([b"X-%d: v" % i for i in range(101)], 431),
        ([b"X-%d: v" % i for i in range(90)] + [b"X-Big: " + b"a" * 10_000], 200),
    ],
    ids=["20KB-field", "101-fields", "90-fields-10KB"],
)
def test_header_limits_431(server, fields, code):
    app, address = server
    head = b"\r\n".join([b"GET /livez HTTP/1.1", b"Host: apg.test", b"Connection: close", *fields]) + b"\r\n\r\n"
    answer = send_head(address, head)
    assert answer.startswith(b"HTTP/1.1 %d " % code), answer[:200]
    if code == 431:
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "header_fields_too_large" and "APG_MAX_HEADER" in body["error"]["message"]
