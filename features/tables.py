"""Reading a raw table (a CSV/TSV or Parquet file) as columns of raw values: the one rule for training data
(model/data.py), item catalogues (scripts/items) and any tool that reads rows a client could send.

    read_table("clicks.csv")      # {"user_id": ["196", ...], "zip": ["02139", None, ...], ...}

CSV cells stay strings, exactly as a client would send them ("02139" stays "02139"; type inference would make it 2139
and the vocabulary would never match a request); an empty cell, or a short row's missing cell, is missing (None).
Parquet needs pyarrow (the train extra has it); its columns keep their types.
"""

from __future__ import annotations

import csv
from pathlib import Path


def read_table(path: str | Path) -> dict[str, list]:
    """Raw columns of a .csv, .tsv or .parquet file; ValueError for another kind or an empty file."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or give a CSV") from None
        return pq.read_table(path).to_pydict()
    if path.suffix not in (".csv", ".tsv"):
        raise ValueError(f"{path}: expected a .csv, .tsv or .parquet file")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        columns: dict[str, list] = {h: [] for h in header}
        for row in reader:
            for i, h in enumerate(header):
                columns[h].append(row[i] if i < len(row) and row[i] != "" else None)
    return columns
