"""`apg bench`: the service's throughput and latency as ratios to in-process onnxruntime (the floor), in one run,
on one bundle and one thread budget.

    apg bench                                         # full run on bundles/default, results in runs/bench
    apg bench --run runs/deepfm-self --markdown docs/PERFORMANCE.md
    apg bench --quick                                 # batch 1 and 64, a few calls each: under a minute (CI)
    apg bench --mlserver                              # also MLServer 1.7.1 (see scripts/bench/peers/mlserver_peer.py)
    apg bench --whole-machine 2                       # also `apg serve --workers 2` vs the 2-thread floor
    apg bench peers --bundle B                        # Triton and KServe vs our v2 HTTP and gRPC (peers/)
    apg bench --only-by-id --ranking 100,1000 --markdown docs/PERFORMANCE.md   # ranking by id alone: its section

(a) floor: `session.run` on pre-encoded rows per batch size, the service's own loader and session options;
(b) the same rows through a real `apg serve` (1 worker) started here on a free 127.0.0.1 port: POST /score
    (rows and columns bodies), v2 infer (JSON and binary tensors), and (b') a bare FastAPI + orjson route on the
    same session (scripts/bench/thin.py); closed loop, one keep-alive client, so p50/p99 are per request;
(c) batch-1 open-loop load (scripts/loadtest/) with micro-batching off and on: the knee of a rate sweep;
(d) torch eager on the same model, with --run (torch is imported only then);
(e) ranking: one user against N candidate items as rows, columns and the {"context", "candidates"} shape
    (scripts/bench/ranking.py), at each N of --ranking;
(f) with --mlserver, MLServer 1.7.1's v2 endpoint on the same session and encoder, sent the v2-json path's very
    requests, its scores checked against the service's (scripts/bench/peers/mlserver_peer.py, mlserver_runtime.py);
(g) with --whole-machine W, `apg serve --workers W` driven by W connections against the best W-thread floor at
    batch 1024, unpinned (scripts/bench/machine.py);
(h) ranking by item id (--by-id file,redis, on by default with the ranking section): the same candidates by id to
    `apg serve --item-store file://...` and `redis://...` vs with their features in the body, and the lookup alone
    (scripts/bench/ranking_ids.py); --only-by-id runs (a) and (h) alone and writes their own section of --markdown;
and the stage breakdown (parse/preprocess/queue/inference/serialise) from the service's own /metrics.
Rows are sampled from the bundle's vocabularies (the load generator's sampler). Writes OUT/bench.json and
PNG plots; --markdown PATH also writes a report with the tables, the plots and the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson

from features import RowSampler
from scripts.bench import machine, performance_report, ranking_ids, ranking_ids_report, saturate
from scripts.bench.http_io import MLSERVER_PATH, PATHS, request_bytes, thin_command
from scripts.bench.measure import (
    Budget,
    floor_call,
    floor_model,
    measure_path,
    measure_torch,
    stats,
    sweep_batching,
    timed,
)
from scripts.bench.peers import mlserver_peer
from scripts.bench.ranking import measure_ranking
from scripts.clients.launch import Servers, serve_command

FULL = {
    "batch_sizes": (1, 8, 64, 256, 1024, 4096),
    "duration": 2.0,
    "iterations": 20_000,
    "rates": (100.0, 200.0, 400.0, 800.0, 1600.0, 2400.0, 3200.0, 4800.0, 6400.0),
    "sweep_duration": 3.0,
    "ranking": (100, 300, 1000),
    "by_id": ("file", "redis"),
    "catalogue_items": 100_000,
}
QUICK = {
    "batch_sizes": (1, 64),
    "duration": 0.25,
    "iterations": 200,
    "rates": (50.0, 100.0),
    "sweep_duration": 0.5,
    "ranking": (10, 50),
    "by_id": ("file",),
    "catalogue_items": 2_000,
}


@dataclass(frozen=True)
class BenchConfig:
    bundle: Path
    out: Path
    threads: int
    batch_sizes: tuple[int, ...]
    budget: Budget  # per (path, batch size) cell
    rates: tuple[float, ...]  # the batch-1 open-loop sweep
    sweep_duration: float
    slo_ms: float
    max_errors: float
    ranking: tuple[int, ...]  # candidate counts of the ranking section; () = off
    by_id: tuple[str, ...]  # item stores of the ranking-by-id section ("file", "redis"); () = off
    catalogue_items: int  # items in its catalogue
    only_by_id: bool  # the floor and ranking by id alone (its own markdown section)
    note: str
    mlserver: Path | None  # MLServer's virtual environment, with --mlserver
    whole_machine: int  # workers of the whole-machine figure; 0 = off
    run: Path | None
    markdown: Path | None
    pin: bool
    quick: bool
    command: str


# ---------------------------------------------------------------- the run


def run_bench(cfg: BenchConfig) -> dict:
    """Every measurement; the document that becomes bench.json (ratios added by performance_report.add_ratios)."""
    from service.bundle import load_bundle

    bundle = load_bundle(cfg.bundle)
    schema = bundle.manifest["schema"]
    sampler = RowSampler(schema, seed=0)
    samples = {b: [sampler.rows(b) for _ in range(_pool(b))] for b in cfg.batch_sizes}
    requests = {
        (p.name, b): [request_bytes(p, rows, sampler.numeric, bundle.name) for rows in samples[b]]
        for p in PATHS
        for b in cfg.batch_sizes
    }
    paths = PATHS + ((MLSERVER_PATH,) if cfg.mlserver else ())
    if cfg.mlserver:  # the very requests of v2-json (MLServer serves the bundle under its name)
        requests.update({(MLSERVER_PATH.name, b): requests[("v2-json", b)] for b in cfg.batch_sizes})
    doc = performance_report.header(cfg, bundle)
    env = _server_env(cfg, max(len(r) for rs in requests.values() for r in rs))
    doc["server_env"] = {k: v for k, v in env.items() if k.startswith("APG_")}
    cpus = os.sched_getaffinity(0)
    with contextlib.ExitStack() as stack, Servers(cfg.out / "logs", cpu=0 if cfg.pin else None) as servers:
        by_id = ranking_ids.start(cfg, bundle, env, servers, stack) if cfg.ranking and cfg.by_id else None
        servers.start("service", partial(serve_command, cfg.bundle), env)
        servers.start("thin", partial(thin_command, cfg.bundle), env)
        servers.start("service-batching", partial(serve_command, cfg.bundle), {**env, "APG_BATCHING": "true"})
        servers.start("bare", saturate.bare_command, env)
        servers.start("bare-onnx", partial(saturate.bare_command, bundle=cfg.bundle), env)
        if cfg.mlserver:
            folder = (cfg.out / "mlserver").resolve()
            doc["mlserver"] = mlserver_peer.start(servers, cfg.mlserver, folder, bundle, env)
        servers.wait_ready()
        print(f"servers ready: {', '.join(f'{s.name} :{s.port}' for s in servers.servers.values())}")
        if cfg.mlserver:  # the same scores from both before any timing
            both = [servers.servers[name].port for name in ("service", "mlserver")]
            peer = mlserver_peer.compare_scores(*both, {b: requests[("v2-json", b)][0] for b in cfg.batch_sizes})
        model = floor_model(cfg.bundle, cfg.threads)
        floor, doc["bundle"]["graph"] = floor_call(model), model.graph.name
        feeds = {b: [bundle.encoder.encode_rows(rows) for rows in samples[b]] for b in cfg.batch_sizes}
        doc["floor"], doc["http"], doc["stages"] = {}, {p.name: {} for p in paths}, {}
        for b in cfg.batch_sizes:
            _pin(cfg, 0)
            doc["floor"][str(b)] = stats(*timed(floor, feeds[b], cfg.budget), b)
            _pin(cfg, 1)
            for p in paths:
                server = servers.servers[p.server]
                route = p.template if p.server == "service" else None
                cell, stages = measure_path(server.port, requests[(p.name, b)], b, cfg.budget, route)
                doc["http"][p.name][str(b)] = cell
                if stages:
                    doc["stages"].setdefault(p.name, {})[str(b)] = stages
            if cfg.mlserver:
                doc["http"][MLSERVER_PATH.name][str(b)]["max_abs_diff_vs_service"] = peer[b]
            print(performance_report.progress_line(doc, b))
        _pin(cfg, 1)
        doc["saturation"] = _saturation(cfg, servers, sampler, bundle.name)
        if cfg.ranking:
            port, pin = servers.servers["service"].port, partial(_pin, cfg)
            doc["ranking"] = measure_ranking(port, bundle, floor, cfg.ranking, cfg.budget, _pool, pin)
            print("\n".join(performance_report.ranking_lines(doc["ranking"])))
        if by_id is not None:
            doc.update(ranking_ids.measure(cfg, bundle, floor, servers, *by_id, _pool, partial(_pin, cfg)))
            print("\n".join(ranking_ids_report.lines(doc["ranking_ids"])))
        ports = {"off": servers.servers["service"].port, "on": servers.servers["service-batching"].port}
        sweep = (cfg.rates, cfg.sweep_duration, cfg.slo_ms, cfg.max_errors)
        doc["batching"] = sweep_batching(ports, schema, *sweep, say=_say_sweep)
    _pin(cfg, 0)
    doc["torch"] = _torch(cfg, schema, feeds, floor)
    if cfg.whole_machine:
        os.sched_setaffinity(0, cpus)  # unpinned: this figure is the whole machine's
        rows = [sampler.rows(machine.BATCH) for _ in range(_pool(machine.BATCH))]
        with Servers(cfg.out / "logs") as servers:
            args = (cfg.bundle, bundle, cfg.whole_machine, rows, sampler.numeric, cfg.budget)
            doc["whole_machine"] = machine.measure(servers, env, *args, say=print)
    doc["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return performance_report.add_ratios(doc)


def run_by_id(cfg: BenchConfig) -> dict:
    """--only-by-id: the floor and the ranking-by-id section alone (section (h))."""
    from service.bundle import load_bundle

    bundle = load_bundle(cfg.bundle)
    doc = performance_report.header(cfg, bundle)
    env = _server_env(cfg, 0)
    doc["server_env"] = {k: v for k, v in env.items() if k.startswith("APG_")}
    with contextlib.ExitStack() as stack, Servers(cfg.out / "logs", cpu=0 if cfg.pin else None) as servers:
        by_id = ranking_ids.start(cfg, bundle, env, servers, stack)
        servers.wait_ready()
        print(f"servers ready: {', '.join(f'{s.name} :{s.port}' for s in servers.servers.values())}")
        floor = floor_call(floor_model(cfg.bundle, cfg.threads))
        doc.update(ranking_ids.measure(cfg, bundle, floor, servers, *by_id, _pool, partial(_pin, cfg)))
        print("\n".join(ranking_ids_report.lines(doc["ranking_ids"])))
    doc["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return doc


SATURATION_PATHS = ("score-rows", "score-columns", "v2-binary", "thin-columns")


def _saturation(cfg: BenchConfig, servers: Servers, sampler: RowSampler, model: str) -> dict:
    """Batch-1 requests/s with `connections` requests in flight (the server's core saturated), for the service's
    paths, the thin app and the two raw ASGI references (sent score-columns bodies)."""
    connections = 4 if cfg.quick else 8
    rows = [sampler.rows(1) for _ in range(16)]
    out: dict = {"connections": connections, "paths": {}}
    columns = next(p for p in PATHS if p.name == "score-columns")
    measured = [(p.name, p.server, p) for p in PATHS if p.name in SATURATION_PATHS]
    measured += [("bare-onnx", "bare-onnx", columns), ("bare", "bare", columns)]
    for name, server, path in measured:
        reqs = [request_bytes(path, r, sampler.numeric, model) for r in rows]
        port = servers.servers[server].port
        cell = saturate.saturate(port, reqs, connections, cfg.budget.duration, cfg.budget.warmup)
        out["paths"][name] = cell
        print(f"saturated, batch 1, {connections} connections: {name} {cell['requests_per_s']:,.0f} req/s")
    return out


def _say_sweep(mode: str, summary: dict) -> None:
    print(f"micro-batching {mode}: {performance_report.sweep_line(summary)}")


def _pool(batch: int) -> int:
    """Distinct request bodies per batch size, cycled through: 16 for small batches, 8192 rows at most."""
    return max(2, min(16, 8192 // batch))


def _server_env(cfg: BenchConfig, largest_body: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    env.update(
        APG_INTRA_OP_THREADS=str(cfg.threads),
        APG_PROVIDERS="cpu",
        APG_BATCHING="false",
        APG_AUTH_TOKEN="",
        APG_MAX_ROWS=str(max(4096, *cfg.batch_sizes, *cfg.ranking)),
        APG_MAX_BODY_BYTES=str(max(8 << 20, 2 * largest_body)),
    )
    return env


def _pin(cfg: BenchConfig, cpu: int) -> None:
    """--pin: servers and in-process runs on CPU 0, the HTTP client on CPU 1."""
    if cfg.pin:
        os.sched_setaffinity(0, {cpu})


def _torch(cfg: BenchConfig, schema: dict, feeds: dict, floor) -> dict:
    if cfg.run is None:
        print("torch eager vs onnxruntime: skipped (pass --run RUN_DIR, the training run of this bundle)")
        return {"skipped": "no --run given"}
    out = measure_torch(cfg.run, schema, cfg.threads, feeds, floor, cfg.budget)
    return {"run": str(cfg.run), "by_batch": {str(b): v for b, v in out.items()}}


# ---------------------------------------------------------------- command line


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes


def _ranking(text: str) -> tuple[int, ...]:
    return () if text.strip().lower() in ("off", "none", "0") else _sizes(text)


def _stores(text: str) -> tuple[str, ...]:
    stores = tuple(s.strip() for s in text.split(",") if s.strip())
    if stores in ((), ("off",), ("none",)):
        return ()
    if not set(stores) <= {"file", "redis"}:
        raise argparse.ArgumentTypeError(f"expected file, redis or both (or off), got {text!r}")
    return stores


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates, got {text!r}") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be > 0, got {text!r}")
    return tuple(sorted(rates))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg bench`."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--bundle", default="bundles/default", help="bundle directory to benchmark")
    p.add_argument("--out", default="runs/bench", help="directory for bench.json, the PNG plots and server logs")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="onnxruntime intra-op threads (floor, service, thin app) and torch threads",
    )
    p.add_argument("--batch-sizes", type=_sizes, default=FULL["batch_sizes"], help="rows per call, e.g. 1,64,1024")
    p.add_argument("--duration", type=float, default=FULL["duration"], help="measured seconds per (path, batch)")
    p.add_argument("--iterations", type=int, default=FULL["iterations"], help="calls per (path, batch) at most")
    p.add_argument(
        "--rates",
        type=_rates,
        default=FULL["rates"],
        help="offered requests/s of the batch-1 sweep (micro-batching off vs on), e.g. 100,200,400",
    )
    p.add_argument("--sweep-duration", type=float, default=FULL["sweep_duration"], help="measured s per sweep rate")
    p.add_argument(
        "--ranking",
        type=_ranking,
        default=FULL["ranking"],
        help="candidate counts of the ranking section (one user vs N items as rows, columns, context+candidates); "
        "'off' to skip it",
    )
    p.add_argument(
        "--by-id",
        type=_stores,
        default=FULL["by_id"],
        help="item stores of the ranking-by-id section, with the ranking section (file, redis: a redis-server started "
        "here; 'off' to skip)",
    )
    p.add_argument(
        "--catalogue-items", type=int, default=FULL["catalogue_items"], help="items in the ranking-by-id catalogue"
    )
    p.add_argument(
        "--only-by-id",
        action="store_true",
        help="the floor and ranking by id alone, at each --ranking size; --markdown then gets (or replaces) its own "
        "section only",
    )
    p.add_argument("--note", default="", help="a sentence for the report (e.g. what else ran on the machine)")
    p.add_argument("--slo-ms", type=float, default=10.0, help="p99 objective that defines the knee")
    p.add_argument("--max-errors", type=float, default=0.01, help="error fraction objective of the knee")
    p.add_argument("--run", help="training run of the bundle: also time torch eager (imports torch)")
    p.add_argument("--markdown", help="also write a markdown report here (its figures go to ./figures beside it)")
    p.add_argument("--pin", action="store_true", help="servers and in-process runs on CPU 0, the client on CPU 1")
    p.add_argument(
        "--mlserver",
        nargs="?",
        const=str(mlserver_peer.DEFAULT_VENV),
        metavar="VENV",
        help="also measure MLServer 1.7.1's v2 endpoint (same requests as v2-json), served from VENV "
        f"(default {mlserver_peer.DEFAULT_VENV.name}/, made by `{mlserver_peer.SETUP}`); a benchmark, never CI",
    )
    p.add_argument(
        "--whole-machine",
        type=int,
        default=0,
        metavar="W",
        help="also `apg serve --workers W` (1 onnxruntime thread each) driven by W connections vs the best W-thread "
        "in-process floor, at batch 1024, never pinned (the issue's figure: W=2)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="batch 1 and 64, few calls, short sweep, ranking at 10 and 50 candidates (by id from a file store of "
        "2,000 items): well under a minute (replaces the defaults of --batch-sizes, --duration, --iterations, "
        "--rates, --sweep-duration, --ranking, --by-id and --catalogue-items, not values given)",
    )


def config_from_args(args, command: str) -> BenchConfig:
    q = {k: getattr(args, k) for k in FULL}
    if args.quick:  # --quick replaces the defaults, not options given explicitly
        q = {k: QUICK[k] if v == FULL[k] else v for k, v in q.items()}
    if q["duration"] <= 0 or q["iterations"] < 1 or q["sweep_duration"] <= 0 or args.threads < 1:
        raise ValueError("--duration, --sweep-duration, --iterations and --threads must be positive")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        raise ValueError("--pin needs two CPUs")
    if args.only_by_id and not (q["ranking"] and q["by_id"]):
        raise ValueError("--only-by-id measures ranking by id: it needs --ranking sizes and a --by-id store")
    if args.whole_machine < 0 or args.whole_machine == 1:
        raise ValueError("--whole-machine needs 2 or more workers (the 1-worker figures are the main tables)")
    mlserver = Path(args.mlserver) if args.mlserver else None
    if mlserver is not None:
        mlserver_peer.require_venv(mlserver)  # FileNotFoundError naming the setup command
    bundle = Path(args.bundle).resolve()
    if not (bundle / "bundle.json").is_file():
        raise FileNotFoundError(f"no bundle at {args.bundle} (build one with `apg export`, see docs/BUNDLE.md)")
    budget = Budget(q["duration"], q["iterations"], warmup=min(0.5, q["duration"] / 4))
    return BenchConfig(
        bundle=bundle,
        out=Path(args.out),
        threads=args.threads,
        batch_sizes=q["batch_sizes"],
        budget=budget,
        rates=q["rates"],
        sweep_duration=q["sweep_duration"],
        ranking=q["ranking"],
        by_id=q["by_id"] if q["ranking"] else (),
        catalogue_items=q["catalogue_items"],
        only_by_id=args.only_by_id,
        note=args.note,
        mlserver=mlserver,
        whole_machine=args.whole_machine,
        slo_ms=args.slo_ms,
        max_errors=args.max_errors,
        run=Path(args.run) if args.run else None,
        markdown=Path(args.markdown) if args.markdown else None,
        pin=args.pin,
        quick=args.quick,
        command=command,
    )


def run_from_args(args) -> int:
    """`apg bench`: measure, print the tables, write OUT/bench.json, the plots and (--markdown) the report.
    Raises ValueError, FileNotFoundError or RuntimeError with a message for the user."""
    cfg = config_from_args(args, args.command_line)
    t0 = time.monotonic()
    if cfg.only_by_id:
        return _write_by_id(cfg, run_by_id(cfg), t0)
    doc = run_bench(cfg)
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    cfg.out.mkdir(parents=True, exist_ok=True)
    files = performance_report.write_plots(doc, cfg.out)
    doc["files"] = {k: str(v) for k, v in files.items()}
    (cfg.out / "bench.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(performance_report.text_report(doc))
    if cfg.markdown is not None:
        performance_report.write_markdown(doc, files, cfg.markdown)
        print(f"wrote {cfg.markdown}")
    print(f"wrote {cfg.out / 'bench.json'}, " + ", ".join(str(f) for f in files.values()))
    return 0


def _write_by_id(cfg: BenchConfig, doc: dict, t0: float) -> int:
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "bench-ranking-ids.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    text = ranking_ids_report.section(doc)
    print(text)
    if cfg.markdown is not None:
        ranking_ids_report.write_section(cfg.markdown, text)
        print(f"wrote the ranking-by-id section of {cfg.markdown}")
    print(f"wrote {cfg.out / 'bench-ranking-ids.json'}")
    return 0
