"""The whole-machine figure's parts: the parallel closed loop, and finding which process holds a connection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from scripts.bench.machine import children, listeners, owner_of, parallel, spread
from scripts.bench.measure import MIN_CALLS, Budget
from scripts.clients.http import Connection

BUDGET = Budget(duration=0.05, iterations=50, warmup=0.0)


def test_parallel_runs_every_caller_at_once_and_counts_their_rows():
    seen: list[tuple[int, int]] = []
    inside, most = [0], [0]
    lock, both = threading.Lock(), threading.Barrier(2, timeout=5)

    def caller(i: int):
        def call(item: int) -> None:
            with lock:
                seen.append((i, item))
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                first_measured = sum(1 for j, _ in seen if j == i) == 3  # after 2 warm-up calls
            if first_measured:
                both.wait()  # passes only while the other thread is inside a call too
            with lock:
                inside[0] -= 1

        return call

    cell = parallel([caller(0), caller(1)], list(range(10)), BUDGET, rows=3)
    measured = len(seen) - 4  # two warm-up calls per thread
    assert cell["threads"] == 2 and cell["calls"] == measured and cell["calls"] >= 2 * MIN_CALLS
    assert cell["rows_per_s"] == pytest.approx(3 * cell["requests_per_s"], rel=1e-3)
    assert most[0] == 2 and {i for i, _ in seen} == {0, 1}
    assert [item for i, item in seen if i == 1][0] != [item for i, item in seen if i == 0][0]  # own starting points
    assert cell["bench_process_cpu_cores"] >= 0


def test_parallel_reports_a_failing_caller():
    def boom(_):
        raise ConnectionError("server closed")

    with pytest.raises(RuntimeError, match="server closed"):
        parallel([boom, lambda _: None], [0], BUDGET, rows=1)


def test_owner_of_finds_the_process_holding_the_server_side():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with Connection(port) as conn:
            accepted, _ = listener.accept()
            with accepted:
                assert owner_of(conn, port, {os.getpid()}) == os.getpid()
                assert owner_of(conn, port, {os.getppid()}) is None


def test_children_and_which_of_them_listen():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children(os.getpid()) and os.getpid() not in children(os.getpid())
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            assert listeners(port, [child.pid, os.getpid()]) == [os.getpid()]  # the child does not hold it
    finally:
        child.kill()
        child.wait()


def test_spread_keeps_connections_one_server_accepts(slow_server):
    server = slow_server(0.0)  # one process: every connection has the same owner, it cannot do better
    port = int(server.url.rsplit(":", 1)[1])
    conns, owners = spread(port, os.getpid(), 2, busy=b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert len(conns) == 2 and owners == [os.getpid(), os.getpid()]
    finally:
        for c in conns:
            c.sock.close()
