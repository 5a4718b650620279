"""The whole-machine figure of `apg bench --whole-machine W`: `apg serve --workers W` (1 onnxruntime thread per
worker) against the best in-process throughput with W threads, at batch 1024. Nothing is pinned: it uses every
CPU of the machine, the client's included (its CPU time is reported beside the figure).

The W-thread floor is the better of (a) W Python threads, each calling session.run on its own 1-thread session
(onnxruntime releases the GIL), and (b) one session with W intra-op threads, closed loop. The service is driven
by W client threads, one keep-alive connection each, spread one per worker (uvicorn's workers share one listening
socket, so which worker accepts a connection is chance: a connection that lands on a worker already holding one
is replaced; the placement is reported).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from scripts.bench.http_io import PATHS as HTTP_PATHS
from scripts.bench.http_io import request_bytes
from scripts.bench.measure import MIN_CALLS, Budget, floor_call, floor_model, stats, timed
from scripts.clients.http import Connection
from scripts.clients.launch import Servers, serve_command

BATCH = 1024
PATHS = ("score-columns", "v2-binary")
SPREAD_WAIT_S = 20.0


def measure(
    servers: Servers, env: dict, bundle_dir: Path, bundle, workers: int, rows: list, numeric: set, budget: Budget, say
) -> dict:
    """The floors, then `apg serve --workers W` started in `servers` (unpinned) with `env` but 1 onnxruntime thread
    per worker, measured with each of PATHS on `rows` (lists of BATCH rows); say(line) after each."""
    out: dict = {"workers": workers, "batch": BATCH, "cpus_usable": len(os.sched_getaffinity(0)), "pinned": False}
    feeds = [bundle.encoder.encode_rows(r) for r in rows]
    out["floor"] = measure_floors(bundle_dir, workers, feeds, budget)
    command = partial(serve_command, bundle_dir, workers=workers)
    server = servers.start("service-workers", command, {**env, "APG_INTRA_OP_THREADS": "1"})
    servers.wait_ready()
    for path in (p for p in HTTP_PATHS if p.name in PATHS):
        reqs = [request_bytes(path, r, numeric, bundle.name) for r in rows]
        out[path.name] = measure_service(server.port, server.process.pid, workers, reqs, budget)
        best = out["floor"][out["floor"]["best"]]["rows_per_s"]
        ratio = out[path.name]["rows_per_s"] / best
        say(f"whole machine, {workers} workers, {path.name} at batch {BATCH}: {ratio:.2f}x the {workers}-thread floor")
    return out


def parallel(calls: Sequence[Callable], items: Sequence, budget: Budget, rows: int) -> dict:
    """calls[i](item) closed loop on one thread per call, all at once: a warm-up, then `budget.duration` s measured
    from a common start (each thread at most budget.iterations calls); rows/s over the common wall time, latency
    percentiles over every call, and the CPU this process used meanwhile (cores)."""
    n = len(calls)
    start, lat = threading.Barrier(n + 1), [[] for _ in calls]
    stop = [float("inf")]  # set once every thread is warm
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        clock, k = time.perf_counter, i * 7  # each thread starts elsewhere in the pool
        try:
            end = clock() + budget.warmup
            while clock() < end or k < i * 7 + 2:
                calls[i](items[k % len(items)])
                k += 1
        except BaseException as exc:
            errors.append(exc)
        start.wait()
        try:
            while not errors and len(lat[i]) < budget.iterations:
                a = clock()
                calls[i](items[k % len(items)])
                b = clock()
                lat[i].append(b - a)
                k += 1
                if b >= stop[0] and len(lat[i]) >= MIN_CALLS:
                    break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    stop[0] = t0 + budget.duration
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if errors:
        raise RuntimeError(f"whole machine: a measuring thread failed: {errors[0]}") from errors[0]
    cell = stats(np.concatenate([np.array(x) for x in lat]), wall, rows)
    return {**cell, "threads": n, "bench_process_cpu_cores": round(cpu / wall, 3)}


def measure_floors(bundle: Path, workers: int, feeds: list[dict], budget: Budget) -> dict:
    """The W-thread floor both ways, and which one is better ("best")."""
    sessions = [floor_call(floor_model(bundle, 1)) for _ in range(workers)]
    out = {"sessions": parallel(sessions, feeds, budget, BATCH)}
    out["intra_op"] = {**stats(*timed(floor_call(floor_model(bundle, workers)), feeds, budget), BATCH)}
    out["intra_op"]["threads"] = workers
    out["best"] = max(("sessions", "intra_op"), key=lambda k: out[k]["rows_per_s"])
    return out


def measure_service(port: int, server_pid: int, workers: int, reqs: list[bytes], budget: Budget) -> dict:
    """W client threads, one connection each, spread over the workers; rows/s and latency at batch 1024."""
    conns, owners = spread(port, server_pid, workers, busy=reqs[0])
    try:

        def caller(conn: Connection) -> Callable[[bytes], None]:
            def call(raw: bytes) -> None:
                status, _, body = conn.request(raw)
                if status != 200:
                    raise RuntimeError(f"whole machine: HTTP {status}: {body[:300]!r}")

            return call

        cell = parallel([caller(c) for c in conns], reqs, budget, BATCH)
    finally:
        for c in conns:
            c.sock.close()
    cell["request_bytes"] = round(sum(map(len, reqs)) / len(reqs))
    cell["connections_per_worker"] = sorted(owners.count(p) for p in set(owners)) if None not in owners else None
    return cell


# ---------------------------------------------------------------- which worker holds a connection (Linux /proc)


def spread(port: int, server_pid: int, n: int, busy: bytes | None = None) -> tuple[list, list[int | None]]:
    """n keep-alive connections, one replaced while it shares a worker with another and some worker holds none (a
    worker still starting accepts nothing: up to SPREAD_WAIT_S); (connections, the pid serving each, None where
    /proc does not say). With `busy` (a request), the workers already holding a connection are sent it while the
    next one connects: a worker busy parsing it is not waiting to accept, so an idle one does."""
    workers = listeners(port, children(server_pid)) or [server_pid]
    conns: list[Connection] = []
    owners: list[int | None] = []
    deadline = time.monotonic() + SPREAD_WAIT_S
    while len(conns) < n:
        for c in conns if busy else ():
            c.sock.sendall(busy)
        conn = Connection(port)
        conn.get("/readyz")  # answered: a worker has accepted it
        for c in conns if busy else ():
            c.receive()
        owner = owner_of(conn, port, workers)
        if owner in owners and len(set(owners)) < len(workers) and time.monotonic() < deadline:
            conn.sock.close()
            time.sleep(0.02)
            continue
        conns.append(conn)
        owners.append(owner)
    return conns, owners


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def listeners(port: int, pids: list[int]) -> list[int]:
    """The pids among `pids` holding the socket listening on `port` (uvicorn's workers; not, say, a resource
    tracker)."""
    found = _inodes(lambda local, remote, state: local == port and state == _LISTEN)
    return [pid for pid in pids if _holds(pid, found)]


def owner_of(conn: Connection, server_port: int, pids: list[int] | set[int]) -> int | None:
    """The pid among `pids` holding the server side of `conn`."""
    client = conn.sock.getsockname()[1]
    found = _inodes(lambda local, remote, state: local == server_port and remote == client)
    return next((pid for pid in pids if _holds(pid, found)), None)


_LISTEN = "0A"


def _inodes(match: Callable[[int, int, str], bool]) -> set[str]:
    """Socket inodes of the IPv4 TCP sockets whose (local port, remote port, state) match, from /proc/net/tcp."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    fields = map(str.split, lines)
    return {f[9] for f in fields if f[9] != "0" and match(_port(f[1]), _port(f[2]), f[3])}


def _port(address: str) -> int:
    return int(address.split(":")[1], 16)  # "0100007F:1F90" → 8080


def _holds(pid: int, inodes: set[str]) -> bool:
    """Whether process `pid` has one of the sockets `inodes` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False
