"""Triton and KServe as measured peers of the service's v2 route, in one short run (issue 15):

    bash scripts/install_triton.sh                       # .triton/: tritonserver 2.51.0 + its Python backend
    python -m scripts.bench.kserve_peer setup            # .venv-kserve/: kserve 0.21.0
    python -m scripts.bench.peers --bundle B --markdown docs/PERFORMANCE.md

Servers, each in its own process on a free 127.0.0.1 port, all serving bundle B under its own model name:
  service             `apg serve` (1 worker, 1 onnxruntime thread, micro-batching off): POST /v2/models/NAME/infer
  triton-batching     tritonserver, the one-step Python-backend model of `apg export --triton-layout python`
  triton-no-batching  the same with dynamic batching off (scripts/bench/triton_peer.py)
  kserve              KServe's ModelServer with a small custom Model: the service's encoder and session
                      (scripts/bench/kserve_peer.py, kserve_model.py)
Every server gets the very same KServe v2 JSON requests (one tensor per raw feature, BYTES / FP64, shape [B, 1]:
Triton's batched inputs need the trailing 1, the service's route takes [B] and [B, 1] alike), and the scores of one
request per batch size are checked equal to the service's (≤ 1e-6) before any timing. Then, per batch size, a
closed loop on one keep-alive connection (scripts/bench/measure.py: p50/p99 per request, rows/s), and at batch 1
the saturated rate with several connections in flight (scripts/bench/saturate.py), where dynamic batching can act.
--markdown replaces the section between PEERS_BEGIN and PEERS_END in the file (appends it the first time).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import orjson

from features import RowSampler
from scripts.bench import kserve_peer, triton_peer
from scripts.bench.http_io import Connection, Servers, build_request, service_command
from scripts.bench.measure import Budget, measure_path
from scripts.bench.saturate import saturate

TOLERANCE = 1e-6
SERVERS = ("service", *triton_peer.VARIANTS, "kserve")
PEERS_BEGIN, PEERS_END = "<!-- peers: begin (python -m scripts.bench.peers) -->", "<!-- peers: end -->"


def v2_body(rows: list[dict], numeric: set[str]) -> bytes:
    """A v2 JSON request: one [B, 1] tensor per raw feature (FP64 when numeric, else BYTES)."""
    inputs = []
    for name in rows[0]:
        col = [r[name] for r in rows]
        if name in numeric:
            inputs.append({"name": name, "shape": [len(col), 1], "datatype": "FP64", "data": [float(v) for v in col]})
        else:
            data = ["|".join(v) if isinstance(v, list) else str(v) for v in col]
            inputs.append({"name": name, "shape": [len(col), 1], "datatype": "BYTES", "data": data})
    return orjson.dumps({"inputs": inputs})


def scores(port: int, raw: bytes) -> np.ndarray:
    with Connection(port) as conn:
        status, _, body = conn.request(raw)
    if status != 200:
        raise RuntimeError(f"port {port}: HTTP {status}: {body[:300]!r}")
    return np.asarray(orjson.loads(body)["outputs"][0]["data"], dtype=np.float64).reshape(-1)


def compare(ports: dict[str, int], requests: dict[int, list[bytes]]) -> dict[str, dict[str, float]]:
    """{server: {batch: max |score - service's|}}; RuntimeError beyond TOLERANCE (speeds would then mean nothing)."""
    out: dict[str, dict[str, float]] = {}
    for b, reqs in requests.items():
        ours = scores(ports["service"], reqs[0])
        for name, port in ports.items():
            theirs = scores(port, reqs[0])
            diff = float(np.max(np.abs(ours - theirs))) if theirs.shape == ours.shape else float("inf")
            if not diff <= TOLERANCE:
                raise RuntimeError(f"{name}'s scores differ from the service's at batch {b} by {diff:.3g}")
            out.setdefault(name, {})[str(b)] = diff
    return out


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and "multiproc" not in k.lower()}
    env |= {"APG_PROVIDERS": "cpu", "APG_INTRA_OP_THREADS": "1", "APG_BATCHING": "false", "APG_LOG_LEVEL": "warning"}
    env |= {"APG_MAX_ROWS": "4096", "APG_MAX_BODY_BYTES": str(8 << 20), "OMP_NUM_THREADS": "1"}
    return env


def measure_rounds(
    ports: dict[str, int], requests: dict[int, list[bytes]], budget: Budget, connections: int, rounds: int
):
    """Every cell `rounds` times, the servers taking turns within each round (a load spike on a shared machine then
    hits all of them, not the one measured at that moment); each figure is the median over the rounds."""
    closed: dict = {name: {str(b): [] for b in requests} for name in ports}
    saturated: dict = {name: [] for name in ports}
    for r in range(rounds):
        for b, reqs in requests.items():
            for name, port in ports.items():
                closed[name][str(b)].append(measure_path(port, reqs, b, budget, None)[0])
            cells = (f"{n} {closed[n][str(b)][-1]['rows_per_s']:,.0f}" for n in ports)
            print(f"round {r + 1}, batch {b}, rows/s: " + ", ".join(cells))
        for name, port in ports.items():
            saturated[name].append(saturate(port, requests[1], connections, budget.duration, budget.warmup))
        cells = (f"{n} {saturated[n][-1]['requests_per_s']:,.0f}" for n in ports)
        print(f"round {r + 1}, batch 1, {connections} connections, requests/s: " + ", ".join(cells))
    closed = {n: {b: _median(cells) for b, cells in by_batch.items()} for n, by_batch in closed.items()}
    return closed, {"connections": connections, "rounds": rounds, **{n: _median(c) for n, c in saturated.items()}}


def _median(cells: list[dict]) -> dict:
    numbers = [k for k, v in cells[0].items() if isinstance(v, int | float)]
    return {k: round(float(np.median([c[k] for c in cells])), 4) for k in numbers} | {"rounds": cells}


def run(
    bundle_dir: Path, out: Path, batch_sizes: list[int], budget: Budget, connections: int, venv: Path, rounds: int
) -> dict:
    from service.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    sampler = RowSampler(bundle.manifest["schema"], seed=0)
    url = f"/v2/models/{bundle.name}/infer"
    pool = {b: max(2, min(16, 8192 // b)) for b in batch_sizes}
    requests = {
        b: [build_request(url, v2_body(sampler.rows(b), sampler.numeric)) for _ in range(pool[b])] for b in batch_sizes
    }
    env = server_env()
    doc: dict = {"bundle": {"name": bundle.name, "version": bundle.version, "path": str(bundle_dir)}}
    doc["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    started = time.time()
    with Servers(out / "logs") as servers:
        servers.start("service", partial(service_command, bundle_dir), env)
        doc["triton"] = triton_peer.start(servers, bundle_dir, (out / "triton").resolve(), env)
        doc["kserve"] = kserve_peer.start(servers, venv, bundle_dir, bundle.name, env)
        servers.wait_ready()
        ports = {name: servers.servers[name].port for name in SERVERS}
        doc["max_abs_diff"] = compare(ports, requests)
        doc["closed_loop"], doc["saturated"] = measure_rounds(ports, requests, budget, connections, rounds)
    doc["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    doc["seconds"] = round(time.time() - started, 1)
    doc["budget"] = {"duration_s": budget.duration, "iterations": budget.iterations, "warmup_s": budget.warmup}
    return doc


# ---------------------------------------------------------------- the report


def markdown(doc: dict, command: str) -> str:
    """The PERFORMANCE.md section: rows/s and ratios, p50/p99, saturated batch 1, and what ran how."""
    closed, sizes = doc["closed_loop"], list(doc["closed_loop"]["service"])
    t, k = doc["triton"], doc["kserve"]["versions"]
    lines = [
        PEERS_BEGIN,
        "## Triton and KServe peers of the v2 route (issue 15)",
        "",
        f"Generated by `python -m scripts.bench.peers` (scripts/bench/peers.py) from one run, {doc['seconds']} s:",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Bundle `{doc['bundle']['name']}` version `{doc['bundle']['version']}`; load average "
        f"{doc['load_average_before']} before and {doc['load_average_after']} after, on {os.cpu_count()} CPUs. "
        + doc.get("note", ""),
        "",
        "- **service**: `apg serve` (1 worker, `APG_INTRA_OP_THREADS=1`, micro-batching off), POST "
        "/v2/models/NAME/infer.",
        f"- **triton-batching / triton-no-batching**: `tritonserver` 2.51.0 from the PyPI wheel ({t['installed']}; "
        "`bash scripts/install_triton.sh`), serving `apg export --triton-layout python`: one Python-backend model "
        "that runs the bundle's encoder and an onnxruntime session (1 intra-op thread) in the backend's stub process; "
        "dynamic batching on (max queue delay 500 µs) and off; one instance. The ensemble as exported (graph on the "
        "onnxruntime backend) cannot load on this binary and is not measured.",
        "- **triton-ensemble**: the exported ensemble (NAME-preprocess: the encoder, then NAME-onnx) with its graph "
        'step on the Python backend as well (`write_triton_repo(..., graph_backend="python")`), dynamic batching '
        "on in both steps: the cost of the second step and of the tensors passed between two stub processes.",
        f"- **kserve**: KServe {k['kserve']} `ModelServer` (FastAPI {k['fastapi']}, uvicorn {k['uvicorn']}, 1 worker, "
        "gRPC off) from its own virtual environment, with a small custom `Model` (scripts/bench/kserve_model.py) "
        "running the service's encoder and session inline.",
        "- All are sent the very same v2 JSON requests (one [B, 1] tensor per raw feature) on one keep-alive "
        f"connection, closed loop; each figure is the median of {doc['saturated']['rounds']} rounds in which the "
        "servers took turns, cell by cell (a load spike then hits every server, not only the one being measured); "
        "scores of one request per batch size were checked equal to the service's before timing (max abs diff in "
        "the last table).",
        "- Triton is a C++ HTTP front end with its own threads plus the Python backend's stub in a second process: "
        "with several requests in flight it can keep both cores busy, where the service and KServe are one Python "
        "process each (encoder and 1-thread session on the event loop). The bundle is the synthetic logistic model "
        "of tests/synthetic_bundle.py (no trained bundle on this machine): its graph costs little, so the figures "
        "are mostly each server's own per-request and per-row work.",
        "",
        "### Throughput, rows/s (service / peer)",
        "",
        "| batch | service | " + " | ".join(SERVERS[1:]) + " |",
        "|---|---|" + "---|" * (len(SERVERS) - 1),
    ]
    for b in sizes:
        ours = closed["service"][b]["rows_per_s"]
        cells = [f"{closed[n][b]['rows_per_s']:,.0f} ({ours / closed[n][b]['rows_per_s']:.2f}x)" for n in SERVERS[1:]]
        lines.append(f"| {b} | {ours:,.0f} | " + " | ".join(cells) + " |")
    lines += ["", "### Latency per request, p50 / p99 (ms)", "", "| batch | " + " | ".join(SERVERS) + " |"]
    lines.append("|---|" + "---|" * len(SERVERS))
    for b in sizes:
        cells = [f"{closed[n][b]['p50_ms']:.3f} / {closed[n][b]['p99_ms']:.3f}" for n in SERVERS]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    sat = doc["saturated"]
    lines += [
        "",
        f"### Batch 1 saturated: {sat['connections']} connections, one request in flight each (requests/s)",
        "",
        "| " + " | ".join(SERVERS) + " |",
        "|" + "---|" * len(SERVERS),
        "| " + " | ".join(f"{sat[n]['requests_per_s']:,.0f}" for n in SERVERS) + " |",
        "",
        "### Max abs score difference from the service, per batch",
        "",
        "| batch | " + " | ".join(SERVERS[1:]) + " |",
        "|---|" + "---|" * (len(SERVERS) - 1),
    ]
    for b in sizes:
        lines.append(f"| {b} | " + " | ".join(f"{doc['max_abs_diff'][n][b]:.2g}" for n in SERVERS[1:]) + " |")
    return "\n".join([*lines, *targets(doc), PEERS_END]) + "\n"


def targets(doc: dict) -> list[str]:
    """Issue 15's targets for the v2 HTTP route, met or not, from this run's figures."""
    closed, sat = doc["closed_loop"], doc["saturated"]
    sizes = list(closed["service"])

    def ratio(peer: str, b: str) -> float:
        return closed["service"][b]["rows_per_s"] / closed[peer][b]["rows_per_s"]

    rows = [(f">= 1.3x kserve at batch {sizes[0]}", ratio("kserve", sizes[0]), 1.3)]
    rows.append((f">= 1.1x kserve at batch {sizes[-1]}", ratio("kserve", sizes[-1]), 1.1))
    rows += [(f"ahead of {t} at batch {b}", ratio(t, b), 1.0) for t in triton_peer.ONE_STEP for b in sizes]
    rows += [
        (f"ahead of {t} at batch 1, {sat['connections']} connections", sat["service"]["requests_per_s"]
         / sat[t]["requests_per_s"], 1.0)
        for t in triton_peer.ONE_STEP
    ]  # fmt: skip
    out = ["", "### Targets of issue 15 (v2 over HTTP, JSON; service / peer)", "", "| target | ratio | met |"]
    out.append("|---|---|---|")
    out += [f"| {name} | {r:.2f}x | {'yes' if r >= bound else '**no**'} |" for name, r, bound in rows]
    return out


def write_section(path: Path, section: str) -> None:
    """Replace the PEERS_BEGIN..PEERS_END section of `path`, or append it."""
    text = path.read_text() if path.exists() else ""
    if PEERS_BEGIN in text and PEERS_END in text:
        head, rest = text.split(PEERS_BEGIN, 1)
        text = head + section + rest.split(PEERS_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle directory")
    p.add_argument("--out", default="runs/peers", help="peers.json, logs and the Triton repositories")
    p.add_argument("--batch-sizes", default="1,64,1024")
    p.add_argument("--duration", type=float, default=1.0, help="seconds per measured cell and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the servers taking turns; figures are medians")
    p.add_argument("--connections", type=int, default=4, help="connections for the saturated batch-1 figure")
    p.add_argument("--kserve-venv", default=str(kserve_peer.DEFAULT_VENV))
    p.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran on the machine)")
    p.add_argument("--markdown", help="write the report section into this file (PERFORMANCE.md)")
    args = p.parse_args(argv)
    out = Path(args.out)
    budget = Budget(duration=args.duration, iterations=100_000, warmup=0.5)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    try:
        doc = run(Path(args.bundle), out, sizes, budget, args.connections, Path(args.kserve_venv), args.rounds)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"peers: error: {exc}", file=sys.stderr)
        return 2
    doc["note"] = args.note
    (out / "peers.json").write_text(json.dumps(doc, indent=1))
    if args.markdown:
        command = shlex.join(["python", "-m", "scripts.bench.peers", *(argv if argv is not None else sys.argv[1:])])
        write_section(Path(args.markdown), markdown(doc, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
