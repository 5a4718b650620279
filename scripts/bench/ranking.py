"""The ranking section of `apg bench`: one user scored against N candidate items, sent to /score in three shapes,
at each N of --ranking (default 100, 300, 1000):

    rows      {"instances": [{user features..., item features...}, ...]}       the user's values repeated N times
    columns   {"inputs": {feature: [N values]}}                                the same, column by column
    ranking   {"context": {user features}, "candidates": [{item features}, ...]}   the user's values sent once

For each shape: request bytes, p50/p99 per request, rows/s and its ratio to the floor at batch N (session.run on
the N pre-encoded rows). The three answers to the same user and items must be the same scores (checked before
timing, with the floor's too: RuntimeError otherwise).

Which features are the user's: `context_features` (scripts/loadtest/plan.py, also `apg loadtest --format
ranking-ids`'s): the schema's user column, every feature whose name says "user", and the MovieLens user profile
(age, gender, occupation, zip code); every other feature describes the item.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson

from features import RowSampler
from scripts.bench.measure import Budget, measure_path, stats, timed
from scripts.clients.http import Connection, build_request
from scripts.loadtest.plan import context_features, encode_body

__all__ = ["SHAPES", "context_features", "measure_ranking", "ranking_requests", "same_scores"]

SHAPES = ("rows", "columns", "ranking")
TOLERANCE = 1e-6  # the same float32 scores, whatever the request shape


def ranking_requests(sampler: RowSampler, context: list[str], n: int, pool: int) -> dict:
    """{"rows": [...N full rows per request], "bodies": {shape: [request bytes, ...]}}: `pool` users, N items each."""
    out: dict = {"rows": [], "bodies": {s: [] for s in SHAPES}}
    for _ in range(pool):
        user = {k: v for k, v in sampler.row().items() if k in context}
        items = [{k: v for k, v in r.items() if k not in context} for r in sampler.rows(n)]
        rows = [{**user, **item} for item in items]
        out["rows"].append(rows)
        bodies = {
            "rows": encode_body(rows, "rows"),
            "columns": encode_body(rows, "columns"),
            "ranking": orjson.dumps({"context": user, "candidates": items}),
        }
        for shape, body in bodies.items():
            out["bodies"][shape].append(build_request("/score", body))
    return out


def same_scores(port: int, bodies: dict[str, bytes], floor_scores: np.ndarray) -> float:
    """The largest difference between the three shapes' answers and the floor's; RuntimeError beyond TOLERANCE."""
    answers = {"floor": np.asarray(floor_scores, dtype=np.float64).reshape(-1)}
    with Connection(port) as conn:
        for shape, raw in bodies.items():
            status, _, body = conn.request(raw)
            if status != 200:
                raise RuntimeError(f"ranking, shape {shape}: HTTP {status}: {body[:300]!r}")
            answers[shape] = np.asarray(orjson.loads(body)["scores"], dtype=np.float64)
    diff = max(float(np.max(np.abs(a - answers["rows"]))) for a in answers.values())
    if diff > TOLERANCE:
        raise RuntimeError(f"ranking: the shapes' scores differ by {diff:.3g} (> {TOLERANCE:g}) for one user")
    return diff


def measure_ranking(port: int, bundle, floor: Callable, sizes, budget: Budget, pool: Callable, pin: Callable) -> dict:
    """{"context": [...], "items": [...], "by_n": {N: {"floor": stats, shape: cell, "max_abs_diff": x}}} for the
    service on `port` serving `bundle` (service.bundle.Bundle); pool(N) users per N; pin(cpu) before the floor (0)
    and before the client (1): --pin's placement, or nothing."""
    schema = bundle.manifest["schema"]
    context, items = context_features(schema)
    sampler = RowSampler(schema, seed=2)
    out: dict = {"context": context, "items": items, "by_n": {}}
    for n in sizes:
        reqs = ranking_requests(sampler, context, n, pool(n))
        feeds = [bundle.encoder.encode_rows(rows) for rows in reqs["rows"]]
        pin(0)
        cell: dict = {"floor": stats(*timed(floor, feeds, budget), n)}
        pin(1)
        cell["max_abs_diff"] = same_scores(port, {s: b[0] for s, b in reqs["bodies"].items()}, floor(feeds[0])[0])
        for shape in SHAPES:
            cell[shape] = measure_path(port, reqs["bodies"][shape], n, budget, None)[0]
        out["by_n"][str(n)] = cell
    return out
