"""Ranking by item id with real processes on 127.0.0.1: `apg serve --item-store` checks the store at start (exit 2, one
line naming the sync to run), `--workers 2` map one file snapshot (the same pages: both workers' /proc/PID/maps name
its files) and answer by id as with the features in full, and `apg loadtest --format ranking-ids` drives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from item_store_testing import CONTEXT, draw, expected, full_candidates, metric, sync_store
from live_server import READY_TIMEOUT_S, REPO, free_port, http, log_tail, stop, wait_for

pytestmark = pytest.mark.slow  # starts `apg serve`


def serve(bundle: Path, store: str, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"APG_PROVIDERS": "cpu", "APG_LOG_LEVEL": "warning", "APG_WARMUP_BATCH_SIZES": "1,8"}
    env["APG_DRAIN_GRACE_S"] = "0"  # stop() would wait the drain grace out
    argv = [sys.executable, "-m", "scripts.cli", "serve", "--bundle", str(bundle), "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen([*argv, "--item-store", store, *extra], cwd=REPO, env=env, stdout=out, stderr=out)
    return process, f"http://127.0.0.1:{port}"


def test_serve_refuses_a_store_without_rows_for_the_bundle_in_one_line(bundle, tmp_path):
    process, _ = serve(bundle.path, f"file://{tmp_path}/empty", tmp_path / "serve.log")
    assert process.wait(60) == 2
    lines = (tmp_path / "serve.log").read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apg serve: error: model synthetic-apg: item store")
    assert f"run `apg items sync --bundle {bundle.path} --items CATALOGUE --store file://{tmp_path}/empty`" in lines[0]
    process, _ = serve(bundle.path, "ftp://nowhere", tmp_path / "bad.log")
    assert process.wait(60) == 2
    assert "APG_ITEM_STORE: 'ftp' stores are not known" in (tmp_path / "bad.log").read_text()


def test_two_workers_map_one_snapshot_and_a_ranking_ids_load_test_runs(bundle, tmp_path):
    store = f"file://{tmp_path}/store"
    summary = sync_store(bundle.path, store, tmp_path)
    snapshot = tmp_path / "store" / summary["checksum"] / summary["version"]
    process, url = serve(bundle.path, store, tmp_path / "serve.log", "--workers", "2")
    try:
        wait_for(lambda: ready(process, url, tmp_path), READY_TIMEOUT_S, what="apg serve --workers 2")
        maps = wait_for(lambda: mapped(process.pid, snapshot), 60, what="both workers mapping the snapshot")
        assert len(maps) == 2 and all(f"{snapshot}/genres.npy" in m for m in maps.values())
        for n in (1, 100, 1000):  # requests reach either worker: each answers as with the features in full
            ids = draw(n, seed=n)
            for _ in range(4):
                by_id = post(url, {"context": CONTEXT, "candidates": ids})
                np.testing.assert_allclose(by_id, expected(bundle, ids), rtol=0, atol=1e-6)
            full = post(url, {"context": CONTEXT, "candidates": full_candidates(ids)})
            np.testing.assert_allclose(by_id, full, rtol=0, atol=1e-6)
        out = tmp_path / "load"
        loadtest = [
            sys.executable,
            "-m",
            "scripts.cli",
            "loadtest",
            "--url",
            url,
            "--bundle",
            str(bundle.path),
            "--format",
            "ranking-ids",
            "--rows",
            "100",
            "--rate",
            "20",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--unseen",
            "0",
            "--out",
            str(out),
        ]
        done = subprocess.run(loadtest, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        run = json.loads((out / "summary.json").read_text())
        assert run["format"] == "ranking-ids" and run["runs"][0]["error_fraction"] == 0 and run["runs"][0]["ok"] > 0
        text = http("GET", f"{url}/metrics")[1].decode()
        assert metric(text, "apg_item_store_lookup_seconds_count", model="synthetic-apg") >= run["runs"][0]["ok"]
        assert metric(text, "apg_item_store_misses_total", model="synthetic-apg") == 0
    finally:
        stop(process)


def ready(process: subprocess.Popen, url: str, tmp_path: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"apg serve exited with {process.returncode}:\n{log_tail(tmp_path / 'serve.log')}")
    return http("GET", f"{url}/readyz", timeout=2)[0] == 200


def mapped(master: int, snapshot: Path) -> dict[int, str] | None:
    """{worker pid: its memory map} once two children of `master` map files of `snapshot`."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    maps = {int(pid): Path(f"/proc/{pid}/maps").read_text() for pid in children}
    maps = {pid: text for pid, text in maps.items() if str(snapshot) in text}
    return maps if len(maps) == 2 else None


def post(url: str, body: dict) -> np.ndarray:
    status, answer = http("POST", f"{url}/score", body, timeout=30)
    assert status == 200, answer[:300]
    return np.asarray(json.loads(answer)["scores"], dtype=np.float64)
