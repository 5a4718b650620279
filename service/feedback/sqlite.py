"""The embedded feedback store: one SQLite file in WAL mode, shared by the `--workers` of one host.

    SqliteStore(FeedbackConfig("sqlite:///var/lib/apg/feedback.db"))

Two tables. `requests`: one row per /score answer, its scores packed in a BLOB (n little-endian float64), so that a
write costs one INSERT per request whatever its rows. `labels`: one row per labelled row, with the arm and score
copied in, primary key (request_id, row): the key is the duplicate check. Each feedback batch runs in one
BEGIN IMMEDIATE transaction (writers take turns across processes; readers never wait in WAL mode), so two workers
answering the same row cannot both accept it. Every thread has its own connection; busy waits are bounded by
BUSY_TIMEOUT_S. `synchronous=NORMAL`: a power cut may lose the last transactions, never corrupt the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from service.feedback.base import (
    ACCEPTED,
    DUPLICATE,
    LATE,
    UNKNOWN,
    FeedbackConfig,
    FeedbackStore,
    Scored,
    group_by_arm,
)

BUSY_TIMEOUT_S = 10.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT NOT NULL UNIQUE,
    arm TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    scored_at REAL NOT NULL,  -- wall-clock seconds
    n INTEGER NOT NULL,  -- rows scored
    scores BLOB NOT NULL  -- n little-endian float64
);
CREATE INDEX IF NOT EXISTS requests_scored_at ON requests (scored_at);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    arm TEXT NOT NULL,
    scored_at REAL NOT NULL,
    score REAL NOT NULL,
    clicked INTEGER NOT NULL,
    labelled_at REAL NOT NULL,
    PRIMARY KEY (request_id, row)
);
CREATE INDEX IF NOT EXISTS labels_scored_at ON labels (scored_at);
"""
# the scored_at of the newest request that does not fit in max_rows (every request at or before it goes)
ROWS_CUTOFF = """
SELECT MAX(scored_at) FROM (SELECT scored_at, SUM(n) OVER (ORDER BY scored_at DESC) AS newer FROM requests)
WHERE newer > ?
"""


def sqlite_path(url: str) -> Path:
    """sqlite:///abs/feedback.db -> /abs/feedback.db; sqlite://rel/feedback.db -> rel/feedback.db."""
    path = url.removeprefix("sqlite://")
    if not url.startswith("sqlite://") or not path or path.endswith("/") or ":memory:" in path:
        raise ValueError(f"a SQLite feedback store is a file: sqlite:///path/feedback.db, got {url!r}")
    return Path(path)


class SqliteStore(FeedbackStore):
    def __init__(self, config: FeedbackConfig, metrics=None) -> None:
        super().__init__(config, metrics)
        self.path = sqlite_path(config.url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local, self._connections, self._lock = threading.local(), [], threading.Lock()
        self._setup()
        self._start()

    def _setup(self) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:  # switching to WAL takes a lock another process may hold while it sets up too
            try:
                db = self._db()
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def _write(self, batch: list[Scored]) -> None:
        rows = [(s.request_id, s.arm, s.model, s.version, s.at, s.rows, s.scores) for s in batch]
        db = self._db()
        with _transaction(db):  # a reused request id keeps its first answer
            db.executemany("INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _join(self, items: list[tuple[str, int, bool]], now: float) -> list[str]:
        db, cfg, out = self._db(), self.config, []
        with _transaction(db):
            for rid, row, clicked in items:
                found = db.execute(
                    "SELECT arm, scored_at, n, substr(scores, ?, 8) FROM requests WHERE request_id = ?",
                    (row * 8 + 1, rid),
                ).fetchone()
                if found is None or row >= found[2] or now - found[1] > cfg.max_age_s:
                    out.append(UNKNOWN)
                    continue
                arm, scored_at, _, packed = found
                if now - scored_at > cfg.join_window_s:
                    labelled = db.execute("SELECT 1 FROM labels WHERE request_id = ? AND row = ?", (rid, row))
                    out.append(DUPLICATE if labelled.fetchone() else LATE)
                    continue
                score = float(np.frombuffer(packed, dtype="<f8")[0])
                inserted = db.execute(
                    "INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rid, row, arm, scored_at, score, int(clicked), now),
                ).rowcount
                out.append(ACCEPTED if inserted else DUPLICATE)
        return out

    def _fetch_window(self, lower: float):
        db = self._db()
        with _transaction(db, "BEGIN"):  # one snapshot for both reads
            # bare columns next to MAX(): SQLite takes them from the row holding the maximum (the latest request)
            arms = db.execute(
                "SELECT arm, SUM(n), model, version, MAX(scored_at) FROM requests WHERE scored_at >= ? GROUP BY arm",
                (lower,),
            ).fetchall()
            rows = db.execute("SELECT arm, score, clicked FROM labels WHERE scored_at >= ?", (lower,)).fetchall()
        return {arm: (n, model, version) for arm, n, model, version, _ in arms}, group_by_arm(rows)

    def _prune(self, now: float) -> int:
        db = self._db()
        # read outside the write lock (a WAL snapshot): the scan is O(requests), and what is written meanwhile is
        # newer than the cutoff, so it is never what goes
        cutoff = db.execute(ROWS_CUTOFF, (self.config.max_rows,)).fetchone()[0]
        with _transaction(db):
            old, cut = now - self.config.max_age_s, -float("inf") if cutoff is None else cutoff
            gone = db.execute("DELETE FROM requests WHERE scored_at < ? OR scored_at <= ?", (old, cut)).rowcount
            db.execute("DELETE FROM labels WHERE scored_at < ? OR scored_at <= ?", (old, cut))
        return gone

    def _close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """BEGIN IMMEDIATE (or `begin`) ... COMMIT on an autocommit connection; ROLLBACK on error."""
    db.execute(begin)
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
