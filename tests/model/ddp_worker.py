"""Run by tests/model/test_scale.py, once alone and once under torchrun with 2 gloo ranks: fit() on the same rows,
each rank training on its half of every global batch. Rank 0 saves the final weights to argv[1]."""

from __future__ import annotations

import sys

import numpy as np
import torch
from log_testing import SPEC, rows  # (this file's folder is first on sys.path when it runs as a script)

from model.data import Dataset, encode_table, fit_schema
from model.distributed import Dist
from model.evaluate import evaluate_split, to_tensors
from model.train import TrainConfig, fit, seed_everything
from model.zoo import ModelConfig, build_model


def schema_and_data() -> tuple:
    """1,200 fixed rows: 1,024 to train on (16 global batches of 64), 176 to validate."""
    table = rows(1200, 7).to_pydict()
    schema = fit_schema(SPEC, table, np.arange(1024))
    y = np.array(table["click"], dtype=np.float32)
    splits = {"train": np.arange(1024), "valid": np.arange(1024, 1200), "test": np.arange(1024, 1200)}
    return schema, Dataset(schema, encode_table(schema, table), y, np.array(table["user"], dtype=object), splits, None)


class Halves:
    """Global batches of 64 rows in a fixed order; rank r of w trains on rows r, r + w, ... of each."""

    def __init__(self, data: Dataset, dist: Dist, batch: int = 64) -> None:
        self.data, self.dist, self.batch = data, dist, batch
        self.x, self.y = data.part("train")

    def planned(self, epoch: int) -> int:
        return len(self.y) // self.batch

    def batches(self, epoch: int, skip: dict):
        order = np.random.default_rng(epoch).permutation(len(self.y))
        for i in range(self.planned(epoch)):
            rows = order[i * self.batch : (i + 1) * self.batch][self.dist.rank :: self.dist.world]
            yield to_tensors({k: v[rows] for k, v in self.x.items()}), torch.from_numpy(self.y[rows]), 0

    def evaluate(self, model, split: str) -> dict:
        return evaluate_split(model, self.data, split)


def main(out: str) -> None:
    dist = Dist.from_env()
    dist.start("cpu")
    schema, data = schema_and_data()
    seed_everything(0, 1)
    model = build_model(schema, ModelConfig("dnn", hidden=(16, 8)))
    cfg = TrainConfig(epochs=2, patience=5, lr=3e-3)
    fit(model, Halves(data, dist), cfg, progress=False, dist=dist)
    if dist.main:
        torch.save(model.state_dict(), out)
    dist.stop()


if __name__ == "__main__":
    main(sys.argv[1])
