"""A log of Parquet shards: its row groups checked up front, fitted in one pass, read and encoded one at a time.

    log = open_log("data/synth", spec)          # DataError naming file, row group and column for a bad shard
    schema = fit_log(log, spec)                 # vocabularies from one streaming pass over the train split
    block = read_block(log, log.splits["train"][0], Encoder(schema, LENIENT), schema)   # x, y, users of a row group

Layout: ``DIR/{train,valid,test}/**.parquet`` (what ``apg data synth`` writes), or any directory or glob of Parquet
files, whose row groups are then split by a hash (``split_of``: 80/10/10, fixed across seeds and sizes).
The unit of work is a row group (model/stream.py deals them to ranks and workers). No torch here.

Encoding is the bundle's own encoder (features.Encoder, lenient policy) applied to each row group's *distinct*
values (Arrow dictionary encoding), then gathered: the same indices as encoding every row, at a fraction of the cost.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import LENIENT, Encoder, Schema
from features.fit import SchemaFit, counted
from features.rules import id_hash, lenient, normalise
from model.data import DataError, Dataset

SPLITS = ("train", "valid", "test")
NUMERIC_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)


@dataclass(frozen=True)
class Unit:
    """One row group of one shard."""

    path: str
    row_group: int
    rows: int


@dataclass(frozen=True)
class Log:
    splits: dict[str, tuple[Unit, ...]]
    columns: tuple[str, ...]  # the columns the schema reads (sources, label, user), in shard order
    root: str

    def rows(self, split: str) -> int:
        return sum(u.rows for u in self.splits[split])

    def read(self, unit: Unit) -> pa.Table:
        try:
            return _parquet(unit.path).read_row_group(unit.row_group, columns=list(self.columns))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{unit.path}, row group {unit.row_group}: cannot read it: {exc}") from None


_OPEN: dict[str, pq.ParquetFile] = {}


def _parquet(path: str) -> pq.ParquetFile:
    """An open shard, kept per process (a worker reads its row groups from a few files over and over)."""
    f = _OPEN.get(path)
    if f is None:
        if len(_OPEN) >= 16:
            _OPEN.clear()
        f = _OPEN[path] = pq.ParquetFile(path)
    return f


def is_log(data: str) -> bool:
    """A directory or a glob names a log of shards; a named dataset or one file is read whole (model/data.py)."""
    return Path(data).is_dir() or any(ch in data for ch in "*?[")


def split_of(path: str, row_group: int) -> str:
    """A log without split folders: a row group's split is id_hash("<file name>:<row group>") mod 10 — 0 valid,
    1 test, else train — so it never changes with the seed, and adding shards moves no existing row group."""
    bucket = id_hash(f"{Path(path).name}:{row_group}") % 10
    return "valid" if bucket == 0 else "test" if bucket == 1 else "train"


def open_log(data: str, spec: Schema) -> Log:
    """Every shard's footer read and checked against the first shard and the schema; no rows are read."""
    files = _files(data)
    needed = [*spec.sources, spec.label.get("column")] + ([spec.user_column] if spec.user_column else [])
    needed = list(dict.fromkeys(c for c in needed if c))
    first: pa.Schema | None = None
    units: dict[str, list[Unit]] = {s: [] for s in SPLITS}
    for split, path in files:
        try:
            meta = pq.ParquetFile(path).metadata
            arrow = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        if meta.num_rows == 0:
            raise DataError(f"{path}: an empty shard (0 rows); remove it")
        first = first or _check_columns(arrow, needed, path)
        _same_columns(first, arrow, path)
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows:
                units[split or split_of(path, g)].append(Unit(path, g, rows))
    empty = [s for s in SPLITS if not units[s]]
    if empty:
        raise DataError(
            f"{data}: no row groups for the {', '.join(empty)} split (give train/, valid/ and test/ "
            "folders, or more row groups: without folders about 1 in 10 goes to each of valid and test)"
        )
    columns = tuple(c for c in first.names if c in needed)
    return Log({s: tuple(u) for s, u in units.items()}, columns, data)


def _files(data: str) -> list[tuple[str | None, str]]:
    """(split or None, path) of every shard, sorted: split folders if the directory has them."""
    root = Path(data)
    if root.is_dir() and all((root / s).is_dir() for s in SPLITS):
        return [(s, str(p)) for s in SPLITS for p in sorted((root / s).rglob("*.parquet"))]
    paths = sorted(root.rglob("*.parquet")) if root.is_dir() else sorted(map(Path, glob.glob(data, recursive=True)))
    if not paths:
        raise DataError(f"{data}: no Parquet shards there (*.parquet); CSV converts with `apg data convert`")
    if root.is_dir() and any((root / s).is_dir() for s in SPLITS):
        raise DataError(f"{data}: has some of the folders {', '.join(SPLITS)} but not all")
    return [(None, str(p)) for p in paths]


def _check_columns(arrow: pa.Schema, needed: list[str], path: str) -> pa.Schema:
    missing = [c for c in needed if c not in arrow.names]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}, which the schema reads (columns: {', '.join(arrow.names)})")
    for name in needed:
        t = arrow.field(name).type
        if pa.types.is_nested(t) and not pa.types.is_list(t) and not pa.types.is_large_list(t):
            raise DataError(f"{path}: column {name!r} has type {t}, which no field can read")
    return arrow


def _same_columns(first: pa.Schema, arrow: pa.Schema, path: str) -> None:
    extra, missing = set(arrow.names) - set(first.names), set(first.names) - set(arrow.names)
    if extra or missing:
        what = f"extra column {sorted(extra)[0]!r}" if extra else f"no column {sorted(missing)[0]!r}"
        raise DataError(f"{path}: {what} (the first shard has {', '.join(first.names)})")
    for name in first.names:
        kinds = {_kind(arrow.field(name).type), _kind(first.field(name).type)}
        if len(kinds - {pa.null()}) > 1:  # (a column that is all null in one shard may be typed null there)
            raise DataError(
                f"{path}: column {name!r} has type {arrow.field(name).type}, "
                f"the first shard's is {first.field(name).type}"
            )


def _kind(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


# ---------------------------------------------------------------- one row group → encoded arrays
def encode_table(encoder: Encoder, table: pa.Table) -> dict[str, np.ndarray]:
    """Every field of ``encoder`` from an Arrow table: equal to ``encoder.encode_columns(table.to_pydict())``."""
    n = table.num_rows
    out = {}
    for f in encoder.fields:
        if f.source not in table.column_names:
            out[f.name] = encoder.encode_field(f.name, [None])[np.zeros(n, dtype=np.int64)]
            continue
        column = table.column(f.source)
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if f.kind == "numeric" and any(test(column.type) for test in NUMERIC_TYPES):
            x = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls → NaN
            ok = np.isfinite(x)
            edges = np.asarray(f.edges, dtype=np.float64)
            out[f.name] = np.where(ok, 1 + np.searchsorted(edges, np.where(ok, x, 0.0), side="right"), 0)
        else:
            out[f.name] = _by_distinct(column, lambda values, name=f.name: encoder.encode_field(name, values))
    return out


def _by_distinct(column: pa.Array, encode) -> np.ndarray:
    """encode() of each distinct value, gathered; a column Arrow cannot dictionary-encode (lists) row by row."""
    if pa.types.is_null(column.type):
        return np.repeat(np.asarray(encode([None])), len(column), axis=0)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return np.asarray(encode(column.to_pylist()))
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    codes = np.asarray(encode([*column.dictionary.to_pylist(), None]))  # the last row: a missing value
    index = column.indices.fill_null(len(column.dictionary)).to_numpy(zero_copy_only=False)
    return codes[index]


def labels_of(table: pa.Table, label: dict, where: str) -> np.ndarray:
    column = table.column(label["column"])
    if column.null_count:
        raise DataError(f"{where}: column {label['column']!r} (the label) has {column.null_count} missing values")
    try:
        y = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowException as exc:
        raise DataError(f"{where}: column {label['column']!r} (the label) is not numeric: {exc}") from None
    return (y >= float(label.get("threshold", 0.5))).astype(np.float32)


def user_keys(table: pa.Table, column: str | None) -> np.ndarray:
    """gAUC's user of each row as an int64 key: id_hash of the normalised value (0: none)."""
    if column is None:
        return np.zeros(table.num_rows, dtype=np.int64)
    values = table.column(column)
    values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)

    def keys(raw):
        return [0 if (v := lenient(normalise, r)) is None else id_hash(v) >> 1 for r in raw]

    return _by_distinct(values, keys).astype(np.int64)


@dataclass
class Block:
    """Encoded rows of one or more row groups."""

    x: dict[str, np.ndarray]
    y: np.ndarray
    users: np.ndarray

    @classmethod
    def concat(cls, blocks: list[Block]) -> Block:
        return cls(
            {k: np.concatenate([b.x[k] for b in blocks]) for k in blocks[0].x},
            np.concatenate([b.y for b in blocks]),
            np.concatenate([b.users for b in blocks]),
        )

    def take(self, rows: np.ndarray) -> Block:
        return Block({k: v[rows] for k, v in self.x.items()}, self.y[rows], self.users[rows])


def read_block(log: Log, unit: Unit, encoder: Encoder, schema: Schema, users: bool = True) -> Block:
    """A row group encoded; ``users=False`` (training batches: gAUC is computed on scored splits only) leaves the
    user keys at 0 instead of hashing every distinct user."""
    table = log.read(unit)
    where = f"{unit.path}, row group {unit.row_group}"
    try:
        x = encode_table(encoder, table)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise DataError(f"{where}: cannot encode it: {exc}") from None
    keys = user_keys(table, schema.user_column if users else None)
    return Block(x, labels_of(table, schema.label, where), keys)


def read_split(log: Log, split: str, schema: Schema, units: list[int] | None = None) -> Block:
    """A whole split (or the units at the given positions of it) in memory: the in-memory trainer on a log."""
    encoder = Encoder(schema, LENIENT)
    chosen = log.splits[split] if units is None else [log.splits[split][i] for i in units]
    return Block.concat([read_block(log, u, encoder, schema) for u in chosen])


# ---------------------------------------------------------------- fitting
def fit_log(log: Log, spec: Schema, progress=None) -> Schema:
    """The spec fitted on the train split in one pass: each row group's distinct values with their counts
    (Arrow's value_counts), merged. Every row group of every split is read once too, so that a shard that cannot
    be read or encoded fails here, before anything is written."""
    fit = SchemaFit(spec)
    fields = [f for f in spec.fields if counted(f)]
    for split in SPLITS:
        for unit in log.splits[split]:
            table = log.read(unit)
            if split == "train":
                for f in fields:
                    column = table.column(f.source).combine_chunks()
                    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                        fit.add(f, column.to_pylist())
                        continue
                    counts = pc.value_counts(column)
                    fit.add(f, counts.field("values").to_pylist(), counts.field("counts").to_pylist())
            labels_of(table, spec.label, f"{unit.path}, row group {unit.row_group}")
            if progress is not None:
                progress(unit.rows)
    return fit.fitted()


def schema_path(data: str, schema: str | None) -> Path:
    """--schema, or the log folder's schema.json."""
    path = Path(schema) if schema else Path(data) / "schema.json" if Path(data).is_dir() else None
    if path is None or not path.exists():
        raise DataError(f"{data}: a log of shards needs --schema SCHEMA.json (or a schema.json in the folder)")
    return path


def load_log_dataset(data: str, schema: str | None) -> Dataset:
    """A log of shards read whole into memory (``apg train --in-memory``): the in-memory trainer on the same rows and
    splits as the streamed one (the schema fitted on its train split the same way)."""
    spec = Schema.load(schema_path(data, schema))
    log = open_log(data, spec)
    fitted = fit_log(log, spec)
    blocks = {split: read_split(log, split, fitted) for split in SPLITS}
    both = Block.concat(list(blocks.values()))
    bounds = np.cumsum([0] + [len(b.y) for b in blocks.values()])
    splits = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(blocks)}
    return Dataset(fitted, both.x, both.y, both.users, splits, None)
