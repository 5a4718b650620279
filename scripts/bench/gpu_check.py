"""`python -m scripts.bench.gpu_check`: the CUDA execution provider against the CPU one, on one bundle, in one run.

    python -m scripts.bench.gpu_check --bundle bundles/default --out runs/gpu-check      # needs onnxruntime-gpu + a GPU

(a) parity: the same encoded rows scored by a CUDA session and a CPU session (the service's own loader, so the
    same graph choice, options and warm-up), max |difference| per batch size, refused above --atol;
(b) throughput of `session.run` per batch size: CPU with 1 thread (the per-core figure of docs/PERFORMANCE.md),
    CPU with every core, CUDA (numpy in and out, so host↔device copies are included, as in the service);
(c) the real service twice, `APG_PROVIDERS=cuda` and `=cpu` (1 worker each, started here on 127.0.0.1): /readyz
    must name the provider, POST /score must return the CPU scores, and closed-loop rows/s per batch size.

Writes OUT/gpu-check.json and OUT/gpu-check.md (also printed). Exits 2 when onnxruntime offers no CUDA provider
(--allow-cpu runs the whole check with CPU in CUDA's place: for testing the script on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import orjson

from features import RowSampler, read_schema
from scripts.bench.measure import Budget, stats, timed
from scripts.clients.http import Connection, build_request
from scripts.clients.launch import Servers, serve_command
from scripts.loadtest.plan import encode_body

CUDA = "CUDAExecutionProvider"


def sessions(bundle: Path, allow_cpu: bool, tf32: bool = False) -> dict:
    """{"cpu-1": Model, "cpu-all": Model, "cuda": Model} via service.runtime.load_model."""
    import onnxruntime as ort

    from service.runtime import load_model
    from service.settings import Settings

    cuda = "cuda" if CUDA in ort.get_available_providers() else "cpu"
    if cuda == "cpu" and not allow_cpu:
        raise LookupError(f"no {CUDA} in onnxruntime {ort.__version__} ({ort.get_available_providers()})")
    models = {
        "cpu-1": load_model(bundle, Settings(bundle=bundle, providers="cpu", intra_op_threads=1)),
        "cpu-all": load_model(bundle, Settings(bundle=bundle, providers="cpu", intra_op_threads=0)),
        "cuda": load_model(bundle, Settings(bundle=bundle, providers=cuda, intra_op_threads=1, cuda_tf32=tf32)),
    }
    if cuda == "cuda" and models["cuda"].provider != CUDA and not allow_cpu:  # offered, but the session fell back
        raise LookupError(f"{CUDA} is offered but the session runs on {models['cuda'].provider} (drivers, cuDNN?)")
    return models


def in_process(models: dict, rows: list[dict], sizes: list[int], budget: Budget) -> dict:
    """Parity (max |cuda - cpu|) and rows/s of each session per batch size."""
    out = {}
    for size in sizes:
        feeds = models["cpu-1"].encoder.encode_rows(rows[:size])
        ref = models["cpu-1"].run(feeds)
        cell = {"max_abs_diff": float(np.abs(models["cuda"].run(feeds) - ref).max())}
        for name, model in models.items():
            lat, wall = timed(model.run, [feeds], budget)
            cell[name] = stats(lat, wall, size)
        out[size] = cell
        print(
            f"  batch {size:>6}: |cuda-cpu| {cell['max_abs_diff']:.2e}, rows/s "
            + ", ".join(f"{n} {cell[n]['rows_per_s']:,.0f}" for n in models),
            flush=True,
        )
    return out


def over_http(
    bundle: Path, out: Path, models: dict, rows: list[dict], sizes: list[int], budget: Budget, tf32: bool
) -> dict:
    """The real service on each provider: its /readyz provider, its scores against CPU, closed-loop rows/s."""
    schema, _ = read_schema(bundle)
    numeric = RowSampler(schema).numeric
    result = {}
    with Servers(out / "logs") as servers:
        for provider in ("cuda", "cpu"):
            env = {
                **os.environ,
                "APG_PROVIDERS": "cuda" if models["cuda"].provider == CUDA and provider == "cuda" else "cpu",
                "APG_INTRA_OP_THREADS": "1",
                "APG_MAX_ROWS": str(max(sizes)),
                "APG_MAX_BODY_BYTES": str(1 << 30),
                "APG_LOG_LEVEL": "warning",
                "APG_CUDA_TF32": str(tf32).lower(),
            }
            servers.start(f"service-{provider}", partial(serve_command, bundle), env=env)
        servers.wait_ready()
        for name, server in servers.servers.items():
            with Connection(server.port, timeout=120) as conn:
                ready = orjson.loads(conn.get("/readyz")[2])
                cells = {}
                for size in sizes:
                    raw = build_request("/score", encode_body(rows[:size], "columns", numeric))
                    status, _, body = conn.request(raw)
                    if status != 200:
                        raise RuntimeError(f"{name}: POST /score with {size} rows answered {status}: {body[:300]!r}")
                    ref = models["cpu-1"].run(models["cpu-1"].encoder.encode_rows(rows[:size]))
                    diff = float(np.abs(np.array(orjson.loads(body)["scores"]) - ref).max())
                    lat, wall = timed(lambda r: conn.request(r), [raw], budget)
                    cells[size] = {"max_abs_diff": diff, **stats(lat, wall, size)}
                    c = cells[size]
                    print(
                        f"  {name} batch {size:>6}: |served-cpu| {diff:.2e}, {c['rows_per_s']:,.0f} rows/s, "
                        f"p50 {c['p50_ms']:.3f} ms",
                        flush=True,
                    )
            result[name] = {"provider": ready["model"]["provider"], "batches": cells}
    return result


def batching_sweep(bundle: Path, out: Path, cuda: bool, rates: list[float], duration: float, tf32: bool) -> dict:
    """(d) batch-1 open-loop sweeps against the service on CUDA with APG_BATCHING off and on: the knees (p99 <= 10 ms,
    errors <= 1 %), as `apg bench` measures them on CPU."""
    from scripts.bench.measure import sweep_batching

    schema, _ = read_schema(bundle)
    env = {
        **os.environ,
        "APG_PROVIDERS": "cuda" if cuda else "cpu",
        "APG_INTRA_OP_THREADS": "1",
        "APG_LOG_LEVEL": "warning",
        "APG_CUDA_TF32": str(tf32).lower(),
    }
    with Servers(out / "logs") as servers:
        for mode in ("off", "on"):
            batching = {"APG_BATCHING": "true" if mode == "on" else "false"}
            servers.start(f"batching-{mode}", partial(serve_command, bundle), {**env, **batching})
        servers.wait_ready()
        ports = {mode: servers.servers[f"batching-{mode}"].port for mode in ("off", "on")}
        sweep = sweep_batching(ports, schema, rates, duration, 10.0, 0.01, say=_say)
    return {m: {"knee_rate": sweep[m]["knee_rate"], "runs": sweep[m]["runs"]} for m in ("off", "on")}


def _say(mode: str, s: dict) -> None:
    p99 = s["latency_ms"]["p99"]
    print(f"  batching {mode}: {s['target_rate']:g}/s offered, {s['achieved_rate']:.0f}/s ok, p99 {p99} ms")


def report(doc: dict) -> str:
    """The markdown tables of gpu-check.md."""
    lines = [
        f"# CUDA execution provider check ({doc['gpu']}, onnxruntime {doc['onnxruntime']}, TF32 "
        f"{'on' if doc['cuda_tf32'] else 'off'})",
        "",
        f"Command: `{doc['command']}`",
        "",
        "| batch | max \\|cuda − cpu\\| | cpu 1 thread rows/s | cpu all cores rows/s | cuda rows/s | cuda p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for size, c in doc["in_process"].items():
        lines.append(
            f"| {size} | {c['max_abs_diff']:.1e} | {c['cpu-1']['rows_per_s']:,.0f} | {c['cpu-all']['rows_per_s']:,.0f}"
            f" | {c['cuda']['rows_per_s']:,.0f} | {c['cuda']['p50_ms']:.3f} |"
        )
    if doc.get("http"):
        lines += [
            "",
            "| service | provider | batch | max \\|served − cpu\\| | rows/s | p50 ms |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in doc["http"].items():
            for size, c in s["batches"].items():
                lines.append(
                    f"| {name} | {s['provider']} | {size} | {c['max_abs_diff']:.1e} | {c['rows_per_s']:,.0f}"
                    f" | {c['p50_ms']:.3f} |"
                )
    if doc.get("batching"):
        b = doc["batching"]
        lines += [
            "",
            f"Batch-1 knee (p99 <= 10 ms), service on {doc['cuda_provider']}: micro-batching off "
            f"{b['off']['knee_rate']} requests/s, on {b['on']['knee_rate']} requests/s.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("bundles/default"), help="bundle directory")
    p.add_argument("--out", type=Path, default=Path("runs/gpu-check"), help="where gpu-check.json/.md and logs go")
    p.add_argument("--batch-sizes", default="1,64,1024,4096,16384,65536", help="rows per call, comma list")
    p.add_argument("--duration", type=float, default=1.0, help="measured seconds per cell")
    p.add_argument("--atol", type=float, default=1e-4, help="largest |cuda - cpu| accepted for a probability")
    p.add_argument("--tf32", action="store_true", help="let CUDA use TF32 matrix products (APG_CUDA_TF32=true)")
    p.add_argument("--no-http", action="store_true", help="skip (c), the real service on each provider")
    p.add_argument("--allow-cpu", action="store_true", help="without a CUDA provider, check CPU against CPU")
    p.add_argument("--batching-rates", help="also sweep batch-1 rates (comma list) with APG_BATCHING off and on")
    args = p.parse_args(argv)
    import onnxruntime as ort

    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    budget = Budget(duration=args.duration, iterations=100_000, warmup=min(0.5, args.duration))
    try:
        models = sessions(args.bundle, args.allow_cpu, args.tf32)
    except LookupError as exc:
        print(f"{exc}: install onnxruntime-gpu on a machine with a GPU (or pass --allow-cpu)", file=sys.stderr)
        return 2
    rows = RowSampler(read_schema(args.bundle)[0], seed=0).rows(max(sizes))
    print(f"providers: cuda session on {models['cuda'].provider} ({models['cuda'].graph.name}); in-process:")
    doc = {
        "command": " ".join(["python -m scripts.bench.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "onnxruntime": ort.__version__,
        "gpu": _gpu_name(),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "cuda_provider": models["cuda"].provider,
        "cuda_tf32": args.tf32,
        "in_process": in_process(models, rows, sizes, budget),
    }
    if not args.no_http:
        print("over HTTP (POST /score, columns, one keep-alive connection):")
        doc["http"] = over_http(args.bundle.resolve(), args.out, models, rows, sizes, budget, args.tf32)
    if args.batching_rates:
        print("batch-1 open-loop sweeps, micro-batching off and on:")
        rates = [float(r) for r in args.batching_rates.split(",") if r.strip()]
        cuda = models["cuda"].provider == CUDA
        doc["batching"] = batching_sweep(args.bundle.resolve(), args.out, cuda, rates, args.duration, args.tf32)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    (args.out / "gpu-check.md").write_text(report(doc))
    print(report(doc))
    worst = max(
        [c["max_abs_diff"] for c in doc["in_process"].values()]
        + [c["max_abs_diff"] for s in doc.get("http", {}).values() for c in s["batches"].values()]
    )
    if worst > args.atol:
        print(f"parity FAILED: max |difference| {worst:.2e} > --atol {args.atol:g}", file=sys.stderr)
        return 1
    return 0


def _gpu_name() -> str:
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        return out.stdout.strip() or "no GPU"
    except OSError:
        return "no GPU"


if __name__ == "__main__":
    sys.exit(main())
