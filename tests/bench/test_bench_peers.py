"""scripts/bench/peers/ (command.py) and its Triton and KServe peers. The service's gRPC route runs for real (the same
process as its HTTP route): the bench's requests, as ModelInferRequests, score as over HTTP and answer the timed
loops. The Triton half runs for real too (`make test` installs the PyPI wheel's tritonserver): the bench's own
requests score the same on the service and on every Triton variant, over HTTP and Triton's gRPC port, and each
answers the timed loop. KServe's environment is never installed in CI: its command and pins are checked here, the
real run is `apg bench peers` (docs/PERFORMANCE.md)."""

from __future__ import annotations

import os
from functools import partial
from importlib import metadata

import orjson
import pytest
from synthetic_bundle import build_bundle

from features import RowSampler, read_schema
from scripts.bench.measure import Budget, measure_path
from scripts.bench.peers import command as peers
from scripts.bench.peers import grpc_io, kserve_peer, triton_peer
from scripts.bench.peers import report as peers_report
from scripts.cli import build_parser
from scripts.clients.launch import Servers, free_port, serve_command
from service.grpc.messages import ModelInferRequest

TINY = Budget(0.2, 20, 0.1)


def test_bench_requests_send_every_single_valued_feature_as_a_b_by_1_tensor(tmp_path):
    schema, name = read_schema(build_bundle(tmp_path / "bundle").path)
    requests = peers.bench_requests(RowSampler(schema, seed=0), name, [3])
    raw = requests["http"][3][0]
    assert raw.startswith(f"POST /v2/models/{name}/infer HTTP/1.1\r\n".encode())
    tensors = orjson.loads(raw.split(b"\r\n\r\n", 1)[1])["inputs"]
    assert {t["name"] for t in tensors} == set(RowSampler(schema).features)
    assert all(t["shape"] == [3, 1] and len(t["data"]) == 3 for t in tensors)
    grpc_request = ModelInferRequest.FromString(requests["grpc"][3][0])
    assert grpc_request.model_name == name
    assert [(t.name, t.datatype, list(t.shape)) for t in grpc_request.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in tensors
    ]


@pytest.mark.slow
def test_service_grpc_route_scores_like_http_and_answers_the_timed_loops(tmp_path):
    bundle = build_bundle(tmp_path / "bundle")
    schema, name = read_schema(bundle.path)
    requests = peers.bench_requests(RowSampler(schema, seed=0), name, [1, 64])
    grpc_port = free_port()
    with Servers(tmp_path / "logs") as servers:
        svc = servers.start("service", partial(serve_command, bundle.path, grpc_port=grpc_port), peers.server_env())
        servers.wait_ready()
        routes = {
            "service": peers.Route(svc.port, metrics=(svc.port, "/v2/models/{name}/infer")),
            "service-grpc": peers.Route(grpc_port, True, (svc.port, grpc_io.METHOD)),
        }
        diffs = peers.compare(routes, requests)
        closed = peers.closed_cell(routes["service-grpc"], requests["grpc"][64], 64, TINY)
        saturated = peers.saturated_cell(routes["service-grpc"], requests["grpc"][1], 3, TINY)
    assert set(diffs) == {"service", "service-grpc"} and max(diffs["service-grpc"].values()) <= 1e-6
    assert closed["calls"] >= 5 and closed["rows_per_s"] > 0 and closed["client_cpu_us"] > 0
    assert closed["stages"]["request"] > 0 and "parse" in closed["stages"]  # counted under the gRPC method
    assert saturated["connections"] == 3 and saturated["requests"] > 0 and saturated["client_cpu_us"] > 0


def test_bench_requests_send_the_same_rows_over_both_protocols(tmp_path):
    from service.grpc.convert import v2_header
    from service.tensors import decode_inputs

    schema, name = read_schema(build_bundle(tmp_path / "bundle").path)
    requests = peers.bench_requests(RowSampler(schema, seed=0), name, [1, 1024])
    assert [len(requests["http"][b]) for b in (1, 1024)] == [len(requests["grpc"][b]) for b in (1, 1024)] == [16, 8]
    for b in (1, 1024):
        for raw, grpc_request in zip(requests["http"][b], requests["grpc"][b], strict=True):
            over_http = decode_inputs(orjson.loads(raw.split(b"\r\n\r\n", 1)[1]), b"", 4096)
            over_grpc = decode_inputs(*v2_header(ModelInferRequest.FromString(grpc_request)), 4096)
            assert over_grpc[1] == over_http[1] == b
            assert {k: list(v) for k, v in over_grpc[0].items()} == {k: list(v) for k, v in over_http[0].items()}


def test_targets_cover_both_routes_against_kserve_and_the_one_step_triton():
    rates = {"service": 300, "service-grpc": 200, "kserve": 180, "triton-batching": 250, "triton-no-batching": 350}
    rates |= {"triton-batching-grpc": 150, "triton-no-batching-grpc": 210}
    closed = {n: {b: {"rows_per_s": r * int(b)} for b in ("1", "1024")} for n, r in rates.items()}
    saturated = {"connections": 4, **{n: {"requests_per_s": r} for n, r in rates.items()}}
    table = "\n".join(peers_report.targets({"closed_loop": closed, "saturated": saturated}))
    assert "| service >= 1.3x kserve at batch 1 | 1.67x | yes |" in table
    assert "| service-grpc >= 1.3x kserve at batch 1 | 1.11x | **no** |" in table
    assert "| service-grpc ahead of triton-batching-grpc at batch 1024 | 1.33x | yes |" in table
    assert "| service-grpc ahead of triton-no-batching-grpc at batch 1, 4 in flight | 0.95x | **no** |" in table
    assert table.count("| service ") == table.count("| service-grpc ") == 2 + 2 * 2 + 2  # batch 1 and 1024


def test_apg_bench_peers_is_a_subcommand_of_apg_bench():
    args = build_parser().parse_args(["bench", "peers", "--bundle", "b", "--rounds", "2"])
    assert args.apg_handler.run == "scripts.bench.peers.command:run_from_args"
    assert (args.bundle, args.rounds) == ("b", 2)
    args = build_parser().parse_args(["bench", "--quick"])
    assert args.apg_handler.run == "scripts.bench.harness:run_from_args" and args.quick


def test_write_section_replaces_its_own_section_only(tmp_path):
    begin, end = peers_report.PEERS_BEGIN, peers_report.PEERS_END
    path = tmp_path / "PERFORMANCE.md"
    path.write_text("# Performance\n\nthe bench's tables\n")
    peers_report.write_section(path, f"{begin}\nfirst\n{end}\n")
    peers_report.write_section(path, f"{begin}\nsecond\n{end}\n")
    text = path.read_text()
    assert text == f"# Performance\n\nthe bench's tables\n\n{begin}\nsecond\n{end}\n"


def test_kserve_peer_pins_kserve_and_this_environment(tmp_path):
    reqs = kserve_peer.requirements()
    assert reqs[0] == "kserve==0.21.0" and f"onnxruntime=={metadata.version('onnxruntime')}" in reqs
    argv = kserve_peer.command(_venv(tmp_path), tmp_path / "b", "m", 18080)
    assert argv[1:4] == ["-m", "scripts.bench.peers.kserve_model", "--bundle"] and "--http_port" in argv
    assert argv[argv.index("--enable_grpc") + 1] == "false" and argv[argv.index("--workers") + 1] == "1"
    with pytest.raises(FileNotFoundError, match="python -m scripts.bench.peers.kserve_peer setup"):
        kserve_peer.require_venv(tmp_path / "nowhere")


@pytest.mark.slow
def test_triton_peers_score_the_bench_requests_like_the_service(tmp_path):
    bundle = build_bundle(tmp_path / "bundle")
    schema, name = read_schema(bundle.path)
    requests = peers.bench_requests(RowSampler(schema, seed=0), name, [1, 64])
    with Servers(tmp_path / "logs") as servers:
        servers.start("service", partial(serve_command, bundle.path), peers.server_env())
        doc = triton_peer.start(servers, bundle.path, tmp_path / "triton", dict(os.environ))
        servers.wait_ready()
        routes = {n: peers.Route(s.port) for n, s in servers.servers.items()}
        routes |= {g: peers.Route(doc["variants"][t]["grpc_port"], True) for g, t in triton_peer.GRPC.items()}
        diffs = peers.compare(routes, requests)
        cell, _ = measure_path(routes["triton-batching"].port, requests["http"][64], 64, TINY, None)
        grpc_cell = grpc_io.measure(routes["triton-batching-grpc"].port, requests["grpc"][64], 64, TINY)
    assert set(diffs) == {"service", *triton_peer.VARIANTS, *triton_peer.GRPC}
    assert max(max(d.values()) for d in diffs.values()) <= 1e-6
    assert cell["calls"] >= 5 and cell["rows_per_s"] > 0 and grpc_cell["calls"] >= 5 and grpc_cell["rows_per_s"] > 0
    assert doc["installed"].startswith("nvidia-pytriton==0.7.0")
    assert [v["dynamic_batching"] for v in doc["variants"].values()] == [True, False, True]
    configs = {n: (tmp_path / "triton" / n / name / "config.pbtxt").read_text() for n in triton_peer.VARIANTS}
    assert "dynamic_batching" in configs["triton-batching"] and "dynamic_batching" not in configs["triton-no-batching"]


def _venv(tmp_path):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    return tmp_path / "venv"
