"""Streaming a Parquet log (model/shards.py) into training batches, sharded by (rank, dataloader worker).

    stream = TrainStream(log, schema, StreamConfig(batch_size=1024, seed=0), rank=0, world=2)
    for x, y, worker in stream.loader(epoch=1, workers=1, skip={}):   # this rank's share of epoch 1
        ...
    scores = score_split(model, log, schema, "valid", rank, world)      # keys, p, y, users of this rank's share

Each epoch permutes the train split's row groups with (seed, epoch) — the same on every rank — and deals them to
the world × workers slots round-robin, so in one epoch every row is read exactly once across ranks and workers,
whatever the shard sizes (a slot may get none: DDP's join() covers ranks that run out first). A slot reads its
row groups in windows of at least ``window_rows`` rows and shuffles each window's rows (the bounded shuffle
buffer). A window, its order and its feature dropout are a pure function of (seed, epoch, slot, window index), and
how many batches it makes is known from the footers, so a data position is the count of batches each worker of a
rank has delivered: resuming skips whole windows unread and re-reads only the one the position falls in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from features import LENIENT, Encoder, Schema
from model.shards import Block, Log, Unit, read_block


@dataclass(frozen=True)
class StreamConfig:
    batch_size: int = 1024
    seed: int = 0
    window_rows: int = 131_072  # the shuffle buffer: rows read (and permuted) together
    min_batch: int = 1  # 2 with BatchNorm: a one-row batch is never made
    missing_rate: float = 0.0  # feature dropout (TrainConfig.missing_rate)
    droppable: tuple[str, ...] = ()  # the fields it blanks


def windows(units: list[Unit], window_rows: int) -> list[list[Unit]]:
    """Consecutive units grouped until each group holds at least window_rows rows (the last may hold fewer)."""
    out, rows = [[]], 0
    for u in units:
        if rows >= window_rows:
            out.append([])
            rows = 0
        out[-1].append(u)
        rows += u.rows
    return [w for w in out if w]


def batch_count(rows: int, cfg: StreamConfig) -> int:
    return rows // cfg.batch_size + (1 if rows % cfg.batch_size >= cfg.min_batch else 0)


class TrainStream(IterableDataset):
    """One rank's share of the train split, one epoch per ``loader()``; yields (x, y, worker) numpy batches."""

    def __init__(self, log: Log, schema: Schema, cfg: StreamConfig, rank: int = 0, world: int = 1) -> None:
        self.log, self.schema, self.cfg, self.rank, self.world = log, schema, cfg, rank, world
        self.epoch, self.workers, self.skip = 1, 1, {}

    def slot_units(self, epoch: int, worker: int, workers: int) -> list[Unit]:
        units = self.log.splits["train"]
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(units))
        slot, slots = self.rank * workers + worker, self.world * workers
        return [units[i] for i in order[slot::slots]]

    def planned_batches(self, epoch: int, workers: int) -> int:
        """Batches this rank delivers in an epoch, from the footers alone."""
        return sum(
            batch_count(sum(u.rows for u in w), self.cfg)
            for k in range(workers)
            for w in windows(self.slot_units(epoch, k, workers), self.cfg.window_rows)
        )

    def loader(self, epoch: int, workers: int, skip: dict[int, int]) -> DataLoader:
        """The batches of ``epoch``; ``skip[k]``: batches worker k already delivered (a resumed epoch)."""
        self.epoch, self.workers, self.skip = epoch, max(workers, 1), dict(skip)
        return DataLoader(
            self, batch_size=None, num_workers=workers, worker_init_fn=_one_thread, persistent_workers=False
        )

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, int]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        encoder = Encoder(self.schema, LENIENT)
        skip = self.skip.get(worker, 0)
        for w, window in enumerate(windows(self.slot_units(self.epoch, worker, self.workers), self.cfg.window_rows)):
            count = batch_count(sum(u.rows for u in window), self.cfg)
            if skip >= count:
                skip -= count
                continue
            block = self._shuffled(window, encoder, worker, w)
            for b in range(skip, count):
                rows = slice(b * self.cfg.batch_size, (b + 1) * self.cfg.batch_size)
                yield {k: v[rows] for k, v in block.x.items()}, block.y[rows], worker
            skip = 0

    def _shuffled(self, window: list[Unit], encoder: Encoder, worker: int, w: int) -> Block:
        block = Block.concat([read_block(self.log, u, encoder, self.schema, users=False) for u in window])
        slot = self.rank * self.workers + worker
        rng = np.random.default_rng([self.cfg.seed, self.epoch, slot, w])
        block = block.take(rng.permutation(len(block.y)))
        if self.cfg.missing_rate > 0:  # feature dropout: the model learns what a missing feature means
            for name in self.cfg.droppable:
                block.x[name][rng.random(len(block.y)) < self.cfg.missing_rate] = 0
        return block


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a loader worker encodes with numpy; the trainer keeps the cores


@torch.no_grad()
def score_split(
    model, log: Log, schema: Schema, split: str, rank: int = 0, world: int = 1, batch_size: int = 8192
) -> dict[str, np.ndarray]:
    """This rank's share of a split scored, in a fixed order: row groups rank, rank + world, ...; each row keyed by
    (row group position, row) so that the ranks' shares merge into exactly the single-process order."""
    model.eval()
    device = next(model.parameters()).device
    encoder = Encoder(schema, LENIENT)
    units = log.splits[split]
    keys, scores, labels, users = [], [], [], []
    for i in range(rank, len(units), world):
        block = read_block(log, units[i], encoder, schema)
        for start in range(0, len(block.y), batch_size):
            xb = {k: torch.from_numpy(v[start : start + batch_size]).to(device) for k, v in block.x.items()}
            scores.append(model(xb).cpu().numpy())
        keys.append(np.int64(i) << 32 | np.arange(len(block.y), dtype=np.int64))
        labels.append(block.y)
        users.append(block.users)
    empty = [np.zeros(0, dtype=np.int64)]
    return {
        "key": np.concatenate(keys or empty),
        "p": np.concatenate(scores or [np.zeros(0, dtype=np.float32)]),
        "y": np.concatenate(labels or [np.zeros(0, dtype=np.float32)]),
        "users": np.concatenate(users or empty),
    }
