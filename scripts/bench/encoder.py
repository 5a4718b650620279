"""The encoder in process, per field: what each feature of a request costs before onnxruntime sees it.

    python -m scripts.bench.encoder --bundle bundles/default --batch 1024 --pin 0

Times (best of --rounds, each the mean of --calls calls, memos warm) at one batch size: orjson parse of a columns and
a rows body, encode_columns and encode_rows in total, every field of the columns path alone, and onnxruntime's
session.run on the encoded batch (the floor the encoder is measured against). Prints a table, writes JSON (and a bar
chart with --plot). Rows come from features.RowSampler, as the load tester sends them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import orjson

from features import Encoder, RowSampler, read_schema


def best_us(fn, calls: int, rounds: int) -> float:
    """Best over rounds of the mean µs per call."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def _parse_us(bodies: list[bytes], rounds: int) -> float:
    return best_us(lambda: [orjson.loads(b) for b in bodies], 1, rounds) / len(bodies)


def best_fresh_us(fn, bodies: list[bytes], rounds: int) -> float:
    """Best over rounds of the mean µs of fn(parsed body), each body parsed anew before the round (untimed): the
    objects are new, as in a server, so string hashes are not cached from an earlier call."""
    best = float("inf")
    for _ in range(rounds + 1):  # the first round warms the memos
        parsed = [orjson.loads(b) for b in bodies]
        t0 = time.perf_counter()
        for doc in parsed:
            fn(doc)
        best = min(best, (time.perf_counter() - t0) / len(parsed))
    return best * 1e6


def measure(bundle: Path, batch: int, calls: int, rounds: int, onnx: bool = True, encoder=None) -> dict:
    schema, _ = read_schema(bundle)
    sampler = RowSampler(schema, seed=0)
    pool = [sampler.rows(batch) for _ in range(calls)]
    rows_bodies = [orjson.dumps({"instances": rows}) for rows in pool]
    columns_bodies = [orjson.dumps({"inputs": {k: [r[k] for r in rows] for k in rows[0]}}) for rows in pool]
    enc = encoder(schema.to_dict()) if encoder else Encoder(schema)
    out = {
        "batch": batch,
        "bodies": calls,
        "parse_columns_us": _parse_us(columns_bodies, rounds),
        "parse_rows_us": _parse_us(rows_bodies, rounds),
        "encode_columns_us": best_fresh_us(lambda doc: enc.encode_columns(doc["inputs"]), columns_bodies, rounds),
        "encode_rows_us": best_fresh_us(lambda doc: enc.encode_rows(doc["instances"]), rows_bodies, rounds),
        "fields_us": {
            f.name: best_fresh_us(
                lambda doc, f=f: enc._encode_field(f, doc["inputs"][f.source], True), columns_bodies, rounds
            )
            for f in enc.fields
        },
        "kinds": {f.name: f.kind for f in enc.fields},
    }
    columns = orjson.loads(columns_bodies[0])["inputs"]
    out["rows_over_columns"] = out["encode_rows_us"] / out["encode_columns_us"]
    if onnx:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        feeds = enc.encode_columns(columns)
        out["onnxruntime_us"] = best_us(lambda: session.run(["score"], feeds), max(1, calls // 10), rounds)
    return out


def report(r: dict) -> str:
    lines = [
        f"batch {r['batch']}: µs per call, best of rounds",
        f"  parse   columns {r['parse_columns_us']:8.1f}   rows {r['parse_rows_us']:8.1f}",
        f"  encode  columns {r['encode_columns_us']:8.1f}   rows {r['encode_rows_us']:8.1f}"
        f"   (rows / columns = {r['rows_over_columns']:.2f})",
    ]
    if "onnxruntime_us" in r:
        lines.append(f"  onnxruntime session.run {r['onnxruntime_us']:8.1f}")
    lines.append("  per field (columns path):")
    lines += [f"    {name:16s} {r['kinds'][name]:11s} {us:8.1f}" for name, us in r["fields_us"].items()]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["fields_us"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(names, [r["fields_us"][n] for n in names], color="#4c72b0")
    ax.set_xlabel(f"µs per field at batch {r['batch']} (encode_columns path)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench.encoder",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--bundle", type=Path, default=Path("bundles/default"), help="bundle directory")
    p.add_argument("--batch", type=int, default=1024, help="rows per request")
    p.add_argument("--calls", type=int, default=50, help="distinct request bodies, each encoded once per round")
    p.add_argument("--rounds", type=int, default=7, help="rounds; the best is reported")
    p.add_argument("--pin", type=int, help="pin this process to one CPU core (as the server core)")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime floor")
    p.add_argument("--encoder", help="module:Class of another encoder with the same API (a before/after comparison)")
    p.add_argument("--json", type=Path, help="write the measurements here")
    p.add_argument("--plot", type=Path, help="write a bar chart of the per-field times here")
    args = p.parse_args(argv)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    encoder = None
    if args.encoder:
        module, _, name = args.encoder.partition(":")
        encoder = getattr(importlib.import_module(module), name)
    r = measure(args.bundle, args.batch, args.calls, args.rounds, not args.no_onnx, encoder)
    print(report(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    if args.plot:
        plot(r, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
