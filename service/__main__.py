"""`python -m service --bundle DIR --port N`: serve a bundle; the options are `apg serve`'s (service/command.py)."""

from __future__ import annotations

import argparse
import sys

from service.command import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve an APG CTR bundle over HTTP (POST /score, KServe v2 under /v2, /metrics). "
        "Every other setting comes from APG_* environment variables (docs/CONFIGURATION.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv), "python -m service")


if __name__ == "__main__":
    sys.exit(main())
