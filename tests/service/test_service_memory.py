"""Memory in transit (issue 25, service/admission.py BodyBudget): request-body bytes a worker holds are bounded by
APG_MAX_INFLIGHT_BODY_BYTES, a body beyond is refused before it is read (503 + Retry-After), and the memory of a burst
goes back. A real `python -m service` on 127.0.0.1; its RSS read from /proc/<pid>/status."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest
from live_server import REPO, free_port, http, stop, uvicorn_thread, wait_for
from service_testing import make_app
from synthetic_bundle import ROWS, build_bundle
from test_service_hostile import start_upload

from service.server import uvicorn_options

UPLOADS, BODY_BYTES = 150, 8_000_000
MB = 1 << 20


def rss(pid: int, field: str = "VmRSS") -> int:
    """Bytes of /proc/<pid>/status `field` (VmRSS now, VmHWM the peak since start or since the peak was reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def big_body() -> bytes:
    """A valid /score body of about BODY_BYTES: rows with a long zip code (parsed, encoded and scored)."""
    row = {**ROWS[0], "zip_code": "5" * 2000}
    rows = BODY_BYTES // len(json.dumps(row))
    return json.dumps({"instances": [row] * rows}).encode()


def upload(port: int, body: bytes, together: threading.Barrier | None = None) -> tuple[int, bytes, str | None]:
    """POST the whole body, then read the answer: (status, body, Retry-After). With `together`, the last byte goes
    only once every upload of the barrier has sent the rest: all of them are in transit at once."""
    connection = HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("POST", "/score")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        connection.send(body[:-1])
        if together is not None:
            try:
                together.wait(60)
            except threading.BrokenBarrierError:
                pass
        connection.send(body[-1:])
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("retry-after")
    except OSError as exc:
        return 0, str(exc).encode(), None
    finally:
        connection.close()


def test_a_body_that_would_exceed_the_budget_is_refused_before_it_is_read(bundle):
    app = make_app(bundle.path, max_body_bytes=4096, max_inflight_body_bytes=4096, body_timeout_s=5)
    budget = app.state.services.bodies
    with uvicorn_thread(app, **uvicorn_options(app.state.services.settings)) as address:
        holder = start_upload(address, 3000, b'{"instances": [')  # 3,000 bytes taken, its body on its way
        wait_for(lambda: budget.held == 3000, 5, interval=0.02, what="the first body to be held")
        declared = start_upload(address, 3000, b" " * 3000)  # does not fit: read on, dropped, refused
        answer = declared.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower(), answer[:300]
        assert b"APG_MAX_INFLIGHT_BODY_BYTES" in answer and budget.held == 3000
        declared.close()
        holder.sendall(b" " * 2985)  # the first body completes: answered (400: no rows), and its bytes given back
        assert holder.recv(65536).startswith(b"HTTP/1.1 400 ")
        holder.close()
        wait_for(lambda: budget.held == 0, 5, interval=0.02, what="the budget to be given back")
        status, _ = http("POST", f"http://{address}/score", {"instances": ROWS[:1]})
        assert status == 200 and budget.held == 0


def test_a_chunked_body_takes_its_chunks_and_is_refused_where_the_budget_runs_out(bundle):
    app = make_app(bundle.path, max_body_bytes=4096, max_inflight_body_bytes=4096, body_timeout_s=5)
    budget = app.state.services.bodies
    with uvicorn_thread(app, **uvicorn_options(app.state.services.settings)) as address:
        holder = start_upload(address, 3000, b"{")
        wait_for(lambda: budget.held == 3000, 5, interval=0.02, what="the first body to be held")
        host, port = address.split(":")
        head = b"POST /score HTTP/1.1\r\nHost: apg.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(head + b"400\r\n" + b" " * 0x400 + b"\r\n")  # 1,024 bytes: fit (1,096 left)
            s.sendall(b"400\r\n" + b" " * 0x400 + b"\r\n0\r\n\r\n")  # 1,024 more: do not
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"the rest of this body" in answer, answer[:300]
        assert budget.held == 3000
        holder.close()
        wait_for(lambda: budget.held == 0, 5, interval=0.02, what="the budget to be given back")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc")
def test_concurrent_large_uploads_are_bounded_and_their_memory_returns(tmp_path):
    bundle = build_bundle(tmp_path / "bundle", version="v1")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"APG_WARMUP_BATCH_SIZES": "1", "APG_DRAIN_GRACE_S": "0", "APG_LOG_LEVEL": "warning"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        cmd = [sys.executable, "-m", "service", "--bundle", str(bundle.path), "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200, 90, what="readiness")
        body = big_body()
        assert upload(port, body)[0] == 200  # one alone is scored (and its first-time allocations are made)
        time.sleep(1)
        start = rss(proc.pid)
        peak, stop_watch = [start], threading.Event()

        def watch() -> None:  # the peak, polled (VmHWM would also count the start-up's own peak)
            while not stop_watch.is_set():
                peak.append(rss(proc.pid))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            together = threading.Barrier(UPLOADS)
            with concurrent.futures.ThreadPoolExecutor(UPLOADS) as pool:
                answers = list(pool.map(lambda _: upload(port, body, together), range(UPLOADS)))
        finally:
            stop_watch.set()
            watcher.join(10)
        time.sleep(10)
        after = rss(proc.pid)
        codes = [status for status, _, _ in answers]
        refused = [(b, retry) for status, b, retry in answers if status == 503]
        growth, left = (max(peak) - start) / MB, (after - start) / MB
        print(
            f"start {start / MB:.0f} MB, peak +{growth:.0f} MB, 10 s later {left:+.0f} MB;"
            f" {codes.count(200)} scored, {len(refused)} refused"
        )
        assert set(codes) <= {200, 503}, sorted(set(codes))
        assert codes.count(200) >= 8 and refused  # 64 MiB hold 8 bodies at once
        for answer, retry in refused:
            error = json.loads(answer)["error"]
            assert error["code"] == "overloaded" and "APG_MAX_INFLIGHT_BODY_BYTES" in error["message"] and retry == "1"
        assert growth <= 400, f"peak RSS growth {growth:.0f} MB"
        assert left <= 100, f"RSS 10 s after the burst: {left:+.0f} MB"
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
