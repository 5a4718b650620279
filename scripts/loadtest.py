"""Open-loop load generator for `POST /score` and KServe v2 `infer` (`apg loadtest`).

Open loop: the send times are fixed before the run (constant or Poisson arrivals at `--rate`), and each request
starts at its scheduled time whether or not earlier ones have returned. Latency is measured from the *scheduled*
time, so time spent queueing behind a slow server, or behind the `--concurrency` cap, counts (no coordinated
omission); the service time from the actual send is recorded too. When the server cannot keep up, the achieved
rate (successful completions per second) falls below the target and the latency grows: both are reported as is.

    apg loadtest --url http://127.0.0.1:8000 --rate 200 --duration 20 --rows 16
    apg loadtest --sweep-start 50 --sweep-factor 2 --sweep-max 3200 --slo-ms 25   # find the knee

Request bodies are sampled from the bundle's fitted schema (vocabularies, bucket edges) and serialised before the
run. Results go to `--out`: summary.json, requests.csv (one line per request) and latency.png.
Only loopback hosts are loaded unless `--allow-remote` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ipaddress
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson

PERCENTILES = (50, 90, 95, 99, 99.9)


@dataclass(frozen=True)
class LoadConfig:
    url: str
    rate: float  # target requests/s
    duration: float = 10.0  # measured seconds (after the warm-up)
    warmup: float = 0.0  # seconds sent but excluded from the statistics
    arrivals: str = "poisson"  # constant | poisson
    concurrency: int = 64  # requests in flight at most (= HTTP connections)
    path: str = "/score"
    token: str | None = None
    timeout: float = 10.0  # per request, from the actual send
    drain: float = 10.0  # after the last scheduled send, wait this long for stragglers
    rows: int = 1  # rows per request (for rows/s)
    seed: int = 0


# ---------------------------------------------------------------- safety


def check_target(url: str, allow_remote: bool = False) -> None:
    """Refuse (ValueError) a URL whose host is not loopback, unless allow_remote. No name is resolved."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url must be an http(s) base URL such as http://127.0.0.1:8000, got {url!r}")
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if not loopback and not allow_remote:
        raise ValueError(f"refusing to load non-loopback host {host!r}; pass --allow-remote if that is intended")


# ---------------------------------------------------------------- schedule


def build_schedule(rate: float, duration: float, arrivals: str, seed: int = 0) -> np.ndarray:
    """Send times in seconds from the start, in [0, duration): evenly spaced, or a Poisson process at `rate`."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate} and {duration}")
    if arrivals == "constant":
        return np.arange(math.ceil(rate * duration - 1e-9)) / rate
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be 'constant' or 'poisson', got {arrivals!r}")
    rng = np.random.default_rng(seed)
    n = int(rate * duration + 8 * math.sqrt(rate * duration) + 16)  # enough gaps to pass `duration` almost surely
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    return times[times < duration]


# ---------------------------------------------------------------- request bodies


def load_schema(path: str | Path) -> tuple[dict, str | None]:
    """(fitted schema, model name) from a bundle directory, its bundle.json, or a bare schema.json."""
    p = Path(path)
    p = p / "bundle.json" if p.is_dir() else p
    if not p.exists():
        raise FileNotFoundError(f"no bundle at {path} (need a bundle directory or its bundle.json; see docs/BUNDLE.md)")
    doc = orjson.loads(p.read_bytes())
    schema = doc.get("schema", doc)
    if not isinstance(schema.get("fields"), list):
        raise ValueError(f"{p} holds no feature schema ('schema.fields')")
    return schema, (doc.get("model") or {}).get("name")


class RowSampler:
    """Raw request rows drawn from a fitted schema: vocabulary values (a fraction `unseen` of them unknown),
    numbers inside the bucket edges, 1-3 values of a multi-valued field. One value per raw feature (a field's
    `source`); fields derived from another field's source need none of their own."""

    def __init__(self, schema: dict, seed: int = 0, unseen: float = 0.02) -> None:
        self.rng = random.Random(seed)
        self.unseen = unseen
        by_source: dict[str, list[dict]] = {}
        for f in schema["fields"]:
            by_source.setdefault(f.get("source") or f["name"], []).append(f)
        # the field that generates a source: the first one that is not a mapping of it
        self.features = {s: next((f for f in fs if not f.get("mapping")), fs[0]) for s, fs in by_source.items()}

    @property
    def numeric(self) -> set[str]:
        return {s for s, f in self.features.items() if f["kind"] == "numeric"}

    def row(self) -> dict:
        return {source: self._value(f) for source, f in self.features.items()}

    def rows(self, n: int) -> list[dict]:
        return [self.row() for _ in range(n)]

    def _value(self, f: dict):
        rng = self.rng
        if f["kind"] == "numeric":
            lo, hi = min(f["edges"]), max(f["edges"])
            if all(float(e).is_integer() for e in f["edges"]):
                return rng.randint(int(lo), int(hi))
            return round(rng.uniform(lo, hi), 3)
        if f["kind"] == "multi":
            vocab = f.get("vocab") or []
            k = rng.randint(1, max(1, min(3, f.get("max_len") or 1, len(vocab))))
            values = [self._known_or_unseen(v) for v in (rng.sample(vocab, k) if vocab else [None] * k)]
            return f["sep"].join(values) if f.get("sep") else values
        if f.get("mapping"):  # a source only read by a derived field: use the keys it knows
            return self._known_or_unseen(rng.choice(list(f["mapping"])))
        value = self._known_or_unseen(rng.choice(f["vocab"]) if f.get("vocab") else None)
        if f.get("prefix"):  # the vocabulary holds prefixes (e.g. zip "55"): complete a full raw value
            value += "".join(rng.choice("0123456789") for _ in range(3))
        return value

    def _known_or_unseen(self, value: str | None) -> str:
        if value is None or self.rng.random() < self.unseen:
            return f"unseen-{self.rng.randrange(10**6)}"
        return value


def endpoint(fmt: str, model: str | None) -> str:
    if fmt == "v2":
        if not model:
            raise ValueError("--format v2 needs a model name: pass --model or use a bundle whose bundle.json names it")
        return f"/v2/models/{model}/infer"
    return "/score"


def encode_body(rows: list[dict], fmt: str, numeric: set[str] = frozenset()) -> bytes:
    """One request body: rows {"instances"}, columns {"inputs": {f: [...]}}, or v2 (one tensor per feature)."""
    if fmt == "rows":
        return orjson.dumps({"instances": rows})
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    if fmt == "columns":
        return orjson.dumps({"inputs": columns})
    if fmt != "v2":
        raise ValueError(f"format must be rows, columns or v2, got {fmt!r}")
    return orjson.dumps({"inputs": [_tensor(k, col, k in numeric) for k, col in columns.items()]})


def _tensor(name: str, col: list, numeric: bool) -> dict:
    if numeric:
        return {"name": name, "shape": [len(col)], "datatype": "FP64", "data": [float(v) for v in col]}
    if any(isinstance(v, list) for v in col):  # multi-valued without a separator: [B, K], padded with missing
        k = max(len(v) for v in col)
        data = [list(v) + [""] * (k - len(v)) for v in col]
        return {"name": name, "shape": [len(col), k], "datatype": "BYTES", "data": data}
    return {"name": name, "shape": [len(col)], "datatype": "BYTES", "data": col}


def build_bodies(sampler: RowSampler, fmt: str, rows: int, pool: int) -> list[bytes]:
    """`pool` distinct serialised bodies, cycled through during the run (built before it, so never timed)."""
    return [encode_body(sampler.rows(rows), fmt, sampler.numeric) for _ in range(pool)]


# ---------------------------------------------------------------- the run


@dataclass
class Records:
    """Per-request times in seconds from the run's start (NaN: did not happen); status 0 = no HTTP response."""

    scheduled: np.ndarray
    dispatched: np.ndarray = field(init=False)  # when the generator started the request (scheduler lag)
    sent: np.ndarray = field(init=False)  # when it got a connection slot and went out
    done: np.ndarray = field(init=False)
    status: np.ndarray = field(init=False)
    error: list[str | None] = field(
        init=False
    )  # http_<code> | timeout | connect | connection | unsent | cancelled | error_<exception>

    def __post_init__(self) -> None:
        n = len(self.scheduled)
        self.dispatched, self.sent, self.done = (np.full(n, np.nan) for _ in range(3))
        self.status = np.zeros(n, dtype=np.int64)
        self.error = [None] * n


async def run_load(cfg: LoadConfig, bodies: list[bytes], schedule: np.ndarray) -> Records:
    """Send bodies[i % len(bodies)] at schedule[i] (open loop) and record every request."""
    rec = Records(schedule)
    headers = {"content-type": "application/json"}
    if cfg.token:
        headers["authorization"] = f"Bearer {cfg.token}"
    limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
    async with httpx.AsyncClient(
        base_url=cfg.url, headers=headers, limits=limits, timeout=cfg.timeout, trust_env=False
    ) as client:
        gate = asyncio.Semaphore(cfg.concurrency)
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.01
        tasks = []
        for i, at in enumerate(schedule):
            delay = t0 + at - loop.time()
            await asyncio.sleep(max(delay, 0))  # 0: behind schedule, but let the sends run
            rec.dispatched[i] = loop.time() - t0
            tasks.append(asyncio.create_task(_send(client, gate, cfg, rec, i, bodies[i % len(bodies)], t0)))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=cfg.drain)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    return rec


async def _send(client, gate, cfg: LoadConfig, rec: Records, i: int, body: bytes, t0: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        async with gate:  # the concurrency cap: waiting here counts in the latency
            rec.sent[i] = loop.time() - t0
            async with asyncio.timeout(cfg.timeout):
                resp = await client.post(cfg.path, content=body)
            rec.status[i] = resp.status_code
            rec.error[i] = None if resp.is_success else f"http_{resp.status_code}"
    except (TimeoutError, httpx.TimeoutException):
        rec.error[i] = "timeout"
    except httpx.ConnectError:
        rec.error[i] = "connect"
    except httpx.TransportError:
        rec.error[i] = "connection"
    except asyncio.CancelledError:  # still outstanding when the drain time ran out
        rec.error[i] = "unsent" if np.isnan(rec.sent[i]) else "cancelled"
        raise
    except Exception as exc:  # anything else is still one failed request, named, not a crashed run
        rec.error[i] = f"error_{type(exc).__name__}"
    rec.done[i] = loop.time() - t0


async def wait_ready(url: str, timeout: float, token: str | None = None) -> None:
    """Poll GET /readyz until 200, or raise RuntimeError after `timeout` seconds."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    deadline, last = time.monotonic() + timeout, "no answer"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=2.0, trust_env=False) as client:
        while True:
            try:
                resp = await client.get("/readyz")
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/readyz not ready after {timeout:g} s ({last})")
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------- statistics


def _percentiles(ms: np.ndarray) -> dict[str, float | None]:
    values = np.percentile(ms, PERCENTILES) if len(ms) else [None] * len(PERCENTILES)
    out = {f"p{p:g}": (None if v is None else round(float(v), 3)) for p, v in zip(PERCENTILES, values, strict=True)}
    out["mean"] = round(float(ms.mean()), 3) if len(ms) else None
    out["max"] = round(float(ms.max()), 3) if len(ms) else None
    return out


def summarise(rec: Records, cfg: LoadConfig) -> dict:
    """Statistics of the requests scheduled after the warm-up. Latencies are of successful requests;
    achieved rate = successful completions per second inside the measured window."""
    lo, hi = cfg.warmup, cfg.warmup + cfg.duration
    measured = (rec.scheduled >= lo) & (rec.scheduled < hi)
    ok = np.array([e is None for e in rec.error]) & (rec.status > 0)
    errors: dict[str, int] = {}
    for i in np.flatnonzero(measured & ~ok):
        errors[rec.error[i]] = errors.get(rec.error[i], 0) + 1
    done_in_window = ok & (rec.done >= lo) & (rec.done < hi)
    achieved = int(done_in_window.sum()) / cfg.duration
    n = int(measured.sum())
    return {
        "target_rate": cfg.rate,
        "arrivals": cfg.arrivals,
        "rows_per_request": cfg.rows,
        "concurrency": cfg.concurrency,
        "duration_s": cfg.duration,
        "requests": n,
        "offered_rate": round(n / cfg.duration, 3),  # the realised schedule (Poisson counts vary around the target)
        "ok": int((measured & ok).sum()),
        "achieved_rate": round(achieved, 3),
        "rows_per_s": round(achieved * cfg.rows, 3),
        "sent_rate": round(int(((rec.sent >= lo) & (rec.sent < hi)).sum()) / cfg.duration, 3),
        "latency_ms": _percentiles(1000 * (rec.done - rec.scheduled)[measured & ok]),
        "service_ms": _percentiles(1000 * (rec.done - rec.sent)[measured & ok]),
        "dispatch_lag_ms": _percentiles(1000 * (rec.dispatched - rec.scheduled)[measured]),
        "errors": dict(sorted(errors.items())),
        "error_fraction": round(sum(errors.values()) / n, 6) if n else 0.0,
    }


def sweep_rates(args) -> list[float]:
    """--sweep R1,R2,... or the geometric --sweep-start/--sweep-factor/--sweep-max; [] for a single run."""
    if args.sweep:
        return [float(r) for r in args.sweep.split(",") if r.strip()]
    if args.sweep_start is None:
        return []
    if args.sweep_factor <= 1 or args.sweep_max is None:
        raise ValueError("a geometric sweep needs --sweep-factor > 1 and --sweep-max")
    rates, r = [], args.sweep_start
    while r <= args.sweep_max * (1 + 1e-9):
        rates.append(round(r, 6))
        r *= args.sweep_factor
    return rates


def passes(summary: dict, slo_ms: float, max_errors: float) -> bool:
    p99 = summary["latency_ms"]["p99"]
    return p99 is not None and p99 <= slo_ms and summary["error_fraction"] <= max_errors


def find_knee(summaries: list[dict], slo_ms: float, max_errors: float) -> float | None:
    """The highest offered rate whose p99 <= slo_ms and error fraction <= max_errors (None: no such rate)."""
    good = [s["target_rate"] for s in summaries if passes(s, slo_ms, max_errors)]
    return max(good) if good else None


# ---------------------------------------------------------------- output


def format_table(summaries: list[dict]) -> str:
    head = f"{'target/s':>9} {'achieved':>9} {'rows/s':>9} {'sent/s':>8} " + " ".join(
        f"{f'p{p:g}':>7}" for p in PERCENTILES
    )
    lines = [head + f" {'svc p50':>7} {'svc p99':>7} {'lag p99':>7} {'err %':>6}  errors", "-" * (len(head) + 40)]
    for s in summaries:
        lat = " ".join(_ms(s["latency_ms"][f"p{p:g}"]) for p in PERCENTILES)
        svc = f"{_ms(s['service_ms']['p50'])} {_ms(s['service_ms']['p99'])} {_ms(s['dispatch_lag_ms']['p99'])}"
        errs = ", ".join(f"{k}={v}" for k, v in s["errors"].items()) or "-"
        lines.append(
            f"{s['target_rate']:9.1f} {s['achieved_rate']:9.1f} {s['rows_per_s']:9.0f} {s['sent_rate']:8.1f} "
            f"{lat} {svc} {100 * s['error_fraction']:6.2f}  {errs}"
        )
    return (
        "\n".join(lines)
        + "\n(ms; latency from the scheduled send time, of successful requests; svc = from the actual send;"
        "\n lag = how late the generator itself started requests: large values mean it is short of CPU)"
    )


def _ms(v: float | None) -> str:
    return f"{v:7.2f}" if v is not None else f"{'-':>7}"


def write_csv(path: Path, runs: list[tuple[dict, Records]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["target_rate", "index", "scheduled_s", "sent_s", "done_s", "latency_ms", "service_ms", "status", "error"]
        )
        for summary, rec in runs:
            lat, svc = 1000 * (rec.done - rec.scheduled), 1000 * (rec.done - rec.sent)
            for i in range(len(rec.scheduled)):
                cells = (
                    "" if np.isnan(v) else f"{v:.6f}"
                    for v in (rec.scheduled[i], rec.sent[i], rec.done[i], lat[i], svc[i])
                )
                w.writerow([summary["target_rate"], i, *cells, int(rec.status[i]), rec.error[i] or ""])


def plot(path: Path, runs: list[tuple[dict, Records]], meta: dict) -> None:
    """Sweep: latency percentiles, and achieved vs offered rate. Single run: latency over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if meta["sweep"]:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=(2, 1))
        _plot_sweep(ax, ax2, [s for s, _ in runs], meta["slo_ms"], meta["knee_rate"])
    else:
        fig, ax = plt.subplots(figsize=(9, 5))
        _plot_run(ax, *runs[0], meta["warmup_s"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sweep(ax, ax2, summaries: list[dict], slo_ms: float, knee: float | None) -> None:
    rates = [s["target_rate"] for s in summaries]
    for p in PERCENTILES:
        ax.plot(rates, [s["latency_ms"][f"p{p:g}"] or np.nan for s in summaries], marker="o", label=f"p{p:g}")
    ax.axhline(slo_ms, color="grey", ls="--", label=f"SLO {slo_ms:g} ms")
    for a in (ax, ax2) if knee is not None else ():
        a.axvline(knee, color="green", ls=":", label=f"knee {knee:g}/s")
    ax.set(xscale="log", yscale="log", ylabel="latency from scheduled send (ms)")
    ax.legend(fontsize=8)
    ax2.plot(rates, rates, color="grey", ls="--", label="offered")
    ax2.plot(rates, [s["achieved_rate"] for s in summaries], color="black", marker="x", label="achieved (ok/s)")
    ax2.set(xscale="log", yscale="log", xlabel="offered rate (requests/s)", ylabel="requests/s")
    ax2.legend(fontsize=8)


def _plot_run(ax, summary: dict, rec: Records, warmup: float) -> None:
    lat, svc = 1000 * (rec.done - rec.scheduled), 1000 * (rec.done - rec.sent)
    ax.plot(rec.scheduled, lat, ".", ms=2, label="latency from scheduled send")
    ax.plot(rec.scheduled, svc, ".", ms=2, alpha=0.5, label="service time (from actual send)")
    bad = np.array([e is not None for e in rec.error], dtype=bool)
    ax.plot(rec.scheduled[bad], np.full(bad.sum(), np.nanmax(lat, initial=1.0)), "rx", label="errors")
    ax.axvspan(0, warmup, color="grey", alpha=0.15, label="warm-up (excluded)")
    ax.set(yscale="log", xlabel="scheduled send time (s)", ylabel="latency (ms)")
    ax.set_title(f"target {summary['target_rate']:g}/s, achieved {summary['achieved_rate']:g}/s")
    ax.legend(loc="upper left", fontsize=8)


def write_results(out: Path, runs: list[tuple[dict, Records]], meta: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "summary.json", "csv": out / "requests.csv", "png": out / "latency.png"}
    doc = {**meta, "runs": [s for s, _ in runs]}
    files["json"].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    write_csv(files["csv"], runs)
    plot(files["png"], runs, meta)
    return files


# ---------------------------------------------------------------- command line


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
    """The options of `apg loadtest` (also `python -m scripts.loadtest`)."""
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
        "--format", choices=["rows", "columns", "v2"], default="rows", help="body: /score rows or columns, or v2 infer"
    )
    p.add_argument("--model", help="model name for --format v2 (default: the bundle's model name)")
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


def run_from_args(args) -> int:
    """`apg loadtest`: one run at --rate, or a sweep; prints the table and writes --out. Raises ValueError,
    FileNotFoundError or RuntimeError with a message for the user (a refused target, a missing bundle, no server)."""
    check_target(args.url, args.allow_remote)
    rates = sweep_rates(args) or [args.rate]
    planned = sum(r * (args.duration + args.warmup) for r in rates)
    if planned > args.max_requests:
        raise ValueError(f"the plan sends about {planned:.0f} requests, over --max-requests {args.max_requests}")
    schema, bundle_model = load_schema(args.bundle)
    path = endpoint(args.format, args.model or bundle_model)
    bodies = build_bodies(RowSampler(schema, args.seed, args.unseen), args.format, args.rows, args.pool)
    token = args.token or os.environ.get("APG_AUTH_TOKEN")
    asyncio.run(wait_ready(args.url, args.ready_timeout, token))
    base = LoadConfig(
        url=args.url,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        arrivals=args.arrivals,
        concurrency=args.concurrency,
        path=path,
        token=token,
        timeout=args.timeout,
        drain=args.drain if args.drain is not None else args.timeout,
        rows=args.rows,
        seed=args.seed,
    )
    runs = run_rates(base, rates, bodies, args)
    knee = find_knee([s for s, _ in runs], args.slo_ms, args.max_errors) if len(rates) > 1 else None
    print(format_table([s for s, _ in runs]))
    if len(rates) > 1:
        met = f"{knee:g} req/s" if knee is not None else "no offered rate met the SLO"
        print(f"knee: {met} (p99 <= {args.slo_ms:g} ms, errors <= {args.max_errors:g})")
    meta = {"url": args.url, "path": path, "format": args.format, "bundle": str(args.bundle), "seed": args.seed,
            "warmup_s": args.warmup, "slo_ms": args.slo_ms, "max_errors": args.max_errors,
            "sweep": len(rates) > 1, "knee_rate": knee}  # fmt: skip
    files = write_results(Path(args.out), runs, meta)
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def run_rates(base: LoadConfig, rates: list[float], bodies: list[bytes], args) -> list[tuple[dict, Records]]:
    """One run per rate, in order; a sweep stops after the first rate that misses the SLO unless --sweep-all."""
    runs: list[tuple[dict, Records]] = []
    for rate in rates:
        cfg = replace(base, rate=rate)
        schedule = build_schedule(rate, cfg.warmup + cfg.duration, cfg.arrivals, cfg.seed)[: args.max_requests]
        print(f"{rate:g} req/s x {cfg.rows} rows: {len(schedule)} requests ({cfg.arrivals}) -> {cfg.url}{cfg.path}")
        rec = asyncio.run(run_load(cfg, bodies, schedule))
        runs.append((summarise(rec, cfg), rec))
        if len(rates) > 1 and not args.sweep_all and not passes(runs[-1][0], args.slo_ms, args.max_errors):
            print(f"{rate:g} req/s misses the SLO: sweep stopped (--sweep-all to go on)")
            break
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.loadtest",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_from_args(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
