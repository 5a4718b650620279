"""The held-out rows of a dataset as /score requests, in time order: each request holds the next rows of one user.

    requests = replay_requests("ml-100k", split="random", split_seed=0, max_rows=20, limit=2000)
    requests[0].rows    # [{"user_id": "196", "item_id": "242", "age": 49, "genres": "Comedy", ...}, ...]
    requests[0].labels  # (rows,) bool: the true clicks (rating >= the schema's threshold)

The split is the one `apg train` made (model/data.py split_rows, same --split and --split-seed), so the replayed rows
are the ones the models never trained on. Raw values as a client sends them: numbers as JSON numbers, missing values
left out. Only the raw table is read: no schema is fitted and nothing is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features import Schema
from model.data import DATASETS, SCHEMAS, Source, fetch, labels_of, read_table, source_table, split_rows, table_length


@dataclass(frozen=True)
class Request:
    user: str
    at: float  # the data's timestamp of the first row
    rows: list[dict]
    labels: np.ndarray  # (len(rows),) bool


def replay_requests(
    data: str,
    schema_path: str | None = None,
    split: str = "random",
    split_seed: int = 0,
    part: str = "test",
    max_rows: int = 20,
    limit: int | None = None,
) -> list[Request]:
    """The rows of split `part` ordered by time, cut per user into requests of up to `max_rows` consecutive rows,
    ordered by their first row's time; the first `limit` requests."""
    spec = Schema.load(schema_path or SCHEMAS / f"{data}.json")
    if not spec.user_column or not spec.time_column:
        raise ValueError("apg abtest needs a schema with a user_column (the split key) and a time_column")
    table = source_table(fetch(data), Source.of(data)) if data in DATASETS else read_table(data)
    n = table_length(table)
    rows = split_rows(n, split, split_seed, table[spec.time_column])[part]
    times = np.array([float(t) for t in table[spec.time_column]])
    rows = rows[np.argsort(times[rows], kind="stable")]
    labels, users = labels_of(spec, table), table[spec.user_column]
    numeric = {f.source for f in spec.fields if f.kind == "numeric"}
    sources = [s for s in spec.sources if s in table]
    open_requests: dict[str, list[int]] = {}
    requests: list[tuple[int, list[int]]] = []  # (first row, rows), in the order of their first rows
    for r in rows.tolist():
        current = open_requests.setdefault(str(users[r]), [])
        if not current:
            requests.append((r, current))
        current.append(r)
        if len(current) == max_rows:
            del open_requests[str(users[r])]
    return [
        Request(
            str(users[first]), float(times[first]), [_row(table, r, sources, numeric) for r in idx], labels[idx] > 0.5
        )
        for first, idx in requests[:limit]
    ]


def _row(table: dict[str, list], r: int, sources: list[str], numeric: set[str]) -> dict:
    row = {}
    for s in sources:
        v = table[s][r]
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if s in numeric:
            x = float(v)
            v = int(x) if x.is_integer() else x
        row[s] = v
    return row
