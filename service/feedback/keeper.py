"""The click store of one worker, kept: opened at start, opened again in the background while it cannot be, and
called from requests on threads of its own, each call bounded in time.

    keeper = StoreKeeper(config, metrics, settings)   # create_app, when a store is configured
    await keeper.start(on_open)       # the lifespan: one attempt; if it fails, scoring serves anyway and the keeper
                                      # tries again every APG_FEEDBACK_RETRY_S until it opens (on_open(store) then)
    outcomes = await keeper.feedback(items)   # POST /feedback; FeedbackUnavailable (503) on any storage error
    await keeper.stop()               # write what is buffered, close

Issue 25: with an experiment on, a read-only data directory, a read-only feedback.db, a full disk or Redis down made
the service exit at start, serving no model; and /feedback answered 500 when the store was full, locked or down. Now:
- a store that cannot be opened is logged (one line per new reason) and shown in
  apg_feedback_store_unavailable{reason="not_writable"|"disk_full"|"unreachable"|"timeout"|"error"} = 1; readiness
  stays about scoring; /score serves (its rows are counted in apg_feedback_dropped_rows_total while nothing records
  them); /feedback answers 503 `feedback_unavailable` with Retry-After;
- a /feedback call runs on one of APG_FEEDBACK_MAX_CONCURRENCY threads of its own (never the event loop's default
  pool) and is answered 503 `feedback_unavailable` after APG_FEEDBACK_TIMEOUT_S (the store's own waits are bounded by
  the same time: SQLite's busy timeout, Redis's socket timeout, the wait for this worker's write buffer), or at once
  on a storage error; the gauge then names the reason until a call succeeds. A bad store URL (ValueError) is still a
  configuration error that stops the start.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.errors import FeedbackUnavailable
from service.feedback.base import FeedbackConfig, FeedbackStore, Outcome

log = logging.getLogger("apg.feedback")

REASONS = ("not_writable", "disk_full", "unreachable", "timeout", "error")
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def reason_of(exc: BaseException) -> str:
    """Why the store failed, as one of REASONS (a bounded label), from the exception of sqlite3, redis-py or the OS."""
    text, code = str(exc).lower(), getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError) or any(s in text for s in ("timeout", "timed out", "locked", "busy")):
        return "timeout"  # (a lock held by another process past the wait: SQLite's "database is locked")
    if code in _FULL or "disk is full" in text or "no space" in text or "file too large" in text:
        return "disk_full"
    if code in _NOT_WRITABLE or any(s in text for s in ("readonly", "read-only", "unable to open", "permission")):
        return "not_writable"
    if isinstance(exc, ConnectionError) or any(s in text for s in ("connect", "redis", "refused", "unreachable")):
        return "unreachable"
    return "error"


class StoreKeeper:
    """One worker's click store: `store` (None while it cannot be opened) and the calls requests make on it."""

    def __init__(self, config: FeedbackConfig, metrics: Any, settings: Any) -> None:
        self.config, self.metrics = config, metrics  # metrics: a prometheus.FeedbackMetrics
        self.timeout_s, self.retry_s = settings.feedback_timeout_s, settings.feedback_retry_s
        self.threads = settings.feedback_max_concurrency
        self.store: FeedbackStore | None = None
        self.reason: str | None = None  # why the store is unavailable now (None: it serves)
        self._pool: ThreadPoolExecutor | None = None
        self._retry: asyncio.Task | None = None

    async def start(self, on_open: Callable[[FeedbackStore], None]) -> None:
        """One attempt now (a bad URL raises: configuration); on failure, keep trying in the background."""
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="apg-feedback")
        if not await self._open(on_open):
            self._retry = asyncio.create_task(self._reopen(on_open))

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._pool is not None:  # calls that outlived their request end first (bounded by their own timeouts)
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        if self.store is not None:  # after the last answer: its rows are written before the store closes
            await asyncio.to_thread(self.store.close)

    async def feedback(self, items: Any) -> list[Outcome]:
        """store.feedback(items) on the keeper's threads within APG_FEEDBACK_TIMEOUT_S; FeedbackUnavailable otherwise.
        (A call still queued for a thread when the time is up is cancelled; one running ends within its own bound.)"""
        store = self.store
        if store is None:
            raise self.unavailable()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                outcomes = await loop.run_in_executor(self._pool, store.feedback, items)
        except Exception as exc:  # every storage error (the store never raises on bad items): a 503, never a 500
            reason = reason_of(exc)
            self._set_reason(reason, exc, quiet=reason == self.reason)
            raise self.unavailable() from None
        if self.reason is not None:
            self._set_reason(None)
        return outcomes

    def unavailable(self) -> FeedbackUnavailable:
        if self.store is None:
            why = f"the click store could not be opened ({self.reason}); it is tried again every {self.retry_s:g} s"
            return FeedbackUnavailable(why, retry_after=max(1, round(self.retry_s)))
        if self.reason == "timeout":
            why = f"the click store did not answer in time (timeout: APG_FEEDBACK_TIMEOUT_S = {self.timeout_s:g} s)"
        else:
            why = f"the click store failed ({self.reason})"
        return FeedbackUnavailable(why)

    # ---------------------------------------------------------------- internals
    async def _open(self, on_open: Callable[[FeedbackStore], None]) -> bool:
        from service.feedback import open_store

        try:
            store = await asyncio.to_thread(open_store, self.config, self.metrics)
        except ValueError:  # a bad URL or path: configuration, not the storage
            raise
        except Exception as exc:
            reason = reason_of(exc)
            self._set_reason(reason, exc, quiet=reason == self.reason, opening=True)
            return False
        self.store = store
        on_open(store)
        if self.reason is not None:
            log.info("feedback store %s opened: /feedback serves again", _where(self.config.url))
        self._set_reason(None)
        return True

    async def _reopen(self, on_open: Callable[[FeedbackStore], None]) -> None:
        while not await self._open(on_open):
            await asyncio.sleep(self.retry_s)

    def _set_reason(self, reason: str | None, exc: BaseException | None = None, quiet: bool = False, **kw) -> None:
        """The gauge of why the store is unavailable (1 for `reason`, 0 for the others); a log line when it changes."""
        if reason != self.reason:
            for name in REASONS:
                self.metrics.unavailable.labels(name).set(1 if name == reason else 0)
        self.reason = reason
        if reason is None or quiet:
            return
        exc = str(exc) or type(exc).__name__  # (a TimeoutError says nothing itself)
        if kw.get("opening"):
            log.error(
                "feedback store %s cannot be opened (%s: %s): scoring serves, /feedback answers 503 until it opens;"
                " trying again every %g s",
                _where(self.config.url),
                reason,
                exc,
                self.retry_s,
            )
        else:
            log.error("feedback store %s failed a /feedback call (%s: %s)", _where(self.config.url), reason, exc)


def _where(url: str) -> str:
    """The store's URL without credentials (redis://user:password@host → redis://host)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
