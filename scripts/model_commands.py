"""The training side's commands: `apg data` (and `data synth`, `data convert`), `apg train`, `apg export`.

Their options are generated from the config dataclasses (scripts/config_args.py); scripts/cli.py names these functions
as "module:function" targets, so nothing here is imported until one of these commands is parsed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from scripts.cli import LazyParser, add_command

TRAIN_FLAGS = {"condition": "apg"}  # APGConfig.condition is --apg
DATA_FIELDS = ("data", "schema", "split", "split_seed")  # the TrainConfig fields `apg data` reads


def data_arguments(p: argparse.ArgumentParser) -> None:
    from model.train import TrainConfig
    from scripts.config_args import add_config_arguments

    add_config_arguments(p, TrainConfig, only=DATA_FIELDS, overrides={"data": {"metavar": "DATA"}}, title="data")
    sub = p.add_subparsers(dest="data_command", metavar="{synth,convert}", parser_class=LazyParser)
    add_command(
        sub,
        "synth",
        "a synthetic Criteo-shaped CTR log with a known click model, as Parquet shards",
        "scripts.data.synth:add_arguments",
        "scripts.data.synth:run_from_args",
        "train",
    )
    add_command(
        sub,
        "convert",
        "a CSV/TSV file streamed into Parquet shards with row groups (for --data DIR)",
        "scripts.data.convert:add_arguments",
        "scripts.data.convert:run_from_args",
        "train",
    )


def cmd_data(args) -> int:
    from model.data import DATASETS, cache_dir, fetch, load_dataset
    from model.shards import is_log

    if is_log(args.data):
        return describe_log(args)
    folder = fetch(args.data) if args.data in DATASETS else None
    data = load_dataset(args.data, args.schema, args.split, args.split_seed, cache=True)
    n, users = len(data.y), data.users
    print(f"data: {args.data}  (cache: {cache_dir()})" if folder else f"data: {args.data}")
    if folder:
        print(f"files: {folder} (sha256 verified)")
    print(f"rows: {n}  users: {len(set(users))}  positive rate: {data.y.mean():.4f}")
    for name, rows in data.splits.items():
        print(f"  {name:5s} {len(rows):7d} rows  positive rate {data.y[rows].mean():.4f}")
    print("fields (cardinality incl. missing + OOV):")
    for f in data.schema.fields:
        src = f" <- {f.source}" if f.source != f.name else ""
        print(f"  {f.name:14s} {f.kind:11s} {f.cardinality:6d}{src}")
    return 0


def describe_log(args) -> int:
    """`apg data --data DIR`: a log of shards from its footers alone (no row is read), and its teacher if synthetic."""
    from features import Schema
    from model.shards import open_log, schema_path

    spec_path = schema_path(args.data, args.schema)
    log = open_log(args.data, Schema.load(spec_path))
    teacher = Path(args.data) / "teacher.json"
    bayes = json.loads(teacher.read_text()).get("splits", {}) if teacher.is_file() else {}
    print(f"log: {args.data}  (schema: {spec_path})")
    for name, units in log.splits.items():
        files = len({u.path for u in units})
        known = f"  Bayes-optimal AUC {bayes[name]['bayes_auc']:.4f}" if name in bayes else ""
        print(f"  {name:5s} {log.rows(name):11,d} rows  {len(units):6d} row groups  {files:4d} files{known}")
    print(f"columns read: {', '.join(log.columns)}")
    return 0


def train_arguments(p: argparse.ArgumentParser) -> None:
    """Every field of ModelConfig (with APGConfig) and TrainConfig is an option; --out and --quiet are the run's."""
    from model.scale import ScaleConfig
    from model.train import TrainConfig
    from model.zoo import MODELS, ModelConfig
    from scripts.config_args import add_config_arguments

    add_config_arguments(p, ModelConfig, TRAIN_FLAGS, overrides={"model": {"choices": sorted(MODELS)}})
    add_config_arguments(p, TrainConfig)
    add_config_arguments(p, ScaleConfig, title="ScaleConfig (a log of Parquet shards)")
    p.add_argument("--out", required=True, help="run directory (model.pt, schema.json, metrics.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def train_configs(args) -> tuple:
    """(ModelConfig, TrainConfig) of parsed `apg train` options."""
    from model.train import TrainConfig
    from model.zoo import ModelConfig
    from scripts.config_args import config_from_args

    return config_from_args(ModelConfig, args), config_from_args(TrainConfig, args)


def cmd_train(args) -> int:
    import os

    from model.scale import ScaleConfig, train_log_run
    from model.shards import is_log
    from model.train import train_run
    from scripts.config_args import config_from_args

    model_cfg, train_cfg = train_configs(args)
    scale = config_from_args(ScaleConfig, args)
    streamed = is_log(train_cfg.data) and not scale.in_memory
    if scale.nproc > 1 and not streamed:
        raise ValueError("--nproc N trains a log of Parquet shards (--data DIR or a glob, without --in-memory)")
    if scale.nproc > 1 and scale.sparse_embeddings:
        raise ValueError(
            "--sparse-embeddings trains one process only: under DDP, gloo's sparse all-reduce was slower "
            "than one process and once crashed a rank (docs/TRAINING.md, section 6)"
        )
    if streamed and scale.nproc > 1 and "WORLD_SIZE" not in os.environ:  # start the ranks: torchrun + this command
        return _launch(args, train_cfg, scale)
    if streamed:
        m = train_log_run(model_cfg, train_cfg, scale, args.out, progress=not args.quiet)
        if int(os.environ.get("RANK", 0)) != 0:
            return 0
    else:
        m = train_run(model_cfg, train_cfg, args.out, progress=not args.quiet, sparse=scale.sparse_embeddings)
    t = m["test"]
    print(
        f"{model_cfg.model} apg={model_cfg.apg.condition}: test AUC {t['auc']:.4f}  logloss {t['logloss']:.4f}"
        f"  gAUC {t['gauc']:.4f}  (best epoch {m['best_epoch']}, {m['params']} params, {m['train_seconds']} s)"
        f" -> {args.out}"
    )
    return 0


def _launch(args, train_cfg, scale) -> int:
    from model.distributed import launch
    from model.scale import FITTED_SCHEMA, preflight

    schema = preflight(train_cfg, Path(args.out))
    argv = shlex.split(args.command_line)[1:]
    argv = [a for i, a in enumerate(argv) if not a.startswith("--nproc") and argv[i - 1] != "--nproc"]  # (torchrun
    try:  # would read --nproc as an abbreviation of its own --nproc-per-node; the ranks know their world anyway)
        rc = launch(argv, scale.nproc, {FITTED_SCHEMA: str(schema)})
    finally:
        schema.unlink(missing_ok=True)
    if rc != 0:
        print(f"apg train: error: the {scale.nproc} training processes ended with exit code {rc}", file=sys.stderr)
        return 2
    return 0


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run directory written by `apg train`")
    p.add_argument("--out", required=True, help="bundle directory")
    p.add_argument("--no-optimise", action="store_true", help="skip model.opt.onnx")
    p.add_argument("--quantise", action="store_true", help="also write model.int8.onnx and its test-AUC change")
    p.add_argument("--triton", metavar="DIR", help="also write a Triton model repository that takes raw features")
    p.add_argument(
        "--triton-layout",
        choices=["ensemble", "python", "graph"],
        default="ensemble",
        help="ensemble: encoder (Python backend) → ONNX (onnxruntime backend); python: both in one Python-backend "
        "model (a Triton without onnxruntime); graph: the ONNX graph alone, clients send encoded tensors",
    )


def cmd_export(args) -> int:
    from model.bundle import write_bundle

    report = write_bundle(args.run, args.out, optimise=not args.no_optimise, quantise=args.quantise)
    if args.triton:
        from scripts.triton import write_triton_repo

        report["triton"] = str(write_triton_repo(args.out, args.triton, layout=args.triton_layout))
    print(json.dumps(report, indent=1))
    return 0
