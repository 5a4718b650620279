"""The plan of a load test (`apg loadtest`): where it may go, when each request leaves, what each one carries.

    check_target("http://127.0.0.1:8000")                  # refuses non-loopback hosts unless allowed
    build_schedule(200, 10, "poisson", seed=0)              # send times in seconds from the start
    schema, model = load_schema("bundles/default")
    bodies = build_bodies(RowSampler(schema), "columns", rows=16, pool=256)

Everything here is pure (no network) and runs before the first request is sent, so none of it is timed.
"""

from __future__ import annotations

import ipaddress
import math
import random
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import orjson

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
