"""Runs one FuxiCTR experiment inside FuxiCTR's own virtual environment (started by reference_fuxictr.py; imports
nothing of this project). Usage:

    .venv-fuxictr/bin/python scripts/experiments/fuxictr_launch.py --model-dir ZOO/model_zoo/APG \
        --config CONFIG_DIR --expid ID --shuffle-seed 1 --threads 1 --out result.json

The same steps as the zoo's `run_expid.py` (its config loader, logger, seeding, feature processor, data build, the
zoo's model class, fit, the best checkpoint's evaluation on validation and test), with three differences: the
metrics are written as JSON to --out (not appended to a CSV inside the user's checkout, and no chdir into it); the
training shuffle is seeded (FuxiCTR 2.3.10's Ray loader shuffles with no seed, so two runs of one seed differ and
seeds could not pair; here epoch e shuffles with seed shuffle_seed + e); and the loader's return value is taken as
either the library's tuple or the older object with make_iterator() (the zoo at 0245987 expects the latter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def seeded_shuffle(seed: int) -> None:
    """Make the parquet loader's global shuffle seeded: epoch e (1, 2, ...) uses seed + e."""
    from fuxictr.pytorch.dataloaders import parquet_dataloader

    loader = parquet_dataloader.ParquetDataLoader

    def iterate(self):
        options = {"batch_size": self.batch_size, "drop_last": False, "prefetch_batches": self.num_workers}
        dataset = self.dataset
        if self.shuffle:
            self.epochs_seen = getattr(self, "epochs_seen", 0) + 1
            dataset = dataset.materialize().random_shuffle(seed=seed + self.epochs_seen)
        return iter(dataset.iter_torch_batches(**options))

    loader.__iter__ = iterate


def generators(result):
    return result.make_iterator() if hasattr(result, "make_iterator") else result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, help="the zoo model's folder (holds src/)")
    p.add_argument("--config", required=True, help="folder with dataset_config.yaml and model_config.yaml")
    p.add_argument("--expid", required=True)
    p.add_argument("--shuffle-seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import load_config, set_logger

    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.abspath(args.model_dir))
    import src  # the zoo model's package, from the user's checkout

    seeded_shuffle(args.shuffle_seed)
    params = load_config(args.config, args.expid)
    params["gpu"] = -1
    set_logger(params)
    seed_everything(seed=params["seed"])
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    if params["data_format"] == "csv":
        params["train_data"], params["valid_data"], params["test_data"] = build_dataset(
            FeatureProcessor(**params), **params
        )
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    model = getattr(src, params["model"])(feature_map, **params)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    start = time.perf_counter()
    train_gen, valid_gen = generators(RankDataLoader(feature_map, stage="train", **params))
    model.fit(train_gen, validation_data=valid_gen, **params)
    seconds = time.perf_counter() - start
    valid = model.evaluate(valid_gen)
    test = model.evaluate(generators(RankDataLoader(feature_map, stage="test", **params)))
    out = {
        "valid": {k.lower(): float(v) for k, v in valid.items()},
        "test": {k.lower(): float(v) for k, v in test.items()},
        "params": count,
        "train_seconds": round(seconds, 2),
        "epochs_run": int(getattr(model, "_epoch_index", -1)) + 1,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
