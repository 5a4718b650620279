"""What the service scored, and the clicks joined to it: per-arm online CTR, calibration, AUC and logloss.

    store = open_store(FeedbackConfig("sqlite:///var/lib/apg/feedback.db"), FeedbackMetrics(registry))
    store.record(request_id, arm, model, version, scores)        # after each /score answer; non-blocking
    outcomes = store.feedback([{"request_id": "r1", "row": 0, "clicked": True}, ...])   # -> list[Outcome]
    feedback_response(outcomes)    # {"counts": {"accepted": 1, ...}, "results": [{"outcome", "message", ...}]}
    store.window(3600)             # -> {arm: OnlineStats(impressions, labelled, clicks, ctr, mean_score, ...)}
    registry.register(WindowCollector(store, 3600))                # the window as apg_online_* gauges (prometheus.py)
    store.close()

The interface (FeedbackStore, base.py):
    record(request_id: str, arm: str, model: str, version: str, scores: Sequence[float], now: float | None = None)
        -> bool   queues one answer (row i scored scores[i]) for the writer thread; False when not queued (the
                  bounded buffer was full: dropped and counted; a closed store; an id the store cannot hold).
    feedback(items: Sequence[object], now: float | None = None) -> list[Outcome]
        one Outcome per item, in order: accepted, duplicate (the row already has feedback: the first counts),
        unknown (never scored, not yet written, or older than max_age_s), late (older than join_window_s: not
        counted), malformed (not {"request_id": str, "row": int >= 0, "clicked": bool}). Never raises on bad items.
    window(seconds: float, now: float | None = None) -> dict[str, OnlineStats]
        per arm over the rows scored in [now - seconds, now]; AUC exact via ranks, None unless both classes.
    prune(now=None) -> int, flush(timeout=5.0) -> bool, close(); `counts` (this process's counters).

Backends, chosen by URL (open_store): `sqlite:///path/feedback.db` (default, sqlite.py: one file in WAL mode,
shared by the --workers of one host) and `redis://host:6379/0` (redis_store.py: several replicas share it). Both
keep the same rules, checked by one test suite run against each (tests/service/test_feedback_store.py). Retention:
requests older than max_age_s go (Redis: key expiry; both: pruning every prune_interval_s), and beyond max_rows
rows the oldest requests go at each prune. Times are wall-clock seconds (time.time()), shared by processes and
replicas; `now` is for tests. Torch-free: numpy, sqlite3, and redis-py for a Redis store.
"""

from __future__ import annotations

from pathlib import Path

from service.feedback.base import (
    ACCEPTED,
    DUPLICATE,
    LATE,
    MALFORMED,
    OUTCOMES,
    UNKNOWN,
    FeedbackConfig,
    FeedbackStore,
    Outcome,
    feedback_response,
)
from service.feedback.stats import OnlineStats

__all__ = [
    "ACCEPTED",
    "DUPLICATE",
    "LATE",
    "MALFORMED",
    "OUTCOMES",
    "UNKNOWN",
    "FeedbackConfig",
    "FeedbackStore",
    "OnlineStats",
    "Outcome",
    "default_url",
    "feedback_response",
    "open_store",
]
DB_FILE = "feedback.db"


def default_url(data_dir: str | Path) -> str:
    """The embedded store's URL in a data directory."""
    return f"sqlite://{Path(data_dir).resolve() / DB_FILE}"


def open_store(config: FeedbackConfig, metrics=None) -> FeedbackStore:
    """The store `config.url` names (ValueError for another scheme; RuntimeError when Redis cannot be reached).
    `metrics`: a prometheus.FeedbackMetrics, or None."""
    scheme = config.url.partition("://")[0]
    if scheme == "sqlite":
        from service.feedback.sqlite import SqliteStore

        return SqliteStore(config, metrics)
    if scheme in ("redis", "rediss", "unix"):
        from service.feedback.redis_store import RedisStore

        return RedisStore(config, metrics)
    raise ValueError(f"feedback store URL: sqlite:///path/feedback.db or redis://host:port/db, got {config.url!r}")
