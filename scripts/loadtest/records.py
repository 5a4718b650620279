"""What both load-test engines share: the run's configuration and its per-request records.

The httpx engine (httpx_engine.py), the raw-socket engine (raw_engine.py) and the gRPC engine (grpc_engine.py) each
fill a ``Records``; the report (latency_report.py) reads it. No engine imports another; the two asyncio ones start
their requests with ``dispatch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LoadConfig:
    url: str
    rate: float  # target requests/s
    duration: float = 10.0  # measured seconds (after the warm-up)
    warmup: float = 0.0  # seconds sent but excluded from the statistics
    arrivals: str = "poisson"  # constant | poisson
    concurrency: int = 64  # requests in flight at most (= HTTP connections)
    path: str = "/score"
    token: str | None = None
    timeout: float = 10.0  # per request, from the actual send
    drain: float = 10.0  # after the last scheduled send, wait this long for stragglers
    rows: int = 1  # rows per request (for rows/s)
    seed: int = 0


@dataclass
class Records:
    """Per-request times in seconds from the run's start (NaN: did not happen); status 0 = no HTTP response."""

    scheduled: np.ndarray
    dispatched: np.ndarray = field(init=False)  # when the generator started the request (scheduler lag)
    sent: np.ndarray = field(init=False)  # when it got a connection slot and went out
    done: np.ndarray = field(init=False)
    status: np.ndarray = field(init=False)
    error: list[str | None] = field(
        init=False
    )  # http_<code> | timeout | connect | connect_refused | connection | unsent | cancelled | error_<exception>

    def __post_init__(self) -> None:
        n = len(self.scheduled)
        self.dispatched, self.sent, self.done = (np.full(n, np.nan) for _ in range(3))
        self.status = np.zeros(n, dtype=np.int64)
        self.error = [None] * n


async def dispatch(rec: Records, send: Callable[[int, float], Awaitable[None]], drain: float) -> None:
    """The open loop of the asyncio engines: `send(i, t0)` starts as a task at rec.scheduled[i] seconds after t0 (at
    once when behind), its start recorded in rec.dispatched; after the last, `drain` seconds for the stragglers, then
    those still running are cancelled (each send records that itself)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.01
    tasks = []
    for i, at in enumerate(rec.scheduled):
        await asyncio.sleep(max(t0 + at - loop.time(), 0))  # 0: behind schedule, but let the sends run
        rec.dispatched[i] = loop.time() - t0
        tasks.append(asyncio.create_task(send(i, t0)))
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
