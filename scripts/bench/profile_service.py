"""`python -m scripts.bench.profile_service`: the service's own cost per request, in process, without sockets.

    python -m scripts.bench.profile_service --batch 1 --body columns     # µs per request (best of --rounds)
    python -m scripts.bench.profile_service --batch 1024 --body rows --profile   # + cProfile's top functions
    python -m scripts.bench.profile_service --thin                        # the thin reference app instead
    python -m scripts.bench.profile_service --onnx-only                   # session.run alone: hot and cold caches
    python -m scripts.bench.profile_service --encode-only --batch 1024    # the encoder alone, columns bodies

The app (service.app.create_app, or scripts/bench/thin.py's app with --thin) is driven through its ASGI interface
with one prebuilt request at a time, after its lifespan has loaded the bundle: what remains is routing, the
middleware, parsing, encoding, onnxruntime, metrics and serialisation, with none of the HTTP server's or the
client's work. That is the part this repository can speed up, and it is stable enough (best of several rounds)
to compare two versions of the code back to back (docs/OPTIMISATIONS.md). Rows are sampled like `apg bench`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

BODIES = ("rows", "columns", "v2", "ranking")


def build(bundle: Path, thin: bool, log_level: str):
    """(app, model name): the service with its defaults (APG_* variables apply), or the thin reference."""
    if thin:
        from scripts.bench.thin import create_app as thin_app

        os.environ["APG_BUNDLE"] = str(bundle)
        app = thin_app()
    else:
        from service.app import create_app
        from service.settings import Settings

        app = create_app(Settings(bundle=bundle, log_level=log_level))
    import orjson

    return app, orjson.loads((bundle / "bundle.json").read_bytes())["model"]["name"]


def request_body(bundle: Path, body: str, batch: int) -> tuple[str, bytes]:
    """(path, body bytes) for `batch` sampled rows in one of BODIES."""
    import orjson

    from features import RowSampler, read_schema
    from scripts.loadtest.plan import encode_body

    sampler = RowSampler(read_schema(bundle)[0], seed=0)
    rows = sampler.rows(batch)
    if body == "ranking":  # the first row's user side as the context, every row's item side as a candidate
        user = {k for k in rows[0] if "user" in k or k in ("age", "gender", "occupation", "zip_code")}
        payload = {
            "context": {k: rows[0][k] for k in user},
            "candidates": [{k: r[k] for k in r if k not in user} for r in rows],
        }
        return "/score", orjson.dumps(payload)
    return ("/score" if body in ("rows", "columns") else "/v2/models/{name}/infer"), encode_body(
        rows, body, sampler.numeric
    )


def scope(path: str, body: bytes) -> dict:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def drive(app, path: str, body: bytes, requests: int, rounds: int, profile: bool) -> tuple[float, str]:
    """(best seconds per request over `rounds` rounds of `requests`, cProfile text or "")."""

    async def one() -> None:
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # a client that never disconnects
            return {}

        status = []

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope(path, body), receive, send)
        if status != [200]:
            raise RuntimeError(f"POST {path} answered {status}")

    async with app.router.lifespan_context(app):
        for _ in range(max(20, requests // 10)):  # warm-up: memos, allocator, caches
            await one()
        best, text = float("inf"), ""
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(requests):
                await one()
            best = min(best, (time.perf_counter() - t0) / requests)
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(requests):
                await one()
            profiler.disable()
            out = _Text()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
            text = out.text
    return best, text


def onnx_only(bundle: Path, batch: int, calls: int) -> dict[str, float]:
    """µs per `session.run` on one pre-encoded batch: back to back (the floor's loop), then with the core idle
    for 50 µs, or 1 MB / 8 MB of other memory read, between calls (what a serving process does in between)."""
    import numpy as np

    from service.runtime import load_model
    from service.settings import Settings

    model = load_model(bundle, Settings(bundle=bundle, providers="cpu"))
    feeds = model.encoder.encode_rows(model.encoder.example_rows(batch))
    other = np.ones(8 << 20, dtype=np.uint8)
    between = {
        "back to back": lambda: None,
        "50 µs idle between calls": lambda: time.sleep(50e-6),
        "1 MB read between calls": lambda: other[: 1 << 20].sum(),
        "8 MB read between calls": lambda: other.sum(),
    }
    out = {}
    for name, gap in between.items():
        for _ in range(calls // 10):
            gap()
            model.run(feeds)
        total = 0.0
        for _ in range(calls):
            gap()
            t0 = time.perf_counter()
            model.run(feeds)
            total += time.perf_counter() - t0
        out[name] = total / calls * 1e6
    return out


def encode_only(bundle: Path, batch: int, calls: int) -> dict[str, float]:
    """µs per `encode_columns` of `batch` sampled rows (16 bodies in turn, memos warm): on the same parsed objects
    again and again, and on each body freshly parsed (new string objects, whose hashes are not cached yet)."""
    import orjson

    from features import Encoder, RowSampler
    from scripts.loadtest.plan import encode_body

    manifest = orjson.loads((bundle / "bundle.json").read_bytes())
    encoder, sampler = Encoder(manifest["schema"]), RowSampler(manifest["schema"], seed=0)
    bodies = [encode_body(sampler.rows(batch), "columns", sampler.numeric) for _ in range(16)]
    parsed = [orjson.loads(b)["inputs"] for b in bodies]
    for columns in parsed:
        encoder.encode_columns(columns)
    same = fresh = 0.0
    for i in range(calls):
        t0 = time.perf_counter()
        encoder.encode_columns(parsed[i % 16])
        same += time.perf_counter() - t0
        columns = orjson.loads(bodies[i % 16])["inputs"]
        t0 = time.perf_counter()
        encoder.encode_columns(columns)
        fresh += time.perf_counter() - t0
    return {"the same parsed objects": same / calls * 1e6, "freshly parsed bodies": fresh / calls * 1e6}


class _Text:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> None:
        self.text += s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.profile_service", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("bundles/default"), help="bundle directory")
    p.add_argument("--batch", type=int, default=1, help="rows per request")
    p.add_argument("--body", choices=BODIES, default="columns", help="request shape (v2 = KServe v2 JSON)")
    p.add_argument("--requests", type=int, default=2000, help="requests per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the best is reported")
    p.add_argument("--thin", action="store_true", help="profile the thin reference app (columns bodies only)")
    p.add_argument("--log-level", default="info", help="the service's APG_LOG_LEVEL (warning: no access log)")
    p.add_argument("--profile", action="store_true", help="also print cProfile's top 30 functions by own time")
    p.add_argument("--onnx-only", action="store_true", help="time session.run alone, with hot and with cold caches")
    p.add_argument("--encode-only", action="store_true", help="time the encoder alone on columns bodies")
    args = p.parse_args(argv)
    if args.encode_only:
        for name, us in encode_only(args.bundle, args.batch, args.requests).items():
            print(f"encode_columns, batch {args.batch}, {name}: {us:.1f} µs")
        return 0
    if args.onnx_only:
        for name, us in onnx_only(args.bundle, args.batch, args.requests).items():
            print(f"session.run, batch {args.batch}, {name}: {us:.1f} µs")
        return 0
    if args.thin and args.body != "columns":
        p.error("--thin serves columns bodies only")
    try:
        import uvloop

        uvloop.install()  # as `apg serve` runs
    except ImportError:
        pass
    app, model = build(args.bundle.resolve(), args.thin, args.log_level)
    path, body = request_body(args.bundle, args.body, args.batch)
    path = path.replace("{name}", model)
    best, text = asyncio.run(drive(app, path, body, args.requests, args.rounds, args.profile))
    name = "thin reference" if args.thin else "service"
    print(
        f"{name}, {args.body} body, batch {args.batch}: {best * 1e6:.1f} µs per request in process "
        f"({args.batch / best:,.0f} rows/s), best of {args.rounds} x {args.requests}"
    )
    if text:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
