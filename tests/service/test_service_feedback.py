"""POST /feedback on a running app: what /score recorded, joined to clicks, per arm, in /metrics (SQLite and Redis)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_testing import ADMIN, TestClient, make_app
from synthetic_bundle import build_bundle

pytest_plugins = ["feedback_testing"]  # redis_url: a real redis-server on 127.0.0.1

SPLIT = {"name": "apg-vs-base", "control": "base", "treatment": "apg", "share": 0.5, "key": "user_id"}
USERS = ["196", "186", "22", "244", "166", "7", "8", "9", "10", "11", "12", "13"]
CANDIDATES = [{"item_id": "242"}, {"item_id": "302"}, {"item_id": "377"}]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    build_bundle(tmp_path / "models" / "base", seed=0)
    build_bundle(tmp_path / "models" / "apg", seed=1)
    return tmp_path / "models"


def client_for(root: Path, **settings) -> TestClient:
    app = make_app(root, models=root, experiment=json.dumps(SPLIT), **settings)
    return TestClient(app, raise_server_exceptions=False, headers=ADMIN)


def rank(c: TestClient, user: str) -> dict:
    answer = c.post("/score", json={"context": {"user_id": user}, "candidates": CANDIDATES})
    assert answer.status_code == 200
    return answer.json()


def metric(c: TestClient, name: str, labels: dict) -> float | None:
    return c.app.state.services.metrics.registry.get_sample_value(name, labels)


def check_the_loop(c: TestClient) -> None:
    """Score every user, click row 0 of each, report row 1 as seen, then the outcomes and the per-arm gauges."""
    answers = {user: rank(c, user) for user in USERS}
    arms = {a["arm"] for a in answers.values()}
    assert arms == {"control", "treatment"}
    items = [{"request_id": a["request_id"], "row": 0, "clicked": True} for a in answers.values()]
    items += [{"request_id": a["request_id"], "row": 1, "clicked": False} for a in answers.values()]
    first = c.post("/feedback", json={"feedback": items})
    assert first.status_code == 200
    assert first.json()["counts"] == {
        "accepted": 2 * len(USERS),
        "duplicate": 0,
        "unknown": 0,
        "late": 0,
        "malformed": 0,
    }
    again = c.post("/feedback", json={"feedback": items[:3]}).json()
    assert again["counts"]["duplicate"] == 3 and again["results"][0]["outcome"] == "duplicate"
    odd = [
        {"request_id": "never-scored", "row": 0, "clicked": True},
        {"request_id": items[0]["request_id"], "row": 99, "clicked": True},  # no such row
        {"request_id": items[0]["request_id"], "row": 2, "clicked": "yes"},
        "not an object",
    ]
    outcomes = [r["outcome"] for r in c.post("/feedback", json={"feedback": odd}).json()["results"]]
    assert outcomes == ["unknown", "unknown", "malformed", "malformed"]
    assert metric(c, "apg_feedback_total", {"outcome": "accepted"}) == 2 * len(USERS)
    assert metric(c, "apg_feedback_total", {"outcome": "duplicate"}) == 3

    (window,) = c.app.state.services.metrics._shared
    window.refresh()  # the scrape refreshes in the background; here, now
    text = c.get("/metrics").text
    for arm in arms:
        n = sum(1 for a in answers.values() if a["arm"] == arm)
        model = "apg" if arm == "treatment" else "base"
        labels = {"arm": arm, "model": model}
        assert metric(c, "apg_online_impressions", labels) == 3 * n
        assert metric(c, "apg_online_labelled", labels) == 2 * n
        assert metric(c, "apg_online_clicks", labels) == n
        assert metric(c, "apg_online_ctr", labels) == pytest.approx(0.5)
        assert f'apg_online_auc{{arm="{arm}",model="{model}"}}' in text


def test_feedback_joins_clicks_to_what_each_arm_scored(root, tmp_path):
    with client_for(root, data_dir=tmp_path / "var") as c:  # APG_FEEDBACK=auto: SQLite in APG_DATA_DIR
        check_the_loop(c)
    assert (tmp_path / "var" / "feedback.db").is_file()


def fresh_db(redis_url: str, db: int) -> str:
    """A database of the session's redis-server of its own, emptied (the service's key prefix is fixed)."""
    import redis

    url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.mark.slow
def test_feedback_in_redis(root, redis_url):
    with client_for(root, feedback=fresh_db(redis_url, 3)) as c:
        check_the_loop(c)


def test_feedback_is_kept_across_a_restart(root, tmp_path):
    with client_for(root, data_dir=tmp_path / "var") as c:
        scored = rank(c, "196")
    with client_for(root, data_dir=tmp_path / "var") as c:
        item = {"request_id": scored["request_id"], "row": 2, "clicked": True}
        assert c.post("/feedback", json={"feedback": [item]}).json()["counts"]["accepted"] == 1


def test_bad_feedback_bodies_get_clear_answers(root, tmp_path):
    with client_for(root, data_dir=tmp_path / "var", max_rows=4) as c:
        assert c.post("/feedback", content=b"{").status_code == 400
        wrong = c.post("/feedback", json=[{"request_id": "x", "row": 0, "clicked": True}])
        assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "feedback"
        items = [{"request_id": "x", "row": i, "clicked": True} for i in range(5)]
        assert c.post("/feedback", json={"feedback": items}).status_code == 413
        assert c.post("/feedback", json={"feedback": "x"}).json()["results"][0]["outcome"] == "malformed"
        assert c.post("/feedback", content=b"a=b", headers={"Content-Type": "text/plain"}).status_code == 415


def test_feedback_needs_the_scoring_token_and_a_store(root, tmp_path):
    with client_for(root, data_dir=tmp_path / "var", auth_token="s3cret") as c:
        assert c.post("/feedback", json={"feedback": []}).status_code == 401
        authorised = {"Authorization": "Bearer s3cret"}
        assert c.post("/feedback", json={"feedback": []}, headers=authorised).status_code == 200
    app = make_app(root, models=root)  # no experiment, APG_FEEDBACK=auto: no store
    with TestClient(app, raise_server_exceptions=False, headers=ADMIN) as c:
        missing = c.post("/feedback", json={"feedback": []})
        assert missing.status_code == 404 and "APG_FEEDBACK" in missing.json()["error"]["message"]
        assert "request_id" in c.post("/score", json={"instances": [{"user_id": "196", "item_id": "242"}]}).json()


def test_an_unreachable_store_leaves_scoring_serving_and_a_bad_url_stops_the_start(root):
    with client_for(root, feedback="redis://127.0.0.1:1/0") as c:  # down: scoring serves (test_service_feedback_faults)
        assert c.get("/readyz").status_code == 200 and rank(c, "196")["scores"]
        assert c.post("/feedback", json={"feedback": []}).json()["error"]["code"] == "feedback_unavailable"
    with pytest.raises(ValueError):
        with client_for(root, feedback="sqlite://"):
            pass


def test_a_reused_client_request_id_still_gets_its_own_feedback_key(root, tmp_path):
    with client_for(root, data_dir=tmp_path / "var") as c:
        body = {"context": {"user_id": "196"}, "candidates": CANDIDATES}
        first = c.post("/score", json=body, headers={"X-Request-ID": "same"})
        second = c.post("/score", json=body, headers={"X-Request-ID": "same"})
        assert first.headers["x-request-id"] == second.headers["x-request-id"] == "same"  # echoed for the logs
        ids = {first.json()["request_id"], second.json()["request_id"]}
        assert len(ids) == 2 and "same" not in ids
        items = [{"request_id": i, "row": 0, "clicked": True} for i in ids]
        assert c.post("/feedback", json={"feedback": items}).json()["counts"]["accepted"] == 2
        made = c.post("/score", json=body)  # no client id: the header's id is the key
        assert made.json()["request_id"] == made.headers["x-request-id"]


def test_pinned_traffic_is_reported_per_model(root, tmp_path):
    with client_for(root, data_dir=tmp_path / "var") as c:
        for model in ("base", "apg"):
            answer = c.post("/score", json={"instances": [{"user_id": "196", "item_id": "242"}], "model": model})
            item = {"request_id": answer.json()["request_id"], "row": 0, "clicked": model == "apg"}
            assert c.post("/feedback", json={"feedback": [item]}).json()["counts"]["accepted"] == 1
        (window,) = c.app.state.services.metrics._shared
        window.refresh()
        for model, ctr in (("base", 0.0), ("apg", 1.0)):  # never pooled under one model's label
            assert metric(c, "apg_online_ctr", {"arm": f"none:{model}", "model": model}) == ctr
