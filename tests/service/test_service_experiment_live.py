"""Issue 14's end-to-end runs, as processes on 127.0.0.1: two bundles side by side from one `apg serve --models`, a
50/50 sticky split and a shadow, under `apg loadtest` with no failed request and `apg abtest` with real labels, with
`--workers 2` (the SQLite store shared by the workers) and with two replicas sharing a real Redis."""

from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

import httpx
import orjson
import pytest
from live_server import free_port, stop
from synthetic_bundle import SCHEMA, build_bundle
from test_service_feedback import fresh_db
from test_service_process import start, wait_for

from features import RowSampler
from scripts import cli

pytestmark = pytest.mark.slow
pytest_plugins = ["feedback_testing"]  # redis_url: a real redis-server on 127.0.0.1

SPLIT = {"name": "apg-vs-base", "control": "base", "treatment": "apg", "share": 0.5, "key": "user_id"}
USERS = [*SCHEMA["fields"][0]["vocab"], *(f"new-{i}" for i in range(25))]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for seed, name in enumerate(("base", "apg", "shadow")):
        build_bundle(tmp_path / "models" / name, seed=seed)
    return tmp_path / "models"


@pytest.fixture
def ratings(tmp_path: Path) -> tuple[str, str]:
    """(CSV, schema): 30 users x 20 rated rows with timestamps, features drawn from the synthetic schema."""
    rng, sampler = random.Random(0), RowSampler(SCHEMA, seed=0, unseen=0.1)
    with open(tmp_path / "ratings.csv", "w", newline="") as f:
        writer = csv.writer(f)
        columns = ["user_id", "item_id", "age", "gender", "zip_code", "genres"]
        writer.writerow([*columns, "rating", "timestamp"])
        for k in range(600):
            row = sampler.row() | {"user_id": USERS[k % len(USERS)]}
            writer.writerow([*(row.get(c, "") for c in columns), rng.randint(1, 5), 1_000_000 + k])
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    return str(tmp_path / "ratings.csv"), str(tmp_path / "schema.json")


def serve(repo: Path, tmp_path: Path, workers: int = 1, env: dict | None = None):
    port = free_port()
    args = [
        "-m",
        "scripts.cli",
        "serve",
        "--models",
        str(repo),
        "--default-model",
        "base",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--experiment",
        json.dumps(SPLIT),
        "--shadow",
        "shadow",
    ]
    proc = start(args, {"APG_WARMUP_BATCH_SIZES": "1", "APG_DATA_DIR": str(tmp_path / "var"), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "readiness", proc=proc)
    except BaseException:
        stop(proc)
        raise
    return url, proc


def samples(url: str, name: str) -> dict[str, float]:
    """{labels text: value} of one metric in /metrics."""
    out = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            out[labels] = float(value)
    return out


def loadtest(url: str, repo: Path, out: Path) -> dict:
    argv = [
        "loadtest",
        "--url",
        url,
        "--bundle",
        str(repo / "base"),
        "--format",
        "ranking",
        "--rows",
        "4",
        "--rate",
        "60",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    (summary,) = orjson.loads((out / "summary.json").read_bytes())["runs"]
    return summary


def abtest(url: str, ratings: tuple[str, str], out: Path) -> dict:
    data, schema = ratings
    argv = [
        "abtest",
        "--url",
        url,
        "--data",
        data,
        "--schema",
        schema,
        "--rows-per-request",
        "4",
        "--bootstrap",
        "200",
        "--bins",
        "3",
        "--feedback-delay",
        "0.05",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli.main(argv) == 0  # 1 when any request or feedback item was not accepted
    return json.loads((out / "abtest.json").read_text())


def test_two_workers_split_shadow_and_feedback(repo, ratings, tmp_path, capsys):
    url, proc = serve(repo, tmp_path, workers=2)
    try:
        summary = loadtest(url, repo, tmp_path / "load")
        assert summary["errors"] == {} and summary["ok"] == summary["requests"] > 0
        requests = samples(url, "apg_model_requests_total")
        assert any('arm="control",code="200",model="base"' in k for k in requests), requests
        assert any('arm="treatment",code="200",model="apg"' in k for k in requests), requests
        wait_for(
            lambda: sum(v for k, v in samples(url, "apg_shadow_requests_total").items() if "scored" in k) > 0,
            "shadow scores",
            proc=proc,
        )
        report = abtest(url, ratings, tmp_path / "ab")
        assert set(report["arms"]) == {"control", "treatment"} and report["failures"] == {}
        assert report["feedback"]["accepted"] == sum(a["rows"] for a in report["arms"].values()) > 0
        for arm in report["arms"].values():
            auc = arm["metrics"]["auc"]
            assert 0 <= auc["ci"][0] <= auc["value"] <= auc["ci"][1] <= 1
        assert "treatment - control" in report["differences"]
        printed = capsys.readouterr().out
        assert "treatment - control" in printed
    finally:
        code = stop(proc)
    assert code == 0


def test_two_replicas_share_one_redis(repo, ratings, tmp_path, redis_url):
    env = {"APG_FEEDBACK": fresh_db(redis_url, 4)}
    (a, pa), (b, pb) = serve(repo, tmp_path / "a", env=env), serve(repo, tmp_path / "b", env=env)
    try:
        arms = {}
        for user in USERS[:12]:
            body = {"context": {"user_id": user}, "candidates": [{"item_id": "242"}, {"item_id": "302"}]}
            first, second = httpx.post(f"{a}/score", json=body).json(), httpx.post(f"{b}/score", json=body).json()
            assert first["arm"] == second["arm"]  # the split agrees across replicas, with no coordination
            assert first["scores"] == second["scores"]
            arms[user] = first
        items = [{"request_id": s["request_id"], "row": 0, "clicked": True} for s in arms.values()]
        # another replica's answers are visible once its writer has written them (flush_interval_s, 0.05 s, plus the
        # write: service/feedback/base.py); posting at once raced the last one (11 of 12 accepted in one CI run)
        time.sleep(1.0)
        joined = httpx.post(f"{b}/feedback", json={"feedback": items}).json()  # scored by A, reported to B
        assert joined["counts"]["accepted"] == len(items)
        again = httpx.post(f"{a}/feedback", json={"feedback": items}).json()
        assert again["counts"]["duplicate"] == len(items)  # never double-counted, whichever replica hears it
        report = abtest(a, ratings, tmp_path / "ab")
        assert set(report["arms"]) == {"control", "treatment"} and report["failures"] == {}
    finally:
        codes = stop(pa), stop(pb)
    assert codes == (0, 0)
