"""Timing for `apg bench`: closed-loop call loops with bounded time and counts, the onnxruntime floor, the HTTP
paths, the batch-1 open-loop sweep, and torch eager for the same model (torch imported only here, and only when
a run directory is given).

    lat, wall = timed(call, items, budget)       # per-call seconds, wall seconds of the measured calls
    stats(lat, wall, rows)                       # p50/p99/mean ms, requests/s, rows/s
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from features import RowSampler
from scripts.bench.http_io import scrape, stage_means
from scripts.clients.http import HOST, Connection, build_request
from scripts.clients.v2 import count_scores
from scripts.loadtest.latency_report import find_knee, passes, summarise
from scripts.loadtest.plan import build_bodies, build_schedule
from scripts.loadtest.raw_engine import open_loop
from scripts.loadtest.records import LoadConfig

MIN_CALLS = 5


@dataclass(frozen=True)
class Budget:
    """Per measured cell: warm-up seconds (at least 2 calls), then up to `duration` s and `iterations` calls."""

    duration: float
    iterations: int
    warmup: float


def timed(call: Callable, items: Sequence, budget: Budget) -> tuple[np.ndarray, float]:
    """call(items[i % len(items)]) back to back (closed loop, one at a time)."""
    clock, n, i = time.perf_counter, len(items), 0
    end = clock() + budget.warmup
    while i < 2 or clock() < end:
        call(items[i % n])
        i += 1
    lat = []
    t0 = clock()
    stop = t0 + budget.duration
    while len(lat) < budget.iterations:
        a = clock()
        call(items[i % n])
        b = clock()
        lat.append(b - a)
        i += 1
        if b >= stop and len(lat) >= MIN_CALLS:
            break
    return np.array(lat), clock() - t0


def stats(lat: np.ndarray, wall: float, rows: int) -> dict:
    ms = 1000 * lat
    return {
        "calls": len(lat),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "requests_per_s": round(len(lat) / wall, 2),
        "rows_per_s": round(rows * len(lat) / wall, 1),
    }


# ---------------------------------------------------------------- (a) the floor


def floor_model(bundle: Path, threads: int):
    """The service's own loader (same graph, session options and warm-up) in this process, on the CPU."""
    from service.runtime import load_model
    from service.settings import Settings

    return load_model(bundle, Settings(bundle=bundle, providers="cpu", intra_op_threads=threads))


def floor_call(model) -> Callable[[dict], object]:
    session = model.session
    return lambda feeds: session.run(["score"], feeds)


# ---------------------------------------------------------------- (b) HTTP paths, (c) the batch-1 sweep


def measure_path(port: int, reqs: list[bytes], rows: int, budget: Budget, route: str | None) -> tuple[dict, dict]:
    """Closed loop on one keep-alive connection; with `route` (the service's route template), the service's
    stage means over the same requests from its /metrics."""
    with Connection(port) as conn:
        status, headers, body = conn.request(reqs[0])
        if status != 200 or count_scores(headers, body) != rows:
            raise RuntimeError(f"port {port}, batch {rows}: HTTP {status}, answer {body[:300]!r}")

        def call(raw: bytes) -> None:
            status, _, body = conn.request(raw)
            if status != 200:
                raise RuntimeError(f"port {port}, batch {rows}: HTTP {status}: {body[:300]!r}")

        before = scrape(port) if route else {}
        cell = stats(*timed(call, reqs, budget), rows)
        stages = stage_means(before, scrape(port), route) if route else {}
    cell["request_bytes"] = round(sum(map(len, reqs)) / len(reqs))
    return cell, stages


def sweep_batching(
    ports: dict[str, int], schema, rates, duration: float, slo_ms: float, max_errors: float, say=None
) -> dict:
    """(c) batch-1 /score rows at each rate (Poisson, open loop: raw_engine.open_loop, summarised like
    scripts/loadtest's runs) against the service without and with micro-batching (ports {"off": .., "on": ..});
    a sweep stops after the first rate missing the SLO."""
    bodies = build_bodies(RowSampler(schema, seed=1), "rows", 1, 256)
    raws = [build_request("/score", body) for body in bodies]
    warmup = min(1.0, duration / 2)
    out: dict = {"slo_ms": slo_ms, "max_errors": max_errors, "duration_s": duration}
    out["warmup_s"], out["rates"] = warmup, list(rates)
    for mode, port in ports.items():
        runs = []
        before = scrape(port)
        for rate in rates:
            lc = LoadConfig(
                url=f"http://127.0.0.1:{port}",
                rate=rate,
                duration=duration,
                warmup=warmup,
                concurrency=64,
                timeout=5.0,
                drain=2.0,
                rows=1,
            )
            schedule = build_schedule(rate, warmup + duration, "poisson")
            rec = open_loop(HOST, port, raws, schedule, lc.concurrency, timeout=lc.timeout, drain=lc.drain)
            runs.append(summarise(rec, lc))
            if say is not None:
                say(mode, runs[-1])
            if not passes(runs[-1], slo_ms, max_errors):
                break
        reached = passes(runs[-1], slo_ms, max_errors)  # the top rate passed: the knee is a lower bound
        out[mode] = {
            "runs": runs,
            "knee_rate": find_knee(runs, slo_ms, max_errors),
            "knee_is_lower_bound": reached,
            "stages": stage_means(before, scrape(port), "/score"),
        }
    return out


# ---------------------------------------------------------------- (d) torch eager


class TorchModel:
    """The run's model as exported (over-parameterised factors merged), on `threads` torch threads."""

    def __init__(self, run_dir: Path, bundle_schema: dict, threads: int) -> None:
        import torch

        from model.apg import merge_overparam
        from model.evaluate import to_tensors
        from model.train import load_run

        model, _, _ = load_run(run_dir)  # FileNotFoundError with a message for a non-run
        if orjson.loads((Path(run_dir) / "schema.json").read_bytes()) != bundle_schema:
            raise ValueError(f"--run {run_dir} was fitted on another schema than the bundle's: not the same model")
        self.torch, self.to_tensors = torch, to_tensors
        self.model = merge_overparam(model).eval()
        self.threads = threads

    def __enter__(self) -> TorchModel:
        self._previous = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        self._mode = self.torch.inference_mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self.torch.set_num_threads(self._previous)

    def inputs(self, feeds: dict[str, np.ndarray]) -> dict:
        return self.to_tensors(feeds)

    def __call__(self, tensors: dict) -> np.ndarray:
        return self.model(tensors).numpy()


def measure_torch(run_dir: Path, bundle_schema: dict, threads: int, batches: dict, floor, budget: Budget) -> dict:
    """{batch: stats + parity with the floor}; batches = {batch size: [feeds, ...]} (pre-encoded, as the floor's)."""
    out = {}
    with TorchModel(run_dir, bundle_schema, threads) as model:
        for b, feeds_list in batches.items():
            tensors = [model.inputs(f) for f in feeds_list]
            diff = float(np.max(np.abs(model(tensors[0]) - floor(feeds_list[0])[0])))
            out[b] = {**stats(*timed(model, tensors, budget), b), "max_abs_diff_vs_onnx": diff}
    return out
