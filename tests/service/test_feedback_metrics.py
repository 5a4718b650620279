"""The online metrics: the store's AUC and logloss against the training side's (features/metrics.py), and the
Prometheus counters and gauges read back from a fresh registry."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from live_server import wait_for
from prometheus_client import CollectorRegistry, generate_latest

from features import metrics as offline
from service.feedback import FeedbackConfig, open_store
from service.feedback.prometheus import MAX_ARMS, FeedbackMetrics, WindowCollector
from service.feedback.stats import auc, logloss, summarise

T0 = time.time()


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_logloss_agree_with_the_offline_metrics(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(500), 2)  # many ties
    clicked = rng.random(500) < scores  # informative: AUC well above 0.5
    assert auc(clicked, scores) == pytest.approx(offline.auc(clicked, scores), abs=1e-12)
    assert logloss(clicked, scores) == pytest.approx(offline.logloss(clicked, scores), abs=1e-9)
    assert auc(clicked, scores) > 0.6


def test_one_class_or_no_rows_has_no_auc():
    assert auc(np.ones(3, bool), np.array([0.1, 0.2, 0.3])) is None
    assert auc(np.zeros(0, bool), np.zeros(0)) is None and logloss(np.zeros(0), np.zeros(0)) is None
    empty = summarise("control", "m", "v", 5, np.zeros(0), np.zeros(0, bool))
    assert (empty.impressions, empty.labelled, empty.ctr, empty.mean_score, empty.logloss) == (5, 0, None, None, None)
    no_click = summarise("control", "m", "v", 2, np.array([0.2, 0.4]), np.zeros(2, bool))
    assert (no_click.ctr, no_click.calibration, no_click.mean_score) == (0.0, None, pytest.approx(0.3))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_counters_and_gauges_read_back(tmp_path, registry):
    metrics = FeedbackMetrics(registry)
    store = open_store(FeedbackConfig(f"sqlite://{tmp_path}/f.db", prune_interval_s=3600), metrics)
    collector = WindowCollector(store, window_s=600, refresh_s=3600)
    registry.register(collector)
    store.record("r1", "control", "deepfm", "v1", [0.2, 0.9], now=T0)
    store.record("r2", "treatment", "deepfm-apg", "v2", [0.6], now=T0)
    items = [
        {"request_id": "r1", "row": 0, "clicked": False},
        {"request_id": "r1", "row": 1, "clicked": True},
        {"request_id": "r1", "row": 1, "clicked": True},
        {"request_id": "r2", "row": 0, "clicked": True},
        {"request_id": "r2"},
    ]
    store.feedback(items)
    collector.refresh()
    value = registry.get_sample_value
    for outcome, n in {"accepted": 3, "duplicate": 1, "malformed": 1, "unknown": 0, "late": 0}.items():
        assert value("apg_feedback_total", {"outcome": outcome}) == n
    assert value("apg_feedback_recorded_rows_total") == 3 and value("apg_feedback_dropped_rows_total") == 0
    control, treatment = {"arm": "control", "model": "deepfm"}, {"arm": "treatment", "model": "deepfm-apg"}
    assert value("apg_online_window_seconds") == 600
    assert value("apg_online_impressions", control) == 2 and value("apg_online_clicks", control) == 1
    assert value("apg_online_auc", control) == 1.0 and value("apg_online_ctr", control) == 0.5
    assert value("apg_online_predicted_ctr", control) == pytest.approx(0.55)
    assert value("apg_online_calibration_ratio", treatment) == pytest.approx(0.6)
    assert value("apg_online_auc", treatment) is None  # one class: no sample rather than NaN
    assert value("apg_online_logloss", treatment) == pytest.approx(-np.log(0.6))
    assert b'apg_online_auc{arm="control",model="deepfm"} 1.0' in generate_latest(registry)
    store.close()


def test_arms_beyond_the_bound_are_not_exported(tmp_path, registry):
    with open_store(FeedbackConfig(f"sqlite://{tmp_path}/f.db", prune_interval_s=3600)) as store:
        for k in range(MAX_ARMS + 4):
            store.record(f"r{k}", f"arm{k}", "deepfm", "v1", [0.5] * (k + 1), now=T0)
        collector = WindowCollector(store, window_s=600, refresh_s=3600)
        collector.refresh()
        registry.register(collector)
        arms = {s.labels["arm"] for m in registry.collect() for s in m.samples if m.name == "apg_online_impressions"}
    assert arms == {f"arm{k}" for k in range(4, MAX_ARMS + 4)}  # the busiest


def test_a_scrape_never_waits_for_the_window():
    class Slow:  # a window that takes until the test lets it finish
        release, done = threading.Event(), threading.Event()

        def window(self, seconds):
            assert self.release.wait(30)
            self.done.set()
            return {"a": summarise("a", "m", "v", 3, np.array([0.5]), np.array([True]))}

    store, registry = Slow(), CollectorRegistry()
    registry.register(WindowCollector(store, window_s=60, refresh_s=3600))
    assert registry.get_sample_value("apg_online_impressions", {"arm": "a", "model": "m"}) is None  # not yet
    store.release.set()
    assert store.done.wait(30)
    value = wait_for(lambda: registry.get_sample_value("apg_online_impressions", {"arm": "a", "model": "m"}), 30)
    assert value == 3


def test_a_failing_store_leaves_the_scrape_working(registry, caplog):
    class Down:
        def window(self, seconds):
            raise ConnectionError("redis is down")

    collector = WindowCollector(Down(), window_s=60, refresh_s=3600)
    collector.refresh()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert "apg_online_window_seconds 60.0" in text and "apg_online_auc{" not in text
    assert "window for /metrics failed" in caplog.text


def test_sqlite_reads_a_window_in_chunks_and_gets_the_same_stats(tmp_path, monkeypatch):
    from service.feedback import sqlite

    monkeypatch.setattr(sqlite, "FETCH_ROWS", 3)  # many chunks for a few rows
    rng = np.random.default_rng(0)
    store = open_store(FeedbackConfig(f"sqlite://{tmp_path}/feedback.db"))
    try:
        expected = {}
        for arm in ("control", "treatment"):
            scores = np.round(rng.random(20), 3)
            clicked = rng.random(20) < scores
            store.record(f"{arm}-r", arm, "m", "v", scores)
            items = [{"request_id": f"{arm}-r", "row": i, "clicked": bool(c)} for i, c in enumerate(clicked)]
            assert all(o.outcome == "accepted" for o in store.feedback(items))
            expected[arm] = summarise(arm, "m", "v", 20, scores, clicked)
        assert store.window(3600) == expected
    finally:
        store.close()


@pytest.mark.slow
def test_a_window_over_a_million_labelled_rows_never_stalls_the_event_loop(tmp_path):
    # issue 25: the refresh ran in a thread but held the GIL for ~0.9 s at a time (fetchall, zip, np.unique of strings)
    import asyncio

    rows, now = 1_000_000, time.time()
    store = open_store(FeedbackConfig(f"sqlite://{tmp_path}/feedback.db", max_rows=10 * rows))
    try:
        db, rng = store._db(), np.random.default_rng(0)
        scores, clicked = rng.random(rows), rng.random(rows) < 0.3
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO requests VALUES (?, ?, 'm', 'v', ?, 1, zeroblob(8))",
            ((f"r{i}", ("control", "treatment")[i % 2], now - 10) for i in range(rows)),
        )
        db.executemany(
            "INSERT INTO labels VALUES (?, 0, ?, ?, ?, ?, ?)",
            (
                (f"r{i}", ("control", "treatment")[i % 2], now - 10, float(scores[i]), int(clicked[i]), now)
                for i in range(rows)
            ),
        )
        db.execute("COMMIT")

        async def worst_lag() -> tuple[float, dict]:
            worker = asyncio.get_running_loop().run_in_executor(None, store.window, 3600)
            lag = 0.0
            while not worker.done():
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lag = max(lag, time.perf_counter() - t - 0.001)
            return lag, await worker

        lag, window = asyncio.run(worst_lag())
        print(f"worst event-loop lag {lag * 1000:.0f} ms")
        assert window["control"].labelled == window["treatment"].labelled == rows // 2
        assert lag < 0.3, f"the event loop stalled {lag:.2f} s"
    finally:
        store.close()
