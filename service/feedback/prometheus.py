"""The feedback store in Prometheus: counters of what happened, gauges of each arm's window.

    metrics = FeedbackMetrics(registry)                 # counters, declared once; pass to open_store(config, metrics)
    registry.register(WindowCollector(store, 3600))     # gauges of store.window(), refreshed off the scrape

What each one means is its help text (docs/METRICS.md is generated from them: `python -m scripts.docs`).

The counters are per process (multiprocess-safe like every other counter of the service). The gauges describe the
shared store, the same from any worker or replica: aggregate replicas with max(), not sum(). In multiprocess mode
register the collector on the registry that `/metrics` builds for the MultiProcessCollector. `model` is the arm's
latest model; at most MAX_ARMS arms are exported (the busiest), so label values stay bounded whatever was recorded.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

from service.feedback.base import OUTCOMES, FeedbackStore
from service.feedback.keeper import REASONS
from service.feedback.stats import OnlineStats

log = logging.getLogger("apg.feedback")
MAX_ARMS = 16
GAUGES = {  # metric suffix -> (OnlineStats field, help)
    "impressions": ("impressions", "Rows scored in the window, per arm."),
    "labelled": ("labelled", "Rows scored in the window that have feedback, per arm."),
    "clicks": ("clicks", "Clicks among the labelled rows of the window, per arm."),
    "ctr": ("ctr", "Observed CTR (clicks / labelled rows) over the window, per arm."),
    "predicted_ctr": ("mean_score", "Mean predicted click probability of the window's labelled rows, per arm."),
    "calibration_ratio": ("calibration", "Predicted over observed CTR over the window, per arm (1 = calibrated)."),
    "auc": ("auc", "AUC of the window's labelled rows, per arm."),
    "logloss": ("logloss", "Logloss of the window's labelled rows, per arm."),
}


class FeedbackMetrics:
    """The store's counters; `count(name, n)` is what FeedbackStore calls."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter("apg_feedback", "Feedback items by outcome.", ["outcome"], registry=registry)
        self.totals = {
            "recorded_rows": Counter(
                "apg_feedback_recorded_rows", "Scored rows handed to the feedback store.", registry=registry
            ),
            "dropped_rows": Counter(
                "apg_feedback_dropped_rows",
                "Scored rows dropped: the feedback write buffer was full.",
                registry=registry,
            ),
            "write_errors": Counter(
                "apg_feedback_write_errors", "Failed feedback store writes (each loses its batch).", registry=registry
            ),
            "exit_dropped_rows": Counter(
                "apg_feedback_exit_dropped_rows",
                "Scored rows still unwritten when the process stopped (lost).",
                registry=registry,
            ),
        }
        self.unavailable = Gauge(
            "apg_feedback_store_unavailable",
            "1 while the feedback store cannot be opened or its last call failed, by reason.",
            ["reason"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        for reason in REASONS:
            self.unavailable.labels(reason).set(0)
        self._outcomes = {o: self.outcomes.labels(o) for o in OUTCOMES}  # every outcome exported from 0

    def count(self, name: str, n: int) -> None:
        counter = self._outcomes.get(name) or self.totals[name]
        counter.inc(n)


class WindowCollector:
    """Gauges of `store.window(window_s)`. A scrape never waits on the store: it exports the latest snapshot and, when
    that is older than `refresh_s`, starts one background refresh (a window over many labelled rows takes seconds,
    and /metrics may run on the event loop). A failing store keeps the last snapshot (and logs), never fails a
    scrape. `refresh()` recomputes now, in the caller's thread."""

    def __init__(self, store: FeedbackStore, window_s: float, refresh_s: float = 10.0) -> None:
        self.store, self.window_s, self.refresh_s = store, window_s, refresh_s
        self._lock = threading.Lock()
        self._stats: list[OnlineStats] = []
        self._at = -float("inf")  # monotonic time of the last refresh (attempted)
        self._refreshing = False

    def describe(self):  # registering must not query the store
        return self._families([])

    def collect(self):
        with self._lock:
            stale = not self._refreshing and time.monotonic() - self._at >= self.refresh_s
            self._refreshing = self._refreshing or stale
            stats = self._stats
        if stale:
            threading.Thread(target=self._refresh_in_background, name="apg-feedback-window", daemon=True).start()
        return self._families(stats)

    def refresh(self) -> None:
        try:
            window = self.store.window(self.window_s)
        except Exception:
            log.exception("feedback store: the window for /metrics failed")
            window = None
        with self._lock:
            self._at = time.monotonic()
            if window is not None:
                self._stats = sorted(window.values(), key=lambda s: -s.impressions)[:MAX_ARMS]

    def _refresh_in_background(self) -> None:
        try:
            self.refresh()
        finally:
            with self._lock:
                self._refreshing = False

    def _families(self, stats: list[OnlineStats]) -> list:
        window = GaugeMetricFamily("apg_online_window_seconds", "The window of the apg_online_* gauges.")
        window.add_metric([], self.window_s)
        families = [window]
        for suffix, (field, doc) in GAUGES.items():
            family = GaugeMetricFamily(f"apg_online_{suffix}", doc, labels=["arm", "model"])
            for s in stats:
                value = getattr(s, field)
                if value is not None:
                    family.add_metric([s.arm, s.model], value)
            families.append(family)
        return families
