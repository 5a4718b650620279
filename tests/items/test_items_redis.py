"""The Redis item store under faults, against a real redis-server of each test's own: down or stalled, a lookup is
ItemStoreUnavailable within its timeout (never a hang), a failed call leaves nothing behind, and the store reconnects
by itself once Redis is back. Plus the real data: MovieLens-100K's catalogue through a schema fitted on its ratings."""

from __future__ import annotations

import time

import numpy as np
import pytest
from items_testing import ITEMS, make_schema, make_table

from features import LENIENT, Encoder
from scripts.items.sync import encode_catalogue, sync
from service.items import ItemStoreUnavailable, open_store

pytestmark = pytest.mark.slow  # starts redis-server
TIMEOUT_S = 1.0
BOUND_S = 1.9  # one timeout and a loaded machine's scheduling; a retry after a timeout would take two


def timed_failure(store, ids) -> float:
    start = time.monotonic()
    with pytest.raises(ItemStoreUnavailable, match="MGET failed") as e:
        store.lookup(ids)
    assert e.value.status == 503 and e.value.headers == {"Retry-After": "1"}
    assert "@" not in e.value.message
    return time.monotonic() - start


def test_a_stalled_redis_is_unavailable_within_the_timeout_and_leaves_no_stale_reply(
    redis_process, schema_path, catalogue
):
    sync(schema_path, catalogue, redis_process.url)
    store = open_store(redis_process.url, make_schema().digest(), timeout_s=TIMEOUT_S)
    good, _ = store.lookup(["i1", "i2"])
    redis_process.pause()  # accepts nothing, answers nothing: a timeout, not a refusal
    try:
        assert timed_failure(store, ["i3", "i4"]) < BOUND_S
    finally:
        redis_process.resume()
    columns, found = store.lookup(["i1", "i2"])  # the answer to these ids, not the late one to ["i3", "i4"]
    assert found.all()
    for name, column in good.items():
        np.testing.assert_array_equal(columns[name], column)
    store.close()


def test_redis_down_is_unavailable_then_the_store_reconnects_by_itself(redis_process, schema_path, catalogue):
    sync(schema_path, catalogue, redis_process.url)
    store = open_store(redis_process.url, make_schema().digest(), timeout_s=TIMEOUT_S)
    before, _ = store.lookup(["i10", "i11"])
    redis_process.stop()
    assert timed_failure(store, ["i10"]) < BOUND_S
    assert timed_failure(store, ["i10"]) < BOUND_S  # and again: nothing blocks
    start = time.monotonic()
    with pytest.raises(ItemStoreUnavailable, match="GET failed"):  # opening one while it is down
        open_store(redis_process.url, make_schema().digest(), timeout_s=TIMEOUT_S)
    assert time.monotonic() - start < BOUND_S
    redis_process.start()  # the same port, empty (no persistence): the sync publishes again
    assert sync(schema_path, catalogue, redis_process.url)["status"] == "published"
    for restart in (False, True):  # then a restart between two calls: the pooled connection is dead, not the call
        if restart:
            redis_process.stop()
            redis_process.start()
            sync(schema_path, catalogue, redis_process.url)
        columns, found = store.lookup(["i10", "i11"])  # the same object, no reopen
        assert found.all()
        for name, column in before.items():
            np.testing.assert_array_equal(columns[name], column)
    store.close()


def test_a_value_of_the_wrong_size_is_unavailable_not_garbage(redis_process, schema_path, catalogue):
    import redis

    sync(schema_path, catalogue, redis_process.url)
    store = open_store(redis_process.url, make_schema().digest())
    key = f"apg:items:{{{store.contract}}}:{store.version}:i5"
    with redis.Redis.from_url(redis_process.url) as client:
        client.set(key, b"\x01\x02\x03")
    with pytest.raises(ItemStoreUnavailable, match="item 'i5' has a value of the wrong size"):
        store.lookup(["i4", "i5"])
    assert store.lookup(["i4"])[1].all()
    store.close()


def test_the_redis_value_is_the_documented_layout(redis_process, schema_path, catalogue):
    import redis

    sync(schema_path, catalogue, redis_process.url)
    store = open_store(redis_process.url, make_schema().digest())
    info = store.describe()
    assert info["backend"] == "redis" and info["items"] == ITEMS
    assert (info["value_dtype"], info["value_bytes"]) == ("<i2", 2 * 8)  # item_id, title, year, genres ×4, item_pop
    with redis.Redis.from_url(redis_process.url) as client:
        raw = client.get(f"apg:items:{{{store.contract}}}:{store.version}:i7")
    want = encode_catalogue(make_schema(), {k: v[7:8] for k, v in make_table().items()})
    row = np.concatenate([want.columns[f.name].reshape(-1) for f in want.fields])
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<i2"), row)
    store.close()


def test_movielens_catalogue_rows_equal_the_training_encoding(redis_process, tmp_path):
    """Real data: ML-100K's item file as `apg items sync` reads it gives, item for item, the int64 values the
    training table (ratings joined with items) was encoded to."""
    from model.data import load_dataset
    from scripts.items.catalogue import write_catalogue

    data = load_dataset("ml-100k", limit=5_000, seed=0)
    schema_path = tmp_path / "schema.json"
    data.schema.save(schema_path)
    items = tmp_path / "items.csv"
    assert write_catalogue("ml-100k", items) == 1_682
    summary = sync(schema_path, items, redis_process.url)
    assert summary["fields"] == ["item_id", "release_year", "genres"]
    store = open_store(redis_process.url, data.schema.digest())
    rows = np.arange(0, 5_000, 7)
    columns, found = store.lookup([data.table["item_id"][r] for r in rows])
    assert found.all()
    train = Encoder(data.schema, LENIENT).encode_columns({s: [data.table[s][r] for r in rows] for s in data.table})
    for name in summary["fields"]:
        np.testing.assert_array_equal(columns[name], train[name], err_msg=name)
        np.testing.assert_array_equal(columns[name], data.x[name][rows], err_msg=name)
    store.close()
