"""The httpx engine of `apg loadtest` (https:// URLs, or `--client httpx`).

One asyncio task per request on an ``httpx.AsyncClient`` with `concurrency` connections. Same open-loop contract
as the raw-socket engine (raw_engine.py): requests start at their scheduled times, latency runs from the scheduled
time. It falls behind its schedule above ~400 requests/s on one core; the report's *lag* column says by how much.

    rec = asyncio.run(run_load(cfg, bodies, schedule))
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from scripts.loadtest.records import LoadConfig, Records, dispatch


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

        def send(i: int, t0: float):
            return _send(client, gate, cfg, rec, i, bodies[i % len(bodies)], t0)

        await dispatch(rec, send, cfg.drain)
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
