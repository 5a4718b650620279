"""Shadow scoring: other models score the requests the service answers, off the hot path.

    shadow = Shadow(runtime, metrics, ["deepfm-apg-group"], max_queue=256)
    shadow.start()                                   # in the lifespan
    shadow.submit(model, encode, feeds, scores)      # after an answer's scores exist: never waits, never raises
    await shadow.stop()

`submit` puts the request on a bounded queue (APG_SHADOW_QUEUE requests: their encoded tensors, and the parsed body
only when a shadow reads another feature contract) and returns; when the queue is full the request is dropped and
counted (apg_shadow_requests_total{result="dropped"}), so a shadow under load never delays or fails the answer. One
background task takes requests off the queue and, per shadow model, reuses the primary's encoded tensors when both
models read the same feature contract (the schema's digest) or encodes the raw request again with the shadow's own
encoder otherwise, then runs the shadow's session on its own thread (never one of the APG_MAX_CONCURRENCY slots that
the answers use). It records per shadow: abs(shadow - served) per row, and the shadow's time per request. A shadow
equal to the model that answered is skipped; a shadow that is not served (a repository without it) is refused at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service.errors import ConfigError
from service.metrics import Metrics
from service.prometheus import observe_many

log = logging.getLogger("apg.shadow")


class Shadow:
    def __init__(self, runtime: Any, metrics: Metrics, names: list[str], max_queue: int) -> None:
        self.runtime, self.metrics, self.names = runtime, metrics, list(names)
        self.max_queue = max_queue
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        for name in self.names:  # exported at 0 from the start
            for result in ("scored", "dropped", "error"):
                metrics.shadow_requests.labels(name, result)

    def start(self) -> None:
        """After the runtime started: every shadow must be a served model."""
        missing = [n for n in self.names if n not in self.runtime.models]
        if missing:
            served = sorted(self.runtime.models)
            raise ConfigError(f"APG_SHADOW names models that are not served: {missing}; served: {served}")
        self._queue = asyncio.Queue(self.max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apg-shadow")
        self._task = asyncio.create_task(self._run())

    def submit(self, model: Any, encode: Callable, feeds: dict[str, np.ndarray], scores: np.ndarray) -> None:
        if self._queue is None:
            return
        try:
            shadows = [s for n in self.names if (s := self.runtime.models.get(n)) is not None]
            if all(s.contract == model.contract for s in shadows):
                encode = None  # the tensors serve every shadow: keep no reference to the parsed request while queued
        except Exception:  # a broken shadow is found out (and counted) off the answer's path
            pass
        try:
            self._queue.put_nowait((model, encode, feeds, scores))
        except asyncio.QueueFull:
            for name in self.names:
                if name != model.name:
                    self.metrics.shadow_requests.labels(name, "dropped").inc()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            model, encode, feeds, scores = await self._queue.get()
            for name in self.names:
                shadow = self.runtime.models.get(name)
                if shadow is None or name == model.name:
                    continue
                try:
                    t0 = time.perf_counter()
                    theirs = await loop.run_in_executor(self._pool, _score, shadow, model, encode, feeds)
                    self.metrics.shadow_duration.labels(name).observe(time.perf_counter() - t0)
                    observe_many(self.metrics.shadow_diff.labels(name), np.abs(theirs - scores))
                    self.metrics.shadow_requests.labels(name, "scored").inc()
                except Exception as exc:  # a shadow's failure is its own: counted, logged, never the answer's
                    self.metrics.shadow_requests.labels(name, "error").inc()
                    log.warning("shadow %s failed: %s", name, exc)


def _score(shadow: Any, served: Any, encode: Callable, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """In the shadow thread: the served model's tensors when the contracts agree, else the raw request re-encoded."""
    if shadow.contract != served.contract:
        feeds = encode(shadow.encoder)
    return shadow.run(feeds)
