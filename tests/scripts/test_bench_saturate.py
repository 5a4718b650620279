"""scripts/bench_saturate.py: the saturating client against real localhost servers (no timing assertions)."""

from __future__ import annotations

import os

import pytest

from scripts.bench_http import Servers, build_request
from scripts.bench_saturate import bare_command, saturate


@pytest.mark.slow
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
