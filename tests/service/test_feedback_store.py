"""The feedback store's rules, the same test against each backend (SQLite file, real redis-server): joins, each
outcome, windows, retention, the write buffer, several stores on one storage and threads racing for the same rows."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from live_server import free_port

from service.feedback import FeedbackConfig, default_url, feedback_response, open_store

pytest_plugins = ["feedback_testing"]  # the fixtures: make_store (once per backend), redis_url

T0 = time.time()  # every test's clock starts here (reset per test below); later times are T0 + offsets


@pytest.fixture(autouse=True)
def _clock_starts_with_the_test() -> None:
    """Redis expires keys by the real clock (EXPIREAT scored-at + max_age_s): a T0 taken at import would be minutes old
    by the time a test runs in the whole suite, and its rows already gone."""
    global T0
    T0 = time.time()


def item(request_id, row, clicked) -> dict:
    return {"request_id": request_id, "row": row, "clicked": clicked}


def outcomes(store, items, now) -> list[str]:
    return [o.outcome for o in store.feedback(items, now=now)]


def test_each_row_is_joined_once_and_the_first_answer_counts(make_store):
    store = make_store()
    assert store.record("r1", "control", "deepfm", "v1", [0.2, 0.8, 0.4], now=T0)
    first = outcomes(store, [item("r1", 0, False), item("r1", 1, True), item("r1", 1, False)], T0 + 1)
    assert first == ["accepted", "accepted", "duplicate"]
    assert outcomes(store, [item("r1", 1, False), item("r1", 0, True)], T0 + 2) == ["duplicate", "duplicate"]
    s = store.window(60, now=T0 + 2)["control"]
    assert (s.impressions, s.labelled, s.clicks, s.ctr, s.auc) == (3, 2, 1, 0.5, 1.0)
    assert s.mean_score == pytest.approx(0.5) and s.calibration == pytest.approx(1.0)
    assert (s.model, s.version) == ("deepfm", "v1")
    assert store.counts["accepted"] == 2 and store.counts["duplicate"] == 3 and store.counts["recorded_rows"] == 3


def test_unknown_ids_rows_and_expired_rows(make_store):
    store = make_store(max_age_s=100, join_window_s=10)
    store.record("r1", "control", "deepfm", "v1", [0.5, 0.5], now=T0)
    assert outcomes(store, [item("never", 0, True), item("r1", 2, True)], T0 + 1) == ["unknown", "unknown"]
    (expired,) = store.feedback([item("r1", 0, True)], now=T0 + 101)  # older than max_age_s, not yet pruned
    assert expired.outcome == "unknown" and "max_age_s=100" in expired.message
    assert (expired.request_id, expired.row) == ("r1", 0)
    assert store.window(1000, now=T0 + 1)["control"].labelled == 0


def test_late_feedback_is_answered_and_not_counted(make_store):
    store = make_store(max_age_s=100, join_window_s=10)
    store.record("r1", "treatment", "apg", "v2", [0.3, 0.6], now=T0)
    assert outcomes(store, [item("r1", 0, True)], T0 + 10) == ["accepted"]  # at the window's edge: in time
    late = store.feedback([item("r1", 1, True), item("r1", 0, False)], now=T0 + 11)
    assert [o.outcome for o in late] == ["late", "duplicate"]  # an answered row is a duplicate, late or not
    assert "join_window_s=10" in late[0].message
    s = store.window(100, now=T0 + 11)["treatment"]
    assert (s.impressions, s.labelled, s.clicks) == (2, 1, 1)


MALFORMED = [  # (item, request_id echoed, row echoed)
    (None, None, None),
    ("r1", None, None),
    ([["r1", 0, True]], None, None),
    ({"row": 0, "clicked": True}, None, 0),
    ({"request_id": "", "row": 0, "clicked": True}, None, 0),
    ({"request_id": "a b", "row": 0, "clicked": True}, None, 0),
    ({"request_id": "x" * 129, "row": 0, "clicked": True}, None, 0),
    ({"request_id": "r\x1f1", "row": 0, "clicked": True}, None, 0),
    ({"request_id": 7, "row": 0, "clicked": True}, None, 0),
    ({"request_id": "r1", "clicked": True}, "r1", None),
    ({"request_id": "r1", "row": True, "clicked": True}, "r1", None),
    ({"request_id": "r1", "row": -1, "clicked": True}, "r1", None),
    ({"request_id": "r1", "row": 0.0, "clicked": True}, "r1", None),
    ({"request_id": "r1", "row": 2**31, "clicked": True}, "r1", None),
    ({"request_id": "r1", "row": 10**40, "clicked": True}, "r1", None),
    ({"request_id": "r1", "row": "0", "clicked": True}, "r1", None),
    ({"request_id": "r1", "row": 0}, "r1", 0),
    ({"request_id": "r1", "row": 0, "clicked": "yes"}, "r1", 0),
    ({"request_id": "r1", "row": 0, "clicked": 2}, "r1", 0),
    ({"request_id": "r1", "row": 0, "clicked": 1.0}, "r1", 0),
    ({"request_id": "r1", "row": 0, "clicked": None}, "r1", 0),
    ({"request_id": "r1", "row": 0, "clicked": [True]}, "r1", 0),
]


def test_malformed_items_are_answered_in_place(make_store):
    store = make_store()
    store.record("r1", "control", "deepfm", "v1", [0.1], now=T0)
    bad = [i for i, _, _ in MALFORMED]
    answers = store.feedback([*bad[:3], item("r1", 0, 1), *bad[3:]], now=T0 + 1)  # 1 reads as true
    assert [o.outcome for o in answers] == ["malformed"] * 3 + ["accepted"] + ["malformed"] * (len(bad) - 3)
    malformed = answers[:3] + answers[4:]
    assert [(o.request_id, o.row) for o in malformed] == [(rid, row) for _, rid, row in MALFORMED]
    assert all(o.message for o in malformed)
    assert store.counts["malformed"] == len(bad) and store.window(60, now=T0 + 1)["control"].clicks == 1
    assert store.feedback([], now=T0) == []
    for not_a_list in (None, {"request_id": "r1"}, "r1"):
        (answer,) = store.feedback(not_a_list, now=T0)
        assert answer.outcome == "malformed" and "list" in answer.message


def test_a_large_batch_is_joined_in_chunks_in_order(make_store):
    store = make_store()
    store.record("big", "control", "deepfm", "v1", [0.5] * 1500, now=T0)
    items = [item("big", row, row % 3 == 0) for row in range(1500)] + [item("big", 1499, True), item("big", 1500, True)]
    assert outcomes(store, items, T0 + 1) == ["accepted"] * 1500 + ["duplicate", "unknown"]
    assert store.window(60, now=T0 + 1)["control"].clicks == 500


def test_the_window_slides_and_keeps_each_arms_latest_model(make_store):
    store = make_store()
    store.record("a", "control", "m1", "v1", [0.9, 0.1], now=T0)
    store.record("b", "control", "m2", "v2", [0.8, 0.3], now=T0 + 100)
    store.record("c", "treatment", "m3", "v1", [0.4], now=T0 + 100)
    labels = [item("a", 0, True), item("a", 1, False), item("b", 0, False), item("b", 1, True), item("c", 0, True)]
    assert set(outcomes(store, labels, T0 + 101)) == {"accepted"}
    recent = store.window(50, now=T0 + 120)
    control, treatment = recent["control"], recent["treatment"]
    assert (control.impressions, control.labelled, control.clicks, control.auc) == (2, 2, 1, 0.0)
    assert (control.model, control.version) == ("m2", "v2")
    assert (treatment.ctr, treatment.auc) == (1.0, None)  # one class: no AUC
    assert treatment.calibration == pytest.approx(0.4) and treatment.logloss == pytest.approx(0.916290731874155)
    everything = store.window(1000, now=T0 + 120)["control"]
    assert (everything.impressions, everything.auc, everything.model) == (4, 0.75, "m2")  # 3 of 4 pairs in order
    assert store.window(10, now=T0 + 1000) == {}


def test_pruning_by_age_and_by_rows(make_store):
    store = make_store(max_age_s=100, join_window_s=50, max_rows=5)
    for i in range(4):
        store.record(f"r{i}", "control", "deepfm", "v1", [0.1 * (i + 1), 0.5], now=T0 + i)
    assert outcomes(store, [item("r0", 0, True)], T0 + 4) == ["accepted"]
    assert store.prune(now=T0 + 10) == 2  # newest first: r3, r2 hold 4 rows; r1 would make 6 > 5
    assert outcomes(store, [item("r1", 0, True), item("r2", 0, True)], T0 + 10) == ["unknown", "accepted"]
    s = store.window(1000, now=T0 + 10)["control"]
    assert (s.impressions, s.labelled) == (4, 1)  # r0's label went with it
    assert store.prune(now=T0 + 102.5) == 1  # older than max_age_s: r2 (T0 + 2)
    assert store.window(1000, now=T0 + 102.5)["control"].impressions == 2
    assert store.prune(now=T0 + 102.5) == 0


def test_pruning_by_rows_takes_requests_scored_at_the_same_time_together(make_store):
    store = make_store(max_rows=2)
    for rid, at in (("a", 0), ("b", 1), ("c", 1), ("d", 2)):
        store.record(rid, "control", "deepfm", "v1", [0.5], now=T0 + at)
    assert store.prune(now=T0 + 3) == 3  # b and c tie: keeping one of them is not a rule either backend could share
    assert store.window(100, now=T0 + 3)["control"].impressions == 1


def test_a_reused_request_id_keeps_its_first_answer(make_store):
    store = make_store()
    store.record("r1", "control", "deepfm", "v1", [0.1], now=T0)
    store.record("r1", "control", "deepfm", "v1", [0.9, 0.9], now=T0 + 1)
    assert outcomes(store, [item("r1", 1, True), item("r1", 0, True)], T0 + 2) == ["unknown", "accepted"]
    s = store.window(100, now=T0 + 2)["control"]
    assert (s.impressions, s.mean_score) == (1, pytest.approx(0.1))


def test_record_refuses_what_it_cannot_store(make_store):
    store = make_store()
    for bad in (("", "control"), ("a b", "control"), ("x" * 129, "control"), (7, "control"), ("r1", "arm\x1f")):
        assert store.record(bad[0], bad[1], "deepfm", "v1", [0.5], now=T0) is False
    assert store.counts["recorded_rows"] == 0 and store.window(100, now=T0) == {}


def test_a_full_buffer_drops_and_counts(make_store):
    store = make_store(queue_requests=2, flush_interval_s=3600)  # the writer waits until woken
    assert [store.record(f"r{i}", "control", "deepfm", "v1", [0.5] * 3, now=T0) for i in range(3)] == [1, 1, 0]
    assert (store.counts["recorded_rows"], store.counts["dropped_rows"]) == (6, 3)
    assert outcomes(store, [item("r1", 0, True), item("r2", 0, True)], T0 + 1) == ["accepted", "unknown"]


def test_a_failed_write_loses_its_batch_and_the_writer_carries_on(make_store, monkeypatch):
    store = make_store()
    write = store._write

    def fail(batch):
        monkeypatch.setattr(store, "_write", write)
        raise ConnectionError("storage down")

    monkeypatch.setattr(store, "_write", fail)
    store.record("lost", "control", "deepfm", "v1", [0.5], now=T0)
    assert store.flush() and store.counts["write_errors"] == 1
    store.record("kept", "control", "deepfm", "v1", [0.5], now=T0)
    assert outcomes(store, [item("lost", 0, True), item("kept", 0, True)], T0 + 1) == ["unknown", "accepted"]


def test_stores_sharing_one_storage_agree(make_store):
    a, b = make_store(), make_store()  # two replicas (Redis) or two workers (SQLite)
    a.record("r1", "control", "deepfm", "v1", [0.5, 0.7], now=T0)
    assert a.flush()
    assert outcomes(b, [item("r1", 0, True)], T0 + 1) == ["accepted"]
    assert outcomes(a, [item("r1", 0, False), item("r1", 1, False)], T0 + 1) == ["duplicate", "accepted"]
    assert a.window(60, now=T0 + 1) == b.window(60, now=T0 + 1)


def test_threads_racing_for_the_same_rows_accept_each_once(make_store):
    stores = [make_store(), make_store()]
    for i in range(50):
        stores[0].record(f"r{i}", ("control", "treatment")[i % 2], "deepfm", "v1", [0.1, 0.4, 0.6, 0.9], now=T0)
    assert stores[0].flush()
    items = [item(f"r{i}", row, row % 2 == 1) for i in range(50) for row in range(4)]
    results: list[list[str]] = []

    def feed(store, seed):
        mine = random.Random(seed).sample(items, len(items))
        results.append([o for k in range(0, len(mine), 10) for o in outcomes(store, mine[k : k + 10], T0 + 1)])

    threads = [threading.Thread(target=feed, args=(stores[k % 2], k)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    flat = [o for r in results for o in r]
    assert len(results) == 4 and flat.count("accepted") == 200 and flat.count("duplicate") == 600
    window = stores[1].window(60, now=T0 + 1)
    assert sum(s.labelled for s in window.values()) == 200 and sum(s.clicks for s in window.values()) == 100


def test_close_writes_what_is_buffered_and_is_idempotent(make_store):
    store = make_store(flush_interval_s=3600)
    store.record("r1", "control", "deepfm", "v1", [0.5], now=T0)
    store.close()
    store.close()
    assert store.record("r2", "control", "deepfm", "v1", [0.5], now=T0) is False
    assert outcomes(make_store(), [item("r1", 0, True)], T0 + 1) == ["accepted"]


def test_the_feedback_response_counts_every_outcome(make_store):
    store = make_store()
    store.record("r1", "control", "deepfm", "v1", [0.5], now=T0)
    body = feedback_response(store.feedback([item("r1", 0, True), item("r1", 0, True), {}], now=T0 + 1))
    assert body["counts"] == {"accepted": 1, "duplicate": 1, "unknown": 0, "late": 0, "malformed": 1}
    assert body["results"][0] == {"outcome": "accepted", "message": "joined to its score", "request_id": "r1", "row": 0}


def test_configuration_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="join_window_s <= max_age_s"):
        FeedbackConfig("sqlite:///x.db", max_age_s=10, join_window_s=20)
    with pytest.raises(ValueError, match="max_rows"):
        FeedbackConfig("sqlite:///x.db", max_rows=0)
    for url in ("postgres://db/feedback", "sqlite://", "sqlite:///:memory:", f"sqlite://{tmp_path}/"):
        with pytest.raises(ValueError, match="feedback store"):
            open_store(FeedbackConfig(url))
    assert default_url(tmp_path) == f"sqlite://{tmp_path.resolve()}/feedback.db"
    with open_store(FeedbackConfig(default_url(tmp_path / "data"))) as store:  # the data directory is made
        assert store.path == tmp_path.resolve() / "data" / "feedback.db"


def test_an_unreachable_redis_is_an_error_at_startup():
    pytest.importorskip("redis")
    with pytest.raises(RuntimeError, match=r"cannot connect to redis \(redis://127.0.0.1"):
        open_store(FeedbackConfig(f"redis://127.0.0.1:{free_port()}/0"))


@pytest.mark.slow  # starts redis-server
def test_redis_request_keys_expire_and_pruned_requests_leave_no_keys(redis_url):
    import redis

    prefix = f"test-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)
    now = time.time()
    config = FeedbackConfig(redis_url, key_prefix=prefix, max_age_s=600, join_window_s=60, max_rows=2)
    with open_store(config) as store:
        for i in range(3):
            store.record(f"r{i}", "control", "deepfm", "v1", [0.5], now=now + i)
        store.feedback([item("r0", 0, True)], now=now + 3)
        expires = int(now + 600) + 1  # scored at + max_age_s, as absolute Unix time (EXPIREAT)
        assert client.expiretime(f"{{{prefix}}}:r:r0") == client.expiretime(f"{{{prefix}}}:s:r0") == expires
        assert store.prune(now=now + 3) == 1  # max_rows=2: r0 goes, with its keys and its label
        keys = {k.decode() for k in client.scan_iter(f"{{{prefix}}}:*")}
        assert keys == {f"{{{prefix}}}:{k}" for k in ("r:r1", "s:r1", "r:r2", "s:r2", "imp", "rows")}
        assert int(client.get(f"{{{prefix}}}:rows")) == 2
