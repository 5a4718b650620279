"""A click store that fails never takes scoring down (issue 25, service/feedback/keeper.py): a store that cannot be
opened leaves the service ready and scoring, /feedback answers 503 `feedback_unavailable` with Retry-After, a gauge
says why, and the store opens in the background once it can; every storage error on /feedback is a 503, never a 500;
/feedback has its own admission and threads, and waits for the store a bounded time. In-process; the faults that
need a real file system (read-only mounts, a full disk) and another process holding the lock are in
test_service_feedback_live.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from service_testing import ADMIN, TestClient, make_app, run, serving
from synthetic_bundle import ROWS

import service.feedback as feedback_package
from service.feedback.keeper import REASONS, reason_of


def client(bundle, **settings) -> TestClient:
    app = make_app(bundle.path, **settings)
    return TestClient(app, raise_server_exceptions=False, headers=ADMIN)


def sample(c, name: str, labels: dict | None = None) -> float:
    return c.app.state.services.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def unavailable(c) -> dict[str, float]:
    return {r: sample(c, "apg_feedback_store_unavailable", {"reason": r}) for r in REASONS}


def score(c) -> dict:
    answer = c.post("/score", json={"instances": ROWS[:2]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def click(c, request_id: str = "r1"):
    return c.post("/feedback", json={"feedback": [{"request_id": request_id, "row": 0, "clicked": True}]})


def test_redis_down_at_start_leaves_scoring_ready_and_feedback_503(bundle):
    with client(bundle, feedback="redis://127.0.0.1:1/0", feedback_retry_s=30) as c:
        assert c.get("/readyz").status_code == 200
        score(c)
        answer = click(c)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
        assert answer.json()["error"]["code"] == "feedback_unavailable"
        assert "could not be opened (unreachable)" in answer.json()["error"]["message"]
        assert unavailable(c) == {**dict.fromkeys(REASONS, 0.0), "unreachable": 1.0}
        assert sample(c, "apg_feedback_dropped_rows_total") == 2  # the rows scored while nothing records them


def test_the_store_opens_in_the_background_once_it_can(bundle, monkeypatch, tmp_path):
    real, failures = feedback_package.open_store, []

    def read_only_three_times(config, metrics=None):
        if len(failures) < 3:
            failures.append(1)
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(config, metrics)

    monkeypatch.setattr(feedback_package, "open_store", read_only_three_times)
    with client(bundle, feedback=f"sqlite://{tmp_path}/feedback.db", feedback_retry_s=0.5) as c:
        assert click(c).status_code == 503 and unavailable(c)["not_writable"] == 1  # opens ~1 s after the start
        deadline = time.monotonic() + 10
        while c.app.state.services.feedback is None and time.monotonic() < deadline:
            time.sleep(0.02)
        scored = score(c)
        assert click(c, scored["request_id"]).json()["counts"]["accepted"] == 1
        assert unavailable(c) == dict.fromkeys(REASONS, 0.0) and len(failures) == 3


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (sqlite3.OperationalError("database or disk is full"), "disk_full"),
        (sqlite3.OperationalError("database is locked"), "timeout"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "not_writable"),
        (ConnectionError("Connection refused"), "unreachable"),
        (OSError(5, "Input/output error"), "error"),
    ],
)
def test_every_storage_error_on_feedback_is_a_503_never_a_500(bundle, tmp_path, error, reason):
    assert reason_of(error) == reason
    with client(bundle, feedback=f"sqlite://{tmp_path}/feedback.db") as c:
        store = c.app.state.services.feedback
        join = store._join
        store._join = lambda items, now: (_ for _ in ()).throw(error)
        answer = click(c, score(c)["request_id"])
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
        assert answer.json()["error"]["code"] == "feedback_unavailable" and reason in answer.json()["error"]["message"]
        assert unavailable(c)[reason] == 1
        store._join = join  # the store recovers: 200, and the gauge goes back to 0
        assert click(c, score(c)["request_id"]).status_code == 200 and unavailable(c)[reason] == 0


def test_a_stalled_store_is_a_503_after_the_feedback_timeout_and_scoring_goes_on(bundle, tmp_path):
    release = threading.Event()
    with client(bundle, feedback=f"sqlite://{tmp_path}/feedback.db", feedback_timeout_s=0.3) as c:
        store = c.app.state.services.feedback
        join = store._join
        store._join = lambda items, now: release.wait(10) and join(items, now)
        try:
            t = time.monotonic()
            answer = click(c, score(c)["request_id"])
            assert answer.status_code == 503 and "APG_FEEDBACK_TIMEOUT_S" in answer.json()["error"]["message"]
            assert time.monotonic() - t < 5  # answered at the timeout, not when the store gives up
            assert unavailable(c)["timeout"] == 1
            score(c)
        finally:
            release.set()


def test_feedback_has_admission_places_of_its_own(bundle, tmp_path):
    app = make_app(
        bundle.path,
        feedback=f"sqlite://{tmp_path}/feedback.db",
        feedback_max_concurrency=1,
        feedback_max_queue=1,
        feedback_timeout_s=5,
        max_concurrency=1,
        max_queue=0,
    )
    release = threading.Event()

    async def flood() -> tuple[list[int], list[int], list[dict]]:
        async with serving(app) as c:
            store = app.state.services.feedback
            join = store._join
            store._join = lambda items, now: release.wait(10) and join(items, now)
            item = {"feedback": [{"request_id": "r1", "row": 0, "clicked": True}]}
            clicks = [asyncio.create_task(c.post("/feedback", json=item)) for _ in range(6)]
            await asyncio.sleep(0.3)  # the clicks hold their places (1 calling the store, 1 waiting, 4 refused)
            scores = [await c.post("/score", json={"instances": ROWS[:1]}) for _ in range(5)]
            release.set()
            answers = await asyncio.gather(*clicks)
            return [a.status_code for a in answers], [s.status_code for s in scores], [a.json() for a in answers]

    click_codes, score_codes, bodies = run(flood())
    assert score_codes == [200] * 5, "feedback took scoring's places"
    assert sorted(click_codes) == [200, 200, 503, 503, 503, 503]
    refused = [b["error"]["message"] for b in bodies if "error" in b]
    assert all("APG_FEEDBACK_MAX_CONCURRENCY + APG_FEEDBACK_MAX_QUEUE" in m for m in refused), refused


def test_a_feedback_that_is_not_a_list_is_counted_malformed(bundle, tmp_path):
    with client(bundle, feedback=f"sqlite://{tmp_path}/feedback.db") as c:
        assert click(c).status_code == 200
        answer = c.post("/feedback", json={"feedback": "x"})
        assert answer.json()["results"][0]["outcome"] == "malformed"
        assert sample(c, "apg_feedback_total", {"outcome": "malformed"}) == 1


def test_rows_recorded_while_the_store_closes_are_counted_as_dropped_at_exit(bundle, tmp_path):
    with client(bundle, feedback=f"sqlite://{tmp_path}/feedback.db") as c:
        store = c.app.state.services.feedback
        score(c)
    assert store.counts["exit_dropped_rows"] == 0  # everything buffered was written at the close
    assert not store.record("late", "a", "m", "v", [0.5, 0.5, 0.5])
    assert store.counts["exit_dropped_rows"] == 3
    assert sample(c, "apg_feedback_exit_dropped_rows_total") == 3
