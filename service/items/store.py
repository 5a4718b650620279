"""The item store's reader: candidates named by id → their item fields' encoded rows, one lookup per request.

    store = open_store("file://items", model.contract)      # or "redis://127.0.0.1:6379/0"
    columns, found = store.lookup(["242", "302", "nope"])    # {"item_id": (3,), "genres": (3, 6)}, [T, T, F]
    store.describe()                                         # backend, url, checksum, version, items, bytes, fields
    store.refresh()                                          # follow a newer published version (True if switched)

`scripts/items/sync.py` writes the store through the bundle's own encoder (`apg items sync`); nothing else does.
Rows are keyed by the bundle's contract checksum (`features.Schema.digest()`, `Model.contract`): a store written for
another schema is never read (`ItemStoreMismatch` names the sync to run). A miss gets every item field MISSING
(index 0, all zeros for a multi field): what the encoder gives a missing feature.

File snapshot, `file://DIR` (every worker maps the same pages read-only):
    DIR/<checksum>/CURRENT               the published version (replaced atomically: temp file + os.replace)
    DIR/<checksum>/<version>/manifest.json
    DIR/<checksum>/<version>/ids.npy     (N,) unicode, the normalised ids (rule 1), sorted; row i is ids[i]
    DIR/<checksum>/<version>/<field>.npy (N + 1,) or (N + 1, max_len) int64; row N is all zeros (the miss row)
The id index is a dict built at open from ids.npy (~130 bytes per item per worker, ~15 ms per 100,000 items): 1,000
random ids among 100,000 cost ~0.1-0.2 ms, as much as a shared sorted 64-bit hash index with np.searchsorted (which
needs every id turned into a numpy array first) and less than searchsorted on the sorted unicode ids.

Redis, `redis://host:port/db` (one MGET per lookup; all of a contract's keys share the hash tag {checksum}):
    apg:items:{<checksum>}:current             the published version
    apg:items:{<checksum>}:<version>           its manifest (JSON), written after its items
    apg:items:{<checksum>}:<version>:<id>      one item: W = Σ field widths values (a categorical or numeric field 1,
                                               a multi field max_len, zero-padded), in the manifest's field order,
                                               each a little-endian signed integer of the manifest's `value_dtype`
                                               (the narrowest of <i2/<i4/<i8 that holds every value); no header
Calls are bounded by `timeout_s` (socket and connect): a connection error is retried once at once, a timeout never
(redis-py's own defaults have changed between releases, so they are set here). Any failure is `ItemStoreUnavailable`
(503, Retry-After) and leaves nothing behind: redis-py drops the failed connection (a late reply cannot reach the
next call) and the next call connects again; a pooled connection that a restarted Redis closed is replaced on use.
With hiredis installed (the serve extra) an MGET of 1,000 keys is packed by its C packer and its reply parsed in C:
~0.7 ms for 1,000 ids from a local Redis, against ~1.2 ms with redis-py's packer and ~2.7 ms without hiredis.

The two backends, FileStore and RedisStore, and `open_store` (which picks one by the URL's scheme) are in
service/items/backends.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features import ContractError, Schema, normalise
from features.errors import BadRequest, InvalidType

FORMAT = 1  # the layout above
CURRENT, MANIFEST, IDS = "CURRENT", "manifest.json", "ids.npy"
NAMESPACE = "apg:items"
DEFAULT_TIMEOUT_S = 0.2  # a lookup of 1,000 ids takes ~1-3 ms from a local Redis; a stall is a 503 after this


class ItemStoreUnavailable(ContractError):
    """The store cannot be read now (Redis down, slow or answering garbage): requests that need it get a 503."""

    status, code = 503, "item_store_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class ItemStoreMismatch(ContractError):
    """The store holds no published rows for this contract checksum: the message names the sync to run."""

    status, code = 503, "item_store_mismatch"


class UnknownItems(BadRequest):
    """Ids the store does not hold, refused (APG_ITEM_MISS=error) instead of scored as items with missing features."""

    code = "unknown_items"


@dataclass(frozen=True)
class ItemField:
    name: str  # the graph input
    source: str  # the raw item feature it reads
    width: int  # 0: (N,); max_len: (N, max_len)


def item_fields(schema: Schema, sources: Iterable[str]) -> tuple[ItemField, ...]:
    """The schema's fields that read one of the item features `sources` (derived ones too), in schema order."""
    sources = set(sources)
    unknown = sorted(sources - set(schema.sources))
    if unknown:
        raise ValueError(f"item features {unknown} are not features of schema {schema.name!r}: {schema.sources}")
    return tuple(ItemField(f.name, f.source, f.width) for f in schema.fields if f.source in sources)


def propose_item_sources(schema: Schema, columns: Iterable[str]) -> tuple[str, ...]:
    """The default item features: the schema's features that the catalogue has as columns (MovieLens: item_id,
    release_year, genres), so the user, its derived fields and the context stay in the request."""
    columns = set(columns)
    return tuple(s for s in schema.sources if s in columns)


def redis_key(contract: str, *parts: str) -> str:
    return ":".join((f"{NAMESPACE}:{{{contract}}}", *parts))


def sync_hint(url: str, bundle: str | None = None) -> str:
    return f"apg items sync --bundle {bundle or 'BUNDLE'} --items CATALOGUE --store {safe_url(url)}"


def safe_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}" if rest else url  # never a password in a message


def _keys(ids: Sequence) -> list[str]:
    """Rule 1 on the ids, as the encoder reads an item_id value: "242", " 242 " and 242 are one item."""
    if set(map(type, ids)) <= {str}:
        return list(map(str.strip, ids))
    keys = []
    for row, value in enumerate(ids):
        try:
            keys.append(normalise(value) or "")  # None or blank: a miss
        except (ContractError, ValueError) as exc:
            raise InvalidType(f"candidate {row}: an item id must be a string or a number ({exc})", row=row) from None
    return keys


class ItemStore(ABC):
    """A published version of one contract's item rows. `lookup` may run in any thread; `refresh` swaps one
    reference, so a lookup in flight finishes on the version it started with."""

    backend = ""

    def __init__(self, url: str, contract: str, bundle: str | None) -> None:
        self.url, self.contract, self.bundle = url, contract, bundle
        self._state: Any  # the version read now (a backend's): one reference, swapped by refresh()

    @property
    def manifest(self) -> dict:
        return self._state.manifest

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def items(self) -> int:
        return self.manifest["items"]

    @property
    def fields(self) -> tuple[ItemField, ...]:
        """The item fields it holds, in schema order: a lookup returns one column each."""
        return tuple(ItemField(f["name"], f["source"], f["width"]) for f in self.manifest["fields"])

    @property
    def sources(self) -> tuple[str, ...]:
        """The raw item features those fields read: what a candidate's id stands for (a request may override them)."""
        return tuple(self.manifest["sources"])

    @property
    def id_column(self) -> str:
        return self.manifest["id_column"]

    @abstractmethod
    def lookup(self, ids: Sequence) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The item fields' int64 columns for `ids`, in order ((n,) or (n, max_len)), and `found` (n,) bool.
        An id is read by rule 1; a miss has every item field MISSING. ItemStoreUnavailable when the store fails."""

    def refresh(self) -> bool:
        """Follow the published version: True when it changed (the next lookups read the new one). The swap is one
        reference: a lookup already running finishes on the version it started with."""
        version = self._current()
        if version == self.version:
            return False
        self._state = self._open(version)
        return True

    @abstractmethod
    def _current(self) -> str:
        """The published version's name (the backend's CURRENT pointer); ItemStoreMismatch when there is none."""

    @abstractmethod
    def _open(self, version: str) -> Any:
        """One version, read: what ``_state`` holds."""

    def close(self) -> None:  # noqa: B027 (a file store has nothing to close: its mappings go with it)
        """Release connections (Redis)."""

    def describe(self) -> dict:
        m = self.manifest  # one version's, whatever refresh() does meanwhile
        return {
            "backend": self.backend,
            "url": safe_url(self.url),
            "checksum": self.contract,
            "version": m["version"],
            "items": m["items"],
            "bytes": m["bytes"],
            "created_at": m["created_at"],
            "id_column": m["id_column"],
            "fields": [f["name"] for f in m["fields"]],
        }

    def _missing(self, where: str) -> ItemStoreMismatch:
        return ItemStoreMismatch(
            f"item store {safe_url(self.url)} holds no rows for contract {self.contract[:12]}{where}: "
            f"run `{sync_hint(self.url, self.bundle)}`"
        )

    def _check(self, manifest: dict) -> dict:
        if manifest.get("format") != FORMAT or manifest.get("contract") != self.contract:
            raise self._missing(
                f" (version {manifest.get('version')} is of format {manifest.get('format')}, "
                f"contract {str(manifest.get('contract'))[:12]})"
            )
        return manifest
