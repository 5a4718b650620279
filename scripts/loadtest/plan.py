"""The plan of a load test (`apg loadtest`): where it may go, when each request leaves, what each one carries.

    check_target("http://127.0.0.1:8000")                  # refuses non-loopback hosts unless allowed
    build_schedule(200, 10, "poisson", seed=0)              # send times in seconds from the start
    schema, model = read_schema("bundles/default")          # features: the bundle's schema, and its sampler
    bodies = build_bodies(RowSampler(schema), "columns", rows=16, pool=256)
    context, items = context_features(schema.to_dict())     # the user side and the item side of its features

Everything here is pure (no network) and runs before the first request is sent, so none of it is timed.
"""

from __future__ import annotations

import ipaddress
import math
from urllib.parse import urlsplit

import numpy as np
import orjson

from features import RowSampler
from scripts.clients.v2 import json_body, to_tensors
from scripts.loadtest.args import FORMATS

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


def endpoint(fmt: str, model: str | None) -> str:
    if fmt == "v2":
        if not model:
            raise ValueError("--format v2 needs a model name: pass --model or use a bundle whose bundle.json names it")
        return f"/v2/models/{model}/infer"
    return "/score"


USER_PROFILE = ("age", "gender", "occupation", "zip_code")


def context_features(schema: dict) -> tuple[list[str], list[str]]:
    """(user-side raw features, item-side raw features), each in schema order: the schema's user column, every
    feature whose name says "user" (the convention of /score's OpenAPI ranking example) and the MovieLens user profile
    (age, gender, occupation, zip code: one value per user in u.user) are the user's; every other feature describes
    the item. ValueError when one side is empty."""
    sources = list(dict.fromkeys(f.get("source") or f["name"] for f in schema["fields"]))
    user = schema.get("user_column")
    context = [s for s in sources if s == user or "user" in s or s in USER_PROFILE]
    items = [s for s in sources if s not in context]
    if not context or not items:
        raise ValueError(f"cannot split the features {sources} into a user side and an item side")
    return context, items


def encode_body(
    rows: list[dict],
    fmt: str,
    numeric: set[str] = frozenset(),
    context: tuple[str, ...] = (),
    model: str | None = None,
    id_column: str = "item_id",
) -> bytes:
    """One request body: rows {"instances"}, columns {"inputs": {f: [...]}}, ranking (the first row's `context`
    features, e.g. the user, against every row's others as candidates: one user per request, as an experiment's
    split wants), ranking-ids (the same context against the rows' `id_column` values alone: candidates by id, whose
    item features the service's item store gives), or v2 (one tensor per feature: scripts/clients/v2.py). `model`
    pins a /score body to one model."""
    pin = {"model": model} if model else {}
    if fmt == "rows":
        return orjson.dumps({"instances": rows, **pin})
    if fmt in ("ranking", "ranking-ids"):
        shared = {k: rows[0][k] for k in context if k in rows[0]}
        if fmt == "ranking-ids":
            return orjson.dumps({"context": shared, "candidates": [r[id_column] for r in rows], **pin})
        candidates = [{k: v for k, v in r.items() if k not in shared} for r in rows]
        return orjson.dumps({"context": shared, "candidates": candidates, **pin})
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    if fmt == "columns":
        return orjson.dumps({"inputs": columns, **pin})
    if fmt != "v2":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return json_body(to_tensors(rows, numeric))


def build_bodies(
    sampler: RowSampler,
    fmt: str,
    rows: int,
    pool: int,
    context: tuple[str, ...] = (),
    model: str | None = None,
    id_column: str = "item_id",
) -> list[bytes]:
    """`pool` distinct serialised bodies, cycled through during the run (built before it, so never timed). With
    ranking-ids, the ids are the sampler's values of `id_column`: drawn from the bundle's vocabulary (a fraction
    `unseen` of them unknown: misses, as real traffic has)."""
    if fmt == "ranking-ids" and id_column not in sampler.features:
        raise ValueError(f"--id-column {id_column!r} is not a feature of the bundle ({', '.join(sampler.features)})")
    return [encode_body(sampler.rows(rows), fmt, sampler.numeric, context, model, id_column) for _ in range(pool)]
