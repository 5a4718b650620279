"""Connection hygiene (issue 25, service/connections.py): a request head is awaited on a deadline, open connections are
capped, and at the cap the connection that waited longest for a head makes room, so probes always get in. Real uvicorn
on 127.0.0.1; every socket has a timeout and every wait a deadline; assertions are on answers and counters."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time

import pytest
from live_server import REPO, free_port, http, stop, uvicorn_thread, wait_for
from service_testing import make_app
from synthetic_bundle import build_bundle
from test_service_hostile import read_until_closed, start_upload

from service.server import uvicorn_options

HEAD_TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 10.0


def closed_count(app, reason: str) -> float:
    labels = {"reason": reason}
    return app.state.services.metrics.registry.get_sample_value("apg_connections_closed_total", labels) or 0.0


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)


@pytest.fixture
def server(bundle):
    def start(**settings):
        app = make_app(bundle.path, **{"head_timeout_s": HEAD_TIMEOUT_S, "body_timeout_s": 5, **settings})
        return app, uvicorn_thread(app, **uvicorn_options(app.state.services.settings))

    return start


def test_a_connection_that_sends_no_head_is_closed_at_the_deadline(server):
    app, running = server()
    with running as address, connect(address) as idle, connect(address) as partial:
        partial.sendall(b"GET /livez HTTP/1.1\r\nHost: apg.test\r\n")  # a head that never ends
        assert read_until_closed(idle) == b""  # closed without a word: nothing was asked
        answer = read_until_closed(partial)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"APG_HEAD_TIMEOUT_S" in answer, answer[:300]
        assert closed_count(app, "head_timeout") == 2
        assert http("GET", f"http://{address}/livez")[0] == 200


def test_the_deadline_runs_again_between_keep_alive_requests_but_never_during_one(server):
    app, running = server()
    with running as address, connect(address) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: apg.test\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(HEAD_TIMEOUT_S / 2)  # within the deadline: the connection still serves
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: apg.test\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert read_until_closed(s) == b""  # then idle past the deadline: closed
    # a request slower than the deadline (its body takes 3 deadlines to arrive) is answered, not cut
    with server()[1] as address:
        upload = start_upload(address, 2, b"{")
        time.sleep(3 * HEAD_TIMEOUT_S)
        upload.sendall(b"}")
        assert read_until_closed(upload).startswith(b"HTTP/1.1 400 ")  # answered; closed at the next deadline
        upload.close()


def test_at_the_cap_the_longest_waiting_connection_makes_room(server):
    app, running = server(max_connections=3, head_timeout_s=30)
    with running as address:
        idle = [connect(address) for _ in range(3)]
        wait_for(lambda: app.state.services.connections.open == 3, 5, interval=0.02, what="three open connections")
        assert http("GET", f"http://{address}/livez")[0] == 200  # a fourth: the oldest idle one goes
        assert read_until_closed(idle[0]) == b""
        assert closed_count(app, "evicted") == 1
        for s in idle:
            s.close()


def test_at_the_cap_with_every_connection_in_a_request_the_new_one_is_refused(server):
    app, running = server(max_connections=2, head_timeout_s=30)
    with running as address:
        uploads = [start_upload(address, 100, b"{") for _ in range(2)]  # in a request: never evicted
        wait_for(lambda: sample_inflight(app) == 2, 5, interval=0.02, what="two requests in flight")
        with connect(address) as refused:
            assert read_until_closed(refused) == b""
        assert closed_count(app, "refused") == 1 and closed_count(app, "evicted") == 0
        for upload in uploads:
            upload.sendall(b"}" + b" " * 98)
            assert upload.recv(65536).startswith(b"HTTP/1.1 400 ")  # both answered
            upload.close()


def sample_inflight(app) -> float:
    return app.state.services.metrics.registry.get_sample_value("apg_inflight_requests") or 0.0


# ---------------------------------------------------------------- the attack of issue 25, in a real process

IDLE, SLOWLORIS, NOFILE = 1100, 100, 1024
ATTACK_HEAD_TIMEOUT_S = 4.0
PROBE_LIMIT_S = 1.0


def metric(url: str, name: str) -> float:
    text = http("GET", f"{url}/metrics", timeout=SOCKET_TIMEOUT_S)[1].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.slow
def test_idle_and_slowloris_sockets_at_nofile_1024_never_lock_probes_out(tmp_path):
    bundle = build_bundle(tmp_path / "bundle", version="v1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"APG_WARMUP_BATCH_SIZES": "1", "APG_DRAIN_GRACE_S": "0", "APG_HEAD_TIMEOUT_S": str(ATTACK_HEAD_TIMEOUT_S)}
    limit = (NOFILE, NOFILE)  # soft and hard: `ulimit -n 1024`, so raising it to the hard limit gains nothing
    cmd = [sys.executable, "-m", "service", "--bundle", str(bundle.path), "--port", str(port)]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=out,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit),
        )
    sockets: list[socket.socket] = []
    try:
        wait_for(lambda: http("GET", f"{url}/readyz")[0] == 200, 90, what="readiness")
        probes: list[tuple[int, float]] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                t = time.monotonic()
                try:
                    status = http("GET", f"{url}/livez", timeout=5)[0]
                except OSError:
                    status = 0
                probes.append((status, time.monotonic() - t))
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            for _ in range(IDLE):
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S))
            slow = [socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) for _ in range(SLOWLORIS)]
            sockets += slow
            deadline = time.monotonic() + ATTACK_HEAD_TIMEOUT_S + 3
            for s in slow:
                s.sendall(b"GET /livez HTTP/1.1\r\nHost: apg.test\r\n")
            while time.monotonic() < deadline:  # one header line every 0.5 s from each: a head that never ends
                for s in slow:
                    try:
                        s.sendall(b"X-a: b\r\n")
                    except OSError:
                        pass
                time.sleep(0.5)
        finally:
            done.set()
            prober.join(30)
        assert proc.poll() is None, log.read_text()[-3000:]
        slow_probes = [(s, round(t, 3)) for s, t in probes if s != 200 or t > PROBE_LIMIT_S]
        assert len(probes) >= 20 and not slow_probes, slow_probes[:20]
        evicted, timed_out = metric(url, 'apg_connections_closed_total{reason="evicted"}'), 0.0
        timed_out = metric(url, 'apg_connections_closed_total{reason="head_timeout"}')
        print(
            f"probes {len(probes)}, worst {max(t for _, t in probes):.3f} s; evicted {evicted:.0f},"
            f" head_timeout {timed_out:.0f}"
        )
        assert evicted >= IDLE + SLOWLORIS - NOFILE and timed_out > 0
    finally:
        for s in sockets:
            s.close()
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
