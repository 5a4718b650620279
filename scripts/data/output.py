"""What `apg data synth` and `apg data convert` share: an output folder that appears whole or not at all, the plan of
contiguous shards, a Parquet shard writer with fixed row groups, and progress (a bar on a terminal, else a line per
shard)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

COMPRESSION = "snappy"


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing non-empty OUT unless `force` (ValueError); a file at OUT is refused either way."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out} exists and is not empty (--force replaces it)")


@contextmanager
def atomic_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yields a temporary folder beside `out`; on success it replaces `out` (the old one stays whole until then),
    on any error it is removed, so a failed run leaves no partial OUT."""
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def shard_ranges(start: int, stop: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) cut into `shards` contiguous ranges whose sizes differ by at most one row."""
    n = stop - start
    cuts = [start + n * k // shards for k in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def shard_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


class ShardWriter:
    """One Parquet file written a row group at a time; string columns dictionary-encoded (pyarrow's default)."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int) -> None:
        self.path, self.row_group_rows, self.rows = path, row_group_rows, 0
        self.writer = pq.ParquetWriter(path, schema, compression=COMPRESSION, use_dictionary=True)

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=self.row_group_rows)
        self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()


class Progress:
    """Rows written so far: a tqdm bar when stderr is a terminal, otherwise one line per finished shard."""

    def __init__(self, total: int | None, enabled: bool, what: str) -> None:
        self.enabled, self.what, self.start = enabled, what, time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rows", unit_scale=True, desc=what, file=sys.stderr)

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    def shard_done(self, name: str, rows: int) -> None:
        if self.enabled and self.bar is None:
            elapsed = time.perf_counter() - self.start
            print(f"{self.what}: {name} {rows} rows ({elapsed:.1f} s)", file=sys.stderr)

    def close(self) -> float:
        """Seconds since the start."""
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.start
