"""scripts/clients/http.py (the raw client, the readiness wait) and launch.py (servers as subprocesses), against the
fake slow server and small real processes; `apg serve` itself starts in the bench's, the load tester's and the live
tests (tests/live_server.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from scripts.clients.http import Connection, NotReady, build_request, take_answer, wait_ready
from scripts.clients.launch import Servers, clean_env, free_port, serve_command
from scripts.clients.v2 import count_scores


def test_the_client_keeps_one_connection_and_reads_content_length(slow_server):
    server = slow_server(0.0)
    with Connection(server.port) as conn:
        for _ in range(3):
            status, headers, body = conn.request(build_request("/score", b'{"instances": [{}]}'))
            assert status == 200 and orjson.loads(body) == {"scores": [0.5]} and count_scores(headers, body) == 1
    posts = [r for r in server.requests if r[0] == "POST"]
    assert len(posts) == 3 and posts[0][3] == b'{"instances": [{}]}'
    assert posts[0][2]["content-type"] == "application/json"


def test_answers_are_framed_by_their_content_length():
    buf = bytearray(b"HTTP/1.1 503 X\r\nInference-Header-Content-Length: 9\r\nContent-Length: 4\r\n\r\nbody")
    buf += b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\no"
    status, head, body = take_answer(buf)
    assert (status, body) == (503, b"body") and head.startswith(b"HTTP/1.1 503")
    assert take_answer(buf) is None  # the second is not all there yet
    buf += b"k"
    assert take_answer(buf)[::2] == (200, b"ok") and buf == bytearray()
    with pytest.raises(ConnectionError, match="without Content-Length"):
        take_answer(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"))


def test_the_readiness_wait_sends_the_token_and_names_what_it_got(slow_server):
    server = slow_server(0.0)
    wait_ready(server.url, 5, token="t")
    (method, path, headers, _) = server.requests[-1]
    assert (method, path, headers["authorization"]) == ("GET", "/readyz", "Bearer t")
    with pytest.raises(NotReady, match=r"http://127.0.0.1:\d+/readyz not ready after 0.3 s \(ConnectionRefusedError\)"):
        wait_ready(f"http://127.0.0.1:{free_port()}", 0.3)
    wait_ready(server.url + "/apg/", 5)  # a service behind a path prefix: its readiness is under the prefix
    assert server.requests[-1][1] == "/apg/readyz"


def test_a_server_that_exits_is_not_waited_for(tmp_path):
    with Servers(tmp_path) as servers:
        servers.start("dies", lambda port: [sys.executable, "-c", "print('no bundle'); raise SystemExit(3)"], {})
        with pytest.raises(NotReady, match=r"exited with 3 .*its log .*dies.log\):\nno bundle"):
            servers.wait_ready(30)


def test_servers_start_on_free_ports_and_stop_together(tmp_path):
    (tmp_path / "www").mkdir()
    command = lambda port: [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]  # noqa: E731
    with Servers(tmp_path / "logs") as servers:
        one, two = (servers.start(n, command, clean_env(), ready="/", cwd=tmp_path / "www") for n in ("a", "b"))
        servers.wait_ready(30)
        assert one.port != two.port and one.url == f"http://127.0.0.1:{one.port}"
    assert one.process.returncode is not None and two.process.returncode is not None
    assert (tmp_path / "logs" / "a.log").exists()


def test_apg_serve_command_and_a_clean_environment(monkeypatch):
    argv = serve_command(Path("b"), 8001, workers=2, grpc_port=9001)
    assert argv == [sys.executable, "-m", "service", "--bundle", "b", "--host", "127.0.0.1", "--port", "8001"] + [
        "--workers",
        "2",
        "--grpc-port",
        "9001",
    ]
    monkeypatch.setenv("APG_BATCHING", "true")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/x")
    env = clean_env(APG_PROVIDERS="cpu")
    assert env["APG_PROVIDERS"] == "cpu" and "APG_BATCHING" not in env and "PROMETHEUS_MULTIPROC_DIR" not in env
