"""The HTTP connections of a worker: counted, capped, each one waiting for its request head on a deadline.

    raise_open_files_limit()                  # service.server.serve, before uvicorn starts
    guard = ConnectionGuard(settings, metrics)   # create_app; the lifespan yields {CONNECTIONS: guard} as its state
    # service/protocol.py's BoundedHttpToolsProtocol calls opened / waiting / busy / timed_out / closed

Issue 25: 1,100 idle sockets at a 1,024-descriptor limit (systemd's default soft limit) locked every client out,
probes included, with nothing logged. So:
- `serve` raises RLIMIT_NOFILE's soft limit to its hard limit;
- a request head must arrive within APG_HEAD_TIMEOUT_S of the accept, and of the end of the previous answer on a
  keep-alive connection; otherwise the connection is closed (protocol.py);
- at most APG_MAX_CONNECTIONS are open per worker (default 4096, never more than the open-file limit less
  NOFILE_RESERVE). One more closes the connection that has waited longest for a request head (idle or slow), so a new
  client, a probe included, always gets in; only when every open connection is in a request is the new one closed at
  once. Requests in progress are never cut.
Counted: apg_open_connections, apg_connections_closed_total{reason="head_timeout"|"evicted"|"refused"}.
"""

from __future__ import annotations

import logging
from typing import Any

from service.settings import Settings

log = logging.getLogger("apg.server")

CONNECTIONS = "apg.connections"  # the lifespan state key of the app's ConnectionGuard (read by protocol.py)
DEFAULT_MAX_CONNECTIONS = 4096
NOFILE_RESERVE = 128  # descriptors left for all but HTTP connections: sessions, logs, the click store, gRPC
CLOSE_REASONS = ("head_timeout", "evicted", "refused")


def raise_open_files_limit() -> int | None:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (systemd's default soft limit is 1,024, its hard one far
    higher); the soft limit now in force, or None where there is no such limit."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an infinite hard limit above the kernel's nr_open: keep the soft one
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(configured: int | None) -> int:
    """The most HTTP connections a worker keeps open: APG_MAX_CONNECTIONS (default DEFAULT_MAX_CONNECTIONS), never
    more than the open-file limit leaves beside NOFILE_RESERVE descriptors."""
    wanted = configured or DEFAULT_MAX_CONNECTIONS
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    room = max(soft - NOFILE_RESERVE, 16)
    if configured is not None and configured > room:
        log.warning("APG_MAX_CONNECTIONS=%d lowered to %d: the open-file limit is %d", configured, room, soft)
    return min(wanted, room)


class ConnectionGuard:
    """The HTTP connections of one worker: counted, capped, and each one waiting for a request head on a deadline.

    `_idle` holds the connections waiting for a head, the one waiting longest first (a dict keeps insertion order):
    the one to close when the cap is reached. Runs on the event loop only (protocol callbacks): no lock."""

    def __init__(self, settings: Settings, metrics: Any) -> None:
        self.cap = connection_cap(settings.max_connections)
        self.head_timeout_s = settings.head_timeout_s
        self.open = 0
        self._idle: dict[Any, None] = {}
        self._gauge = metrics.open_connections
        self._closed = {reason: metrics.connections_closed.labels(reason) for reason in CLOSE_REASONS}

    def opened(self, connection: Any) -> bool:
        """Count a new connection; False when it must be closed at once (the cap reached, every connection busy)."""
        self.open += 1
        self._gauge.inc()
        if self.open > self.cap:
            longest = next(iter(self._idle), None)
            if longest is None:
                self._closed["refused"].inc()
                return False
            del self._idle[longest]
            self._closed["evicted"].inc()
            longest.close_idle()
        return True

    def waiting(self, connection: Any) -> None:
        """`connection` waits for a request head (again: to the end of the line)."""
        self._idle.pop(connection, None)
        self._idle[connection] = None

    def busy(self, connection: Any) -> None:
        self._idle.pop(connection, None)

    def timed_out(self, connection: Any) -> None:
        self._idle.pop(connection, None)
        self._closed["head_timeout"].inc()

    def closed(self, connection: Any) -> None:
        self._idle.pop(connection, None)
        self.open -= 1
        self._gauge.dec()
