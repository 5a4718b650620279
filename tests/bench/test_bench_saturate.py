"""scripts/bench/saturate.py: the saturating client against real localhost servers (no timing assertions)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scripts.bench.saturate import bare_command, saturate
from scripts.clients.http import build_request
from scripts.clients.launch import Servers
from scripts.loadtest.latency_report import summarise
from scripts.loadtest.raw_engine import open_loop
from scripts.loadtest.records import LoadConfig


def test_saturate_counts_answers_from_the_bare_server(tmp_path, bundle_dir):
    with Servers(tmp_path / "logs") as servers:
        bare = servers.start("bare", bare_command, dict(os.environ))
        onnx = servers.start("bare-onnx", lambda port: bare_command(port, bundle=bundle_dir), dict(os.environ))
        servers.wait_ready()
        raws = [build_request("/score", b'{"inputs": {}}'), build_request("/x", b"{}")]
        for server in (bare, onnx):
            cell = saturate(server.port, raws, connections=3, duration=0.3, warmup=0.1)
            assert cell["connections"] == 3 and cell["requests"] > 3  # every connection answered, repeatedly
            assert cell["requests_per_s"] > 0 and cell["p99_ms"] >= cell["p50_ms"] > 0


def test_a_non_200_answer_stops_the_measurement(slow_server):
    server = slow_server(delay=0.0, status=503)
    with pytest.raises(RuntimeError, match="HTTP 503"):
        saturate(server.port, [build_request("/score", b"{}")], connections=2, duration=0.2, warmup=0.0)


def test_open_loop_counts_the_wait_for_a_busy_server(slow_server):
    # The server answers one request per 50 ms (20/s); 40/s are offered on 4 connections for 0.5 s. Requests must
    # leave on schedule while a connection is free and queue when none is, and every latency runs from the
    # scheduled time, so it includes that queueing (no coordinated omission).
    server = slow_server(delay=0.05)
    schedule = np.arange(20) / 40.0
    rec = open_loop("127.0.0.1", server.port, [build_request("/score", b"{}")], schedule, connections=4, drain=3.0)
    assert (rec.status == 200).all() and rec.error == [None] * 20
    assert (rec.sent >= rec.scheduled - 1e-9).all() and (rec.done > rec.sent).all()
    waited = rec.sent - rec.scheduled
    assert waited[-1] > 0.1  # the last ones waited for a connection: 20 requests cannot finish in 0.5 s at 20/s
    latency = rec.done - rec.scheduled
    assert latency[-1] > 0.5 and (latency >= rec.done - rec.sent).all()
    summary = summarise(rec, LoadConfig(url="http://127.0.0.1", rate=40, duration=0.5))
    assert summary["achieved_rate"] < 40  # reported as achieved, not as offered


def test_open_loop_records_errors(slow_server):
    server = slow_server(delay=0.0, status=500)
    rec = open_loop("127.0.0.1", server.port, [build_request("/score", b"{}")], np.arange(3) / 100, 2, drain=2.0)
    assert list(rec.status) == [500] * 3 and rec.error == ["http_500"] * 3
