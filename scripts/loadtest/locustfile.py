"""A Locust user that POSTs realistic rows (sampled from the bundle's vocabularies) to /score.

    locust -f scripts/loadtest/locustfile.py --host http://127.0.0.1:8000 --users 32 --spawn-rate 8 --run-time 60s \
        --headless

Locust is CLOSED-LOOP: each simulated user sends a request, waits for its response, then sends the next one.
When the service slows down, Locust slows its sending down with it, so the requests that would have queued are
never sent and never measured (coordinated omission): under overload it under-reports latency compared with
`apg loadtest`, which is open-loop (requests leave on a fixed schedule; latency is counted from the scheduled time).
Use `apg loadtest` for latency/throughput numbers and the knee; use Locust for its UI and user-ramp scenarios.

Environment: APG_LOCUST_BUNDLE (default bundles/default), APG_LOCUST_ROWS rows per request (1),
APG_LOCUST_FORMAT rows|columns (rows), APG_LOCUST_SEED (0), APG_AUTH_TOKEN (bearer token, if the service needs one),
APG_LOCUST_ALLOW_REMOTE=1 to load a non-loopback host (refused otherwise).
Locust is not a dependency of this project: `pip install locust`.
"""

from __future__ import annotations

import os
import random

try:
    from locust import HttpUser, constant, task
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "scripts/loadtest/locustfile.py needs Locust, which this project does not install: pip install locust"
    ) from exc

from features import RowSampler, read_schema
from scripts.loadtest.plan import build_bodies, check_target

_BODIES: list[bytes] = []  # built once per process, on the first user's start (never at import)


def _bodies() -> list[bytes]:
    if not _BODIES:
        schema, _ = read_schema(os.environ.get("APG_LOCUST_BUNDLE", "bundles/default"))
        sampler = RowSampler(schema, seed=int(os.environ.get("APG_LOCUST_SEED", "0")))
        fmt, rows = os.environ.get("APG_LOCUST_FORMAT", "rows"), int(os.environ.get("APG_LOCUST_ROWS", "1"))
        _BODIES.extend(build_bodies(sampler, fmt, rows, pool=256))
    return _BODIES


class ScoreUser(HttpUser):
    """One closed-loop client: POST /score, wait for the answer, repeat (no think time)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        try:
            check_target(self.host, allow_remote=os.environ.get("APG_LOCUST_ALLOW_REMOTE") == "1")
        except ValueError as exc:  # the user stops before its first request
            raise ValueError(f"{exc} (here: APG_LOCUST_ALLOW_REMOTE=1)") from None
        self.bodies = _bodies()
        self.next = random.randrange(len(self.bodies))
        self.headers = {"content-type": "application/json"}
        if os.environ.get("APG_AUTH_TOKEN"):
            self.headers["authorization"] = f"Bearer {os.environ['APG_AUTH_TOKEN']}"

    @task
    def score(self) -> None:
        self.next = (self.next + 1) % len(self.bodies)
        self.client.post("/score", data=self.bodies[self.next], headers=self.headers, name="/score")
