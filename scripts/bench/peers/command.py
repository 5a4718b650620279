"""Triton and KServe as measured peers of the service's v2 routes, HTTP and gRPC, in one short run (issue 15):

    bash scripts/install_triton.sh                       # .triton/: tritonserver 2.51.0 + its Python backend
    python -m scripts.bench.peers.kserve_peer setup      # .venv-kserve/: kserve 0.21.0
    apg bench peers --bundle B --markdown docs/PERFORMANCE.md     # or python -m scripts.bench.peers ...

Servers, each in its own process on a free 127.0.0.1 port, all serving bundle B under its own model name:
  service             `apg serve --grpc-port P` (1 worker, 1 onnxruntime thread, micro-batching off):
                      POST /v2/models/NAME/infer
  service-grpc        the same process over gRPC: ModelInfer on port P (service/grpc)
  triton-batching     tritonserver, the one-step Python-backend model of `apg export --triton-layout python`
  triton-no-batching  the same with dynamic batching off (scripts/bench/peers/triton_peer.py)
  triton-*-grpc       each of those two over Triton's own gRPC port
  triton-ensemble     the exported ensemble, its graph step on the Python backend too
  kserve              KServe's ModelServer with a small custom Model: the service's encoder and session
                      (scripts/bench/peers/kserve_peer.py, kserve_model.py)
Every HTTP server gets the very same KServe v2 JSON requests (one tensor per raw feature, BYTES / FP64, shape
[B, 1]: Triton's batched inputs need the trailing 1, the service's route takes [B] and [B, 1] alike; a multi-valued
list [B, K]: scripts/clients/v2.py), every gRPC one the same tensors as ModelInferRequests (in raw_input_contents;
the client: scripts/bench/peers/grpc_io.py), and
the scores of one request per batch size are checked equal to the service's over HTTP (<= 1e-6) before any
timing. Then, per batch size, a closed loop on one keep-alive connection or gRPC channel (p50/p99 per request,
rows/s, and the client's own CPU per request), and at batch 1 the saturated rate with several requests in flight
(scripts/bench/saturate.py; for gRPC as many calls on one channel), where dynamic batching can act.
--markdown replaces the section between PEERS_BEGIN and PEERS_END in the file (appends it the first time;
scripts/bench/peers/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from features import RowSampler
from scripts.bench.http_io import scrape, stage_means
from scripts.bench.measure import Budget, measure_path
from scripts.bench.peers import grpc_io, kserve_peer, triton_peer
from scripts.bench.peers.report import markdown, write_section
from scripts.bench.saturate import saturate
from scripts.clients.http import Connection, build_request
from scripts.clients.launch import Servers, clean_env, free_port, serve_command
from scripts.clients.v2 import grpc_request, json_body, json_scores, to_tensors

TOLERANCE = 1e-6
GRPC = {"service-grpc": "service", **triton_peer.GRPC}  # measured over gRPC → the process that serves it
SERVERS = (
    "service",
    "service-grpc",
    *(n for t in triton_peer.ONE_STEP for n in (t, f"{t}-grpc")),
    *(v for v in triton_peer.VARIANTS if v not in triton_peer.ONE_STEP),
    "kserve",
)


@dataclass(frozen=True)
class Route:
    """Where one measured server answers: a port, over HTTP or gRPC; for the service, the HTTP port of its
    /metrics and the route label of its requests there (its own time per request, by stage)."""

    port: int
    grpc: bool = False
    metrics: tuple[int, str] | None = None


def bench_requests(sampler: RowSampler, model: str, batch_sizes: list[int]) -> dict[str, dict[int, list[bytes]]]:
    """{"http": {batch: [whole HTTP request, ...]}, "grpc": {batch: [ModelInferRequest, ...]}}: the same tensors
    (single-valued ones [B, 1]) as v2 JSON and over gRPC."""
    url = f"/v2/models/{model}/infer"
    out: dict[str, dict[int, list[bytes]]] = {"http": {}, "grpc": {}}
    for b in batch_sizes:
        pool = max(2, min(16, 8192 // b))
        tensors = [to_tensors(sampler.rows(b), sampler.numeric, trailing_one=True) for _ in range(pool)]
        out["http"][b] = [build_request(url, json_body(t)) for t in tensors]
        out["grpc"][b] = [grpc_request(t, model) for t in tensors]
    return out


def scores(route: Route, raw: bytes) -> np.ndarray:
    if route.grpc:
        with grpc_io.Client(route.port) as client:
            return client.scores(raw)
    with Connection(route.port) as conn:
        status, _, body = conn.request(raw)
    if status != 200:
        raise RuntimeError(f"port {route.port}: HTTP {status}: {body[:300]!r}")
    return json_scores(body)


def compare(routes: dict[str, Route], requests: dict) -> dict[str, dict[str, float]]:
    """{server: {batch: max |score - the service's over HTTP|}}; RuntimeError beyond TOLERANCE (speeds would then
    mean nothing)."""
    out: dict[str, dict[str, float]] = {}
    for b, reqs in requests["http"].items():
        ours = scores(routes["service"], reqs[0])
        for name, route in routes.items():
            theirs = scores(route, requests["grpc" if route.grpc else "http"][b][0])
            diff = float(np.max(np.abs(ours - theirs))) if theirs.shape == ours.shape else float("inf")
            if not diff <= TOLERANCE:
                raise RuntimeError(f"{name}'s scores differ from the service's at batch {b} by {diff:.3g}")
            out.setdefault(name, {})[str(b)] = diff
    return out


def server_env() -> dict[str, str]:
    env = clean_env(APG_PROVIDERS="cpu", APG_INTRA_OP_THREADS="1", APG_BATCHING="false", APG_LOG_LEVEL="warning")
    return env | {"APG_MAX_ROWS": "4096", "APG_MAX_BODY_BYTES": str(8 << 20), "OMP_NUM_THREADS": "1"}


def closed_cell(route: Route, reqs: list[bytes], rows: int, budget: Budget) -> dict:
    """One closed-loop cell (p50/p99, rows/s) and the client's CPU per request over the whole cell (warm-up
    included: the same rate), measured alike for both protocols: this process's CPU time over wall time. For the
    service, also its own mean ms per request and per stage over the cell (`stages`, from its /metrics)."""
    before = scrape(route.metrics[0]) if route.metrics else {}
    cpu, wall = time.process_time(), time.perf_counter()
    if route.grpc:
        cell = grpc_io.measure(route.port, reqs, rows, budget)
    else:
        cell = measure_path(route.port, reqs, rows, budget, None)[0]
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    cell["client_cpu_us"] = round(1e6 * share / cell["requests_per_s"], 1)
    if route.metrics:
        cell["stages"] = stage_means(before, scrape(route.metrics[0]), route.metrics[1])
    return cell


def saturated_cell(route: Route, reqs: list[bytes], connections: int, budget: Budget) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    drive = grpc_io.saturate if route.grpc else saturate
    cell = drive(route.port, reqs, connections, budget.duration, budget.warmup)
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return cell | {"client_cpu_us": round(1e6 * share / max(cell["requests_per_s"], 1e-9), 1)}


def measure_rounds(routes: dict[str, Route], requests: dict, budget: Budget, connections: int, rounds: int):
    """Every cell `rounds` times, the servers taking turns within each round (a load spike on a shared machine then
    hits all of them, not the one measured at that moment); each figure is the median over the rounds."""
    closed: dict = {name: {str(b): [] for b in requests["http"]} for name in routes}
    saturated: dict = {name: [] for name in routes}
    for r in range(rounds):
        for b in requests["http"]:
            for name, route in routes.items():
                reqs = requests["grpc" if route.grpc else "http"][b]
                closed[name][str(b)].append(closed_cell(route, reqs, b, budget))
            cells = (f"{n} {closed[n][str(b)][-1]['rows_per_s']:,.0f}" for n in routes)
            print(f"round {r + 1}, batch {b}, rows/s: " + ", ".join(cells))
        for name, route in routes.items():
            reqs = requests["grpc" if route.grpc else "http"][1]
            saturated[name].append(saturated_cell(route, reqs, connections, budget))
        cells = (f"{n} {saturated[n][-1]['requests_per_s']:,.0f}" for n in routes)
        print(f"round {r + 1}, batch 1, {connections} in flight, requests/s: " + ", ".join(cells))
    closed = {n: {b: _median(cells) for b, cells in by_batch.items()} for n, by_batch in closed.items()}
    return closed, {"connections": connections, "rounds": rounds, **{n: _median(c) for n, c in saturated.items()}}


def _median(cells: list[dict]) -> dict:
    numbers = [k for k, v in cells[0].items() if isinstance(v, int | float)]
    out = {k: round(float(np.median([c[k] for c in cells])), 4) for k in numbers}
    if "stages" in cells[0]:  # the service's own ms per stage
        stages = cells[0]["stages"]
        out["stages"] = {k: round(float(np.median([c["stages"].get(k, 0.0) for c in cells])), 4) for k in stages}
    return out | {"rounds": cells}


def run(
    bundle_dir: Path, out: Path, batch_sizes: list[int], budget: Budget, connections: int, venv: Path, rounds: int
) -> dict:
    from service.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    requests = bench_requests(RowSampler(bundle.manifest["schema"], seed=0), bundle.name, batch_sizes)
    env = server_env()
    doc: dict = {"bundle": {"name": bundle.name, "version": bundle.version, "path": str(bundle_dir)}}
    doc["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    started = time.time()
    with Servers(out / "logs") as servers:
        grpc_ports = {"service": free_port()}
        servers.start("service", partial(serve_command, bundle_dir, grpc_port=grpc_ports["service"]), env)
        doc["triton"] = triton_peer.start(servers, bundle_dir, (out / "triton").resolve(), env)
        grpc_ports |= {n: v["grpc_port"] for n, v in doc["triton"]["variants"].items()}
        doc["kserve"] = kserve_peer.start(servers, venv, bundle_dir, bundle.name, env)
        servers.wait_ready()
        routes = {n: Route(grpc_ports[GRPC[n]], True) if n in GRPC else Route(servers.servers[n].port) for n in SERVERS}
        metrics = servers.servers["service"].port
        routes["service"] = Route(metrics, metrics=(metrics, "/v2/models/{name}/infer"))
        routes["service-grpc"] = Route(grpc_ports["service"], True, (metrics, grpc_io.METHOD))
        doc["max_abs_diff"] = compare(routes, requests)
        doc["closed_loop"], doc["saturated"] = measure_rounds(routes, requests, budget, connections, rounds)
    doc["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    doc["seconds"] = round(time.time() - started, 1)
    doc["budget"] = {"duration_s": budget.duration, "iterations": budget.iterations, "warmup_s": budget.warmup}
    return doc


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg bench peers` (and of `python -m scripts.bench.peers`)."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--bundle", required=True, help="bundle directory")
    p.add_argument("--out", default="runs/peers", help="peers.json, logs and the Triton repositories")
    p.add_argument("--batch-sizes", default="1,64,1024")
    p.add_argument("--duration", type=float, default=1.0, help="seconds per measured cell and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the servers taking turns; figures are medians")
    p.add_argument("--connections", type=int, default=4, help="requests in flight for the saturated batch-1 figure")
    p.add_argument("--kserve-venv", default=str(kserve_peer.DEFAULT_VENV))
    p.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran on the machine)")
    p.add_argument("--markdown", help="write the report section into this file (PERFORMANCE.md)")


def run_from_args(args) -> int:
    """Measure, write OUT/peers.json and (--markdown) the report section. Raises FileNotFoundError or RuntimeError
    with a message for the user (a peer not installed, a server that does not start, scores that differ)."""
    out = Path(args.out)
    budget = Budget(duration=args.duration, iterations=100_000, warmup=0.5)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    doc = run(Path(args.bundle), out, sizes, budget, args.connections, Path(args.kserve_venv), args.rounds)
    doc["note"] = args.note
    (out / "peers.json").write_text(json.dumps(doc, indent=1))
    if args.markdown:
        write_section(Path(args.markdown), markdown(doc, args.command_line))
        print(f"wrote {args.markdown}")
    print(f"wrote {out / 'peers.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.peers")
    add_arguments(p)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "scripts.bench.peers", *argv])
    try:
        return run_from_args(args)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"peers: error: {exc}", file=sys.stderr)
        return 2
