"""scripts/bench/peers.py and its Triton and KServe peers. The Triton half runs for real (`make test` installs the
PyPI wheel's tritonserver): the bench's own requests score the same on the service and on both Triton variants,
and each answers the timed loop. KServe's environment is never installed in CI: its command and pins are checked
here, the real run is `python -m scripts.bench.peers` (docs/PERFORMANCE.md)."""

from __future__ import annotations

import os
from functools import partial
from importlib import metadata

import orjson
import pytest
from synthetic_bundle import build_bundle

from features import RowSampler, read_schema
from scripts.bench import kserve_peer, peers, triton_peer
from scripts.bench.http_io import Servers, build_request, service_command
from scripts.bench.measure import Budget, measure_path


def test_v2_body_sends_every_feature_as_a_b_by_1_tensor():
    rows = [{"user_id": "196", "age": 49, "genres": ["Comedy", "Drama"]}, {"user_id": 7, "age": 25.5, "genres": "War"}]
    body = orjson.loads(peers.v2_body(rows, {"age"}))
    assert body["inputs"] == [
        {"name": "user_id", "shape": [2, 1], "datatype": "BYTES", "data": ["196", "7"]},
        {"name": "age", "shape": [2, 1], "datatype": "FP64", "data": [49.0, 25.5]},
        {"name": "genres", "shape": [2, 1], "datatype": "BYTES", "data": ["Comedy|Drama", "War"]},
    ]


def test_write_section_replaces_its_own_section_only(tmp_path):
    path = tmp_path / "PERFORMANCE.md"
    path.write_text("# Performance\n\nthe bench's tables\n")
    peers.write_section(path, f"{peers.PEERS_BEGIN}\nfirst\n{peers.PEERS_END}\n")
    peers.write_section(path, f"{peers.PEERS_BEGIN}\nsecond\n{peers.PEERS_END}\n")
    text = path.read_text()
    assert text == f"# Performance\n\nthe bench's tables\n\n{peers.PEERS_BEGIN}\nsecond\n{peers.PEERS_END}\n"


def test_kserve_peer_pins_kserve_and_this_environment(tmp_path):
    reqs = kserve_peer.requirements()
    assert reqs[0] == "kserve==0.21.0" and f"onnxruntime=={metadata.version('onnxruntime')}" in reqs
    argv = kserve_peer.command(_venv(tmp_path), tmp_path / "b", "m", 18080)
    assert argv[1:4] == ["-m", "scripts.bench.kserve_model", "--bundle"] and "--http_port" in argv
    assert argv[argv.index("--enable_grpc") + 1] == "false" and argv[argv.index("--workers") + 1] == "1"
    with pytest.raises(FileNotFoundError, match="python -m scripts.bench.kserve_peer setup"):
        kserve_peer.require_venv(tmp_path / "nowhere")


@pytest.mark.slow
def test_triton_peers_score_the_bench_requests_like_the_service(tmp_path):
    bundle = build_bundle(tmp_path / "bundle")
    schema, name = read_schema(bundle.path)
    sampler = RowSampler(schema, seed=0)
    url = f"/v2/models/{name}/infer"
    requests = {b: [build_request(url, peers.v2_body(sampler.rows(b), sampler.numeric))] for b in (1, 64)}
    with Servers(tmp_path / "logs") as servers:
        servers.start("service", partial(service_command, bundle.path), peers.server_env())
        doc = triton_peer.start(servers, bundle.path, tmp_path / "triton", dict(os.environ))
        servers.wait_ready()
        ports = {n: s.port for n, s in servers.servers.items()}
        diffs = peers.compare(ports, requests)
        cell, _ = measure_path(ports["triton-batching"], requests[64], 64, Budget(0.2, 20, 0.1), None)
    assert set(diffs) == {"service", *triton_peer.VARIANTS} and max(diffs["triton-batching"].values()) <= 1e-6
    assert cell["calls"] >= 5 and cell["rows_per_s"] > 0
    assert doc["installed"].startswith("nvidia-pytriton==0.7.0")
    assert [v["dynamic_batching"] for v in doc["variants"].values()] == [True, False, True]
    assert max(diffs["triton-ensemble"].values()) <= 1e-6
    configs = {n: (tmp_path / "triton" / n / name / "config.pbtxt").read_text() for n in triton_peer.VARIANTS}
    assert "dynamic_batching" in configs["triton-batching"] and "dynamic_batching" not in configs["triton-no-batching"]


def _venv(tmp_path):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    return tmp_path / "venv"
