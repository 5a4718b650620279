"""The serve command's options and its run, written once: `apg serve` (scripts/cli.py) and `python -m service`
(service/__main__.py) both build their parser with `add_arguments` and call `run`.

    add_arguments(parser)             # --bundle, --host, --port, --workers, --log-level, --grpc-port, repository
    sys.exit(run(parser.parse_args(), prog="apg serve"))   # 0, or 2 with one line for a bad bundle or configuration
"""

from __future__ import annotations

import argparse
import sys

REPOSITORY = ("models", "default_model", "experiment", "shadow", "item_store")  # serve()'s `models` dict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle directory (default: $APG_BUNDLE or bundles/default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (metrics are multiprocess-safe)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: $APG_LOG_LEVEL or info")
    p.add_argument(
        "--grpc-port", type=int, help="also serve KServe v2 over gRPC on this port, on --host (default: APG_GRPC_PORT)"
    )
    p.add_argument("--models", metavar="DIR", help="serve every bundle in DIR under its folder's name ($APG_MODELS)")
    p.add_argument("--default-model", help="with --models: the model of requests that name none ($APG_DEFAULT_MODEL)")
    p.add_argument(
        "--experiment",
        metavar="JSON|FILE",
        help='a sticky split: \'{"control": "deepfm", "treatment": "deepfm-apg", "share": 0.5, "key": "user_id"}\''
        " ($APG_EXPERIMENT)",
    )
    p.add_argument("--shadow", metavar="NAMES", help="models (comma list) that shadow-score each request ($APG_SHADOW)")
    p.add_argument(
        "--item-store",
        metavar="URL|JSON",
        help="ranking by id: the item store `apg items sync` filled, file://DIR or redis://host:port/db, for every "
        'model (or \'{"model": "URL"}\'); checked at start ($APG_ITEM_STORE)',
    )


def run(args: argparse.Namespace, prog: str) -> int:
    """Serve until SIGINT/SIGTERM; a bad bundle or configuration is one line on stderr and exit code 2."""
    from service.errors import ServiceError
    from service.server import serve

    try:
        repository = {k: getattr(args, k) for k in REPOSITORY}
        serve(args.bundle, args.host, args.port, args.workers, args.log_level, args.grpc_port, repository)
    except ServiceError as exc:  # say what, no traceback
        print(f"{prog}: error: {exc.message}", file=sys.stderr)
        return 2
    return 0
