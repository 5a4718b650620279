"""The ``apg`` console script.

Building the parser imports nothing but argparse: a subcommand's options are added, and its module imported, only
when that subcommand is parsed (``LazyParser``), so ``apg serve`` imports no torch, model/, httpx or tooling
(tests/cli checks ``sys.modules``). The options of ``apg train`` are generated from the config dataclasses
(scripts/config_args.py).
"""

from __future__ import annotations

import argparse
import importlib
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
        "reference",
        "reference parity (issue 24): our DeepFM and self-wise APG against FuxiCTR's own on our exact ML-1M "
        "split, one grid for both, paired seeds",
        "scripts.experiments.reference:add_arguments",
        "scripts.experiments.reference:run_from_args",
        "train",
    )
    add_command(
        sub,
        "front",
        "the efficiency front (issue 24): test AUC against onnxruntime latency, parameters and bundle bytes for "
        "base towers of several widths and self-wise APG of several ranks on ML-1M",
        "scripts.experiments.front:add_arguments",
        "scripts.experiments.front:run_from_args",
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
        "scripts.bench.peers.command:add_arguments",
        "scripts.bench.peers.command:run_from_args",
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
    add_command(
        sub,
        "data",
        "fetch + verify + describe the dataset",
        "scripts.model_commands:data_arguments",
        "scripts.model_commands:cmd_data",
        "train",
    )
    add_command(
        sub,
        "train",
        "train a model; writes model.pt, schema.json, metrics.json to --out",
        "scripts.model_commands:train_arguments",
        "scripts.model_commands:cmd_train",
        "train",
    )
    add_command(
        sub,
        "export",
        "run directory -> ONNX bundle (prints the parity figures)",
        "scripts.model_commands:export_arguments",
        "scripts.model_commands:cmd_export",
        "train",
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
