"""The item store, the same tests against each backend (file snapshot, real redis-server): a lookup gives exactly what
the bundle's encoder gives the item's raw features; misses; another contract never read; atomic publish; idempotent
re-runs; duplicate ids refused. Redis faults: tests/items/test_items_redis.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from items_testing import ITEM_SOURCES, ITEMS, make_schema, make_table, write_csv

from features import LENIENT, STRICT, Encoder
from scripts.items.sync import sync
from service.items import ItemStoreMismatch, open_store, propose_item_sources

ITEM_FIELDS = ("item_id", "title", "release_year", "genres", "item_pop")


def expected(ids: list[str], table: dict[str, list], policy: str = LENIENT) -> dict[str, np.ndarray]:
    """The item fields of `ids` as a request carrying their raw features would have them encoded (encode_rows:
    another entry point than the sync's encode_field); an unknown id has no features."""
    at = {item: i for i, item in enumerate(table["item_id"])}
    rows = [{s: table[s][at[i]] for s in ITEM_SOURCES} if i in at else {} for i in ids]
    encoded = Encoder(make_schema(), policy).encode_rows([{"user_id": "u1", **r} for r in rows])
    return {name: encoded[name] for name in ITEM_FIELDS}


def assert_columns(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, column in want.items():
        assert got[name].dtype == np.int64 and got[name].shape == column.shape, name
        np.testing.assert_array_equal(got[name], column, err_msg=name)


@pytest.mark.parametrize("n", [1, 100, 1_000])
def test_lookup_equals_the_encoder(store_url, schema_path, catalogue, n):
    summary = sync(schema_path, catalogue, store_url)
    assert (summary["items"], summary["fields"], summary["status"]) == (ITEMS, list(ITEM_FIELDS), "published")
    ids = [f"i{i}" for i in np.random.default_rng(n).integers(0, ITEMS, size=n)]  # repeats, OOV ids and bad years
    store = open_store(store_url, make_schema().digest())
    columns, found = store.lookup(ids)
    assert found.all() and found.shape == (n,)
    assert_columns(columns, expected(ids, make_table()))
    assert store.describe()["items"] == ITEMS and store.describe()["checksum"] == make_schema().digest()
    store.close()


def test_clean_rows_match_the_strict_encoder_of_requests(store_url, schema_path, catalogue):
    sync(schema_path, catalogue, store_url)
    ids = [f"i{i}" for i in range(1, 50) if i % 50]  # no "n/a" year: what a client could send as is
    columns, _ = open_store(store_url, make_schema().digest()).lookup(ids)
    assert_columns(columns, expected(ids, make_table(), STRICT))


def test_misses_score_as_items_with_every_feature_missing(store_url, schema_path, catalogue):
    sync(schema_path, catalogue, store_url)
    store = open_store(store_url, make_schema().digest())
    ids = ["i3", "nope", " i4 ", "", None, 7, "i1499"]
    columns, found = store.lookup(ids)
    assert found.tolist() == [True, False, True, False, False, False, True]
    assert_columns(columns, expected(["i3", "?", "i4", "?", "?", "?", "i1499"], make_table()))
    for column in columns.values():
        assert not column[~found].any()  # MISSING (0) everywhere, padding included
    empty, none = store.lookup([])
    assert none.shape == (0,) and empty["genres"].shape == (0, 4)


def test_a_store_of_another_contract_is_never_read(store_url, schema_path, catalogue, tmp_path):
    sync(schema_path, catalogue, store_url)
    other = make_schema(extra_genre="Western").digest()
    with pytest.raises(ItemStoreMismatch, match=r"no rows for contract .*apg items sync --bundle bundles/b2") as e:
        open_store(store_url, other, bundle="bundles/b2")
    assert e.value.status == 503 and e.value.code == "item_store_mismatch"
    if store_url.startswith("file://"):  # a version copied under the other checksum: its manifest says whose it is
        root = Path(store_url.removeprefix("file://"))
        (root / make_schema().digest()).rename(root / other)
        with pytest.raises(ItemStoreMismatch, match="apg items sync"):
            open_store(store_url, other)


def test_publish_is_atomic_a_reader_keeps_its_version_until_it_refreshes(store_url, schema_path, catalogue, tmp_path):
    contract = make_schema().digest()
    v1 = sync(schema_path, catalogue, store_url)["version"]
    reader = open_store(store_url, contract)
    changed = write_csv(tmp_path / "items2.csv", make_table(changed=True))
    v2 = sync(schema_path, changed, store_url)["version"]
    assert v2 != v1
    ids = ["i7", f"i{ITEMS}"]  # changed, and new in v2
    columns, found = reader.lookup(ids)
    assert reader.version == v1 and found.tolist() == [True, False]
    assert_columns(columns, expected(ids, make_table()))
    fresh = open_store(store_url, contract)
    columns, found = fresh.lookup(ids)
    assert fresh.version == v2 and found.all()
    assert_columns(columns, expected(ids, make_table(changed=True)))
    assert reader.refresh() and reader.version == v2 and not reader.refresh()
    assert_columns(reader.lookup(ids)[0], expected(ids, make_table(changed=True)))


def test_a_file_reader_keeps_its_mapped_version_after_it_is_retired(schema_path, catalogue, tmp_path):
    url, contract = f"file://{tmp_path}/store", make_schema().digest()
    sync(schema_path, catalogue, url)
    reader = open_store(url, contract)
    for k in (1, 2):  # two newer versions: keep=2 deletes the first one's folder
        table = make_table()
        table["title"][0] = f"Renamed {k}"
        sync(schema_path, write_csv(tmp_path / f"items-{k}.csv", table), url, keep=2)
    assert len([p for p in (tmp_path / "store" / contract).iterdir() if not p.name.startswith(".")]) == 3  # + CURRENT
    assert_columns(reader.lookup(["i0", "i9"])[0], expected(["i0", "i9"], make_table()))


def test_versions_beyond_keep_are_deleted(store_url, schema_path, tmp_path):
    versions = []
    for k in range(3):
        table = make_table(items=30)
        table["title"][0] = f"Renamed {k}"
        versions.append(sync(schema_path, write_csv(tmp_path / f"items-{k}.csv", table), store_url, keep=2)["version"])
    assert sorted(_versions(store_url)) == sorted(versions[1:])
    assert open_store(store_url, make_schema().digest()).version == versions[2]


def _versions(url: str) -> list[str]:
    """The versions with rows in the store."""
    if url.startswith("file://"):
        return [p.parent.name for p in Path(url.removeprefix("file://")).glob("*/*/manifest.json")]
    import redis

    with redis.Redis.from_url(url) as client:
        keys = [k.decode() for k in client.scan_iter(match="apg:items:*", count=1_000)]
    return list({k.split(":")[3] for k in keys if k.count(":") >= 4})


def test_a_rerun_over_the_same_catalogue_writes_nothing(store_url, schema_path, catalogue, tmp_path):
    first = sync(schema_path, catalogue, store_url)
    snapshot = _contents(store_url)
    again = sync(schema_path, catalogue, store_url)
    assert (again["status"], again["version"], again["bytes"]) == ("unchanged", first["version"], first["bytes"])
    assert _contents(store_url) == snapshot
    other = sync(schema_path, write_csv(tmp_path / "items2.csv", make_table(changed=True)), store_url)
    back = sync(schema_path, catalogue, store_url)  # the first version is still kept: pointed at again
    assert other["status"] == "published" and (back["status"], back["version"]) == ("republished", first["version"])
    assert open_store(store_url, make_schema().digest()).version == first["version"]


def _contents(url: str) -> dict:
    if url.startswith("file://"):
        root = Path(url.removeprefix("file://"))
        return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}
    import redis

    with redis.Redis.from_url(url) as client:
        return {key: client.dump(key) for key in client.scan_iter(count=1_000)}


def test_duplicate_ids_are_refused_naming_the_id(store_url, schema_path, tmp_path):
    table = make_table(items=20)
    table["item_id"][12] = " i5 "  # the same id as row 6, by rule 1
    with pytest.raises(ValueError, match=r"duplicate item id 'i5' \(rows 6 and 13\)"):
        sync(schema_path, write_csv(tmp_path / "dup.csv", table), store_url)
    table["item_id"][12] = ""
    with pytest.raises(ValueError, match="row 13 has no id"):
        sync(schema_path, write_csv(tmp_path / "noid.csv", table), store_url)
    with pytest.raises(ItemStoreMismatch):  # nothing was published
        open_store(store_url, make_schema().digest())


def test_a_parquet_catalogue_keeps_its_types(store_url, schema_path, tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    table = {"item_id": [3, 4, 1400], "release_year": [1995, None, 2001], "genres": [["War", "Drama"], [], None]}
    pq.write_table(pa.table(table), tmp_path / "items.parquet")
    summary = sync(schema_path, tmp_path / "items.parquet", store_url)
    assert summary["fields"] == ["item_id", "release_year", "genres", "item_pop"]
    columns, found = open_store(store_url, make_schema().digest()).lookup(["3", 4, "1400", "i3"])
    assert found.tolist() == [True, True, True, False]
    rows = [{"user_id": "u1", **{k: v[i] for k, v in table.items()}} for i in range(3)]
    want = Encoder(make_schema()).encode_rows(rows)  # the strict encoder of requests: ints and lists as sent
    for name in ("item_id", "release_year", "genres", "item_pop"):
        np.testing.assert_array_equal(columns[name][:3], want[name], err_msg=name)


def test_catalogue_errors_name_the_column_or_feature(schema_path, catalogue, tmp_path):
    url = f"file://{tmp_path}/store"
    with pytest.raises(ValueError, match="no id column 'movie_id'"):
        sync(schema_path, catalogue, url, id_column="movie_id")
    with pytest.raises(ValueError, match=r"item features \['rating'\] are not features"):
        sync(schema_path, catalogue, url, sources=["item_id", "rating"])
    with pytest.raises(ValueError, match=r"\['user_id'\] are not catalogue columns"):
        sync(schema_path, catalogue, url, sources=["item_id", "user_id"])


def test_item_features_default_to_the_schemas_features_in_the_catalogue():
    proposed = propose_item_sources(make_schema(), ["item_id", "title", "genres", "rating"])
    assert proposed == ("item_id", "title", "genres")


def test_sync_from_a_bundle_through_the_command(tmp_path, capsys):
    pytest.importorskip("onnx")
    import argparse

    from synthetic_bundle import build_bundle

    from scripts.items import sync as command

    bundle = build_bundle(tmp_path / "bundle")
    items = write_csv(tmp_path / "items.csv", {"item_id": ["242", "302", "999"], "genres": ["Comedy", None, "War"]})
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    url = f"file://{tmp_path}/store"
    assert (
        command.run_from_args(
            parser.parse_args(["--bundle", str(bundle.path), "--items", str(items), "--store", url, "--quiet"])
        )
        == 0
    )
    assert "items sync: 3 items, fields item_id, genres" in capsys.readouterr().out
    manifest = json.loads(next((tmp_path / "store").glob("*/*/manifest.json")).read_text())
    assert manifest["model"] == "synthetic-apg" and manifest["sources"] == ["item_id", "genres"]


def test_the_reader_and_the_sync_import_neither_torch_nor_the_service_framework():
    code = "import sys, service.items, scripts.items.sync; print(*sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(done.stdout.split())
    assert not modules & {"torch", "model", "onnxruntime", "fastapi", "redis"}
