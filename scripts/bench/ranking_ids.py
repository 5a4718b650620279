"""Ranking by item id (issue 23), a section of `apg bench` (--by-id): one user against N candidates named by id, the
item store giving their item features, next to the same candidates with their features in the body.

    catalogue = build_catalogue(bundle, items=100_000)          # ids and item features, sampled once per item
    publish_stores(catalogue, {"file": "file://DIR", "redis": "redis://..."})
    doc = measure_ranking_ids(ports, bundle, floor, catalogue, sizes, budget, pool, pin)
    catalogue, urls = start(cfg, bundle, env, servers, stack)    # in `apg bench`: the stores and their servers

Paths, at each N of --ranking, on POST /score:
    full       {"context": user, "candidates": [{item features}, ...]}   the service without a store (today's request)
    id-file    {"context": user, "candidates": ["242", ...]}               `apg serve --item-store file://DIR`
    id-redis   the same                                                   `--item-store redis://...`: a redis-server
                                                                          started here on 127.0.0.1, one MGET a request
The catalogue: the ids of the bundle's item-id vocabulary, then made-up ids up to --catalogue-items (the model reads
them as out-of-vocabulary: the same in both bodies), each with item features sampled once (features.RowSampler, known
values only), published as `apg items sync` does (encode_catalogue + publish). A request's candidates are N ids drawn
from the whole catalogue; the full body carries each one's catalogue values. Before timing, the three answers and the
floor (session.run on the N pre-encoded rows) must agree to 1e-6. The paths take turns in 3 rounds (each a third of
--duration); each figure is a path's median round. The lookup's share: the service's own mean
apg_item_store_lookup_seconds over its mean /score request time, over the same requests. The lookup alone (the
issue's first target) is timed in this process on the same stores: 1,000 ids a call (scripts/items/bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import orjson

from features import RowSampler, Schema
from scripts.bench.measure import Budget, measure_path, stats, timed
from scripts.clients.http import Connection, build_request
from scripts.clients.launch import serve_command
from scripts.items.bench import time_lookups
from scripts.items.publish import publish
from scripts.items.sync import encode_catalogue
from scripts.loadtest.plan import context_features
from service.items import open_store

PATHS = ("full", "id-file", "id-redis")
STORE_OF = {"id-file": "file", "id-redis": "redis"}
TOLERANCE = 1e-6
LOOKUP_IDS = 1_000  # ids per in-process lookup (the issue's figure)
ROUNDS = 3  # the paths of one N take turns this many times; each figure is its median round


@dataclass(frozen=True)
class Catalogue:
    schema: Schema
    context: list[str]  # the user's raw features
    items: list[str]  # the item features the store holds (the id's included)
    id_column: str
    table: dict[str, list]  # raw columns, one row per item

    @property
    def ids(self) -> list[str]:
        return self.table[self.id_column]


def build_catalogue(bundle, items: int, id_column: str = "item_id", seed: int = 3) -> Catalogue:
    """The bundle's item-id vocabulary, then made-up ids up to `items`, with item features sampled once per item."""
    schema = Schema.from_dict(bundle.manifest["schema"])
    context, item_side = context_features(bundle.manifest["schema"])
    if id_column not in item_side:
        raise ValueError(f"--by-id: {id_column!r} is not an item feature of the bundle ({', '.join(item_side)})")
    vocab = list(schema.field(id_column).vocab or ()) if id_column in {f.name for f in schema.fields} else []
    ids = vocab[:items] + [f"bench-item-{i}" for i in range(max(0, items - len(vocab)))]
    sampler = RowSampler(schema, seed=seed, unseen=0.0)
    rows = [sampler.row() for _ in ids]
    table = {s: [r[s] for r in rows] for s in item_side}
    table[id_column] = ids
    return Catalogue(schema, context, item_side, id_column, table)


def publish_stores(catalogue: Catalogue, urls: dict[str, str]) -> None:
    """The catalogue encoded (the bundle's encoder, as `apg items sync` does) and published into each store."""
    encoded = encode_catalogue(catalogue.schema, catalogue.table, catalogue.id_column, catalogue.items)
    for url in urls.values():
        publish(url, encoded)


def lookup_latency(catalogue: Catalogue, urls: dict[str, str], repeats: int, seed: int = 5) -> dict:
    """p50/p99 ms of one ItemStore.lookup of LOOKUP_IDS random catalogue ids, in this process, per store."""
    rng, ids = np.random.default_rng(seed), catalogue.ids
    batches = [json.dumps([ids[i] for i in rng.integers(0, len(ids), LOOKUP_IDS)]) for _ in range(64)]
    out = {}
    for kind, url in urls.items():
        store = open_store(url, catalogue.schema.digest(), timeout_s=1.0)
        try:
            out[kind] = time_lookups(store, batches, repeats)
            out[kind]["event_loop"] = {way: asyncio.run(loop_blocking(store, batches, way)) for way in WAYS}
        finally:
            store.close()
    return out


WAYS = ("inline", "thread")  # a lookup on the event loop, or awaited from a thread of a pool (service/items/serving.py)


async def loop_blocking(store, batches: list[str], way: str, calls: int = 300) -> dict:
    """What a lookup costs the event loop it is awaited on: a task yielding back to the loop after every step notes
    the gaps between its steps (its p99: how long the loop could run nothing else) while lookups are awaited one
    after the other, inline or from a thread; with their p50 latency."""
    loop, gaps, latency, done = asyncio.get_running_loop(), [], [], False
    pool = ThreadPoolExecutor(1)

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    for i in range(calls):
        ids = json.loads(batches[i % len(batches)])
        t0 = time.perf_counter()
        if way == "inline":
            store.lookup(ids)
        else:
            await loop.run_in_executor(pool, store.lookup, ids)
        latency.append(time.perf_counter() - t0)
        await asyncio.sleep(0)
    done = True
    await task
    pool.shutdown()
    ms = 1e3 * np.asarray(gaps)
    return {
        "lookup_p50_ms": round(1e3 * float(np.median(latency[calls // 5 :])), 4),
        "loop_gap_p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


def requests(catalogue: Catalogue, n: int, pool: int, seed: int) -> dict:
    """{"rows": [N full rows per request], "bodies": {"full": [...], "ids": [...]}}: `pool` users, N candidates each."""
    rng, sampler = np.random.default_rng(seed), RowSampler(catalogue.schema, seed=seed, unseen=0.0)
    table, ids = catalogue.table, catalogue.ids
    out: dict = {"rows": [], "bodies": {"full": [], "ids": []}}
    for _ in range(pool):
        user = {k: v for k, v in sampler.row().items() if k in catalogue.context}
        picks = rng.integers(0, len(ids), n).tolist()
        items = [{s: table[s][j] for s in catalogue.items} for j in picks]
        out["rows"].append([{**user, **item} for item in items])
        full = orjson.dumps({"context": user, "candidates": items})
        by_id = orjson.dumps({"context": user, "candidates": [ids[j] for j in picks]})
        out["bodies"]["full"].append(build_request("/score", full))
        out["bodies"]["ids"].append(build_request("/score", by_id))
    return out


def same_scores(ports: dict[str, int], bodies: dict[str, bytes], floor_scores: np.ndarray) -> float:
    """The largest difference of each path's answer from the floor's; RuntimeError beyond TOLERANCE."""
    want, diff = np.asarray(floor_scores, dtype=np.float64).reshape(-1), 0.0
    for path, port in ports.items():
        with Connection(port) as conn:
            status, _, body = conn.request(bodies["full" if path == "full" else "ids"])
        if status != 200:
            raise RuntimeError(f"ranking by id, {path}: HTTP {status}: {body[:300]!r}")
        diff = max(diff, float(np.max(np.abs(np.asarray(orjson.loads(body)["scores"]) - want))))
    if diff > TOLERANCE:
        raise RuntimeError(f"ranking by id: the answers differ from the floor's by {diff:.3g} (> {TOLERANCE:g})")
    return diff


def measure_ranking_ids(
    ports: dict[str, int], bundle, floor: Callable, catalogue: Catalogue, sizes, budget: Budget, pool, pin
) -> dict:
    """{"context", "items", "catalogue_items", "by_n": {N: {"floor": stats, path: cell}}}; ports {path: port} (the
    paths measured: "full" and those of the stores published); pool(N) users per N; pin(cpu) as harness._pin."""
    out: dict = {"context": catalogue.context, "items": catalogue.items, "catalogue_items": len(catalogue.ids)}
    out["by_n"] = {}
    for n in sizes:
        reqs = requests(catalogue, n, pool(n), seed=n)
        feeds = [bundle.encoder.encode_rows(rows) for rows in reqs["rows"]]
        pin(0)
        cell: dict = {"floor": stats(*timed(floor, feeds, budget), n)}
        pin(1)
        cell["max_abs_diff"] = same_scores(ports, {k: b[0] for k, b in reqs["bodies"].items()}, floor(feeds[0])[0])
        rounds: dict[str, list] = {path: [] for path in ports}
        share = replace(budget, duration=budget.duration / ROUNDS, iterations=max(5, budget.iterations // ROUNDS))
        for _ in range(ROUNDS):  # the paths take turns: a change of the machine's load hits them all
            for path, port in ports.items():
                bodies = reqs["bodies"]["full" if path == "full" else "ids"]
                rounds[path].append(measure_path(port, bodies, n, share, "/score"))
        for path, measured in rounds.items():  # the median round by rows/s, with its stages
            cell[path], cell[f"{path}-stages"] = sorted(measured, key=lambda m: m[0]["rows_per_s"])[len(measured) // 2]
        out["by_n"][str(n)] = add_ratios(cell)
    return out


def add_ratios(cell: dict) -> dict:
    full = cell.get("full")
    for path in (p for p in PATHS if p in cell):
        c, st = cell[path], cell[f"{path}-stages"]
        c["ratio_to_floor"] = round(c["rows_per_s"] / cell["floor"]["rows_per_s"], 4)
        if full is not None:
            c["ratio_to_full"] = round(c["rows_per_s"] / full["rows_per_s"], 4)
            c["bytes_vs_full"] = round(c["request_bytes"] / full["request_bytes"], 4)
        if "lookup" in st and st.get("request"):
            c["lookup_ms"], c["lookup_share"] = st["lookup"], round(st["lookup"] / st["request"], 4)
    return cell


# ---------------------------------------------------------------- within `apg bench` (scripts/bench/harness.py)


def start(cfg, bundle, env: dict, servers, stack: contextlib.ExitStack) -> tuple[Catalogue, dict[str, str]]:
    """The catalogue published into each store of --by-id (a redis-server started for "redis", stopped with `stack`),
    and `apg serve` started on each with APG_ITEM_STORE (--only-by-id: also the plain "service", for the full-feature
    requests)."""
    catalogue = build_catalogue(bundle, cfg.catalogue_items)
    urls = {}
    if "file" in cfg.by_id:
        urls["file"] = f"file://{(cfg.out / 'item-store').resolve()}"
    if "redis" in cfg.by_id and shutil.which("redis-server") is None:
        print("ranking by id: no redis-server (bash scripts/install_debian.sh redis-server redis-server): file only")
    elif "redis" in cfg.by_id:
        from scripts.bench.feedback import redis_server  # Debian's redis-server on a free port

        (cfg.out / "redis").mkdir(parents=True, exist_ok=True)
        urls["redis"] = stack.enter_context(redis_server(cfg.out / "redis"))
    publish_stores(catalogue, urls)
    command = partial(serve_command, cfg.bundle)
    if cfg.only_by_id:
        servers.start("service", command, env)
    for kind, url in urls.items():
        servers.start(f"items-{kind}", command, {**env, "APG_ITEM_STORE": url})
    print(f"item stores: {', '.join(urls.values())} ({len(catalogue.ids):,} items)")
    return catalogue, urls


def measure(cfg, bundle, floor, servers, catalogue: Catalogue, urls: dict, pool, pin) -> dict:
    """The section's measurements: the lookup alone, then each path at each --ranking size."""
    ports = {"full": servers.servers["service"].port}
    ports |= {f"id-{kind}": servers.servers[f"items-{kind}"].port for kind in urls}
    pin(1)
    repeats = min(2_000, max(200, cfg.budget.iterations))  # (2,000 in a full run)
    out = {"lookup": lookup_latency(catalogue, urls, repeats), "note": cfg.note}
    out["hiredis"] = importlib.util.find_spec("hiredis") is not None
    out["ranking_ids"] = measure_ranking_ids(ports, bundle, floor, catalogue, cfg.ranking, cfg.budget, pool, pin)
    return out
