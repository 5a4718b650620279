"""What the service adds to prometheus_client: the workers' shared directory, the aggregate /metrics, a dead worker's
gauges dropped, and two cheap ways to observe (service/metrics.py declares the metrics themselves).

    path = multiprocess_dir()                  # PROMETHEUS_MULTIPROC_DIR: `apg serve --workers N` (None: one process)
    body = aggregate(shared)                   # GET /metrics of every worker, plus the collectors they share
    mark_dead(pid)                             # the supervisor, when it reaps a worker (service/workers.py)
    observe_many(histogram, scores)            # Histogram.observe for every value, vectorised
    with StageTimer(child): ...                # the block's wall time observed, unless it raised
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def aggregate(shared: list[Any]) -> bytes:
    """The text exposition of every worker's samples in multiprocess_dir() (gauges by their multiprocess mode), and of
    `shared`: collectors of state every worker shares, counted once instead of summed."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in shared:
        registry.register(collector)
    return generate_latest(registry)


def mark_dead(pid: int) -> None:
    """Drop the live gauges of worker `pid`, gone (`livesum`, `livemax`: its in-flight requests, its apg_model_info).
    A worker that shuts down does it itself (the app's lifespan); the supervisor does it for one that was killed,
    when it reaps it, so that /metrics never sums in a dead worker's gauges."""
    path = multiprocess_dir()
    if path:
        with contextlib.suppress(FileNotFoundError):  # the worker may have done it itself
            multiprocess.mark_process_dead(pid, path)


class StageTimer:
    """One timing of a stage (Metrics.timed): a small object per use, so that requests interleaved at an `await`
    inside the block each keep their own start. A class rather than a generator-based context manager (cheaper)."""

    __slots__ = ("_child", "_start")

    def __init__(self, child: Any) -> None:
        self._child = child

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self._child.observe(time.perf_counter() - self._start)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every v, vectorised.

    client_python has no bulk observe; a per-row Python loop costs ~1 µs a row, i.e. milliseconds for a
    4096-row request. Histogram keeps one non-cumulative counter per bucket (`_buckets`) plus `_sum`,
    and `observe` increments the first bucket whose upper bound is >= v; we do the same with searchsorted.
    Falls back to the loop should those private attributes ever change.
    """
    if len(values) <= 8:  # a few direct observations are cheaper than the numpy calls below
        for v in np.asarray(values, dtype=np.float64).ravel().tolist():
            histogram.observe(v)
        return
    buckets, total = getattr(histogram, "_buckets", None), getattr(histogram, "_sum", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    values = np.asarray(values, dtype=np.float64).ravel()
    if buckets is None or total is None or bounds is None or len(bounds) != len(buckets):
        for v in values.tolist():
            histogram.observe(v)
        return
    # bucket i holds bounds[i-1] < v <= bounds[i]; the last bound is +Inf (NaN lands there too)
    index = np.minimum(np.searchsorted(np.asarray(bounds), values, side="left"), len(bounds) - 1)
    counts = np.bincount(index, minlength=len(bounds))
    for i in np.flatnonzero(counts).tolist():
        buckets[i].inc(int(counts[i]))
    total.inc(float(values.sum()))
