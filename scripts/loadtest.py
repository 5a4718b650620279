"""Open-loop load generator for `POST /score` and KServe v2 `infer` (`apg loadtest`).

Open loop: the send times are fixed before the run (constant or Poisson arrivals at `--rate`), and each request
starts at its scheduled time whether or not earlier ones have returned. Latency is measured from the *scheduled*
time, so time spent queueing behind a slow server, or behind the `--concurrency` cap, counts (no coordinated
omission); the service time from the actual send is recorded too. When the server cannot keep up, the achieved
rate (successful completions per second) falls below the target and the latency grows: both are reported as is.

    apg loadtest --url http://127.0.0.1:8000 --rate 200 --duration 20 --rows 16
    apg loadtest --sweep-start 50 --sweep-factor 2 --sweep-max 3200 --slo-ms 25   # find the knee

Request bodies are sampled from the bundle's fitted schema (vocabularies, bucket edges) and serialised before the
run. Results go to `--out`: summary.json, requests.csv (one line per request) and latency.png.
Only loopback hosts are loaded unless `--allow-remote` is given. Two engines send the requests: for http:// URLs
plain sockets on one selector loop (loadtest_raw.py), which keeps its schedule at thousands of requests/s from one
core; httpx (here) for https:// or with `--client httpx`, which falls behind above ~400 requests/s on one core (the
*lag* column says by how much). This file is the command line and the httpx engine; the plan (target check,
schedule, rows, bodies) is in loadtest_plan.py, the statistics and files in loadtest_report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from scripts.loadtest_plan import (
    RowSampler,
    build_bodies,
    build_schedule,
    check_target,
    endpoint,
    load_schema,
    sweep_rates,
)
from scripts.loadtest_report import find_knee, format_table, passes, summarise, write_results


@dataclass(frozen=True)
class LoadConfig:
    url: str
    rate: float  # target requests/s
    duration: float = 10.0  # measured seconds (after the warm-up)
    warmup: float = 0.0  # seconds sent but excluded from the statistics
    arrivals: str = "poisson"  # constant | poisson
    concurrency: int = 64  # requests in flight at most (= HTTP connections)
    path: str = "/score"
    token: str | None = None
    timeout: float = 10.0  # per request, from the actual send
    drain: float = 10.0  # after the last scheduled send, wait this long for stragglers
    rows: int = 1  # rows per request (for rows/s)
    seed: int = 0


# ---------------------------------------------------------------- the run


@dataclass
class Records:
    """Per-request times in seconds from the run's start (NaN: did not happen); status 0 = no HTTP response."""

    scheduled: np.ndarray
    dispatched: np.ndarray = field(init=False)  # when the generator started the request (scheduler lag)
    sent: np.ndarray = field(init=False)  # when it got a connection slot and went out
    done: np.ndarray = field(init=False)
    status: np.ndarray = field(init=False)
    error: list[str | None] = field(
        init=False
    )  # http_<code> | timeout | connect | connection | unsent | cancelled | error_<exception>

    def __post_init__(self) -> None:
        n = len(self.scheduled)
        self.dispatched, self.sent, self.done = (np.full(n, np.nan) for _ in range(3))
        self.status = np.zeros(n, dtype=np.int64)
        self.error = [None] * n


async def run_load(cfg: LoadConfig, bodies: list[bytes], schedule: np.ndarray) -> Records:
    """Send bodies[i % len(bodies)] at schedule[i] (open loop) and record every request."""
    rec = Records(schedule)
    headers = {"content-type": "application/json"}
    if cfg.token:
        headers["authorization"] = f"Bearer {cfg.token}"
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    async with httpx.AsyncClient(
        base_url=cfg.url, headers=headers, limits=limits, timeout=cfg.timeout, trust_env=False
    ) as client:
        gate = asyncio.Semaphore(cfg.concurrency)
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.01
        tasks = []
        for i, at in enumerate(schedule):
            delay = t0 + at - loop.time()
            await asyncio.sleep(max(delay, 0))  # 0: behind schedule, but let the sends run
            rec.dispatched[i] = loop.time() - t0
            tasks.append(asyncio.create_task(_send(client, gate, cfg, rec, i, bodies[i % len(bodies)], t0)))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=cfg.drain)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    return rec


async def _send(client, gate, cfg: LoadConfig, rec: Records, i: int, body: bytes, t0: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with gate:  # the concurrency cap: waiting here counts in the latency
            rec.sent[i] = loop.time() - t0
            async with asyncio.timeout(cfg.timeout):
                resp = await client.post(cfg.path, content=body)
            rec.status[i] = resp.status_code
            rec.error[i] = None if resp.is_success else f"http_{resp.status_code}"
    except (TimeoutError, httpx.TimeoutException):
        rec.error[i] = "timeout"
    except httpx.ConnectError:
        rec.error[i] = "connect"
    except httpx.TransportError:
        rec.error[i] = "connection"
    except asyncio.CancelledError:  # still outstanding when the drain time ran out
        rec.error[i] = "unsent" if np.isnan(rec.sent[i]) else "cancelled"
        raise
    except Exception as exc:  # anything else is still one failed request, named, not a crashed run
        rec.error[i] = f"error_{type(exc).__name__}"
    rec.done[i] = loop.time() - t0


async def wait_ready(url: str, timeout: float, token: str | None = None) -> None:
    """Poll GET /readyz until 200, or raise RuntimeError after `timeout` seconds."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    deadline, last = time.monotonic() + timeout, "no answer"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=2.0, trust_env=False) as client:
        while True:
            try:
                resp = await client.get("/readyz")
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/readyz not ready after {timeout:g} s ({last})")
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------- command line


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg loadtest` (also `python -m scripts.loadtest`)."""
    p.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the service (loopback only by default)")
    p.add_argument("--rate", type=_positive(float), default=100.0, help="target requests/s (single run)")
    p.add_argument("--duration", type=_positive(float), default=10.0, help="measured seconds per run")
    p.add_argument(
        "--warmup", type=_non_negative, default=2.0, help="seconds of load before measuring (excluded from stats)"
    )
    p.add_argument("--arrivals", choices=["constant", "poisson"], default="poisson", help="inter-arrival times")
    p.add_argument("--rows", type=_positive(int), default=1, help="rows per request")
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        default=64,
        help="cap on requests in flight (= connections); requests over it wait, and the wait counts in the latency",
    )
    p.add_argument(
        "--format", choices=["rows", "columns", "v2"], default="rows", help="body: /score rows or columns, or v2 infer"
    )
    p.add_argument("--model", help="model name for --format v2 (default: the bundle's model name)")
    p.add_argument("--token", help="bearer token (default: $APG_AUTH_TOKEN)")
    p.add_argument(
        "--bundle", default="bundles/default", help="bundle directory (or bundle.json/schema.json) to sample rows from"
    )
    p.add_argument(
        "--pool", type=_positive(int), default=256, help="distinct request bodies built before the run and cycled"
    )
    p.add_argument("--unseen", type=float, default=0.02, help="fraction of categorical values not in the vocabulary")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrivals and the sampled rows")
    p.add_argument(
        "--timeout", type=_positive(float), default=10.0, help="per-request timeout in s, from the actual send"
    )
    p.add_argument(
        "--drain",
        type=_non_negative,
        help="s to wait after the last scheduled send before giving up on what is "
        "outstanding (counted as errors 'unsent'/'cancelled'; default: --timeout)",
    )
    p.add_argument(
        "--ready-timeout", type=_positive(float), default=10.0, help="s to wait for GET /readyz before starting"
    )
    p.add_argument(
        "--client",
        choices=["auto", "raw", "httpx"],
        default="auto",
        help="raw: plain HTTP/1.1 sockets on one selector loop, keeps its schedule at thousands of requests/s (auto "
        "for http:// URLs); httpx: any URL, https too, falls behind above ~400 requests/s on one core (see 'lag')",
    )
    p.add_argument("--out", default="runs/loadtest", help="directory for summary.json, requests.csv, latency.png")
    s = p.add_argument_group("sweep (find the knee: the highest rate meeting the SLO)")
    s.add_argument("--sweep", help="comma-separated offered rates, e.g. 50,100,200,400")
    s.add_argument("--sweep-start", type=_positive(float), help="geometric sweep: first rate")
    s.add_argument("--sweep-factor", type=float, default=2.0, help="geometric sweep: ratio between rates")
    s.add_argument("--sweep-max", type=_positive(float), help="geometric sweep: last rate at most")
    s.add_argument("--sweep-all", action="store_true", help="keep going after the first rate that misses the SLO")
    s.add_argument("--slo-ms", type=float, default=50.0, help="p99 latency objective (ms)")
    s.add_argument("--max-errors", type=float, default=0.01, help="error fraction objective")
    g = p.add_argument_group("safety")
    g.add_argument(
        "--max-requests", type=_positive(int), default=200_000, help="refuse a plan of more requests than this"
    )
    g.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")


def run_from_args(args) -> int:
    """`apg loadtest`: one run at --rate, or a sweep; prints the table and writes --out. Raises ValueError,
    FileNotFoundError or RuntimeError with a message for the user (a refused target, a missing bundle, no server)."""
    check_target(args.url, args.allow_remote)
    rates = sweep_rates(args) or [args.rate]
    planned = sum(r * (args.duration + args.warmup) for r in rates)
    if planned > args.max_requests:
        raise ValueError(f"the plan sends about {planned:.0f} requests, over --max-requests {args.max_requests}")
    schema, bundle_model = load_schema(args.bundle)
    path = endpoint(args.format, args.model or bundle_model)
    bodies = build_bodies(RowSampler(schema, args.seed, args.unseen), args.format, args.rows, args.pool)
    token = args.token or os.environ.get("APG_AUTH_TOKEN")
    asyncio.run(wait_ready(args.url, args.ready_timeout, token))
    base = LoadConfig(
        url=args.url,
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
    meta = {"url": args.url, "path": path, "format": args.format, "bundle": str(args.bundle), "seed": args.seed,
            "warmup_s": args.warmup, "slo_ms": args.slo_ms, "max_errors": args.max_errors,
            "sweep": len(rates) > 1, "knee_rate": knee}  # fmt: skip
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
        rec = _run(cfg, bodies, schedule, args.client)
        runs.append((summarise(rec, cfg), rec))
        if len(rates) > 1 and not args.sweep_all and not passes(runs[-1][0], args.slo_ms, args.max_errors):
            print(f"{rate:g} req/s misses the SLO: sweep stopped (--sweep-all to go on)")
            break
    return runs


def _run(cfg: LoadConfig, bodies: list[bytes], schedule: np.ndarray, client: str) -> Records:
    """One open-loop run with the raw-socket engine (http:// URLs, unless --client httpx) or httpx."""
    parts = urlsplit(cfg.url)
    if client == "raw" and parts.scheme != "http":
        raise ValueError(f"--client raw speaks plain HTTP; use --client httpx for {cfg.url}")
    if client == "httpx" or parts.scheme != "http":
        return asyncio.run(run_load(cfg, bodies, schedule))
    from scripts.loadtest_raw import build_request, open_loop

    headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
    host, port = parts.hostname, parts.port or 80
    raws = [build_request(cfg.path, b, headers=headers, host=parts.netloc) for b in bodies]
    try:
        return open_loop(host, port, raws, schedule, cfg.concurrency, timeout=cfg.timeout, drain=cfg.drain)
    except OSError as exc:
        raise RuntimeError(f"cannot connect to {cfg.url}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.loadtest",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_from_args(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
