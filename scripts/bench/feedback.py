"""The feedback store's cost on the scoring hot path: `record()` per request and per row, and what its writer drains.

    python -m scripts.bench.feedback --backend sqlite redis --requests 20000 --rows 1 16 256

For each backend and rows per request: the mean µs of a `record()` call (what /score pays: the enqueue), over
--requests calls made as fast as one thread can, and the writer's throughput, rows per second from the first call
until `flush()` returns (the buffer is sized so that nothing is dropped; drops are reported if any were). A Redis
store gets its own redis-server on a free 127.0.0.1 port (Debian's redis-server; scripts/install_redis.sh), without
persistence, stopped at the end; a SQLite store a fresh file in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from service.feedback import FeedbackConfig, open_store

READY_TIMEOUT_S = 10.0


@contextlib.contextmanager
def redis_server(directory: str | Path) -> Iterator[str]:
    """A redis-server on a free 127.0.0.1 port (no persistence, files in `directory`); yields its redis:// URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (bash scripts/install_redis.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    log = open(Path(directory) / "redis.log", "wb")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen([*argv, "--dir", str(directory)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_ping(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _wait_for_ping(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not answer PING (exit code {process.poll()})")


def measure(url: str, requests: int, rows: int, seed: int = 0) -> dict:
    """record() µs per call and per row, and rows written per second, for one store and request size."""
    scores = np.random.default_rng(seed).random((requests, rows))
    config = FeedbackConfig(url, queue_requests=requests + 1, prune_interval_s=3600, key_prefix=f"bench-{rows}")
    with open_store(config) as store:
        t0 = time.perf_counter()
        for i in range(requests):
            store.record(f"bench-{rows}-{i}", ("control", "treatment")[i % 2], "deepfm", "1", scores[i])
        enqueued = time.perf_counter() - t0
        flushed = store.flush(timeout=600)
        total = time.perf_counter() - t0
        dropped = store.counts["dropped_rows"]
    return {
        "backend": url.partition(":")[0],
        "rows_per_request": rows,
        "requests": requests,
        "record_us_per_call": round(enqueued / requests * 1e6, 2),
        "record_us_per_row": round(enqueued / (requests * rows) * 1e6, 3),
        "writer_rows_per_s": round(requests * rows / total) if flushed else None,
        "dropped_rows": dropped,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", nargs="+", choices=("sqlite", "redis"), default=["sqlite", "redis"])
    p.add_argument("--requests", type=int, default=20_000, help="record() calls per measurement")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 16, 256], help="rows per request")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="apg-feedback-bench-") as tmp, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(tmp)) if "redis" in args.backend else None
        for backend in args.backend:
            for rows in args.rows:
                url = f"sqlite://{tmp}/feedback-{rows}.db" if backend == "sqlite" else redis_url
                results.append(measure(url, args.requests, rows))
                print(json.dumps(results[-1]))
    print(f"\n{'backend':8s} {'rows':>5s} {'µs/call':>9s} {'µs/row':>8s} {'writer rows/s':>14s} {'dropped':>8s}")
    for r in results:
        print(
            f"{r['backend']:8s} {r['rows_per_request']:5d} {r['record_us_per_call']:9.2f} {r['record_us_per_row']:8.3f}"
            f" {r['writer_rows_per_s'] or 0:14d} {r['dropped_rows']:8d}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
