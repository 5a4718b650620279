"""`python -m service --bundle DIR --port N`: serve a bundle (the same as `apg serve`)."""

from __future__ import annotations

import argparse
import sys

from service.errors import BundleError, ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve an APG CTR bundle over HTTP (POST /score, KServe v2 under /v2, /metrics). "
        "Every other setting comes from APG_* environment variables (see service/settings.py).",
    )
    parser.add_argument("--bundle", help="bundle directory (default: $APG_BUNDLE or bundles/default)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: info")
    parser.add_argument("--grpc-port", type=int, help="also serve KServe v2 over gRPC on this port (default: off)")
    args = parser.parse_args(argv)

    from service.server import serve

    try:
        serve(args.bundle, args.host, args.port, args.workers, args.log_level, args.grpc_port)
    except (BundleError, ConfigError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
