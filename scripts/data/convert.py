"""`apg data convert`: a CSV/TSV log streamed into Parquet shards for `apg train --data`.

    convert(ConvertConfig(Path("log.tsv"), Path("data/log"), shards=8))   # data/log/part-00000.parquet ...

Every column is read as a string ("02139" stays "02139"; the schema's rules read numbers from strings) and an empty
cell is null. The file is read a block at a time, never whole: with --shards > 1 a first pass counts the rows, so the
shards are contiguous (time order kept) and differ by at most one row. OUT appears whole or not at all.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConvertConfig:
    """`apg data convert`'s options; invalid values raise ValueError."""

    src: Path
    out: Path
    shards: int = 1
    row_group_rows: int = 65_536
    schema: Path | None = None  # check the CSV has every column this schema reads
    delimiter: str | None = None  # None: a tab for .tsv/.tsv.gz or a header with a tab, else a comma
    column_names: tuple[str, ...] | None = None  # the file has no header: these are its columns

    def __post_init__(self):
        if self.shards < 1:
            raise ValueError(f"--shards must be >= 1, got {self.shards}")
        if self.row_group_rows < 1:
            raise ValueError(f"--row-group-rows must be >= 1, got {self.row_group_rows}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"--delimiter must be one character, got {self.delimiter!r}")


def convert(cfg: ConvertConfig, progress: bool = False, force: bool = False) -> dict:
    """Writes OUT/part-NNNNN.parquet (row groups of cfg.row_group_rows rows, string columns); returns rows, shards,
    columns, seconds and rows/s. ValueError for a CSV without rows, fewer rows than shards, missing schema columns,
    or an existing non-empty OUT without `force`; FileNotFoundError for a missing SRC."""
    import pyarrow as pa

    from scripts.data.output import Progress, ShardWriter, atomic_dir, check_out, shard_name, shard_ranges

    if not Path(cfg.src).is_file():
        raise FileNotFoundError(f"{cfg.src}: no such file")
    check_out(Path(cfg.out), force)
    delimiter = cfg.delimiter or _sniff_delimiter(cfg.src)
    names = list(cfg.column_names or _header(cfg.src, delimiter))
    if cfg.schema is not None:
        check_columns(names, cfg.schema, cfg.src)
    total = _count_rows(cfg, names, delimiter) if cfg.shards > 1 else None
    if total is not None and total < cfg.shards:
        raise ValueError(f"{cfg.src} has {total} rows, fewer than --shards {cfg.shards}")
    sizes = [b - a for a, b in shard_ranges(0, total, cfg.shards)] if total is not None else [math.inf]
    bar = Progress(total, progress, "convert")
    rows, writers = 0, {}
    with atomic_dir(Path(cfg.out), force) as tmp:
        try:
            for k, table in _row_groups(_open(cfg, names, delimiter), sizes, cfg.row_group_rows):
                if k not in writers:
                    if writers:
                        _close(writers[k - 1], bar)
                    writers[k] = ShardWriter(tmp / shard_name(k), table.schema, cfg.row_group_rows)
                writers[k].write(table)
                rows += table.num_rows
                bar.update(table.num_rows)
        except pa.ArrowInvalid as exc:  # a ragged row, bad UTF-8: name the file
            raise ValueError(f"{cfg.src}: {exc}") from None
        if rows == 0:
            raise ValueError(f"{cfg.src} has no rows")
        if total is not None and rows != total:
            raise RuntimeError(f"{cfg.src} changed while it was read ({total} rows counted, then {rows})")
        _close(writers[len(writers) - 1], bar)
        seconds = bar.close()
    return {
        "out": str(cfg.out),
        "rows": rows,
        "shards": len(writers),
        "columns": names,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
    }


def check_columns(names: list[str], schema_path: Path, src: Path) -> None:
    """ValueError naming every column the schema reads (fields' sources, the label column) that the CSV lacks."""
    from features.schema import Schema

    schema = Schema.load(schema_path)
    needed = list(schema.sources) + ([schema.label["column"]] if schema.label.get("column") else [])
    missing = [c for c in dict.fromkeys(needed) if c not in names]
    if missing:
        raise ValueError(
            f"{src} lacks the column(s) {', '.join(missing)} that {schema_path} reads (it has: {', '.join(names)})"
        )


def _row_groups(batches, sizes: list[float], row_group_rows: int) -> Iterator[tuple[int, object]]:
    """(shard index, table) of row_group_rows rows each, cut where a shard ends (shard k holds sizes[k] rows)."""
    import pyarrow as pa

    pending, pending_rows, shard, left = [], 0, 0, sizes[0]
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = int(min(batch.num_rows - offset, row_group_rows - pending_rows, left))
            pending.append(batch.slice(offset, take))
            pending_rows, left, offset = pending_rows + take, left - take, offset + take
            if pending_rows == row_group_rows or left == 0:
                yield shard, pa.Table.from_batches(pending)
                pending, pending_rows = [], 0
            if left == 0:
                shard += 1
                left = sizes[shard] if shard < len(sizes) else math.inf  # rows past the count: caught after
    if pending_rows:
        yield shard, pa.Table.from_batches(pending)


def _close(writer, bar) -> None:
    writer.close()
    bar.shard_done(writer.path.name, writer.rows)


def _open(cfg: ConvertConfig, names: list[str], delimiter: str, include: list[str] | None = None):
    """A streaming reader that types every column as a string, empty cells null."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    read = pcsv.ReadOptions(column_names=names, skip_rows=0 if cfg.column_names else 1, block_size=1 << 22)
    parse = pcsv.ParseOptions(delimiter=delimiter)
    types = {name: pa.string() for name in names}
    convert = pcsv.ConvertOptions(
        column_types=types, strings_can_be_null=True, null_values=[""], include_columns=include or names
    )
    return pcsv.open_csv(pa.input_stream(str(cfg.src), compression="detect"), read, parse, convert)


def _count_rows(cfg: ConvertConfig, names: list[str], delimiter: str) -> int:
    """The first pass: rows of the file (one column converted)."""
    import pyarrow as pa

    try:
        return sum(batch.num_rows for batch in _open(cfg, names, delimiter, include=names[:1]))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{cfg.src}: {exc}") from None


def _first_line(src: Path) -> str:
    import pyarrow as pa

    with pa.input_stream(str(src), compression="detect") as f:
        line = b""
        while not line.endswith(b"\n"):
            chunk = f.read(1 << 16)
            if not chunk:
                break
            line += chunk
            if b"\n" in chunk:
                line = line[: line.index(b"\n") + 1]
    return line.decode("utf-8-sig").rstrip("\r\n")


def _sniff_delimiter(src: Path) -> str:
    name = Path(src).name.lower()
    if name.endswith((".tsv", ".tsv.gz", ".tab")):
        return "\t"
    return "\t" if "\t" in _first_line(src) else ","


def _header(src: Path, delimiter: str) -> list[str]:
    line = _first_line(src)
    names = next(csv.reader([line], delimiter=delimiter), [])
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"{src}: the header {line[:200]!r} needs distinct, non-empty column names (or pass "
            "--column-names for a file without one)"
        )
    return names


# ---------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg data convert`."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("src", type=Path, help="a CSV or TSV file (.gz, .bz2, .zst are read as such), header first")
    p.add_argument("--out", type=Path, required=True, help="folder for part-NNNNN.parquet (made whole or not at all)")
    p.add_argument("--shards", type=int, default=1, help="Parquet files, contiguous (>1 reads the file twice)")
    p.add_argument("--row-group-rows", type=int, default=65_536, help="rows per Parquet row group")
    p.add_argument("--schema", type=Path, help="check the file has every column this schema reads (sources, label)")
    p.add_argument("--delimiter", help="default: a tab for .tsv or a header with a tab, else a comma")
    p.add_argument("--column-names", help="comma-separated names, for a file without a header (Criteo's TSV)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress")


def run_from_args(args) -> int:
    """`apg data convert`: ValueError (exit 2) for bad options or input, FileNotFoundError for a missing SRC."""
    names = tuple(n.strip() for n in args.column_names.split(",")) if args.column_names else None
    delimiter = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
    cfg = ConvertConfig(args.src, args.out, args.shards, args.row_group_rows, args.schema, delimiter, names)
    s = convert(cfg, progress=not args.quiet, force=args.force)
    print(
        f"wrote {s['rows']} rows x {len(s['columns'])} columns to {s['out']} in {s['shards']} shard(s), "
        f"{s['seconds']:.1f} s ({s['rows_per_s']:,.0f} rows/s)"
    )
    return 0
