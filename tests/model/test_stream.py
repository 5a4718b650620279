"""The streamed train split: every row exactly once per epoch across ranks and workers, a bounded shuffle, exact
resume positions, and batch counts known from the footers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("torch")

from log_testing import SPEC, write_log

from features import Field
from features.rules import hash_index
from model.shards import fit_log, open_log
from model.stream import StreamConfig, TrainStream

# 3 uneven files, 8 row groups in all: fewer files than the 2 ranks x 3 workers = 6 slots
SHARDS = {"train": [(700, 200), (333, 333), (90, 30)], "valid": [(100, 100)], "test": [(100, 100)]}
ROW_ID = Field("row_id", "categorical", hash_buckets=2**40)  # index = 2 + hash(row id): names each row


@pytest.fixture(scope="module")
def log_and_schema(tmp_path_factory):
    spec = SPEC.with_fields([*SPEC.fields, ROW_ID])
    log = open_log(str(write_log(tmp_path_factory.mktemp("log"), SHARDS)), spec)
    return log, fit_log(log, spec)


def row_ids(batches) -> list[int]:
    return [int(i) for x, _, _ in batches for i in np.asarray(x["row_id"])]


def epoch(log, schema, cfg, world, workers, n=1, skip=None):
    out = []
    for rank in range(world):
        stream = TrainStream(log, schema, cfg, rank, world)
        out.append(list(stream.loader(n, workers, (skip or {}).get(rank, {}))))
    return out


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (1, 2), (2, 3), (3, 1)])
def test_every_row_exactly_once_per_epoch(log_and_schema, world, workers):
    log, schema = log_and_schema
    cfg = StreamConfig(batch_size=64, seed=3, window_rows=250)
    per_rank = epoch(log, schema, cfg, world, workers)
    seen = Counter(i for batches in per_rank for i in row_ids(batches))
    expected = {hash_index(str(r), 2**40) for r in range(1123)}
    assert set(seen) == expected and set(seen.values()) == {1}
    for rank, batches in enumerate(per_rank):  # the footers say how many batches each rank makes
        assert len(batches) == TrainStream(log, schema, cfg, rank, world).planned_batches(1, max(workers, 1))


def test_epochs_reshuffle_and_seeds_repeat(log_and_schema):
    log, schema = log_and_schema
    cfg = StreamConfig(batch_size=64, seed=3, window_rows=250)
    first, again = (row_ids(epoch(log, schema, cfg, 1, 0, n=1)[0]) for _ in range(2))
    second = row_ids(epoch(log, schema, cfg, 1, 0, n=2)[0])
    assert first == again and first != second and sorted(first) == sorted(second)


def test_the_shuffle_buffer_mixes_row_groups(log_and_schema):
    log, schema = log_and_schema
    cfg = StreamConfig(batch_size=1000, seed=0, window_rows=10_000)  # one window: the whole split
    (x, _, _), *_ = epoch(log, schema, cfg, 1, 0)[0]
    order = {hash_index(str(r), 2**40): r for r in range(1123)}
    ids = [order[int(i)] for i in x["row_id"]]
    assert len({r // 200 for r in ids[:50]}) > 3  # the first rows come from several row groups


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 2)])
def test_a_resumed_epoch_delivers_exactly_the_rest(log_and_schema, world, workers):
    log, schema = log_and_schema
    cfg = StreamConfig(batch_size=32, seed=1, window_rows=150, missing_rate=0.3, droppable=("item", "tags"))
    full = epoch(log, schema, cfg, world, workers, n=2)
    skip = {}
    for rank, batches in enumerate(full):
        skip[rank] = dict(Counter(w for _, _, w in batches[:7]))  # the positions after 7 steps
    rest = epoch(log, schema, cfg, world, workers, n=2, skip=skip)
    for rank in range(world):
        tail = sorted(full[rank][7:], key=lambda b: int(b[2]))  # per worker, in order
        resumed = sorted(rest[rank], key=lambda b: int(b[2]))
        assert len(tail) == len(resumed)
        for (x1, y1, _), (x2, y2, _) in zip(tail, resumed, strict=True):
            assert all(np.array_equal(x1[k], x2[k]) for k in x1) and np.array_equal(y1, y2)


def test_batch_norm_never_gets_a_one_row_batch(log_and_schema):
    log, schema = log_and_schema
    cfg = StreamConfig(batch_size=29, seed=0, window_rows=1, min_batch=2)  # windows of one row group each
    sizes = [len(y) for _, y, _ in epoch(log, schema, cfg, 1, 0)[0]]
    assert min(sizes) >= 2 and sum(sizes) < 1123  # 333 = 11 x 29 + 14 keeps its 14; 30 = 29 + 1 drops the 1
