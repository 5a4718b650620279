"""`python -m scripts.bench.overload`: what a 503 costs the server against a scored answer, and goodput under overload.

    python -m scripts.bench.overload --bundle bundles/default --rows 16              # this checkout's service
    python -m scripts.bench.overload --bundle bundles/default --rows 16 --repo /tmp/old   # another checkout's

A `python -m service` with APG_MAX_CONCURRENCY=2 APG_MAX_QUEUE=4 (issue 13 item 5's setting) on 127.0.0.1, loaded open
loop by the raw engine of `apg loadtest`. Each round: the capacity K (as many connections as admission takes, so nothing
is refused), then 3K offered over 64 connections. The server's CPU seconds (from /proc) give s, its CPU per scored
answer (from the first run), and r, per refusal (the second run's CPU less its scored answers at s). Goodput is
reported as measured and per CPU second of the server, which does not depend on the share of a core a shared machine
leaves it: a refusal must cost r <= 0.09 s for goodput at 3x to stay >= 80 % of the knee. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from features import RowSampler, read_schema
from scripts.clients.http import build_request
from scripts.clients.launch import clean_env, start_apg, stop
from scripts.loadtest.plan import build_bodies, build_schedule
from scripts.loadtest.raw_engine import open_loop

LIMITS = {"APG_MAX_CONCURRENCY": "2", "APG_MAX_QUEUE": "4"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(pid: int, port: int, requests: list[bytes], rate: float, seconds: float, connections: int) -> dict:
    used = cpu_seconds(pid)
    rec = open_loop("127.0.0.1", port, requests, build_schedule(rate, seconds, "constant"), connections, 10, 1)
    used = cpu_seconds(pid) - used
    scored = int((rec.status == 200).sum())
    in_time = int(((rec.status == 200) & (rec.done <= seconds)).sum())
    return {"scored": scored, "refused": int((rec.status == 503).sum()), "cpu_s": used, "goodput": in_time / seconds}


def measure(pid: int, port: int, requests: list[bytes], seconds: float) -> dict:
    knee = run(pid, port, requests, 1e5, seconds, 6)  # 6 = APG_MAX_CONCURRENCY + APG_MAX_QUEUE: nothing refused
    over = run(pid, port, requests, 3 * knee["goodput"], seconds, 64)
    s = knee["cpu_s"] / max(knee["scored"], 1)
    r = (over["cpu_s"] - over["scored"] * s) / max(over["refused"], 1)
    per_cpu = (over["scored"] / max(over["cpu_s"], 1e-3)) / (knee["scored"] / max(knee["cpu_s"], 1e-3))
    return {
        "K": knee["goodput"],
        "3K goodput": over["goodput"],
        "refused": over["refused"],
        "s_us": s * 1e6,
        "r_us": r * 1e6,
        "r/s": r / s,
        "goodput 3K/K": over["goodput"] / knee["goodput"],
        "per CPU s 3K/K": per_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.overload", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("bundles/default"), help="bundle directory to serve")
    p.add_argument("--repo", type=Path, default=Path.cwd(), help="checkout whose service runs (default: this one)")
    p.add_argument("--rows", type=int, default=16, help="rows per request")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (capacity, 3x) runs")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per run")
    p.add_argument("--port", type=int, default=8077)
    args = p.parse_args(argv)
    bundle = args.bundle.resolve()
    env = clean_env(APG_PROVIDERS="cpu", APG_WARMUP_BATCH_SIZES="1", APG_DRAIN_GRACE_S="0", **LIMITS)
    with tempfile.TemporaryDirectory(prefix="apg-overload-") as logs:  # its log (the access log: dropped after)
        server = start_apg(bundle, Path(logs) / "serve.log", env, port=args.port, cwd=args.repo)
        pid = server.process.pid
        try:
            schema, _ = read_schema(bundle)
            bodies = build_bodies(RowSampler(schema, seed=0), "rows", args.rows, 64)
            requests = [build_request("/score", b) for b in bodies]
            run(pid, args.port, requests, 200, 1, 6)  # warm-up
            for i in range(args.rounds):
                out = measure(pid, args.port, requests, args.seconds)
                cells = ", ".join(f"{k} {v:.3g}" for k, v in out.items())
                print(f"round {i + 1}, {args.rows} rows: {cells}", flush=True)
        finally:
            stop(server.process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
