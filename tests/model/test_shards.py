"""A log of Parquet shards: footers checked up front, the streamed fit, and Arrow encoding equal to the encoder's."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from log_testing import SPEC, rows, write_log

from features import LENIENT, Encoder
from model.data import DataError, fit_schema
from model.data import encode_table as encode_columns
from model.shards import encode_table, fit_log, is_log, open_log, read_split, split_of

UNEVEN = {"train": [(1000, 300), (500, 500), (77, 40)], "valid": [(300, 100)], "test": [(200, 128)]}


@pytest.fixture
def log_dir(tmp_path):
    return write_log(tmp_path / "log", UNEVEN)


def test_units_are_row_groups_of_each_split(log_dir):
    log = open_log(str(log_dir), SPEC)
    assert [len(log.splits[s]) for s in ("train", "valid", "test")] == [4 + 1 + 2, 3, 2]
    assert log.rows("train") == 1577 and log.rows("valid") == 300
    assert "row_id" not in log.columns  # only what the schema reads is read


def test_streamed_fit_equals_the_in_memory_fit(log_dir):
    log = open_log(str(log_dir), SPEC)
    table = read_split_table(log, "train")
    in_memory = fit_schema(SPEC, table, np.arange(len(table["click"])))
    assert fit_log(log, SPEC) == in_memory
    assert in_memory.field("user").vocab is None and in_memory.field("user").cardinality == 2 + 64


def read_split_table(log, split):
    return pa.concat_tables(log.read(u) for u in log.splits[split]).to_pydict()


@pytest.mark.parametrize("dictionary", [True, False])
def test_arrow_encoding_equals_the_encoder(dictionary):
    schema = fit_schema(SPEC, rows(500, 1).to_pydict(), np.arange(500))
    table = rows(400, 2)
    if not dictionary:
        table = table.set_column(1, "user", table.column("user").cast(pa.string()))
    table = table.append_column("ignored", pa.array(range(400)))
    encoder = Encoder(schema, LENIENT)
    got = encode_table(encoder, table)
    want = encoder.encode_columns(table.to_pydict())
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(got["user"], encode_columns(schema, table.to_pydict())["user"])


def test_numbers_of_every_arrow_type_bucket_alike():
    schema = fit_schema(SPEC, rows(50, 1).to_pydict(), np.arange(50))
    encoder = Encoder(schema, LENIENT)
    values = [0.5, 1.0, 5, None, 250.0, float("inf"), float("nan")]
    for column in (pa.array(values, pa.float64()), pa.array(values, pa.float32()), pa.array([1, 10, None, 1000])):
        table = pa.table({"price": column})
        want = encoder.encode_columns({"price": column.to_pylist()})["price"]
        np.testing.assert_array_equal(encode_table(encoder, table)["price"], want)
    strings = pa.table({"price": pa.array([" 2.5", "x", None, "1e3"])})  # strings: through the rule, row by row
    np.testing.assert_array_equal(encode_table(encoder, strings)["price"], [2, 0, 0, 4])


def test_a_column_typed_null_in_one_shard_reads_as_missing(log_dir):
    part = log_dir / "train" / "part-00002.parquet"
    table = pq.read_table(part)
    pq.write_table(table.set_column(3, "tags", pa.nulls(table.num_rows)), part)  # all null: Arrow types it null
    log = open_log(str(log_dir), SPEC)
    schema = fit_log(log, SPEC)
    unit = next(u for u in log.splits["train"] if u.path == str(part))
    tags = encode_table(Encoder(schema, LENIENT), log.read(unit))["tags"]
    assert tags.shape == (unit.rows, 3) and not tags.any()


def test_in_memory_read_of_a_log_keeps_every_row(log_dir):
    log = open_log(str(log_dir), SPEC)
    block = read_split(log, "train", fit_log(log, SPEC))
    assert len(block.y) == 1577 and set(np.unique(block.y)) <= {0.0, 1.0}


def test_without_split_folders_row_groups_split_by_a_fixed_hash(tmp_path):
    for k in range(3):
        pq.write_table(rows(2000, k), tmp_path / f"p{k}.parquet", row_group_size=50)
    log = open_log(str(tmp_path), SPEC)
    assert {u.path for s in log.splits.values() for u in s} == {str(tmp_path / f"p{k}.parquet") for k in range(3)}
    assert all(log.splits[s] for s in ("valid", "test"))
    shares = Counter(split_of(f"part-{k}.parquet", g) for k in range(100) for g in range(100))
    assert 900 < shares["valid"] < 1100 and 900 < shares["test"] < 1100  # 1 in 10 each, of 10,000 row groups
    assert split_of("p0.parquet", 3) == split_of(str(tmp_path / "p0.parquet"), 3)  # the file's name, not its folder
    assert open_log(str(tmp_path / "*.parquet"), SPEC).splits == log.splits and is_log(str(tmp_path / "*.parquet"))


def _break(root, how):
    part = root / "train" / "part-00001.parquet"
    table = pq.read_table(part)
    if how == "missing column":
        pq.write_table(table.drop_columns(["tags"]), part)
    elif how == "extra column":
        pq.write_table(table.append_column("extra", pa.array(range(table.num_rows))), part)
    elif how == "wrong type":
        pq.write_table(table.set_column(4, "price", table.column("price").cast(pa.string())), part)
    elif how == "corrupt file":
        part.write_bytes(part.read_bytes()[:100])
    elif how == "empty shard":
        pq.write_table(table.slice(0, 0), part)
    return part


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing column", "part-00001.parquet: no column 'tags'"),
        ("extra column", "part-00001.parquet: extra column 'extra'"),
        ("wrong type", "part-00001.parquet: column 'price' has type string, the first shard's is double"),
        ("corrupt file", "part-00001.parquet: not a readable Parquet file"),
        ("empty shard", "part-00001.parquet: an empty shard"),
    ],
)
def test_a_bad_shard_is_named(log_dir, how, message):
    _break(log_dir, how)
    with pytest.raises(DataError, match=message):
        open_log(str(log_dir), SPEC)


def test_a_column_no_shard_has_is_named(log_dir):
    spec = SPEC.with_fields([*SPEC.fields, SPEC.field("item").__class__("city", "categorical")])
    with pytest.raises(DataError, match="part-00000.parquet: no column 'city', which the schema reads"):
        open_log(str(log_dir), spec)


def test_a_bad_row_group_is_named_by_the_fit(log_dir):
    part = log_dir / "valid" / "part-00000.parquet"
    table = pq.read_table(part)
    clicks = pa.array([None] + table.column("click").to_pylist()[1:], pa.int8())
    pq.write_table(table.set_column(5, "click", clicks), part, row_group_size=100)
    with pytest.raises(DataError, match=r"valid/part-00000.parquet, row group 0: column 'click' \(the label\) has 1"):
        fit_log(open_log(str(log_dir), SPEC), SPEC)
