"""`apg data convert`: a CSV streamed into Parquet shards, every column a string, empty cells null."""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scripts.data import convert as command
from scripts.data.convert import ConvertConfig, convert

CSV = 'zip,user,rating,label\n02139,u1,5,1\n,u2,,0\n00501,"a,b",3.5,1\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def shards(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


def test_round_trip_keeps_leading_zeros_and_reads_empty_cells_as_null(tmp_path):
    src = write(tmp_path / "log.csv", CSV)
    s = convert(ConvertConfig(src, tmp_path / "out"))
    assert s["rows"] == 3 and s["shards"] == 1 and s["columns"] == ["zip", "user", "rating", "label"]
    table = pq.read_table(shards(tmp_path / "out")[0])
    assert all(f.type == pa.string() for f in table.schema)
    assert table.to_pylist() == [
        {"zip": "02139", "user": "u1", "rating": "5", "label": "1"},
        {"zip": None, "user": "u2", "rating": None, "label": "0"},
        {"zip": "00501", "user": "a,b", "rating": "3.5", "label": "1"},
    ]


def test_contiguous_shards_and_row_groups(tmp_path):
    rows = [f"{i:05d},{i % 7}" for i in range(23)]
    src = write(tmp_path / "log.csv", "id,g\n" + "\n".join(rows) + "\n")
    convert(ConvertConfig(src, tmp_path / "out", shards=3, row_group_rows=4))
    files = shards(tmp_path / "out")
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    groups = [[m.row_group(i).num_rows for i in range(m.num_row_groups)] for m in (pq.read_metadata(f) for f in files)]
    assert groups == [[4, 3], [4, 4], [4, 4]]  # 7, 8, 8 rows: row groups of 4, cut where a shard ends
    ids = [v for f in files for v in pq.read_table(f)["id"].to_pylist()]
    assert ids == [f"{i:05d}" for i in range(23)]  # time order kept across shards


def test_tsv_gzip_and_a_file_without_header(tmp_path):
    src = tmp_path / "day_0.tsv.gz"
    with gzip.open(src, "wt") as f:
        f.write("1\t007\t\n0\t\tab\n")
    convert(ConvertConfig(src, tmp_path / "out", column_names=("label", "I1", "C1")))
    table = pq.read_table(shards(tmp_path / "out")[0])
    assert table.to_pydict() == {"label": ["1", "0"], "I1": ["007", None], "C1": [None, "ab"]}


def test_schema_check_names_the_missing_columns(tmp_path):
    src = write(tmp_path / "log.csv", CSV)
    schema = write(
        tmp_path / "schema.json",
        '{"name": "s", "label": {"column": "clicked", "threshold": 1}, "fields":'
        ' [{"name": "zip", "kind": "categorical"}, {"name": "item", "kind": "categorical"},'
        ' {"name": "zip2", "kind": "categorical", "source": "zip", "prefix": 2}]}',
    )
    with pytest.raises(ValueError, match="lacks the column.s. item, clicked"):
        convert(ConvertConfig(src, tmp_path / "out", schema=schema))
    assert not (tmp_path / "out").exists()
    ok = write(
        tmp_path / "ok.json",
        '{"name": "s", "label": {"column": "label", "threshold": 1}, "fields":'
        ' [{"name": "zip", "kind": "categorical"}]}',
    )
    assert convert(ConvertConfig(src, tmp_path / "out", schema=ok))["rows"] == 3


@pytest.mark.parametrize(
    ("text", "kwargs", "error", "message"),
    [
        (CSV, {"shards": 0}, ValueError, "--shards"),
        (CSV, {"row_group_rows": 0}, ValueError, "--row-group-rows"),
        (CSV, {"shards": 4}, ValueError, "fewer than --shards"),
        ("a,b\n", {}, ValueError, "no rows"),
        ("a,b\n1,2\n3\n", {}, ValueError, "log.csv: CSV parse error"),
        ("a,a\n1,2\n", {}, ValueError, "distinct"),
    ],
)
def test_bad_input_raises_and_leaves_no_out(tmp_path, text, kwargs, error, message):
    src = write(tmp_path / "log.csv", text)
    with pytest.raises(error, match=message):
        convert(ConvertConfig(src, tmp_path / "out", **kwargs))
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_missing_source_and_existing_out(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert(ConvertConfig(tmp_path / "nope.csv", tmp_path / "out"))
    src = write(tmp_path / "log.csv", CSV)
    (tmp_path / "out").mkdir()
    write(tmp_path / "out" / "x", "")
    with pytest.raises(ValueError, match="not empty"):
        convert(ConvertConfig(src, tmp_path / "out"))
    convert(ConvertConfig(src, tmp_path / "out"), force=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part-00000.parquet"]


def test_command_line(tmp_path, capsys):
    src = write(tmp_path / "log.csv", CSV)
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    args = p.parse_args([str(src), "--out", str(tmp_path / "out"), "--shards", "2", "--quiet"])
    assert command.run_from_args(args) == 0
    assert "wrote 3 rows x 4 columns" in capsys.readouterr().out
    assert len(shards(tmp_path / "out")) == 2
