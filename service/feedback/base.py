"""What every feedback store shares: its settings, the answers to feedback, the validation of feedback items, and the
write buffer that keeps `record()` off the storage's latency.

    config = FeedbackConfig("sqlite:///var/lib/apg/feedback.db", max_age_s=86400, join_window_s=3600)
    store.record(request_id, arm, model, version, scores)   # enqueue; never blocks, never raises on a full buffer
    store.feedback([{"request_id": ..., "row": 0, "clicked": True}])  -> [Outcome(outcome="accepted", ...)]

A backend (sqlite.py, redis_store.py) implements five methods: `_write` a batch of scored requests, `_join` valid
feedback items (atomic per item across processes: no row is ever labelled twice), `_fetch_window`, `_prune`, `_close`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from service.feedback.stats import OnlineStats, summarise
from service.observe import MAX_ID_LENGTH, valid_id  # the request-id rule: feedback joins on the ids it hands out

log = logging.getLogger("apg.feedback")

ACCEPTED, DUPLICATE, UNKNOWN, LATE, MALFORMED = "accepted", "duplicate", "unknown", "late", "malformed"
OUTCOMES = (ACCEPTED, DUPLICATE, UNKNOWN, LATE, MALFORMED)
MAX_ROW = 2**31 - 1  # far beyond any request; keeps row * 8 inside SQLite's and Lua's integers
JOIN_CHUNK = 1000  # feedback items per storage transaction: bounds how long one batch holds SQLite's write lock
SEP = "\x1f"  # separates the fields of an index entry (Redis); refused in ids, arms, model names and versions


@dataclass(frozen=True)
class FeedbackConfig:
    """Where the store lives and how long it remembers. `join_window_s` <= `max_age_s`."""

    url: str  # sqlite:///abs/path/feedback.db, sqlite://relative/path.db, redis://127.0.0.1:6379/0
    max_age_s: float = 86_400.0  # scored rows are forgotten after this (feedback then: unknown)
    join_window_s: float = 3_600.0  # feedback later than this after scoring is late (answered, not counted)
    max_rows: int = 1_000_000  # scored rows kept at most; the oldest requests go first (checked every prune)
    queue_requests: int = 10_000  # scored requests buffered for the writer; beyond, record() drops and counts
    batch_requests: int = 1_000  # scored requests per write
    flush_interval_s: float = 0.05  # how long the writer waits to gather a batch
    prune_interval_s: float = 30.0  # how often each process prunes (age and rows)
    key_prefix: str = "apg:feedback"  # Redis key prefix (one store per prefix)
    request_timeout_s: float = 10.0  # feedback() waits at most about this long on storage (busy lock, socket, buffer)

    def __post_init__(self) -> None:
        if not 0 < self.join_window_s <= self.max_age_s:
            raise ValueError(f"need 0 < join_window_s <= max_age_s, got {self.join_window_s}, {self.max_age_s}")
        names = ("max_rows", "queue_requests", "batch_requests", "flush_interval_s", "prune_interval_s")
        for name in (*names, "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"feedback {name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class Outcome:
    """The answer to one feedback item; `request_id` and `row` are echoed when the item had readable ones."""

    outcome: str  # one of OUTCOMES
    message: str
    request_id: str | None = None
    row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Scored(NamedTuple):
    """One /score answer as the writer stores it."""

    request_id: str
    arm: str
    model: str
    version: str
    at: float  # wall-clock seconds (time.time()): shared by processes and replicas
    rows: int
    scores: bytes  # `rows` little-endian float64


def feedback_response(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The body POST /feedback answers with: counts per outcome (all five, zeros included) and one result per item."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for o in outcomes:
        counts[o.outcome] += 1
    return {"counts": counts, "results": [o.to_dict() for o in outcomes]}


def parse_item(item: Any) -> tuple[str, int, bool] | Outcome:
    """(request_id, row, clicked) of a well-formed item, else its `malformed` Outcome. `clicked` is a JSON boolean
    (0 and 1 are read as false and true); keys other than the three are ignored."""
    if not isinstance(item, dict):
        return Outcome(MALFORMED, f"a feedback item is an object, got {type(item).__name__}")
    rid, row, clicked = item.get("request_id"), item.get("row"), item.get("clicked")
    echo_id = rid if isinstance(rid, str) and valid_id(rid) else None
    echo_row = row if isinstance(row, int) and not isinstance(row, bool) and 0 <= row <= MAX_ROW else None
    if echo_id is None:
        return Outcome(MALFORMED, f"request_id must be 1-{MAX_ID_LENGTH} visible ASCII characters", None, echo_row)
    if echo_row is None:
        return Outcome(MALFORMED, f"row must be an integer in 0..{MAX_ROW}: the row's index in its request", rid)
    if clicked not in (True, False) or isinstance(clicked, float):
        return Outcome(MALFORMED, "clicked must be true or false", rid, row)
    return rid, row, bool(clicked)


def group_by_arm(rows: list[tuple[str, float, int]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{arm: (scores, clicked)} of (arm, score, clicked) rows, in one pass of numpy."""
    if not rows:
        return {}
    arms, scores, clicked = zip(*rows, strict=True)
    names, which = np.unique(np.array(arms), return_inverse=True)
    scores, clicked = np.array(scores, dtype=np.float64), np.array(clicked, dtype=bool)
    return {str(name): (scores[which == k], clicked[which == k]) for k, name in enumerate(names)}


MESSAGES = {
    ACCEPTED: "joined to its score",
    DUPLICATE: "this row already has feedback; the first one counts",
    UNKNOWN: "no such scored row: never scored, not yet stored, or older than max_age_s={max_age_s:g} s",
    LATE: "more than join_window_s={join_window_s:g} s after scoring: not counted",
}


class FeedbackStore:
    """The shared half of a store: the write buffer and its writer thread, validation, counting, windows.

    `record()` only appends to a bounded buffer (a few µs, no syscall, no wake-up): a writer thread drains it in
    batches of up to `batch_requests` every `flush_interval_s`, and prunes every `prune_interval_s`. A full buffer
    (`queue_requests`) drops the request and counts it (`counts["dropped_rows"]`, apg_feedback_dropped_rows_total);
    a failed write loses its batch and counts it. `close()` writes what is buffered; rows it could not write within
    its 30 s, and rows recorded after it began, are counted as `exit_dropped_rows`. A process killed outright
    (kill -9) loses what its buffer held: at most `flush_interval_s` of answers, uncounted.
    `feedback()` and `window()` first wait (bounded) for this
    process's buffer to be written, so they see every row this process recorded before the call; rows recorded by
    another process or replica are visible once its writer has written them (within `flush_interval_s` plus the
    write). `feedback`, `window`, `prune` and `close` block on storage: call them from a thread
    (run_in_threadpool), not the event loop."""

    def __init__(self, config: FeedbackConfig, metrics: Any = None) -> None:
        self.config, self.metrics = config, metrics  # metrics: a prometheus.FeedbackMetrics or None
        totals = ("recorded_rows", "dropped_rows", "write_errors", "exit_dropped_rows")
        self.counts = dict.fromkeys((*OUTCOMES, *totals), 0)
        self._buffer: deque[tuple[int, Scored]] = deque()  # (sequence number, request), FIFO
        self._put_lock, self._written, self._wake = threading.Lock(), threading.Condition(), threading.Event()
        self._enqueued = self._done = 0  # sequence numbers: the last queued, the last written (or lost to an error)
        self._closing = False
        self._labels_ok: set[tuple[str, str, str]] = set()  # (arm, model, version) already checked
        self._messages = {status: text.format(**asdict(config)) for status, text in MESSAGES.items()}
        self._thread = threading.Thread(target=self._run, name="apg-feedback-writer", daemon=True)

    def _start(self) -> None:  # a backend calls this once its storage is ready
        self._thread.start()

    # ---------------------------------------------------------------- the hot path
    def record(
        self, request_id: str, arm: str, model: str, version: str, scores: Sequence[float], now: float | None = None
    ) -> bool:
        """Queue one /score answer (row i scored scores[i]). False when it was not queued: full buffer (counted),
        a closed store, or an id, arm, model or version the store cannot hold (1-128 visible ASCII characters)."""
        if self._closing:  # the process is stopping: these rows will not be written
            self._count("exit_dropped_rows", np.size(scores))
            return False
        if type(request_id) is not str or not valid_id(request_id) or not self._labels(arm, model, version):
            return False
        packed = np.asarray(scores, dtype="<f8").ravel()
        item = Scored(
            request_id, arm, model, version, time.time() if now is None else now, len(packed), packed.tobytes()
        )
        with self._put_lock:
            full = len(self._buffer) >= self.config.queue_requests
            if not full:
                self._enqueued += 1
                self._buffer.append((self._enqueued, item))
        self._count("dropped_rows" if full else "recorded_rows", item.rows)
        return not full

    def write_soon(self) -> None:
        """Wake the writer now rather than at the end of its interval (SIGTERM: the buffer goes out at once)."""
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything this process recorded before the call is written; False on timeout."""
        target = self._enqueued
        if self._done >= target:
            return True
        self._wake.set()  # write now rather than at the end of the writer's interval
        with self._written:
            return self._written.wait_for(lambda: self._done >= target or not self._thread.is_alive(), timeout)

    # ---------------------------------------------------------------- feedback and windows
    def feedback(self, items: Sequence[Any], now: float | None = None) -> list[Outcome]:
        """One Outcome per item, in order (something other than a list: one malformed Outcome). Never raises on bad
        items; a row is counted at most once, across processes and replicas (the first feedback for a row wins,
        later ones are duplicates)."""
        now = time.time() if now is None else now
        if not isinstance(items, list | tuple):
            self._count(MALFORMED, 1)
            return [Outcome(MALFORMED, f"feedback is a list of items, got {type(items).__name__}")]
        parsed = [parse_item(item) for item in items]
        valid = [p for p in parsed if not isinstance(p, Outcome)]
        if valid:
            self.flush(self.config.request_timeout_s)  # what this process recorded (bounded: a stalled writer)
        joined = iter([o for k in range(0, len(valid), JOIN_CHUNK) for o in self._join(valid[k : k + JOIN_CHUNK], now)])
        outcomes = [p if isinstance(p, Outcome) else self._outcome(next(joined), p) for p in parsed]
        for o in outcomes:
            self._count(o.outcome, 1)
        return outcomes

    def window(self, seconds: float, now: float | None = None) -> dict[str, OnlineStats]:
        """Per arm, over the rows scored in [now - seconds, now] (no further back than max_age_s)."""
        now = time.time() if now is None else now
        self.flush()
        lower = now - min(seconds, self.config.max_age_s)
        impressions, labelled = self._fetch_window(lower)
        stats = {}
        for arm, (n, model, version) in sorted(impressions.items()):
            scores, clicked = labelled.get(arm, ((), ()))
            stats[arm] = summarise(arm, model, version, n, np.asarray(scores), np.asarray(clicked, dtype=bool))
        return stats

    def prune(self, now: float | None = None) -> int:
        """Forget requests older than max_age_s and, beyond max_rows rows, the oldest; the number of requests gone.
        Writes this process's buffer first. The writer thread prunes every prune_interval_s."""
        self.flush()
        return self._prune(time.time() if now is None else now)

    def close(self) -> None:
        """Write what is buffered, stop the writer, close the storage. Idempotent."""
        if not self._closing:
            self._closing = True
            self._wake.set()
            if self._thread.is_alive():
                self._thread.join(30)
            lost = sum(item.rows for _, item in list(self._buffer))  # the writer did not finish in time
            if lost:
                log.error("feedback store: %d scored rows not written at exit", lost)
                self._count("exit_dropped_rows", lost)
            self._close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _outcome(self, status: str, item: tuple[str, int, bool]) -> Outcome:
        return Outcome(status, self._messages[status], item[0], item[1])

    def _count(self, name: str, n: int) -> None:
        self.counts[name] += n  # under the GIL; exact enough for a status line, Prometheus has its own
        if self.metrics is not None:
            self.metrics.count(name, n)

    def _labels(self, arm: str, model: str, version: str) -> bool:
        key = (arm, model, version)
        if type(arm) is not str or type(model) is not str or type(version) is not str:
            return False
        if key not in self._labels_ok:
            if not (valid_id(arm) and valid_id(model) and valid_id(version)):
                return False
            if len(self._labels_ok) < 1024:
                self._labels_ok.add(key)
        return True

    def _run(self) -> None:
        """Every flush_interval_s (or when woken): write what is buffered, in batches; prune when it is due."""
        next_prune = time.monotonic() + self.config.prune_interval_s
        while True:
            self._wake.wait(self.config.flush_interval_s)
            self._wake.clear()
            stopping = self._closing
            pending = len(self._buffer)  # only this thread takes from the buffer: these many are there
            while pending:
                n = min(pending, self.config.batch_requests)
                self._write_batch([self._buffer.popleft() for _ in range(n)])
                pending -= n
            if stopping:
                return
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.config.prune_interval_s
                try:
                    self._prune(time.time())
                except Exception:
                    log.exception("feedback store: pruning failed")

    def _write_batch(self, batch: list[tuple[int, Scored]]) -> None:
        try:
            self._write([item for _, item in batch])
        except Exception:  # the storage is down or locked beyond its timeout: this batch is lost
            log.exception("feedback store: a write of %d requests failed", len(batch))
            self._count("write_errors", 1)
        with self._written:
            self._done = batch[-1][0]  # FIFO: everything up to here is written (or lost)
            self._written.notify_all()

    # a backend's part
    def _write(self, batch: list[Scored]) -> None:
        raise NotImplementedError

    def _join(self, items: list[tuple[str, int, bool]], now: float) -> list[str]:
        """The outcome of each valid item (UNKNOWN, DUPLICATE, LATE or ACCEPTED, checked in that order)."""
        raise NotImplementedError

    def _fetch_window(self, lower: float) -> tuple[dict[str, tuple[int, str, str]], dict[str, tuple[Any, Any]]]:
        """({arm: (rows scored, latest model, latest version)}, {arm: (scores, clicked) of labelled rows}), for the
        requests scored at or after `lower`, read as one snapshot."""
        raise NotImplementedError

    def _prune(self, now: float) -> int:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError
