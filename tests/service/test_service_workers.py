"""`apg serve --workers 2` under load (issue 13 item 7): SIGHUP to the master reloads the served bundle in every worker
in place (service/workers.py), with no failed request and no worker replaced. 127.0.0.1 only, bounded in time."""

from __future__ import annotations

import os
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
from scripts.loadtest.plan import build_bodies, build_schedule
from scripts.loadtest.raw_engine import build_request, open_loop

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


@pytest.mark.slow
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(), reason="no /proc")
def test_sighup_reloads_every_worker_in_place_under_load(tmp_path):
    bundle = build_bundle(tmp_path / "bundle", version="v1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = f"from service.server import serve; serve({str(bundle.path)!r}, '127.0.0.1', {port}, 2)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"TMPDIR": str(tmp_path), "APG_WARMUP_BATCH_SIZES": "1", "APG_DRAIN_GRACE_S": "0", "APG_LOG_LEVEL": "info"}
    log = tmp_path / "serve.log"  # a file, not a pipe: a full pipe would block the workers' access log
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=out, stderr=out)
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
