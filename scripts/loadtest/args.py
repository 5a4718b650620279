"""The options of `apg loadtest`: argparse only, so `apg loadtest --help` needs neither httpx nor numpy."""

from __future__ import annotations

import argparse

from scripts import loadtest as package

FORMATS = ("rows", "columns", "ranking", "ranking-ids", "v2")  # request bodies (scripts/loadtest/plan.py)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `apg loadtest`."""
    p.description = package.__doc__.split("\n\n")[0]
    p.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the service (loopback only by default)")
    p.add_argument("--rate", type=_positive(float), default=100.0, help="target requests/s (single run)")
    p.add_argument("--duration", type=_positive(float), default=10.0, help="measured seconds per run")
    p.add_argument(
        "--warmup", type=_non_negative, default=2.0, help="seconds of load before measuring (excluded from stats)"
    )
    p.add_argument("--arrivals", choices=["constant", "poisson"], default="poisson", help="inter-arrival times")
    p.add_argument("--rows", type=_positive(int), default=1, help="rows per request")
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        default=64,
        help="cap on requests in flight (= connections); requests over it wait, and the wait counts in the latency",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="rows",
        help="body: /score rows, columns, ranking (one user as the context, --rows candidates), ranking-ids (the "
        "user's features as the context, --rows candidate ids drawn from the bundle's vocabulary of --id-column: "
        "for a service with an item store, APG_ITEM_STORE), or v2 infer",
    )
    p.add_argument("--id-column", default="item_id", help="--format ranking-ids: the feature candidates are named by")
    p.add_argument(
        "--model",
        help="model name: of the v2 route (default: the bundle's model name); given with a /score format, pins the"
        ' body to that model ("model" key)',
    )
    p.add_argument(
        "--protocol",
        choices=["http", "grpc"],
        default="http",
        help="grpc: KServe v2 ModelInfer calls to --grpc-port on --url's host (--format and --client do not apply)",
    )
    p.add_argument("--grpc-port", type=_positive(int), default=8001, help="APG_GRPC_PORT (--protocol grpc)")
    p.add_argument("--token", help="bearer token (default: $APG_AUTH_TOKEN)")
    p.add_argument(
        "--bundle", default="bundles/default", help="bundle directory (or bundle.json/schema.json) to sample rows from"
    )
    p.add_argument(
        "--pool", type=_positive(int), default=256, help="distinct request bodies built before the run and cycled"
    )
    p.add_argument("--unseen", type=float, default=0.02, help="fraction of categorical values not in the vocabulary")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrivals and the sampled rows")
    p.add_argument(
        "--timeout", type=_positive(float), default=10.0, help="per-request timeout in s, from the actual send"
    )
    p.add_argument(
        "--drain",
        type=_non_negative,
        help="s to wait after the last scheduled send before giving up on what is "
        "outstanding (counted as errors 'unsent'/'cancelled'; default: --timeout)",
    )
    p.add_argument(
        "--ready-timeout", type=_positive(float), default=10.0, help="s to wait for GET /readyz before starting"
    )
    p.add_argument(
        "--client",
        choices=["auto", "raw", "httpx"],
        default="auto",
        help="raw: plain HTTP/1.1 sockets on one selector loop, keeps its schedule at thousands of requests/s (auto "
        "for http:// URLs); httpx: any URL, https too, falls behind above ~400 requests/s on one core (see 'lag')",
    )
    p.add_argument("--out", default="runs/loadtest", help="directory for summary.json, requests.csv, latency.png")
    s = p.add_argument_group("sweep (find the knee: the highest rate meeting the SLO)")
    s.add_argument("--sweep", help="comma-separated offered rates, e.g. 50,100,200,400")
    s.add_argument("--sweep-start", type=_positive(float), help="geometric sweep: first rate")
    s.add_argument("--sweep-factor", type=float, default=2.0, help="geometric sweep: ratio between rates")
    s.add_argument("--sweep-max", type=_positive(float), help="geometric sweep: last rate at most")
    s.add_argument("--sweep-all", action="store_true", help="keep going after the first rate that misses the SLO")
    s.add_argument("--slo-ms", type=float, default=50.0, help="p99 latency objective (ms)")
    s.add_argument("--max-errors", type=float, default=0.01, help="error fraction objective")
    g = p.add_argument_group("safety")
    g.add_argument(
        "--max-requests", type=_positive(int), default=200_000, help="refuse a plan of more requests than this"
    )
    g.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
