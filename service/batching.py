"""Optional micro-batching (APG_BATCHING=true): coalesce concurrent requests into one onnxruntime call.

    batcher = MicroBatcher(runtime, max_rows=256, max_delay_s=0.002)
    batcher.start()                                  # inside the serving loop
    out = await batcher.submit(model, feeds, rows)   # Inference with exactly this request's scores

A batch opens with the oldest waiting request and closes when it holds `max_rows` rows or that request
has waited `max_delay_s`. Requests are never split: one that would overflow the batch opens the next one,
one with >= max_rows rows bypasses batching. A batch holds one Model only (a hot reload may leave requests
for the old and the new model in the queue). Closed batches run through Runtime.infer: up to max_concurrency
batches at once. The batcher refuses nothing: how many requests can wait in it is service/admission.py's rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from service.errors import NotReady
from service.runtime import Inference, Model, Runtime

log = logging.getLogger("apg.batching")


@dataclass(eq=False)
class _Request:
    model: Model
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    enqueued: float  # loop.time()


class MicroBatcher:
    def __init__(self, runtime: Runtime, max_rows: int, max_delay_s: float) -> None:
        self.runtime = runtime
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._arrived: asyncio.Event | None = None  # something is pending
        self._full: asyncio.Event | None = None  # pending rows >= max_rows

    def start(self) -> None:
        self._arrived, self._full = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._collect(), name="apg-batcher")

    async def stop(self) -> None:
        """Stop collecting, let running batches finish, fail whatever still waits with 503."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._pending:
            request = self._pending.popleft()
            if not request.future.done():
                request.future.set_exception(NotReady("shutting down"))
        self._pending_rows = 0

    async def submit(self, model: Model, feeds: dict[str, np.ndarray], rows: int) -> Inference:
        if rows >= self.max_rows or self._task is None:
            return await self.runtime.infer(model, feeds, rows)
        loop = asyncio.get_running_loop()
        request = _Request(model, feeds, rows, loop.create_future(), loop.time())
        self._pending.append(request)
        self._pending_rows += rows
        self._arrived.set()
        if self._pending_rows >= self.max_rows:
            self._full.set()
        return await request.future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            wait = self._pending[0].enqueued + self.max_delay_s - loop.time()
            if self._pending_rows < self.max_rows and wait > 0:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._full.wait()
            batch = self._take()
            task = asyncio.create_task(self._run(batch, loop.time()))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Request]:
        # FIFO, up to max_rows rows of the first request's model (the first request is always taken).
        first = self._pending.popleft()
        batch, rows = [first], first.rows
        while self._pending:
            nxt = self._pending[0]
            if nxt.model is not first.model or rows + nxt.rows > self.max_rows:
                break
            batch.append(self._pending.popleft())
            rows += nxt.rows
        self._pending_rows -= rows
        if not self._pending:
            self._arrived.clear()
        if self._pending_rows < self.max_rows:
            self._full.clear()
        return batch

    async def _run(self, batch: list[_Request], dispatched: float) -> None:
        rows = sum(r.rows for r in batch)
        feeds = batch[0].feeds
        if len(batch) > 1:  # (B_1 + … + B_n, …) per input, in arrival order
            feeds = {name: np.concatenate([r.feeds[name] for r in batch]) for name in feeds}
        try:
            result = await self.runtime.infer(batch[0].model, feeds, rows)
        except Exception as exc:  # a failed onnxruntime call: every caller gets it
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        offset = 0
        for request in batch:
            scores = result.scores[offset : offset + request.rows]
            offset += request.rows
            if not request.future.done():  # a caller that went away was cancelled
                waited = dispatched - request.enqueued + result.queue_s
                request.future.set_result(Inference(scores, waited, result.inference_s))
