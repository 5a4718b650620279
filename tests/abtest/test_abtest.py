"""`apg abtest`: the replayed requests, the answer contract, the report's statistics, and a whole run against a small
fake service (sticky arms by a hash of user_id, feedback into the real SQLite store) whose treatment arm knows the
labels: the report must find it better, with a CI that says so, and agree with the store's own window."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import uuid

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse
from live_server import uvicorn_thread

from model.data import read_table, split_rows
from scripts import cli
from scripts.abtest.replay import Answer, BadAnswer, read_answer, replay
from scripts.abtest.report import METRICS, over_time, summarise
from scripts.abtest.traffic import Request, replay_requests
from service.feedback import FeedbackConfig, feedback_response, open_store
from service.feedback.stats import auc

SCHEMA = {
    "name": "tiny",
    "label": {"column": "rating", "threshold": 4},
    "user_column": "user_id",
    "time_column": "timestamp",
    "fields": [
        {"name": "user_id", "kind": "categorical", "required": True},
        {"name": "item_id", "kind": "categorical", "required": True},
        {"name": "age", "kind": "numeric", "edges": [18, 25, 35, 45]},
        {"name": "genres", "kind": "multi", "sep": "|", "max_len": 3},
    ],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[str, str]:
    """(CSV, schema) of 60 users x 30 ratings with timestamps; every 7th row has no age."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = random.Random(0)
    with open(folder / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "age", "genres", "rating", "timestamp"])
        for k in range(1800):
            age = "" if k % 7 == 0 else str(rng.randint(18, 60))
            w.writerow([f"u{k % 60}", f"i{rng.randrange(200)}", age, "Drama|Comedy", rng.randint(1, 5), 10_000 - k])
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    return str(folder / "ratings.csv"), str(folder / "schema.json")


def test_requests_hold_one_users_next_test_rows_in_time_order(dataset):
    data, schema = dataset
    requests = replay_requests(data, schema, max_rows=4)
    table = read_table(data)
    test = split_rows(1800, "random", 0)["test"]
    assert sum(len(r.rows) for r in requests) == len(test)  # every held-out row, once
    assert [r.at for r in requests] == sorted(r.at for r in requests)
    for r in requests:
        assert 1 <= len(r.rows) <= 4 and {row["user_id"] for row in r.rows} == {r.user}
    rows = [row for r in requests for row in r.rows]
    assert all(isinstance(row["age"], int) for row in rows if "age" in row) and any("age" not in row for row in rows)
    pairs = [(row, y) for r in requests for row, y in zip(r.rows, r.labels, strict=True)]
    labels = {(row["user_id"], row["item_id"], row.get("age")) for row, y in pairs if y}
    expected = {
        (table["user_id"][i], table["item_id"][i], int(table["age"][i]) if table["age"][i] else None)
        for i in test
        if int(table["rating"][i]) >= 4
    }
    assert labels == expected
    assert len(replay_requests(data, schema, max_rows=4, limit=5)) == 5


def _answer(k, user, arm, scores, labels, latency=0.01, at=0.0) -> Answer:
    return Answer(k, user, at + k, arm, f"m-{arm}", "1", f"r{k}", np.array(scores), np.array(labels, bool), latency)


def test_the_report_estimates_each_arm_and_the_difference():
    rng = np.random.default_rng(0)
    answers = []
    for k in range(200):
        arm = ("control", "treatment")[k % 2]
        labels = rng.random(5) < 0.4
        scores = labels * 0.5 + rng.random(5) * (0.6 if arm == "treatment" else 2.0)  # treatment ranks better
        answers.append(_answer(k, f"u{k % 40}", arm, np.clip(scores / 2, 0, 1), labels))
    report = summarise(answers, resamples=200)
    assert report["baseline"] == "control" and set(report["arms"]) == {"control", "treatment"}
    for name, arm in report["arms"].items():
        mine = [a for a in answers if a.arm == name]
        y, s = np.concatenate([a.labels for a in mine]), np.concatenate([a.scores for a in mine])
        assert arm["metrics"]["auc"]["value"] == pytest.approx(auc(y, s))
        assert arm["metrics"]["ctr"]["value"] == pytest.approx(y.mean())
        assert (arm["users"], arm["requests"], arm["rows"]) == (20, 100, 500)
        for m in METRICS:
            lo, hi = arm["metrics"][m]["ci"]
            assert lo <= arm["metrics"][m]["value"] <= hi
    diff = report["differences"]["treatment - control"]["auc"]
    auc_of = {name: arm["metrics"]["auc"]["value"] for name, arm in report["arms"].items()}
    assert diff["value"] == pytest.approx(auc_of["treatment"] - auc_of["control"])
    assert diff["ci"][0] > 0  # the better ranking is found, and the CI says so
    with pytest.raises(ValueError, match="--baseline 'nope'"):
        summarise(answers, baseline="nope", resamples=10)
    with pytest.raises(RuntimeError, match="no request was answered"):
        summarise([], resamples=10)


def test_top1_ctr_and_the_series_over_time():
    answers = [_answer(0, "u0", "a", [0.9, 0.1], [True, False]), _answer(1, "u1", "a", [0.2, 0.8], [True, False])]
    report = summarise(answers, resamples=20)
    assert report["arms"]["a"]["metrics"]["top1_ctr"]["value"] == 0.5 and report["differences"] == {}
    series = over_time(answers, bins=2)["a"]
    assert series["ctr"] == [0.5, 0.5] and series["auc"] == [1.0, 0.0]  # one request per stretch


def _response(body, status=200, headers=None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers or {})


def test_the_answer_contract():
    req = Request("u1", 0.0, [{"user_id": "u1"}, {"user_id": "u1"}], np.array([True, False]))
    full = {"scores": [0.1, 0.2], "model": {"name": "apg", "version": "3"}, "arm": "treatment", "request_id": "s1"}
    a = read_answer(0, req, _response(full), "c1", 0.01)
    assert (a.arm, a.model, a.version, a.request_id) == ("treatment", "apg", "3", "s1")
    bare = {"scores": [0.1, 0.2], "model": {"name": "apg", "version": "3"}}
    a = read_answer(0, req, _response(bare, headers={"x-request-id": "h1"}), "c1", 0.01)
    assert (a.arm, a.request_id) == ("apg", "h1")  # no experiment: the model is the arm; the header's id
    for bad, reason in (({"scores": [0.1]}, "wrong number"), ({"model": {}}, "not as documented")):
        with pytest.raises(BadAnswer, match=reason):
            read_answer(0, req, _response(bad), "c1", 0.01)
    with pytest.raises(BadAnswer, match="status 503"):
        read_answer(0, req, _response(full, status=503), "c1", 0.01)


def test_the_replay_names_the_services_request_id_and_counts_failed_posts():
    seen: list[tuple[str, dict, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, dict(request.headers), body))
        if request.url.path == "/score":
            if body["instances"][0]["user_id"] == "u2":
                return httpx.Response(503, json={"error": {"code": "overloaded"}})
            rid = "server-" + request.headers["x-request-id"]
            return httpx.Response(
                200,
                json={"scores": [0.5] * len(body["instances"]), "model": {"name": "m"}, "arm": "a", "request_id": rid},
            )
        return httpx.Response(404, json={"error": "not found"})

    requests = [Request(f"u{k}", float(k), [{"user_id": f"u{k}"}] * 2, np.array([True, False])) for k in range(4)]
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test")
    result = replay(client, requests, feedback_delay=0.0, feedback_batch=3, progress=False)
    assert [a.request_id for a in result.answers] == [f"server-abtest-{result.run_id}-{k}" for k in (0, 1, 3)]
    assert result.failures == {"status 503": 1}
    posted = [item for path, _, body in seen if path == "/feedback" for item in body["feedback"]]
    assert {i["request_id"] for i in posted} == {a.request_id for a in result.answers}
    assert [i["clicked"] for i in posted] == [True, False] * 3
    assert result.feedback == {"error": 6} and result.feedback_errors == {"status 404": 3}  # one post an answer


def test_help_and_a_refused_target(capsys):
    with pytest.raises(SystemExit):
        cli.main(["abtest", "--help"])
    out = capsys.readouterr().out
    assert "apg abtest" in out and "(default: 2000)" in out and "/feedback" in out
    assert cli.main(["abtest", "--url", "http://example.invalid"]) == 2
    assert "apg abtest: error: refusing to load non-loopback host" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["abtest", "--limit", "0"])


# ---------------------------------------------------------------- a whole run against a fake service


def fake_service(store, oracle: dict):
    """/score: arm by a hash of user_id; control scores by a hash of the item (no skill), treatment from the true
    label (plus noise); the answer's contract; every answer recorded in `store`. /feedback: the store's answer."""
    app = FastAPI()

    @app.get("/readyz")
    def ready():
        return {"ready": True}

    @app.post("/score")
    async def score(request: HTTPRequest):
        rows = (await request.json())["instances"]
        arm = ("control", "treatment")[int(hashlib.sha256(rows[0]["user_id"].encode()).hexdigest(), 16) % 2]
        scores = [_score(arm, row, oracle) for row in rows]
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        store.record(rid, arm, f"model-{arm}", "1", scores)
        body = {"scores": scores, "model": {"name": f"model-{arm}", "version": "1"}, "arm": arm, "request_id": rid}
        return JSONResponse(body, headers={"x-request-id": rid})

    @app.post("/feedback")
    def feedback(payload: dict):  # sync: FastAPI runs it in its thread pool, as the store wants
        return feedback_response(store.feedback(payload["feedback"]))

    return app


def _score(arm: str, row: dict, oracle: dict) -> float:
    noise = int(hashlib.sha256(f"{row['user_id']}/{row['item_id']}".encode()).hexdigest(), 16) % 1000 / 1000
    return 0.2 + 0.4 * noise if arm == "control" else 0.25 + 0.5 * oracle[row["user_id"], row["item_id"]] + 0.2 * noise


@pytest.mark.slow  # starts a server (uvicorn in a thread)
def test_a_whole_run_against_a_fake_service(dataset, tmp_path, capsys):
    data, schema = dataset
    table = read_table(data)
    oracle = {(u, i): int(r) >= 4 for u, i, r in zip(table["user_id"], table["item_id"], table["rating"], strict=True)}
    store = open_store(FeedbackConfig(f"sqlite://{tmp_path}/feedback.db"))
    try:
        with uvicorn_thread(fake_service(store, oracle)) as host:
            argv = [
                "abtest",
                "--url",
                f"http://{host}",
                "--data",
                data,
                "--schema",
                schema,
                "--rows-per-request",
                "5",
                "--bootstrap",
                "200",
                "--bins",
                "3",
                "--feedback-delay",
                "0.05",
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
            assert cli.main(argv) == 0
        window = store.window(3600)
    finally:
        store.close()
    out = capsys.readouterr().out
    assert "treatment - control" in out and "auc" in out
    report = json.loads((tmp_path / "out" / "abtest.json").read_text())
    rows = len(split_rows(1800, "random", 0)["test"])
    assert report["feedback"] == {"accepted": rows, "duplicate": 0, "unknown": 0, "late": 0, "malformed": 0}
    assert report["failures"] == {} and sum(a["rows"] for a in report["arms"].values()) == rows
    arms = report["arms"]
    assert arms["treatment"]["model"] == "model-treatment" and arms["control"]["users"] > 10
    assert report["differences"]["treatment - control"]["auc"]["ci"][0] > 0.2
    for name, arm in arms.items():  # the service's own join agrees with what the client saw
        assert window[name].labelled == arm["rows"]
        assert window[name].auc == pytest.approx(arm["metrics"]["auc"]["value"])
        assert window[name].ctr == pytest.approx(arm["metrics"]["ctr"]["value"])
    assert (tmp_path / "out" / "abtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
