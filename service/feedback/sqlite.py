"""The embedded feedback store: one SQLite file in WAL mode, shared by the `--workers` of one host.

    SqliteStore(FeedbackConfig("sqlite:///var/lib/apg/feedback.db"))

Two tables. `requests`: one row per /score answer, its scores packed in a BLOB (n little-endian float64), so that a
write costs one INSERT per request whatever its rows. `labels`: one row per labelled row, with the arm and score
copied in, primary key (request_id, row): the key is the duplicate check. Each feedback batch runs in one
BEGIN IMMEDIATE transaction (writers take turns across processes; readers never wait in WAL mode), so two workers
answering the same row cannot both accept it. Every thread has its own connection; busy waits are bounded by
BUSY_TIMEOUT_S for the writer thread and by the config's request_timeout_s for the others (requests' threads).
`synchronous=NORMAL`: a power cut may lose the last transactions, never corrupt the file.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from service.feedback.base import (
    ACCEPTED,
    DUPLICATE,
    LATE,
    UNKNOWN,
    FeedbackConfig,
    FeedbackStore,
    Scored,
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


# A window's labelled rows, read an arm at a time and FETCH_ROWS rows at a time into numpy: the scan and the sort run in
# SQLite without the GIL, and no Python step holds it for long (one fetchall() and a zip() of a million rows held
# it, and so stalled the event loop, for up to 1.3 s: issue 25)
LABELLED_ARMS = "SELECT DISTINCT arm FROM labels WHERE scored_at >= ?"
ARM_LABELS = "SELECT score, clicked FROM labels WHERE scored_at >= ? AND arm = ?"
FETCH_ROWS = 10_000


def _labels(cursor: sqlite3.Cursor) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64, clicked bool) of a cursor over (score, clicked) rows, fetched FETCH_ROWS at a time."""
    parts = []
    while chunk := cursor.fetchmany(FETCH_ROWS):
        parts.append(np.array(chunk, dtype=np.float64).reshape(-1, 2))
    both = np.concatenate(parts) if parts else np.empty((0, 2))
    return both[:, 0], both[:, 1].astype(bool)


def sqlite_path(url: str) -> Path:
    """sqlite:///abs/feedback.db -> /abs/feedback.db; sqlite://rel/feedback.db -> rel/feedback.db."""
    path = url.removeprefix("sqlite://")
    if not url.startswith("sqlite://") or not path or path.endswith("/") or ":memory:" in path:
        raise ValueError(f"a SQLite feedback store is a file: sqlite:///path/feedback.db, got {url!r}")
    return Path(path)


def _in_use(method: Callable) -> Callable:
    """`method` with the calling thread's connection marked in use (`_close` waits for it)."""

    @functools.wraps(method)
    def wrapper(self: SqliteStore, *args: Any) -> Any:
        self._db()
        with self._local.using:
            return method(self, *args)

    return wrapper


class SqliteStore(FeedbackStore):
    def __init__(self, config: FeedbackConfig, metrics=None) -> None:
        super().__init__(config, metrics)
        self.path = sqlite_path(config.url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local, self._lock = threading.local(), threading.Lock()
        self._connections: dict[sqlite3.Connection, threading.Lock] = {}  # each thread's, and the lock of its use
        try:
            self._setup()
        except BaseException:  # not opened (read-only, full, locked): no connection left behind
            self._close()
            raise
        self._start()

    def _setup(self) -> None:  # bounded like a request: a store locked at start is opened later (keeper.py)
        deadline = time.monotonic() + min(BUSY_TIMEOUT_S, self.config.request_timeout_s)
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
        if db is None:  # the writer waits up to BUSY_TIMEOUT_S for a lock; a request's thread its request timeout
            writer = threading.current_thread() is self._thread
            timeout = BUSY_TIMEOUT_S if writer else min(BUSY_TIMEOUT_S, self.config.request_timeout_s)
            db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db, self._local.using = db, threading.Lock()
            with self._lock:
                self._connections[db] = self._local.using
        return db

    @_in_use
    def _write(self, batch: list[Scored]) -> None:
        rows = [(s.request_id, s.arm, s.model, s.version, s.at, s.rows, s.scores) for s in batch]
        db = self._db()
        with _transaction(db):  # a reused request id keeps its first answer
            db.executemany("INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    @_in_use
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

    @_in_use
    def _fetch_window(self, lower: float):
        db = self._db()
        with _transaction(db, "BEGIN"):  # one snapshot for every read
            # bare columns next to MAX(): SQLite takes them from the row holding the maximum (the latest request)
            arms = db.execute(
                "SELECT arm, SUM(n), model, version, MAX(scored_at) FROM requests WHERE scored_at >= ? GROUP BY arm",
                (lower,),
            ).fetchall()
            labelled = [arm for (arm,) in db.execute(LABELLED_ARMS, (lower,))]
            labels = {arm: _labels(db.execute(ARM_LABELS, (lower, arm))) for arm in labelled}
        return {arm: (n, model, version) for arm, n, model, version, _ in arms}, labels

    @_in_use
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
        """Close every thread's connection, each once no query runs on it: closing a connection while another thread
        runs a query on it crashes the process (a /feedback call that outlived its request, a window refresh)."""
        with self._lock:
            for db, using in self._connections.items():
                if using.acquire(timeout=BUSY_TIMEOUT_S + 1):  # queries end within their busy timeout
                    try:
                        db.close()
                    finally:
                        using.release()
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
