"""`apg loadtest`: plan the run, wait for the server, one open-loop run per rate with the chosen engine, report.

The package docstring (scripts/loadtest/__init__.py) says what each module does.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from features import RowSampler, read_schema
from scripts.clients.http import build_request, wait_ready
from scripts.loadtest.httpx_engine import run_load
from scripts.loadtest.latency_report import find_knee, format_table, passes, summarise, write_results
from scripts.loadtest.plan import build_bodies, build_schedule, check_target, context_features, endpoint, sweep_rates
from scripts.loadtest.raw_engine import open_loop
from scripts.loadtest.records import LoadConfig, Records


def run_from_args(args) -> int:
    """`apg loadtest`: one run at --rate, or a sweep; prints the table and writes --out. Raises ValueError,
    FileNotFoundError or RuntimeError with a message for the user (a refused target, a missing bundle, no server)."""
    check_target(args.url, args.allow_remote)
    rates = sweep_rates(args) or [args.rate]
    planned = sum(r * (args.duration + args.warmup) for r in rates)
    if planned > args.max_requests:
        raise ValueError(f"the plan sends about {planned:.0f} requests, over --max-requests {args.max_requests}")
    schema, bundle_model = read_schema(args.bundle)
    sampler = RowSampler(schema, args.seed, args.unseen)
    url, path = args.url, endpoint(args.format, args.model or bundle_model)
    if args.protocol == "grpc":  # KServe v2 ModelInfer calls instead (grpc_engine.py)
        from scripts.loadtest import grpc_engine

        url, path, bodies = grpc_engine.plan(args, sampler, bundle_model)
    else:
        context = (schema.user_column,) if schema.user_column else ()  # --format ranking: the user
        if args.format == "ranking-ids":  # the user's features: the candidates are ids alone
            context = tuple(context_features(schema.to_dict())[0])
        pin = args.model if args.format != "v2" else None
        bodies = build_bodies(sampler, args.format, args.rows, args.pool, context, pin, args.id_column)
    token = args.token or os.environ.get("APG_AUTH_TOKEN")
    wait_ready(args.url, args.ready_timeout, token=token)
    base = LoadConfig(
        url=url,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        arrivals=args.arrivals,
        concurrency=args.concurrency,
        path=path,
        token=token,
        timeout=args.timeout,
        drain=args.drain if args.drain is not None else args.timeout,
        rows=args.rows,
        seed=args.seed,
    )
    runs = run_rates(base, rates, bodies, args)
    knee = find_knee([s for s, _ in runs], args.slo_ms, args.max_errors) if len(rates) > 1 else None
    print(format_table([s for s, _ in runs]))
    if len(rates) > 1:
        met = f"{knee:g} req/s" if knee is not None else "no offered rate met the SLO"
        print(f"knee: {met} (p99 <= {args.slo_ms:g} ms, errors <= {args.max_errors:g})")
    meta = {
        "url": url,
        "path": path,
        "format": args.format,
        "bundle": str(args.bundle),
        "seed": args.seed,
        "warmup_s": args.warmup,
        "slo_ms": args.slo_ms,
        "max_errors": args.max_errors,
        "sweep": len(rates) > 1,
        "knee_rate": knee,
    }
    files = write_results(Path(args.out), runs, meta)
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def run_rates(base: LoadConfig, rates: list[float], bodies: list[bytes], args) -> list[tuple[dict, Records]]:
    """One run per rate, in order; a sweep stops after the first rate that misses the SLO unless --sweep-all."""
    runs: list[tuple[dict, Records]] = []
    for rate in rates:
        cfg = replace(base, rate=rate)
        schedule = build_schedule(rate, cfg.warmup + cfg.duration, cfg.arrivals, cfg.seed)[: args.max_requests]
        print(f"{rate:g} req/s x {cfg.rows} rows: {len(schedule)} requests ({cfg.arrivals}) -> {cfg.url}{cfg.path}")
        rec = run_engine(cfg, bodies, schedule, args.client)
        runs.append((summarise(rec, cfg), rec))
        if len(rates) > 1 and not args.sweep_all and not passes(runs[-1][0], args.slo_ms, args.max_errors):
            print(f"{rate:g} req/s misses the SLO: sweep stopped (--sweep-all to go on)")
            break
    return runs


def run_engine(cfg: LoadConfig, bodies: list[bytes], schedule: np.ndarray, client: str) -> Records:
    """One open-loop run with the raw-socket engine (http:// URLs, unless --client httpx), httpx, or gRPC (grpc://)."""
    parts = urlsplit(cfg.url)
    if parts.scheme == "grpc":
        from scripts.loadtest import grpc_engine

        return asyncio.run(grpc_engine.run_load(parts.netloc, cfg, bodies, schedule))
    if client == "raw" and parts.scheme != "http":
        raise ValueError(f"--client raw speaks plain HTTP; use --client httpx for {cfg.url}")
    if client == "httpx" or parts.scheme != "http":
        return asyncio.run(run_load(cfg, bodies, schedule))
    headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
    host, port = parts.hostname, parts.port or 80
    raws = [build_request(cfg.path, b, headers=headers, host=parts.netloc) for b in bodies]
    try:
        return open_loop(host, port, raws, schedule, cfg.concurrency, timeout=cfg.timeout, drain=cfg.drain)
    except OSError as exc:
        raise RuntimeError(f"cannot connect to {cfg.url}: {exc}") from None
