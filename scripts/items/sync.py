"""`apg items sync`: an item catalogue, encoded by the bundle's own encoder, published into an item store.

    apg items sync --bundle bundles/default --items items.csv                       # file://items (the default)
    apg items sync --bundle bundles/default --items items.parquet --store redis://127.0.0.1:6379/0

Stages: read the catalogue (CSV cells stay strings, as a client would send them; Parquet keeps its types), encode
each item's item features with `features.Encoder(schema, LENIENT)` (catalogue data: a value that breaks a rule is
missing, as in training), then publish (scripts/items/publish.py: atomic, and a re-run over the same catalogue writes
nothing). The item features default to the bundle's features that are columns of the catalogue
(`service.items.propose_item_sources`); --item-features names them instead. Ids are read by rule 1 (" 242 ", 242
and "242" are one item); a duplicate id is an error naming it. A serving-side tool: no torch, no model/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from features import LENIENT, ContractError, Encoder, Schema, normalise, read_schema
from features.tables import read_table
from scripts.items.publish import Encoded, publish
from service.items import item_fields, propose_item_sources, safe_url

DEFAULT_STORE = "file://items"
ENCODE_CHUNK = 20_000  # items per encoder call (the progress bar's step)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg items sync`."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--bundle", required=True, help="bundle directory (or its bundle.json): whose encoder and contract")
    p.add_argument("--items", required=True, help="the item catalogue: .csv, .tsv or .parquet, one row per item")
    p.add_argument("--store", default=DEFAULT_STORE, help="file://DIR (memory-mapped snapshot) or redis://host:port/db")
    p.add_argument("--id-column", default="item_id", help="the catalogue column holding the id requests name")
    p.add_argument(
        "--item-features",
        help="comma-separated raw features stored per item (default: the bundle's features that are catalogue columns)",
    )
    p.add_argument("--keep", type=int, default=2, help="versions kept in the store, the published one included")
    p.add_argument("--quiet", action="store_true", help="no progress (the summary is still printed)")


def run_from_args(args) -> int:
    """`apg items sync`: prints one summary line. ValueError/FileNotFoundError/RuntimeError carry the message."""
    sources = [s.strip() for s in args.item_features.split(",") if s.strip()] if args.item_features else None
    summary = sync(args.bundle, args.items, args.store, args.id_column, sources, args.keep, not args.quiet)
    print(
        f"items sync: {summary['items']} items, fields {', '.join(summary['fields'])} -> {summary['store']} "
        f"contract {summary['checksum'][:12]} version {summary['version']} ({summary['status']}), "
        f"{summary['bytes']:,} bytes, {summary['seconds']:.2f} s"
    )
    return 0


def sync(
    bundle: str | Path,
    items: str | Path,
    store: str = DEFAULT_STORE,
    id_column: str = "item_id",
    sources: list[str] | None = None,
    keep: int = 2,
    progress: bool = False,
) -> dict:
    """Read, encode and publish; the summary: items, fields, checksum, version, status, bytes, seconds, store."""
    start, stages = time.perf_counter(), Stages(progress)
    schema, model = read_schema(bundle)
    stages.begin("read", None)
    table = read_table(items)
    stages.end(f"{items}: {len(next(iter(table.values()), []))} rows, columns {', '.join(table)}")
    encoded = encode_catalogue(schema, table, id_column, sources, model, stages, where=str(items))
    stages.begin("publish", len(encoded.ids))
    published = publish(store, encoded, keep, stages.advance)
    stages.end(f"{safe_url(store)} version {published.version} ({published.status})")
    return {
        "items": len(encoded.ids),
        "fields": [f.name for f in encoded.fields],
        "checksum": encoded.contract,
        "version": published.version,
        "status": published.status,
        "bytes": published.bytes,
        "seconds": time.perf_counter() - start,
        "store": safe_url(store),
    }


def encode_catalogue(
    schema: Schema,
    table: dict[str, list],
    id_column: str = "item_id",
    sources: list[str] | None = None,
    model: str | None = None,
    stages: Stages | None = None,
    where: str = "the catalogue",
) -> Encoded:
    """The catalogue's item fields through Encoder(schema, LENIENT), one row per id, sorted by id."""
    stages = stages or Stages(False)
    if id_column not in table:
        raise ValueError(f"{where} has no id column {id_column!r} (columns: {', '.join(table)}); see --id-column")
    sources = list(sources or propose_item_sources(schema, table))
    if not sources:
        raise ValueError(f"{where}: none of its columns is a feature of the bundle ({', '.join(schema.sources)})")
    fields = item_fields(schema, sources)  # ValueError naming a feature the schema lacks
    absent = [s for s in sources if s not in table]
    if absent:
        raise ValueError(f"{where}: item features {absent} are not catalogue columns")
    ids = _ids(table[id_column], where)
    encoder, n = Encoder(schema, LENIENT), len(ids)
    stages.begin("encode", n)
    columns: dict[str, list[np.ndarray]] = {f.name: [] for f in fields}
    for lo in range(0, n, ENCODE_CHUNK):
        for f in fields:
            columns[f.name].append(encoder.encode_field(f.name, table[f.source][lo : lo + ENCODE_CHUNK]))
        stages.advance(min(ENCODE_CHUNK, n - lo))
    order = np.argsort(ids, kind="stable")
    encoded = {name: np.concatenate(parts)[order] for name, parts in columns.items()}
    stages.end(f"{n} items, fields {', '.join(f.name for f in fields)}")
    return Encoded(schema.digest(), model, id_column, fields, ids[order], encoded)


def _ids(column: list, where: str) -> np.ndarray:
    """Rule 1 on every id; an empty, unreadable or repeated id is an error naming it and its rows."""
    seen: dict[str, int] = {}
    for row, value in enumerate(column):
        try:
            key = normalise(value)
        except (ContractError, ValueError) as exc:  # InvalidType, NonFinite; an int past str()'s digit limit
            raise ValueError(f"{where}: row {row + 1} has an unreadable id {value!r} ({exc})") from None
        if key is None:
            raise ValueError(f"{where}: row {row + 1} has no id")
        if key in seen:
            raise ValueError(f"{where}: duplicate item id {key!r} (rows {seen[key] + 1} and {row + 1})")
        seen[key] = row
    if not seen:
        raise ValueError(f"{where}: no items")
    return np.array(list(seen), dtype=str)


class Stages:
    """Progress on stderr: a tqdm bar per counted stage on a terminal, one line per finished stage otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.tty = enabled, enabled and sys.stderr.isatty()
        self.bar, self.name, self.start = None, "", 0.0

    def begin(self, name: str, total: int | None) -> None:
        self.name, self.start = name, time.perf_counter()
        if self.tty and total:
            try:
                from tqdm import tqdm
            except ImportError:  # not in the serve extra: lines instead
                return
            self.bar = tqdm(total=total, desc=name, unit="items", unit_scale=True, file=sys.stderr, leave=False)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def end(self, detail: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            print(f"{self.name}: {detail} ({time.perf_counter() - self.start:.2f} s)", file=sys.stderr)
