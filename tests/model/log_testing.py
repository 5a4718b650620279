"""A small log of Parquet shards for the streaming tests: known rows, uneven shards and row groups, a schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features import Field, Schema

SPEC = Schema(
    name="tiny-log",
    fields=(
        Field("user", "categorical", hash_buckets=64),
        Field("item", "categorical", min_count=2),
        Field("tags", "multi", sep="|", max_len=3),
        Field("price", "numeric", edges=(1.0, 10.0, 100.0)),
    ),
    label={"column": "click", "threshold": 0.5},
    user_column="user",
)


def rows(n: int, seed: int, start: int = 0) -> pa.Table:
    """n rows whose click depends on item and price (learnable), each with a unique row id."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 30, n)
    price = np.round(rng.lognormal(2.0, 1.5, n), 2)
    logit = (item % 3 - 1) * 1.5 + (price > 10) - 0.5
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    tags = ["|".join(f"t{t}" for t in rng.choice(8, rng.integers(0, 4), replace=False)) or None for _ in range(n)]
    price_col = pa.array(np.where(rng.random(n) < 0.05, np.nan, price)).cast(pa.float64())
    return pa.table(
        {
            "row_id": pa.array(np.arange(start, start + n), pa.int64()),
            "user": pa.array([f"u{u}" for u in rng.integers(0, 200, n)]).dictionary_encode(),
            "item": pa.array([str(i) if i % 7 else None for i in item]),
            "tags": pa.array(tags),
            "price": price_col,
            "click": pa.array(click),
        }
    )


def write_log(root: Path, shards: dict[str, list[tuple[int, int]]], seed: int = 0) -> Path:
    """root/{split}/part-k.parquet: shards[split] = [(rows, row_group_rows), ...]; root/schema.json."""
    start = 0
    for split, files in shards.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for k, (n, group) in enumerate(files):
            pq.write_table(rows(n, seed + start, start), root / split / f"part-{k:05d}.parquet", row_group_size=group)
            start += n
    SPEC.save(root / "schema.json")
    return root
