"""What the item store tests share: a fitted schema with item features, its catalogue, and a redis-server process
that a test may stop, pause and start again on its port (tests/redis_process.py; the fixtures are in conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

from redis_process import RedisProcess

from features import Schema

__all__ = ["GENRES", "ITEMS", "ITEM_SOURCES", "VOCAB", "RedisProcess", "make_schema", "make_table", "write_csv"]

ITEMS = 1_500  # catalogue rows; the first VOCAB ids are in item_id's vocabulary, the rest encode OOV
VOCAB = 1_200
GENRES = ["Action", "Comedy", "Drama", "Romance", "Sci-Fi", "War"]
ITEM_SOURCES = ("item_id", "title", "release_year", "genres")


def make_schema(extra_genre: str | None = None) -> Schema:
    """A fitted schema: a user, four item features (one hashed, one numeric, one multi) and a field derived from
    item_id. `extra_genre` changes the genres vocabulary, hence the contract checksum."""
    genres = GENRES + ([extra_genre] if extra_genre else [])
    return Schema.from_dict(
        {
            "name": "items-test",
            "fields": [
                {"name": "user_id", "kind": "categorical", "required": True, "vocab": ["u1", "u2", "u3"]},
                {"name": "item_id", "kind": "categorical", "required": True, "vocab": [f"i{i}" for i in range(VOCAB)]},
                {"name": "title", "kind": "categorical", "hash_buckets": 997},
                {"name": "release_year", "kind": "numeric", "edges": [1950, 1970, 1990, 2000]},
                {"name": "genres", "kind": "multi", "sep": "|", "max_len": 4, "vocab": genres},
                {
                    "name": "item_pop",
                    "kind": "categorical",
                    "source": "item_id",
                    "mapping": {"i1": "hot", "i2": "hot"},
                    "mapping_default": "cold",
                    "vocab": ["cold", "hot"],
                },
            ],
        }
    )


def make_table(items: int = ITEMS, changed: bool = False) -> dict[str, list]:
    """The catalogue as raw columns (CSV strings); a few values break the rules (lenient: missing). `changed`:
    item i7's genres differ and one more item exists (a new catalogue version)."""
    table = {
        "item_id": [f"i{i}" for i in range(items)],
        "title": [f"Movie {i}" for i in range(items)],
        "release_year": [str(1930 + i % 90) if i % 50 else "n/a" for i in range(items)],
        "genres": ["|".join(GENRES[(i + k) % 6] for k in range(i % 6)) or None for i in range(items)],
    }
    if changed:
        table["genres"][7] = "War|War|Drama"
        for column, value in zip(table, (f"i{items}", "New", "2020", "Comedy"), strict=True):
            table[column].append(value)
    return table


def write_csv(path: Path, table: dict[str, list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table)
        writer.writerows(["" if v is None else v for v in row] for row in zip(*table.values(), strict=True))
    return path
