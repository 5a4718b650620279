"""The HTTP side of `apg bench`: the measured paths and their request bytes, the thin app's command, and the
service's own stage metrics. The servers, the client and the v2 bodies are the tools' own (scripts/clients/).

    raw = request_bytes(path, rows, sampler.numeric, model)     # a whole HTTP/1.1 request for one of PATHS
    before = scrape(port); ...; stage_means(before, scrape(port), "/score")
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from scripts.clients.http import HOST, Connection, build_request
from scripts.clients.v2 import V2_HEADER, binary_body, to_tensors
from scripts.loadtest.plan import encode_body

# ---------------------------------------------------------------- request bodies


@dataclass(frozen=True)
class HttpPath:
    """One measured HTTP path: which server, which route, how rows become a body."""

    name: str
    server: str  # "service", "thin" or "mlserver"
    route: str  # "score" or "v2"
    fmt: str  # rows | columns | v2 | v2-binary

    @property
    def template(self) -> str:
        """The route as the service's metrics label it."""
        return "/v2/models/{name}/infer" if self.route == "v2" else "/score"


PATHS = (
    HttpPath("score-rows", "service", "score", "rows"),
    HttpPath("score-columns", "service", "score", "columns"),
    HttpPath("v2-json", "service", "v2", "v2"),
    HttpPath("v2-binary", "service", "v2", "v2-binary"),
    HttpPath("thin-columns", "thin", "score", "columns"),
)
# apg bench --mlserver: MLServer's v2 endpoint, sent the very bytes of "v2-json" (same model name, same rows)
MLSERVER_PATH = HttpPath("mlserver-v2-json", "mlserver", "v2", "v2")


def request_bytes(path: HttpPath, rows: list[dict], numeric: set[str], model: str) -> bytes:
    """A whole HTTP/1.1 request (head + body) for `rows` on `path`."""
    url = path.template.replace("{name}", model)
    if path.fmt == "v2-binary":
        body, header_len = binary_body(to_tensors(rows, numeric))
        return build_request(url, body, "application/octet-stream", {V2_HEADER: str(header_len)})
    return build_request(url, encode_body(rows, path.fmt, numeric))


def thin_command(bundle: Path, port: int) -> list[str]:
    """The thin app's server (scripts/bench/thin.py), for Servers.start."""
    return [sys.executable, "-m", "scripts.bench.thin", "--bundle", str(bundle), "--host", HOST, "--port", str(port)]


# ---------------------------------------------------------------- the service's own metrics


SCRAPED = {  # family → (kind, the label that names the series)
    "apg_stage_duration_seconds": ("stage", "stage"),
    "apg_request_duration_seconds": ("route", "route"),
    "apg_item_store_lookup_seconds": ("lookup", "model"),
}


def scrape(port: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(("stage", parse|preprocess|...), ("route", template) or ("lookup", model)) → (sum seconds, count) from
    GET /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with Connection(port) as conn:
        status, _, body = conn.get("/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    out: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        kind, label = SCRAPED.get(family.name, (None, None))
        for sample in family.samples if kind else ():
            slot = 0 if sample.name.endswith("_sum") else 1 if sample.name.endswith("_count") else None
            if slot is not None:
                out.setdefault((kind, sample.labels[label]), [0.0, 0.0])[slot] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def stage_means(before: dict, after: dict, route: str) -> dict[str, float]:
    """Mean ms per request of each stage observed between two scrapes, and of the whole request on `route`
    (key "request"; the route template, e.g. "/score"): other routes, such as the scrape itself, are left out; and
    the item store's mean ms per lookup (key "lookup", when there were lookups: one per request that needed it)."""
    out = {}
    for (kind, name), (s1, c1) in after.items():
        s0, c0 = before.get((kind, name), (0.0, 0.0))
        if c1 > c0 and (kind in ("stage", "lookup") or name == route):
            key = {"stage": name, "lookup": "lookup"}.get(kind, "request")
            out[key] = round(1000 * (s1 - s0) / (c1 - c0), 4)
    return out
