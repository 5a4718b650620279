"""Pure parts of the load generator: arrival schedules, rows sampled from a schema, bodies, safety, statistics."""

from __future__ import annotations

import argparse

import numpy as np
import orjson
import pytest

from features import RowSampler
from scripts.cli import main
from scripts.loadtest import httpx_engine, latency_report, plan
from scripts.loadtest.plan import build_schedule, check_target, encode_body
from scripts.loadtest.records import LoadConfig, Records


# ------------------------------------------------------------------ schedules
def test_constant_schedule_is_evenly_spaced():
    t = build_schedule(200, 3.0, "constant")
    assert len(t) == 600 and t[0] == 0 and t[-1] < 3.0
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(1 / 200, rel=1e-9)
    assert gaps.std() < 1e-12


def test_poisson_schedule_has_exponential_gaps():
    rate, duration = 500.0, 40.0
    t = build_schedule(rate, duration, "poisson", seed=3)
    assert np.all(np.diff(t) > 0) and t[0] >= 0 and t[-1] < duration
    n = rate * duration
    assert abs(len(t) - n) < 4 * np.sqrt(n)  # a Poisson count
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # coefficient of variation of an exponential
    assert np.mean(gaps > gaps.mean()) == pytest.approx(np.exp(-1), abs=0.02)  # P(gap > mean) = 1/e, memoryless


def test_poisson_schedule_is_seeded():
    a, b, c = (build_schedule(100, 2, "poisson", seed=s) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a[:10], c[:10])


@pytest.mark.parametrize("rate,duration,arrivals", [(0, 1, "constant"), (10, 0, "poisson"), (10, 1, "bursty")])
def test_schedule_refuses_bad_arguments(rate, duration, arrivals):
    with pytest.raises(ValueError):
        build_schedule(rate, duration, arrivals)


# ------------------------------------------------------------------ rows and bodies
def test_rows_carry_one_value_per_raw_feature_from_the_vocabularies(schema):
    rows = RowSampler(schema, seed=0, unseen=0.0).rows(500)
    # zip_prefix reads zip_code; user_activity is derived from user_id and needs no value of its own
    assert all(set(r) == {"user_id", "item_id", "age", "score_hint", "zip_code", "genres"} for r in rows)
    assert {r["user_id"] for r in rows} == {"7", "8", "9"}
    assert {r["item_id"] for r in rows} == {"a", "b"}
    assert all(isinstance(r["age"], int) and 18 <= r["age"] <= 45 for r in rows)
    assert all(isinstance(r["score_hint"], float) and 0.1 <= r["score_hint"] <= 0.9 for r in rows)
    assert all(len(r["zip_code"]) == 5 and r["zip_code"][:2] in {"55", "60"} for r in rows)
    genres = [r["genres"].split("|") for r in rows]
    assert {len(g) for g in genres} == {1, 2, 3}
    assert all(len(set(g)) == len(g) and set(g) <= {"Drama", "Comedy", "Action", "War"} for g in genres)


def test_a_fraction_of_categorical_values_is_unseen(schema):
    rows = RowSampler(schema, seed=1, unseen=0.2).rows(2000)
    unseen = np.mean([r["item_id"].startswith("unseen-") for r in rows])
    assert unseen == pytest.approx(0.2, abs=0.04)
    assert all(isinstance(r["age"], int) for r in rows)  # numbers are never "unseen"


def test_a_source_read_only_by_a_derived_field_takes_its_mapping_keys():
    schema = {
        "fields": [
            {
                "name": "activity",
                "kind": "categorical",
                "source": "uid",
                "vocab": ["0", "1"],
                "mapping": {"u1": "1", "u2": "0"},
                "mapping_default": "0",
            }
        ]
    }
    assert {r["uid"] for r in RowSampler(schema, unseen=0.0).rows(100)} == {"u1", "u2"}


def test_row_and_column_bodies(schema):
    sampler = RowSampler(schema, seed=0, unseen=0.0)
    rows = sampler.rows(4)
    assert orjson.loads(encode_body(rows, "rows")) == {"instances": rows}
    columns = orjson.loads(encode_body(rows, "columns"))["inputs"]
    assert set(columns) == set(rows[0]) and all(len(v) == 4 for v in columns.values())
    assert columns["user_id"] == [r["user_id"] for r in rows]


def test_ranking_bodies_carry_one_user_and_a_pin_only_when_asked(schema):
    rows = RowSampler(schema, seed=0, unseen=0.0).rows(6)
    body = orjson.loads(encode_body(rows, "ranking", context=("user_id",)))
    assert body["context"] == {"user_id": rows[0]["user_id"]} and "model" not in body
    assert body["candidates"] == [{k: v for k, v in r.items() if k != "user_id"} for r in rows]
    pinned = orjson.loads(encode_body(rows, "rows", model="deepfm"))
    assert pinned == {"instances": rows, "model": "deepfm"}
    bodies = plan.build_bodies(RowSampler(schema), "ranking", rows=4, pool=3, context=("user_id",), model="m")
    assert all(orjson.loads(b)["model"] == "m" and len(orjson.loads(b)["candidates"]) == 4 for b in bodies)


def test_v2_bodies_have_one_tensor_per_raw_feature(schema):
    sampler = RowSampler(schema, seed=0, unseen=0.0)
    body = orjson.loads(encode_body(sampler.rows(5), "v2", sampler.numeric))
    tensors = {t["name"]: t for t in body["inputs"]}
    assert set(tensors) == {"user_id", "item_id", "age", "score_hint", "zip_code", "genres"}
    assert all(t["shape"] == [5] and len(t["data"]) == 5 for t in tensors.values())
    assert tensors["age"]["datatype"] == "FP64" and all(isinstance(v, float) for v in tensors["age"]["data"])
    assert tensors["user_id"]["datatype"] == "BYTES" and set(tensors["user_id"]["data"]) <= {"7", "8", "9"}


def test_v2_multi_values_without_separator_are_padded_to_b_by_k():
    schema = {"fields": [{"name": "tags", "kind": "multi", "max_len": 4, "vocab": ["x", "y", "z"]}]}
    rows = [{"tags": ["x"]}, {"tags": ["y", "z"]}]
    (tensor,) = orjson.loads(encode_body(rows, "v2"))["inputs"]
    assert tensor["shape"] == [2, 2] and tensor["data"] == [["x", ""], ["y", "z"]]
    assert all(isinstance(r["tags"], list) for r in RowSampler(schema).rows(10))


def test_body_pool_and_endpoints(schema):
    bodies = plan.build_bodies(RowSampler(schema), "columns", rows=8, pool=5)
    assert len(bodies) == 5 and len(set(bodies)) == 5 and all(isinstance(b, bytes) for b in bodies)
    assert plan.endpoint("rows", None) == "/score"
    assert plan.endpoint("v2", "m") == "/v2/models/m/infer"
    with pytest.raises(ValueError, match="model name"):
        plan.endpoint("v2", None)


# ------------------------------------------------------------------ safety
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.3.2.1", "http://localhost:9", "http://[::1]:80"])
def test_loopback_targets_are_allowed(url):
    check_target(url)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8000", "http://example.com", "https://8.8.8.8", "http://[2001:db8::1]"]
)
def test_non_loopback_targets_are_refused_without_allow_remote(url):
    with pytest.raises(ValueError, match="--allow-remote"):
        check_target(url)
    check_target(url, allow_remote=True)


def test_refusals_happen_before_any_network_or_file_access(monkeypatch, capsys):
    def no_network(*a, **k):
        raise AssertionError("no client may be created")

    monkeypatch.setattr(httpx_engine.httpx, "AsyncClient", no_network)
    assert main(["loadtest", "--url", "http://example.com:8000", "--bundle", "/nowhere"]) == 2
    assert "refusing to load non-loopback host 'example.com'" in capsys.readouterr().err
    assert main(["loadtest", "--url", "ftp://127.0.0.1", "--bundle", "/nowhere"]) == 2
    assert main(["loadtest", "--rate", "1000", "--duration", "1000", "--bundle", "/nowhere"]) == 2
    assert "--max-requests" in capsys.readouterr().err


def test_summary_counts_latency_from_the_schedule_and_errors_by_kind():
    cfg = LoadConfig(url="http://127.0.0.1:1", rate=10, duration=1.0, warmup=0.5, rows=4)
    rec = Records(np.array([0.0, 0.5, 0.6, 0.7, 0.8, 0.9]))  # the first one is in the warm-up
    rec.sent[:] = [0.0, 0.5, 0.65, 0.7, 0.8, np.nan]
    rec.done[:] = [0.01, 0.52, 0.70, 0.75, 0.81, np.nan]
    rec.status[:] = [200, 200, 200, 503, 0, 0]
    rec.error[:] = [None, None, None, "http_503", "timeout", "unsent"]
    s = latency_report.summarise(rec, cfg)
    assert (s["requests"], s["ok"]) == (5, 2)
    assert s["errors"] == {"http_503": 1, "timeout": 1, "unsent": 1} and s["error_fraction"] == pytest.approx(0.6)
    assert s["latency_ms"]["max"] == pytest.approx(100.0)  # 0.70 - 0.60: includes the 50 ms wait before sending
    assert s["service_ms"]["max"] == pytest.approx(50.0)
    assert s["achieved_rate"] == pytest.approx(2.0) and s["rows_per_s"] == pytest.approx(8.0)


def test_sweep_rates_and_knee():
    ns = argparse.Namespace(sweep=None, sweep_start=50.0, sweep_factor=2.0, sweep_max=400.0)
    assert plan.sweep_rates(ns) == [50, 100, 200, 400]
    assert plan.sweep_rates(argparse.Namespace(sweep="10, 20,40", sweep_start=None)) == [10, 20, 40]
    assert plan.sweep_rates(argparse.Namespace(sweep=None, sweep_start=None)) == []

    def summary(rate, p99, err):
        return {"target_rate": rate, "latency_ms": {"p99": p99}, "error_fraction": err}

    runs = [summary(10, 5, 0), summary(20, 8, 0), summary(40, 9, 0.5), summary(80, 200, 0)]
    assert latency_report.find_knee(runs, slo_ms=10, max_errors=0.01) == 20
    assert latency_report.find_knee(runs, slo_ms=1, max_errors=0.01) is None
