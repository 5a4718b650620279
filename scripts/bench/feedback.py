"""The feedback store's cost on the scoring hot path: `record()` per request and per row, and what its writer drains.

    python -m scripts.bench.feedback --backend sqlite redis --requests 20000 --rows 1 16 256

For each backend and rows per request, best of --rounds: the mean µs of a `record()` call (what /score pays: the
enqueue) over --requests calls made as fast as one thread can, with the writer asleep; then the writer's µs per row
to write them all once woken (its CPU is taken off the request path, not off the process). The buffer is sized so
that nothing is dropped; a lost row fails the run. A Redis
store gets its own redis-server on a free 127.0.0.1 port (Debian's redis-server; scripts/install_debian.sh), without
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

from scripts.clients.launch import free_port
from service.feedback import FeedbackConfig, open_store

READY_TIMEOUT_S = 10.0


@contextlib.contextmanager
def redis_server(directory: str | Path) -> Iterator[str]:
    """A redis-server on a free 127.0.0.1 port (no persistence, files in `directory`); yields its redis:// URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (bash scripts/install_debian.sh)")
    port = free_port()
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


def measure(url: str, requests: int, rows: int, rounds: int = 3, seed: int = 0) -> dict:
    """Best of `rounds`: record() µs per call with the writer idle (what /score pays), then the writer's µs per row
    to write all of it (woken by flush(); what the writer thread takes from the process, off the request path)."""
    scores = np.random.default_rng(seed).random((requests, rows))
    best_record, best_write = float("inf"), float("inf")
    for r in range(rounds):
        config = FeedbackConfig(
            url, queue_requests=requests + 1, flush_interval_s=3600, prune_interval_s=3600, key_prefix=f"bench-{rows}"
        )
        with open_store(config) as store:
            t0 = time.perf_counter()
            for i in range(requests):
                store.record(f"bench-{rows}-{r}-{i}", ("control", "treatment")[i % 2], "deepfm", "1", scores[i])
            t1 = time.perf_counter()
            if not store.flush(timeout=600) or store.counts["dropped_rows"] or store.counts["write_errors"]:
                raise RuntimeError(f"{url}: the writer lost rows ({store.counts})")
            t2 = time.perf_counter()
        best_record, best_write = min(best_record, t1 - t0), min(best_write, t2 - t1)
    return {
        "backend": url.partition(":")[0],
        "rows_per_request": rows,
        "requests": requests,
        "record_us_per_call": round(best_record / requests * 1e6, 2),
        "record_us_per_row": round(best_record / (requests * rows) * 1e6, 3),
        "write_us_per_row": round(best_write / (requests * rows) * 1e6, 3),
        "writer_rows_per_s": round(requests * rows / best_write),
    }


def storage_sizes(sqlite_url: str | None, redis_url: str | None, requests: int = 10_000, rows: int = 16) -> dict:
    """Bytes the store takes: `requests` of `rows` rows, then feedback for every other request. SQLite: the file
    after a checkpoint, per scored row (labels included); Redis: used_memory per request, then per labelled row."""
    scores = np.random.default_rng(0).random((requests, rows))
    items = [
        {"request_id": f"size-{i}", "row": r, "clicked": r % 2 == 1} for i in range(0, requests, 2) for r in range(rows)
    ]
    out = {}
    for url in filter(None, (sqlite_url, redis_url)):
        used = _redis_used_memory(url) if url.startswith("redis") else None
        with open_store(FeedbackConfig(url, queue_requests=requests + 1, prune_interval_s=3600)) as store:
            for i in range(requests):
                store.record(f"size-{i}", ("control", "treatment")[i % 2], "deepfm-apg-self", "1", scores[i])
            store.flush(600)
            scored = _redis_used_memory(url) if used is not None else None
            for k in range(0, len(items), 1000):
                store.feedback(items[k : k + 1000])
            if used is None:
                store._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
                out["sqlite_bytes_per_row"] = round(store.path.stat().st_size / (requests * rows), 1)
            else:
                labelled = _redis_used_memory(url)
                out["redis_bytes_per_request"] = round((scored - used) / requests, 1)  # its `rows` scores included
                out["redis_bytes_per_labelled_row"] = round((labelled - scored) / len(items), 1)
    return out


def _redis_used_memory(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        return int(client.info("memory")["used_memory"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", nargs="+", choices=("sqlite", "redis"), default=["sqlite", "redis"])
    p.add_argument("--requests", type=int, default=20_000, help="record() calls per measurement")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 16, 256], help="rows per request")
    p.add_argument("--rounds", type=int, default=3, help="the best of this many rounds is reported")
    p.add_argument("--sizes", action="store_true", help="also measure the bytes a scored and a labelled row take")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    results, sizes = [], {}
    with tempfile.TemporaryDirectory(prefix="apg-feedback-bench-") as tmp, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(tmp)) if "redis" in args.backend else None
        for backend in args.backend:
            for rows in args.rows:
                url = f"sqlite://{tmp}/feedback-{rows}.db" if backend == "sqlite" else redis_url
                results.append(measure(url, args.requests, rows, args.rounds))
                print(json.dumps(results[-1]))
        if args.sizes:
            sqlite_url = f"sqlite://{tmp}/sizes.db" if "sqlite" in args.backend else None
            sizes = storage_sizes(sqlite_url, redis_url)
    print(f"\n{'backend':8s} {'rows':>5s} {'record µs/call':>15s} {'µs/row':>8s} {'write µs/row':>13s} {'rows/s':>10s}")
    for r in results:
        print(
            f"{r['backend']:8s} {r['rows_per_request']:5d} {r['record_us_per_call']:15.2f}"
            f" {r['record_us_per_row']:8.3f} {r['write_us_per_row']:13.3f} {r['writer_rows_per_s']:10d}"
        )
    if sizes:
        print("storage (16-row requests, every other one labelled):", json.dumps(sizes))
    if args.json:
        Path(args.json).write_text(json.dumps({"record": results, "sizes": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
