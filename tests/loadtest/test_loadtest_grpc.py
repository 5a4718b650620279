"""`apg loadtest --protocol grpc` against a live server (uvicorn in a thread, gRPC on a free port, 127.0.0.1): every
call answered, the server counting the same calls, and errors counted by their gRPC status. Bounded: 40 calls a run."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from live_server import uvicorn_thread
from prometheus_client import CollectorRegistry
from synthetic_bundle import build_bundle

from scripts.cli import main
from service.app import create_app
from service.server import uvicorn_options
from service.settings import Settings

ROUTE = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = build_bundle(tmp_path_factory.mktemp("bundles") / "v1", version="v1")
    values = {"bundle": bundle.path, "providers": "cpu", "warmup_batch_sizes": [1], "log_level": "warning"}
    settings = Settings(**values, grpc_port=0, auth_token="load-t")
    app = create_app(settings, registry=CollectorRegistry())
    with uvicorn_thread(app, **uvicorn_options(settings)) as address:
        yield f"http://{address}", app.state.grpc_port, bundle.path


def grpc_calls(url: str, code: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'apg_requests_total{{code="{code}",route="{ROUTE}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def loadtest(server, tmp_path: Path, *extra: str) -> dict:
    url, grpc_port, bundle = server
    argv = ["--url", url, "--protocol", "grpc", "--grpc-port", str(grpc_port), "--bundle", str(bundle)]
    argv += ["--rate", "40", "--duration", "1", "--warmup", "0", "--arrivals", "constant", "--rows", "4"]
    assert main(["loadtest", *argv, "--out", str(tmp_path), *extra]) == 0
    return json.loads((tmp_path / "summary.json").read_text())


def test_every_call_is_answered_and_counted_by_the_server(server, tmp_path):
    before = grpc_calls(server[0], "200")
    summary = loadtest(server, tmp_path, "--token", "load-t")
    (run,) = summary["runs"]
    assert run["requests"] == run["ok"] == 40 and run["errors"] == {} and run["rows_per_request"] == 4
    assert grpc_calls(server[0], "200") == before + 40
    assert summary["url"] == f"grpc://127.0.0.1:{server[1]}" and summary["path"] == ROUTE


def test_refused_calls_are_counted_by_status(server, tmp_path):
    before = grpc_calls(server[0], "401")
    (run,) = loadtest(server, tmp_path, "--token", "wrong")["runs"]
    assert run["ok"] == 0 and run["errors"] == {"grpc_unauthenticated": 40}
    assert grpc_calls(server[0], "401") == before + 40
