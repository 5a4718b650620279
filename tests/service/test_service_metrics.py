"""service/metrics.py with a fresh registry per app: names, labels, buckets, and values that move."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from service_testing import TestClient, make_app, make_settings
from synthetic_bundle import ROWS

from service.app import create_app
from service.metrics import STAGES, Metrics
from service.prometheus import mark_dead, observe_many

SCORED = {"model": "synthetic-apg", "arm": "none"}  # the score metrics' labels: the model that answered, no experiment


def value(client, name, labels=None):
    return client.app.state.services.metrics.registry.get_sample_value(name, labels or {})


def test_counters_and_histograms_move(client):
    for _ in range(3):
        assert client.post("/score", json={"instances": ROWS}).status_code == 200
    assert client.post("/score", content=b"{").status_code == 400
    client.get("/definitely/not/here")

    assert value(client, "apg_requests_total", {"route": "/score", "code": "200"}) == 3
    assert value(client, "apg_requests_total", {"route": "/score", "code": "400"}) == 1
    assert value(client, "apg_requests_total", {"route": "unmatched", "code": "404"}) == 1
    assert value(client, "apg_rows_scored_total", SCORED) == 3 * len(ROWS)
    assert value(client, "apg_request_rows_count") == 3
    assert value(client, "apg_request_rows_sum") == 3 * len(ROWS)
    assert value(client, "apg_inference_batch_rows_count") == 3
    assert value(client, "apg_score_count", SCORED) == 3 * len(ROWS)
    assert value(client, "apg_model_requests_total", {**SCORED, "code": "200"}) == 3
    assert value(client, "apg_model_requests_total", {**SCORED, "code": "400"}) is None  # refused before a model
    assert value(client, "apg_request_duration_seconds_count", {"route": "/score"}) == 4
    for stage in STAGES:
        assert value(client, "apg_stage_duration_seconds_count", {"stage": stage}) >= 3, stage
    assert value(client, "apg_inflight_requests") == 0


@pytest.mark.parametrize("rows", [1, 300])  # the list path and the numpy path of count_oov
def test_out_of_vocabulary_values_are_counted_per_feature(client, rows):
    # unknown user (its derived user_activity maps to "cold": in vocabulary), two unknown genres of three,
    # a zip prefix not in the vocabulary; numeric age in its lowest bucket (index 1, the OOV index) is no OOV.
    row = {"user_id": "nobody", "item_id": "242", "age": 1, "zip_code": "99999", "genres": "Comedy|Jazz|Opera"}
    assert client.post("/score", json={"instances": [row] * rows}).status_code == 200
    counted = {f: value(client, "apg_oov_values_total", {"feature": f}) for f in ("user_id", "genres", "zip_prefix")}
    assert counted == {"user_id": rows, "genres": 2 * rows, "zip_prefix": rows}
    for feature in ("item_id", "age", "gender", "user_activity"):
        assert value(client, "apg_oov_values_total", {"feature": feature}) is None


def test_reload_counters_exist_before_any_reload(client):
    for result in ("ok", "error"):
        assert value(client, "apg_model_reloads_total", {"result": result}) == 0


def test_score_histogram_matches_the_scores(client):
    scores = np.array(client.post("/score", json={"instances": ROWS}).json()["scores"])
    assert value(client, "apg_score_sum", SCORED) == pytest.approx(scores.sum(), abs=1e-5)
    for le in (0.05, 0.5, 0.75, 1.0):
        assert value(client, "apg_score_bucket", {**SCORED, "le": str(le)}) == (scores <= le).sum()


def test_sub_millisecond_buckets_are_exported(client):
    client.post("/score", json={"instances": ROWS})
    text = client.get("/metrics").text
    for le in ("0.0001", "0.00025", "0.0005", "0.00075"):
        assert f'apg_request_duration_seconds_bucket{{le="{le}",route="/score"}}' in text
        assert f'apg_stage_duration_seconds_bucket{{le="{le}",stage="inference"}}' in text
    for name in ("apg_requests_total", "apg_rows_scored_total", "apg_inflight_requests", "apg_model_info"):
        assert f"# TYPE {name.removesuffix('_total')}" in text


def test_model_info(client, make_bundle):
    labels = {"name": "synthetic-apg", "version": "v1", "provider": "CPUExecutionProvider"}
    labels["checksum"] = client.get("/readyz").json()["model"]["checksum"]
    assert value(client, "apg_model_info", labels) == 1
    v2 = make_bundle("v2")
    new = client.post("/admin/reload", json={"bundle": str(v2.path)}).json()["model"]
    assert value(client, "apg_model_info", labels) is None  # the old series is gone
    assert value(client, "apg_model_info", {**labels, "version": "v2", "checksum": new["checksum"]}) == 1


@pytest.mark.parametrize("n", [1, 8, 9, 1000])  # the direct path (<= 8) and the vectorised one
def test_observe_many_equals_observe(n):
    values = np.random.default_rng(0).random(n) ** 3
    bulk, loop = CollectorRegistry(), CollectorRegistry()
    h_bulk = Histogram("h", "h", buckets=(0.05, 0.1, 0.5, 1.0), registry=bulk)
    h_loop = Histogram("h", "h", buckets=(0.05, 0.1, 0.5, 1.0), registry=loop)
    observe_many(h_bulk, values)
    for v in values:
        h_loop.observe(float(v))
    for le in ("0.05", "0.1", "0.5", "1.0", "+Inf"):
        assert bulk.get_sample_value("h_bucket", {"le": le}) == loop.get_sample_value("h_bucket", {"le": le})
    assert bulk.get_sample_value("h_sum") == pytest.approx(loop.get_sample_value("h_sum"))


def test_two_apps_in_one_process_count_separately(bundle):
    # Each app builds its metrics on a fresh registry (or the one given): no "Duplicated timeseries" error, and one
    # app's requests never show in the other's /metrics.
    first, second = make_app(bundle.path), create_app(make_settings(bundle.path))  # the second: the default registry
    with TestClient(first) as a, TestClient(second) as b:
        assert a.post("/score", json={"instances": ROWS}).status_code == 200
        assert value(a, "apg_requests_total", {"route": "/score", "code": "200"}) == 1
        assert value(b, "apg_requests_total", {"route": "/score", "code": "200"}) is None
        assert value(a, "apg_rows_scored_total", SCORED) == len(ROWS)
        assert value(b, "apg_rows_scored_total", SCORED) is None
        assert 'route="/score"' not in b.get("/metrics").text
    assert Metrics().registry is not Metrics().registry


REPO = Path(__file__).resolve().parents[2]
WORKER = """
import sys
from service.metrics import Metrics
m = Metrics()
m.inflight.inc(int(sys.argv[1]))
m.set_model("synthetic-apg", "v1", "abc", "cpu")
print("ready", flush=True)
sys.stdin.read()  # until the test closes stdin (a live worker) or kills it
"""


@pytest.mark.slow  # starts two processes
def test_a_killed_workers_live_gauges_leave_the_aggregate(tmp_path, monkeypatch):
    # Two "workers" write their gauges to one PROMETHEUS_MULTIPROC_DIR; one is killed (it cannot mark itself dead), and
    # the supervisor marks it when it reaps it (service/workers.py). /metrics must then sum only the live one:
    # in-flight 2, apg_model_info 1 (not 7 and 2). Until then the scrape itself marks nothing (no work per scrape).
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for n in (2, 5)
    ]
    try:
        assert [w.stdout.readline().strip() for w in workers] == ["ready", "ready"]
        workers[1].kill()
        workers[1].wait(10)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        metrics = Metrics(CollectorRegistry())
        assert sample(metrics.exposition()[0].decode(), "apg_inflight_requests") == 7
        mark_dead(workers[1].pid)  # what the supervisor does when it reaps a worker
        text = metrics.exposition()[0].decode()
        assert sample(text, "apg_inflight_requests") == 2
        assert sample(text, "apg_model_info") == 1
    finally:
        for w in workers:
            w.kill()
            w.wait(10)


def sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name) and not line.startswith("#")]
    return float(line.rsplit(" ", 1)[1])


def test_no_created_series(client):
    client.post("/score", json={"instances": [{"user_id": "196", "item_id": "242"}]})
    text = client.get("/metrics").text
    assert "apg_requests_total{" in text and "_created" not in text
