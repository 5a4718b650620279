"""Micro-benchmark of the item store's lookup: one lookup of `ids` ids among `items` items, file snapshot and Redis.

    from scripts.items.bench import measure
    measure(items=100_000, ids=1_000)    # {"file": {"p50_ms": ..., "p99_ms": ...}, "redis": {...}, ...}
    python -m scripts.items.bench        # the same, printed as JSON

A synthetic MovieLens-shaped catalogue (item_id with a fitted vocabulary, a hashed title, a bucketed release year,
genres of up to 6 values) is encoded and published as `apg items sync` does, into a temporary folder and into a
local Redis (`redis_url`, or Debian's redis-server started on a free port, scripts/bench/feedback.py). Each timed
call is one `ItemStore.lookup` of a random draw of `ids` ids (1 % unknown; 64 draws cycled, each parsed from JSON
just before its call, as a request body gives them), in this process, one at a time: the lookup's share of a
request, without the HTTP around it. Targets (issue 23): p50 <= 0.3 ms from the file, <= 2 ms from a local Redis.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from features import Schema
from scripts.items.publish import publish
from scripts.items.sync import encode_catalogue
from service.items import open_store

GENRES = ["Action", "Adventure", "Animation", "Comedy", "Crime", "Drama", "Horror", "Romance", "Sci-Fi", "War"]
ITEM_SOURCES = ["item_id", "title", "release_year", "genres"]


def synthetic_catalogue(items: int, seed: int = 0) -> tuple[Schema, dict[str, list]]:
    """A fitted schema (a user and the item features) and a catalogue of `items` rows."""
    rng = np.random.default_rng(seed)
    ids = [f"m{i}" for i in range(items)]
    schema = Schema.from_dict(
        {
            "name": "items-bench",
            "fields": [
                {"name": "user_id", "kind": "categorical", "vocab": [str(u) for u in range(1_000)]},
                {"name": "item_id", "kind": "categorical", "vocab": ids},
                {"name": "title", "kind": "categorical", "hash_buckets": 50_000},
                {"name": "release_year", "kind": "numeric", "edges": [1950, 1970, 1980, 1990, 1995, 2000, 2010]},
                {"name": "genres", "kind": "multi", "sep": "|", "max_len": 6, "vocab": GENRES},
            ],
        }
    )
    picks = rng.integers(0, len(GENRES), size=(items, 3))
    table = {
        "item_id": ids,
        "title": [f"title {i}" for i in range(items)],
        "release_year": [str(y) for y in rng.integers(1930, 2024, size=items)],
        "genres": ["|".join(GENRES[g] for g in row) for row in picks.tolist()],
    }
    return schema, table


def time_lookups(store, batches: list[str], repeats: int, warmup: int = 50) -> dict:
    """p50/p99/mean of `repeats` lookups, in ms. `batches` are JSON arrays of ids, cycled; each call's ids are parsed
    just before it (untimed): new string objects, as a request body gives the service."""
    for i in range(warmup):
        store.lookup(json.loads(batches[i % len(batches)]))
    times = np.empty(repeats)
    for i in range(repeats):
        batch = json.loads(batches[i % len(batches)])
        start = time.perf_counter()
        store.lookup(batch)
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def measure(
    items: int = 100_000, ids: int = 1_000, repeats: int = 2_000, redis_url: str | None = None, seed: int = 0
) -> dict:
    """Lookup latency of both backends; Redis is skipped (None) when no URL is given and redis-server is absent."""
    schema, table = synthetic_catalogue(items, seed)
    encoded = encode_catalogue(schema, table, sources=ITEM_SOURCES)
    rng = np.random.default_rng(seed + 1)
    known = encoded.ids.tolist()
    batches = []
    for _ in range(64):  # distinct draws, cycled
        batch = [known[i] for i in rng.integers(0, items, size=ids)]
        for j in rng.choice(ids, size=max(1, ids // 100), replace=False):
            batch[j] = f"unknown-{j}"
        batches.append(json.dumps(batch))
    result = {"items": items, "ids": ids, "repeats": repeats, "value_bytes": None, "file": None, "redis": None}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = f"file://{tmp}/store"
        publish(url, encoded)
        store = open_store(url, encoded.contract)
        start = time.perf_counter()
        open_store(url, encoded.contract)  # what a worker pays at start (the id index)
        result["file_open_ms"] = (time.perf_counter() - start) * 1e3
        result["file"] = time_lookups(store, batches, repeats)
        if redis_url is None:
            redis_url = _local_redis(stack, Path(tmp))
        if redis_url is not None:
            publish(redis_url, encoded)
            store = open_store(redis_url, encoded.contract, timeout_s=1.0)  # a stall is timed, not a failure
            stack.callback(store.close)
            result["value_bytes"] = store.describe()["value_bytes"]
            result["redis"] = time_lookups(store, batches, repeats)
    return result


def _local_redis(stack: contextlib.ExitStack, tmp: Path) -> str | None:
    from scripts.bench.feedback import redis_server

    try:
        return stack.enter_context(redis_server(tmp))
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
