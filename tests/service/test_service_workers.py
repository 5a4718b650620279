"""`apg serve --workers 2` under load (issue 13 item 7): SIGHUP to the master reloads the served bundle in every worker
in place (service/workers.py), with no failed request and no worker replaced. 127.0.0.1 only, bounded in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from live_server import REPO, free_port, stop
from synthetic_bundle import build_bundle
from test_service_process import wait_for

from features import RowSampler, read_schema
from scripts.clients.http import build_request
from scripts.loadtest.plan import build_bodies, build_schedule
from scripts.loadtest.raw_engine import open_loop

RATE, LOAD_S, CONNECTIONS = 100.0, 8.0, 8


def serving(url: str) -> dict[str, float]:
    """version → workers serving it (apg_model_info, summed over the live workers)."""
    lines = [line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith("apg_model_info{")]
    return {line.split('version="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def on_v2(url: str) -> bool:
    versions = serving(url)  # (a version no longer served stays at 0: multi-process gauges keep their labels)
    return versions.get("v2") == 2.0 and not versions.get("v1")


def workers(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def serve_two_workers(tmp_path: Path, bundle: Path) -> tuple[int, str, Path, subprocess.Popen]:
    """`apg serve --workers 2` of `bundle` on 127.0.0.1: (port, url, its log, the supervisor's process)."""
    port = free_port()
    code = f"from service.server import serve; serve({str(bundle)!r}, '127.0.0.1', {port}, 2)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"TMPDIR": str(tmp_path), "APG_WARMUP_BATCH_SIZES": "1", "APG_DRAIN_GRACE_S": "0", "APG_LOG_LEVEL": "info"}
    log = tmp_path / "serve.log"  # a file, not a pipe: a full pipe would block the workers' access log
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=out, stderr=out)
    return port, f"http://127.0.0.1:{port}", log, proc


NO_PROC = not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


@pytest.mark.slow
@pytest.mark.skipif(NO_PROC, reason="no /proc")
def test_sighup_reloads_every_worker_in_place_under_load(tmp_path):
    bundle = build_bundle(tmp_path / "bundle", version="v1")
    port, url, log, proc = serve_two_workers(tmp_path, bundle.path)
    try:
        wait_for(lambda: serving(url).get("v1") == 2.0, "two workers serving v1", timeout=90)
        before = workers(proc.pid)
        schema, _ = read_schema(bundle.path)
        requests = [build_request("/score", b) for b in build_bodies(RowSampler(schema, seed=0), "rows", 4, 16)]
        schedule = build_schedule(RATE, LOAD_S, "constant")
        records = []
        load = threading.Thread(
            target=lambda: records.append(open_loop("127.0.0.1", port, requests, schedule, CONNECTIONS, 10, 5))
        )
        load.start()
        try:
            build_bundle(bundle.path, version="v2", seed=9)  # new files in place, then SIGHUP, under load
            proc.send_signal(1)
            wait_for(lambda: on_v2(url), "both workers on v2", timeout=LOAD_S)
            proc.send_signal(1)  # the same files again: reloaded, and still served without a failure
            fresh = {
                httpx.post(f"{url}/score", json={"instances": [{"user_id": "196", "item_id": "242"}]}).json()["model"][
                    "version"
                ]
                for _ in range(20)
            }
        finally:
            load.join(LOAD_S + 30)
        after = workers(proc.pid)
        assert on_v2(url)
    finally:
        code = stop(proc)
    log = log.read_text()
    assert code == 0, log[-3000:]
    (rec,) = records
    failed = [(e, s) for e, s in zip(rec.error, rec.status, strict=True) if e is not None]
    assert not failed and (rec.status == 200).sum() == len(schedule), failed[:10]
    assert fresh == {"v2"}  # a new connection each: whichever worker took it serves v2
    assert after == before, "the workers were replaced, not reloaded"
    assert log.count("SIGHUP: passed on to the 2 workers") == 2
    assert log.count("SIGHUP: reloading") == 4, log[-3000:]  # each worker, each time
    assert "restarting processes" not in log


@pytest.mark.slow
@pytest.mark.skipif(NO_PROC, reason="no /proc")
def test_the_supervisor_drops_a_killed_workers_gauges_as_it_reaps_it(tmp_path):
    # A worker killed with SIGKILL cannot mark itself dead: the supervisor does, when it reaps it and starts its
    # successor, so that apg_model_info counts the two live workers (not three: the dead one's gauge summed in).
    bundle = build_bundle(tmp_path / "bundle", version="v1")
    _, url, log, proc = serve_two_workers(tmp_path, bundle.path)
    try:
        wait_for(lambda: serving(url).get("v1") == 2.0, "two workers serving v1", timeout=90)
        before = workers(proc.pid)
        victim = min(pid for pid in before if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())  # a worker
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(workers(proc.pid) - before) == 1, "a successor started", timeout=30)
        # the successor sets its apg_model_info before it logs that it serves
        wait_for(lambda: log.read_text().count("serving synthetic-apg version v1") == 3, "the successor serving")
        assert serving(url).get("v1") == 2.0
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
