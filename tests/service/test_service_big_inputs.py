"""Requests within the limits that used to cost out of proportion (issue 13 items 2 and 3), replayed against the
service: a huge multi-valued feature costs what the model reads of it (counted: elements normalised), and requests
full of fresh 256 KB ids leave a live server's memory where it was (its RSS, from /proc). 127.0.0.1 only, bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from live_server import REPO, free_port, http, log_tail, stop, wait_for
from service_testing import ADMIN, TestClient, make_app
from synthetic_bundle import MAX_LEN, build_bundle

import features.encoder
from features.rules import read_limit

ROW = {"user_id": "196", "item_id": "242", "age": 30, "gender": "F", "zip_code": "55455"}
FIELDS = 6  # the synthetic schema's raw features (user_id, item_id, age, gender, zip_code, genres)


@pytest.fixture
def normalised(monkeypatch) -> list[int]:
    """Counts the values the encoder normalises (rule 1), each element of a multi value included."""
    calls = [0]
    original = features.encoder.normalise

    def counted(value):
        calls[0] += 1
        return original(value)

    monkeypatch.setattr(features.encoder, "normalise", counted)
    return calls


@pytest.mark.parametrize(
    ("rows", "genres"),
    [(4096, ["War", "Drama"] * 200), (1, "|" * 8_000_000)],
    ids=["4096-rows-x-400-element-lists", "one-row-of-8M-separators"],
)
def test_a_huge_multi_value_costs_what_the_model_reads(bundle, normalised, rows, genres):
    # Before: every element was normalised and looked up, then the row cut to max_len (3.2 s and 2.4 s of a blocked
    # event loop). Now at most read_limit(max_len) elements per row are read.
    app = make_app(bundle.path, max_body_bytes=32 * 1024 * 1024)
    body = orjson.dumps({"instances": [{**ROW, "genres": genres}] * rows})
    with TestClient(app, headers=ADMIN) as client:
        normalised[0] = 0
        answer = client.post("/score", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and len(answer.json()["scores"]) == rows
    elements = len(genres) if isinstance(genres, list) else genres.count("|") + 1
    assert elements > 4 * read_limit(MAX_LEN)  # (the attack: far more than is read)
    assert normalised[0] <= rows * (read_limit(MAX_LEN) + FIELDS), normalised[0]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
def test_fresh_256kb_ids_do_not_grow_a_live_servers_memory(tmp_path):
    # Before: 154 requests with fresh 256 KB ids grew RSS from 169 MB to 501 MB, never released (the memos kept every
    # raw value). 160 requests of 4 rows, each row's three ids fresh and 256 KB long: ~490 MB of ids in all.
    bundle = build_bundle(tmp_path / "v1")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"APG_PROVIDERS": "cpu", "APG_WARMUP_BATCH_SIZES": "1", "APG_DRAIN_GRACE_S": "0", "APG_LOG_LEVEL": "warning"}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        cmd = [sys.executable, "-m", "service", "--bundle", str(bundle.path), "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/score"

    def post(n: int, fresh: bool) -> int:
        rows = []
        for r in range(4):
            ids = {k: f"{k}-{n}-{r}-".ljust(256 * 1024, "x") if fresh else ROW[k] for k in ("user_id", "item_id")}
            rows.append({**ROW, **ids, "zip_code": f"{n}{r}".ljust(256 * 1024, "9") if fresh else ROW["zip_code"]})
        return http("POST", url, {"instances": rows}, timeout=30)[0]

    try:
        wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, what="the server")
        for n in range(10):  # the allocator's and the memos' steady state for requests of this size
            assert post(-n, fresh=False) == 200 and post(10_000 + n, fresh=True) == 200
        before = rss_bytes(proc.pid)
        statuses = [post(n, fresh=True) for n in range(160)]
        after = rss_bytes(proc.pid)
    finally:
        assert stop(proc) == 0, log_tail(log)
    assert statuses == [200] * 160
    mb = [before / 2**20, after / 2**20]
    assert after - before < 64 * 2**20, f"RSS grew by {mb[1] - mb[0]:.0f} MB ({mb[0]:.0f} → {mb[1]:.0f} MB)"
