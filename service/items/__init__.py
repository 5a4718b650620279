"""The item store on the serving side: ranking requests name candidates by id, and the store supplies their item
features, encoded once by `apg items sync` (scripts/items/) through the bundle's own encoder.

    store.py    the reader: ItemStore.lookup(ids) → (columns, found), refresh(), describe(); the layouts of the
                file snapshot and of Redis; typed errors (ItemStoreUnavailable, ItemStoreMismatch, UnknownItems)
    backends.py FileStore (the snapshot, memory-mapped), RedisStore (one MGET a lookup), and open_store
    join.py     the request rule, for /score and KServe v2 alike: which candidates need the store, and how its rows
                and the features a request carries make one set of tensors
    serving.py  ItemStores: the served models' stores (APG_ITEM_STORE), opened per contract in the app's lifespan,
                refreshed in the background, read off the event loop, with their metrics and their readiness
"""

from service.items.backends import FileStore, RedisStore, open_store
from service.items.store import (
    CURRENT,
    DEFAULT_TIMEOUT_S,
    FORMAT,
    IDS,
    MANIFEST,
    NAMESPACE,
    ItemField,
    ItemStore,
    ItemStoreMismatch,
    ItemStoreUnavailable,
    UnknownItems,
    item_fields,
    propose_item_sources,
    redis_key,
    safe_url,
    sync_hint,
)

__all__ = [
    "CURRENT",
    "DEFAULT_TIMEOUT_S",
    "FORMAT",
    "IDS",
    "MANIFEST",
    "NAMESPACE",
    "FileStore",
    "ItemField",
    "ItemStore",
    "ItemStoreMismatch",
    "ItemStoreUnavailable",
    "RedisStore",
    "UnknownItems",
    "item_fields",
    "open_store",
    "propose_item_sources",
    "redis_key",
    "safe_url",
    "sync_hint",
]
