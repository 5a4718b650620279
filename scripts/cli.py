"""The ``apg`` console script.

Building the parser imports nothing but argparse: a subcommand's options are added, and its module imported, only
when that subcommand is parsed (``LazyParser``), so ``apg serve`` imports no torch, model/, httpx or tooling
(tests/cli checks ``sys.modules``). The options of ``apg train`` are generated from the config dataclasses
(scripts/config_args.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = """examples:
  apg data                                        fetch, verify and describe MovieLens-100K
  apg data synth --rows 1000000 --out data/synth  a synthetic CTR log (Parquet shards) with a known click model
  apg train --data data/synth --nproc 2 --out runs/synth   stream its shards, 2 processes (torchrun + DDP)
  apg train --model deepfm --apg self --out runs/deepfm-self
  apg export runs/deepfm-self --out bundles/default
  apg serve --bundle bundles/default --port 8000
  apg loadtest --rate 200 --duration 20           open-loop load against the served bundle
  apg abtest --data ml-100k --limit 500          replay test rows as A/B traffic, labels as feedback
  apg experiment auc --help                       the paper's claims, reproduced
"""
OWN_PACKAGES = ("scripts", "model", "service", "features")
TRAIN_FLAGS = {"condition": "apg"}  # APGConfig.condition is --apg
DATA_FIELDS = ("data", "schema", "split", "split_seed")  # the TrainConfig fields `apg data` reads
EXPERIMENTS = {  # `apg experiment NAME`, in the order `apg experiment all` runs them (scripts/experiments/drivers.py)
    "select": "every base model x {group, mix, self}, seed 0: each model's condition chosen on validation",
    "auc": "every base model without / with its chosen APG condition, N seeds",
    "conditions": "group vs mix vs self on DNN and DeepFM, N seeds",
    "controls": "static-S low-rank tower and a parameter-matched wider static MLP",
    "ablation": "basic -> low-rank -> shared -> + over-parameterisation",
    "coldstart": "time-ordered split (mostly cold users), base vs APG",
    "all": "every experiment above, in order",
}

Target = Callable | str  # a function, or "module:function", imported when needed


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the uninformative None and False."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        if isinstance(action.default, tuple | list):  # as it is typed on the command line, not a Python tuple
            shown = ",".join(map(str, action.default)).replace("%", "%%")
            return f"{action.help} (default: {shown})" if "%(default)" not in (action.help or "") else action.help
        return super()._get_help_string(action)


class LazyParser(argparse.ArgumentParser):
    """A subcommand's parser whose options are added on first use (parsing, or --help), by `populate(parser)`."""

    def __init__(self, *args, populate: Target | None = None, extra: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.populate, self.extra = populate, extra

    def parse_known_args(self, args=None, namespace=None):
        if self.populate is not None:
            populate, self.populate = self.populate, None
            try:
                load(populate)(self)
            except ImportError as exc:
                self.exit(2, missing_extra(self.prog, self.extra, exc))
        return super().parse_known_args(args, namespace)


def load(target: Target) -> Callable:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def missing_extra(prog: str, extra: str | None, exc: ImportError) -> str:
    """A user-facing message for a dependency this install lacks; our own modules failing to import is a bug."""
    if extra is None or (exc.name or "").split(".")[0] in OWN_PACKAGES:
        raise exc
    return f"{prog}: this command needs the '{extra}' extra ({exc}): pip install 'apg-ctr[{extra}]'\n"


# ---------------------------------------------------------------- data, train, export, serve


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


def cmd_serve(args) -> int:
    from service.command import run

    return run(args, "apg serve")


# ---------------------------------------------------------------- the parser


def experiment_arguments(p: argparse.ArgumentParser) -> None:
    """`apg experiment NAME`: the drivers, the complexity study and the report, each with its own options."""
    sub = p.add_subparsers(dest="experiment", required=True, metavar="NAME", parser_class=LazyParser)
    drivers = "scripts.experiments.drivers"
    for name, doc in EXPERIMENTS.items():
        add_command(sub, name, doc, f"{drivers}:add_arguments", f"{drivers}:run_from_args", "train")
    add_command(
        sub,
        "complexity",
        "APG vs static MLP: parameters, ONNX size, onnxruntime latency",
        "scripts.experiments.complexity:add_arguments",
        "scripts.experiments.complexity:run_from_args",
        "train",
    )
    add_command(
        sub,
        "study",
        "the paired APG study (issue 11): ML-1M, paired seeds, adaptation, calibration",
        "scripts.experiments.study:add_arguments",
        "scripts.experiments.study:run_from_args",
        "train",
    )
    add_command(
        sub,
        "tune",
        "equal-budget Optuna search per arm (issue 11): validation AUC, best configs for study",
        "scripts.experiments.tune:add_arguments",
        "scripts.experiments.tune:run_from_args",
        "train",
    )
    add_command(
        sub,
        "cold-users",
        "cold start (issue 11): held-out users with 1-5 training interactions, a trained "
        "rare-user row; base vs group- vs self-wise APG by activity, paired seeds",
        "scripts.experiments.coldstart:add_arguments",
        "scripts.experiments.coldstart:run_from_args",
        "train",
    )
    add_command(
        sub,
        "control",
        "APG's positive control (issue 24): the synthetic log at heterogeneity 0 and 1, base "
        "vs self- vs group-wise (the teacher's segment) vs static-S, paired seeds, share of the gap to Bayes",
        "scripts.experiments.control:add_arguments",
        "scripts.experiments.control:run_from_args",
        "train",
    )
    add_command(
        sub,
        "report",
        "render docs/RESULTS.md and its plots from the recorded runs",
        "scripts.experiments.results_report:add_arguments",
        "scripts.experiments.results_report:run_from_args",
        "train",
    )


def items_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="items", required=True, metavar="{sync}", parser_class=LazyParser)
    add_command(
        sub,
        "sync",
        "encode an item catalogue (CSV/Parquet) with the bundle's own encoder and publish it "
        "to the store (file://DIR or redis://...), keyed by the bundle's contract checksum",
        "scripts.items.sync:add_arguments",
        "scripts.items.sync:run_from_args",
        "serve",
    )


def bench_arguments(p: argparse.ArgumentParser) -> None:
    """`apg bench [OPTIONS]`, and `apg bench peers`: Triton and KServe as measured peers (issue 15)."""
    load("scripts.bench.harness:add_arguments")(p)
    sub = p.add_subparsers(dest="bench", metavar="{peers,training}", parser_class=LazyParser)
    add_command(
        sub,
        "peers",
        "Triton and KServe vs the service's v2 routes over HTTP and gRPC (issue 15)",
        "scripts.bench.peers:add_arguments",
        "scripts.bench.peers:run_from_args",
        "serve,loadtest",
    )
    add_command(
        sub,
        "training",
        "training on a log of shards: generator, fit, rows/s in memory vs streamed vs "
        "--nproc 2, peak RSS against the log's size, hashed vs vocabulary ids (issue 22)",
        "scripts.bench.training:add_arguments",
        "scripts.bench.training:run_from_args",
        "train",
    )


@dataclass(frozen=True)
class Handler:
    """What `main` calls for a parsed subcommand (a namespace attribute of its own: options may be named `run`)."""

    run: Target | None
    extra: str | None  # the pip extra its imports need
    prog: str  # "apg experiment auc", for messages


def add_command(sub, name: str, help: str, arguments: Target, run: Target | None, extra: str | None, **kw) -> None:
    p = sub.add_parser(name, help=help, description=kw.pop("description", help), populate=arguments, extra=extra, **kw)
    p.set_defaults(apg_handler=Handler(run, extra, p.prog))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="apg",
        description="APG CTR models: data, training, ONNX export, serving, load tests, benchmarks, experiments.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=LazyParser)
    add_command(sub, "data", "fetch + verify + describe the dataset", data_arguments, cmd_data, "train")
    add_command(
        sub,
        "train",
        "train a model; writes model.pt, schema.json, metrics.json to --out",
        train_arguments,
        cmd_train,
        "train",
    )
    add_command(
        sub, "export", "run directory -> ONNX bundle (prints the parity figures)", export_arguments, cmd_export, "train"
    )
    add_command(
        sub,
        "serve",
        "serve a bundle over HTTP (FastAPI + onnxruntime; no torch)",
        "service.command:add_arguments",
        cmd_serve,
        "serve",
    )
    add_command(
        sub,
        "items",
        "the item store: `apg items sync` encodes a catalogue with a bundle's encoder into a "
        "file snapshot or Redis, so that ranking requests name candidates by id",
        items_arguments,
        None,
        "serve",
    )
    add_command(
        sub,
        "loadtest",
        "open-loop load against a loopback URL (p50…p99.9, achieved rate, knee sweep)",
        "scripts.loadtest.args:add_arguments",
        "scripts.loadtest.command:run_from_args",
        "loadtest",
    )
    add_command(
        sub,
        "abtest",
        "replay held-out rows through a running service as A/B traffic, post their labels as"
        " feedback; per-arm online AUC/CTR/calibration/latency with CIs",
        "scripts.abtest.command:add_arguments",
        "scripts.abtest.command:run_from_args",
        "loadtest",
    )
    add_command(
        sub,
        "bench",
        "service vs in-process onnxruntime floor, thin FastAPI reference, micro-batching, torch",
        bench_arguments,
        "scripts.bench.harness:run_from_args",
        "serve,loadtest",
    )
    add_command(
        sub,
        "experiment",
        "reproduce the paper's claims (select, auc, ..., all), complexity, report",
        experiment_arguments,
        None,
        "train",
        description="Resumable experiment drivers; results in docs/results/, rendered into docs/RESULTS.md "
        "by `apg experiment report`. `apg experiment NAME --help` lists each one's options.",
    )
    return p


class VersionAction(argparse.Action):
    """--version: the installed distribution's version, else pyproject.toml's (a source checkout)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"apg {version()}")
        parser.exit()


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("apg-ctr")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["apg", *argv])
    handler = args.apg_handler
    try:
        run = load(handler.run)
    except ImportError as exc:
        print(missing_extra(handler.prog, handler.extra, exc), end="", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"{handler.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
