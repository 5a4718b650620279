"""`python -m scripts.bench.reload`: how long POST /admin/reload takes to reach every worker of `apg serve --workers N`.

    python -m scripts.bench.reload                                # bundles/default, 2 workers, 10 rounds
    python -m scripts.bench.reload --bundle B --workers 4 --rounds 20 --out runs/reload.json

The bundle is copied twice into a temporary APG_BUNDLE_ROOT, the second copy under another model version (the same
graph re-exported: every worker must load it). `apg serve --workers N` serves the first on a free 127.0.0.1 port; each
round reloads the other copy through POST /admin/reload and polls GET /metrics every --poll-ms until apg_model_info
says that all N workers serve the new version and none the old one. Printed per round and summarised (median, max):
  answer    the admin call: load, validate and warm-up in the worker that took it
  all       from the call's start until every worker serves the new version (the reload latency)
  follow    all - answer: how long the other workers took to follow
Rounds start after a random pause (uniform in 0..--pause s, seeded), so that they do not fall in step with any period
of the server's. Every wait is bounded (--timeout per round); the server is always stopped; localhost only.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scripts.clients.http import HOST, Connection, build_request
from scripts.clients.launch import REPO, clean_env, free_port, serve_command, start, stop

TOKEN = "bench-reload"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.reload", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / "bundles" / "default", help="the bundle to serve and reload")
    p.add_argument("--workers", type=int, default=2, help="apg serve --workers (at least 2)")
    p.add_argument("--rounds", type=int, default=10, help="reloads measured")
    p.add_argument("--poll-ms", type=float, default=5.0, help="GET /metrics every this many ms while waiting")
    p.add_argument("--pause", type=float, default=0.5, help="a random pause of up to this many s before each round")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a round may take before it fails")
    p.add_argument("--out", type=Path, help="write the rounds and the summary here (JSON)")
    args = p.parse_args(argv)
    if args.workers < 2:
        p.error("--workers must be at least 2: one worker has nobody to fan out to")
    return args


def versions_served(conn: Connection) -> dict[str, float]:
    """version → workers serving it, from apg_model_info (summed over the live workers)."""
    status, _, body = conn.get("/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    served: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("apg_model_info{"):
            version = line.split('version="', 1)[1].split('"', 1)[0]
            served[version] = served.get(version, 0.0) + float(line.rsplit(" ", 1)[1])
    return served


def wait_until_all_serve(conn: Connection, version: str, workers: int, poll_s: float, deadline: float) -> float:
    """The monotonic time at which every worker served `version` (and no worker another one)."""
    while True:
        served = versions_served(conn)
        if served.get(version) == workers and not any(n for v, n in served.items() if v != version):
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"workers still on {served} instead of {workers} on {version!r}")
        time.sleep(poll_s)


def copies(bundle: Path, root: Path) -> list[tuple[Path, str]]:
    """Two copies of `bundle` under `root`: (path, model version), the second one re-versioned (same graph)."""
    made = []
    for suffix in ("", "-reload"):
        path = root / f"bundle{suffix or '-served'}"
        shutil.copytree(bundle, path)
        manifest = json.loads((path / "bundle.json").read_text())
        manifest["model"]["version"] += suffix
        (path / "bundle.json").write_text(json.dumps(manifest, indent=1))
        made.append((path, manifest["model"]["version"]))
    return made


def measure(args: argparse.Namespace, root: Path) -> list[dict[str, float]]:
    (first, first_version), (second, second_version) = copies(args.bundle.resolve(), root)
    port = free_port()
    env = clean_env(APG_ADMIN_TOKEN=TOKEN, APG_BUNDLE_ROOT=str(root), APG_LOG_LEVEL="warning", TMPDIR=str(root))
    server = start("apg-serve", serve_command(first, port, args.workers), port, env, root / "serve.log")
    rounds = []
    try:
        server.wait_ready()
        with Connection(port, HOST, timeout=args.timeout) as metrics:
            deadline = time.perf_counter() + 90
            wait_until_all_serve(metrics, first_version, args.workers, args.poll_ms / 1000, deadline)
            targets = [(second, second_version), (first, first_version)]
            pauses = random.Random(0)
            for i in range(args.rounds):
                path, version = targets[i % 2]
                time.sleep(pauses.uniform(0, args.pause))
                body = json.dumps({"bundle": str(path)}).encode()
                raw = build_request("/admin/reload", body, headers={"Authorization": f"Bearer {TOKEN}"})
                started = time.perf_counter()
                with Connection(port, HOST, timeout=args.timeout) as admin:  # a new connection: any worker takes it
                    status, _, answer = admin.request(raw)
                answered = time.perf_counter()
                if status != 200:
                    raise RuntimeError(f"POST /admin/reload answered {status}: {answer[:300]!r}")
                deadline = started + args.timeout
                done = wait_until_all_serve(metrics, version, args.workers, args.poll_ms / 1000, deadline)
                rounds.append({"answer": answered - started, "all": done - started, "follow": done - answered})
                times = "   ".join(f"{key} {seconds * 1000:7.1f} ms" for key, seconds in rounds[-1].items())
                print(f"round {i + 1}: {times}", flush=True)
    except BaseException:
        print((root / "serve.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        stop(server.process)
    return rounds


def summary(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    result = {}
    for key in ("answer", "all", "follow"):
        times = [r[key] * 1000 for r in rounds]
        result[key] = {"median_ms": statistics.median(times), "max_ms": max(times)}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="apg-bench-reload-") as tmp:
        rounds = measure(args, Path(tmp))
    result = summary(rounds)
    for key, s in result.items():
        print(f"{key:>7}: median {s['median_ms']:7.1f} ms   max {s['max_ms']:7.1f} ms")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"bundle": str(args.bundle), "workers": args.workers, "rounds": rounds, "summary": result}
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
