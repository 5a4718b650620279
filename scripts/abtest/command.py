"""The options of `apg abtest` and the command: requests from the data, the replay, the report, JSON and the plot."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

MAX_REQUESTS = 200_000  # --limit's bound: a replay is a measurement, not a soak


def _bounded(text: str) -> int:
    value = int(text)
    if not 0 < value <= MAX_REQUESTS:
        raise argparse.ArgumentTypeError(f"must be in 1..{MAX_REQUESTS}, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Replay a held-out split (test rows in time order, one user's next rows per request) through a running "
        "service as A/B traffic: POST /score with X-Request-ID, then POST the true labels to /feedback under the "
        "answer's request_id. Reports per arm (the answer's `arm`): online AUC, CTR, predicted/observed CTR, "
        "logloss, top-1 CTR, latency p50/p99, with 95% bootstrap CIs over users and each arm minus the baseline; "
        "writes abtest.json and abtest.png (AUC and CTR per arm over the data's time) to --out."
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the service (loopback only by default)")
    p.add_argument("--data", default="ml-100k", help="ml-100k, ml-1m, or a CSV/Parquet file (with --schema)")
    p.add_argument("--schema", help="schema file (default: the named dataset's, model/schemas/)")
    p.add_argument("--split", choices=("random", "time"), default="random", help="the split the models trained on")
    p.add_argument("--split-seed", type=int, default=0, help="the random split's seed the models trained on")
    p.add_argument("--part", choices=("test", "valid"), default="test", help="which held-out part to replay")
    p.add_argument("--rows-per-request", type=_bounded, default=20, help="a user's consecutive rows per request")
    p.add_argument("--limit", type=_bounded, default=2000, help="requests to replay (the first, in time order)")
    p.add_argument("--feedback-delay", type=float, default=0.2, help="s between an answer and its labels' POST")
    p.add_argument("--feedback-batch", type=_bounded, default=500, help="feedback items per POST /feedback")
    p.add_argument("--baseline", help="the arm the others are compared with (default: control, else the first)")
    p.add_argument("--bootstrap", type=_bounded, default=1000, help="bootstrap resamples of the users per arm")
    p.add_argument("--bins", type=_bounded, default=10, help="points over time in the plot")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--token", help="bearer token for /score (default: $APG_AUTH_TOKEN)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in s")
    p.add_argument("--ready-timeout", type=float, default=10.0, help="s to wait for GET /readyz before starting")
    p.add_argument("--out", default="runs/abtest", help="directory for abtest.json and abtest.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")


def run_from_args(args) -> int:
    import httpx

    from scripts.abtest.replay import replay
    from scripts.abtest.report import format_report, plot_over_time, summarise
    from scripts.abtest.traffic import replay_requests
    from scripts.clients.http import wait_ready
    from scripts.loadtest.plan import check_target

    check_target(args.url, args.allow_remote)
    requests = replay_requests(
        args.data, args.schema, args.split, args.split_seed, args.part, args.rows_per_request, args.limit
    )
    token = args.token or os.environ.get("APG_AUTH_TOKEN")
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
    wait_ready(args.url, args.ready_timeout, token=token)
    with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
        result = replay(client, requests, args.feedback_delay, args.feedback_batch, progress=not args.quiet)
    report = summarise(result.answers, args.baseline, args.bootstrap, args.seed)
    report.update(
        data=args.data,
        split=args.split,
        split_seed=args.split_seed,
        part=args.part,
        run_id=result.run_id,
        requests_sent=len(requests),
        failures=dict(result.failures),
        feedback=dict(result.feedback),
        feedback_errors=dict(result.feedback_errors),
        command=getattr(args, "command_line", None),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "abtest.json").write_text(json.dumps(report, indent=1))
    plot_over_time(result.answers, out / "abtest.png", args.bins)
    print(format_report(report))
    print(f"requests: {len(requests)} sent, {len(result.answers)} answered, failures {dict(result.failures) or 0}")
    errors = f"  (failed posts: {dict(result.feedback_errors)})" if result.feedback_errors else ""
    print(f"feedback: {dict(result.feedback)}{errors}")
    print(f"-> {out / 'abtest.json'}, {out / 'abtest.png'}")
    clean = not result.failures and not any(n for outcome, n in result.feedback.items() if outcome != "accepted")
    return 0 if clean else 1  # a failed request or a label the service did not accept: exit 1, after the report
