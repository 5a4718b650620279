"""A named dataset's item catalogue: one row per item with its item features, the input of `apg items sync`.

    write_catalogue("ml-100k", "items.csv")     # item_id, movie_title, release_year, genres: 1,682 rows

The rows are the dataset's item file (the file its interactions join on the item id), read by model/data.py's
`source_table` with the dataset's own renames and separators: the values training saw, for every item, rated or
not. Imports model.data (numpy and features/ only), never torch; `apg items sync` itself does not import this.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from model.data import DataError, Source, fetch, source_table


def catalogue_table(name: str, id_column: str = "item_id", folder: Path | None = None) -> dict[str, list]:
    """The item file of dataset `name` (ml-100k, ml-1m) as raw columns, one row per item."""
    src = Source.of(name)
    item_file = next((file for file, key in src.joins if key == id_column), None)
    if item_file is None:
        raise DataError(f"dataset {name!r} joins no file on {id_column!r} (joins: {list(src.joins)})")
    return source_table(folder or fetch(name), replace(src, interactions=item_file, joins=()))


def write_catalogue(name: str, path: str | Path, id_column: str = "item_id") -> int:
    """Write the catalogue of dataset `name` as CSV (a missing value is an empty cell); the number of items."""
    table = catalogue_table(name, id_column)
    columns = list(table)
    rows = zip(*(table[c] for c in columns), strict=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        count = 0
        for row in rows:
            writer.writerow("" if v is None else v for v in row)
            count += 1
    return count
