"""The raw-socket engine of `apg loadtest --client raw` (the default for http:// URLs), also `apg bench`'s open loop.

Plain HTTP/1.1 over keep-alive sockets driven by one selector loop: no HTTP library and no task per request, so one
client core keeps up with several thousand requests/s (the httpx engine falls behind its schedule above ~400/s on
one core: its *lag* column shows it). Same open-loop contract as the httpx engine: requests leave at their scheduled
times on an idle connection or wait for one, and latency runs from the scheduled time (no coordinated omission).

    rec = open_loop("127.0.0.1", 8000, [build_request("/score", body)], schedule, connections=64, timeout=10)

The sockets, the request bytes and the answers' framing are the tools' raw HTTP client (scripts/clients/http.py):
no TLS (https:// URLs use the httpx engine), no chunked answers (the service always sends Content-Length).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque

import numpy as np

from scripts.clients.http import connect, read_answer, send
from scripts.loadtest.records import Records


def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    schedule: np.ndarray,
    connections: int,
    timeout: float = 10.0,
    drain: float = 5.0,
) -> Records:
    """requests[i % len] leaves at schedule[i] s after the start on an idle one of `connections` connections, or
    waits for one; a request unanswered `timeout` s after its send is a "timeout" (its connection is replaced);
    requests not sent `drain` s after the last scheduled time are "unsent". Polls rather than sleeps when the next
    send is under 1 ms away (epoll's timer has 1 ms steps). A connection the server closed while idle is replaced
    (a request whose send fails twice is a "connection" error); when the server refuses the new connection (it shut
    down or crashed) the slot stays empty and each request that finds no connection tries to open one, or is a
    "connect_refused" ("connect" for other failures) error, so a run across a shutdown still ends with its records.
    OSError when the server cannot be reached at the start."""
    rec = Records(np.asarray(schedule, dtype=np.float64))
    sel = selectors.DefaultSelector()
    for _ in range(connections):
        _register(sel, connect(host, port, timeout))
    idle, due, retried = deque(sel.get_map().values()), deque(), set()
    n, i = len(schedule), 0
    clock, start = time.perf_counter, time.perf_counter()
    deadline = (schedule[-1] if n else 0.0) + drain
    try:
        while i < n or due or len(idle) < len(sel.get_map()):  # (the last: requests in flight)
            now = clock() - start
            if now > deadline:
                break
            while i < n and schedule[i] <= now:
                rec.dispatched[i] = now
                due.append(i)
                i += 1
            while due and (idle or len(sel.get_map()) < connections):
                j = due.popleft()
                if not idle:  # a slot the server refused to refill (see _replace): try again for this request
                    try:
                        idle.append(_register(sel, connect(host, port, timeout)))
                    except OSError as exc:
                        rec.error[j] = "connect_refused" if isinstance(exc, ConnectionRefusedError) else "connect"
                        continue
                key = idle.popleft()
                try:
                    send(key, requests[j % len(requests)], timeout)
                except OSError:  # the server closed this idle connection (keep-alive timeout): once more, on a new one
                    idle.extendleft(_replace(sel, key, rec, "connection", host, port, timeout))
                    if j in retried:
                        rec.error[j] = "connection"
                    else:
                        retried.add(j)
                        due.appendleft(j)
                    continue
                rec.sent[j], key.data["req"] = clock() - start, j
            wait = schedule[i] - (clock() - start) if i < n else 0.05
            for key, _ in sel.select(0 if wait < 1e-3 else min(wait - 1e-3, 0.05)):
                try:
                    if key.data["req"] is None:  # an idle connection has nothing to say but its closing
                        raise ConnectionError("closed while idle")
                    status = read_answer(key)
                except OSError:
                    if key in idle:
                        idle.remove(key)
                    idle.extend(_replace(sel, key, rec, "connection", host, port, timeout))
                    continue
                if status is not None:
                    j = key.data["req"]
                    rec.done[j], rec.status[j] = clock() - start, status
                    rec.error[j] = None if 200 <= status < 300 else f"http_{status}"
                    key.data["req"] = None
                    idle.append(key)
            now = clock() - start
            for key in [k for k in sel.get_map().values() if k.data["req"] is not None]:
                if now - rec.sent[key.data["req"]] > timeout:
                    idle.extend(_replace(sel, key, rec, "timeout", host, port, timeout))
    finally:
        for key in list(sel.get_map().values()):
            if key.data["req"] is not None:
                rec.error[key.data["req"]] = "timeout"
            sel.unregister(key.fileobj)
            key.fileobj.close()
    for j in [*due, *range(i, n)]:
        rec.error[j] = "unsent"
    return rec


def _register(sel, sock: socket.socket):
    return sel.register(sock, selectors.EVENT_READ, {"buf": bytearray(), "req": None})


def _replace(sel, key, rec: Records, error: str, host: str, port: int, timeout: float = 30.0) -> list:
    """The request in flight on `key` failed with `error`; a fresh connection takes the old one's place: [its key],
    or [] when the server refuses it (the slot stays empty until a request needs it)."""
    if key.data["req"] is not None:
        rec.error[key.data["req"]] = error
    sel.unregister(key.fileobj)
    key.fileobj.close()
    try:
        return [_register(sel, connect(host, port, timeout))]
    except OSError:
        return []
