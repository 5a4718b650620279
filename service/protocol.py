"""The HTTP/1.1 protocol uvicorn runs: its httptools protocol, with each request head (request line + header fields)
bounded by APG_MAX_HEADER_BYTES and APG_MAX_HEADERS, answered 431 beyond, and each connection held to a deadline
and a cap (ConnectionGuard).

    uvicorn.Config(app, http=bounded_http(settings), ...)   # what service.server passes (uvicorn_options)

httptools sets no limit: a 64 MB header was read whole (it grows a header value by concatenation) and stalled the event
loop, /livez included, for seconds. h11 has a size limit, but answers 400 and costs more per request than httptools.
So this protocol counts the bytes of a head as they arrive: a head still incomplete past the limit is answered and
closed at once (at most one socket read beyond the limit is parsed), and a complete head is checked exactly before
the app sees it. Without httptools, uvicorn's h11 gets the size limit (answered 400) and the count is not enforced.

Connections: each waits for its request head on a deadline (APG_HEAD_TIMEOUT_S, from the accept and from the end of
the previous answer; then closed, with a 408 when part of a head had come), and is counted and capped by the app's
ConnectionGuard (service/connections.py), handed to these protocols as lifespan state. Without a lifespan or without
httptools, neither applies.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from service.connections import CONNECTIONS, ConnectionGuard
from service.errors import HeaderFieldsTooLarge, RequestTimeout, ServiceError
from service.settings import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn[standard] brings it on CPython
    HttpToolsProtocol = None


def bounded_http(settings: Settings) -> Any:
    """uvicorn's `http` option: this protocol with the settings' limits, or "h11" when httptools is missing."""
    if HttpToolsProtocol is None:
        return "h11"
    return functools.partial(
        BoundedHttpToolsProtocol, max_head_bytes=settings.max_header_bytes, max_headers=settings.max_headers
    )


def _refusal(exc: ServiceError) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(exc.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [*headers, (b"connection", b"close")], body


def _raw_answer(status: bytes, exc: ServiceError) -> bytes:
    """A whole HTTP/1.1 answer with `exc`'s JSON body and Connection: close, written straight to the transport."""
    headers, body = _refusal(exc)
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 " + status + b"\r\n" + lines + b"\r\n" + body


async def _answer_431(scope: Any, receive: Any, send: Any, message: str) -> None:
    """The ASGI app of a complete head over the limits (instead of the service: it never sees the request)."""
    headers, body = _refusal(HeaderFieldsTooLarge(message))
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, max_head_bytes: int, max_headers: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.max_head_bytes, self.max_headers = max_head_bytes, max_headers
            self._head_bytes: int | None = 0  # bytes received since the current head began; None: in a body
            self._guard: ConnectionGuard | None = (self.app_state or {}).get(CONNECTIONS)
            self._head_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self._guard is None:
                return
            if self._guard.opened(self):
                self._await_head()
            else:  # the cap is reached and every connection is in a request: this one goes at once
                transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            if self._guard is not None:
                self._guard.closed(self)
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # no pipelined request started (uvicorn armed its keep-alive timer instead): the next head is awaited
            if self._guard is not None and self.timeout_keep_alive_task is not None:
                self._await_head()

        def close_idle(self) -> None:
            """Close this connection, which waits for a request head: the cap is reached and a new one came."""
            self._cancel_head_timer()
            self.transport.close()

        def _await_head(self) -> None:
            self._cancel_head_timer()
            self._guard.waiting(self)
            self._head_timer = self.loop.call_later(self._guard.head_timeout_s, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return  # gone already, or in a request (a pipelined head is awaited again after its answer)
            self._guard.timed_out(self)
            if self._head_bytes:  # part of a head came: say why the connection closes
                message = f"no complete request head within {self._guard.head_timeout_s:g} s (APG_HEAD_TIMEOUT_S)"
                self.transport.write(_raw_answer(b"408 Request Timeout", RequestTimeout(message)))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._head_bytes is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._head_bytes is not None and not self.transport.is_closing():  # the head is still incomplete
                refused = self._over_limits(complete=False)
                if refused is not None:
                    answer = _raw_answer(b"431 Request Header Fields Too Large", HeaderFieldsTooLarge(refused))
                    self.transport.write(answer)
                    self.transport.close()

        def on_headers_complete(self) -> None:
            if self._guard is not None:  # a request: no longer waiting for its head
                self._cancel_head_timer()
                self._guard.busy(self)
            refused = self._over_limits(complete=True)
            self._head_bytes = None
            if refused is None:
                super().on_headers_complete()
                return
            app, self.app = self.app, functools.partial(_answer_431, message=refused)
            try:  # uvicorn's own request cycle runs the refusal (as it does its limit_concurrency 503)
                super().on_headers_complete()
            finally:
                self.app = app

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_bytes = 0  # what arrives next is the next request's head

        def _over_limits(self, complete: bool) -> str | None:
            if self.headers is not None and len(self.headers) > self.max_headers:
                return f"more than {self.max_headers} header fields (APG_MAX_HEADERS)"
            size = self._head_bytes or 0  # everything received so far: an upper bound of the head's size
            if size > self.max_head_bytes and complete:  # the exact size (this read may hold part of the body)
                size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.max_head_bytes:
                return f"request line and header fields larger than {self.max_head_bytes} bytes (APG_MAX_HEADER_BYTES)"
            return None
