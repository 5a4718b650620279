"""One worker's item stores (APG_ITEM_STORE): each served model reads the store of its own contract checksum.

    items = ItemStores(settings, metrics, runtime)        # create_app, when APG_ITEM_STORE is set
    await items.start()                                   # the lifespan, after the runtime: every served model's
    feeds = await items.ranking(model, context, candidates)   # /score's ranking shape (join.py's rule)
    feeds = await items.columns(model, columns)           # KServe v2, HTTP and gRPC
    await items.ready(model)                              # readiness: ItemStoreMismatch names the sync to run
    await items.stop()

A store is opened per (URL, contract) in the lifespan, so after uvicorn forked the workers (a file snapshot is mapped
by each, read-only: the same pages), or at the first request of a model that a hot reload brought (a model of a new
contract never reads the old contract's rows: its requests, and readiness, get ItemStoreMismatch naming the
`apg items sync` to run until that sync is published). In the background, every APG_ITEM_STORE_REFRESH_S, each store
follows its published version (refresh(), on a thread); a store that could not be opened is tried again every second;
a store no served model reads any more is closed.

Where a lookup runs: a file snapshot's on the event loop (0.1-0.3 ms of dict and numpy work for 1,000 ids: a thread
would add its hand-off and hold the GIL all the same); Redis's on a thread of its own pool, where the loop goes on
parsing other requests while the MGET's answer is on its way (APG_ITEM_STORE_TIMEOUT_S bounds each call). Failures are
503 `item_store_unavailable` (Retry-After) for the requests that need the store; the others score.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from features import ContractError, Encoder
from service.errors import shown
from service.items.backends import open_store
from service.items.join import ItemSide, Plan, columns_plan, ranking_plan, relaxed, relaxed_fields
from service.items.store import ItemStore, ItemStoreMismatch, ItemStoreUnavailable, UnknownItems

log = logging.getLogger("apg.items")

DEFAULT_ID_COLUMN = "item_id"  # while a store cannot be opened (`apg items sync --id-column`'s default)
RETRY_S = 1.0  # a store that could not be opened is tried again this often
SHOWN_IDS = 5  # ids an unknown_items error names


@dataclass
class Binding:
    """A contract's store in this worker: open, or None with the error that requests needing it get."""

    url: str
    contract: str
    store: ItemStore | None
    error: ContractError | None
    item: ItemSide  # the store's id column and item features (while it is not open: every feature of the schema)

    def failure(self) -> ContractError:
        """Why it cannot be read, as a fresh exception (one raised again and again would grow its traceback)."""
        return type(self.error)(self.error.message)

    def describe(self) -> dict:
        if self.store is None:
            return {"url": self.url, "error": self.error.code, "message": self.error.message}
        d = self.store.describe()
        return {k: d[k] for k in ("backend", "url", "version", "items", "checksum", "id_column")}


class ItemStores:
    def __init__(self, settings: Any, metrics: Any, runtime: Any) -> None:
        self.settings, self.metrics, self.runtime = settings, metrics, runtime
        self._bindings: dict[tuple[str, str], Binding] = {}  # (url, contract) → its binding
        self._opening: dict[tuple[str, str], asyncio.Task] = {}
        self._urls: dict[str, str | None] = {}  # model name → its store's URL (APG_ITEM_STORE)
        self._relaxed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → its encoder by id
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._unused: set[tuple[str, str]] = set()
        self._metric_children: dict[str, tuple[Any, Any]] = {}

    # ---------------------------------------------------------------- lifespan

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix="apg-items")
        for model in list(self.runtime.models.values()):
            await self.binding(model)
        self._task = asyncio.create_task(self._keep(), name="apg-item-stores")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for b in self._bindings.values():
            if b.store is not None:
                await asyncio.to_thread(b.store.close)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def ready(self, model: Any) -> dict | None:
        """The model's store, described for readiness; ItemStoreMismatch (503, naming the sync) when it holds no rows
        for the model's contract. A store that is down leaves readiness alone: the requests that carry their
        features still score."""
        b = await self.binding(model)
        if b is None:
            return None
        if isinstance(b.error, ItemStoreMismatch):
            raise b.failure()
        return b.describe()

    # ---------------------------------------------------------------- requests

    async def ranking(self, model: Any, context: Any, candidates: Any) -> dict[str, np.ndarray]:
        """/score's {"context", "candidates"}: the candidates by id (or objects, whose features override)."""
        b = await self.binding(model)
        if b is None:
            return model.encoder.encode_ranking(context, candidates)
        if b.store is None and isinstance(candidates, list) and set(map(type, candidates)) - {dict}:
            raise self._failed(model, b)  # ids alone, and nowhere to look them up
        return await self._join(model, b, ranking_plan(b.item, context, candidates))

    async def columns(self, model: Any, columns: Any) -> dict[str, np.ndarray]:
        """KServe v2's columns: the id tensor without (some of) the item feature tensors is looked up."""
        b = await self.binding(model)
        if b is None:
            return model.encoder.encode_columns(columns)
        return await self._join(model, b, columns_plan(b.item, columns))

    def shadow_encode(self, shape: str, *request: Any):
        """encode(encoder) for a shadow model of another contract (service/shadow.py): the same rule in the shadow's
        thread, its lookup blocking there, its misses not counted."""

        def encode(encoder: Encoder) -> dict[str, np.ndarray]:
            model = next((m for m in self.runtime.models.values() if m.encoder is encoder), None)
            b = self._bindings.get((self._url(model.name), model.contract)) if model is not None else None
            if b is None:
                return encoder.encode_ranking(*request) if shape == "ranking" else encoder.encode_columns(*request)
            plan = ranking_plan(b.item, *request) if shape == "ranking" else columns_plan(b.item, *request)
            feeds = plan.encode(self._encoder(model, b))
            if plan.ids is not None:
                if b.store is None:
                    raise b.failure()
                columns, found = b.store.lookup(plan.ids)
                plan.merge(feeds, b.store.fields, columns)
            return feeds

        return encode

    async def _join(self, model: Any, b: Binding, plan: Plan) -> dict[str, np.ndarray]:
        encoder = self._encoder(model, b) if plan.ids is not None else model.encoder
        try:
            feeds = plan.encode(encoder)  # 400s first
        finally:  # (the scorer takes the model's own encoder's)
            if encoder is not model.encoder:
                self.metrics.count_clipped(encoder.take_clipped())
        if plan.ids is None:
            return feeds
        store = b.store
        if store is None:
            raise self._failed(model, b)
        lookup, misses = self._children(model.name)
        t0 = time.perf_counter()
        try:
            if store.backend == "file":
                columns, found = store.lookup(plan.ids)
            else:
                columns, found = await asyncio.get_running_loop().run_in_executor(self._pool, store.lookup, plan.ids)
        except ItemStoreUnavailable as exc:
            self.metrics.item_errors.labels(model.name, exc.code).inc()
            raise
        lookup.observe(time.perf_counter() - t0)
        if not found.all():
            self._missed(plan, found, misses)
        plan.merge(feeds, store.fields, columns)
        if encoder is not model.encoder:  # required item features the request gave itself are still required
            plan.check_required(feeds, relaxed_fields(model.encoder, b.item))
        return feeds

    def _missed(self, plan: Plan, found: np.ndarray, misses: Any) -> None:
        """Count the misses; with APG_ITEM_MISS=error refuse the request, naming them."""
        missed = np.flatnonzero(~found)
        misses.inc(len(missed))
        if self.settings.item_miss != "error":
            return
        names = ", ".join(shown(plan.ids[i]) for i in missed[:SHOWN_IDS].tolist())
        more = f" and {len(missed) - SHOWN_IDS} more" if len(missed) > SHOWN_IDS else ""
        row = int(missed[0] if plan.where is None else plan.where[missed[0]])
        raise UnknownItems(
            f"{len(missed)} candidate id(s) the item store does not hold: {names}{more} (APG_ITEM_MISS=error)",
            field=plan.id_column,
            row=row,
        )

    def _failed(self, model: Any, b: Binding) -> ContractError:
        self.metrics.item_errors.labels(model.name, b.error.code).inc()
        return b.failure()

    # ---------------------------------------------------------------- the stores

    async def binding(self, model: Any) -> Binding | None:
        """The model's store (opened once per URL and contract, on a thread); None when the model has none."""
        url = self._url(model.name)
        if url is None:
            return None
        key = (url, model.contract)
        b = self._bindings.get(key)
        if b is not None:
            return b
        task = self._opening.get(key)
        if task is None:
            task = self._opening[key] = asyncio.create_task(self._open(key, model))
            task.add_done_callback(lambda t: self._opening.pop(key, None))
        return await asyncio.shield(task)

    async def _open(self, key: tuple[str, str], model: Any, before: Binding | None = None) -> Binding:
        """Open the store of `key` on a thread and bind it (`before`: the binding it replaces, whose failure was
        logged already)."""
        url, contract = key
        bundle = str(model.bundle.path)
        try:
            store = await asyncio.to_thread(
                open_store, url, contract, bundle=bundle, timeout_s=self.settings.item_store_timeout_s
            )
        except ContractError as exc:
            if before is None or before.error is None or before.error.message != exc.message:
                log.warning("model %s: item store not read: %s", model.name, exc.message)
            b = Binding(url, contract, None, exc, ItemSide(DEFAULT_ID_COLUMN, tuple(model.encoder.features)))
        else:
            log.info("model %s reads item store %s", model.name, store.describe())
            b = Binding(url, contract, store, None, ItemSide(store.id_column, store.sources))
        self._bindings[key] = b
        self._publish()
        return b

    async def _keep(self) -> None:
        """Every second: stores that could not be opened are tried again, unused ones closed; every
        APG_ITEM_STORE_REFRESH_S: each open store follows its published version."""
        tick = min(RETRY_S, self.settings.item_store_refresh_s)
        next_refresh = time.monotonic() + self.settings.item_store_refresh_s
        while True:
            await asyncio.sleep(tick)
            try:
                refresh = time.monotonic() >= next_refresh
                if refresh:
                    next_refresh = time.monotonic() + self.settings.item_store_refresh_s
                await self._tend(refresh)
            except Exception:  # the keeper never dies: requests depend on it
                log.exception("item stores: housekeeping failed")

    async def _tend(self, refresh: bool) -> None:
        served = {(self._url(m.name), m.contract): m for m in self.runtime.models.values() if self._url(m.name)}
        for key, b in list(self._bindings.items()):
            if key not in served:  # unused twice in a row (a request may still be reading it the first time): close
                if key in self._unused:
                    self._unused.discard(key)
                    del self._bindings[key]
                    if b.store is not None:
                        await asyncio.to_thread(b.store.close)
                else:
                    self._unused.add(key)
                continue
            self._unused.discard(key)
            if b.store is None:  # requests keep getting its error meanwhile (no waiting on a store that is down)
                await self._open(key, served[key], b)
            elif refresh:
                await self._refresh(b)
        self._publish()

    async def _refresh(self, b: Binding) -> None:
        try:
            if await asyncio.to_thread(b.store.refresh):
                log.info("item store %s: now version %s", b.store.describe()["url"], b.store.version)
                b.item = ItemSide(b.store.id_column, b.store.sources)  # (a version may hold other features)
                self._relaxed.clear()
        except ContractError as exc:  # keeps reading the version it has
            log.warning("item store %s: refresh failed: %s", b.url, exc.message)

    def _publish(self) -> None:
        """apg_item_store_info per served model: its store's backend, version and items."""
        for model in list(self.runtime.models.values()):
            b = self._bindings.get((self._url(model.name), model.contract))
            s = b.store if b is not None else None
            if s is None:
                self.metrics.set_item_store(model.name)
            else:
                self.metrics.set_item_store(model.name, s.backend, s.version, s.contract[:16], s.items)

    def _url(self, name: str) -> str | None:
        if name not in self._urls:
            self._urls[name] = self.settings.item_store_url(name)
        return self._urls[name]

    def _encoder(self, model: Any, b: Binding) -> Encoder:
        """The model's encoder, with the item features the store supplies not required of requests."""
        if b.store is None:
            return model.encoder
        encoder = self._relaxed.get(model)
        if encoder is None:
            encoder = self._relaxed[model] = relaxed(model.encoder, b.item)
        return encoder

    def _children(self, model: str) -> tuple[Any, Any]:
        children = self._metric_children.get(model)
        if children is None:  # labels() takes a lock and builds a tuple: once per model, not per request
            children = (self.metrics.item_lookup.labels(model), self.metrics.item_misses.labels(model))
            self._metric_children[model] = children
        return children
