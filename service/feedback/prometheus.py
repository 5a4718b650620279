"""The feedback store in Prometheus: counters of what happened, gauges of each arm's window.

    metrics = FeedbackMetrics(registry)                 # counters, declared once; pass to open_store(config, metrics)
    registry.register(WindowCollector(store, 3600))     # gauges, computed from store.window() at scrape time

| name | type | labels | meaning |
|---|---|---|---|
| `apg_feedback_total` | counter | `outcome` | feedback items: accepted, duplicate, unknown, late, malformed |
| `apg_feedback_recorded_rows_total` | counter | – | scored rows handed to the store |
| `apg_feedback_dropped_rows_total` | counter | – | scored rows dropped: the write buffer was full |
| `apg_feedback_write_errors_total` | counter | – | failed writes (each loses its batch of requests) |
| `apg_online_window_seconds` | gauge | – | the window the gauges below cover |
| `apg_online_impressions` | gauge | `arm`, `model` | rows scored in the window |
| `apg_online_labelled` | gauge | `arm`, `model` | of those, rows with feedback |
| `apg_online_clicks` | gauge | `arm`, `model` | of those, clicks |
| `apg_online_ctr` | gauge | `arm`, `model` | clicks / labelled |
| `apg_online_predicted_ctr` | gauge | `arm`, `model` | mean predicted click probability of the labelled rows |
| `apg_online_calibration_ratio` | gauge | `arm`, `model` | predicted / observed CTR (1 = calibrated) |
| `apg_online_auc` | gauge | `arm`, `model` | AUC of the labelled rows (absent without both classes) |
| `apg_online_logloss` | gauge | `arm`, `model` | logloss of the labelled rows |

The counters are per process (multiprocess-safe like every other counter of the service). The gauges describe the
shared store, the same from any worker or replica: aggregate replicas with max(), not sum(). In multiprocess mode
register the collector on the registry that `/metrics` builds for the MultiProcessCollector. `model` is the arm's
latest model; at most MAX_ARMS arms are exported (the busiest), so label values stay bounded whatever was recorded.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

from service.feedback.base import OUTCOMES, FeedbackStore
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
            ),  # fmt: skip
            "write_errors": Counter(
                "apg_feedback_write_errors", "Failed feedback store writes (each loses its batch).", registry=registry
            ),
        }
        self._outcomes = {o: self.outcomes.labels(o) for o in OUTCOMES}  # every outcome exported from 0

    def count(self, name: str, n: int) -> None:
        counter = self._outcomes.get(name) or self.totals[name]
        counter.inc(n)


class WindowCollector:
    """Gauges of `store.window(window_s)`, recomputed at most every `cache_s` (several scrapers share one query).
    A failing store exports no gauges (and logs), never a failed scrape."""

    def __init__(self, store: FeedbackStore, window_s: float, cache_s: float = 5.0) -> None:
        self.store, self.window_s, self.cache_s = store, window_s, cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[OnlineStats]] = (-float("inf"), [])

    def describe(self):  # registering must not query the store
        return self._families([])

    def collect(self):
        return self._families(self._stats())

    def _stats(self) -> list[OnlineStats]:
        with self._lock:
            at, stats = self._cached
            if time.monotonic() - at >= self.cache_s:
                try:
                    window = self.store.window(self.window_s)
                except Exception:
                    log.exception("feedback store: the window for /metrics failed")
                    window = {}
                stats = sorted(window.values(), key=lambda s: -s.impressions)[:MAX_ARMS]
                self._cached = (time.monotonic(), stats)
            return stats

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
