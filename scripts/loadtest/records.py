"""What both load-test engines share: the run's configuration and its per-request records.

The httpx engine (httpx_engine.py) and the raw-socket engine (raw_engine.py) each fill a ``Records``; the report
(latency_report.py) reads it. Neither engine imports the other.
"""

from __future__ import annotations

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
